"""Tests for ItemSoftTokens (CF table + encoder -> soft tokens in place)."""

import keras
import numpy as np
import pytest

from ilm_keras.generation.compiled import compile_model_function
from ilm_keras.layers.item_soft_tokens import ItemSoftTokens


def make_layer():
    table = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    layer = ItemSoftTokens(
        "mlp",
        output_dim=3,
        num_rows=5,
        cf_dim=4,
        num_mlp_tokens=2,
        cf_table_initializer=keras.initializers.Constant(table),
    )
    return layer, table


def test_soft_tokens_replace_their_slots_only():
    layer, table = make_layer()
    text = np.random.default_rng(1).normal(size=(2, 8, 3)).astype("float32")
    soft_mask = np.zeros((2, 8), bool)
    soft_mask[0, [2, 3, 6, 7]] = True  # two mentions in row 0
    soft_mask[1, [1, 2]] = True  # one mention in row 1
    entity_ids = np.array([[4, 1], [0, -1]], "int32")
    out = keras.ops.convert_to_numpy(layer(text, soft_mask, entity_ids))
    encoded = keras.ops.convert_to_numpy(layer.encode(table))  # [5, 2, 3]
    np.testing.assert_array_equal(out[~soft_mask], text[~soft_mask])
    np.testing.assert_allclose(out[0, 2:4], encoded[4], atol=1e-6)
    np.testing.assert_allclose(out[0, 6:8], encoded[1], atol=1e-6)
    np.testing.assert_allclose(out[1, 1:3], encoded[0], atol=1e-6)
    assert layer.trainable_weights and not layer.cf_table.trainable


def test_config_round_trip_and_errors():
    layer, _ = make_layer()
    config = layer.get_config()
    restored = ItemSoftTokens.from_config(config)
    assert restored.num_soft_tokens == 2 and restored.cf_table.shape == (5, 4)
    with pytest.raises(ValueError, match="'qformer' or 'mlp'"):
        ItemSoftTokens("lstm", output_dim=3, num_rows=5, cf_dim=4)
    with pytest.raises(ValueError, match="needs a `qformer`"):
        ItemSoftTokens("qformer", output_dim=3, num_rows=5, cf_dim=4)


def one_row(slots, entity_ids):
    text = np.zeros((1, 6, 3), "float32")
    soft_mask = np.zeros((1, 6), bool)
    soft_mask[0, slots] = True
    return text, soft_mask, np.array([entity_ids], "int32")


BAD_INPUTS = {
    "id_past_the_table": ([1, 2], [5, -1]),  # num_rows is 5
    "slots_for_padding": ([1, 2], [-1, -1]),
    "too_many_slots": ([1, 2, 3, 4], [3, -1]),
    "too_few_slots": ([1], [3, -1]),
    "padding_before_a_mention": ([1, 2], [-1, 3]),
}
MISMATCH = "holds an id >= num_rows=5, or .* 2 soft slot"


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_inputs_that_disagree_raise(case):
    layer, _ = make_layer()
    with pytest.raises(ValueError, match=MISMATCH):
        layer(*one_row(*BAD_INPUTS[case]))


def test_inputs_that_disagree_raise_inside_a_compiled_function():
    layer, _ = make_layer()
    # XLA is off on TensorFlow, which drops in-graph assertions.
    fn = compile_model_function(layer, lambda x: layer(*x), jit_compile=False)
    keras.ops.convert_to_numpy(fn(one_row([1, 2], [3, -1])))  # agreeing inputs
    with pytest.raises(Exception, match=MISMATCH):
        keras.ops.convert_to_numpy(fn(one_row([1, 2], [5, -1])))


# ----------------------------------------------------------------------
# Phase 2 trains exactly the variables it uses.
# ----------------------------------------------------------------------
ITEMS = ["1001", "1002", "1003", "1004"]
USERS = ["1", "2"]
QFORMER = dict(cf_dim=6, num_layers=2, hidden_dim=16, num_heads=2,
               intermediate_dim=32, num_query_tokens=2, max_text_length=8,
               num_cf_tokens=2, dropout=0.0)


def tiny_ilm(item_encoder, qformer):
    from ilm_keras.tokenizers import OpenP5Tokenizer
    from ilm_keras.experiments.backbone_pretraining import make_llama_backbone
    from ilm_keras.models.item_language_model import ItemLanguageModel
    from ilm_keras.models.item_language_model_preprocessor import (
        ItemLanguageModelPreprocessor,
    )

    tokenizer = OpenP5Tokenizer.from_texts(["watched"])
    backbone = make_llama_backbone(
        tokenizer.vocabulary_size(), num_layers=1, hidden_dim=16, num_heads=2
    )
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, ITEMS, USERS, sequence_length=32, max_mentions=3
    )
    rng = np.random.default_rng(0)
    return ItemLanguageModel(
        backbone,
        preprocessor,
        item_encoder=item_encoder,
        qformer=qformer,
        item_embeddings=rng.normal(size=(len(ITEMS), 6)).astype("float32"),
        user_embeddings=rng.normal(size=(len(USERS), 6)).astype("float32"),
    )


def test_phase2_trains_exactly_the_variables_that_get_gradients():
    import warnings

    from ilm_keras.models.qformer import QFormer

    model = tiny_ilm("ilm", QFormer(vocabulary_size=50, **QFORMER))
    qformer = model.item_soft_tokens.qformer
    assert not qformer.token_embedding.trainable
    assert all(not block.text_ffn_in.trainable
               for block in qformer.transformer_layers)
    trainable = {v.path: keras.ops.convert_to_numpy(v).copy()
                 for v in model.trainable_variables}
    frozen = {v.path: keras.ops.convert_to_numpy(v).copy()
              for v in model.non_trainable_variables}
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    train = {"prompts": ["user_1 watched item_1001 , item_1002",
                         "user_2 watched item_1003"],
             "responses": ["item_1003", "item_1004"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(train, batch_size=2, epochs=1, verbose=0)
    # TensorFlow warns about a trainable variable without a gradient.
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    # JAX gives it a zero gradient: Adam then leaves it unchanged. Every
    # trainable variable must move after one step, every other one stay.
    after = {v.path: keras.ops.convert_to_numpy(v) for v in model.variables}
    unchanged = [p for p, v in trainable.items() if np.array_equal(v, after[p])]
    assert not unchanged, f"trainable without gradient: {unchanged}"
    moved = [p for p, v in frozen.items() if not np.array_equal(v, after[p])]
    assert not moved, f"non-trainable but updated: {moved}"


def test_pretrained_and_fresh_qformers_train_as_many_parameters():
    from ilm_keras.models.qformer import QFormer

    def trainable_count(model):
        return sum(int(np.prod(v.shape)) for v in model.trainable_variables)

    # Different text vocabularies: only the (unused) text tower differs.
    ilm = tiny_ilm("ilm", QFormer(vocabulary_size=50, **QFORMER))
    ilm_rand = tiny_ilm("ilm_rand", dict(QFORMER, vocabulary_size=500))
    assert trainable_count(ilm) == trainable_count(ilm_rand) > 0
