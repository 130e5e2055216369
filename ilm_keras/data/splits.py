"""The OpenP5 leave-last-out split."""

import dataclasses
from typing import List
from typing import NamedTuple

import numpy as np

from ilm_keras.data.interactions import InteractionData

MIN_ITEMS = 3


class SequenceExamples(NamedTuple):
    """Next-item examples: user `users[k]` saw `histories[k]`, then `targets[k]`.

    A `NamedTuple`, so `users, histories, targets = examples` works; the
    number of examples is `len(examples.targets)`.

    Attributes:
        users: int64 array `[N]` of user indices.
        histories: list of `N` int64 arrays of item indices, oldest first,
            each non-empty and at most `max_history` long.
        targets: int64 array `[N]` of item indices.
    """

    users: np.ndarray
    histories: List[np.ndarray]
    targets: np.ndarray


def _examples(users, histories, targets):
    return SequenceExamples(
        users=np.asarray(users, dtype=np.int64),
        histories=[np.asarray(h, dtype=np.int64) for h in histories],
        targets=np.asarray(targets, dtype=np.int64),
    )


def _cut(history, max_history):
    return history if max_history is None else history[-max_history:]


@dataclasses.dataclass
class LeaveLastOutSplit:
    """OpenP5's leave-last-out split of each user's time-ordered items.

    For a user with items `s` (oldest first, at least 3):

    - training: `s[:-2]`; every prefix predicts the next item
      (`train_examples()`; the empty prefix is skipped);
    - validation: history `s[:-2]`, target `s[-2]`;
    - test: history `s[:-1]`, target `s[-1]`.

    Histories are cut to their last `max_history` items (OpenP5: 20).
    Users with fewer than 3 items have no validation/test target: they are
    excluded (listed in `excluded_users`, empty `train_sequences`) or, with
    `on_short_user="error"`, rejected. Build it with `leave_last_out`.

    Attributes:
        data: the `InteractionData` that was split.
        max_history: the history cut (None: no cut).
        train_sequences: one int64 array per user of `data` (indexed by user
            index): `s[:-2]`, empty for excluded users. Feed these, not
            `data.sequences`, to anything trained (CF, phase-1 pairs).
        excluded_users: int64 array of the user indices with < 3 items.
        valid_users, valid_history, valid_target: validation examples (int64
            array, list of int64 arrays, int64 array), one per kept user.
        test_users, test_history, test_target: test examples, likewise.

    Example:
    ```python
    split = leave_last_out(data, max_history=20)
    users, histories, targets = split.train_examples()
    split.test_history[0], split.test_target[0]
    ```
    """

    data: InteractionData
    max_history: int
    train_sequences: List[np.ndarray]
    excluded_users: np.ndarray
    valid_users: np.ndarray
    valid_history: List[np.ndarray]
    valid_target: np.ndarray
    test_users: np.ndarray
    test_history: List[np.ndarray]
    test_target: np.ndarray

    def train_examples(self):
        """Every next-item example of the training sequences.

        For each user (in user order) and each position `j >= 1` of
        `train_sequences[u]`: history `train_sequences[u][:j]` cut to its
        last `max_history` items, target `train_sequences[u][j]`.

        Returns:
            `SequenceExamples(users, histories, targets)`.
        """
        users, histories, targets = [], [], []
        for user, sequence in enumerate(self.train_sequences):
            for j in range(1, len(sequence)):
                users.append(user)
                histories.append(_cut(sequence[:j], self.max_history))
                targets.append(sequence[j])
        return _examples(users, histories, targets)

    def valid_examples(self):
        """The validation examples as `SequenceExamples`."""
        return SequenceExamples(self.valid_users, self.valid_history, self.valid_target)

    def test_examples(self):
        """The test examples as `SequenceExamples`."""
        return SequenceExamples(self.test_users, self.test_history, self.test_target)

    def known_items(self, subset):
        """Every item each example's user saw before its target, uncut.

        The histories of `examples(subset)` are cut to `max_history` items
        (what a prompt shows); this is the user's whole past instead:
        `s[:j]` for the training example at position `j`, `s[:-2]` for
        validation and `s[:-1]` for test. It is the set a ranking excludes
        when it must not recommend what the user already has (the same set
        for every method compared; see `exclude_history` in the pipeline).

        Args:
            subset: `"train"`, `"valid"` or `"test"`.

        Returns:
            A list of int64 arrays, in the order of `examples(subset)`.
        """
        if subset == "train":
            return [
                sequence[:j]
                for sequence in self.train_sequences
                for j in range(1, len(sequence))
            ]
        cut = {"valid": 2, "test": 1}.get(subset)
        if cut is None:
            raise ValueError(
                f"subset must be 'train', 'valid' or 'test'; got {subset!r}."
            )
        users = self.valid_users if subset == "valid" else self.test_users
        return [np.asarray(self.data.sequences[u][:-cut], dtype=np.int64) for u in users]

    def examples(self, subset):
        """`"train"`, `"valid"` or `"test"` examples as `SequenceExamples`."""
        if subset == "train":
            return self.train_examples()
        if subset == "valid":
            return self.valid_examples()
        if subset == "test":
            return self.test_examples()
        raise ValueError(
            f"subset must be 'train', 'valid' or 'test'; got {subset!r}."
        )


def leave_last_out(data, max_history=20, on_short_user="exclude"):
    """Splits `data` the OpenP5 way (see `LeaveLastOutSplit`).

    Args:
        data: `InteractionData`.
        max_history: keep the last this many items of every history
            (OpenP5: 20); `None` keeps all.
        on_short_user: what to do with users with fewer than 3 items:
            `"exclude"` (listed in `split.excluded_users`) or `"error"`.

    Returns:
        `LeaveLastOutSplit`.

    Example:
    ```python
    split = leave_last_out(load_openp5("openp5/ML100K"))
    len(split.test_target)  # 943
    ```
    """
    if max_history is not None and (
        int(max_history) != max_history or max_history < 1
    ):
        raise ValueError(f"max_history must be a positive int or None; got {max_history!r}.")
    if on_short_user not in ("exclude", "error"):
        raise ValueError(
            f"on_short_user must be 'exclude' or 'error'; got {on_short_user!r}."
        )
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    short = np.flatnonzero(lengths < MIN_ITEMS)
    if short.size and on_short_user == "error":
        raise ValueError(
            f"{data.name}: {short.size} user(s) have fewer than {MIN_ITEMS} "
            f"items (e.g. user {data.user_ids[short[0]]!r} with "
            f"{lengths[short[0]]}); leave-last-out needs {MIN_ITEMS}. Filter "
            "them or pass on_short_user='exclude'."
        )
    kept = np.flatnonzero(lengths >= MIN_ITEMS)
    if kept.size == 0:
        raise ValueError(f"{data.name}: no user has {MIN_ITEMS} or more items.")
    empty = np.zeros(0, dtype=np.int64)
    train_sequences = [
        s[:-2] if len(s) >= MIN_ITEMS else empty for s in data.sequences
    ]
    sequences = [data.sequences[u] for u in kept]
    return LeaveLastOutSplit(
        data=data,
        max_history=max_history,
        train_sequences=train_sequences,
        excluded_users=short.astype(np.int64),
        valid_users=kept.astype(np.int64),
        valid_history=[_cut(s[:-2], max_history) for s in sequences],
        valid_target=np.array([s[-2] for s in sequences], dtype=np.int64),
        test_users=kept.astype(np.int64),
        test_history=[_cut(s[:-1], max_history) for s in sequences],
        test_target=np.array([s[-1] for s in sequences], dtype=np.int64),
    )
