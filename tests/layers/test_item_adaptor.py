"""Tests for the linear (ILM) and MLP (CoLLM) adaptors."""

import os

import keras
import numpy as np

from ilm_keras.layers.item_adaptor import LinearAdaptor, MLPAdaptor


def test_linear_adaptor_projects_every_token():
    layer = LinearAdaptor(output_dim=6)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == (2, 3, 6)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    np.testing.assert_allclose(y, x @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_mlp_adaptor_is_collm_shaped():
    layer = MLPAdaptor(output_dim=6, num_tokens=3)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == (5, 3, 6)
    w1, b1, w2, b2 = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    assert w1.shape == (4, 40) and w2.shape == (40, 18)  # hidden = 10 d
    expected = (np.maximum(x @ w1 + b1, 0) @ w2 + b2).reshape(5, 3, 6)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_adaptors_save_and_load(tmp_path):
    inputs = keras.Input(shape=(4,))
    tokens = MLPAdaptor(output_dim=6, num_tokens=2)(inputs)
    outputs = LinearAdaptor(output_dim=3)(tokens)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(size=(2, 4)).astype("float32")
    path = os.path.join(tmp_path, "adaptors.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x)),
        keras.ops.convert_to_numpy(loaded(x)),
    )
    config = loaded.layers[1].get_config()
    assert config["num_tokens"] == 2 and config["hidden_multiplier"] == 10
