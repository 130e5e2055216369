"""The JSON API of `ilm-serve` through a real HTTP client (urllib) against
uvicorn on a free loopback port."""

import concurrent.futures
import http.client
import json
import urllib.error
import urllib.request

from tiny_chat_preset import ITEMS
from tiny_chat_preset import TITLES


def request(url, path, body=None, raw=None, method=None, timeout=60):
    """`(status, json)`; `raw` bytes are sent as they are."""
    data = raw if raw is not None else (
        None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        url + path, data=data, method=method or ("POST" if data is not None else "GET"),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_health_and_search(server_url):
    status, body = request(server_url, "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["items"] == len(ITEMS) and body["max_k"] == 5
    status, body = request(server_url, "/items?q=GALAXY&limit=2")
    assert status == 200
    assert [i["title"] for i in body["items"]] == TITLES[10:12]
    assert body["items"][0] == {"id": ITEMS[10], "name": f"item_{ITEMS[10]}",
                                "title": TITLES[10],
                                "text": body["items"][0]["text"]}
    status, body = request(server_url, "/items?q=heat")
    assert [i["title"] for i in body["items"]] == ["Heat (1986)", "Heat (1995)"]


def test_recommend_matches_the_model_called_directly(server_url, chat_model):
    history = ["1001", "item_1004", "Dragon Night"]
    status, body = request(server_url, "/recommend",
                           {"history": history, "k": 4, "exclude": ["1002"]})
    assert status == 200, body
    direct, dropped = chat_model.recommend(["1001", "1004", "1007"], k=4,
                                           exclude=["1002"])
    assert [i["id"] for i in body["items"]] == [i["id"] for i in direct]
    assert body["history"] == ["1001", "1004", "1007"] and body["dropped"] == []
    assert not {i["id"] for i in body["items"]} & {"1001", "1002", "1004", "1007"}
    for entry in body["items"]:
        assert entry["title"] == TITLES[ITEMS.index(entry["id"])]
        assert isinstance(entry["score"], float)
    status, body = request(server_url, "/recommend", {"user": "user_2"})
    assert status == 200 and len(body["items"]) == 3 and body["user"] == "2"


def test_describe(server_url, chat_model):
    status, body = request(server_url, "/describe", {"item": "harbor electric"})
    assert status == 200, body
    assert body["item"]["id"] == "1001"
    assert body["description"] == chat_model.describe("1001")


def test_chat_keeps_the_conversation_across_turns(server_url):
    status, first = request(server_url, "/chat", {
        "message": "recommend something after Harbor Electric and Dragon Night"})
    assert status == 200, first
    assert first["new"] and first["intent"] == "recommend"
    conversation = first["conversation_id"]
    assert first["history"] == ["1001", "1007"]
    assert [i["id"] for i in first["history_items"]] == ["1001", "1007"]
    status, second = request(server_url, "/chat", {
        "message": "what is the first one about?", "conversation_id": conversation})
    assert status == 200 and not second["new"]
    assert second["intent"] == "describe"
    assert second["items"][0]["id"] == first["items"][0]["id"]
    assert second["history"] == ["1001", "1007", first["items"][0]["id"]]
    # Another conversation does not see this one's history.
    status, other = request(server_url, "/chat", {"message": "/history"})
    assert other["text"] == "The history is empty."
    status, third = request(server_url, "/chat", {
        "message": "/reset", "conversation_id": conversation})
    assert third["history"] == []
    status, reply = request(server_url, "/chat", {"message": "recommend after Heat"})
    assert status == 200 and reply["intent"] == "clarify"
    assert len(reply["suggestions"][0]["candidates"]) == 2


def test_bad_input_gets_a_4xx_with_a_message(server_url):
    cases = [
        ("/recommend", b"{not json", 400, "Malformed JSON"),
        ("/recommend", b"", 400, "empty"),
        ("/recommend", b"[1, 2]", 422, "JSON object"),
        ("/chat", "\xff".encode("latin-1"), 400, "Malformed JSON"),
        ("/recommend", {"history": ["no such title"]}, 422, "Unknown or ambiguous"),
        ("/recommend", {"history": ["Heat"]}, 422, "Unknown or ambiguous"),
        ("/recommend", {"history": "1001"}, 422, "must be a list"),
        ("/recommend", {"history": [{"a": 1}]}, 422, "string or an integer"),
        ("/recommend", {"user": "999"}, 422, "Unknown user"),
        ("/recommend", {}, 422, "history"),
        ("/recommend", {"history": ["1001"], "k": 0}, 422, "1..5"),
        ("/recommend", {"history": ["1001"], "k": 6}, 422, "1..5"),
        ("/recommend", {"history": ["1001"], "k": "3"}, 422, "integer"),
        ("/recommend", {"history": ["1001"], "k": True}, 422, "integer"),
        ("/recommend", {"history": ["1001"], "kk": 3}, 422, "Unknown field"),
        ("/describe", {"item": "item_99999"}, 422, "Unknown or ambiguous"),
        ("/describe", {}, 422, "Missing field"),
        ("/chat", {"message": "x" * 501}, 413, "limit is 500"),
        ("/chat", {"message": "hi " * 6000}, 413, "limit is 16384 bytes"),
        ("/chat", {"message": 5}, 422, "must be a string"),
        ("/chat", {"message": "hi", "conversation_id": "../etc"}, 422, "conversation_id"),
        ("/items?limit=0", None, 422, "1..100"),
        ("/items?limit=ten", None, 422, "integer"),
        ("/nowhere", None, 404, "Not Found"),
    ]
    for path, body, expected, words in cases:
        raw = body if isinstance(body, bytes) else None
        status, answer = request(server_url, path, None if raw is not None else body,
                                 raw=raw)
        assert status == expected, (path, body, status, answer)
        assert words in answer["error"], (path, body, answer)
    status, answer = request(server_url, "/recommend", method="GET")
    assert status == 405
    # A chunked body (no Content-Length) is cut off at the limit too.
    host, port = server_url.rsplit("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/chat", body=iter([b'{"message": "'] + [b"x" * 4096] * 5),
                 headers={"Content-Type": "application/json",
                          "Transfer-Encoding": "chunked"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    assert "limit is 16384 bytes" in json.load(response)["error"]
    conn.close()
    # A message that names unknown items is an answer, not an error.
    status, answer = request(server_url, "/chat", {"message": "describe Xyzzy"})
    assert status == 200 and answer["intent"] == "clarify"


def test_fifty_concurrent_requests_are_all_answered_correctly(server_url, chat_model):
    histories = [[ITEMS[i % len(ITEMS)], ITEMS[(3 * i + 1) % len(ITEMS)]]
                 for i in range(25)]
    expected = [[i["id"] for i in chat_model.recommend(h, k=3)[0]] for h in histories]

    def recommend(n):
        status, body = request(server_url, "/recommend", {"history": histories[n]})
        return status, [i["id"] for i in body["items"]]

    def chat(n):
        status, body = request(server_url, "/chat", {
            "message": f"recommend something after item_{histories[n][0]} "
                       f"and item_{histories[n][1]}",
            "conversation_id": f"concurrent-{n}"})
        return status, [i["id"] for i in body["items"]]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(recommend, n) for n in range(25)]
        futures += [pool.submit(chat, n) for n in range(25)]
        results = [f.result(timeout=300) for f in futures]
    for n, (status, items) in enumerate(results):
        assert status == 200
        assert items == expected[n % 25], n
