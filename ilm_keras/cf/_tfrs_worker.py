"""Child process that trains a TensorFlow Recommenders matrix factorization.

TensorFlow Recommenders only runs with the legacy `tf_keras` (Keras 2), which
needs `TF_USE_LEGACY_KERAS=1` set before TensorFlow is first imported, and
that setting changes what `tf.keras` means for the whole process. So
`ilm_keras.cf.TFRSMatrixFactorization` runs this file as a separate Python
process (by path, so that the `ilm_keras` package, which imports Keras 3, is
never imported here) and reads the tables back from a file.

Protocol:
    python _tfrs_worker.py --input IN.npz --output OUT.npz

`IN.npz` holds `users` and `items` (int64 `[n]`, one training pair each),
`num_users`, `num_items` (int64 scalars) and `config` (JSON string with the
`TFRSMatrixFactorization` hyperparameters). `OUT.npz` receives `user_table`
and `item_table` (float32), `loss_history` (float64 `[epochs]`, mean
per-example training loss of each epoch), `train_seconds` (float64, the
wall time of Keras `fit` alone), `num_replicas` (int64, 1 without a
strategy) and `versions` (JSON string).

With `devices: N` in the config, the physical CPU is split into N logical
devices before TensorFlow initialises, and the model and optimizer are built
in a `tf.distribute.MirroredStrategy` scope over them (see `_train`).

Exit codes: 0 success, 2 bad invocation or input, 3 a package is missing.
"""

import argparse
import json
import os
import sys
import time

EXIT_BAD_INPUT = 2
EXIT_MISSING_PACKAGE = 3


def _fail(code, message):
    print(f"tfrs worker: {message}", file=sys.stderr)
    sys.exit(code)


def _train(users, items, num_users, num_items, config):
    import numpy as np
    import tensorflow as tf

    try:
        import tensorflow_recommenders as tfrs
    except ImportError as e:
        _fail(
            EXIT_MISSING_PACKAGE,
            "tensorflow-recommenders could not be imported "
            f"({e}); install it with `pip install tensorflow-recommenders`.",
        )

    if config.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(config["threads"])
    strategy = _mirrored_strategy(tf, config.get("devices"))
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    seed = int(config["seed"])
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    factors = int(config["factors"])
    # TFRS's train step adds the full regularization loss on every replica
    # and the strategy sums the replicas' gradients, so each replica gets
    # 1 / replicas of the weight (the sum is the single-device gradient).
    regularizer = (
        tf.keras.regularizers.l2(config["regularization"] / replicas)
        if config["regularization"] > 0
        else None
    )

    def embedding(rows, name):
        return tf.keras.layers.Embedding(
            rows,
            factors,
            embeddings_initializer=tf.keras.initializers.RandomNormal(
                stddev=config["init_stddev"], seed=seed
            ),
            embeddings_regularizer=regularizer,
            name=name,
        )

    frequency = np.bincount(items, minlength=num_items).astype(np.float32)
    sampling_probability = frequency / frequency.sum()

    class MatrixFactorization(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.user_embedding = embedding(num_users, "user_embedding")
            self.item_embedding = embedding(num_items, "item_embedding")
            self.item_probability = tf.constant(sampling_probability)
            self.task = tfrs.tasks.Retrieval(
                temperature=config["temperature"],
                remove_accidental_hits=config["remove_accidental_hits"],
            )

        def compute_loss(self, features, training=False):
            user_vectors = self.user_embedding(features["user"])
            item_vectors = self.item_embedding(features["item"])
            item_ids = features["item"]
            if replicas > 1:
                item_vectors, item_ids = _global_candidates(
                    tf, item_vectors, item_ids
                )
            probability = None
            if config["logq_correction"]:
                probability = tf.gather(self.item_probability, item_ids)
            return self.task(
                user_vectors,
                item_vectors,
                candidate_sampling_probability=probability,
                candidate_ids=item_ids,
                compute_metrics=False,
            )

    optimizers = {
        "adagrad": tf.keras.optimizers.Adagrad,
        "adam": tf.keras.optimizers.Adam,
    }

    def build_and_compile():
        model = MatrixFactorization()
        model.compile(
            optimizer=optimizers[config["optimizer"]](config["learning_rate"])
        )
        return model

    if strategy is None:
        model = build_and_compile()
    else:
        with strategy.scope():
            model = build_and_compile()
    dataset = (
        tf.data.Dataset.from_tensor_slices({"user": users, "item": items})
        .shuffle(len(users), seed=seed, reshuffle_each_iteration=True)
        .batch(int(config["batch_size"]))
    )

    class EpochLoss(tf.keras.callbacks.Callback):
        """Mean per-pair loss of each epoch (the task sums over a batch)."""

        def __init__(self):
            super().__init__()
            self.epochs, self._total = [], 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._total = 0.0

        def on_train_batch_end(self, batch, logs=None):
            self._total += float(logs["loss"])

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(self._total / len(users))

    epoch_loss = EpochLoss()
    start = time.perf_counter()
    model.fit(
        dataset,
        epochs=int(config["epochs"]),
        verbose=0,
        callbacks=[epoch_loss],
    )
    train_seconds = time.perf_counter() - start
    loss_history = np.asarray(epoch_loss.epochs, np.float64)
    import tf_keras

    versions = {
        "tensorflow": tf.__version__,
        "tensorflow_recommenders": tfrs.__version__,
        "tf_keras": tf_keras.__version__,
    }
    return (
        model.user_embedding.embeddings.numpy().astype(np.float32),
        model.item_embedding.embeddings.numpy().astype(np.float32),
        loss_history,
        train_seconds,
        replicas,
        versions,
    )


def _mirrored_strategy(tf, devices):
    """`MirroredStrategy` over `devices` logical CPU devices, or None.

    Splits the first physical CPU into `devices` logical devices, which must
    happen before TensorFlow initialises its devices (nothing before this
    has run an op). They share the process's thread pools: this shows what
    the strategy costs, not more compute.
    """
    if devices is None:
        return None
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * int(devices)
    )
    return tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(int(devices))]
    )


def _global_candidates(tf, item_vectors, item_ids):
    """Every replica's items of the global batch, this replica's first.

    Under `MirroredStrategy` each replica sees `batch_size / replicas`
    pairs. Gathering the candidates from all replicas keeps the in-batch
    softmax over the whole global batch, as on one device; rolling them so
    that this replica's own rows come first keeps the positive of query `j`
    at candidate `j`, where `tfrs.tasks.Retrieval` expects it. The last
    batch of an epoch may split unevenly, so the offset is summed from the
    gathered per-replica sizes. `all_gather`'s gradient all-reduces and
    slices, so every item row gets the gradient of the summed loss.
    """
    context = tf.distribute.get_replica_context()
    sizes = context.all_gather(tf.shape(item_ids)[:1], axis=0)
    offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    # One call per dtype: a batched gather concatenates its inputs.
    return tuple(
        tf.roll(context.all_gather(values, axis=0), -offset, axis=0)
        for values in (item_vectors, item_ids)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        _fail(
            EXIT_BAD_INPUT,
            "TF_USE_LEGACY_KERAS=1 must be set in this process's environment "
            "before TensorFlow is imported (TFRS needs Keras 2).",
        )
    if "tensorflow" in sys.modules:
        _fail(EXIT_BAD_INPUT, "TensorFlow was imported before the worker ran.")

    import numpy as np

    with np.load(args.input, allow_pickle=False) as data:
        users = data["users"].astype(np.int64)
        items = data["items"].astype(np.int64)
        num_users = int(data["num_users"])
        num_items = int(data["num_items"])
        config = json.loads(str(data["config"]))
    if users.shape != items.shape or users.ndim != 1 or users.size == 0:
        _fail(
            EXIT_BAD_INPUT,
            f"`users` {users.shape} and `items` {items.shape} must be equal, "
            "non-empty 1-D arrays.",
        )
    devices = config.get("devices")
    if devices is not None and (
        isinstance(devices, bool) or not isinstance(devices, int) or devices < 1
    ):
        _fail(
            EXIT_BAD_INPUT, f"`devices` must be a positive int; got {devices}."
        )
    (
        user_table,
        item_table,
        loss_history,
        train_seconds,
        replicas,
        versions,
    ) = _train(users, items, num_users, num_items, config)
    np.savez(
        args.output,
        user_table=user_table,
        item_table=item_table,
        loss_history=loss_history,
        train_seconds=np.float64(train_seconds),
        num_replicas=np.int64(replicas),
        versions=np.array(json.dumps(versions)),
    )


if __name__ == "__main__":
    main()
