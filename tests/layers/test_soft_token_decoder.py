"""SoftTokenDecoder: running keras-hub backbones from embeddings."""

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from ilm_keras.generation.compiled import compile_model_function
from ilm_keras.layers.soft_token_decoder import SoftTokenDecoder, _FrozenDecoderLayer

VOCAB = 40


def make_backbone(arch, dropout=0.0):
    common = {
        "vocabulary_size": VOCAB,
        "num_layers": 2,
        "hidden_dim": 16,
        "intermediate_dim": 32,
        "dropout": dropout,
    }
    gqa = {"num_query_heads": 2, "num_key_value_heads": 1}
    if arch == "gpt2":
        return keras_hub.models.GPT2Backbone(
            num_heads=2, max_sequence_length=32, **common
        )
    if arch == "llama":
        return keras_hub.models.LlamaBackbone(**gqa, **common)
    if arch == "mistral":
        return keras_hub.models.MistralBackbone(
            sliding_window=4, head_dim=4, **gqa, **common
        )
    if arch == "qwen":
        return keras_hub.models.QwenBackbone(**gqa, **common)
    if arch == "qwen3":
        return keras_hub.models.Qwen3Backbone(head_dim=8, **gqa, **common)
    if arch == "gemma":
        return keras_hub.models.GemmaBackbone(head_dim=8, **gqa, **common)
    return keras_hub.models.Gemma3Backbone(
        image_size=16,
        head_dim=8,
        vision_encoder=None,
        sliding_window_size=4,
        **gqa,
        **common,
    )


ARCHS = ["gpt2", "llama", "gemma", "gemma3", "mistral", "qwen", "qwen3"]


def make_inputs(length=10):
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, VOCAB, size=(2, length)).astype("int32")
    padding_mask = np.ones((2, length), bool)
    padding_mask[1, 7:] = False
    return token_ids, padding_mask


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_backbone_and_cache(arch):
    backbone = make_backbone(arch)
    decoder = SoftTokenDecoder(backbone)
    token_ids, padding_mask = make_inputs()
    prompt = 6

    def fn(inputs):
        token_ids, padding_mask = inputs
        x = decoder.embed_tokens(token_ids)
        hidden = decoder.hidden_states(x, padding_mask)
        expected = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
        # Prompt pass with a cache, then one position at a time.
        cache = decoder.init_cache(2, 12)
        h1, cache = decoder.call_with_cache(x[:, :prompt], cache, 0)
        h2, _ = decoder.call_with_cache(x[:, prompt : prompt + 1], cache, prompt)
        return {
            "hidden": hidden,
            "expected": expected,
            "logits": decoder.logits(hidden),
            "expected_logits": backbone.token_embedding(expected, reverse=True),
            "cached": ops.concatenate([h1, h2], axis=1),
        }

    # Run compiled (one program per architecture keeps the test fast; XLA
    # is skipped on TF, where its compile time would dominate).
    out = keras.tree.map_structure(
        ops.convert_to_numpy,
        compile_model_function(backbone, fn, jit_compile=False)(
            (token_ids, padding_mask)
        ),
    )
    # Bit-identical to the backbone's own graph.
    np.testing.assert_array_equal(out["hidden"], out["expected"])
    np.testing.assert_array_equal(out["logits"], out["expected_logits"])
    np.testing.assert_allclose(
        out["cached"][0], out["hidden"][0, : prompt + 1], atol=1e-5
    )


def test_eager_matches_backbone():
    # The compiled test above also holds op by op (eager), shown for Llama.
    backbone = make_backbone("llama")
    decoder = SoftTokenDecoder(backbone)
    token_ids, padding_mask = make_inputs()
    hidden = decoder.hidden_states(decoder.embed_tokens(token_ids), padding_mask)
    expected = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    np.testing.assert_array_equal(
        ops.convert_to_numpy(hidden), ops.convert_to_numpy(expected)
    )


@pytest.mark.parametrize("arch", ["gpt2", "gemma"])
def test_frozen_decoder_layer_keeps_dropout_off(arch):
    backbone = make_backbone(arch, dropout=0.5)
    decoder = SoftTokenDecoder(backbone)
    embeddings = keras.Input(shape=(None, 16))
    padding_mask = keras.Input(shape=(None,), dtype="int32")
    hidden = _FrozenDecoderLayer(decoder)(embeddings, padding_mask)
    model = keras.Model([embeddings, padding_mask], hidden)
    assert model.weights == []  # the backbone's variables are not re-owned
    token_ids, mask = make_inputs()
    x = ops.convert_to_numpy(decoder.embed_tokens(token_ids))
    train = ops.convert_to_numpy(model([x, mask], training=True))
    infer = ops.convert_to_numpy(model([x, mask], training=False))
    np.testing.assert_array_equal(train, infer)


def test_unsupported_backbone():
    backbone = keras_hub.models.OPTBackbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=16,
    )
    with pytest.raises(ValueError, match="Supported backbones: Gemma"):
        SoftTokenDecoder(backbone)


def test_shared_prompt_decoding_matches_full_pass():
    """`prompt_pass` + `beam_decode_step` == the full, uncached pass."""
    keras.utils.set_random_seed(3)
    backbone = make_backbone("llama")
    decoder = SoftTokenDecoder(backbone)
    assert decoder.supports_shared_prompt_decoding
    for arch in ("gpt2", "mistral", "gemma"):
        assert not SoftTokenDecoder(make_backbone(arch)).supports_shared_prompt_decoding
    rng = np.random.default_rng(0)
    lengths = np.array([5, 3, 8], "int32")  # right-padded to 8
    prompts = rng.integers(1, VOCAB, size=(3, 8)).astype("int32")
    mask = np.arange(8)[None] < lengths[:, None]
    beams = rng.integers(1, VOCAB, size=(3, 2, 2)).astype("int32")  # 2 beams, 2 tokens

    last, prompt_cache = decoder.prompt_pass(decoder.embed_tokens(prompts), lengths)
    h1, beam_cache = decoder.beam_decode_step(
        decoder.embed_tokens(beams[:, :, 0]), lengths, prompt_cache, mask, None
    )
    h2, _ = decoder.beam_decode_step(
        decoder.embed_tokens(beams[:, :, 1]),
        lengths + 1,
        prompt_cache,
        mask,
        beam_cache,
    )
    for b, n in enumerate(lengths):
        for w in range(2):
            ids = np.concatenate([prompts[b, :n], beams[b, w]])[None]
            full = ops.convert_to_numpy(
                decoder.hidden_states(decoder.embed_tokens(ids), np.ones_like(ids))
            )[0]
            np.testing.assert_allclose(
                ops.convert_to_numpy(last)[b, 0], full[n - 1], atol=1e-5
            )
            np.testing.assert_allclose(
                ops.convert_to_numpy(h1)[b, w], full[n], atol=1e-5
            )
            np.testing.assert_allclose(
                ops.convert_to_numpy(h2)[b, w], full[n + 1], atol=1e-5
            )
