"""Text inputs as plain Python strings, with errors that name the input."""

import numpy as np


def to_python_strings(x, name, single="wrap", allow_empty=False):
    """A list of Python strings from a string, list, NumPy array or tensor.

    Args:
        x: the texts; bytes are decoded as UTF-8.
        name: the input's name in error messages.
        single: what a lone string means: `"wrap"` (one text) or `"error"`
            (a `TypeError`, where a list is required and iterating the
            string would silently read its characters).
        allow_empty: if False, no texts at all is a `ValueError`.

    Returns:
        A list of `str`.
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()  # An eager TensorFlow tensor.
    if isinstance(x, (str, bytes)):
        if single != "wrap":
            raise TypeError(
                f"`{name}` takes a list of texts, not a single string: wrap "
                "it in a list."
            )
        x = [x]
    x = np.asarray(x, dtype=object).reshape(-1).tolist()
    out = []
    for i, s in enumerate(x):
        if isinstance(s, bytes):
            s = s.decode("utf-8")
        if not isinstance(s, str):
            raise TypeError(
                f"`{name}[{i}]` must be a string, got {type(s).__name__}."
            )
        out.append(s)
    if not out and not allow_empty:
        raise ValueError(f"`{name}` is empty: there is nothing to process.")
    return out
