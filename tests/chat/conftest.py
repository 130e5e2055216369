import pytest

from tiny_chat_preset import build_tiny_preset
from tiny_chat_preset import tiny_chat_model


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    return build_tiny_preset(tmp_path_factory.mktemp("ilm_chat_preset"))


@pytest.fixture(scope="session")
def chat_model(tiny_preset):
    return tiny_chat_model(tiny_preset)
