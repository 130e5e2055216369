"""ItemLanguageModelBackbone: a frozen keras-hub LLM that reads CF soft tokens."""

import keras
import keras_hub
import numpy as np
from keras import ops

from ilm_keras.cf.embeddings import check_table
from ilm_keras.layers.cf_item_output_head import CFItemOutputHead
from ilm_keras.layers.item_soft_tokens import ItemSoftTokens
from ilm_keras.layers.soft_token_decoder import SoftTokenDecoder, _FrozenDecoderLayer

# Imported here also for its registration: a saved ILM holds a Q-Former,
# which `keras.saving` finds by its registered name.
from ilm_keras.models.qformer import QFormer

ITEM_ENCODERS = ("ilm", "ilm_rand", "mlp", "none")


def _resolve_qformer(item_encoder, qformer):
    """The Q-Former of an `ilm` (given, pretrained) or `ilm_rand` (fresh,
    built from a config) item encoder."""
    if item_encoder == "ilm":
        if not isinstance(qformer, QFormer):
            raise TypeError(
                "`item_encoder='ilm'` needs a pretrained `QFormer` "
                f"instance as `qformer`, got {type(qformer).__name__}. "
                "For a randomly initialized Q-Former use "
                "`item_encoder='ilm_rand'` with a QFormer config."
            )
        return qformer
    if isinstance(qformer, QFormer):
        config = qformer.get_config()
    elif isinstance(qformer, dict):
        config = qformer.get("config", qformer)
    else:
        raise TypeError(
            "`item_encoder='ilm_rand'` needs `qformer` as a QFormer "
            f"config dict (or a QFormer), got {type(qformer).__name__}."
        )
    config = dict(config)
    config.pop("name", None)
    return QFormer.from_config(config)


def _resolve_tables(item_embeddings, user_embeddings, num_items, num_users, cf_dim):
    """`(table or None, num_items, num_users, cf_dim)`: the item and user
    tables stacked (items first), or the shapes alone (from a config)."""
    if item_embeddings is not None:
        items = check_table(item_embeddings, "item_embeddings", cf_dim)
        users = None
        if user_embeddings is not None:
            users = check_table(user_embeddings, "user_embeddings", items.shape[1])
        table = items if users is None else np.concatenate([items, users])
        num_users = 0 if users is None else users.shape[0]
        return table, items.shape[0], num_users, items.shape[1]
    if user_embeddings is not None:
        raise ValueError(
            "`user_embeddings` given without `item_embeddings`: the item "
            "CF table is missing."
        )
    if num_items is None or cf_dim is None:
        raise ValueError(
            "The item CF table is missing: pass `item_embeddings` "
            "[num_items, cf_dim] (and `user_embeddings` if prompts mention "
            "users), or use `item_encoder='none'` for text only."
        )
    return None, int(num_items), int(num_users or 0), int(cf_dim)


