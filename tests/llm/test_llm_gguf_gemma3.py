"""GGUF -> keras-hub Gemma 3 conversion, checked against a NumPy forward."""

import keras
import keras_hub
import numpy as np
import pytest
from gguf_test_utils import reference_gemma3_logits
from gguf_test_utils import write_tiny_gemma3_gguf

from ilm_keras.llm import causal_lm_for
from ilm_keras.llm import load_gguf

# Longer than the sliding window (3), so local and global layers differ.
TOKEN_IDS = [2, 261, 262, 270, 281, 290, 266, 263, 5, 284]


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory):
    path = write_tiny_gemma3_gguf(tmp_path_factory.mktemp("g") / "g.gguf")
    return path, load_gguf(path)


def keras_logits(backbone, token_ids):
    ids = np.asarray([token_ids], "int32")
    hidden = backbone(
        {"token_ids": ids, "padding_mask": np.ones_like(ids)}, training=False
    )
    logits = backbone.token_embedding(hidden, reverse=True)
    return keras.ops.convert_to_numpy(logits)[0]


def test_logits_match_numpy_reference(tiny_gemma3):
    path, (backbone, _) = tiny_gemma3
    assert isinstance(backbone, keras_hub.models.Gemma3Backbone)
    assert backbone.num_layers == 6
    assert backbone.head_dim == 8
    assert backbone.sliding_window_size == 3
    np.testing.assert_allclose(
        keras_logits(backbone, TOKEN_IDS),
        reference_gemma3_logits(path, TOKEN_IDS),
        atol=2e-4,
        rtol=1e-4,
    )


def test_tokenizer(tiny_gemma3):
    _, (_, tokenizer) = tiny_gemma3
    assert isinstance(tokenizer, keras_hub.tokenizers.Gemma3Tokenizer)
    assert tokenizer.start_token_id == 2
    assert tokenizer.end_token_id == 1
    assert tokenizer.pad_token_id == 0
    # t h e ▁ c a t -> th e ▁ c a t -> th e ▁ ca t -> th e ▁ cat
    # -> th e ▁cat -> the ▁cat (merges in score order).
    ids = np.asarray(tokenizer("the cat")).tolist()
    assert [tokenizer.id_to_token(i) for i in ids] == ["the", "▁cat"]
    # Characters outside the vocabulary fall back to byte pieces.
    for text in ["the cat", "zebra über 7!"]:
        assert tokenizer.detokenize(tokenizer(text)) == text


def test_generate_runs_with_kv_cache(tiny_gemma3):
    path, (backbone, tokenizer) = tiny_gemma3
    lm = causal_lm_for(backbone, tokenizer, sequence_length=12)
    lm.compile(sampler="greedy")
    prompt_ids = [2] + np.asarray(tokenizer("the cat")).tolist()
    ids = list(prompt_ids)
    while len(ids) < 10:
        next_id = int(np.argmax(reference_gemma3_logits(path, ids)[-1]))
        if next_id == tokenizer.end_token_id:
            break
        ids.append(next_id)
    expected = tokenizer.detokenize(ids[1:])
    assert lm.generate("the cat", max_length=10) == expected
