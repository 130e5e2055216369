"""Two-tower matrix factorization trained with TensorFlow Recommenders."""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ilm_keras.cf import _tfrs_worker
from ilm_keras.cf.embeddings import CFEmbeddings
from ilm_keras.cf.interaction_matrix import interaction_matrix

WORKER_PATH = os.path.abspath(_tfrs_worker.__file__)


class TFRSMatrixFactorization:
    """Matrix factorization with `tfrs.tasks.Retrieval` (in-batch softmax).

    A user tower and an item tower, each a single `Embedding` table, are
    trained on (user, item) training pairs with TensorFlow Recommenders'
    retrieval task: for every pair in a batch, the other items of the batch
    are the negatives of a softmax over dot products (optionally corrected by
    the items' sampling probability, "logQ correction", and with accidental
    hits of the same item removed). The trained tables are the CF embeddings.

    TFRS needs the legacy `tf_keras` (Keras 2), which requires
    `TF_USE_LEGACY_KERAS=1` before TensorFlow is imported and then changes
    `tf.keras` for the whole process. To keep the caller's Keras 3 untouched,
    `fit` trains in a child Python process (`ilm_keras/cf/_tfrs_worker.py`,
    started with that variable set only in the child's environment) and
    reads the tables back from a temporary `.npz` file. The caller's
    `os.environ` and imported modules are not changed.

    Repeated (user, item) interactions are kept as repeated training pairs.
    A user's vector comes from its training pairs only (no fold-in); users
    without training pairs keep their random initial vector.

    Args:
        factors: embedding dimension.
        epochs: passes over the training pairs.
        batch_size: pairs per batch (also the number of in-batch candidates).
        learning_rate: optimizer learning rate.
        optimizer: `"adagrad"` (the TFRS tutorials' choice) or `"adam"`.
        temperature: softmax temperature (dot products are divided by it).
        regularization: L2 weight on both embedding tables (0: none).
        remove_accidental_hits: mask in-batch negatives that are the
            positive item itself.
        logq_correction: subtract log(item frequency) from the logits, so
            popular items are not over-penalised as negatives.
        init_stddev: stddev of the normal initialisation.
        seed: seed of initialisation and shuffling (TF op determinism is
            enabled in the child, so equal seeds give equal tables on CPU).
        threads: TensorFlow intra- and inter-op threads in the child (None:
            TensorFlow's default, one per core). On a busy machine 1 can be
            much faster.
        devices: None (default) trains on one device. An int `N >= 1` splits
            the child's CPU into `N` logical devices and trains under
            `tf.distribute.MirroredStrategy` over them: every batch of
            `batch_size` pairs (the global batch) is split across the
            replicas, each replica's in-batch softmax still ranks against
            all `batch_size` candidates (gathered from every replica), and
            the replicas' gradients are summed, so the objective is the
            single-device one. The logical devices share the same cores and
            thread pools, so this measures the strategy's overhead (and
            exercises the multi-replica code path); it adds no compute.
        timeout: seconds to wait for the child (None: no limit).
        python: interpreter for the child (default `sys.executable`); it
            needs `tensorflow`, `tf_keras` and `tensorflow-recommenders`.

    Example:
    ```python
    mf = TFRSMatrixFactorization(factors=64, epochs=20)
    user_table, item_table = mf.fit(split.train_sequences, num_items=1349)
    emb = mf.to_embeddings(user_ids=data.user_ids, item_ids=data.item_ids)
    emb.save("ml100k_tfrs.npz")
    ```
    """

    def __init__(
        self,
        factors=64,
        epochs=20,
        batch_size=1024,
        learning_rate=0.1,
        optimizer="adagrad",
        temperature=1.0,
        regularization=0.0,
        remove_accidental_hits=True,
        logq_correction=False,
        init_stddev=0.1,
        seed=0,
        threads=None,
        devices=None,
        timeout=None,
        python=None,
    ):
        for name, value in (
            ("factors", factors),
            ("epochs", epochs),
            ("batch_size", batch_size),
        ):
            if int(value) != value or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive int; got {value}."
                )
        if optimizer not in ("adagrad", "adam"):
            raise ValueError(
                f"`optimizer` must be 'adagrad' or 'adam'; got {optimizer!r}."
            )
        for name, value in (
            ("learning_rate", learning_rate),
            ("temperature", temperature),
            ("init_stddev", init_stddev),
        ):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0; got {value}.")
        if not regularization >= 0:
            raise ValueError(
                f"`regularization` must be >= 0; got {regularization}."
            )
        self.factors = int(factors)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.optimizer = optimizer
        self.temperature = float(temperature)
        self.regularization = float(regularization)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.logq_correction = bool(logq_correction)
        self.init_stddev = float(init_stddev)
        self.seed = int(seed)
        if threads is not None and (int(threads) != threads or threads < 1):
            raise ValueError(
                f"`threads` must be a positive int; got {threads}."
            )
        self.threads = None if threads is None else int(threads)
        if devices is not None and (
            isinstance(devices, bool)
            or not isinstance(devices, (int, np.integer))
            or devices < 1
        ):
            raise ValueError(
                f"`devices` must be None (one device) or a positive int (the "
                f"number of logical CPU devices for MirroredStrategy); got "
                f"{devices!r}."
            )
        self.devices = None if devices is None else int(devices)
        self.timeout = timeout
        self.python = python or sys.executable
        self.user_table = None
        self.item_table = None
        self.loss_history = []
        self.versions = {}
        self.fit_seconds = None
        self.train_seconds = None
        self.num_replicas = None

    def get_config(self):
        return {
            "factors": self.factors,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer,
            "temperature": self.temperature,
            "regularization": self.regularization,
            "remove_accidental_hits": self.remove_accidental_hits,
            "logq_correction": self.logq_correction,
            "init_stddev": self.init_stddev,
            "seed": self.seed,
            "threads": self.threads,
            "devices": self.devices,
        }

    def fit(self, interactions, num_users=None, num_items=None):
        """Trains both towers in a child process.

        Args:
            interactions: one sequence of item indices per user, or a
                `scipy.sparse` matrix of integer counts; see
                `ilm_keras.cf.interaction_matrix`.
            num_users: number of users (default: from `interactions`).
            num_items: number of items (required for sequences).

        Returns:
            `(user_table, item_table)`, float32 `[num_users, factors]` and
            `[num_items, factors]`. Also sets `loss_history`, `versions`,
            `fit_seconds` (wall time of this call: the child's start and
            TensorFlow import included), `train_seconds` (Keras `fit`
            alone, inside the child) and `num_replicas` (replicas the
            child trained with: 1 without `devices`).

        Raises:
            ValueError: on bad interactions (see `interaction_matrix`),
                non-integer counts, or no interactions at all.
            ImportError: if the child cannot import TensorFlow Recommenders.
            RuntimeError: if the child fails otherwise (its stderr is shown).
        """
        start = time.perf_counter()
        matrix = interaction_matrix(interactions, num_users, num_items)
        counts = matrix.data
        if not np.array_equal(counts, np.round(counts)):
            raise ValueError(
                "TFRS trains on repeated (user, item) pairs, so the matrix "
                "must hold integer counts."
            )
        if matrix.nnz == 0:
            raise ValueError("There are no interactions to train on.")
        repeats = counts.astype(np.int64)
        users = np.repeat(
            np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)),
            repeats,
        )
        items = np.repeat(matrix.indices.astype(np.int64), repeats)
        with tempfile.TemporaryDirectory(prefix="ilm_tfrs_") as tmp:
            in_path = os.path.join(tmp, "input.npz")
            out_path = os.path.join(tmp, "output.npz")
            np.savez(
                in_path,
                users=users,
                items=items,
                num_users=np.int64(matrix.shape[0]),
                num_items=np.int64(matrix.shape[1]),
                config=np.array(json.dumps(self.get_config())),
            )
            self._run_worker(in_path, out_path)
            with np.load(out_path, allow_pickle=False) as out:
                self.user_table = out["user_table"]
                self.item_table = out["item_table"]
                self.loss_history = out["loss_history"].tolist()
                self.train_seconds = float(out["train_seconds"])
                self.num_replicas = int(out["num_replicas"])
                self.versions = json.loads(str(out["versions"]))
        expected = (
            (matrix.shape[0], self.factors),
            (matrix.shape[1], self.factors),
        )
        if (self.user_table.shape, self.item_table.shape) != expected:
            raise RuntimeError(
                f"The TFRS worker returned tables of shapes "
                f"{self.user_table.shape}, {self.item_table.shape}; expected "
                f"{expected[0]}, {expected[1]}."
            )
        if not (
            np.isfinite(self.user_table).all()
            and np.isfinite(self.item_table).all()
        ):
            raise FloatingPointError(
                "TFRS training produced non-finite embeddings; lower "
                "`learning_rate`."
            )
        self.fit_seconds = time.perf_counter() - start
        return self.user_table, self.item_table

    def _run_worker(self, in_path, out_path):
        env = dict(os.environ)
        env["TF_USE_LEGACY_KERAS"] = "1"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        command = [
            self.python,
            WORKER_PATH,
            "--input",
            in_path,
            "--output",
            out_path,
        ]
        try:
            proc = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(
                f"The TFRS worker did not finish within {self.timeout} s."
            ) from e
        if proc.returncode == _tfrs_worker.EXIT_MISSING_PACKAGE:
            raise ImportError(proc.stderr.strip().splitlines()[-1])
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
            raise RuntimeError(
                f"The TFRS worker failed with exit code {proc.returncode}:\n"
                f"{tail}"
            )

    def to_embeddings(self, user_ids=None, item_ids=None):
        """Wraps the trained tables in a `CFEmbeddings` (method `"tfrs_mf"`)."""
        if self.item_table is None:
            raise ValueError("The model is not trained; call `fit` first.")
        config = dict(self.get_config(), versions=self.versions)
        return CFEmbeddings(
            user_table=self.user_table,
            item_table=self.item_table,
            user_ids=user_ids,
            item_ids=item_ids,
            method="tfrs_mf",
            config=config,
        )
