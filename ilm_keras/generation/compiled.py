"""Compile a function of a model's variables for the current backend.

This is the one place with backend-specific code in `ilm_keras.generation`:
`jax.jit` with the variables passed in as explicit state (so updated weights
are seen without retracing), `tf.function(jit_compile=True)` on TensorFlow,
plain eager execution (under `torch.no_grad`) on torch.
"""

import itertools

import keras
from keras import tree


def compile_model_function(model, fn, jit_compile=True):
    """Compile `fn(inputs) -> outputs`, which reads `model`'s variables.

    `fn` must be traceable: `keras.ops` only, no Python side effects that
    matter, no host round-trips. Inputs are a nested structure of arrays;
    every new input shape compiles a new program, so callers pad to fixed
    shapes.

    Args:
        model: the `keras.Model` whose variables `fn` reads (read-only).
        fn: the function to compile.
        jit_compile: bool. Use XLA on TensorFlow (always on JAX).

    Returns:
        A callable with the signature of `fn`.

    Example:
    ```python
    compiled = compile_model_function(model, lambda x: model(x) * 2)
    outputs = compiled(inputs)
    ```
    """
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        @jax.jit
        def stateless_fn(state, inputs):
            trainable, non_trainable = state
            mapping = itertools.chain(
                zip(model.trainable_variables, trainable),
                zip(model.non_trainable_variables, non_trainable),
            )
            with keras.StatelessScope(state_mapping=mapping):
                return fn(inputs)

        def jax_fn(inputs):
            state = (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
            )
            inputs = tree.map_structure(keras.ops.convert_to_tensor, inputs)
            return stateless_fn(state, inputs)

        return jax_fn
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)
    if backend == "torch":
        import torch

        def torch_fn(inputs):
            with torch.no_grad():
                return fn(inputs)

        return torch_fn
    return fn
