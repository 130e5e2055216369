import os
import sys

import pytest

# The tiny preset of the chat tests (one per process, shared).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "chat"))
from tiny_chat_preset import build_tiny_preset  # noqa: E402
from tiny_chat_preset import tiny_chat_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    return build_tiny_preset(tmp_path_factory.mktemp("ilm_chat_preset"))


@pytest.fixture(scope="session")
def chat_model(tiny_preset):
    return tiny_chat_model(tiny_preset)


@pytest.fixture(scope="session")
def server_url(chat_model):
    """`http://127.0.0.1:<free port>` of the app under uvicorn, in a thread."""
    import json
    import socket
    import threading
    import time
    import urllib.request

    import uvicorn

    from ilm_keras.serve.app import create_app

    app = create_app(chat_model, max_conversations=64, max_message_chars=500,
                     max_body_bytes=16384)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                assert json.load(response)["status"] == "ok"
            break
        except OSError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("The test server did not start.")
            time.sleep(0.2)
    yield url
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()
