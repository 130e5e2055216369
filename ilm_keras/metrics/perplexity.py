"""Log-perplexity (mean negative log-likelihood per token), in `keras.ops`."""

import keras
import numpy as np
from keras import ops


def token_nll(logits, labels):
    """Negative log-likelihood of every label under its logits.

    Computed stably as `logsumexp(logits) - logits[label]` in float32.

    Args:
        logits: `[..., vocab]` unnormalised scores.
        labels: `[...]` integer token ids in `0..vocab-1`.

    Returns:
        A float32 tensor shaped like `labels`.
    """
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    picked = ops.take_along_axis(logits, ops.expand_dims(labels, -1), axis=-1)
    return ops.logsumexp(logits, axis=-1) - ops.squeeze(picked, -1)


def _weighted_nll_sums(logits, labels, weight):
    """`(sum of weight * nll, sum of weight)` as float32 scalars.

    Positions of weight 0 add nothing, whatever their label (e.g. -100
    padding) or logits.
    """
    weight = ops.cast(weight, "float32")
    # Masked-out labels must not reach the gather.
    labels = ops.where(weight > 0, ops.cast(labels, "int32"), 0)
    nll = token_nll(logits, labels)
    total = ops.sum(ops.where(weight > 0, nll * weight, 0.0))
    return total, ops.sum(weight)


def log_perplexity(logits, labels, mask=None):
    """Mean negative log-likelihood (nats) over the tokens, weighted by `mask`.

    `exp` of the result is the perplexity. Positions are usually already
    shifted (logits at position t predict `labels[t]`); padding and prompt
    tokens are excluded through `mask`.

    Args:
        logits: float `[batch, length, vocab]` (any leading shape).
        labels: int `[batch, length]`, the observed next tokens.
        mask: optional 0/1, bool or float weights `[batch, length]`; default
            all ones. The result is `sum(mask * nll) / sum(mask)`, as
            `LogPerplexity` computes it with `sample_weight=mask`.

    Returns:
        A Python float.

    Raises:
        ValueError: on mismatched shapes, labels outside the vocabulary,
            an all-zero mask, or non-finite logits at masked-in positions.

    Example:
    ```python
    logits = np.log([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]])
    log_perplexity(logits, labels=[[0, 1]])  # (-log .5 - log .8) / 2
    ```
    """
    logits_shape = tuple(ops.shape(logits))
    labels_np = np.asarray(ops.convert_to_numpy(labels))
    if logits_shape[:-1] != labels_np.shape:
        raise ValueError(
            f"`logits` {logits_shape} must be `labels` {labels_np.shape} plus "
            "a vocabulary axis."
        )
    vocab = logits_shape[-1]
    if mask is None:
        mask_np = np.ones(labels_np.shape, np.float32)
    else:
        mask_np = np.asarray(ops.convert_to_numpy(mask)).astype(np.float32)
        if mask_np.shape != labels_np.shape:
            raise ValueError(
                f"`mask` {mask_np.shape} must match `labels` {labels_np.shape}."
            )
    if mask_np.sum() == 0:
        raise ValueError("`mask` selects no tokens; perplexity is undefined.")
    selected = labels_np[mask_np > 0]
    if selected.min() < 0 or selected.max() >= vocab:
        raise ValueError(
            f"`labels` hold token ids outside 0..{vocab - 1} at masked-in "
            "positions."
        )
    total, count = _weighted_nll_sums(logits, labels_np, mask_np)
    value = float(ops.convert_to_numpy(total)) / float(
        ops.convert_to_numpy(count)
    )
    if not np.isfinite(value):
        raise ValueError(
            "Non-finite log-likelihood: the logits hold NaN or inf."
        )
    return value


@keras.saving.register_keras_serializable(package="ilm_keras")
class LogPerplexity(keras.metrics.Metric):
    """Streaming log-perplexity: total token NLL / total counted tokens.

    Averages over tokens of the whole evaluation set, not over batches.
    `y_true` are labels `[batch, length]`, `y_pred` logits
    `[batch, length, vocab]`, `sample_weight` the token mask.

    Args:
        name: metric name.
        dtype: result dtype.

    Example:
    ```python
    metric = LogPerplexity()
    metric.update_state(labels, logits, sample_weight=mask)
    float(metric.result())
    ```
    """

    def __init__(self, name="log_perplexity", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is None:
            sample_weight = ops.ones(ops.shape(y_true), "float32")
        total, count = _weighted_nll_sums(y_pred, y_true, sample_weight)
        self.total.assign_add(total)
        self.count.assign_add(count)

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
