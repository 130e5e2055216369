"""Text inputs as plain Python strings, with errors that name the input."""

import numpy as np


def is_single_text(x):
    """Whether `x` is one text rather than a list of texts.

    One text is a `str`, a `bytes` (read as UTF-8 text, exactly like the
    `str`), or a 0-d array or tensor holding one; everything else (lists,
    1-D arrays and tensors) holds several.

    Args:
        x: the input.

    Returns:
        bool.

    Example:
    ```python
    is_single_text(b"item_1001")    # True
    is_single_text(["item_1001"])   # False
    ```
    """
    if isinstance(x, (str, bytes)):
        return True
    shape = getattr(x, "shape", None)
    return shape is not None and len(tuple(shape)) == 0


def to_python_strings(x, name, single="wrap", allow_empty=False, allow_blank=True):
    """A list of Python strings from a string, list, NumPy array or tensor.

    Args:
        x: the texts; bytes are decoded as UTF-8, so `b"..."` and `"..."`
            give the same result (a lone `bytes` is one text, as a lone
            `str` is).
        name: the input's name in error messages.
        single: what a lone string means: `"wrap"` (one text) or `"error"`
            (a `TypeError`, where a list is required and iterating the
            string would silently read its characters).
        allow_empty: if False, no texts at all is a `ValueError`.
        allow_blank: if False, a text that is empty or only whitespace is a
            `ValueError` naming it (e.g. a prompt with nothing to answer).

    Returns:
        A list of `str`.

    Raises:
        TypeError: an element that is not a string; a lone string where
            `single="error"`.
        ValueError: bytes that are not UTF-8; no texts (unless
            `allow_empty`); a blank text (unless `allow_blank`).

    Example:
    ```python
    to_python_strings(b"user_1 liked item_1001", "prompts")
    # ["user_1 liked item_1001"]
    ```
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()  # An eager TensorFlow tensor.
    lone = is_single_text(x)
    if lone and single != "wrap":
        raise TypeError(
            f"`{name}` takes a list of texts, not a single string: wrap "
            "it in a list."
        )
    if lone and not isinstance(x, (str, bytes)):
        x = np.asarray(x).item()  # A 0-d array: its one element.
    x = np.asarray([x] if lone else x, dtype=object).reshape(-1).tolist()
    out = []
    for i, s in enumerate(x):
        label = f"`{name}`" if lone else f"`{name}[{i}]`"
        if isinstance(s, bytes):
            try:
                s = s.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{label} is bytes that are not UTF-8 text "
                    f"({error.reason} at byte {error.start})."
                ) from None
        if not isinstance(s, str):
            raise TypeError(
                f"{label} must be a string, got {type(s).__name__}."
            )
        if not allow_blank and not s.strip():
            raise ValueError(
                f"{label} is {'empty' if not s else 'only whitespace'} "
                f"({s!r}): it needs some text."
            )
        out.append(s)
    if not out and not allow_empty:
        raise ValueError(f"`{name}` is empty: there is nothing to process.")
    return out
