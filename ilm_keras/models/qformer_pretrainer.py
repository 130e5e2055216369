"""Phase 1: pretraining the Q-Former with item-text and item-item losses."""

import keras
from keras import ops

from ilm_keras.tokenizers.qformer_tokenizer import SPECIAL_TOKENS
from ilm_keras.utils.replicas import scale_loss_for_replicas
from ilm_keras.utils.runtime_checks import check

# Which losses each `losses=` setting trains (paper Table 4's ablations).
LOSS_SETS = {
    "it": ("itc", "itg", "itm"),
    "it_ii": ("itc", "itg", "itm", "ii"),
    "it_ui": ("itc", "itg", "itm", "ui"),
    "all": ("itc", "itg", "itm", "ii", "ui"),
    # No item texts (e.g. OpenP5's Amazon splits): CF-only contrastive
    # pretraining, item-item and user-item.
    "ii_ui": ("ii", "ui"),
}
ALL_LOSSES = ("itc", "itg", "itm", "ii", "ui")
# The `kind` of every example in a batch (see `ilm_keras.models.phase1_batches`).
ITEM_TEXT, ITEM_ITEM, USER_ITEM = 0, 1, 2
_NEG = -1e4  # a finite "minus infinity" that stays finite in float16/bfloat16


def _normalize(x):
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + 1e-12)


def _smoothed_cross_entropy(logits, labels, label_smoothing, valid=None):
    """Per-row cross-entropy with label smoothing over the valid classes.

    Args:
        logits: `[rows, classes]`.
        labels: `[rows]` int, the target class of each row.
        label_smoothing: float.
        valid: optional bool `[rows, classes]`; invalid classes get no logit
            mass and no smoothing mass.

    Returns:
        `[rows]` float32 losses.
    """
    logits = ops.cast(logits, "float32")
    num_classes = ops.shape(logits)[-1]
    if valid is None:
        valid = ops.ones_like(logits, dtype="bool")
    logits = ops.where(valid, logits, _NEG)
    log_probs = ops.log_softmax(logits, axis=-1)
    one_hot = ops.one_hot(labels, num_classes)
    valid = ops.cast(valid, "float32")
    smooth = valid / ops.sum(valid, axis=-1, keepdims=True)
    targets = (1.0 - label_smoothing) * one_hot + label_smoothing * smooth
    return -ops.sum(targets * log_probs * valid, axis=-1)


def _symmetric_contrastive_loss(similarity, temperature, label_smoothing, valid):
    """InfoNCE in both directions over a `[B, B]` similarity matrix whose
    diagonal holds the positives."""
    logits = similarity / temperature
    labels = ops.arange(ops.shape(similarity)[0])
    forward = _smoothed_cross_entropy(logits, labels, label_smoothing, valid)
    backward = _smoothed_cross_entropy(
        ops.transpose(logits), labels, label_smoothing, ops.transpose(valid)
    )
    return (_mean(forward) + _mean(backward)) / 2.0


def _mean(x):
    """`ops.mean` of a 1-D tensor; 0.0 (not NaN) when it has no rows.

    A batch of the other kind computes this kind's losses on zero rows (see
    `QFormerPretrainer.call`), and a NaN there would reach the gradients.
    """
    return ops.sum(x) / ops.maximum(ops.cast(ops.shape(x)[0], x.dtype), 1.0)


def _argmax_rows(scores):
    """`ops.argmax(scores, axis=-1)` that also works with zero columns.

    TensorFlow's `ArgMax` rejects an empty axis, which a `[0, 0]` score
    matrix has. A sentinel column below every real score (which are above
    `2 * _NEG`) is appended; it is never chosen when there is a real column.
    """
    sentinel = ops.full((ops.shape(scores)[0], 1), 2.0 * _NEG, scores.dtype)
    return ops.argmax(ops.concatenate([scores, sentinel], axis=-1), axis=-1)


