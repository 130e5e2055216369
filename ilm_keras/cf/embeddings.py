"""`CFEmbeddings`: trained user and item tables and their file format."""

import json
import os

import numpy as np

FORMAT_VERSION = 1
_KEYS = (
    "format_version",
    "user_table",
    "item_table",
    "user_ids",
    "item_ids",
    "method",
    "config",
)


def check_table(table, name, dim=None, dim_of="the item encoder"):
    """A CF table as float32 numpy `[rows, dim]`, validated: the one check
    every CF table passes (`CFEmbeddings`, `make_phase1_dataset`,
    `ItemLanguageModelBackbone`).

    Args:
        table: array-like (numpy, a backend tensor or a Keras variable).
        name: the argument's name, for error messages.
        dim: optional int, the dimension the table must have.
        dim_of: what expects `dim`, for the error message.

    Returns:
        The table as a float32 numpy array.

    Raises:
        ValueError: if the table is not 2-D, not floating-point (integer
            ids passed as embeddings), holds NaN or inf, or has another
            dimension than `dim`.

    Example:
    ```python
    items = check_table(item_table, "item_embeddings", dim=32)
    ```
    """
    if not isinstance(table, np.ndarray):
        if hasattr(table, "shape") and hasattr(table, "dtype"):
            import keras  # Only for backend tensors and variables.

            table = keras.ops.convert_to_numpy(table)
        table = np.asarray(table)
    if table.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array [rows, dim], got shape {table.shape}."
        )
    if not np.issubdtype(table.dtype, np.floating):
        raise ValueError(
            f"`{name}` must hold floating-point values, got dtype {table.dtype}."
        )
    table = table.astype(np.float32, copy=False)
    bad = ~np.isfinite(table)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"`{name}` holds NaN or inf in {len(rows)} row(s), first rows: "
            f"{rows[:10].tolist()}. CF embeddings must be finite."
        )
    if dim is not None and table.shape[1] != dim:
        raise ValueError(
            f"`{name}` has dimension {table.shape[1]} but {dim_of} expects "
            f"cf_dim={dim}."
        )
    return table


def _as_ids(name, ids, rows):
    ids = [str(i) for i in ids]
    if len(ids) != rows:
        raise ValueError(
            f"`{name}` has {len(ids)} ids for a table of {rows} rows; "
            "there must be one id per row."
        )
    if len(set(ids)) != len(ids):
        seen, dup = set(), None
        for i in ids:
            if i in seen:
                dup = i
                break
            seen.add(i)
        raise ValueError(f"`{name}` contains the id {dup!r} more than once.")
    return ids


