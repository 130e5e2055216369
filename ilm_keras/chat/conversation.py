"""Conversational recommendation over a trained ILM: the logic, no I/O.

A person types messages; `Conversation.respond(message)` returns a `Reply`.
Both front ends use it unchanged: the terminal chat (`ilm-chat`,
`python -m ilm_keras.chat`) prints `Reply.text`, the web server
(`ilm-serve`) returns `Reply.to_dict()` as JSON.

The pieces, top-down (one file each):

- `Catalogue` (`catalogue.py`): the items a preset knows (`preprocessor.item_ids` and its
  catalogue texts, e.g. `"Harbor Electric (1959). Genres: Animation,
  Comedy."`). It finds the items a message names, by id (`item_1014`) or by
  title (`"harbor electric"`, case- and punctuation-insensitive, the year
  optional), and answers "did you mean" for a name that matches several
  items or none.
- `ChatModel` (`chat_model.py`): one loaded `ItemLanguageModel` behind one lock (a server's
  requests are serialised), with the prompts the model was trained on:
  `SEQUENTIAL.template(0)` for "recommend after these items",
  `STRAIGHTFORWARD.template(0)` for "what should user_N watch next?", and
  `DESCRIBE_TEMPLATE` ("What is item_<id> about?") for descriptions. It
  fits a history into the model's `sequence_length` (oldest items dropped
  first) and calls the model with fixed shapes, so that after one warm-up
  no request compiles anything.
- `Conversation` (this file): the state of one conversation (the items mentioned so
  far, oldest first, the user if one was named, the last recommendations)
  and the intents: recommend, describe, a user's next item, more of the
  same, free text (passed to the model with titles turned into `item_<id>`
  mentions), and the commands `/help`, `/reset`, `/history`, `/quit`.
"""

import dataclasses
import re

from ilm_keras.chat.catalogue import Unresolved
from ilm_keras.chat.catalogue import strip_filler

HELP = """\
Name items by title ("Harbor Electric", the year is optional) or by id
(item_1014), and users by id (user_12). Try:
  recommend something after Harbor Electric, Dragon Night and Galaxy Lost
  what is Harbor Electric about?      (or: describe item_1014)
  what should user_12 watch next?
  more                                 (more recommendations, none repeated)
  describe the first one               (an item from the last list)
Anything else goes to the model as it is.
Items you mention stay in the history until /reset (the oldest are dropped
when the history outgrows what the model reads).
Commands: /help, /history, /reset, /quit"""

_ID_MENTION = re.compile(r"(?<![A-Za-z0-9_])(item|user)_([A-Za-z0-9]+)\b",
                         re.IGNORECASE)
_USER_WORDS = re.compile(r"(?<![A-Za-z0-9_])user\s+#?([0-9]+)\b", re.IGNORECASE)
_QUOTED = re.compile(r"\"([^\"]+)\"|\u201c([^\u201d]+)\u201d|(?<![A-Za-z])'([^']+)'")
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
             "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
             "last": -1}
_PRONOUN = re.compile(r"^(?:it|that|this|that one|this one|that item|this item)$",
                      re.IGNORECASE)
_RANKED = re.compile(
    r"^(?:the\s+)?(?:(?P<word>" + "|".join(_ORDINALS) + r")(?:\s+one)?|"
    r"(?:number|no\.?|#)\s*(?P<number>[0-9]+))$", re.IGNORECASE)
# Intents, tried in order; `arg` is where the items are named.
_DESCRIBE = re.compile(
    r"^(?:what(?:'s|\s+is|\s+are)\s+(?P<a>.+?)\s+about|describe\s+(?P<b>.+?)"
    r"|tell\s+me\s+(?:more\s+)?about\s+(?P<c>.+?)"
    r"|what\s+kind\s+of\s+(?:movie|film|item|thing)\s+is\s+(?P<d>.+?))"
    r"\s*[?.!]*$", re.IGNORECASE | re.S)
_MORE = re.compile(r"^(?:more|some\s+more|others?|something\s+else|"
                   r"anything\s+else|show\s+me\s+more|more\s+please|next)"
                   r"\s*[?.!]*$", re.IGNORECASE)