def _negatives_mask(*id_vectors):
    """`[B, B]` bool: True where column j is a true negative for row i.

    The diagonal (the positive) stays True; an off-diagonal entry is False
    when it shares an id with the positive in any of `id_vectors` (the same
    item twice in a batch must not be pushed away from itself).
    """
    size = ops.shape(id_vectors[0])[0]
    eye = ops.eye(size, dtype="bool")
    duplicate = ops.zeros((size, size), "bool")
    for ids in id_vectors:
        duplicate = ops.logical_or(
            duplicate, ops.equal(ids[:, None], ids[None, :])
        )
    return ops.logical_or(eye, ops.logical_not(duplicate))


def select_query_for_text(item_features, text_features):
    """Paper eq. 2: for each positive pair, the query closest to its text.

    Args:
        item_features: `[B, N, D]` normalized query features.
        text_features: `[B, D]` normalized text features of the same rows.

    Returns:
        `[B]` int, the index of the chosen query of each item.
    """
    scores = ops.einsum("bnd,bd->bn", item_features, text_features)
    return ops.argmax(scores, axis=-1)


def select_closest_query_pair(features_a, features_b):
    """Paper eq. 4: for each positive pair, the closest pair of queries.

    Args:
        features_a: `[B, N, D]` normalized query features of the first items.
        features_b: `[B, N, D]` normalized query features of the second items.

    Returns:
        `(k, l)`, two `[B]` int tensors: query `k` of item 1 and query `l` of
        item 2 have the highest cosine similarity of all `N * N` pairs.
    """
    num_queries = ops.shape(features_b)[1]
    scores = ops.einsum("bkd,bld->bkl", features_a, features_b)
    flat = ops.argmax(ops.reshape(scores, (ops.shape(scores)[0], -1)), axis=-1)
    return flat // num_queries, flat % num_queries


def _take_rows(features, index):
    """`features[b, index[b]]` for `[B, N, D]` features."""
    index = ops.expand_dims(ops.expand_dims(index, -1), -1)
    return ops.squeeze(ops.take_along_axis(features, index, axis=1), axis=1)


def _select(flag, value, zero):
    """`value` where `flag`, else `zero`; `flag` a Python or tensor bool."""
    if flag is True:
        return ops.convert_to_tensor(value, "float32")
    return ops.where(flag, value, zero)


def _not(flag):
    """`not flag` for a Python bool, `ops.logical_not` for a tensor."""
    return (not flag) if isinstance(flag, bool) else ops.logical_not(flag)


def _implies(flag, condition):
    """`condition`, or True where `flag` is false (`flag`: bool or tensor)."""
    if flag is True:
        return condition
    return ops.logical_or(ops.logical_not(flag), condition)


