"""Phase-1 pair data: item-text, item-item and user-item pairs.

Build item-item and user-item pairs from *training* sequences only
(`LeaveLastOutSplit.train_sequences`), so no validation or test target
leaks into phase 1.
"""

import numpy as np


def item_text_pairs(data):
    """(item index, text) for every item of `data` that has a text.

    Args:
        data: `InteractionData`; items whose text is `None` or empty are
            skipped.

    Returns:
        `(items, texts)`: an int64 array `[P]` of item indices (ascending)
        and a list of `P` strings.

    Raises:
        ValueError: `data` has no item texts at all.

    Example:
    ```python
    items, texts = item_text_pairs(data)
    texts[0]  # "Toy Story (1995). Genres: Animation, Children's, Comedy."
    ```
    """
    if data.item_texts is None:
        raise ValueError(
            f"{data.name}: no item texts (e.g. OpenP5 Beauty has no metadata "
            "here); load them (item_texts_from=...) or train phase 1 without "
            "item-text pairs."
        )
    items = [i for i, t in enumerate(data.item_texts) if t]
    return np.array(items, dtype=np.int64), [data.item_texts[i] for i in items]


def item_item_pairs(sequences):
    """Consecutive items of each sequence, as deduplicated unordered pairs.

    `(a, b)` and `(b, a)` are the same pair (co-watching is symmetric) and are
    returned once, as `(min, max)`. Self-pairs (an item followed by itself)
    are left out.

    Args:
        sequences: a list of int arrays of item indices, oldest first (e.g.
            `split.train_sequences`).

    Returns:
        int64 array `[P, 2]`, each row `(a, b)` with `a < b`, rows sorted.

    Example:
    ```python
    item_item_pairs([np.array([3, 1, 3, 2])])
    # array([[1, 3], [2, 3]])
    ```
    """
    chunks = []
    for sequence in sequences:
        sequence = np.asarray(sequence, dtype=np.int64)
        if len(sequence) >= 2:
            chunks.append(np.stack([sequence[:-1], sequence[1:]], axis=1))
    if not chunks:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(chunks)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0).reshape(-1, 2)


def user_item_pairs(sequences):
    """(user index, item index) for every item in each user's sequence.

    Deduplicated: a user who saw an item twice gives one pair.

    Args:
        sequences: a list of int arrays; `sequences[u]` holds the items of
            user index `u` (e.g. `split.train_sequences`).

    Returns:
        int64 array `[P, 2]` of `(user, item)` rows, sorted.

    Example:
    ```python
    user_item_pairs([np.array([4, 2]), np.array([2])])
    # array([[0, 2], [0, 4], [1, 2]])
    ```
    """
    chunks = [
        np.stack([np.full(len(s), u, dtype=np.int64), np.asarray(s, dtype=np.int64)], axis=1)
        for u, s in enumerate(sequences)
        if len(s)
    ]
    if not chunks:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(chunks), axis=0).reshape(-1, 2)
