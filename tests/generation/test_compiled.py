"""Tests for compile_model_function (the backend-specific compile step)."""

import keras
import numpy as np
from keras import ops

from ilm_keras.generation.compiled import compile_model_function


class Scale(keras.Model):
    def __init__(self):
        super().__init__()
        self.w = self.add_weight(shape=(3,), initializer="ones", name="w")
        self.frozen = self.add_weight(
            shape=(3,), initializer="ones", trainable=False, name="frozen"
        )

    def call(self, x):
        return x * self.w + self.frozen


def test_compiled_function_reads_current_weights():
    model = Scale()
    calls = []

    def fn(inputs):
        calls.append(1)  # counts traces, not runs
        y = model(inputs["x"])
        return ops.while_loop(
            lambda i, y: i < 3, lambda i, y: (i + 1, y * 2.0), (0, y)
        )[1]

    compiled = compile_model_function(model, fn)
    x = {"x": np.arange(3, dtype="float32")}
    np.testing.assert_allclose(ops.convert_to_numpy(compiled(x)), (x["x"] + 1) * 8)
    # New weights are used without retracing (they are inputs, not constants).
    model.w.assign(np.full(3, 2.0, "float32"))
    model.frozen.assign(np.zeros(3, "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(compiled(x)), x["x"] * 16)
    if keras.backend.backend() in ("jax", "tensorflow"):
        assert len(calls) == 1
