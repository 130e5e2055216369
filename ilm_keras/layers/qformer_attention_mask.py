"""The self-attention masks of the Q-Former's three modes."""

from keras import ops

QFORMER_MODES = ("unimodal", "matching", "generation")


def qformer_attention_mask(mode, num_queries, padding_mask):
    """Builds the boolean self-attention mask over `[queries; text]` rows.

    - `"unimodal"`: queries attend to queries, text to text (two towers
      that never see each other; item-text contrastive learning).
    - `"matching"`: every row attends to every row (item-text matching).
    - `"generation"`: queries attend to queries only; text row `t` attends to
      all queries and to text rows `<= t` (item-grounded generation, the
      UniLM-style mask of BLIP-2).

    Padded text keys are never attended to. Every row keeps at least one key
    it may attend to, as long as the first text token is not padding.

    Args:
        mode: one of `"unimodal"`, `"matching"`, `"generation"`.
        num_queries: int, number of query rows (may be 0 for text alone).
        padding_mask: `[batch, text_length]` bool/int, 1 for real tokens.

    Returns:
        A `[batch, num_queries + text_length, num_queries + text_length]` bool
        tensor, True where a row may attend to a column.

    Example:
    ```python
    mask = qformer_attention_mask("generation", 2, np.ones((1, 3), bool))
    ```
    """
    if mode not in QFORMER_MODES:
        raise ValueError(
            f"Unknown Q-Former mode {mode!r}; expected one of {QFORMER_MODES}."
        )
    padding_mask = ops.cast(padding_mask, "bool")
    batch_size = ops.shape(padding_mask)[0]
    text_length = ops.shape(padding_mask)[1]
    total = num_queries + text_length
    positions = ops.arange(total)
    row = ops.expand_dims(positions, 1)
    col = ops.expand_dims(positions, 0)
    row_is_query = row < num_queries
    col_is_query = col < num_queries
    if mode == "unimodal":
        allowed = ops.equal(row_is_query, col_is_query)
    elif mode == "matching":
        allowed = ops.ones((total, total), "bool")
    else:
        causal_text = ops.logical_and(
            ops.logical_not(col_is_query), col <= row
        )
        allowed = ops.logical_or(
            col_is_query,
            ops.logical_and(ops.logical_not(row_is_query), causal_text),
        )
    key_valid = ops.concatenate(
        [ops.ones((batch_size, num_queries), "bool"), padding_mask], axis=1
    )
    return ops.logical_and(
        ops.expand_dims(allowed, 0), ops.expand_dims(key_valid, 1)
    )