_RECOMMEND = re.compile(
    r"\b(?:recommend\w*|suggest\w*|what\s+(?:should|could|can|would)\s+"
    r"[\w ]{1,24}?\s*(?:watch|see|try|get|pick|like)|what\s+next|"
    r"watch\s+next|similar|"
    r"something\s+like|more\s+like|(?:movies?|films?|items?)\s+like|"
    r"i\s+(?:really\s+)?(?:liked|loved|enjoyed|watched|saw))\b", re.IGNORECASE)
# Where the list of items starts: the remainder after one of these words.
_RECOMMEND_ARG = re.compile(
    r"\b(?:after|like|similar\s+to|following|liked|loved|watched|saw|"
    r"enjoyed|given|based\s+on|fans\s+of)\s+", re.IGNORECASE)
_USER_NEXT = re.compile(r"\b(?:next|watch|recommend\w*|suggest\w*|like|want|"
                        r"pick|choose|see)\b", re.IGNORECASE)

@dataclasses.dataclass
class Reply:
    """One answer of the assistant.

    Attributes:
        text: what to show the person (several lines at most).
        intent: `"recommend"`, `"describe"`, `"user"`, `"free"`,
            `"clarify"` (a name matched several items or none), `"help"`,
            `"history"`, `"reset"`, `"quit"` or `"error"`.
        items: recommended (or described) items, dicts with `id`, `name`,
            `title`, `text` (and `score` for recommendations).
        suggestions: for `"clarify"`: dicts `{"name": typed,
            "ambiguous": bool, "candidates": [item dicts]}`.
        notices: extra lines (items dropped from the history, ...).
        history: the conversation's item ids after this turn, oldest first.
        user: the conversation's user id, or None.
    """

    text: str
    intent: str
    items: list = dataclasses.field(default_factory=list)
    suggestions: list = dataclasses.field(default_factory=list)
    notices: list = dataclasses.field(default_factory=list)
    history: list = dataclasses.field(default_factory=list)
    user: str = None

    def to_dict(self):
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


