"""Input checks that also work inside compiled functions.

Keras model code cannot raise a Python exception on a tensor's *value* while
it is being traced (`jax.jit`, `tf.function`). These helpers raise a
`ValueError` at once when the value is concrete (NumPy, eager tensors) and
otherwise insert the backend's own runtime assertion, so a NaN CF vector or a
malformed batch fails loudly with the same message:

- JAX: `jax.debug.callback` raises the `ValueError` on the host; JAX
  re-raises it as a `JaxRuntimeError` whose text contains the message.
- TensorFlow: `tf.debugging.Assert` raises `InvalidArgumentError` with the
  message. TensorFlow's XLA (`jit_compile=True`) drops the assertion, so
  under XLA the check does not run.

Each check inside a compiled step is one host round-trip; checks of the
same tensors belong in one call.
"""

import keras
import numpy as np
from keras import ops


def _concrete_value(x):
    """Returns `x` as a NumPy array when its value is known, else None."""
    if isinstance(x, (np.ndarray, np.generic, bool, int, float)):
        return np.asarray(x)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
        return np.asarray(x)
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly() and hasattr(x, "numpy"):
            return x.numpy()
        return None
    if backend == "torch":
        return x.detach().cpu().numpy()
    return None


def _raise_if_false(ok, message):
    if not bool(np.all(ok)):
        raise ValueError(message)


def check(condition, message):
    """Raises `ValueError(message)` when the boolean `condition` is false.

    Args:
        condition: a scalar boolean tensor or array.
        message: the error text; name the offending input.

    Example:
    ```python
    check(ops.all(ops.isfinite(x)), "CF embedding holds NaN or inf.")
    ```
    """
    value = _concrete_value(condition)
    if value is not None:
        _raise_if_false(value, message)
        return
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.debug.callback(_raise_if_false, condition, message)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.debugging.Assert(condition, [message])


def check_finite(x, name):
    """Raises a `ValueError` naming `name` when `x` holds NaN or inf."""
    check(
        ops.all(ops.isfinite(x)),
        f"{name} holds NaN or inf values; CF embeddings must be finite.",
    )
