"""CF tables + item encoder -> soft tokens scattered into LLM embeddings."""

import keras
from keras import ops

from ilm_keras.layers.item_adaptor import LinearAdaptor, MLPAdaptor
from ilm_keras.utils.runtime_checks import check


@keras.saving.register_keras_serializable(package="ilm_keras")
class ItemSoftTokens(keras.layers.Layer):
    """Encodes mentioned items/users and places their soft tokens.

    Holds the CF table (items then users, one non-trainable variable
    `cf_table` of shape `[num_rows, cf_dim]`) and the item encoder, and
    replaces the soft-token slots of the LLM input embeddings with the
    encoder's outputs:

    - `encoder="qformer"`: `qformer.encode_items(cf)` `[.., N, q_hidden]` ->
      `LinearAdaptor` -> `[.., N, output_dim]` (ILM).
    - `encoder="mlp"`: `MLPAdaptor(cf)` -> `[.., k, output_dim]` (CoLLM).

    Inputs of `call`: `text_embeddings` `[B, S, H]`, `soft_token_mask` bool
    `[B, S]` (True at soft slots, N consecutive slots after each mention) and
    `entity_ids` int `[B, M]` (table row of each mention in order, -1 for
    unused mention slots after the last mention). The j-th soft slot of a
    row receives the j-th soft vector of that row (mention `j // N`, token
    `j % N`). Outside soft slots the text embeddings pass through unchanged
    (bit for bit). The inputs must agree: every id before a row's first -1
    is a table row (`< num_rows`), and each row has exactly N soft slots per
    such mention; otherwise `call` raises a `ValueError` (also compiled, see
    `ilm_keras.utils.runtime_checks`).

    Args:
        encoder: `"qformer"` or `"mlp"`.
        output_dim: int, the LLM hidden width.
        num_rows: int, rows of the CF table.
        cf_dim: int, CF embedding dimension.
        qformer: a `QFormer` (for `encoder="qformer"`).
        num_mlp_tokens: int, soft tokens per item for `"mlp"`.
        mlp_hidden_multiplier: int, MLP hidden width in units of `cf_dim`.
        cf_table_initializer: initializer for the CF table (e.g.
            `keras.initializers.Constant(table)`); zeros by default (restored
            from saved weights).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    layer = ItemSoftTokens(
        "mlp", output_dim=16, num_rows=10, cf_dim=8, num_mlp_tokens=2
    )
    x = layer(
        np.zeros((1, 6, 16)),
        soft_token_mask=np.array([[0, 0, 1, 1, 0, 0]], bool),
        entity_ids=np.array([[3, -1]]),
    )
    ```
    """

    def __init__(
        self,
        encoder,
        output_dim,
        num_rows,
        cf_dim,
        qformer=None,
        num_mlp_tokens=1,
        mlp_hidden_multiplier=10,
        cf_table_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if encoder not in ("qformer", "mlp"):
            raise ValueError(f"`encoder` must be 'qformer' or 'mlp', got {encoder!r}.")
        self.encoder = encoder
        self.output_dim = int(output_dim)
        self.num_rows = int(num_rows)
        self.cf_dim = int(cf_dim)
        self.num_mlp_tokens = int(num_mlp_tokens)
        self.mlp_hidden_multiplier = int(mlp_hidden_multiplier)
        if encoder == "qformer":
            if qformer is None:
                raise ValueError("`encoder='qformer'` needs a `qformer`.")
            if int(qformer.cf_dim) != self.cf_dim:
                raise ValueError(
                    f"The CF tables have dimension {self.cf_dim} but the "
                    f"Q-Former reads cf_dim={qformer.cf_dim}."
                )
            self.qformer = qformer
            self.num_soft_tokens = int(qformer.num_query_tokens)
            self.adaptor = LinearAdaptor(
                self.output_dim, dtype=self.dtype_policy, name="adaptor"
            )
        else:
            self.qformer = None
            self.num_soft_tokens = self.num_mlp_tokens
            self.adaptor = MLPAdaptor(
                self.output_dim,
                num_tokens=self.num_mlp_tokens,
                hidden_multiplier=self.mlp_hidden_multiplier,
                dtype=self.dtype_policy,
                name="adaptor",
            )
        self.cf_table = self.add_weight(
            shape=(self.num_rows, self.cf_dim),
            initializer=cf_table_initializer,
            dtype="float32",
            trainable=False,
            name="cf_table",
        )
        if self.encoder == "qformer":
            self.adaptor.build((None, None, qformer.hidden_dim))
        else:
            self.adaptor.build((None, self.cf_dim))

    def build(self, *args, **kwargs):
        self.built = True

    def encode(self, cf_embedding, training=None):
        """CF vectors `[R, cf_dim]` -> soft tokens `[R, N, output_dim]`."""
        if self.encoder == "mlp":
            return self.adaptor(cf_embedding)
        queries = self.qformer.encode_items(cf_embedding, training=training)
        return self.adaptor(queries)

    def call(self, text_embeddings, soft_token_mask, entity_ids, training=None):
        soft_mask = ops.cast(soft_token_mask, "bool")
        entity_ids = ops.cast(entity_ids, "int32")
        batch_size = ops.shape(entity_ids)[0]
        num_mentions = ops.shape(entity_ids)[1]
        num_slots = num_mentions * self.num_soft_tokens
        # Mentions are the ids before a row's first -1 (padding).
        mentioned = ops.cumprod(ops.cast(entity_ids >= 0, "int32"), axis=1)
        slots_needed = ops.sum(mentioned, axis=1) * self.num_soft_tokens
        check(
            ops.logical_and(
                ops.all(entity_ids < self.num_rows),
                ops.all(ops.sum(ops.cast(soft_mask, "int32"), axis=1) == slots_needed),
            ),
            f"`entity_ids` holds an id >= num_rows={self.num_rows}, or a row "
            f"of `soft_token_mask` does not have {self.num_soft_tokens} soft "
            "slot(s) per mention (ids before the row's first -1).",
        )
        # Clipped so that a bad id (already reported) cannot make NaNs.
        rows = ops.reshape(ops.clip(entity_ids, 0, self.num_rows - 1), (-1,))
        cf = ops.take(self.cf_table, rows, axis=0)
        soft = self.encode(cf, training=training)
        soft = ops.reshape(
            ops.cast(soft, text_embeddings.dtype),
            (batch_size, num_slots, self.output_dim),
        )
        slot = ops.cumsum(ops.cast(soft_mask, "int32"), axis=1) - 1
        slot = ops.clip(slot, 0, num_slots - 1)
        slot = ops.broadcast_to(ops.expand_dims(slot, -1), ops.shape(text_embeddings))
        gathered = ops.take_along_axis(soft, slot, axis=1)
        return ops.where(ops.expand_dims(soft_mask, -1), gathered, text_embeddings)

    def compute_output_shape(self, text_shape, *args, **kwargs):
        return text_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": self.encoder,
                "output_dim": self.output_dim,
                "num_rows": self.num_rows,
                "cf_dim": self.cf_dim,
                "qformer": (
                    None
                    if self.qformer is None
                    else keras.layers.serialize(self.qformer)
                ),
                "num_mlp_tokens": self.num_mlp_tokens,
                "mlp_hidden_multiplier": self.mlp_hidden_multiplier,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("qformer"), dict):
            config["qformer"] = keras.layers.deserialize(config["qformer"])
        return cls(**config)
