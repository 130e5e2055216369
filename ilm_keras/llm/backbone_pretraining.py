"""Pretrain a small keras-hub decoder on text-only OpenP5 prompts (paper §4.4).

The ILM paper's OpenP5 LLM is an 8-layer transformer decoder pretrained on the
text-only OpenP5 data (random item indexing) so that it generates `item_<id>`
strings; it is then frozen for phase 2. `make_llama_backbone` builds such a
decoder (keras-hub `LlamaBackbone`, any size) and `pretrain_backbone` trains it
with one `fit` on (prompt, response) pairs, the loss on response tokens only.
Tokenization is done by `ItemLanguageModelPreprocessor` with no soft tokens:
exactly the token ids the frozen model later sees in phase 2.
"""

import itertools
import math
import threading

import keras
import keras_hub
import numpy as np

from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.utils import resume
from ilm_keras.utils.quiet import fit_verbosity
from ilm_keras.utils.schedules import warmup_cosine


def make_llama_backbone(
    vocabulary_size,
    num_layers=2,
    hidden_dim=64,
    num_heads=4,
    num_key_value_heads=None,
    intermediate_dim=None,
    dtype=None,
):
    """A randomly initialized keras-hub `LlamaBackbone` (dropout 0).

    Args:
        vocabulary_size: int, the tokenizer's vocabulary size.
        num_layers: int, decoder blocks (the paper: 8).
        hidden_dim: int, model width.
        num_heads: int, query heads.
        num_key_value_heads: int, key/value heads (default: `num_heads`).
        intermediate_dim: int, FFN width (default: `4 * hidden_dim`).
        dtype: optional dtype policy.

    Returns:
        A `keras_hub.models.LlamaBackbone`.

    Example:
    ```python
    backbone = make_llama_backbone(tokenizer.vocabulary_size(), num_layers=8,
                                   hidden_dim=512, num_heads=8)
    ```
    """
    if hidden_dim % num_heads:
        raise ValueError(
            f"hidden_dim={hidden_dim} must be a multiple of num_heads={num_heads}."
        )
    return keras_hub.models.LlamaBackbone(
        vocabulary_size=int(vocabulary_size),
        num_layers=int(num_layers),
        num_query_heads=int(num_heads),
        hidden_dim=int(hidden_dim),
        intermediate_dim=int(intermediate_dim or 4 * hidden_dim),
        num_key_value_heads=int(num_key_value_heads or num_heads),
        dropout=0.0,
        dtype=dtype,
    )


