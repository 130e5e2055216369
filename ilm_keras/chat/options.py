"""The options `ilm-chat` and `ilm-serve` share, and loading a preset.

One place for the preset path, `k`, `max_k`, the generation length, the
message limit and the warm-up: both front ends call `add_model_options` on
their parser and `load_chat_model` on the parsed arguments. Nothing here
imports Keras at import time (`--help` stays instant); the backend is
chosen by `--backend` or `KERAS_BACKEND` before Keras is imported.
"""

import argparse
import os
import sys
import time


def add_model_options(parser):
    """Adds the shared options to an `argparse.ArgumentParser`.

    Args:
        parser: the parser.

    Example:
    ```python
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    args = parser.parse_args(["runs/quickstart/preset", "--k", "5"])
    ```
    """
    parser.add_argument("preset", help="a trained ILM preset folder "
                        "(ItemLanguageModel.save_to_preset)")
    parser.add_argument("--k", type=_positive, default=10,
                        help="recommendations per answer (default 10)")
    parser.add_argument("--max-k", type=_positive, default=20,
                        help="the largest k a request may ask for (default 20)")
    parser.add_argument("--max-length", type=_positive, default=None,
                        help="generation length in tokens, prompt included "
                        "(default: the preset's sequence_length)")
    parser.add_argument("--max-message-chars", type=_positive, default=2000,
                        help="longer messages are refused (default 2000)")
    parser.add_argument("--backend", choices=("jax", "tensorflow"),
                        default=None, help="Keras backend (default: "
                        "KERAS_BACKEND, else Keras' default)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip compiling at load time (the first answer "
                        "then compiles, tens of seconds on a CPU)")


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def select_backend(backend):
    """Sets `KERAS_BACKEND` before Keras is imported (an error after)."""
    if backend is None:
        return
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            raise RuntimeError(f"Keras is already imported with the "
                               f"{keras.backend.backend()} backend; cannot "
                               f"switch to {backend}.")
        return
    os.environ["KERAS_BACKEND"] = backend


def load_model(preset):
    """`ItemLanguageModel.from_preset(preset)` with a clear error for a
    folder that is not a preset."""
    if not os.path.isdir(preset):
        raise FileNotFoundError(f"No preset folder at {preset!r}; train one "
                                "first (see the README's 'Chat with a trained "
                                "model').")
    if not os.path.exists(os.path.join(preset, "config.json")):
        raise FileNotFoundError(f"{preset!r} is not a keras-hub preset (no "
                                "config.json in it).")
    from ilm_keras import ItemLanguageModel
    import ilm_keras.tokenizers  # noqa: F401  (registers the preset's tokenizer)

    return ItemLanguageModel.from_preset(preset)


def load_chat_model(args, log=None):
    """The `ChatModel` the parsed options describe, warmed up unless
    `--no-warm-up`.

    Args:
        args: the `argparse.Namespace` of a parser with `add_model_options`.
        log: optional print function for the load and warm-up times.

    Returns:
        `(chat_model, seconds)`: the model and a dict of the load and
        warm-up times.
    """
    select_backend(args.backend)
    start = time.perf_counter()
    model = load_model(args.preset)
    from ilm_keras.chat.chat_model import ChatModel

    chat_model = ChatModel(model, k=min(args.k, args.max_k), max_k=args.max_k,
                           max_length=args.max_length)
    seconds = {"load": time.perf_counter() - start}
    if args.warm_up:
        start = time.perf_counter()
        chat_model.warm_up()
        seconds["warm_up"] = time.perf_counter() - start
    if log:
        import keras

        log(f"Loaded {args.preset} ({len(chat_model.catalogue)} items, "
            f"{len(chat_model.catalogue.user_ids)} users; Keras "
            f"{keras.backend.backend()}) in {seconds['load']:.1f}s"
            + (f", warmed up in {seconds['warm_up']:.1f}s" if "warm_up" in seconds
               else ""))
    return chat_model, seconds
