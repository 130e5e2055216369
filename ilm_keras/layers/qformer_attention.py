"""Multi-head attention for the Q-Former, with fused input projections."""

import math

import keras
from keras import ops


def dense_rows(dense, x):
    """Applies a `Dense` layer to `[batch, rows, d]` as one 2-D matmul.

    The forward pass is the same as `dense(x)`, but the weight gradient comes
    out as a plain `[batch * rows, d]^T @ [batch * rows, units]` product: on
    XLA:CPU the 3-D form made the backward pass copy a transposed gradient
    for every projection (profiled in `benchmarks/throughput.py`), which
    cost about as much as the matmul itself.
    """
    shape = ops.shape(x)
    flat = dense(ops.reshape(x, (-1, shape[-1])))
    return ops.reshape(flat, (shape[0], shape[1], ops.shape(flat)[-1]))


@keras.saving.register_keras_serializable(package="ilm_keras")
class QFormerAttention(keras.layers.Layer):
    """Multi-head attention whose input projections are single matmuls.

    Self-attention projects the rows to queries, keys and values with **one**
    `[hidden, 3 * hidden]` kernel; cross-attention projects the attending
    rows with a `[hidden, hidden]` kernel and the attended rows with one
    `[hidden, 2 * hidden]` kernel. It computes the same function as
    `keras.layers.MultiHeadAttention` (BERT / BLIP-2 attention with dropout on
    the probabilities) with one wide matmul instead of three narrow ones:
    fewer, larger kernels.

    Args:
        hidden_dim: int, width of the rows and of the output.
        num_heads: int, heads; must divide `hidden_dim`.
        cross: bool, False for self-attention (`call(x)`), True for
            cross-attention (`call(x, context)`).
        dropout: float, dropout on the attention probabilities.
        kernel_initializer: initializer of the projection kernels.

    Example:
    ```python
    attention = QFormerAttention(hidden_dim=32, num_heads=4)
    x = np.random.rand(2, 5, 32).astype("float32")
    mask = np.tril(np.ones((5, 5), bool))[None]
    y = attention(x, attention_mask=mask)  # (2, 5, 32)
    cross = QFormerAttention(hidden_dim=32, num_heads=4, cross=True)
    y = cross(x, np.random.rand(2, 3, 32).astype("float32"))  # (2, 5, 32)
    ```
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        cross=False,
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim={hidden_dim} is not divisible by "
                f"num_heads={num_heads}."
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.cross = cross
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.head_dim = hidden_dim // num_heads

        def dense(units, name):
            return keras.layers.Dense(
                units,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=name,
            )

        if cross:
            self.query_dense = dense(hidden_dim, "query")
            self.key_value_dense = dense(2 * hidden_dim, "key_value")
        else:
            self.query_key_value_dense = dense(3 * hidden_dim, "query_key_value")
        self.output_dense = dense(hidden_dim, "attention_output")
        self.dropout_layer = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy
        )

    def build(self, x_shape=None, context_shape=None):
        row = (None, None, self.hidden_dim)
        if self.cross:
            self.query_dense.build(row)
            self.key_value_dense.build(row)
        else:
            self.query_key_value_dense.build(row)
        self.output_dense.build(row)
        self.built = True

    def _heads(self, x, parts):
        """`[B, T, parts * hidden]` -> `parts` tensors `[B, T, heads, dim]`."""
        shape = ops.shape(x)
        pieces = ops.split(x, parts, axis=-1) if parts > 1 else [x]
        # `split` rather than slicing: its gradient is one concatenation,
        # where slices would each be padded back to full size and summed.
        return [
            ops.reshape(
                piece, (shape[0], shape[1], self.num_heads, self.head_dim)
            )
            for piece in pieces
        ]

    def call(self, x, context=None, attention_mask=None, training=None):
        """Attends from `x` to `context` (cross) or to `x` itself (self).

        Args:
            x: `[batch, rows, hidden_dim]`, the attending rows.
            context: `[batch, keys, hidden_dim]`; required for cross-attention
                and refused for self-attention.
            attention_mask: optional bool `[batch, rows, keys]`, True where a
                row may attend to a key.
            training: bool, enables dropout.

        Returns:
            `[batch, rows, hidden_dim]`.
        """
        if self.cross:
            if context is None:
                raise ValueError("Cross-attention needs a `context` tensor.")
            (query,) = self._heads(dense_rows(self.query_dense, x), 1)
            key, value = self._heads(
                dense_rows(self.key_value_dense, context), 2
            )
        else:
            if context is not None:
                raise ValueError(
                    "Self-attention takes no `context`; build the layer with "
                    "cross=True to attend to another sequence."
                )
            query, key, value = self._heads(
                dense_rows(self.query_key_value_dense, x), 3
            )
        query = query * ops.cast(1.0 / math.sqrt(self.head_dim), query.dtype)
        # Scores and softmax in float32, also under a bfloat16 policy.
        scores = ops.cast(ops.einsum("btnh,bsnh->bnts", query, key), "float32")
        if attention_mask is not None:
            allowed = ops.expand_dims(ops.cast(attention_mask, "bool"), 1)
            scores = ops.where(allowed, scores, -1e9)
        probabilities = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
        probabilities = self.dropout_layer(probabilities, training=training)
        attended = ops.einsum("bnts,bsnh->btnh", probabilities, value)
        shape = ops.shape(attended)
        attended = ops.reshape(attended, (shape[0], shape[1], self.hidden_dim))
        return dense_rows(self.output_dense, attended)

    def compute_output_shape(self, x_shape, context_shape=None):
        return tuple(x_shape[:-1]) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "cross": self.cross,
                "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