class PromptResponseBatches(keras.utils.PyDataset):
    """Shuffled, tokenized batches of (prompt, response) pairs, per epoch.

    `pairs_for_epoch(epoch)` gives the pairs of each epoch (OpenP5 samples new
    templates every epoch); they are shuffled with `(seed, epoch)`, tokenized
    by `preprocessor` batch by batch, and cut to the longest example of the
    batch rounded up to `length_bucket` tokens (few distinct shapes).

    Batches are grouped by length, as HF's `group_by_length` does: the
    shuffled pairs are cut into groups of `length_group` batches, each group
    is ordered by its pairs' widths (tokens rounded up to `length_bucket`;
    the order within a width stays random) and cut into batches; groups
    come in random order, and the batches of a group too. Short and long
    examples then rarely share a batch, so far less of each batch is padding
    (on the quickstart's pretraining pairs, median 26 tokens but batches of
    96-112 tokens without grouping), while pairs of one width, whatever
    their task, still mix. `length_group=1` gives plain shuffled batches.

    With a preprocessor built with `loss_positions=True`, labels are kept at
    weighted positions only, and every batch of an epoch gets the label
    width of the epoch's longest response (`preprocessor.loss_width`; the
    extra positions have weight 0): with short (`item_<id>`) and long
    (item text) responses mixed, batch widths would otherwise pair with
    both label widths and a compiled backend would compile each pair. Every
    batch is full (static shapes): the last batch of an epoch is completed
    with the epoch's first pairs.

    Args:
        preprocessor: an `ItemLanguageModelPreprocessor`.
        pairs_for_epoch: callable `epoch -> list of (prompt, response)`, or a
            fixed list of pairs.
        batch_size: int.
        seed: int.
        length_bucket: int.
        length_group: int, batches per length-sorted group (1: no grouping).
    """

    def __init__(self, preprocessor, pairs_for_epoch, batch_size=32, seed=0,
                 length_bucket=16, length_group=50):
        super().__init__()
        if int(length_group) < 1:
            raise ValueError(f"length_group must be >= 1; got {length_group}.")
        if not callable(pairs_for_epoch):
            fixed = list(pairs_for_epoch)
            pairs_for_epoch = lambda epoch: fixed
        self.preprocessor = preprocessor
        self.pairs_for_epoch = pairs_for_epoch
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.length_bucket = int(length_bucket)
        self.length_group = int(length_group)
        self.epoch = 0
        self._lengths = {}  # batches per epoch, as far as known
        self._load(0)

    def _load(self, epoch):
        pairs = list(self.pairs_for_epoch(epoch))
        if not pairs:
            raise ValueError(f"No (prompt, response) pairs for epoch {epoch}.")
        rng = np.random.default_rng([self.seed, epoch])
        self.pairs = [pairs[i] for i in rng.permutation(len(pairs))]
        self.label_width = None
        if getattr(self.preprocessor, "loss_positions", False):
            self.label_width = self.preprocessor.loss_width(
                [r for _, r in pairs])
        # Batch `j` of the shuffled pairs is slot `j % length_group` of group
        # `j // length_group`. Groups come in random order, their batches in
        # random order, so a capped epoch (`steps_per_epoch`) sorts only the
        # groups it reaches.
        group = self.length_group
        num_groups = math.ceil(len(self) / group)
        self.batch_order = np.concatenate([
            g * group + rng.permutation(min(group, len(self) - g * group))
            for g in rng.permutation(num_groups)
        ])
        self._sorted_groups = {}
        self._lengths[epoch] = len(self)

    def _group_pairs(self, g):
        """Group `g`'s pairs, ordered by width (tokens / `length_bucket`)."""
        if g not in self._sorted_groups:
            size = self.length_group * self.batch_size
            part = self.pairs[g * size : (g + 1) * size]
            if self.length_group > 1:
                x = self.preprocessor({"prompts": [p for p, _ in part],
                                       "responses": [r for _, r in part]})[0]
                lengths = np.asarray(x["padding_mask"]).sum(axis=1)
                widths = -(-lengths // self.length_bucket)
                part = [part[i] for i in np.argsort(widths, kind="stable")]
            self._sorted_groups[g] = part
        return self._sorted_groups[g]

    def __len__(self):
        return math.ceil(len(self.pairs) / self.batch_size)

    def __getitem__(self, index):
        g, slot = divmod(int(self.batch_order[index]), self.length_group)
        chunk = self._group_pairs(g)[
            slot * self.batch_size : (slot + 1) * self.batch_size]
        if len(chunk) < self.batch_size:
            wrap = self.batch_size - len(chunk)
            chunk = chunk + (self.pairs * (wrap // len(self.pairs) + 1))[:wrap]
        x, y, weight = self.preprocessor(
            {"prompts": [p for p, _ in chunk], "responses": [r for _, r in chunk]}
        )
        longest = int(np.asarray(x["padding_mask"]).sum(axis=1).max())
        width = min(
            -(-longest // self.length_bucket) * self.length_bucket,
            x["token_ids"].shape[1],
        )
        if "loss_positions" in x:
            # Labels already kept at weighted positions (all within `width`):
            # they are padded to the epoch's label width (position 0, weight
            # 0) and only the sequence-wide inputs are cut.
            labels = [np.asarray(x["loss_positions"]), np.asarray(y),
                      np.asarray(weight)]
            extra = max(0, (self.label_width or 0) - labels[0].shape[1])
            labels = [np.pad(a, ((0, 0), (0, extra))) for a in labels]
            x = {k: np.asarray(v)[:, :width] for k, v in x.items()
                 if k != "loss_positions"}
            x["loss_positions"] = labels[0]
            return x, labels[1], labels[2]
        x = {k: np.asarray(v)[:, :width] for k, v in x.items()}
        return x, np.asarray(y)[:, :width], np.asarray(weight)[:, :width]

    def on_epoch_end(self):
        self.epoch += 1
        self._load(self.epoch)

    def _epoch_length(self, epoch):
        if epoch not in self._lengths:
            pairs = self.pairs_for_epoch(epoch)
            self._lengths[epoch] = math.ceil(len(pairs) / self.batch_size)
        return self._lengths[epoch]

    def batch_at(self, step):
        """Batch `step` of the stream that `fit_input` gives `fit`: every
        batch of epoch 0 in order, then every batch of epoch 1, and so on.

        A function of `step` alone (the epoch it falls in is loaded when
        needed), so a resumed fit can start the stream at any step.

        Args:
            step: int >= 0, the training step (from 0 over the whole fit).
        """
        epoch, index = 0, int(step)
        if index < 0:
            raise ValueError(f"step must be >= 0; got {step}.")
        while index >= self._epoch_length(epoch):
            index -= self._epoch_length(epoch)
            epoch += 1
        if epoch != self.epoch:
            self.epoch = epoch
            self._load(epoch)
        return self[index]

    def fit_input(self, steps_per_epoch=None, start_step=0):
        """`(x, steps_per_epoch)` for `fit`, on every backend.

        `x` is an endless `tf.data.Dataset` of `batch_at(start_step)`,
        `batch_at(start_step + 1)`, ...: the epochs' batches one after
        another, whatever `steps_per_epoch` is, and from any step on (a
        resumed fit, `ilm_keras.utils.resume.resumable_fit`). Its sequence
        widths are left free: Keras would otherwise fix the shapes from a
        `PyDataset`'s first two batches on TensorFlow, and a batch width
        missing from both would stop `fit` mid-epoch. (Handing Keras the
        `PyDataset` itself instead, on JAX, starts it at epoch 1, and with
        `steps_per_epoch` below the epoch's batches it goes on where the
        last epoch stopped until it runs out of batches, and cuts an epoch
        short.)

        Args:
            steps_per_epoch: optional int, a cap on batches per epoch
                (default: one epoch's batches).
            start_step: int, the training step of the first batch.

        Returns:
            `(dataset, steps_per_epoch)`.
        """
        import tensorflow as tf

        steps = min(steps_per_epoch or len(self), len(self))
        # `tf.data` may read from two iterators at once (Keras builds the
        # model from one); `batch_at` loads epochs into `self`.
        lock = threading.Lock()
        with lock:
            first = self.batch_at(start_step)
        signature = keras.tree.map_structure(
            lambda a: tf.TensorSpec((None,) * np.ndim(a),
                                    tf.as_dtype(np.asarray(a).dtype)),
            first,
        )

        def generate():
            for step in itertools.count(int(start_step)):
                with lock:
                    batch = self.batch_at(step)
                yield batch

        dataset = tf.data.Dataset.from_generator(
            generate, output_signature=signature)
        return dataset, steps


def pretraining_batches(
    tokenizer,
    pairs_for_epoch,
    item_ids,
    user_ids=None,
    batch_size=32,
    seed=0,
    sequence_length=256,
    length_bucket=16,
    length_group=50,
):
    """The batches `pretrain_backbone` trains on (same arguments).

    `PromptResponseBatches` over a text-only `ItemLanguageModelPreprocessor`
    (no soft tokens): to look at what pretraining will see, e.g. how much of
    each batch is padding.

    Returns:
        A `PromptResponseBatches`.

    Example:
    ```python
    batches = pretraining_batches(tokenizer, pairs, item_ids=data.item_index)
    x, y, sample_weight = batches[0]
    ```
    """
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer,
        item_ids=[str(i) for i in item_ids],
        user_ids=None if user_ids is None else [str(u) for u in user_ids],
        sequence_length=sequence_length,
        num_soft_tokens=0,
    )
    return PromptResponseBatches(
        preprocessor, pairs_for_epoch, batch_size, seed, length_bucket,
        length_group,
    )


def pretrain_backbone(
    backbone,
    tokenizer,
    pairs_for_epoch,
    item_ids,
    user_ids=None,
    epochs=1,
    batch_size=32,
    learning_rate=1e-3,
    sequence_length=256,
    seed=0,
    callbacks=None,
    verbose="auto",
    steps_per_epoch=None,
    length_bucket=16,
    length_group=50,
    warmup_steps=0,
    backup=None,
):
    """Trains `backbone` as a causal LM on (prompt, response) pairs, in place.

    A frozen backbone is trained too; its `trainable` flag is restored
    afterwards.

    One `fit` of `backbone` followed by its tied/untied output projection
    (`token_embedding(x, reverse=True)`, as keras-hub's causal LMs do), with
    AdamW, `warmup_steps` of linear warmup then a cosine decay to 0
    (`ilm_keras.utils.schedules.warmup_cosine`), and cross-entropy on
    response tokens and the end token only.

    Args:
        backbone: a keras-hub causal LM backbone (e.g. `make_llama_backbone`).
        tokenizer: its tokenizer (e.g. `OpenP5Tokenizer`), with start, end
            and pad tokens.
        pairs_for_epoch: callable `epoch -> list of (prompt, response)`
            (e.g. `lambda e: training_prompts(split, epoch=e, seed=0)`), or a
            fixed list.
        item_ids: the catalogue's item ids (`data.item_index`): prompts may
            only mention these (`item_<id>`); an unknown mention raises.
        user_ids: the user ids (`data.user_index`) prompts may mention.
        epochs: int.
        batch_size: int.
        learning_rate: float, peak AdamW learning rate.
        sequence_length: int, the longest example allowed (longer raises).
        seed: int, the shuffle seed.
        callbacks: extra Keras callbacks.
        verbose: `fit` verbosity (progress bar by default).
        steps_per_epoch: optional int, caps the batches per epoch.
        length_bucket: batch widths are multiples of this (fewer shapes,
            fewer recompilations; more padding).
        length_group: batches per length-sorted group (`PromptResponseBatches`;
            1: plain shuffled batches).
        warmup_steps: int, steps of linear learning-rate warmup.
        backup: optional `ilm_keras.utils.resume.TrainingBackup`: the fit
            saves its state there and a rerun resumes it exactly
            (`resumable_fit`).

    Returns:
        The Keras `History`.

    Example:
    ```python
    tokenizer = OpenP5Tokenizer.from_texts()
    backbone = make_llama_backbone(tokenizer.vocabulary_size())
    pretrain_backbone(backbone, tokenizer,
                      lambda e: training_prompts(split, epoch=e),
                      item_ids=data.item_index, user_ids=data.user_index,
                      epochs=3)
    ```
    """
    batches = pretraining_batches(
        tokenizer, pairs_for_epoch, item_ids, user_ids, batch_size, seed,
        sequence_length, length_bucket, length_group,
    )
    steps = len(batches) if steps_per_epoch is None else min(steps_per_epoch, len(batches))
    inputs = backbone.input
    logits = backbone.token_embedding(backbone(inputs), reverse=True)
    causal_lm = keras.Model(inputs, logits, name="backbone_pretraining")
    schedule = warmup_cosine(learning_rate, max(1, steps * epochs), warmup_steps)
    causal_lm.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    # Train even a frozen backbone (e.g. one shared with an
    # `ItemLanguageModel`), then leave its `trainable` as it was.
    was_trainable = backbone.trainable
    backbone.trainable = True
    try:
        return resume.resumable_fit(
            causal_lm,
            lambda start: batches.fit_input(steps_per_epoch, start),
            epochs=epochs,
            backup=backup,
            callbacks=callbacks,
            verbose=fit_verbosity(verbose),
        )
    finally:
        backbone.trainable = was_trainable
