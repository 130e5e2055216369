"""Files that a kill cannot leave half written, and clear errors for bad ones.

Every writer here writes to a temporary file in the destination's folder,
flushes it to disk and renames it over the destination (`os.replace`, atomic
on POSIX file systems): a process killed at any moment (`kill -9`, a
preempted machine) leaves either the old file or the new one, never a
truncated one, plus at most a stray `.tmp-<pid>-<name>` file that the next
write of the same name does not read.

Every reader raises `CorruptFileError` for a file that is truncated or
corrupt anyway (copied half-way, written by a tool that is not atomic, a
full disk): the error names the file and what to delete, instead of a crash
deep inside `zipfile` or `h5py`, and instead of a silent restart from
scratch.
"""

import json
import os
import shutil
import zipfile

import numpy as np


class CorruptFileError(RuntimeError):
    """A file the pipeline wrote cannot be read back.

    Attributes:
        path: the file.
        delete: the paths to delete before rerunning.
    """

    def __init__(self, path, reason, delete=None, consequence=None,
                 problem=None):
        self.path = str(path)
        self.delete = [str(p) for p in (delete or [path])]
        consequence = consequence or "the rerun computes it again"
        problem = problem or (
            "it is truncated or corrupt, or was not written by this code")
        super().__init__(
            f"Cannot read {self.path}: {problem} ({reason}). Delete "
            f"{' and '.join(self.delete)} and rerun the same command; "
            f"{consequence}."
        )


def _temporary_path(path):
    # Same folder (a rename does not cross file systems) and the same name
    # ending, which writers check (`.keras`, `.weights.h5`, `.npz`).
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".tmp-{os.getpid()}-{name}")


def _fsync(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Writes `path` all at once: `write(tmp)` writes a temporary file in the
    same folder, which is then flushed and renamed to `path`.

    Args:
        path: the destination.
        write: callable `tmp_path -> None` that writes the whole file to
            `tmp_path` (which ends like `path`).

    Example:
    ```python
    atomic_write("model.keras", model.save)
    ```
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _temporary_path(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync(directory, directory=True)


def write_text(path, text):
    """`text` to `path`, atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path, value, **kwargs):
    """`json.dump(value)` to `path`, atomically (`kwargs` go to `json.dump`)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, **kwargs)

    atomic_write(path, write)


def write_npz(path, **arrays):
    """`np.savez(path, **arrays)`, atomically."""

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: numpy adds no ".npz"
            np.savez(f, **arrays)

    atomic_write(path, write)


def save_model(model, path):
    """`model.save(path)` (a `.keras` file), atomically."""
    atomic_write(path, model.save)


def save_weights(model, path):
    """`model.save_weights(path)` (a `.weights.h5` file), atomically."""
    atomic_write(path, model.save_weights)


def save_preset(model, path):
    """`model.save_to_preset(path)` (a keras-hub preset folder), all at once.

    The preset is written to a temporary folder beside `path`, which then
    replaces `path` (a preset already there is removed after the swap), so
    a kill leaves either the old preset or the new one, never half of one.

    Example:
    ```python
    save_preset(ilm, "runs/quickstart/preset")
    ```
    """
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _temporary_path(path)
    old = tmp + "-old"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        model.save_to_preset(tmp)
        for name in os.listdir(tmp):
            if os.path.isfile(os.path.join(tmp, name)):
                _fsync(os.path.join(tmp, name))
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    _fsync(os.path.dirname(path), directory=True)


def _missing(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist.")


def read_json(path, delete=None, consequence=None):
    """`json.load` of `path`; a truncated or corrupt file raises
    `CorruptFileError` naming it (and `delete`, the files to delete)."""
    _missing(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(path, f"{type(error).__name__}: {error}",
                               delete, consequence) from error


def read_npz(path, keys=None, delete=None, consequence=None):
    """Every array of the `.npz` file `path` (or `keys`), read in full, so a
    truncated or corrupt file raises `CorruptFileError` here.

    Returns:
        dict of NumPy arrays.
    """
    _missing(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files) if keys is None else list(keys)
            missing = [k for k in names if k not in f.files]
            if missing:
                raise KeyError(f"no array named {missing}")
            return {k: np.asarray(f[k]) for k in names}
    except (OSError, ValueError, KeyError, EOFError,
            zipfile.BadZipFile) as error:
        raise CorruptFileError(path, f"{type(error).__name__}: {error}",
                               delete, consequence) from error


def check_zip(path, delete=None, consequence=None):
    """Raises `CorruptFileError` unless `path` is a complete zip archive (a
    `.keras` file) whose every member passes its CRC check."""
    _missing(path)
    try:
        with zipfile.ZipFile(path) as f:
            bad = f.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad!r} fails its CRC check")
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise CorruptFileError(path, f"{type(error).__name__}: {error}",
                               delete, consequence) from error


def check_h5(path, delete=None, consequence=None):
    """Raises `CorruptFileError` unless every dataset of the HDF5 file
    `path` (a `.weights.h5` file) can be read."""
    import h5py

    _missing(path)

    def read(name, node):
        if isinstance(node, h5py.Dataset):
            node[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise CorruptFileError(path, f"{type(error).__name__}: {error}",
                               delete, consequence) from error


def load_model(path, delete=None, consequence=None, **kwargs):
    """`keras.saving.load_model(path)` after `check_zip`: a truncated or
    corrupt `.keras` file raises `CorruptFileError` naming it."""
    import keras

    check_zip(path, delete, consequence)
    try:
        return keras.saving.load_model(path, **kwargs)
    except (OSError, ValueError, KeyError, EOFError,
            zipfile.BadZipFile) as error:
        raise CorruptFileError(path, f"{type(error).__name__}: {error}",
                               delete, consequence) from error


def load_weights(model, path, delete=None, consequence=None):
    """`model.load_weights(path)` after `check_h5`: a truncated or corrupt
    `.weights.h5` file raises `CorruptFileError` naming it."""
    check_h5(path, delete, consequence)
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise CorruptFileError(path, f"{type(error).__name__}: {error}",
                               delete, consequence) from error
