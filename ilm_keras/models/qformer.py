"""The Q-Former item encoder: N learned queries read a CF embedding."""

import keras
from keras import ops

from ilm_keras.layers.qformer_attention_mask import QFORMER_MODES
from ilm_keras.layers.qformer_attention_mask import qformer_attention_mask
from ilm_keras.layers.qformer_layer import QFormerLayer
from ilm_keras.utils.runtime_checks import check
from ilm_keras.utils.runtime_checks import check_finite


@keras.saving.register_keras_serializable(package="ilm_keras")
class QFormer(keras.Model):
    """A BLIP-2-style Querying Transformer over collaborative-filtering vectors.

    The CF vector of an item (or a user: "a user is a special item") is mapped
    by a dense layer to `num_cf_tokens` key/value tokens. `num_query_tokens`
    learned queries attend to each other and, every
    `cross_attention_frequency` layers, to those CF tokens; their outputs are
    the item's representation (`encode_items`). A text tower shares the
    self-attention with the queries and has its own feed-forward networks and
    a token embedding that a language-model head can reuse (tied weights).

    Modes (`call(..., mode=...)`):
    - `"unimodal"`: queries and text are encoded apart (item-text contrast).
    - `"matching"`: queries and text attend to each other (item-text match).
    - `"generation"`: text is causal, sees all queries; queries never see
      text (item-grounded text generation).

    With `num_cf_tokens=1` the cross-attention softmax runs over a single key,
    so every query receives the same cross-attention output; the queries then
    differ only through their learned embeddings and self-attention. That is
    why the default maps the CF vector to several tokens.

    Args:
        vocabulary_size: int, size of the text tower's vocabulary.
        cf_dim: int, dimension of the CF embeddings this encoder reads.
        num_layers: int, Q-Former blocks.
        hidden_dim: int, width of queries and text rows.
        num_heads: int, attention heads.
        intermediate_dim: int, feed-forward width.
        num_query_tokens: int, N, learned queries = soft tokens per item.
        max_text_length: int, longest text (in tokens) the text tower reads.
        num_cf_tokens: int, k >= 1 key/value tokens the CF vector is mapped to.
        cross_attention_frequency: int, a block has cross-attention when its
            index is a multiple of this (BLIP-2 uses 2).
        dropout: float.
        layer_norm_epsilon: float.
        initializer_range: float, standard deviation of the truncated-normal
            initializer of every kernel and embedding (BERT / BLIP-2: 0.02).
            At 0.02 a narrow, briefly trained Q-Former barely reads its
            input: at width 64 its query outputs move by about 0.5% of their
            scale when the CF vector is replaced by another one, because the
            cross-attention's value and output projections each scale the
            CF tokens down. About `1 / sqrt(hidden_dim)` (0.125 at width 64)
            lets the CF vector through from the start.

    Example:
    ```python
    qformer = ilm_keras.QFormer(
        vocabulary_size=100, cf_dim=8, num_layers=2, hidden_dim=32,
        num_heads=2, intermediate_dim=64, num_query_tokens=4,
        max_text_length=16,
    )
    items = qformer.encode_items(np.random.rand(3, 8).astype("float32"))
    items.shape  # (3, 4, 32)
    outputs = qformer(
        {"cf_embedding": np.random.rand(3, 8).astype("float32"),
         "token_ids": np.ones((3, 16), "int32"),
         "padding_mask": np.ones((3, 16), bool)},
        mode="generation",
    )
    outputs["text_outputs"].shape  # (3, 16, 32)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        cf_dim,
        num_layers=8,
        hidden_dim=768,
        num_heads=12,
        intermediate_dim=3072,
        num_query_tokens=32,
        max_text_length=32,
        num_cf_tokens=8,
        cross_attention_frequency=2,
        dropout=0.1,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not initializer_range > 0:
            raise ValueError(
                f"initializer_range must be > 0, got {initializer_range}."
            )
        if num_cf_tokens < 1:
            raise ValueError(f"num_cf_tokens must be >= 1, got {num_cf_tokens}.")
        if cross_attention_frequency < 1:
            raise ValueError(
                "cross_attention_frequency must be >= 1, got "
                f"{cross_attention_frequency}."
            )
        self.vocabulary_size = vocabulary_size
        self.cf_dim = cf_dim
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.num_query_tokens = num_query_tokens
        self.max_text_length = max_text_length
        self.num_cf_tokens = num_cf_tokens
        self.cross_attention_frequency = cross_attention_frequency
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = float(initializer_range)

        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.cf_projection = keras.layers.Dense(
            num_cf_tokens * hidden_dim,
            kernel_initializer=init,
            dtype=self.dtype_policy,
            name="cf_projection",
        )
        self.cf_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="cf_norm"
        )
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=init,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_embedding = keras.layers.Embedding(
            max_text_length,
            hidden_dim,
            embeddings_initializer=init,
            dtype=self.dtype_policy,
            name="position_embedding",
        )
        self.embeddings_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="embeddings_norm",
        )
        self.embeddings_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="embeddings_dropout"
        )
        self.transformer_layers = [
            QFormerLayer(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                has_cross_attention=(i % cross_attention_frequency == 0),
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                initializer_range=self.initializer_range,
                dtype=self.dtype_policy,
                name=f"qformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        self.query_tokens = self.add_weight(
            shape=(1, self.num_query_tokens, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(
                stddev=self.initializer_range
            ),
            name="query_tokens",
        )
        self.cf_projection.build((None, self.cf_dim))
        self.cf_norm.build((None, None, self.hidden_dim))
        self.token_embedding.build((None, None))
        self.position_embedding.build((None, None))
        self.embeddings_norm.build((None, None, self.hidden_dim))
        for layer in self.transformer_layers:
            layer.build()
        self.built = True

    # -- pieces ------------------------------------------------------------

    def _cf_tokens(self, cf_embedding):
        if cf_embedding.shape[-1] != self.cf_dim:
            raise ValueError(
                f"CF embedding has dimension {cf_embedding.shape[-1]}, but this "
                f"Q-Former was built for cf_dim={self.cf_dim}."
            )
        check_finite(cf_embedding, "cf_embedding")
        batch_size = ops.shape(cf_embedding)[0]
        tokens = self.cf_projection(cf_embedding)
        tokens = ops.reshape(
            tokens, (batch_size, self.num_cf_tokens, self.hidden_dim)
        )
        return self.cf_norm(tokens)

    def _query_rows(self, batch_size, training):
        queries = ops.broadcast_to(
            ops.cast(self.query_tokens, self.compute_dtype),
            (batch_size, self.num_query_tokens, self.hidden_dim),
        )
        return self.embeddings_dropout(
            self.embeddings_norm(queries), training=training
        )

    def _text_rows(self, token_ids, padding_mask, training):
        length = token_ids.shape[1]
        if length is not None and length > self.max_text_length:
            raise ValueError(
                f"Text of {length} tokens is longer than max_text_length="
                f"{self.max_text_length}."
            )
        check(
            ops.all(ops.cast(padding_mask[:, 0], "bool")),
            "Empty text: every text needs at least one token (padding_mask"
            "[:, 0] is 0 for some row).",
        )
        positions = ops.arange(ops.shape(token_ids)[1])
        rows = self.token_embedding(token_ids) + ops.expand_dims(
            self.position_embedding(positions), 0
        )
        return self.embeddings_dropout(
            self.embeddings_norm(rows), training=training
        )

    def _run_layers(self, query, text, cf_tokens, mask, training):
        for layer in self.transformer_layers:
            query, text = layer(
                query=query,
                text=text,
                cf_tokens=cf_tokens,
                attention_mask=mask,
                training=training,
            )
        return query, text

    # -- public API --------------------------------------------------------

    def call(self, inputs, mode="unimodal", training=None):
        """Encodes items and/or text.

        Args:
            inputs: dict with `"cf_embedding"` `[batch, cf_dim]` and, for text,
                `"token_ids"` `[batch, length]` and `"padding_mask"`
                `[batch, length]`. Without `cf_embedding` only the text tower
                runs (mode must be `"unimodal"`); without text only the query
                tower runs.
            mode: `"unimodal"`, `"matching"` or `"generation"`.
            training: bool.

        Returns:
            dict with `"query_outputs"` `[batch, num_query_tokens, hidden_dim]`
            when `cf_embedding` was given and `"text_outputs"`
            `[batch, length, hidden_dim]` when text was given.
        """
        if mode not in QFORMER_MODES:
            raise ValueError(
                f"Unknown Q-Former mode {mode!r}; expected one of "
                f"{QFORMER_MODES}."
            )
        cf_embedding = inputs.get("cf_embedding")
        token_ids = inputs.get("token_ids")
        if cf_embedding is None and token_ids is None:
            raise ValueError(
                "QFormer inputs need 'cf_embedding', 'token_ids', or both."
            )
        query = cf_tokens = text = padding_mask = None
        if cf_embedding is not None:
            cf_tokens = self._cf_tokens(cf_embedding)
            query = self._query_rows(ops.shape(cf_embedding)[0], training)
        if token_ids is not None:
            padding_mask = inputs.get("padding_mask")
            if padding_mask is None:
                padding_mask = ops.ones_like(token_ids, dtype="bool")
            text = self._text_rows(token_ids, padding_mask, training)

        outputs = {}
        if mode == "unimodal" or query is None or text is None:
            if mode != "unimodal" and (query is None or text is None):
                raise ValueError(
                    f"Mode {mode!r} needs both 'cf_embedding' and 'token_ids'."
                )
            # Two towers that never see each other: run them apart.
            if query is not None:
                outputs["query_outputs"], _ = self._run_layers(
                    query, None, cf_tokens, None, training
                )
            if text is not None:
                mask = qformer_attention_mask("unimodal", 0, padding_mask)
                _, outputs["text_outputs"] = self._run_layers(
                    None, text, None, mask, training
                )
            return outputs
        mask = qformer_attention_mask(mode, self.num_query_tokens, padding_mask)
        query, text = self._run_layers(query, text, cf_tokens, mask, training)
        return {"query_outputs": query, "text_outputs": text}

    def encode_items(self, cf_embedding, training=None):
        """Maps CF vectors `[batch, cf_dim]` to `[batch, N, hidden_dim]`."""
        return self({"cf_embedding": cf_embedding}, training=training)[
            "query_outputs"
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "cf_dim": self.cf_dim,
                "num_layers": self.num_layers,
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "num_query_tokens": self.num_query_tokens,
                "max_text_length": self.max_text_length,
                "num_cf_tokens": self.num_cf_tokens,
                "cross_attention_frequency": self.cross_attention_frequency,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "initializer_range": self.initializer_range,
            }
        )
        return config
