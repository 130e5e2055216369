"""Full-ranking evaluation of dot-product retrieval (user . item scores)."""

import numpy as np

from ilm_keras.metrics.ranking import PAD_ID
from ilm_keras.metrics.ranking import target_ranks


def top_k_items(scores, k):
    """Indices of the `k` highest scores per row, best first.

    Uses `np.argpartition` (linear time) and sorts only the `k` winners.
    Ties are broken by the lower item index, also at the cut-off (rows where
    a tie straddles the cut-off are fully sorted). Positions whose score is
    `-inf` (excluded items) are returned as `-1`, so a row may hold fewer
    than `k` valid items.

    Args:
        scores: float array `[num_users, num_items]`.
        k: how many items per row (at most `num_items`).

    Returns:
        int64 array `[num_users, k]`.

    Raises:
        ValueError: if scores contain NaN or `k` is out of range.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be 2-D; got shape {scores.shape}.")
    num_items = scores.shape[1]
    if int(k) != k or not 1 <= k <= num_items:
        raise ValueError(f"`k` must be an int in 1..{num_items}; got {k}.")
    if np.isnan(scores).any():
        row = int(np.flatnonzero(np.isnan(scores).any(axis=1))[0])
        raise ValueError(f"`scores` row {row} contains NaN.")
    k = int(k)
    if k < num_items:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(num_items), scores.shape).copy()
    top_scores = np.take_along_axis(scores, top, axis=1)
    kth = top_scores.min(axis=1, keepdims=True)
    tied_rows = np.flatnonzero(
        (scores == kth).sum(axis=1) > (top_scores == kth).sum(axis=1)
    )
    for row in tied_rows:
        top[row] = np.argsort(-scores[row], kind="stable")[:k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    top = np.take_along_axis(top, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    top[np.isneginf(top_scores)] = PAD_ID
    return top


def evaluate_retrieval(
    user_vectors,
    item_table,
    targets,
    histories=None,
    exclude_history=False,
    ks=(5, 10),
    batch_size=1024,
):
    """HR@k and NDCG@k of ranking all items by `user_vector . item_vector`.

    Every item is scored for every user (full ranking, no sampled
    negatives), the top `max(ks)` are kept, and the target's rank gives
    HR@k / NDCG@k exactly as `hit_rate_at_k` / `ndcg_at_k`.

    With `exclude_history=True`, the items of the user's history get score
    `-inf` before ranking (a target that is also in the history then counts
    as a miss; how often that happens is reported).

    A popularity baseline is the special case `user_vectors = ones([n, 1])`,
    `item_table = counts[:, None]`.

    Args:
        user_vectors: float array `[num_users, dim]`.
        item_table: float array `[num_items, dim]`.
        targets: int array `[num_users]` of item indices.
        histories: per-user item-index sequences (required when
            `exclude_history`).
        exclude_history: remove history items from each ranking.
        ks: cutoffs.
        batch_size: users scored at once (memory is
            `batch_size * num_items` floats).

    Returns:
        A dict with `"HR@k"` and `"NDCG@k"` for every `k` in `ks`,
        `"num_users"`, and `"targets_in_history"` (users whose target is in
        their history; only counted when `histories` is given).

    Example:
    ```python
    results = evaluate_retrieval(
        model.fold_in(split.test_history), model.item_table,
        split.test_target, histories=split.test_history,
        exclude_history=True,
    )
    results["HR@10"]
    ```
    """
    user_vectors = np.asarray(user_vectors, dtype=np.float32)
    item_table = np.asarray(item_table, dtype=np.float32)
    targets = np.asarray(targets)
    if user_vectors.ndim != 2 or item_table.ndim != 2:
        raise ValueError(
            "`user_vectors` and `item_table` must be 2-D; got shapes "
            f"{user_vectors.shape} and {item_table.shape}."
        )
    if user_vectors.shape[1] != item_table.shape[1]:
        raise ValueError(
            f"User vectors have dim {user_vectors.shape[1]} but item vectors "
            f"have dim {item_table.shape[1]}."
        )
    num_users, num_items = user_vectors.shape[0], item_table.shape[0]
    if num_users == 0:
        raise ValueError("No users to evaluate.")
    if targets.shape != (num_users,):
        raise ValueError(
            f"`targets` has shape {targets.shape}; expected ({num_users},)."
        )
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"`targets` must be item indices; got {targets.dtype}."
        )
    if targets.min() < 0 or targets.max() >= num_items:
        raise ValueError(
            f"`targets` holds item indices outside 0..{num_items - 1}."
        )
    for name, table in (
        ("user_vectors", user_vectors),
        ("item_table", item_table),
    ):
        if not np.isfinite(table).all():
            raise ValueError(f"`{name}` contains NaN or inf.")
    if exclude_history and histories is None:
        raise ValueError("`exclude_history=True` needs `histories`.")
    if histories is not None and len(histories) != num_users:
        raise ValueError(
            f"{len(histories)} histories for {num_users} users; there must "
            "be one per user."
        )
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > num_items:
        raise ValueError(f"`ks` must be ints in 1..{num_items}; got {ks}.")
    max_k = ks[-1]

    ranks = np.zeros(num_users, dtype=np.int64)
    for start in range(0, num_users, batch_size):
        stop = min(start + batch_size, num_users)
        scores = user_vectors[start:stop] @ item_table.T
        if exclude_history:
            rows, cols = _history_coordinates(histories[start:stop], num_items)
            scores[rows, cols] = -np.inf
        top = top_k_items(scores, max_k)
        ranks[start:stop] = target_ranks(top, targets[start:stop], k=max_k)

    results = {}
    for k in ks:
        hit = (ranks > 0) & (ranks <= k)
        gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
        results[f"HR@{k}"] = float(hit.mean())
        results[f"NDCG@{k}"] = float(gain.mean())
    results["num_users"] = int(num_users)
    if histories is not None:
        results["targets_in_history"] = sum(
            int(target) in set(np.asarray(history).tolist())
            for target, history in zip(targets, histories)
        )
    return results


def _history_coordinates(histories, num_items):
    lengths = [len(h) for h in histories]
    cols = (
        np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
        if sum(lengths)
        else np.zeros(0, np.int64)
    )
    if cols.size and (cols.min() < 0 or cols.max() >= num_items):
        raise ValueError(
            f"A history holds an item index outside 0..{num_items - 1}."
        )
    rows = np.repeat(np.arange(len(histories)), lengths)
    return rows, cols
