"""Each process's rows of every global batch, for multi-process runs."""


def process_shard(dataset, num_processes=None, process_id=None):
    """This process's share of every batch of a batched `tf.data` pipeline.

    In a multi-process data-parallel run every process builds the same
    pipeline (same order, same shuffle seeds) and keeps rows
    `[process_id * n, (process_id + 1) * n)` of each batch, `n = rows //
    num_processes`, in every field. Keras' JAX trainer under
    `keras.distribution.DataParallel(auto_shard_dataset=False)` joins the
    processes' rows back into the global batch
    (`jax.make_array_from_process_local_data`), so each step sees exactly the
    batch one process would: in-batch negatives (phase 1) and per-batch
    label widths (phase 2) included.

    Keras' own `DataParallel.distribute_dataset` does this by `rebatch`,
    which needs a static batch size shared by every field; phase-1 batches
    (one kind each, zero rows in the other kinds' fields) and keras-hub's
    preprocessed batches (batch size known per batch only) have neither,
    hence this map. Fields with zero rows stay empty.

    Args:
        dataset: a `tf.data.Dataset` of batches (nested structures of
            tensors whose first axis is the batch; e.g.
            `make_phase1_dataset(...)[0]`, or preprocessed `(x, y,
            sample_weight)` batches of `ItemLanguageModel`).
        num_processes: int; defaults to `jax.process_count()`.
        process_id: int; defaults to `jax.process_index()`.

    Returns:
        The mapped dataset. Each batch's row count must divide by
        `num_processes` (checked when the batch is produced).

    Example:
    ```python
    keras.distribution.initialize("10.0.0.1:1234", num_processes=2, process_id=0)
    dataset, steps = ilm_keras.make_phase1_dataset(item_table, ..., batch_size=64)
    with keras.distribution.DataParallel(auto_shard_dataset=False).scope():
        pretrainer = ilm_keras.QFormerPretrainer(qformer, losses="it")
        pretrainer.compile(optimizer="adamw")
        pretrainer.fit(process_shard(dataset), steps_per_epoch=steps)
    ```
    """
    import tensorflow as tf

    if num_processes is None or process_id is None:
        import jax

        num_processes = jax.process_count() if num_processes is None else num_processes
        process_id = jax.process_index() if process_id is None else process_id
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"Need 0 <= process_id < num_processes, got process_id="
            f"{process_id}, num_processes={num_processes}."
        )
    if num_processes == 1:
        return dataset

    def rows(x):
        total = tf.shape(x)[0]
        tf.debugging.assert_equal(
            total % num_processes, 0,
            message=f"A batch's rows do not divide into {num_processes} "
            "processes; use a batch size that is a multiple of it.",
        )
        n = total // num_processes
        return x[process_id * n : (process_id + 1) * n]

    return dataset.map(lambda *batch: tf.nest.map_structure(rows, batch)
                       if len(batch) > 1 else tf.nest.map_structure(rows, batch[0]))