@keras.saving.register_keras_serializable(package="ilm_keras")
class QFormerPretrainer(keras.Model):
    """Phase-1 pretraining of a `QFormer` with all of the paper's losses.

    Losses (paper §3.2; BLIP-2 for the first three):
    - `itc`, item-text contrastive: item and text projected to `embed_dim`
      and L2-normalised; in-batch negatives; learnable temperature (init
      0.07, clipped to [0.001, 0.5]); symmetric cross-entropy with label
      smoothing. The query that represents the item is chosen by
      `query_selection`:
        - `"positive"` (default, paper eq. 2): the query closest to the
          item's *own* text; that one query is then compared with every text
          in the batch.
        - `"max"` (BLIP-2): for every (item, text) pair of the batch matrix,
          the maximum over queries.
    - `itg`, item-grounded text generation: the text tower decodes the text
      causally while seeing all queries; `[DEC]` replaces `[CLS]`; the LM
      head (dense + GELU + LayerNorm, decoder tied to the token embedding)
      is trained with label-smoothed cross-entropy on non-padding tokens.
    - `itm`, item-text matching: bidirectional pass over 3B pairs (positives,
      item with a hard-negative text, hard-negative item with text); hard
      negatives sampled in proportion to the softmax of the contrastive
      similarities (no gradient through the sampling). The 2-way classifier
      reads `itm_head`: `"text_cls"` (default, the paper's wording) or
      `"query_mean"` (BLIP-2: mean over query outputs).
    - `ii` item-item and `ui` user-item contrastive (paper eq. 3-4): both
      sides through the same Q-Former (a user is a special item); the pair of
      queries with the highest cosine similarity represents the two sides;
      in-batch negatives with its own learnable temperature.

    Batches are of one kind only (in-batch negatives of item-text and of
    item-item examples must not mix); build them with
    `ilm_keras.data.make_phase1_dataset`, which alternates the kinds within
    one `fit` as the paper does. Every loss is reported as a metric. The
    step tells the kinds apart without a branch (see `call`), so `compile`
    takes any `jit_compile` on both backends: XLA on TensorFlow too.

    Args:
        qformer: the `QFormer` to train.
        losses: `"it"`, `"it_ii"`, `"it_ui"`, `"all"`, or `"ii_ui"` (item-item
            and user-item only, for data without item texts).
        embed_dim: int, contrastive projection width (BLIP-2: 256).
        query_selection: `"positive"` or `"max"` (see above).
        itm_head: `"text_cls"` or `"query_mean"` (see above).
        label_smoothing: float, for the contrastive and generation losses.
        dec_token_id: int, id of `[DEC]` in the Q-Former tokenizer (default:
            its id in every `QFormerTokenizer` vocabulary, 4).
        seed: optional int for hard-negative sampling.

    Example:
    ```python
    qformer = ilm_keras.QFormer(vocabulary_size=tokenizer.vocabulary_size(),
                                cf_dim=64, num_layers=2, hidden_dim=64,
                                num_heads=2, intermediate_dim=128,
                                num_query_tokens=8, max_text_length=32)
    pretrainer = ilm_keras.QFormerPretrainer(
        qformer, losses="it_ii", dec_token_id=tokenizer.dec_token_id)
    pretrainer.compile(optimizer=keras.optimizers.AdamW(1e-4))
    dataset, steps = ilm_keras.data.make_phase1_dataset(...)
    pretrainer.fit(dataset, steps_per_epoch=steps, epochs=10, shuffle=False)
    ```
    """

    def __init__(
        self,
        qformer,
        losses="all",
        embed_dim=256,
        query_selection="positive",
        itm_head="text_cls",
        label_smoothing=0.1,
        dec_token_id=SPECIAL_TOKENS.index("[DEC]"),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if losses not in LOSS_SETS:
            raise ValueError(
                f"Unknown losses={losses!r}; expected one of {list(LOSS_SETS)}."
            )
        if query_selection not in ("positive", "max"):
            raise ValueError(
                f"Unknown query_selection={query_selection!r}; expected "
                "'positive' or 'max'."
            )
        if itm_head not in ("text_cls", "query_mean"):
            raise ValueError(
                f"Unknown itm_head={itm_head!r}; expected 'text_cls' or "
                "'query_mean'."
            )
        self.qformer = qformer
        self.losses_name = losses
        self.enabled_losses = LOSS_SETS[losses]
        self.embed_dim = embed_dim
        self.query_selection = query_selection
        self.itm_head_input = itm_head
        self.label_smoothing = label_smoothing
        self.dec_token_id = dec_token_id
        self.seed = seed
        hidden = qformer.hidden_dim
        init = keras.initializers.TruncatedNormal(stddev=0.02)

        def dense(units, name, activation=None):
            layer = keras.layers.Dense(
                units,
                activation=activation,
                kernel_initializer=init,
                dtype=self.dtype_policy,
                name=name,
            )
            layer.build((None, hidden))
            return layer

        self.item_projection = dense(embed_dim, "item_projection")
        self.text_projection = dense(embed_dim, "text_projection")
        self.itm_classifier = dense(2, "itm_classifier")
        self.lm_transform = dense(hidden, "lm_transform", "gelu")
        self.lm_norm = keras.layers.LayerNormalization(
            epsilon=qformer.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="lm_norm",
        )
        self.lm_norm.build((None, None, hidden))
        self.lm_bias = self.add_weight(
            shape=(qformer.vocabulary_size,), initializer="zeros", name="lm_bias"
        )
        self.itc_temperature = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(0.07),
            name="itc_temperature",
        )
        self.pair_temperature = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(0.07),
            name="pair_temperature",
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_trackers = {
            name: keras.metrics.Mean(name=f"{name}_loss")
            for name in self.enabled_losses
        }
        # Every weight exists from here on (the Q-Former's shapes come from
        # its config), so what needs a built model before `fit` works, e.g.
        # `keras.callbacks.BackupAndRestore`.
        qformer.build()
        self.built = True

    # -- losses ------------------------------------------------------------

    def _temperature(self, variable):
        return ops.clip(ops.cast(variable, "float32"), 0.001, 0.5)

    def _item_text_losses(self, batch, training):
        token_ids = batch["token_ids"]
        padding_mask = batch["padding_mask"]
        batch_size = ops.shape(token_ids)[0]
        # The items of the texts: all of `cf_a` in an item-text batch, none
        # (zero rows) when a pair batch runs this in-graph (see `call`).
        cf = batch["cf_a"][:batch_size]
        item_ids = batch["id_a"][:batch_size]

        # Item-text contrastive (unimodal towers).
        unimodal = self.qformer(
            {"cf_embedding": cf, "token_ids": token_ids,
             "padding_mask": padding_mask},
            mode="unimodal",
            training=training,
        )
        item_features = _normalize(
            ops.cast(self.item_projection(unimodal["query_outputs"]), "float32")
        )
        text_features = _normalize(
            ops.cast(
                self.text_projection(unimodal["text_outputs"][:, 0]), "float32"
            )
        )
        per_query = ops.einsum("bnd,cd->bcn", item_features, text_features)
        if self.query_selection == "max":
            similarity = ops.max(per_query, axis=-1)
        else:
            chosen = select_query_for_text(item_features, text_features)
            similarity = ops.matmul(
                _take_rows(item_features, chosen), ops.transpose(text_features)
            )
        negatives = _negatives_mask(item_ids)
        itc = _symmetric_contrastive_loss(
            similarity,
            self._temperature(self.itc_temperature),
            self.label_smoothing,
            negatives,
        )

        # Item-grounded generation: [DEC] replaces [CLS].
        dec = ops.full((batch_size, 1), self.dec_token_id, token_ids.dtype)
        generation = self.qformer(
            {"cf_embedding": cf,
             "token_ids": ops.concatenate([dec, token_ids[:, 1:]], axis=1),
             "padding_mask": padding_mask},
            mode="generation",
            training=training,
        )
        hidden = self.lm_norm(self.lm_transform(generation["text_outputs"]))
        logits = self.qformer.token_embedding(hidden[:, :-1], reverse=True)
        logits = ops.cast(logits, "float32") + ops.cast(self.lm_bias, "float32")
        vocab = ops.shape(logits)[-1]
        token_losses = _smoothed_cross_entropy(
            ops.reshape(logits, (-1, vocab)),
            ops.reshape(token_ids[:, 1:], (-1,)),
            self.label_smoothing,
        )
        weights = ops.reshape(ops.cast(padding_mask[:, 1:], "float32"), (-1,))
        itg = ops.sum(token_losses * weights) / ops.maximum(
            ops.sum(weights), 1.0
        )

        # Item-text matching with hard negatives drawn from the ITC scores.
        scores = ops.stop_gradient(similarity) / ops.stop_gradient(
            self._temperature(self.itc_temperature)
        )
        off_diagonal = ops.logical_and(
            negatives, ops.logical_not(ops.eye(batch_size, dtype="bool"))
        )
        gumbel = -ops.log(
            -ops.log(
                keras.random.uniform(
                    (2, batch_size, batch_size),
                    minval=1e-6,
                    maxval=1.0 - 1e-6,
                    seed=self.seed_generator,
                )
            )
        )
        # argmax(logit + Gumbel noise) samples from softmax(logit). A row
        # with no negative (every other example is the same item) samples
        # a positive; its pair gets weight 0 in the ITM loss below.
        has_negative_text = ops.any(off_diagonal, axis=-1)
        has_negative_item = ops.any(off_diagonal, axis=0)
        negative_text = _argmax_rows(
            ops.where(off_diagonal, scores, _NEG) + gumbel[0]
        )
        negative_item = _argmax_rows(
            ops.where(ops.transpose(off_diagonal), ops.transpose(scores), _NEG)
            + gumbel[1]
        )
        matching = self.qformer(
            {
                "cf_embedding": ops.concatenate(
                    [cf, cf, ops.take(cf, negative_item, axis=0)], axis=0
                ),
                "token_ids": ops.concatenate(
                    [token_ids, ops.take(token_ids, negative_text, axis=0),
                     token_ids],
                    axis=0,
                ),
                "padding_mask": ops.concatenate(
                    [padding_mask,
                     ops.take(padding_mask, negative_text, axis=0),
                     padding_mask],
                    axis=0,
                ),
            },
            mode="matching",
            training=training,
        )
        if self.itm_head_input == "text_cls":
            features = matching["text_outputs"][:, 0]
        else:
            features = ops.mean(matching["query_outputs"], axis=1)
        itm_logits = self.itm_classifier(features)
        itm_labels = ops.concatenate(
            [ops.ones((batch_size,), "int32"),
             ops.zeros((2 * batch_size,), "int32")]
        )
        itm_weights = ops.cast(
            ops.concatenate(
                [ops.ones((batch_size,), "bool"), has_negative_text,
                 has_negative_item]
            ),
            "float32",
        )
        # The weighted mean (0.0 for zero rows); all-ones weights give
        # exactly the plain mean.
        itm = ops.sum(
            _smoothed_cross_entropy(itm_logits, itm_labels, 0.0) * itm_weights
        ) / ops.maximum(ops.sum(itm_weights), 1.0)
        return {"itc": itc, "itg": itg, "itm": itm}

    def _pair_loss(self, batch, training):
        cf_b = batch["cf_b"]
        batch_size = ops.shape(cf_b)[0]
        # All of `cf_a` in a pair batch; zero rows when an item-text batch
        # runs this in-graph (see `call`).
        cf_a = batch["cf_a"][:batch_size]
        queries = self.qformer.encode_items(
            ops.concatenate([cf_a, cf_b], axis=0), training=training
        )
        features = _normalize(
            ops.cast(self.item_projection(queries), "float32")
        )
        features_a, features_b = features[:batch_size], features[batch_size:]
        k, l = select_closest_query_pair(features_a, features_b)
        similarity = ops.matmul(
            _take_rows(features_a, k), ops.transpose(_take_rows(features_b, l))
        )
        return _symmetric_contrastive_loss(
            similarity,
            self._temperature(self.pair_temperature),
            self.label_smoothing,
            _negatives_mask(batch["id_a"][:batch_size], batch["id_b"]),
        )

    # -- retrieval ---------------------------------------------------------

    def item_text_similarity(self, cf_embedding, token_ids, padding_mask):
        """Cosine similarity of every item with every text.

        At inference no positive text is known, so an item's score for a text
        is the maximum over its queries (the BLIP-2 retrieval rule).

        Args:
            cf_embedding: `[num_items, cf_dim]`.
            token_ids: `[num_texts, L]` from `QFormerTokenizer.encode`.
            padding_mask: `[num_texts, L]`.

        Returns:
            `[num_items, num_texts]` float32 similarities.
        """
        queries = self.qformer.encode_items(cf_embedding, training=False)
        text = self.qformer(
            {"token_ids": token_ids, "padding_mask": padding_mask},
            training=False,
        )["text_outputs"]
        item_features = _normalize(
            ops.cast(self.item_projection(queries), "float32")
        )
        text_features = _normalize(
            ops.cast(self.text_projection(text[:, 0]), "float32")
        )
        return ops.max(
            ops.einsum("bnd,cd->bcn", item_features, text_features), axis=-1
        )

    # -- keras.Model -------------------------------------------------------

    def call(self, batch, training=None):
        """Computes the losses of one single-kind batch.

        The kind is read from the row counts: an item-text batch has text
        rows and a pair batch has `cf_b` rows. Where those counts are static
        (JAX, eager calls) only the batch's own losses are computed. Where
        they are not (TensorFlow relaxes the batch dimension to None when
        the kinds take turns in one `fit`), both kinds' losses are computed,
        the absent kind's on zero rows, and the batch's own are selected:
        no in-graph branch, so TensorFlow's graph type inference and XLA
        accept the step. Zero-row losses cost only the per-op overhead
        (`benchmarks/phase1_dispatch.py` times it).

        Args:
            batch: dict from `make_phase1_dataset`: `"kind"` `[B]` (0
                item-text, 1 item-item, 2 user-item), `"cf_a"` `[B, cf_dim]`
                and `"id_a"` `[B]` (the item, or the user of a user-item
                pair), and either text (`"token_ids"`, `"padding_mask"`
                `[B, L]`, with `"cf_b"`/`"id_b"` of zero rows) or a second
                item (`"cf_b"`, `"id_b"`, with text of zero rows).
            training: bool.

        Returns:
            dict of scalar losses `itc, itg, itm, ii, ui` and, for each, a
            `<name>_weight` of 1.0 when the batch trained it, else 0.0.
        """
        kind = batch["kind"]
        text_rows = batch["token_ids"].shape[0]
        if text_rows is None:
            has_text = ops.shape(batch["token_ids"])[0] > 0
        else:
            has_text = text_rows > 0  # A Python bool.
        self._check_kinds(kind, has_text)

        zero = ops.zeros((), "float32")
        outputs = {}
        for name in ALL_LOSSES:
            outputs[name] = zero
            outputs[f"{name}_weight"] = zero
        if has_text is not False:
            values = self._item_text_losses(batch, training)
            for name, value in values.items():
                outputs[name] = _select(has_text, value, zero)
                outputs[f"{name}_weight"] = _select(has_text, 1.0, zero)
        if has_text is not True:
            loss = self._pair_loss(batch, training)
            is_pair = _not(has_text)
            for name, pair_kind in (("ii", ITEM_ITEM), ("ui", USER_ITEM)):
                this_kind = ops.logical_and(
                    is_pair, ops.equal(kind[0], pair_kind)
                )
                outputs[name] = ops.where(this_kind, loss, zero)
                outputs[f"{name}_weight"] = ops.cast(this_kind, "float32")
        return outputs

    def _check_kinds(self, kind, has_text):
        """Every example of a batch is of the kind its row counts say.

        Args:
            kind: `[B]` int, the kind of every example.
            has_text: Python bool or scalar bool tensor: the batch has text
                rows (an item-text batch).
        """
        if has_text is not False:
            check(
                _implies(has_text, ops.all(ops.equal(kind, ITEM_TEXT))),
                "A phase-1 batch mixes pair kinds: an item-text batch holds "
                "item-item or user-item examples. Each batch must be of one "
                "kind.",
            )
        if has_text is not True:
            one_pair_kind = ops.logical_and(
                ops.all(ops.equal(kind, kind[0])),
                ops.all(ops.not_equal(kind, ITEM_TEXT)),
            )
            check(
                _implies(_not(has_text), one_pair_kind),
                "A phase-1 batch mixes pair kinds: a batch without text holds "
                "both item-item and user-item examples, or item-text examples "
                "(kind 0). Each batch must be of one kind.",
            )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        total = ops.zeros((), "float32")
        for name in self.enabled_losses:
            total = total + y_pred[name] * y_pred[f"{name}_weight"]
        disabled_weight = ops.zeros((), "float32")
        for name in ALL_LOSSES:
            if name not in self.enabled_losses:
                disabled_weight = disabled_weight + y_pred[f"{name}_weight"]
        check(
            ops.equal(disabled_weight, 0.0),
            f"A phase-1 batch trains a loss that losses={self.losses_name!r} "
            f"does not enable (enabled: {self.enabled_losses}).",
        )
        # Under a tf.distribute strategy each replica returns its share, as
        # Keras' own losses do (the replicas' gradients are summed).
        return scale_loss_for_replicas(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(
                y_pred[name], sample_weight=y_pred[f"{name}_weight"]
            )
        return self.get_metrics_result()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "qformer": keras.saving.serialize_keras_object(self.qformer),
                "losses": self.losses_name,
                "embed_dim": self.embed_dim,
                "query_selection": self.query_selection,
                "itm_head": self.itm_head_input,
                "label_smoothing": self.label_smoothing,
                "dec_token_id": self.dec_token_id,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["qformer"] = keras.saving.deserialize_keras_object(
            config["qformer"]
        )
        return cls(**config)
