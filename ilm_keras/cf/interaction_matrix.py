"""Builds the sparse user-item count matrix that the CF models train on."""

import numpy as np
import scipy.sparse


def interaction_matrix(interactions, num_users=None, num_items=None):
    """Returns a `[num_users, num_items]` float32 CSR matrix of counts.

    Entry `(u, i)` is the number of times user `u` interacted with item `i`
    (repeats are counted, not dropped). Rows without interactions are allowed
    (a user whose only items were held out).

    Args:
        interactions: either a list with one sequence of item indices per
            user (user index = position in the list; e.g.
            `split.train_sequences`), or a `scipy.sparse` matrix of
            non-negative counts/weights `[num_users, num_items]`.
        num_users: number of users. Defaults to `len(interactions)` for
            sequences; must match the matrix shape when given with a matrix.
        num_items: number of items. Required for sequences (items that never
            occur in training must still get a row in the item table, so it
            cannot be inferred); must match the matrix shape for a matrix.

    Returns:
        A `scipy.sparse.csr_matrix` with float32 data, sorted indices and
        no explicit zeros.

    Raises:
        ValueError: on item indices outside `0..num_items-1`, non-integer
            items, negative or non-finite matrix values, or shape mismatches.

    Example:
    ```python
    m = interaction_matrix([[0, 2, 2], [1]], num_items=3)
    m.toarray()  # [[1, 0, 2], [0, 1, 0]]
    ```
    """
    if scipy.sparse.issparse(interactions):
        return _from_sparse(interactions, num_users, num_items)
    return _from_sequences(interactions, num_users, num_items)


def _from_sparse(matrix, num_users, num_items):
    matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
    rows, cols = matrix.shape
    if num_users is not None and num_users != rows:
        raise ValueError(
            f"The matrix has {rows} rows but num_users={num_users}."
        )
    if num_items is not None and num_items != cols:
        raise ValueError(
            f"The matrix has {cols} columns but num_items={num_items}."
        )
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError(
            f"The matrix has {int((~np.isfinite(matrix.data)).sum())} "
            "non-finite values (NaN or inf)."
        )
    if (matrix.data < 0).any():
        raise ValueError(
            f"The matrix has {int((matrix.data < 0).sum())} negative values; "
            "implicit-feedback counts must be >= 0."
        )
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def _from_sequences(sequences, num_users, num_items):
    if num_items is None:
        raise ValueError(
            "`num_items` is required when training from sequences: items "
            "that never occur in training still need a row in the item table."
        )
    num_items = int(num_items)
    sequences = list(sequences)
    if num_users is None:
        num_users = len(sequences)
    if len(sequences) != num_users:
        raise ValueError(
            f"Got {len(sequences)} sequences but num_users={num_users}; "
            "there must be one sequence (possibly empty) per user."
        )
    lengths = np.zeros(num_users, dtype=np.int64)
    arrays = []
    for u, seq in enumerate(sequences):
        arr = np.asarray(seq)
        if arr.ndim != 1:
            raise ValueError(
                f"Sequence of user index {u} must be 1-D; got shape "
                f"{arr.shape}."
            )
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"Sequence of user index {u} must hold integer item indices; "
                f"got dtype {arr.dtype}."
            )
        if arr.size and (arr.min() < 0 or arr.max() >= num_items):
            bad = arr[(arr < 0) | (arr >= num_items)][0]
            raise ValueError(
                f"Sequence of user index {u} refers to item index {int(bad)}, "
                f"outside 0..{num_items - 1}."
            )
        lengths[u] = arr.size
        arrays.append(arr.astype(np.int64, copy=False))
    cols = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(num_users), lengths)
    matrix = scipy.sparse.csr_matrix(
        (np.ones(cols.size, np.float32), (rows, cols)),
        shape=(num_users, num_items),
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix
