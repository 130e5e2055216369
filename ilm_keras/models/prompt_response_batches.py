"""`PromptResponseBatches`: (prompt, response) pairs -> length-grouped batches.

The batches of phase 2 (`ItemLanguageModel.fit`) and of the text-only
decoder pretraining (`ilm_keras.experiments.backbone_pretraining`), made by
an `ItemLanguageModelPreprocessor`.
"""

import collections.abc
import itertools
import math
import threading

import keras
import numpy as np

from ilm_keras.data.pair_sequences import distinct_responses


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

    An epoch is held as a shuffled array of positions into its pairs; a
    batch reads (and tokenizes) its own pairs only. With a `PairSequence`
    (`ilm_keras.data.training_prompts`, `ConcatenatedPairs`), which formats
    a pair when it is read, no epoch-long list of strings is ever made.

    Args:
        preprocessor: an `ItemLanguageModelPreprocessor`.
        pairs_for_epoch: callable `epoch -> pairs`, or fixed pairs; pairs
            are a `PairSequence` or a list of `(prompt, response)`.
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
            fixed = pairs_for_epoch
            if not isinstance(fixed, collections.abc.Sequence):
                fixed = list(fixed)
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
        pairs = self.pairs_for_epoch(epoch)
        if not len(pairs):
            raise ValueError(f"No (prompt, response) pairs for epoch {epoch}.")
        rng = np.random.default_rng([self.seed, epoch])
        # The epoch's pairs are read through `order` (a shuffled list of
        # positions) only when a batch needs them: a `PairSequence` makes
        # them then, so an epoch costs integers, not strings.
        self.source = pairs
        self.order = rng.permutation(len(pairs))
        self.label_width = None
        if getattr(self.preprocessor, "loss_positions", False):
            self.label_width = self.preprocessor.loss_width(
                sorted(distinct_responses(pairs)))
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
        self._groups = {}
        self._lengths[epoch] = len(self)

    def _pairs(self, positions):
        return [self.source[int(self.order[p])] for p in positions]

    def _widths(self, pairs):
        """Each pair's tokens (soft tokens included) in `length_bucket`s."""
        x = self.preprocessor({"prompts": [p for p, _ in pairs],
                               "responses": [r for _, r in pairs]})[0]
        lengths = np.asarray(x["padding_mask"]).sum(axis=1)
        return -(-lengths // self.length_bucket)

    def _group(self, g, need_widths=False):
        """Group `g`: its positions in `order`, by width when grouping, and
        their widths when grouping or `need_widths` (else None)."""
        if g not in self._groups or (need_widths and self._groups[g][1] is None):
            size = self.length_group * self.batch_size
            positions = np.arange(g * size, min((g + 1) * size, len(self.order)))
            widths = None
            if self.length_group > 1 or need_widths:
                widths = self._widths(self._pairs(positions))
            if self.length_group > 1:
                by_width = np.argsort(widths, kind="stable")
                positions, widths = positions[by_width], widths[by_width]
            self._groups[g] = (positions, widths)
        return self._groups[g]

    def __len__(self):
        return math.ceil(len(self.order) / self.batch_size)

    def _batch_positions(self, index, need_widths=False):
        g, slot = divmod(int(self.batch_order[index]), self.length_group)
        positions, widths = self._group(g, need_widths)
        cut = slice(slot * self.batch_size, (slot + 1) * self.batch_size)
        positions = positions[cut]
        widths = None if widths is None else widths[cut]
        if len(positions) < self.batch_size:
            # The last batch of the epoch is completed with its first pairs.
            wrap = np.arange(self.batch_size - len(positions)) % len(self.order)
            positions = np.concatenate([positions, wrap])
            if need_widths:
                widths = np.concatenate(
                    [widths, self._widths(self._pairs(wrap))])
        return positions, widths

    def __getitem__(self, index):
        return self.batch(index)

    def batch(self, index, num_processes=1, process_id=0):
        """Batch `index` of the current epoch, or one process's rows of it.

        Args:
            index: int, the batch of the epoch.
            num_processes: int; with more than one, only rows
                `[process_id * n, (process_id + 1) * n)` (`n = batch_size //
                num_processes`) are tokenized for the batch and returned,
                cut to the width the whole batch has, so the processes' rows
                join into the batch a single process makes (a multi-process
                data-parallel fit; `fit_input`). That width comes from the
                length-group pass, which every process runs over the whole
                group (its pairs are tokenized once to measure them).
            process_id: int, this process.

        Returns:
            `(x, y, sample_weight)`.
        """
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"Need 0 <= process_id < num_processes; got process_id="
                f"{process_id}, num_processes={num_processes}.")
        if self.batch_size % num_processes:
            raise ValueError(
                f"batch_size={self.batch_size} does not divide into "
                f"{num_processes} processes; use a multiple of it.")
        sharded = num_processes > 1
        positions, widths = self._batch_positions(index, need_widths=sharded)
        if sharded:
            rows = self.batch_size // num_processes
            positions = positions[process_id * rows : (process_id + 1) * rows]
        chunk = self._pairs(positions)
        x, y, weight = self.preprocessor(
            {"prompts": [p for p, _ in chunk], "responses": [r for _, r in chunk]}
        )
        longest_buckets = (
            int(widths.max()) if sharded else
            -(-int(np.asarray(x["padding_mask"]).sum(axis=1).max())
              // self.length_bucket))
        width = min(longest_buckets * self.length_bucket,
                    x["token_ids"].shape[1])
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

    def batch_at(self, step, num_processes=1, process_id=0):
        """Batch `step` of the stream that `fit_input` gives `fit`: every
        batch of epoch 0 in order, then every batch of epoch 1, and so on.

        A function of `step` alone (the epoch it falls in is loaded when
        needed), so a resumed fit can start the stream at any step.

        Args:
            step: int >= 0, the training step (from 0 over the whole fit).
            num_processes: int, as in `batch`.
            process_id: int, as in `batch`.
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
        return self.batch(index, num_processes, process_id)

    def fit_input(self, steps_per_epoch=None, start_step=0, num_processes=1,
                  process_id=0):
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

        In a multi-process data-parallel run (JAX, `keras.distribution.
        DataParallel(auto_shard_dataset=False)`) each process passes its
        `num_processes` and `process_id` and its dataset then yields only
        its rows of every batch (see `batch`: each process still measures
        the whole length group once); Keras joins the processes' rows into
        the global batch.

        Args:
            steps_per_epoch: optional int, a cap on batches per epoch
                (default: one epoch's batches).
            start_step: int, the training step of the first batch.
            num_processes: int, processes sharing each batch (1: all rows).
            process_id: int, this process (`jax.process_index()`).

        Returns:
            `(dataset, steps_per_epoch)`.
        """
        import tensorflow as tf

        steps = min(steps_per_epoch or len(self), len(self))
        # `tf.data` may read from two iterators at once (Keras builds the
        # model from one); `batch_at` loads epochs into `self`.
        lock = threading.Lock()
        with lock:
            first = self.batch_at(start_step, num_processes, process_id)
        signature = keras.tree.map_structure(
            lambda a: tf.TensorSpec((None,) * np.ndim(a),
                                    tf.as_dtype(np.asarray(a).dtype)),
            first,
        )

        def generate():
            for step in itertools.count(int(start_step)):
                with lock:
                    batch = self.batch_at(step, num_processes, process_id)
                yield batch

        dataset = tf.data.Dataset.from_generator(
            generate, output_signature=signature)
        return dataset, steps
