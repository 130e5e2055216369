"""GGUF -> keras-hub Llama conversion, checked against a NumPy forward pass."""

import keras
import keras_hub
import numpy as np
import pytest
from gguf_test_utils import reference_llama_logits
from gguf_test_utils import tiny_vocabulary
from gguf_test_utils import write_tiny_llama_gguf

from ilm_keras.llm import GGUFBytePairTokenizer
from ilm_keras.llm import causal_lm_for
from ilm_keras.llm import load_causal_lm
from ilm_keras.llm import load_gguf

TOKEN_IDS = [40, 200, 7, 150, 3, 99, 260, 12]


def keras_logits(backbone, token_ids):
    ids = np.asarray([token_ids], "int32")
    hidden = backbone(
        {"token_ids": ids, "padding_mask": np.ones_like(ids)}, training=False
    )
    logits = backbone.token_embedding(hidden, reverse=True)
    return keras.ops.convert_to_numpy(keras.ops.cast(logits, "float32"))[0]


@pytest.fixture
def tiny_llama_path(tmp_path):
    return write_tiny_llama_gguf(tmp_path / "tiny_llama.gguf")


@pytest.mark.parametrize("tied", [True, False])
def test_logits_match_numpy_reference(tmp_path, tied):
    path = write_tiny_llama_gguf(tmp_path / "m.gguf", tied=tied)
    backbone, _ = load_gguf(path)
    assert isinstance(backbone, keras_hub.models.LlamaBackbone)
    expected = reference_llama_logits(path, TOKEN_IDS)
    np.testing.assert_allclose(
        keras_logits(backbone, TOKEN_IDS), expected, atol=2e-4, rtol=1e-4
    )


def test_reference_is_sensitive_to_rope_row_order(tiny_llama_path):
    # Guards the test above: in this tiny model, applying rotate-half rope
    # to the raw (permuted) q/k rows gives clearly different logits, so a
    # missing or wrong un-permutation cannot pass.
    right = reference_llama_logits(tiny_llama_path, TOKEN_IDS)
    wrong = reference_llama_logits(
        tiny_llama_path, TOKEN_IDS, rope="rotate_half"
    )
    assert np.max(np.abs(right - wrong)) > 1e-2


def test_hyperparameters_come_from_metadata(tmp_path):
    path = write_tiny_llama_gguf(
        tmp_path / "m.gguf", num_layers=3, rope_base=12345.0, eps=1e-4
    )
    backbone, tokenizer = load_gguf(path)
    assert backbone.num_layers == 3
    assert backbone.hidden_dim == 16
    assert backbone.num_query_heads == 4
    assert backbone.num_key_value_heads == 2
    assert backbone.intermediate_dim == 32
    assert backbone.rope_max_wavelength == pytest.approx(12345.0)
    assert backbone.layer_norm_epsilon == pytest.approx(1e-4)
    assert backbone.vocabulary_size == len(tiny_vocabulary())
    assert backbone.dropout == 0
    assert tokenizer.vocabulary_size() == backbone.vocabulary_size


def test_tokenizer_merges_and_round_trip(tiny_llama_path):
    _, tokenizer = load_gguf(tiny_llama_path)
    assert isinstance(tokenizer, GGUFBytePairTokenizer)
    vocab = tiny_vocabulary()
    ids = np.asarray(tokenizer("the cat is on the mat")).tolist()
    assert [vocab[i] for i in ids] == [
        "t",
        "he",
        "Ġcat",
        "Ġis",
        "Ġon",
        "Ġthe",
        "Ġmat",
    ]
    for text in [
        "the cat is on the mat",
        "Digits 2024, tabs\tand  spaces; ünïcödé — 日本 😀\n",
    ]:
        assert tokenizer.detokenize(tokenizer(text)) == text
    # Control tokens are matched whole, and the GGUF special ids are used.
    ids = np.asarray(tokenizer("<|im_start|>the<|im_end|>")).tolist()
    assert ids[0] == 1 and ids[-1] == 2
    assert tokenizer.end_token_id == 2
    # add_bos_token is false in the file: no start token is prepended.
    assert tokenizer.start_token_id is None
    # Padding must not be the end token (GGUF pads with it): unk is used.
    assert tokenizer.pad_token_id == 0


def test_digits_are_split_one_by_one(tiny_llama_path):
    # "smollm" pre-tokenizer: each digit is its own pre-token.
    _, tokenizer = load_gguf(tiny_llama_path)
    vocab = tiny_vocabulary()
    ids = np.asarray(tokenizer("item_1001 ,")).tolist()
    assert [vocab[i] for i in ids] == [
        "i",
        "t",
        "e",
        "m",
        "_",
        "1",
        "0",
        "0",
        "1",
        "Ġ",
        ",",
    ]


