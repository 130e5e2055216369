"""`PromptResponseBatches`: (prompt, response) pairs -> length-grouped batches.

The batches of phase 2 (`ItemLanguageModel.fit`) and of the text-only
decoder pretraining (`ilm_keras.experiments.backbone_pretraining`), made by
an `ItemLanguageModelPreprocessor`.
"""

import itertools
import math
import threading

import keras
import numpy as np


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
