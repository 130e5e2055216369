"""Losses of a custom `compute_loss` under a `tf.distribute` strategy.

Under a TensorFlow strategy (`MirroredStrategy`, `TPUStrategy`) each replica
computes the loss of its share of the batch, and the gradients of the
replicas are summed. Keras' own losses divide each replica's loss by the
number of replicas (so that the sum is the mean) and its trainer multiplies
the reported value back; a model whose `compute_loss` returns a loss of its
own must do the same, or it trains with the sum of the replicas' gradients
and reports the sum of their losses. This is the one place with
backend-specific code for it: JAX (`keras.distribution` computes one global
loss) and eager single-device TensorFlow leave the loss as it is.
"""

import keras
from keras import ops


def scale_loss_for_replicas(loss):
    """Divides `loss` by the number of replicas of the current strategy.

    Args:
        loss: a scalar float tensor, one replica's loss.

    Returns:
        `loss / num_replicas_in_sync` inside a TensorFlow strategy with more
        than one replica, else `loss` unchanged.

    Example:
    ```python
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        return scale_loss_for_replicas(y_pred["loss"])
    ```
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return loss
    return ops.multiply(loss, ops.cast(1.0 / replicas, loss.dtype))
