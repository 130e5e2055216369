"""The ASGI app of `ilm-serve`: a JSON API and one HTML page over one model.

Endpoints (JSON in and out; errors are `{"error": message}` with a 4xx
status, never a 500 for bad input):

- `GET /` the chat page (`static/index.html`; no external files).
- `GET /health` `{"status": "ok", "items": ..., "users": ..., ...}`.
- `GET /items?q=harbor&limit=10` title search: `{"items": [item, ...]}`.
- `POST /recommend` `{"history": [ids or titles], "user": id, "k": 10,
  "exclude": [ids or titles]}` (a history or a user, or both) ->
  `{"items": [item with score, ...], "history": [used], "dropped": [...]}`.
- `POST /describe` `{"item": id or title}` -> `{"item": item,
  "description": text}`.
- `POST /chat` `{"message": text, "conversation_id": optional}` ->
  `{"conversation_id": id, "text": ..., "items": [...], ...}` (the
  `Reply` fields); the conversation keeps its history across requests.

An item is `{"id", "name", "title", "text"}` (`Catalogue.describe`).

Concurrency: one `ChatModel` (one lock around every model call, run in
Starlette's thread pool so the event loop stays free), one lock per
conversation, at most `max_pending` model requests queued (503 beyond),
conversations bounded in number (the least recently used goes first) and
age.
"""

import collections
import importlib.resources
import json
import re
import threading
import time
import uuid

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse
from starlette.responses import JSONResponse
from starlette.routing import Route

from ilm_keras.chat.conversation import Conversation
from ilm_keras.chat.catalogue import Unresolved

_CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_LIST = 1000  # items in a `history` / `exclude` list
MAX_QUERY_CHARS = 200


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a message for people.

    Args:
        status: the HTTP status (4xx, or 503 when busy).
        message: what is wrong and how to fix it.
        **extra: more JSON fields (e.g. `suggestions`).
    """

    def __init__(self, status, message, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class ConversationStore:
    """Conversations by id, bounded in number and in idle age.

    Args:
        make: callable returning a new `Conversation`.
        max_conversations: the most kept; a new one evicts the least
            recently used.
        max_age_s: a conversation idle this long is forgotten.
        clock: seconds (for tests).

    Example:
    ```python
    store = ConversationStore(lambda: Conversation(chat_model))
    conversation_id, entry, new = store.get(None)
    ```
    """

    def __init__(self, make, max_conversations=1000, max_age_s=3600.0,
                 clock=time.monotonic):
        if max_conversations < 1 or max_age_s <= 0:
            raise ValueError("`max_conversations` must be >= 1 and `max_age_s` > 0.")
        self._make = make
        self.max_conversations = int(max_conversations)
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._entries = collections.OrderedDict()  # id -> [conv, lock, used]
        self._lock = threading.Lock()

    def __len__(self):
        with self._lock:
            return len(self._entries)

    def _expire(self, now):
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry[2] <= self.max_age_s:
                break
            del self._entries[key]

    def get(self, conversation_id):
        """`(id, (conversation, lock), new)` for an id (None: a new id).

        An unknown (or expired) id starts a new conversation under that id.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            if conversation_id is None:
                conversation_id = uuid.uuid4().hex
            entry = self._entries.get(conversation_id)
            new = entry is None
            if new:
                while len(self._entries) >= self.max_conversations:
                    self._entries.popitem(last=False)
                entry = [self._make(), threading.Lock(), now]
                self._entries[conversation_id] = entry
            entry[2] = now
            self._entries.move_to_end(conversation_id)
            return conversation_id, (entry[0], entry[1]), new

    def drop(self, conversation_id):
        with self._lock:
            self._entries.pop(conversation_id, None)


