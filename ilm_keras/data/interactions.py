"""The one in-memory representation every loader returns."""

import dataclasses
import re
from typing import List, Optional

import numpy as np


@dataclasses.dataclass
class InteractionData:
    """Users, items, time-ordered interaction sequences and item texts.

    Users and items are numbered densely from 0 (the *index*); the dataset's
    own identifiers (the *raw ids*, always strings) are kept beside them so that
    results can be mapped back. Every loader in `ilm_keras.data` returns this.

    Args:
        name: a short name for the dataset, e.g. `"ML100K"`.
        user_ids: raw user ids; `user_ids[u]` is the raw id of user index `u`.
        item_ids: raw item ids; `item_ids[i]` is the raw id of item index `i`.
        sequences: one int array per user (same order as `user_ids`) with the
            item indices that user interacted with, oldest first.
        item_texts: optional text per item index (title, year, genres, ...);
            an entry is `None` for an item without text.
        dropped: counts of input rows the loader discarded, by reason (e.g.
            `{"5-core filter": 1234}`); nothing is dropped without a count.
        item_meta: optional parsed metadata per item index: a dict with
            `"title"` (str), `"year"` (int or None) and `"genres"` (list of
            str), or `None` for an item without metadata.
        item_index: optional OpenP5 random index per item (ints, unique,
            from 1001 in OpenP5): prompts write item `i` as
            `item_<item_index[i]>`. Set by `load_openp5` or `random_indexing`.
        user_index: optional OpenP5 user index per user (ints, unique, from
            1): prompts write user `u` as `user_<user_index[u]>`.

    Example:
    ```python
    data = InteractionData(
        name="toy",
        user_ids=["u1", "u2"],
        item_ids=["a", "b", "c"],
        sequences=[np.array([0, 1]), np.array([2, 1, 0])],
        item_texts=["Alpha (1999) Drama", "Beta (2001) Comedy", "Gamma"],
    )
    data.num_interactions  # 5
    ```
    """

    name: str
    user_ids: List[str]
    item_ids: List[str]
    sequences: List[np.ndarray]
    item_texts: Optional[List[str]] = None
    dropped: dict = dataclasses.field(default_factory=dict)
    item_meta: Optional[List[Optional[dict]]] = None
    item_index: Optional[np.ndarray] = None
    user_index: Optional[np.ndarray] = None

    def __post_init__(self):
        self.user_ids = [str(u) for u in self.user_ids]
        self.item_ids = [str(i) for i in self.item_ids]
        self.sequences = [np.asarray(s, dtype=np.int64) for s in self.sequences]
        if len(self.sequences) != len(self.user_ids):
            raise ValueError(
                f"{self.name}: {len(self.sequences)} sequences for "
                f"{len(self.user_ids)} users; there must be one per user."
            )
        if self.item_texts is not None and len(self.item_texts) != len(
            self.item_ids
        ):
            raise ValueError(
                f"{self.name}: {len(self.item_texts)} item texts for "
                f"{len(self.item_ids)} items; there must be one per item."
            )
        if self.item_meta is not None and len(self.item_meta) != len(
            self.item_ids
        ):
            raise ValueError(
                f"{self.name}: {len(self.item_meta)} item_meta entries for "
                f"{len(self.item_ids)} items; there must be one per item."
            )
        self.item_index = self._check_index(
            self.item_index, len(self.item_ids), "item_index", "items"
        )
        self.user_index = self._check_index(
            self.user_index, len(self.user_ids), "user_index", "users"
        )
        for u, seq in enumerate(self.sequences):
            if seq.size and (seq.min() < 0 or seq.max() >= len(self.item_ids)):
                raise ValueError(
                    f"{self.name}: user {self.user_ids[u]!r} refers to item "
                    f"index {int(seq.max() if seq.max() >= len(self.item_ids) else seq.min())}, "
                    f"outside 0..{len(self.item_ids) - 1}."
                )

    def _check_index(self, index, size, field, what):
        if index is None:
            return None
        index = np.asarray(index, dtype=np.int64)
        if index.shape != (size,):
            raise ValueError(
                f"{self.name}: {field} has shape {index.shape}; expected "
                f"({size},), one entry per {what[:-1]}."
            )
        if len(np.unique(index)) != size:
            values, counts = np.unique(index, return_counts=True)
            raise ValueError(
                f"{self.name}: {field} gives the index {int(values[counts > 1][0])} "
                f"to more than one of the {what}; indices must be unique."
            )
        return index

    @property
    def num_users(self):
        return len(self.user_ids)

    @property
    def num_items(self):
        return len(self.item_ids)

    @property
    def num_interactions(self):
        return int(sum(len(s) for s in self.sequences))

    def stats(self):
        """Returns a dict of users, items and interactions."""
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
        }

    def item_token(self, item):
        """Returns the prompt text of item index `item`, e.g. `"item_1234"`.

        Needs `item_index` (see `ilm_keras.data.random_indexing`).
        """
        if self.item_index is None:
            raise ValueError(
                f"{self.name}: no item_index; prompts name items by their "
                "random index. Call `ilm_keras.data.random_indexing(data, "
                "seed=...)` first (or load an OpenP5 folder)."
            )
        return f"item_{self.item_index[item]}"

    def user_token(self, user):
        """Returns the prompt text of user index `user`, e.g. `"user_17"`.

        Needs `user_index` (see `ilm_keras.data.random_indexing`).
        """
        if self.user_index is None:
            raise ValueError(
                f"{self.name}: no user_index; prompts name users by their "
                "OpenP5 index. Call `ilm_keras.data.random_indexing(data, "
                "seed=...)` first (or load an OpenP5 folder)."
            )
        return f"user_{self.user_index[user]}"

    def item_for_token(self, token):
        """Returns the item index that `token` (e.g. `"item_1234"`) names.

        Raises:
            ValueError: `token` is not of the form `item_<int>`, or no item
                has that random index.
        """
        match = re.fullmatch(r"\s*item_(\d+)\s*", token)
        if match is None:
            raise ValueError(f"{token!r} is not an item mention `item_<int>`.")
        if self.item_index is None:
            self.item_token(0)  # Raises the explanatory error.
        # Built once per `item_index` array (rebuilt if it is replaced).
        if getattr(self, "_item_lookup_of", None) is not self.item_index:
            self._item_lookup = {
                int(v): i for i, v in enumerate(self.item_index)
            }
            self._item_lookup_of = self.item_index
        index = int(match.group(1))
        if index not in self._item_lookup:
            raise ValueError(f"{self.name}: no item has the index {index}.")
        return self._item_lookup[index]