class CFEmbeddings:
    """User and item embedding tables from a collaborative-filtering model.

    Row `u` of `user_table` belongs to user index `u` (raw id `user_ids[u]`),
    row `i` of `item_table` to item index `i` (raw id `item_ids[i]`), the same
    dense indices as `ilm_keras.data.InteractionData`. The score of a
    (user, item) pair is the dot product of their rows.

    File format (`save` / `load`): one uncompressed NumPy `.npz` archive,
    readable without pickle, with the arrays

    - `format_version`: int64 scalar, currently 1.
    - `user_table`: float32 `[num_users, dim]`.
    - `item_table`: float32 `[num_items, dim]`.
    - `user_ids`, `item_ids`: unicode string arrays of the raw ids.
    - `method`: unicode scalar, e.g. `"ials"` or `"tfrs_mf"`.
    - `config`: unicode scalar, the JSON encoding of `config`.

    Tables are converted to float32 on construction; non-finite values,
    mismatched dimensions, missing or duplicated ids raise `ValueError`.

    Args:
        user_table: float array `[num_users, dim]`.
        item_table: float array `[num_items, dim]`.
        user_ids: raw user ids, one per row of `user_table`. Defaults to
            `"0".."num_users-1"`.
        item_ids: raw item ids, one per row of `item_table`. Defaults to
            `"0".."num_items-1"`.
        method: a short name of the method that produced the tables.
        config: a JSON-serializable dict of the hyperparameters used.

    Example:
    ```python
    emb = CFEmbeddings(
        user_table=np.random.rand(3, 8),
        item_table=np.random.rand(5, 8),
        method="ials",
        config={"factors": 8},
    )
    path = emb.save("/tmp/ml100k_ials.npz")
    same = CFEmbeddings.load(path)
    same.item_table.shape  # (5, 8)
    ```
    """

    def __init__(
        self,
        user_table,
        item_table,
        user_ids=None,
        item_ids=None,
        method="unknown",
        config=None,
    ):
        self.user_table = check_table(user_table, "user_table")
        self.item_table = check_table(item_table, "item_table")
        if self.user_table.shape[1] != self.item_table.shape[1]:
            raise ValueError(
                "`user_table` and `item_table` must have the same embedding "
                f"dim; got {self.user_table.shape[1]} and "
                f"{self.item_table.shape[1]}."
            )
        if user_ids is None:
            user_ids = range(self.user_table.shape[0])
        if item_ids is None:
            item_ids = range(self.item_table.shape[0])
        self.user_ids = _as_ids("user_ids", user_ids, self.user_table.shape[0])
        self.item_ids = _as_ids("item_ids", item_ids, self.item_table.shape[0])
        self.method = str(method)
        self.config = dict(config or {})
        try:
            json.dumps(self.config)
        except TypeError as e:
            raise ValueError(f"`config` must be JSON-serializable: {e}") from e

    @property
    def num_users(self):
        return self.user_table.shape[0]

    @property
    def num_items(self):
        return self.item_table.shape[0]

    @property
    def dim(self):
        return self.user_table.shape[1]

    def save(self, path):
        """Writes the tables to `path` (`.npz` is appended if missing).

        Returns:
            The path written, as a string.
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        np.savez(
            path,
            format_version=np.int64(FORMAT_VERSION),
            user_table=self.user_table,
            item_table=self.item_table,
            user_ids=np.array(self.user_ids, dtype=np.str_),
            item_ids=np.array(self.item_ids, dtype=np.str_),
            method=np.array(self.method, dtype=np.str_),
            config=np.array(json.dumps(self.config, sort_keys=True)),
        )
        return path

    @classmethod
    def load(cls, path):
        """Reads tables written by `save`, validating every field.

        Raises:
            FileNotFoundError: if `path` does not exist.
            ValueError: if the file is not a valid CF embedding archive (a
                missing key, a wrong dtype or shape, non-finite values, ids
                that do not match the tables). The message names the file and
                the problem.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No CF embedding file at {path!r}.")
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name.
            raise ValueError(
                f"{path}: not a readable .npz archive ({e})."
            ) from e
        with archive:
            missing = [k for k in _KEYS if k not in archive.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}.")
            try:
                fields = {k: archive[k] for k in _KEYS}
            except ValueError as e:
                raise ValueError(
                    f"{path}: an array needs pickle to load; this format "
                    f"stores none ({e})."
                ) from e
        version = int(fields["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format_version {version}; this code reads "
                f"version {FORMAT_VERSION}."
            )
        for key in ("user_table", "item_table"):
            if fields[key].dtype != np.float32:
                raise ValueError(
                    f"{path}: `{key}` has dtype {fields[key].dtype}; "
                    "expected float32."
                )
        try:
            config = json.loads(str(fields["config"]))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: `config` is not valid JSON ({e})."
            ) from e
        try:
            return cls(
                user_table=fields["user_table"],
                item_table=fields["item_table"],
                user_ids=fields["user_ids"].tolist(),
                item_ids=fields["item_ids"].tolist(),
                method=str(fields["method"]),
                config=config,
            )
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def __repr__(self):
        return (
            f"CFEmbeddings(method={self.method!r}, num_users={self.num_users}, "
            f"num_items={self.num_items}, dim={self.dim})"
        )