async def read_json(request, max_bytes):
    """The request's JSON object, or an `ApiError` (413, 400, 422)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared = int(declared)
        except ValueError:
            raise ApiError(400, "Bad Content-Length header.") from None
        if declared > max_bytes:
            raise ApiError(413, f"The request body has {declared} bytes; the "
                           f"limit is {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"The request body has over {max_bytes} "
                           f"bytes; the limit is {max_bytes} bytes.")
    if not body:
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, f"Malformed JSON: {error}.") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"The body must be a JSON object, got "
                       f"{type(data).__name__}.")
    return data


def _check_fields(data, allowed, required=()):
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(422, f"Unknown field(s) {unknown}; expected "
                       f"{sorted(allowed)}.")
    missing = [f for f in required if data.get(f) is None]
    if missing:
        raise ApiError(422, f"Missing field(s) {missing}.")


def _id_text(value, what):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError(422, f"{what} must be a string or an integer, got "
                       f"{json.dumps(value)[:50]}.")
    text = str(value).strip()
    if not text or len(text) > MAX_QUERY_CHARS:
        raise ApiError(422, f"{what} must be 1 to {MAX_QUERY_CHARS} characters.")
    return text


def _suggestion(catalogue, unresolved):
    return {"name": unresolved.name, "ambiguous": unresolved.ambiguous,
            "candidates": [catalogue.describe(i) for i in unresolved.candidates]}


def _resolve_items(catalogue, values, what):
    if values is None:
        return []
    if not isinstance(values, list):
        raise ApiError(422, f"`{what}` must be a list of item ids or titles.")
    if len(values) > MAX_LIST:
        raise ApiError(413, f"`{what}` has {len(values)} items; the limit is "
                       f"{MAX_LIST}.")
    items, unresolved = [], []
    for n, value in enumerate(values):
        found = catalogue.resolve(_id_text(value, f"`{what}[{n}]`"))
        if isinstance(found, Unresolved):
            unresolved.append(found)
        else:
            items.append(found)
    if unresolved:
        raise ApiError(
            422, f"Unknown or ambiguous item(s) in `{what}`: "
            + ", ".join(repr(u.name) for u in unresolved) + ".",
            suggestions=[_suggestion(catalogue, u) for u in unresolved])
    return items


def create_app(chat_model, max_conversations=1000, conversation_max_age_s=3600.0,
               max_body_bytes=65536, max_message_chars=2000, max_pending=128):
    """The Starlette app serving `chat_model`.

    Args:
        chat_model: a loaded (and best warmed-up) `ChatModel`.
        max_conversations: conversations kept at once.
        conversation_max_age_s: idle seconds before a conversation is
            forgotten.
        max_body_bytes: larger request bodies get 413.
        max_message_chars: longer chat messages get 413.
        max_pending: model requests waiting at once; more get 503.

    Returns:
        A `starlette.applications.Starlette` app.

    Example:
    ```python
    app = create_app(ChatModel(ItemLanguageModel.from_preset(path)))
    uvicorn.run(app, host="127.0.0.1", port=8000)
    ```
    """
    catalogue = chat_model.catalogue
    store = ConversationStore(
        lambda: Conversation(chat_model, max_message_chars=max_message_chars),
        max_conversations=max_conversations, max_age_s=conversation_max_age_s)
    pending = {"count": 0}
    pending_lock = threading.Lock()
    page = importlib.resources.files("ilm_keras.serve").joinpath(
        "static/index.html").read_text(encoding="utf-8")

    async def call_model(fn, *args):
        with pending_lock:
            if pending["count"] >= max_pending:
                raise ApiError(503, f"The server is busy ({max_pending} "
                               "requests waiting); retry in a moment.")
            pending["count"] += 1
        try:
            return await run_in_threadpool(fn, *args)
        except ValueError as error:
            raise ApiError(422, str(error)) from None
        finally:
            with pending_lock:
                pending["count"] -= 1

    async def index(request):
        return HTMLResponse(page)

    async def health(request):
        import keras

        return JSONResponse({
            "status": "ok", "backend": keras.backend.backend(),
            "items": len(catalogue), "users": len(catalogue.user_ids),
            "k": chat_model.k, "max_k": chat_model.max_k,
            "max_message_chars": max_message_chars,
            "conversations": len(store)})

    async def items(request):
        query = request.query_params.get("q", "")
        if len(query) > MAX_QUERY_CHARS:
            raise ApiError(422, f"`q` is longer than {MAX_QUERY_CHARS} characters.")
        limit = request.query_params.get("limit", "10")
        try:
            limit = int(limit)
        except ValueError:
            raise ApiError(422, f"`limit` must be an integer, got {limit!r}.") from None
        if not 1 <= limit <= 100:
            raise ApiError(422, f"`limit` must be in 1..100, got {limit}.")
        found = catalogue.search(query, limit=limit)
        return JSONResponse({"query": query,
                             "items": [catalogue.describe(i) for i in found]})

    async def recommend(request):
        data = await read_json(request, max_body_bytes)
        _check_fields(data, ("history", "user", "k", "exclude"))
        history = _resolve_items(catalogue, data.get("history"), "history")
        exclude = _resolve_items(catalogue, data.get("exclude"), "exclude")
        user = data.get("user")
        if user is not None:
            user = _id_text(user, "`user`")
            if user.lower().startswith(catalogue.user_prefix):
                user = user[len(catalogue.user_prefix):]
            if not catalogue.has_user(user):
                raise ApiError(422, f"Unknown user {user!r}.")
        if not history and user is None:
            raise ApiError(422, "Give a non-empty `history` or a `user`.")
        k = data.get("k", chat_model.k)
        try:
            k = chat_model.check_k(k)
        except ValueError as error:
            raise ApiError(422, str(error)) from None
        ranked, dropped = await call_model(
            lambda: chat_model.recommend(history, user=user, k=k, exclude=exclude))
        return JSONResponse({
            "items": ranked, "k": k, "user": user,
            "history": [i for i in history if i not in dropped],
            "dropped": dropped})

    async def describe(request):
        data = await read_json(request, max_body_bytes)
        _check_fields(data, ("item",), required=("item",))
        (item,) = _resolve_items(catalogue, [data["item"]], "item")
        text = await call_model(chat_model.describe, item)
        return JSONResponse({"item": catalogue.describe(item), "description": text})

    async def chat(request):
        data = await read_json(request, max_body_bytes)
        _check_fields(data, ("message", "conversation_id"), required=("message",))
        message = data["message"]
        if not isinstance(message, str):
            raise ApiError(422, "`message` must be a string.")
        if len(message) > max_message_chars:
            raise ApiError(413, f"The message has {len(message)} characters; "
                           f"the limit is {max_message_chars}.")
        conversation_id = data.get("conversation_id")
        if conversation_id is not None and (
                not isinstance(conversation_id, str)
                or not _CONVERSATION_ID.match(conversation_id)):
            raise ApiError(422, "`conversation_id` must be 1 to 64 letters, "
                           "digits, '_' or '-'.")
        conversation_id, (conversation, lock), new = store.get(conversation_id)

        def respond():
            with lock:
                return conversation.respond(message)

        reply = await call_model(respond)
        if reply.intent == "quit":
            store.drop(conversation_id)
        return JSONResponse({
            "conversation_id": conversation_id, "new": new, **reply.to_dict(),
            "history_items": [catalogue.describe(i) for i in reply.history]})

    async def api_error(request, error):
        return JSONResponse({"error": error.message, **error.extra},
                            status_code=error.status)

    async def http_error(request, error):
        return JSONResponse({"error": error.detail}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    async def server_error(request, error):
        return JSONResponse({"error": f"Internal error: {type(error).__name__}."},
                            status_code=500)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/items", items, methods=["GET"]),
        Route("/recommend", recommend, methods=["POST"]),
        Route("/describe", describe, methods=["POST"]),
        Route("/chat", chat, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        ApiError: api_error, HTTPException: http_error, Exception: server_error})
    app.state.store = store
    app.state.chat_model = chat_model
    return app
