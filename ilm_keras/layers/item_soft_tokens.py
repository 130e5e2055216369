"""CF tables + item encoder -> soft tokens scattered into LLM embeddings."""

import keras
from keras import ops

from ilm_keras.layers.item_adaptor import LinearAdaptor, MLPAdaptor
from ilm_keras.layers.user_fold_in import fold_in_users
from ilm_keras.utils.runtime_checks import check


def query_path_unused_layers(qformer):
    """The layers of a `QFormer` that `encode_items` never runs.

    The query path (`qformer.encode_items`: CF tokens, learned queries,
    self-attention among the queries, cross-attention, the query feed-forward
    networks) leaves the text tower alone: the token and position embeddings
    and each layer's text feed-forward network. (Phase 1's generation and
    matching heads live in `QFormerPretrainer`, not in the `QFormer`.)

    Args:
        qformer: a `QFormer`.

    Returns:
        A list of Keras layers.

    Example:
    ```python
    for layer in query_path_unused_layers(qformer):
        layer.trainable = False
    ```
    """
    layers = [qformer.token_embedding, qformer.position_embedding]
    for block in qformer.transformer_layers:
        layers += [block.text_ffn_in, block.text_ffn_out, block.text_ffn_norm]
    return layers


USER_VECTORS = ("fold_in", "table")


@keras.saving.register_keras_serializable(package="ilm_keras")
class ItemSoftTokens(keras.layers.Layer):
    """Encodes mentioned items/users and places their soft tokens.

    Holds the CF table (items then users, one non-trainable variable
    `cf_table` of shape `[num_rows, cf_dim]`) and the item encoder, and
    replaces the soft-token slots of the LLM input embeddings with the
    encoder's outputs:

    - `encoder="qformer"`: `qformer.encode_items(cf)` `[.., N, q_hidden]` ->
      `LinearAdaptor` -> `[.., N, output_dim]` (ILM). The Q-Former's text
      tower, which this path never runs, is frozen in place
      (`query_path_unused_layers`; the Q-Former is shared, not copied, as
      the LLM backbone is): it gets no gradient, so it is not trainable, and
      a pretrained and a fresh Q-Former of one size train the same
      parameters whatever their text vocabularies. To pretrain that
      Q-Former again, set those layers' `trainable` back to True.
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

    User mentions (rows `>= num_items`) read a CF vector chosen by
    `user_vectors`:
    - `"fold_in"` (default): the user vector is folded in (iALS, item table
      fixed, `fold_in_users`) from the items the same prompt mentions, so
      it holds only what the prompt shows, in training and at test alike;
      a prompt that mentions no item gives the user the zero vector.
    - `"table"`: the user's row of the CF table (the paper's setting). A
      table fitted on the training sequences holds every training target
      of the user, so training prompts see their answer and test prompts
      do not.

    Args:
        encoder: `"qformer"` or `"mlp"`.
        output_dim: int, the LLM hidden width.
        num_rows: int, rows of the CF table.
        cf_dim: int, CF embedding dimension.
        num_items: int, the table's item rows (the first ones); the rest
            are users. Defaults to `num_rows` (no users).
        user_vectors: `"fold_in"` or `"table"` (above).
        fold_in_regularization, fold_in_alpha: floats, the iALS
            regularization and confidence slope of the fold-in (use the
            values the item table was fitted with).
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
        num_items=None,
        user_vectors="fold_in",
        fold_in_regularization=1.0,
        fold_in_alpha=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if encoder not in ("qformer", "mlp"):
            raise ValueError(f"`encoder` must be 'qformer' or 'mlp', got {encoder!r}.")
        if user_vectors not in USER_VECTORS:
            raise ValueError(
                f"`user_vectors` must be one of {USER_VECTORS}, got {user_vectors!r}."
            )
        if not fold_in_regularization > 0 or not fold_in_alpha >= 0:
            raise ValueError(
                "`fold_in_regularization` must be > 0 and `fold_in_alpha` >= 0; "
                f"got {fold_in_regularization} and {fold_in_alpha}."
            )
        self.num_items = int(num_rows if num_items is None else num_items)
        if not 0 < self.num_items <= int(num_rows):
            raise ValueError(
                f"`num_items` must be in 1..num_rows={num_rows}; got {num_items}."
            )
        self.user_vectors = user_vectors
        self.fold_in_regularization = float(fold_in_regularization)
        self.fold_in_alpha = float(fold_in_alpha)
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
            for layer in query_path_unused_layers(qformer):
                layer.trainable = False
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
        cf = ops.reshape(self.mention_vectors(entity_ids), (-1, self.cf_dim))
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

    def mention_vectors(self, entity_ids):
        """The CF vector each mention's soft tokens are computed from.

        Items read their table row; users their row or, with
        `user_vectors="fold_in"`, the vector folded in from the items the
        same prompt mentions. This is everything the soft tokens can know
        about a prompt (tests use it to check that a training prompt's
        target is no easier to read from it than a test prompt's).

        Args:
            entity_ids: int `[B, M]`, as in `call`.

        Returns:
            float32 `[B, M, cf_dim]` (padding mentions read row 0).
        """
        entity_ids = ops.cast(entity_ids, "int32")
        # Clipped so that a bad id (reported by `call`) cannot make NaNs.
        rows = ops.clip(entity_ids, 0, self.num_rows - 1)
        cf = ops.take(self.cf_table, rows, axis=0)
        if self.user_vectors != "fold_in" or self.num_items == self.num_rows:
            return cf
        # Mentions are the ids before a row's first -1 (padding).
        mentioned = ops.cumprod(ops.cast(entity_ids >= 0, "int32"), axis=1)
        is_item = ops.logical_and(
            ops.cast(mentioned, "bool"), entity_ids < self.num_items
        )
        users = fold_in_users(
            self.cf_table[: self.num_items],
            ops.where(is_item, entity_ids, -1),
            self.fold_in_regularization,
            self.fold_in_alpha,
        )  # [B, d]
        is_user = ops.expand_dims(entity_ids >= self.num_items, -1)
        return ops.where(is_user, ops.cast(users, cf.dtype)[:, None, :], cf)

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
                "num_items": self.num_items,
                "user_vectors": self.user_vectors,
                "fold_in_regularization": self.fold_in_regularization,
                "fold_in_alpha": self.fold_in_alpha,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("qformer"), dict):
            config["qformer"] = keras.layers.deserialize(config["qformer"])
        return cls(**config)
