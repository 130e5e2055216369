"""Planted-cluster interaction data for the CF tests (made here, not read)."""

import numpy as np


def planted_clusters(
    num_users=160,
    num_clusters=4,
    items_per_cluster=20,
    items_per_user=12,
    seed=0,
):
    """Users of cluster c interact only with items of cluster c.

    Every cluster has the same number of users and items, and items are
    drawn uniformly within a cluster, so item popularity carries almost no
    signal: a model must find the low-rank (cluster) structure to do well.

    Returns:
        `(sequences, num_items, clusters)`: one int64 array of distinct item
        indices per user (random order), the item count, and each user's
        cluster.
    """
    rng = np.random.default_rng(seed)
    clusters = np.arange(num_users) % num_clusters
    sequences = [
        c * items_per_cluster
        + rng.choice(items_per_cluster, size=items_per_user, replace=False)
        for c in clusters
    ]
    return sequences, num_clusters * items_per_cluster, clusters


def hr_at_10(user_vectors, item_table, histories, targets):
    """HR@10 with history items excluded (a small independent reference)."""
    scores = user_vectors @ item_table.T
    for u, history in enumerate(histories):
        scores[u, history] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return float(np.mean([t in row for t, row in zip(targets, top)]))