def test_greedy_generate_matches_reference(tiny_llama_path):
    backbone, tokenizer = load_gguf(tiny_llama_path)
    lm = causal_lm_for(backbone, tokenizer, sequence_length=16)
    lm.compile(sampler="greedy")
    prompt = "the cat"
    prompt_ids = np.asarray(tokenizer(prompt)).tolist()
    # NumPy greedy decoding without a cache, stopping at the end token.
    ids = list(prompt_ids)
    for _ in range(12 - len(prompt_ids)):
        next_id = int(
            np.argmax(reference_llama_logits(tiny_llama_path, ids)[-1])
        )
        if next_id == tokenizer.end_token_id:
            break
        ids.append(next_id)
    expected = tokenizer.detokenize(ids)
    output = lm.generate(prompt, max_length=12)
    assert output == expected


def test_keras_file_round_trip(tiny_llama_path, tmp_path):
    backbone, tokenizer = load_gguf(tiny_llama_path)
    file = str(tmp_path / "backbone.keras")
    backbone.save(file)
    restored = keras.models.load_model(file)
    np.testing.assert_allclose(
        keras_logits(restored, TOKEN_IDS),
        keras_logits(backbone, TOKEN_IDS),
        atol=1e-6,
    )
    # The whole task, with the tokenizer's vocabulary saved as assets.
    lm = causal_lm_for(backbone, tokenizer, sequence_length=16)
    file = str(tmp_path / "lm.keras")
    lm.save(file)
    restored_lm = keras.models.load_model(file)
    restored_tokenizer = restored_lm.preprocessor.tokenizer
    assert isinstance(restored_tokenizer, GGUFBytePairTokenizer)
    assert restored_tokenizer.get_config() == tokenizer.get_config()
    text = "<|im_start|>the cat 12<|im_end|>"
    np.testing.assert_array_equal(restored_tokenizer(text), tokenizer(text))
    assert restored_tokenizer.pad_token_id == tokenizer.pad_token_id
    lm.compile(sampler="greedy")
    restored_lm.compile(sampler="greedy")
    assert restored_lm.generate("the", max_length=10) == lm.generate(
        "the", max_length=10
    )


def test_load_causal_lm_from_gguf_and_preset(tiny_llama_path, tmp_path):
    backbone, tokenizer = load_causal_lm(tiny_llama_path)
    preset = str(tmp_path / "preset")
    backbone.save_to_preset(preset)
    tokenizer.save_to_preset(preset)
    backbone2, tokenizer2 = load_causal_lm(preset)
    assert isinstance(backbone2, keras_hub.models.LlamaBackbone)
    assert isinstance(tokenizer2, GGUFBytePairTokenizer)
    np.testing.assert_allclose(
        keras_logits(backbone2, TOKEN_IDS),
        keras_logits(backbone, TOKEN_IDS),
        atol=1e-6,
    )
    text = "the cat is 42<|im_end|>"
    np.testing.assert_array_equal(tokenizer2(text), tokenizer(text))


def test_bfloat16_dtype(tiny_llama_path):
    backbone, _ = load_gguf(tiny_llama_path, dtype="bfloat16")
    assert backbone.dtype_policy.name == "bfloat16"
    assert backbone.token_embedding.embeddings.dtype == "bfloat16"
    expected = reference_llama_logits(tiny_llama_path, TOKEN_IDS)
    logits = keras_logits(backbone, TOKEN_IDS)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(logits - expected)) < 0.05 * scale


def test_unsupported_architecture(tmp_path):
    path = write_tiny_llama_gguf(tmp_path / "m.gguf", arch="qwen2")
    with pytest.raises(NotImplementedError, match="'qwen2'"):
        load_gguf(path)


def test_missing_tensor_is_named(tmp_path):
    path = write_tiny_llama_gguf(
        tmp_path / "m.gguf", skip_tensor="blk.1.ffn_up.weight"
    )
    with pytest.raises(KeyError, match="blk.1.ffn_up.weight"):
        load_gguf(path)


def test_wrong_shape_is_named(tmp_path):
    path = write_tiny_llama_gguf(
        tmp_path / "m.gguf", wrong_shape_tensor="blk.0.attn_k.weight"
    )
    with pytest.raises(ValueError, match=r"blk\.0\.attn_k\.weight.*\(10, 16\)"):
        load_gguf(path)


def test_unknown_extra_tensor_is_refused(tmp_path):
    path = write_tiny_llama_gguf(
        tmp_path / "m.gguf", extra_tensor="blk.0.attn_q.bias"
    )
    with pytest.raises(ValueError, match="blk.0.attn_q.bias"):
        load_gguf(path)


def test_missing_metadata_is_named(tmp_path):
    path = write_tiny_llama_gguf(
        tmp_path / "m.gguf", skip_metadata="block_count"
    )
    with pytest.raises(KeyError, match="llama.block_count"):
        load_gguf(path)


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
        load_gguf(str(tmp_path / "nowhere.gguf"))
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a GGUF file"):
        load_causal_lm(str(not_gguf))
    with pytest.raises(ValueError, match="not a keras-hub preset"):
        load_causal_lm(str(tmp_path))
    with pytest.raises(TypeError, match="source"):
        load_causal_lm(3)


def test_pad_token_must_differ_from_end_token():
    with pytest.raises(ValueError, match="differ from `end_token`"):
        GGUFBytePairTokenizer(
            vocabulary={"a": 0, "b": 1},
            merges=[],
            end_token="b",
            pad_token="b",
        )
