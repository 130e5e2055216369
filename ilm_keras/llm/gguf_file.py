"""Read metadata and dequantized tensors from a GGUF file."""

import os

import numpy as np

_MISSING = object()


def _import_gguf():
    try:
        import gguf
    except ImportError as e:
        raise ImportError(
            "Reading GGUF files needs the `gguf` package. Install it with "
            "`pip install gguf`."
        ) from e
    return gguf


class GGUFFile:
    """A GGUF file opened for conversion: metadata and float32 tensors.

    Wraps `gguf.GGUFReader` (memory-mapped, nothing is read until asked for)
    and turns every failure into an error that names the file and the
    metadata key or tensor involved. Tensors come back dequantized to
    float32 in the row-major layout PyTorch and llama.cpp's converters use:
    a GGUF tensor with dimensions `[ne0, ne1]` (`ne0` fastest) is returned
    with NumPy shape `(ne1, ne0)`, i.e. `(out_features, in_features)` for a
    linear layer's weight.

    The object records which tensors were read, so a converter can refuse
    a file that holds tensors it does not understand (see
    `check_all_tensors_used`) instead of silently dropping them.

    Args:
        path: str. Path of the `.gguf` file.

    Example:

    ```python
    f = GGUFFile("SmolLM2-135M-Instruct.Q4_1.gguf")
    f.architecture                        # "llama"
    f.metadata("llama.block_count")       # 30
    f.tensor("token_embd.weight").shape   # (49152, 576)
    ```
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"GGUF file not found: '{self.path}'.")
        gguf = _import_gguf()
        self._gguf = gguf
        try:
            self._reader = gguf.GGUFReader(self.path, "r")
        except Exception as e:
            raise ValueError(
                f"'{self.path}' could not be read as a GGUF file: {e}"
            ) from e
        self._tensors = {t.name: t for t in self._reader.tensors}
        self._used = set()

    @property
    def architecture(self):
        """The `general.architecture` string, e.g. `"llama"` or `"gemma3"`."""
        return self.metadata("general.architecture")

    @property
    def tensor_names(self):
        """Names of all tensors in the file, in file order."""
        return list(self._tensors)

    def has_metadata(self, key):
        """Whether the metadata key is present."""
        return key in self._reader.fields

    def metadata(self, key, default=_MISSING):
        """Value of a metadata key as a Python scalar, string or list.

        Args:
            key: str. The GGUF key, e.g. `"llama.block_count"`.
            default: value returned when the key is absent. When not given,
                an absent key raises a `KeyError` naming the key and file.
        """
        field = self._reader.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise KeyError(
                    f"GGUF file '{self.path}' has no metadata key '{key}', "
                    "which the converter needs."
                )
            return default
        return field.contents()

    def has_tensor(self, name):
        """Whether a tensor with this name is in the file."""
        return name in self._tensors

    def tensor_type(self, name):
        """The `gguf.GGMLQuantizationType` of a tensor, e.g. `Q4_1`."""
        return self._get(name).tensor_type

    def tensor(self, name, expected_shape=None):
        """Read, dequantize and return a tensor as a float32 NumPy array.

        Args:
            name: str. The GGUF tensor name, e.g. `"blk.0.attn_q.weight"`.
            expected_shape: optional tuple. The NumPy shape the converter
                expects; a different shape raises a `ValueError` naming the
                tensor, the file and both shapes.
        """
        info = self._get(name)
        try:
            array = self._gguf.quants.dequantize(info.data, info.tensor_type)
        except NotImplementedError as e:
            raise NotImplementedError(
                f"Tensor '{name}' in '{self.path}' uses the quantization type "
                f"{info.tensor_type.name}, which the installed `gguf` package "
                f"cannot dequantize ({e}). Try upgrading `gguf`."
            ) from e
        # GGUF lists dimensions fastest-first; NumPy wants them slowest-first.
        shape = tuple(int(d) for d in reversed(info.shape.tolist()))
        array = np.asarray(array, dtype=np.float32).reshape(shape)
        if expected_shape is not None and shape != tuple(expected_shape):
            raise ValueError(
                f"Tensor '{name}' in '{self.path}' has shape {shape}, but the "
                f"model configuration read from the file's metadata expects "
                f"{tuple(expected_shape)}."
            )
        self._used.add(name)
        return array

    def check_all_tensors_used(self):
        """Raise if a tensor was never read by the converter.

        A tensor the converter does not know (an attention bias, a rope
        frequency table, an extra norm) changes the model's output; loading
        the rest without it would give a silently wrong model.
        """
        unused = [n for n in self._tensors if n not in self._used]
        if unused:
            shown = ", ".join(f"'{n}'" for n in unused[:10])
            more = f" and {len(unused) - 10} more" if len(unused) > 10 else ""
            raise ValueError(
                f"GGUF file '{self.path}' holds {len(unused)} tensor(s) that "
                f"the '{self.architecture}' converter does not use: "
                f"{shown}{more}. This model variant is not supported."
            )

    def _get(self, name):
        info = self._tensors.get(name)
        if info is None:
            raise KeyError(
                f"GGUF file '{self.path}' has no tensor '{name}' (it has "
                f"{len(self._tensors)} tensors), which the "
                f"'{self.metadata('general.architecture', '?')}' converter "
                "needs."
            )
        return info