@keras.saving.register_keras_serializable(package="ilm_keras")
class ItemLanguageModelBackbone(keras_hub.models.Backbone):
    """A frozen keras-hub LLM whose input holds CF soft tokens (paper §4.4).

    Holds the LLM (any backbone of
    `ilm_keras.layers.soft_token_decoder.SUPPORTED_BACKBONES`: Gemma,
    Gemma3, Llama, GPT-2, ...), the item encoder and adaptor, and the CF
    tables (`ItemSoftTokens`). Inputs are the preprocessor's
    (`ItemLanguageModelPreprocessor`): `token_ids` and `padding_mask`, and,
    unless `item_encoder="none"`, `soft_token_mask` (True at the N slots
    that follow each item or user mention) and `entity_ids` (the CF table
    row of each mention). Each mention's CF vector goes through the item
    encoder, and its N output vectors replace the slots' token embeddings;
    the output is the LLM's final hidden states `[B, S, hidden_dim]`. With
    no mention, they are exactly the LLM's own.

    Item encoders (`item_encoder=`):
    - `"ilm"`: the given, pretrained `QFormer` (phase 1) -> `LinearAdaptor`.
    - `"ilm_rand"`: a freshly initialized `QFormer` built from `qformer` (a
      config dict, or a `QFormer` whose config is reused; its weights are
      not) -> `LinearAdaptor`.
    - `"mlp"`: the CoLLM adaptor, `MLPAdaptor` (CF vector -> hidden ->
      ReLU -> `num_mlp_tokens` LLM embeddings).
    - `"none"`: no soft tokens (text only, OpenP5-R); no CF tables.

    The LLM is frozen in place (`llm.trainable = False`; shared, not
    copied: several backbones, e.g. the four variants, may wrap one LLM).
    Its dropout is always off: its blocks run inside a layer that calls them
    with `training=False`. Set `backbone.llm.trainable = True` to train the
    LLM too (beyond the paper). The CF tables are one non-trainable variable
    (`cf_table`, items then users), saved with the weights; `set_cf_tables`
    replaces them.

    Args:
        llm: a keras-hub causal LM backbone (e.g. `LlamaBackbone`).
        item_encoder: one of `"ilm"`, `"ilm_rand"`, `"mlp"`, `"none"`.
        qformer: a `QFormer` (`"ilm"`), or a `QFormer` / `QFormer` config
            dict (`"ilm_rand"`). Unused otherwise.
        item_embeddings: float array `[num_items, cf_dim]`, the item CF
            table (row i is the preprocessor's `item_ids[i]`). Required
            unless `item_encoder="none"` or restoring from a config (then
            `num_items`, `num_users` and `cf_dim` give the shapes).
        user_embeddings: optional float array `[num_users, cf_dim]`.
        cf_embeddings: optional `ilm_keras.cf.CFEmbeddings` (both tables
            with their ids, e.g. `IALS.embeddings(...)`), in place of
            `item_embeddings` and `user_embeddings`; build the
            preprocessor from the same object so that the rows line up.
        num_mlp_tokens: int, soft tokens per item for `"mlp"` (k).
        mlp_hidden_multiplier: int, the MLP's hidden width in units of cf_dim.
        user_vectors: where a user mention's CF vector comes from:
            `"fold_in"` (default; folded in from the items the same prompt
            mentions, with the item table fixed, so a training prompt's
            user vector cannot hold its target) or `"table"` (the user's
            row of `user_embeddings`, the paper's setting; see
            `ItemSoftTokens`).
        fold_in_regularization, fold_in_alpha: the iALS regularization and
            confidence slope of the fold-in: those the item table was
            fitted with (`IALS.regularization`, `IALS.alpha`).
        num_items, num_users, cf_dim: table shapes, only needed without
            tables (restoring from a config before loading weights).
        item_token_ids: beyond the paper: optional ints, the vocabulary id
            of each item's single token (atomic item ids), in item-table
            order. Then `logits()` adds a `CFItemOutputHead`: each item
            token's logit gains `h . (W v_i)`, a trainable projection `W`
            of the item's CF vector (zero at the start). Needs an item
            encoder (`item_encoder != "none"`).
        dtype: the dtype policy; defaults to the LLM's.
        **kwargs: standard `keras_hub.models.Backbone` arguments.

    Example:
    ```python
    backbone = ItemLanguageModelBackbone(
        llm=keras_hub.models.LlamaBackbone(
            vocabulary_size=1000, num_layers=2, num_query_heads=4,
            num_key_value_heads=4, hidden_dim=64, intermediate_dim=128,
        ),
        item_encoder="ilm",
        qformer=pretrained_qformer,
        item_embeddings=item_table,
        user_embeddings=user_table,
    )
    hidden = backbone(preprocessor.generate_preprocess(["What is item_7?"]))
    ```
    """

    def __init__(
        self,
        llm,
        item_encoder="ilm",
        qformer=None,
        item_embeddings=None,
        user_embeddings=None,
        cf_embeddings=None,
        num_mlp_tokens=1,
        mlp_hidden_multiplier=10,
        user_vectors="fold_in",
        fold_in_regularization=1.0,
        fold_in_alpha=1.0,
        num_items=None,
        num_users=None,
        cf_dim=None,
        item_token_ids=None,
        dtype=None,
        **kwargs,
    ):
        if item_encoder not in ITEM_ENCODERS:
            raise ValueError(
                f"`item_encoder` must be one of {ITEM_ENCODERS}, got {item_encoder!r}."
            )
        if isinstance(llm, ItemLanguageModelBackbone) or not isinstance(
            llm, keras_hub.models.Backbone
        ):
            raise TypeError(
                "`llm` must be a keras-hub causal LM backbone (e.g. "
                f"`keras_hub.models.LlamaBackbone`), got {type(llm).__name__}."
            )
        if cf_embeddings is not None:
            if item_embeddings is not None or user_embeddings is not None:
                raise ValueError(
                    "Pass either `cf_embeddings` or `item_embeddings` / "
                    "`user_embeddings`, not both."
                )
            item_embeddings = cf_embeddings.item_table
            user_embeddings = cf_embeddings.user_table
        dtype = llm.dtype_policy if dtype is None else dtype
        decoder = SoftTokenDecoder(llm)

        # === Layers ===
        item_soft_tokens = None
        num_soft_tokens = 0
        if item_encoder == "none":
            num_items, num_users, cf_dim = 0, 0, 0
        else:
            qformer_model = None
            if item_encoder in ("ilm", "ilm_rand"):
                qformer_model = _resolve_qformer(item_encoder, qformer)
                cf_dim = int(qformer_model.cf_dim)
            table, num_items, num_users, cf_dim = _resolve_tables(
                item_embeddings, user_embeddings, num_items, num_users, cf_dim
            )
            item_soft_tokens = ItemSoftTokens(
                "mlp" if item_encoder == "mlp" else "qformer",
                output_dim=llm.hidden_dim,
                num_rows=num_items + num_users,
                cf_dim=cf_dim,
                qformer=qformer_model,
                num_mlp_tokens=num_mlp_tokens,
                mlp_hidden_multiplier=mlp_hidden_multiplier,
                cf_table_initializer=(
                    "zeros" if table is None else keras.initializers.Constant(table)
                ),
                num_items=num_items,
                user_vectors=user_vectors,
                fold_in_regularization=fold_in_regularization,
                fold_in_alpha=fold_in_alpha,
                dtype=dtype,
                name="item_soft_tokens",
            )
            num_soft_tokens = item_soft_tokens.num_soft_tokens
        llm.trainable = False  # Frozen in place (shared, not copied).
        self.llm = llm
        self.item_soft_tokens = item_soft_tokens

        # === Functional Model ===
        # The LLM's own layers, re-composed (see SoftTokenDecoder) and shared
        # with it, not copied.
        inputs = {
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input(
                shape=(None,), dtype="int32", name="padding_mask"
            ),
        }
        x = decoder.embed_tokens(inputs["token_ids"])
        if item_soft_tokens is not None:
            inputs["soft_token_mask"] = keras.Input(
                shape=(None,), dtype="bool", name="soft_token_mask"
            )
            inputs["entity_ids"] = keras.Input(
                shape=(None,), dtype="int32", name="entity_ids"
            )
            x = item_soft_tokens(x, inputs["soft_token_mask"], inputs["entity_ids"])
        hidden = _FrozenDecoderLayer(decoder, dtype=dtype, name="frozen_decoder")(
            x, inputs["padding_mask"]
        )
        super().__init__(inputs=inputs, outputs=hidden, dtype=dtype, **kwargs)
        # `trainable=` (e.g. from a config) reaches every layer: the LLM
        # stays frozen all the same.
        llm.trainable = False
        item_output_head = None
        if item_token_ids is not None:
            if item_soft_tokens is None:
                raise ValueError(
                    "`item_token_ids` (the CF item output head) needs an item "
                    "encoder; `item_encoder='none'` has no CF table."
                )
            if len(item_token_ids) != num_items:
                raise ValueError(
                    f"`item_token_ids` has {len(item_token_ids)} entries, the "
                    f"CF table {num_items} items."
                )
            item_output_head = CFItemOutputHead(
                item_token_ids, llm.vocabulary_size, cf_dim, dtype=dtype,
                name="cf_item_output_head",
            )
            item_output_head.attach_table(item_soft_tokens.cf_table)
            item_output_head.build((None, None, llm.hidden_dim))
        self.item_output_head = item_output_head

        # === Config ===
        self.item_encoder = item_encoder
        self.num_soft_tokens = int(num_soft_tokens)
        self.num_mlp_tokens = int(num_mlp_tokens)
        self.mlp_hidden_multiplier = int(mlp_hidden_multiplier)
        self.user_vectors = user_vectors
        self.fold_in_regularization = float(fold_in_regularization)
        self.fold_in_alpha = float(fold_in_alpha)
        self.num_items = int(num_items)
        self.num_users = int(num_users)
        self.cf_dim = int(cf_dim)
        self.item_token_ids = (
            None if item_token_ids is None else [int(i) for i in item_token_ids]
        )
        self.token_embedding = llm.token_embedding
        # Not tracked by Keras: a plain Python view of the LLM's layers.
        object.__setattr__(self, "decoder", decoder)

    @property
    def hidden_dim(self):
        """The LLM's hidden size."""
        return self.llm.hidden_dim

    @property
    def vocabulary_size(self):
        """The LLM's vocabulary size."""
        return self.llm.vocabulary_size

    @property
    def qformer(self):
        """The Q-Former item encoder (None for `mlp` and `none`)."""
        if self.item_soft_tokens is None:
            return None
        return self.item_soft_tokens.qformer

    @property
    def adaptor(self):
        """The adaptor (`LinearAdaptor` or `MLPAdaptor`; None for `none`)."""
        if self.item_soft_tokens is None:
            return None
        return self.item_soft_tokens.adaptor

    @property
    def cf_table(self):
        """The CF table variable (items then users; None for `none`)."""
        if self.item_soft_tokens is None:
            return None
        return self.item_soft_tokens.cf_table

    def logits(self, hidden):
        """Vocabulary logits of final hidden states `[..., H]`: the LLM's
        own, plus the CF item output head's term when it has one."""
        logits = self.decoder.logits(hidden)
        if self.item_output_head is None:
            return logits
        return logits + ops.cast(self.item_output_head(hidden), logits.dtype)

    def check_length(self, length, what):
        """Raises a `ValueError` when `length` exceeds the LLM's positions.

        Args:
            length: int, the number of positions asked for.
            what: the message's subject, naming `length` and its origin.
        """
        limit = self.decoder.max_sequence_length
        if limit is not None and length > limit:
            raise ValueError(
                f"{what} exceeds the backbone's limit (max_sequence_length={limit})."
            )

    def input_embeddings(self, inputs, training=None):
        """LLM input embeddings `[B, S, H]` with soft tokens scattered in.

        Args:
            inputs: dict with `token_ids` and, unless `item_encoder="none"`,
                `soft_token_mask` and `entity_ids`.
            training: passed to the item encoder.
        """
        x = self.decoder.embed_tokens(inputs["token_ids"])
        if self.item_soft_tokens is None:
            return x
        return self.item_soft_tokens(
            x, inputs["soft_token_mask"], inputs["entity_ids"], training=training
        )

    def set_cf_tables(self, item_embeddings, user_embeddings=None):
        """Replace the CF tables (same shapes, e.g. after retraining CF).

        Args:
            item_embeddings: float array `[num_items, cf_dim]`.
            user_embeddings: float array `[num_users, cf_dim]`, required when
                the backbone has users.
        """
        if self.cf_table is None:
            raise ValueError("This model (`item_encoder='none'`) has no CF tables.")
        items = check_table(item_embeddings, "item_embeddings", self.cf_dim)
        if items.shape[0] != self.num_items:
            raise ValueError(
                f"`item_embeddings` has {items.shape[0]} rows, the model has "
                f"{self.num_items} items."
            )
        if self.num_users:
            if user_embeddings is None:
                raise ValueError(
                    f"The model has {self.num_users} users: pass `user_embeddings`."
                )
            users = check_table(user_embeddings, "user_embeddings", self.cf_dim)
            if users.shape[0] != self.num_users:
                raise ValueError(
                    f"`user_embeddings` has {users.shape[0]} rows, the model "
                    f"has {self.num_users} users."
                )
            items = np.concatenate([items, users])
        elif user_embeddings is not None:
            raise ValueError("The model was built without users.")
        self.cf_table.assign(items)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "llm": keras.layers.serialize(self.llm),
                "item_encoder": self.item_encoder,
                "qformer": (
                    None
                    if self.qformer is None
                    else keras.layers.serialize(self.qformer)
                ),
                "num_mlp_tokens": self.num_mlp_tokens,
                "mlp_hidden_multiplier": self.mlp_hidden_multiplier,
                "user_vectors": self.user_vectors,
                "fold_in_regularization": self.fold_in_regularization,
                "fold_in_alpha": self.fold_in_alpha,
                "num_items": self.num_items,
                "num_users": self.num_users,
                "cf_dim": self.cf_dim,
                "item_token_ids": self.item_token_ids,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("llm"), dict):
            config["llm"] = keras.layers.deserialize(config["llm"])
        qformer = config.get("qformer")
        if isinstance(qformer, dict) and config.get("item_encoder") == "ilm":
            config["qformer"] = keras.layers.deserialize(qformer)
        return super().from_config(config)
