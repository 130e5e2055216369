"""CFItemOutputHead: item-token logits from the CF item table (beyond the paper)."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="ilm_keras")
class CFItemOutputHead(keras.layers.Layer):
    """Adds `h . (W v_i)` to the logit of every item's token.

    Beyond the ILM paper: with one vocabulary entry per item (atomic ids),
    the LLM's output embedding of item i is complemented by a trainable
    projection `W` of its CF vector `v_i`, so the score of an item is the
    LLM's own logit plus a dot product between a linear read-out of the
    LLM's last hidden state and the item's CF vector: the scoring rule of
    the matrix factorization the CF table comes from. `W` starts at zero,
    so the logits start as the LLM's own; it trains with the item encoder
    and adaptor (the LLM stays frozen).

    The layer returns only the term to add, `[..., vocabulary_size]`, zero
    at every token that is not an item's. It reads the item table from the
    variable given to `attach_table` (the owner's CF table, items first), at
    call time, so `set_cf_tables` reaches it.

    Args:
        item_token_ids: ints, the vocabulary id of each item's token, in
            the order of the CF table's rows.
        vocabulary_size: int, the LLM's vocabulary size.
        cf_dim: int, the CF vectors' width.
        kernel_initializer: initializer of `W` (`[cf_dim, hidden_dim]`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    head = CFItemOutputHead(item_token_ids=[5, 6, 7], vocabulary_size=10,
                            cf_dim=4)
    head.attach_table(keras.Variable(np.ones((3, 4)), trainable=False))
    extra = head(np.zeros((2, 1, 16)))  # [2, 1, 10]
    logits = llm_logits + extra
    ```
    """

    def __init__(self, item_token_ids, vocabulary_size, cf_dim,
                 kernel_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        ids = np.asarray(item_token_ids, dtype="int64").reshape(-1)
        vocabulary_size = int(vocabulary_size)
        if ids.size == 0:
            raise ValueError("`item_token_ids` is empty.")
        if ids.min() < 0 or ids.max() >= vocabulary_size:
            raise ValueError(
                f"`item_token_ids` must lie in 0..{vocabulary_size - 1} (the "
                f"vocabulary), got ids from {ids.min()} to {ids.max()}."
            )
        if len(set(ids.tolist())) != ids.size:
            raise ValueError(
                "`item_token_ids` repeats a token: each item needs a token of "
                "its own (atomic item ids)."
            )
        self.item_token_ids = [int(i) for i in ids]
        self.vocabulary_size = vocabulary_size
        self.cf_dim = int(cf_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # For each vocabulary entry, its item's column, or the extra zero
        # column `num_items` for every other token.
        columns = np.full(vocabulary_size, ids.size, dtype="int32")
        columns[ids] = np.arange(ids.size, dtype="int32")
        self._columns = columns

    def attach_table(self, table):
        """Reads item vectors from the first `len(item_token_ids)` rows of
        `table` (a variable `[rows, cf_dim]` owned by another layer; not
        tracked here)."""
        if int(table.shape[-1]) != self.cf_dim or int(table.shape[0]) < len(
            self.item_token_ids
        ):
            raise ValueError(
                f"The table has shape {tuple(table.shape)}; the head needs at "
                f"least {len(self.item_token_ids)} rows of width {self.cf_dim}."
            )
        object.__setattr__(self, "_table", table)

    def build(self, hidden_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.cf_dim, int(hidden_shape[-1])),
            initializer=self.kernel_initializer,
        )
        self.built = True

    def call(self, hidden):
        """`hidden` `[..., H]` -> `[..., vocabulary_size]`."""
        table = getattr(self, "_table", None)
        if table is None:
            raise ValueError("Call `attach_table` before using the head.")
        item_table = ops.slice(
            table.value, (0, 0), (len(self.item_token_ids), self.cf_dim)
        )
        item_vectors = ops.matmul(
            ops.cast(item_table, self.compute_dtype),
            ops.cast(self.kernel, self.compute_dtype),
        )  # [N, H]
        scores = ops.einsum("...h,nh->...n", hidden, item_vectors)
        zeros = ops.zeros_like(scores[..., :1])
        scores = ops.concatenate([scores, zeros], axis=-1)
        return ops.take(scores, self._columns, axis=-1)

    def compute_output_shape(self, hidden_shape):
        return tuple(hidden_shape[:-1]) + (self.vocabulary_size,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "item_token_ids": self.item_token_ids,
                "vocabulary_size": self.vocabulary_size,
                "cf_dim": self.cf_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
