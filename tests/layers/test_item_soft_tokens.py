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