class Conversation:
    """One conversation with the model: its history and its intents.

    Not thread-safe by itself: a server keeps one per conversation id and
    serialises its turns (`ChatModel` serialises the model calls).

    Args:
        chat_model: a `ChatModel`.
        k: recommendations per answer (default `chat_model.k`).
        max_message_chars: longer messages are refused with a reply that
            says so.

    Example:
    ```python
    conversation = Conversation(ChatModel(model))
    print(conversation.respond("recommend something after item_1014").text)
    print(conversation.respond("what is the first one about?").text)
    ```
    """

    def __init__(self, chat_model, k=None, max_message_chars=2000):
        self.chat_model = chat_model
        self.catalogue = chat_model.catalogue
        self.k = chat_model.check_k(chat_model.k if k is None else k)
        self.max_message_chars = int(max_message_chars)
        self.reset()

    def reset(self):
        """Forgets the history, the user and the last recommendations."""
        self.history = []       # item ids, oldest first
        self.mentioned = set()  # every item named since the last reset
        self.user = None
        self.last_items = []    # the last list shown, best first
        self.shown = set()      # every item recommended since the last reset
        self._last_request = None

    # -- parsing ----------------------------------------------------------------
    def _mentions(self, message, arg=None, scan=True):
        """Items, users and unresolved names in `message`.

        `arg`: the part of the message where items are expected (a list of
        titles or ids); titles anywhere else are found when they have two or
        more words, or are quoted.
        """
        items, users, unresolved = [], [], []

        def add(found):
            if isinstance(found, Unresolved):
                unresolved.append(found)
            elif found not in items:
                items.append(found)

        rest = message
        for match in _ID_MENTION.finditer(message):
            kind, value = match.group(1).lower(), match.group(2)
            if kind == "item":
                item = self.catalogue.item_id(value)
                add(item if item else Unresolved(match.group(0), [], False))
            elif self.catalogue.has_user(value):
                users.append(value)
            else:
                unresolved.append(Unresolved(match.group(0), [], False))
        rest = _ID_MENTION.sub(" , ", rest)
        for match in _USER_WORDS.finditer(rest):
            if self.catalogue.has_user(match.group(1)):
                users.append(match.group(1))
        rest = _USER_WORDS.sub(" , ", rest)
        for match in _QUOTED.finditer(rest):
            add(self.catalogue.resolve(next(g for g in match.groups() if g)))
        rest = _QUOTED.sub(" , ", rest)
        if arg is not None:
            arg = _ID_MENTION.sub(" , ", _QUOTED.sub(" , ", _USER_WORDS.sub(" , ", arg)))
            found, missing = self.catalogue.resolve_list(arg)
            for item in found:
                add(item)
            if items:  # as in `resolve_list`: the rest of the sentence
                missing = [u for u in missing if u.candidates]
            unresolved.extend(missing)
        elif scan:
            for _, _, key in self.catalogue.find_titles(rest):
                add(self.catalogue.resolve(key))
        return items, users, unresolved

    def _referenced(self, arg):
        """An item named by reference: "it", "the first one", "#2"."""
        arg = strip_filler(arg)
        if _PRONOUN.match(arg):
            if self.history:
                return self.history[-1]
            return None
        match = _RANKED.match(arg)
        if match and self.last_items:
            rank = (_ORDINALS[match.group("word").lower()] if match.group("word")
                    else int(match.group("number")))
            index = rank - 1 if rank > 0 else len(self.last_items) + rank
            if 0 <= index < len(self.last_items):
                return self.last_items[index]["id"]
        return None

    # -- state ------------------------------------------------------------------
    def _remember(self, items, user=None):
        for item in items:
            if item in self.history:
                self.history.remove(item)
            self.history.append(item)
            self.mentioned.add(item)
        if user is not None:
            self.user = user

    def _fit(self):
        """Drops the oldest history items that no longer fit; notices."""
        kept, dropped = self.chat_model.fit_history(self.history, self.user)
        self.history = kept
        if not dropped:
            return []
        return [
            "The history is longer than the model reads "
            f"({self.chat_model.sequence_length} tokens): forgot the oldest "
            f"item{'s' if len(dropped) > 1 else ''}: "
            + ", ".join(self.catalogue.label(i) for i in dropped)
            + " (still never recommended)."]

    def _reply(self, text, intent, **kwargs):
        return Reply(text=text, intent=intent, history=list(self.history),
                     user=self.user, **kwargs)

    # -- intents ----------------------------------------------------------------
    def respond(self, message):
        """The assistant's answer to one message.

        Args:
            message: what the person typed (a string).

        Returns:
            A `Reply`. Model errors for this message (a prompt the model
            cannot read) come back as `intent="error"` with the reason; the
            conversation is unchanged then.
        """
        if not isinstance(message, str):
            raise TypeError(f"A message must be a string, got {type(message).__name__}.")
        message = " ".join(message.split())
        if not message:
            return self._reply("Say something (or /help).", "help")
        if len(message) > self.max_message_chars:
            return self._reply(
                f"That message has {len(message)} characters; the limit is "
                f"{self.max_message_chars}. Please shorten it.", "error")
        if message.startswith("/"):
            return self._command(message)
        try:
            return self._respond(message)
        except ValueError as error:
            return self._reply(f"The model cannot answer that: {error}", "error")

    def _command(self, message):
        command = message.split()[0].lower()
        if command in ("/help", "/?"):
            return self._reply(HELP, "help")
        if command == "/reset":
            self.reset()
            return self._reply("Starting over: the history is empty.", "reset")
        if command in ("/quit", "/exit", "/bye"):
            return self._reply("Goodbye.", "quit")
        if command == "/history":
            if not self.history and self.user is None:
                return self._reply("The history is empty.", "history")
            lines = [f"User: {self.chat_model.user_name(self.user)}"] if self.user else []
            lines += [f"  {n}. {self.catalogue.label(i)}"
                      for n, i in enumerate(self.history, 1)]
            return self._reply("\n".join(["History, oldest first:"] + lines),
                               "history")
        return self._reply(f"Unknown command {command}; try /help.", "help")

    def _clarify(self, unresolved):
        lines, suggestions = [], []
        for u in unresolved:
            candidates = [self.catalogue.describe(i) for i in u.candidates]
            suggestions.append({"name": u.name, "ambiguous": u.ambiguous,
                                "candidates": candidates})
            if u.ambiguous:
                lines.append(f'"{u.name}" names {len(candidates)} items; which one?')
            elif candidates:
                lines.append(f'I don\'t know "{u.name}". Did you mean:')
            else:
                lines.append(f'I don\'t know "{u.name}" (no close title; '
                             "try another spelling or an item_<id>).")
            lines += [f"  - {self.catalogue.label(c['id'])}" for c in candidates]
        lines.append("Nothing changed; please say it again with one of these.")
        return self._reply("\n".join(lines), "clarify", suggestions=suggestions)

    def _respond(self, message):
        match = _DESCRIBE.match(message)
        if match:
            arg = next(g for g in match.groups() if g)
            referenced = self._referenced(arg)
            if referenced is not None:
                return self._describe([referenced])
            if _PRONOUN.match(strip_filler(arg)) or _RANKED.match(strip_filler(arg)):
                return self._reply("Which item? Name it by title or item_<id>.",
                                   "clarify")
            items, users, unresolved = self._mentions(message, arg=arg)
            if unresolved:
                return self._clarify(unresolved)
            if items:
                return self._describe(items, users)
        if _MORE.match(message):
            return self._more()
        recommend = _RECOMMEND.search(message)
        items, users, unresolved = self._mentions(
            message, arg=self._recommend_arg(message) if recommend else None)
        if unresolved:
            return self._clarify(unresolved)
        if users and not items and _USER_NEXT.search(message):
            return self._recommend([], users[-1], for_user=True)
        if recommend:
            return self._recommend(items, users[-1] if users else None)
        return self._free(message, items, users)

    def _recommend_arg(self, message):
        """The list of items in a recommendation request: the text after
        the first "after" / "like" / ... whose remainder names only known
        items (else after the last such word; None when there is none)."""
        starts = [m.end() for m in _RECOMMEND_ARG.finditer(message)]
        for start in starts:
            _, _, unresolved = self._mentions(message, arg=message[start:])
            if not unresolved:
                return message[start:]
        return message[starts[-1]:] if starts else None

    def _describe(self, items, users=()):
        self._remember(items, users[-1] if users else None)
        notices = self._fit()
        lines, described = [], []
        for item in items:
            text = self.chat_model.describe(item)
            described.append(self.catalogue.describe(item))
            lines.append(f"{self.catalogue.label(item)}: {text or '(no answer)'}")
        return self._reply("\n".join(lines), "describe", items=described,
                           notices=notices)

    def _recommend(self, items, user=None, for_user=False, exclude_shown=False):
        self._remember(items, user)
        if not self.history and self.user is None:
            return self._reply(
                "Tell me a few items you liked first (by title or "
                "item_<id>), or name a user (user_<id>).", "clarify")
        notices = self._fit()
        history = [] if for_user else list(self.history)
        exclude = set(self.mentioned) | (self.shown if exclude_shown else set())
        self._last_request = (for_user,)
        ranked = self.chat_model.rank(
            self.chat_model.history_prompt(history, self.user), self.k, exclude)
        if not ranked:
            return self._reply("Nothing left to recommend: every item was "
                               "mentioned or shown already (/reset starts over).",
                               "recommend", notices=notices)
        self.last_items = ranked
        self.shown.update(i["id"] for i in ranked)
        if for_user or not history:
            head = f"For {self.chat_model.user_name(self.user)}, try:"
        else:
            who = (f" for {self.chat_model.user_name(self.user)}" if self.user else "")
            head = (f"After {', '.join(self.catalogue.title(i) for i in history)}"
                    f"{who}, try:")
        lines = [head] + [f"  {n}. {self.catalogue.label(i['id'])}"
                          for n, i in enumerate(ranked, 1)]
        return self._reply("\n".join(lines), "user" if for_user else "recommend",
                           items=ranked, notices=notices)

    def _more(self):
        if self._last_request is None:
            return self._reply("More of what? Ask for a recommendation first.",
                               "clarify")
        (for_user,) = self._last_request
        return self._recommend([], for_user=for_user, exclude_shown=True)

    def _free(self, message, items, users):
        self._remember(items, users[-1] if users else None)
        notices = self._fit()
        # Titles become mentions, so that the model reads their soft tokens.
        prompt = message
        for item in items:
            title = re.sub(r"\s*\(\d{4}\)\s*$", "", self.catalogue.title(item))
            for name in (self.catalogue.title(item), title):
                pattern = re.compile(re.escape(name), re.IGNORECASE)
                if pattern.search(prompt):
                    prompt = pattern.sub(self.chat_model.item_name(item), prompt, count=1)
                    break
        try:
            text = self.chat_model.generate(prompt)
        except ValueError as error:
            return self._reply(f"The model cannot read that message: {error}",
                               "error", notices=notices)
        return self._reply(text or "(the model has nothing to add)", "free",
                           items=[self.catalogue.describe(i) for i in items],
                           notices=notices)
