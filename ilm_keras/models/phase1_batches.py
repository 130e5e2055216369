"""Phase-1 input pipeline: single-kind batches, alternating within one fit."""

import math

import numpy as np

from ilm_keras.cf.embeddings import check_table
from ilm_keras.models.qformer_pretrainer import ITEM_ITEM
from ilm_keras.models.qformer_pretrainer import ITEM_TEXT
from ilm_keras.models.qformer_pretrainer import LOSS_SETS
from ilm_keras.models.qformer_pretrainer import USER_ITEM


def _checked_indices(indices, size, what):
    indices = np.asarray(indices, dtype="int64")
    bad = (indices < 0) | (indices >= size)
    if bad.any():
        raise ValueError(
            f"Unknown {what} id {int(indices[bad][0])}: the CF table has rows "
            f"0..{size - 1} ({int(bad.sum())} such reference(s))."
        )
    return indices


def _item_text_stream(item_text, item_table, items_tf):
    """Validates the item-text pairs; returns their `(name, arrays,
    to_batch)` stream."""
    import tensorflow as tf

    items, token_ids, padding_mask = item_text
    cf_dim = item_table.shape[1]
    items = _checked_indices(items, len(item_table), "item")
    token_ids = np.asarray(token_ids, dtype="int32")
    padding_mask = np.asarray(padding_mask, dtype="bool")
    if token_ids.shape != padding_mask.shape or len(token_ids) != len(items):
        raise ValueError(
            "item_text must be (items [P], token_ids [P, L], padding_mask "
            f"[P, L]); got {items.shape}, {token_ids.shape}, "
            f"{padding_mask.shape}."
        )
    if len(padding_mask) and not padding_mask[:, 0].all():
        raise ValueError(
            f"Empty text for item {int(items[~padding_mask[:, 0]][0])}: every "
            "text needs at least one token."
        )

    def text_batch(item, ids, mask):
        size = tf.shape(item)[0]
        return {
            "kind": tf.fill([size], ITEM_TEXT),
            "cf_a": tf.gather(items_tf, item),
            "id_a": item,
            "cf_b": tf.zeros((0, cf_dim)),
            "id_b": tf.zeros((0,), "int64"),
            "token_ids": ids,
            "padding_mask": mask,
        }

    return "item-text", (items, token_ids, padding_mask), text_batch


