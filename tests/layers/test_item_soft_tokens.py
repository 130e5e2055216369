"""Tests for ItemSoftTokens (CF table + encoder -> soft tokens in place)."""

import keras
import numpy as np
import pytest

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
