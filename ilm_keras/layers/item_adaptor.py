"""Adaptors from item representations to LLM input embeddings.

Two adaptors the ILM paper compares:

- `LinearAdaptor`: ILM's projection of each Q-Former query output to the LLM
  width (paper §3.3, BLIP-2 stage 2).
- `MLPAdaptor`: the CoLLM baseline ("MLP" in the paper's tables), a two-layer
  MLP from the raw CF vector to `num_tokens` LLM embeddings.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ilm_keras")
class LinearAdaptor(keras.layers.Layer):
    """Projects item-encoder outputs to the LLM's embedding width.

    A single `Dense(output_dim)` applied to every token: `[..., input_dim]`
    -> `[..., output_dim]`.

    Args:
        output_dim: int. The LLM's hidden (embedding) width.
        kernel_initializer: initializer for the projection kernel.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    adaptor = LinearAdaptor(output_dim=2048)
    soft_tokens = adaptor(np.zeros((4, 32, 768)))  # [4, 32, 2048]
    ```
    """

    def __init__(self, output_dim, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(
            self.output_dim,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.dense(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="ilm_keras")
class MLPAdaptor(keras.layers.Layer):
    """The CoLLM adaptor: CF vector -> `num_tokens` LLM embeddings.

    `Linear(d, multiplier * d) -> ReLU -> Linear(multiplier * d,
    output_dim * num_tokens)`, reshaped to `[batch, num_tokens, output_dim]`
    (CoLLM's `proj_mid_times` is 10).

    Args:
        output_dim: int. The LLM's hidden (embedding) width.
        num_tokens: int. Soft tokens produced per item (`k`).
        hidden_multiplier: int. Width of the hidden layer as a multiple of
            the input (CF) dimension. Defaults to 10.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    adaptor = MLPAdaptor(output_dim=2048, num_tokens=2)
    soft_tokens = adaptor(np.zeros((4, 64)))  # [4, 2, 2048]
    ```
    """

    def __init__(self, output_dim, num_tokens=1, hidden_multiplier=10, **kwargs):
        super().__init__(**kwargs)
        if int(num_tokens) < 1:
            raise ValueError(f"`num_tokens` must be >= 1, got {num_tokens}.")
        self.output_dim = int(output_dim)
        self.num_tokens = int(num_tokens)
        self.hidden_multiplier = int(hidden_multiplier)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("MLPAdaptor needs a known input (CF) dimension.")
        self.hidden = keras.layers.Dense(
            self.hidden_multiplier * input_dim,
            activation="relu",
            dtype=self.dtype_policy,
            name="hidden",
        )
        self.hidden.build(input_shape)
        self.output_projection = keras.layers.Dense(
            self.output_dim * self.num_tokens,
            dtype=self.dtype_policy,
            name="output_projection",
        )
        self.output_projection.build(
            tuple(input_shape[:-1]) + (self.hidden_multiplier * input_dim,)
        )
        self.built = True

    def call(self, inputs):
        x = self.output_projection(self.hidden(inputs))
        batch_shape = ops.shape(inputs)[:-1]
        return ops.reshape(x, tuple(batch_shape) + (self.num_tokens, self.output_dim))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_tokens, self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "num_tokens": self.num_tokens,
                "hidden_multiplier": self.hidden_multiplier,
            }
        )
        return config
