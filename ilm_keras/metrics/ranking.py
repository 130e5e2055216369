"""HR@k and NDCG@k for next-item recommendation, as OpenP5 computes them."""

import numpy as np

PAD_ID = -1


def _check_k(k):
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"`k` must be a positive int; got {k!r}.")
    return int(k)


def target_ranks(ranked_items, targets, k=None, pad_id=PAD_ID):
    """1-based rank of each target in its ranked list (0 if absent).

    A ranked list is one user's recommendations, best first. Entries equal to
    `pad_id` (or `None`) mark empty positions: they never match a target but
    still occupy their position, so a list may hold fewer than `k` valid
    items. Only the first `k` positions are searched.

    Args:
        ranked_items: a 2-D array `[num_users, list_length]` or a list of
            per-user sequences (lengths may differ). Items can be ints or
            strings (e.g. `"item_1234"`), compared by equality.
        targets: one target item per user.
        k: how many leading positions count (default: whole lists).
        pad_id: the value that marks an empty position.

    Returns:
        int64 array `[num_users]`.

    Raises:
        ValueError: on mismatched lengths, no users, a target equal to
            `pad_id`, or an item listed twice within the first `k` positions
            of a list (OpenP5 would count such a target twice in NDCG).
    """
    targets = list(targets) if not isinstance(targets, np.ndarray) else targets
    num_users = len(targets)
    if num_users == 0:
        raise ValueError("No users: `targets` is empty.")
    if len(ranked_items) != num_users:
        raise ValueError(
            f"{len(ranked_items)} ranked lists for {num_users} targets; "
            "there must be one list per target."
        )
    if k is not None:
        k = _check_k(k)
    ranks = np.zeros(num_users, dtype=np.int64)
    if isinstance(ranked_items, np.ndarray) and ranked_items.ndim == 2:
        _ranks_from_array(ranked_items, np.asarray(targets), k, pad_id, ranks)
        return ranks
    for row, (items, target) in enumerate(zip(ranked_items, targets)):
        _check_target(row, target, pad_id)
        items = list(items)[:k] if k is not None else list(items)
        seen = set()
        for position, item in enumerate(items, start=1):
            if item is None or item == pad_id:
                continue
            if item in seen:
                raise ValueError(
                    f"Ranked list {row} contains item {item!r} twice."
                )
            seen.add(item)
            if item == target and ranks[row] == 0:
                ranks[row] = position
    return ranks


def _check_target(row, target, pad_id):
    if target is None or target == pad_id:
        raise ValueError(f"Target {row} is the padding value {target!r}.")


def _ranks_from_array(ranked_items, targets, k, pad_id, ranks):
    if targets.ndim != 1:
        raise ValueError(f"`targets` must be 1-D; got shape {targets.shape}.")
    pads = targets == pad_id
    if pads.any():
        row = int(np.flatnonzero(pads)[0])
        raise ValueError(f"Target {row} is the padding value {pad_id!r}.")
    top = ranked_items[:, :k] if k is not None else ranked_items
    if top.shape[1] > 1:
        ordered = np.sort(top, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]) & (
            ordered[:, 1:] != pad_id
        )
        if repeated.any():
            row = int(np.flatnonzero(repeated.any(axis=1))[0])
            item = ordered[row, 1:][repeated[row]][0]
            raise ValueError(f"Ranked list {row} contains item {item!r} twice.")
    hits = top == targets[:, None]
    found = hits.any(axis=1)
    ranks[found] = np.argmax(hits[found], axis=1) + 1


def hit_rate_at_k(ranked_items, targets, k, pad_id=PAD_ID):
    """HR@k: the share of users whose target is in the first `k` positions.

    Matches OpenP5's `hit_at_k` divided by the number of users.

    Args:
        ranked_items: per-user ranked lists; see `target_ranks`.
        targets: one target item per user.
        k: cutoff.
        pad_id: the value that marks an empty position.

    Returns:
        A float in [0, 1].

    Example:
    ```python
    hit_rate_at_k([[3, 1, 2], [5, 6, -1]], targets=[1, 7], k=2)  # 0.5
    ```
    """
    ranks = target_ranks(ranked_items, targets, _check_k(k), pad_id)
    return float(np.mean(ranks > 0))


def ndcg_at_k(ranked_items, targets, k, pad_id=PAD_ID):
    """NDCG@k with one relevant item per user.

    A target at rank `r <= k` scores `1 / log2(r + 1)`, a miss scores 0; the
    ideal DCG is 1; the result is the mean over users. Matches OpenP5's
    `ndcg_at_k` divided by the number of users.

    Args:
        ranked_items: per-user ranked lists; see `target_ranks`.
        targets: one target item per user.
        k: cutoff.
        pad_id: the value that marks an empty position.

    Returns:
        A float in [0, 1].

    Example:
    ```python
    ndcg_at_k([[3, 1, 2], [5, 6, -1]], targets=[1, 7], k=2)
    # (1 / log2(3) + 0) / 2 = 0.3155
    ```
    """
    ranks = target_ranks(ranked_items, targets, _check_k(k), pad_id)
    gains = np.where(ranks > 0, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
    return float(np.mean(gains))
