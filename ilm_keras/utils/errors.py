"""Errors from a layer's `call`, as they were raised.

When `Layer.call` raises, Keras (with traceback filtering on, its default)
re-raises the error with every call argument written out after the message.
A preprocessor called on thousands of prompts then turns a one-line error
("Prompt 3000 mentions unknown item `item_9`") into a hundred thousand
characters of prompt text, and the line that names the problem scrolls out of
sight. `raise_call_errors_as_raised` hands such errors back as `call` raised
them.
"""

import functools


def raise_call_errors_as_raised(call_method):
    """Wraps a layer's `__call__`: errors from `call` come without Keras'
    dump of the call's arguments.

    Keras builds the longer error inside the `except` block that caught the
    original one, so the original is its `__context__`, and marks it
    (`_keras_call_info_injected`). A marked error whose original has the
    same type is replaced by the original (its message names the problem,
    its traceback ends where it was raised); any other error passes as it
    is, so if Keras changes how it does this, its longer error comes
    through unchanged.

    Args:
        call_method: the `__call__` method to wrap.

    Returns:
        The wrapped method.

    Example:
    ```python
    class MyPreprocessor(keras_hub.models.Preprocessor):
        __call__ = raise_call_errors_as_raised(
            keras_hub.models.Preprocessor.__call__)
    ```
    """

    @functools.wraps(call_method)
    def wrapped(self, *args, **kwargs):
        try:
            return call_method(self, *args, **kwargs)
        except Exception as error:
            original = error.__context__
            if (getattr(error, "_keras_call_info_injected", False)
                    and type(original) is type(error)):
                raise original from None
            raise

    return wrapped