def make_phase1_dataset(
    item_table=None,
    item_text=None,
    item_item=None,
    user_item=None,
    user_table=None,
    losses="all",
    batch_size=64,
    shuffle=True,
    repeat=True,
    seed=0,
    cf_embeddings=None,
    num_processes=1,
    process_id=0,
):
    """Builds the `tf.data` pipeline that `QFormerPretrainer.fit` reads.

    Each batch holds examples of a single kind, because contrastive losses
    use the other examples of the batch as negatives and item-text and
    item-item examples must not serve as each other's negatives. The kinds
    take turns (item-text, item-item, user-item, item-text, ...), so one
    `fit` trains all enabled losses, as in the paper. A batch carries every
    field; those its kind does not use have zero rows (a pair batch has text
    of shape `[0, L]`, an item-text batch a second item of shape `[0, d]`),
    which is how the pretrainer tells the kinds apart without a host
    round-trip.

    Args:
        item_table: `[num_items, cf_dim]` item CF embeddings.
        item_text: `(item_index [P], token_ids [P, L], padding_mask [P, L])`
            from `QFormerTokenizer.encode` over the items' texts.
        item_item: `[P, 2]` int item-index pairs (consecutive items).
        user_item: `[P, 2]` int `(user index, item index)` pairs.
        user_table: `[num_users, cf_dim]` user CF embeddings (for user-item).
        losses: `"it"`, `"it_ii"`, `"it_ui"`, `"all"` or `"ii_ui"`; the kinds
            needed by these losses must be given (`item_text` may be None
            for `"ii_ui"`).
        batch_size: int >= 2, examples per batch (incomplete last batches of
            a pass are dropped).
        shuffle: bool, reshuffle every pass.
        repeat: bool. If True the dataset never ends: pass the returned
            `steps_per_epoch` to `fit`. If False each kind is read once.
        seed: int.
        cf_embeddings: optional `ilm_keras.cf.CFEmbeddings`, in place of
            `item_table` and `user_table` (the same object the
            `ItemLanguageModelBackbone` and its preprocessor take).
        num_processes: int, processes sharing every batch in a
            multi-process data-parallel run (JAX, `keras.distribution.
            DataParallel(auto_shard_dataset=False)`). Each process builds the
            same pipeline (same seed) and keeps rows `[process_id * n,
            (process_id + 1) * n)` of every batch, `n = batch_size //
            num_processes`, before any CF row or text is gathered; Keras
            joins the processes' rows into the global batch, so in-batch
            negatives are those of the whole batch.
        process_id: int, this process (`jax.process_index()`).

    Returns:
        `(dataset, steps_per_epoch)`; one epoch is one pass over the
        item-text pairs (the item-item pairs for `"ii_ui"`) with as many
        batches of each other enabled kind. The dataset shuffles itself:
        pass `shuffle=False` to `fit` (Keras would warn that it ignores
        `shuffle=True` on a `tf.data.Dataset`).

    Example:
    ```python
    token_ids, padding_mask = tokenizer.encode(texts)
    dataset, steps = make_phase1_dataset(
        item_table, item_text=(np.arange(len(texts)), token_ids, padding_mask),
        item_item=pairs, losses="it_ii", batch_size=32)
    pretrainer.fit(dataset, steps_per_epoch=steps, epochs=5, shuffle=False)
    ```
    """
    import tensorflow as tf

    if losses not in LOSS_SETS:
        raise ValueError(
            f"Unknown losses={losses!r}; expected one of {list(LOSS_SETS)}."
        )
    if batch_size < 2:
        raise ValueError(
            f"batch_size must be >= 2 (in-batch negatives), got {batch_size}."
        )
    if batch_size % num_processes:
        raise ValueError(
            f"batch_size={batch_size} does not divide into {num_processes} "
            "processes; use a multiple of it."
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"Need 0 <= process_id < num_processes; got process_id="
            f"{process_id}, num_processes={num_processes}."
        )
    rows = slice(process_id * (batch_size // num_processes),
                 (process_id + 1) * (batch_size // num_processes))
    if cf_embeddings is not None:
        if item_table is not None or user_table is not None:
            raise ValueError(
                "Pass either `cf_embeddings` or `item_table` / `user_table`, "
                "not both."
            )
        item_table, user_table = cf_embeddings.item_table, cf_embeddings.user_table
    if item_table is None:
        raise ValueError(
            "The item CF table is missing: pass `item_table` or `cf_embeddings`."
        )
    enabled = LOSS_SETS[losses]
    item_table = check_table(item_table, "item_table")
    cf_dim = item_table.shape[1]
    streams = []  # (kind, arrays, to_batch)
    items_tf = tf.constant(item_table)
    if "itc" in enabled:
        if item_text is None:
            raise ValueError(f"losses={losses!r} needs item_text pairs.")
        streams.append(_item_text_stream(item_text, item_table, items_tf))
        text_length = np.asarray(item_text[1]).shape[1]
    else:
        # Pair batches still carry (empty) text fields; any width will do.
        text_length = 1

    def no_text(size):
        return {
            "token_ids": tf.zeros((0, text_length), "int32"),
            "padding_mask": tf.zeros((0, text_length), "bool"),
        }

    if "ii" in enabled:
        if item_item is None:
            raise ValueError(f"losses={losses!r} needs item_item pairs.")
        pairs = _checked_indices(item_item, len(item_table), "item")
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"item_item must be [P, 2], got {pairs.shape}.")

        def item_item_batch(a, b):
            return {
                "kind": tf.fill([tf.shape(a)[0]], ITEM_ITEM),
                "cf_a": tf.gather(items_tf, a),
                "id_a": a,
                "cf_b": tf.gather(items_tf, b),
                "id_b": b,
                **no_text(None),
            }

        streams.append(("item-item", (pairs[:, 0], pairs[:, 1]), item_item_batch))

    if "ui" in enabled:
        if user_item is None or user_table is None:
            raise ValueError(
                f"losses={losses!r} needs user_item pairs and a user_table."
            )
        user_table = check_table(user_table, "user_table")
        if user_table.shape[1] != cf_dim:
            raise ValueError(
                f"user_table has dimension {user_table.shape[1]} but item_table "
                f"has {cf_dim}; users and items must share one CF space."
            )
        pairs = np.asarray(user_item, dtype="int64")
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"user_item must be [P, 2], got {pairs.shape}.")
        users = _checked_indices(pairs[:, 0], len(user_table), "user")
        users_items = _checked_indices(pairs[:, 1], len(item_table), "item")
        users_tf = tf.constant(user_table)

        def user_item_batch(u, i):
            return {
                "kind": tf.fill([tf.shape(u)[0]], USER_ITEM),
                "cf_a": tf.gather(users_tf, u),
                "id_a": u,
                "cf_b": tf.gather(items_tf, i),
                "id_b": i,
                **no_text(None),
            }

        streams.append(("user-item", (users, users_items), user_item_batch))

    datasets = []
    for offset, (name, arrays, to_batch) in enumerate(streams):
        if len(arrays[0]) < batch_size:
            raise ValueError(
                f"Only {len(arrays[0])} {name} examples for batch_size="
                f"{batch_size}; lower the batch size."
            )
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        if shuffle:
            ds = ds.shuffle(
                len(arrays[0]), seed=seed + offset, reshuffle_each_iteration=True
            )
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=True)
        if num_processes > 1:
            ds = ds.map(lambda *arrays: tuple(a[rows] for a in arrays))
        ds = ds.map(to_batch)
        datasets.append(ds)
    choice = tf.data.Dataset.range(len(datasets))
    if repeat:
        choice = choice.repeat()
    else:
        longest = max(len(s[1][0]) // batch_size for s in streams)
        choice = choice.repeat(longest)
    dataset = tf.data.Dataset.choose_from_datasets(
        datasets, choice, stop_on_empty_dataset=False
    )
    first = len(streams[0][1][0])
    steps_per_epoch = len(streams) * max(1, math.floor(first / batch_size))
    return dataset.prefetch(tf.data.AUTOTUNE), steps_per_epoch
