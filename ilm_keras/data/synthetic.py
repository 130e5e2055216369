"""Built-in synthetic data with planted structure (no download, no licence)."""

import numpy as np

from ilm_keras.data.interactions import InteractionData

_GENRES = [
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]
_THEMES = [
    "Dragon", "Harbor", "Galaxy", "Detective", "Garden", "Frontier",
    "Phantom", "Circus", "Glacier", "Empire", "Lantern", "Canyon",
    "Orchestra", "Volcano", "Meadow", "Citadel",
]
_WORDS = [
    "Night", "Return", "Secret", "Last", "Silver", "Broken", "Hidden",
    "Golden", "Lost", "Wild", "Quiet", "Burning", "Distant", "Iron",
    "Paper", "Crimson", "Hollow", "Electric", "Velvet", "Winter",
]


def make_synthetic_data(
    num_users=300,
    num_items=200,
    num_clusters=8,
    interactions_per_user=20,
    latent_dim=16,
    in_cluster_probability=0.85,
    seed=0,
):
    """Makes a MovieLens-like dataset whose users, items and texts share
    planted clusters.

    Every item and user belongs to one of `num_clusters` clusters. Users pick
    most of their items (`in_cluster_probability`) from their own cluster,
    so collaborative filtering can recover the clusters from interactions
    alone. Each item's text is determined by its cluster: a theme word, a
    decade and two genres of the cluster, plus one item-specific title word
    (which no CF signal can predict), e.g.
    `"Galaxy Hidden (1984). Genres: Sci-Fi, Thriller."`.

    Args:
        num_users: int.
        num_items: int.
        num_clusters: int, at most 16.
        interactions_per_user: int, length of every user's sequence.
        latent_dim: int, dimension of the planted factors returned.
        in_cluster_probability: float, share of a user's items drawn from
            the user's own cluster.
        seed: int.

    Returns:
        `(data, planted)`: an `InteractionData` named `"synthetic"`, and a
        dict with `"item_clusters"` `[num_items]`, `"user_clusters"`
        `[num_users]`, and noisy cluster-centroid factors `"item_factors"`
        `[num_items, latent_dim]` and `"user_factors"` for tests that need CF
        vectors without training a factorization.

    Example:
    ```python
    data, planted = make_synthetic_data(num_users=100, num_items=50, seed=1)
    data.stats()  # {'users': 100, 'items': 50, 'interactions': 2000}
    ```
    """
    if not 1 <= num_clusters <= len(_THEMES):
        raise ValueError(
            f"num_clusters must be in 1..{len(_THEMES)}, got {num_clusters}."
        )
    if num_items < num_clusters:
        raise ValueError(
            f"num_items={num_items} is smaller than num_clusters="
            f"{num_clusters}; every cluster needs an item."
        )
    rng = np.random.default_rng(seed)
    item_clusters = np.arange(num_items) % num_clusters
    rng.shuffle(item_clusters)
    user_clusters = rng.integers(0, num_clusters, size=num_users)
    members = [np.flatnonzero(item_clusters == c) for c in range(num_clusters)]
    max_len = min(interactions_per_user, num_items)

    sequences = []
    for u in range(num_users):
        own = members[user_clusters[u]]
        seen = set()
        seq = []
        while len(seq) < max_len:
            if rng.random() < in_cluster_probability and len(seen & set(own)) < len(own):
                item = int(rng.choice(own))
            else:
                item = int(rng.integers(0, num_items))
            if item not in seen:
                seen.add(item)
                seq.append(item)
        sequences.append(np.array(seq, dtype=np.int64))

    cluster_genres = [
        (_GENRES[(2 * c) % len(_GENRES)], _GENRES[(2 * c + 1) % len(_GENRES)])
        for c in range(num_clusters)
    ]
    item_texts = []
    for i in range(num_items):
        c = item_clusters[i]
        year = 1950 + 5 * c + int(rng.integers(0, 5))
        word = _WORDS[int(rng.integers(0, len(_WORDS)))]
        g1, g2 = cluster_genres[c]
        item_texts.append(f"{_THEMES[c]} {word} ({year}). Genres: {g1}, {g2}.")

    centroids = rng.normal(size=(num_clusters, latent_dim))
    item_factors = centroids[item_clusters] + 0.3 * rng.normal(
        size=(num_items, latent_dim)
    )
    user_factors = centroids[user_clusters] + 0.3 * rng.normal(
        size=(num_users, latent_dim)
    )
    data = InteractionData(
        name="synthetic",
        user_ids=[str(u + 1) for u in range(num_users)],
        item_ids=[str(i + 1) for i in range(num_items)],
        sequences=sequences,
        item_texts=item_texts,
    )
    planted = {
        "item_clusters": item_clusters,
        "user_clusters": user_clusters,
        "item_factors": item_factors.astype("float32"),
        "user_factors": user_factors.astype("float32"),
    }
    return data, planted
