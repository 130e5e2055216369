"""One Q-Former block: shared self-attention, query-only cross-attention,
separate query and text feed-forward networks."""

import math

import keras
from keras import ops

from ilm_keras.layers.qformer_attention import QFormerAttention
from ilm_keras.layers.qformer_attention import dense_rows


def gelu(x):
    """Exact (erf) GELU, as BERT and BLIP-2 use.

    Written with `erf` rather than `keras.activations.gelu`, whose JAX
    version goes through `erfc`: XLA expands that into several elementwise
    passes, and the feed-forward activations were the largest non-matmul cost
    of a Q-Former training step on CPU.
    """
    return 0.5 * x * (1.0 + ops.erf(x * ops.cast(math.sqrt(0.5), x.dtype)))


@keras.saving.register_keras_serializable(package="ilm_keras")
class QFormerLayer(keras.layers.Layer):
    """A BERT-style (post-LayerNorm) Q-Former block with two towers.

    Query rows and text rows are concatenated and go through the **same**
    self-attention, restricted by an attention mask that the caller builds for
    the mode it wants (see `ilm_keras.layers.qformer_attention_mask`). Then,
    on the query rows only, an optional cross-attention to the CF tokens; last,
    each tower has its own feed-forward network.

    Either tower may be absent: `call(query=None, text=...)` runs the text
    tower alone and `call(query=..., text=None)` the query tower alone, which
    is how the unimodal mode is computed without wasting attention on blocks
    that the mask would zero out.

    Args:
        hidden_dim: int, width of every row.
        num_heads: int, attention heads; must divide `hidden_dim`.
        intermediate_dim: int, width of the feed-forward networks.
        has_cross_attention: bool, whether query rows attend to CF tokens.
        dropout: float, dropout on attention probabilities and residuals.
        layer_norm_epsilon: float.
        initializer_range: float, standard deviation of the truncated-normal
            kernel initializer (BERT / BLIP-2: 0.02).

    Example:
    ```python
    layer = QFormerLayer(hidden_dim=32, num_heads=2, intermediate_dim=64,
                         has_cross_attention=True)
    query, text = layer(
        query=np.zeros((2, 4, 32)), text=np.zeros((2, 6, 32)),
        cf_tokens=np.zeros((2, 3, 32)),
        attention_mask=np.ones((2, 10, 10), bool),
    )
    ```
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        intermediate_dim,
        has_cross_attention=True,
        dropout=0.0,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.initializer_range = float(initializer_range)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.has_cross_attention = has_cross_attention
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

        def attention(name, cross):
            return QFormerAttention(
                hidden_dim,
                num_heads,
                cross=cross,
                dropout=dropout,
                kernel_initializer=keras.initializers.TruncatedNormal(
                    stddev=self.initializer_range
                ),
                dtype=self.dtype_policy,
                name=name,
            )

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name=name
            )

        def dense(units, name):
            return keras.layers.Dense(
                units,
                kernel_initializer=keras.initializers.TruncatedNormal(
                    stddev=self.initializer_range
                ),
                dtype=self.dtype_policy,
                name=name,
            )

        self.self_attention = attention("self_attention", cross=False)
        self.self_attention_norm = norm("self_attention_norm")
        if has_cross_attention:
            self.cross_attention = attention("cross_attention", cross=True)
            self.cross_attention_norm = norm("cross_attention_norm")
        # Separate feed-forward networks for the two towers.
        self.query_ffn_in = dense(intermediate_dim, "query_ffn_in")
        self.query_ffn_out = dense(hidden_dim, "query_ffn_out")
        self.query_ffn_norm = norm("query_ffn_norm")
        self.text_ffn_in = dense(intermediate_dim, "text_ffn_in")
        self.text_ffn_out = dense(hidden_dim, "text_ffn_out")
        self.text_ffn_norm = norm("text_ffn_norm")
        self.dropout_layer = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy
        )

    def build(self, input_shape=None):
        row = (None, None, self.hidden_dim)
        self.self_attention.build(row)
        self.self_attention_norm.build(row)
        if self.has_cross_attention:
            self.cross_attention.build(row, row)
            self.cross_attention_norm.build(row)
        for tower in ("query", "text"):
            getattr(self, f"{tower}_ffn_in").build(row)
            getattr(self, f"{tower}_ffn_out").build(
                (None, None, self.intermediate_dim)
            )
            getattr(self, f"{tower}_ffn_norm").build(row)
        self.built = True

    def _residual(self, x, update, norm, training):
        return norm(x + self.dropout_layer(update, training=training))

    def _ffn(self, x, tower, training):
        hidden = gelu(dense_rows(getattr(self, f"{tower}_ffn_in"), x))
        update = dense_rows(getattr(self, f"{tower}_ffn_out"), hidden)
        return self._residual(
            x, update, getattr(self, f"{tower}_ffn_norm"), training
        )

    def call(
        self,
        query=None,
        text=None,
        cf_tokens=None,
        attention_mask=None,
        training=None,
    ):
        """Runs the block.

        Args:
            query: `[batch, num_queries, hidden_dim]` or None.
            text: `[batch, text_length, hidden_dim]` or None.
            cf_tokens: `[batch, num_cf_tokens, hidden_dim]`; needed when the
                layer has cross-attention and `query` is given.
            attention_mask: boolean `[batch, rows, rows]` over the
                concatenated `[query; text]` rows (True = may attend).
            training: bool.

        Returns:
            `(query, text)`, each None where the input was None.
        """
        parts = [x for x in (query, text) if x is not None]
        x = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)
        attended = self.self_attention(
            x, attention_mask=attention_mask, training=training
        )
        x = self._residual(x, attended, self.self_attention_norm, training)
        if query is not None and text is not None:
            # `split`, not slicing: the gradient is a concatenation.
            query, text = ops.split(x, [ops.shape(query)[1]], axis=1)
        elif query is not None:
            query = x
        else:
            text = x
        if query is not None:
            if self.has_cross_attention:
                attended = self.cross_attention(
                    query, cf_tokens, training=training
                )
                query = self._residual(
                    query, attended, self.cross_attention_norm, training
                )
            query = self._ffn(query, "query", training)
        if text is not None:
            text = self._ffn(text, "text", training)
        return query, text

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "has_cross_attention": self.has_cross_attention,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "initializer_range": self.initializer_range,
            }
        )
        return config
