"""CFItemOutputHead (beyond the paper): item-token logits from the CF table."""

import os

import keras
import keras_hub
import numpy as np
import pytest

from ilm_keras.layers.cf_item_output_head import CFItemOutputHead
from ilm_keras.models.item_language_model import ItemLanguageModel
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer

ITEM_IDS = ["7", "42", "305", "1001", "99"]
USER_IDS = ["1", "2"]
CF_DIM = 6
PROMPTS = [
    "user_1 watched item_7 , item_1001 then",
    "watched item_42 next",
    "user_2 watched item_305 , item_99",
]
TRAIN = {
    "prompts": ["user_1 watched item_7 then", "watched item_42 next"] * 2,
    "responses": ["item_1001", "item_99"] * 2,
}


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def make_model(seed=0, kernel=None):
    tokenizer = OpenP5Tokenizer.from_texts(
        ["watched then next"], item_ids=ITEM_IDS, item_indexing="atomic"
    )
    keras.utils.set_random_seed(seed)
    llm = keras_hub.models.LlamaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=1,
        num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, dropout=0.0,
    )
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, item_ids=ITEM_IDS, user_ids=USER_IDS, sequence_length=40,
        max_mentions=4, loss_positions=True,
    )
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(len(ITEM_IDS), CF_DIM)).astype("float32")
    users = rng.normal(size=(len(USER_IDS), CF_DIM)).astype("float32")
    token_ids = [int(np.asarray(tokenizer(f"item_{i}"))[0]) for i in ITEM_IDS]
    model = ItemLanguageModel(
        llm, preprocessor, item_encoder="mlp", item_embeddings=items,
        user_embeddings=users, num_mlp_tokens=2, item_token_ids=token_ids,
    )
    if kernel is not None:
        model.backbone.item_output_head.kernel.assign(kernel)
    return model, items, token_ids


def last_position_parts(model, prompts):
    """(logits with the head, the LLM's own logits, hidden) at each
    prompt's last position."""
    x = model.preprocessor.generate_preprocess(prompts, sequence_length=40)
    hidden = to_np(model.backbone(x))
    last = np.asarray(x["padding_mask"]).sum(axis=1) - 1
    rows = np.arange(len(prompts))
    own = to_np(model.backbone.decoder.logits(hidden))[rows, last]
    full = to_np(model.predict_on_batch(x))[rows, last]
    return full, own, hidden[rows, last]


def test_head_starts_at_zero_so_logits_are_the_llms_own():
    model, _, _ = make_model()
    full, own, _ = last_position_parts(model, PROMPTS)
    # Compiled (`predict_on_batch`) against eager: equal to float rounding.
    np.testing.assert_allclose(full, own, atol=1e-6)


def test_head_adds_h_dot_projected_cf_vector_at_item_tokens_only():
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(CF_DIM, 16)).astype("float32")
    model, items, token_ids = make_model(kernel=kernel)
    full, own, hidden = last_position_parts(model, PROMPTS)
    extra = full - own
    expected = hidden.astype("float64") @ (items @ kernel).T.astype("float64")
    np.testing.assert_allclose(extra[:, token_ids], expected, rtol=1e-4, atol=1e-4)
    others = np.setdiff1d(np.arange(full.shape[-1]), token_ids)
    np.testing.assert_allclose(extra[:, others], 0.0, atol=1e-6)
    assert np.abs(expected).max() > 0.1  # the check above is not vacuous


def test_exact_recommend_ranks_by_the_head_too():
    rng = np.random.default_rng(6)
    model, _, token_ids = make_model(kernel=rng.normal(size=(CF_DIM, 16)))
    full, _, _ = last_position_parts(model, PROMPTS)
    log_probs = full - np.log(np.exp(full.astype("float64")).sum(-1, keepdims=True))
    expected = log_probs[:, token_ids]
    items, scores = model.recommend(PROMPTS, k=3)
    for b in range(len(PROMPTS)):
        ranked = np.argsort(-expected[b])[:3]
        assert list(items[b]) == [ITEM_IDS[i] for i in ranked]
        np.testing.assert_allclose(scores[b], expected[b, ranked], atol=1e-4)


def test_fit_trains_the_head_and_keeps_the_llm(tmp_path):
    model, _, _ = make_model()
    llm_before = [to_np(w).copy() for w in model.backbone.llm.weights]
    head = model.backbone.item_output_head
    assert any(w is head.kernel for w in model.trainable_weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(TRAIN, batch_size=2, epochs=1, verbose=0)
    assert np.abs(to_np(head.kernel)).max() > 0
    for before, w in zip(llm_before, model.backbone.llm.weights):
        np.testing.assert_array_equal(before, to_np(w))

    # .keras and preset round trips give the same logits.
    x = model.preprocessor.generate_preprocess(PROMPTS, sequence_length=40)
    expected = to_np(model.predict_on_batch(x))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(to_np(loaded.predict_on_batch(x)), expected, atol=1e-6)
    preset = os.path.join(tmp_path, "preset")
    model.save_to_preset(preset)
    again = ItemLanguageModel.from_preset(preset)
    np.testing.assert_allclose(to_np(again.predict_on_batch(x)), expected, atol=1e-6)


def test_set_cf_tables_reaches_the_head():
    rng = np.random.default_rng(7)
    model, items, token_ids = make_model(kernel=rng.normal(size=(CF_DIM, 16)))
    before, own, hidden = last_position_parts(model, PROMPTS)
    new_items = rng.normal(size=items.shape).astype("float32")
    model.set_cf_tables(new_items, rng.normal(size=(len(USER_IDS), CF_DIM)))
    after, own, hidden = last_position_parts(model, PROMPTS)
    kernel = to_np(model.backbone.item_output_head.kernel)
    np.testing.assert_allclose((after - own)[:, token_ids],
                               hidden @ (new_items @ kernel).T, rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="vocabulary"):
        CFItemOutputHead([1, 20], vocabulary_size=10, cf_dim=4)
    with pytest.raises(ValueError, match="repeats"):
        CFItemOutputHead([1, 1], vocabulary_size=10, cf_dim=4)
    head = CFItemOutputHead([1, 2, 3], vocabulary_size=10, cf_dim=4)
    with pytest.raises(ValueError, match="rows of width 4"):
        head.attach_table(keras.Variable(np.zeros((3, 5)), trainable=False))
    with pytest.raises(ValueError, match="attach_table"):
        head(np.zeros((1, 1, 8), "float32"))
    llm = keras_hub.models.LlamaBackbone(
        vocabulary_size=10, num_layers=1, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=8, intermediate_dim=16)
    with pytest.raises(ValueError, match="item encoder"):
        ItemLanguageModel(llm, item_encoder="none", item_token_ids=[1, 2])
    with pytest.raises(ValueError, match="entries"):
        ItemLanguageModel(llm, item_encoder="mlp", item_token_ids=[1, 2],
                          item_embeddings=np.zeros((3, 4), "float32"))
