"""iALS fold-in inside the model: a user vector from the items a prompt shows."""

from keras import ops


def fold_in_users(item_table, item_rows, regularization, alpha):
    """User CF vectors solved from item mentions, with the item table fixed.

    For each row of `item_rows` (the items one prompt mentions; `-1` pads),
    returns the exact minimiser over `x` of iALS's per-user objective

        sum over all items i of c_i (p_i - x . y_i)^2 + regularization |x|^2

    with `p_i = 1` and `c_i = 1 + alpha * r_i` for the `r_i > 0` mentions of
    item `i`, and `p_i = 0`, `c_i = 1` for every other item: the same vector
    as `ilm_keras.cf.IALS.fold_in` on that history (one user half-step of
    ALS, solved exactly), computed with `keras.ops` so it runs inside a
    compiled model. With the Gram matrix `G = YᵀY + regularization I`,

        x = (G + alpha * sum_i r_i y_i y_iᵀ)⁻¹ sum_i (1 + alpha r_i) y_i.

    A row without any item gets the zero vector (the solution for an empty
    history).

    Why: a user's row of a CF table fitted on the training sequences holds
    every training target of that user, so a model that reads it sees the
    answer of its training prompts but not of its test prompts. A vector
    folded in from the items the prompt itself shows carries only what the
    prompt may know, in training and at test alike.

    Args:
        item_table: float `[num_items, dim]`, the fixed item table `Y`.
        item_rows: int `[B, M]`, item rows per prompt; `-1` (any negative
            value) marks padding. Repeated rows count as repeated
            interactions.
        regularization: float > 0, iALS's L2 weight.
        alpha: float >= 0, iALS's confidence slope.

    Returns:
        float32 `[B, dim]`.

    Example:
    ```python
    users = fold_in_users(item_table, np.array([[3, 7, -1]]), 50.0, 10.0)
    # equals IALS(regularization=50, alpha=10).fold_in([[3, 7]]) for a model
    # whose item table is `item_table`
    ```
    """
    table = ops.cast(item_table, "float32")
    dim = ops.shape(table)[1]
    rows = ops.cast(item_rows, "int32")
    valid = ops.cast(rows >= 0, "float32")  # [B, M]
    ys = ops.take(table, ops.maximum(rows, 0), axis=0) * valid[..., None]
    # Each distinct item contributes 1 to the right-hand side once and alpha
    # per mention: weight a mention's "1" by 1 / (mentions of its item).
    same = ops.cast(ops.equal(rows[:, :, None], rows[:, None, :]), "float32")
    same = same * valid[:, :, None] * valid[:, None, :]
    counts = ops.maximum(ops.sum(same, axis=-1), 1.0)  # [B, M]
    rhs_weight = (1.0 / counts + alpha) * valid
    gram = ops.matmul(ops.transpose(table), table) + regularization * ops.eye(
        dim, dtype="float32"
    )
    lhs = gram[None] + alpha * ops.einsum("bmk,bml->bkl", ys, ys)
    rhs = ops.einsum("bm,bmk->bk", rhs_weight, ys)
    return ops.linalg.solve(lhs, rhs[..., None])[..., 0]
