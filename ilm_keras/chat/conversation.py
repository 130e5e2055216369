"""Conversational recommendation over a trained ILM: the logic, no I/O.

A person types messages; `Conversation.respond(message)` returns a `Reply`.
Both front ends use it unchanged: the terminal chat (`ilm-chat`,
`python -m ilm_keras.chat`) prints `Reply.text`, the web server
(`ilm-serve`) returns `Reply.to_dict()` as JSON.

The pieces, top-down:

- `Catalogue`: the items a preset knows (`preprocessor.item_ids` and its
  catalogue texts, e.g. `"Harbor Electric (1959). Genres: Animation,
  Comedy."`). It finds the items a message names, by id (`item_1014`) or by
  title (`"harbor electric"`, case- and punctuation-insensitive, the year
  optional), and answers "did you mean" for a name that matches several
  items or none.
- `ChatModel`: one loaded `ItemLanguageModel` behind one lock (a server's
  requests are serialised), with the prompts the model was trained on:
  `SEQUENTIAL.template(0)` for "recommend after these items",
  `STRAIGHTFORWARD.template(0)` for "what should user_N watch next?", and
  `DESCRIBE_TEMPLATE` ("What is item_<id> about?") for descriptions. It
  fits a history into the model's `sequence_length` (oldest items dropped
  first) and calls the model with fixed shapes, so that after one warm-up
  no request compiles anything.
- `Conversation`: the state of one conversation (the items mentioned so
  far, oldest first, the user if one was named, the last recommendations)
  and the intents: recommend, describe, a user's next item, more of the
  same, free text (passed to the model with titles turned into `item_<id>`
  mentions), and the commands `/help`, `/reset`, `/history`, `/quit`.
"""

import dataclasses
import difflib
import re
import threading
import unicodedata

import numpy as np

from ilm_keras.data.templates import HISTORY_SEPARATOR
from ilm_keras.data.templates import SEQUENTIAL
from ilm_keras.data.templates import STRAIGHTFORWARD

# The describe prompt the models were trained on
# (`ilm_keras.experiments.pipeline.DESCRIBE_TEMPLATE`; a copy here keeps
# the chat from importing the training pipeline, which the test below
# checks against).
DESCRIBE_TEMPLATE = "What is item_{item} about?"
# The sequential template's `{user}` when no user was named.
ANONYMOUS_USER = "this user"

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
_SEPARATORS = re.compile(r"\s*(?:,|;|&|\+|\band\b|\bthen\b|\bor\b)\s*",
                         re.IGNORECASE)
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
# Words that are never taken for a title in a list ("X and Y, what next?").
_COMMON_WORDS = frozenset("""
a also an and any anything are but can could do does else for fun get good
great i is it just like maybe me more movie movies my next now of ok one ones
or pick please see should so some something that the then this thanks thank
to too try very was watch we what which who would you film films item items
""".split())
_USER_NEXT = re.compile(r"\b(?:next|watch|recommend\w*|suggest\w*|like|want|"
                        r"pick|choose|see)\b", re.IGNORECASE)
_LEADING_FILLER = re.compile(
    r"^(?:(?:something|anything|some|a\s+few|more)\s+)?"
    r"(?:(?:good\s+)?(?:movies?|films?|items?|ones?)\s+)?", re.IGNORECASE)
_TRAILING_FILLER = re.compile(
    r"(?:\s+(?:for|to|with|by|too|as\s+well|please|thanks?|thank\s+you|"
    r"next))*\s*[?.!,]*$", re.IGNORECASE)


def normalize(text):
    """Lower case, accents and punctuation gone, single spaces.

    Args:
        text: a string.

    Returns:
        The normalised string, e.g. `"harbor electric 1959"` for
        `"Harbor Electric (1959)!"`.

    Example:
    ```python
    normalize("  Toy Story (1995)")  # "toy story 1995"
    ```
    """
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def title_of(text):
    """The display title in a catalogue text.

    `"Harbor Electric (1959). Genres: Animation, Comedy."` -> `"Harbor
    Electric (1959)"`; a text without a `(year)` gives its first sentence.

    Example:
    ```python
    title_of("Toy Story (1995). Genres: Animation.")  # "Toy Story (1995)"
    ```
    """
    text = " ".join(str(text or "").split())
    match = re.match(r"^(.*?\(\d{4}\))", text)
    if match:
        return match.group(1)
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    return first[:80]


@dataclasses.dataclass
class Unresolved:
    """A name in a message that matches no single item.

    Attributes:
        name: the name as typed.
        candidates: item ids it may mean, best first (empty: no idea).
        ambiguous: True when it names several items exactly (e.g. two
            films of the same title), False when it names none.
    """

    name: str
    candidates: list
    ambiguous: bool


class Catalogue:
    """The items of a preset, found by id or by title.

    Args:
        preprocessor: an `ItemLanguageModelPreprocessor` (its `item_ids`,
            `user_ids`, `item_prefix`, `user_prefix` and, optionally,
            `item_texts`).

    Example:
    ```python
    catalogue = Catalogue(model.preprocessor)
    catalogue.resolve("harbor electric")  # ["1014"] or an `Unresolved`
    catalogue.title("1014")               # "Harbor Electric (1959)"
    ```
    """

    def __init__(self, preprocessor):
        self.item_ids = list(preprocessor.item_ids)
        self.user_ids = list(preprocessor.user_ids)
        self._items = set(self.item_ids)
        self._users = set(self.user_ids)
        self.item_prefix = preprocessor.item_prefix
        self.user_prefix = preprocessor.user_prefix
        texts = preprocessor.item_texts or [""] * len(self.item_ids)
        self._texts = dict(zip(self.item_ids, texts))
        self._titles = {i: title_of(t) or self.item_prefix + i
                        for i, t in self._texts.items()}
        # Normalised title (with and without the year, and with a trailing
        # ", The" moved to the front) -> item ids.
        self._by_title = {}
        for item, title in self._titles.items():
            for key in self._title_keys(title):
                self._by_title.setdefault(key, []).append(item)
        self._keys = sorted(self._by_title)
        self._max_words = max((len(k.split()) for k in self._keys), default=1)

    @staticmethod
    def _title_keys(title):
        keys = {normalize(title)}
        bare = re.sub(r"\s*\(\d{4}\)\s*$", "", title)
        keys.add(normalize(bare))
        article = re.match(r"^(.*),\s*(The|A|An)$", bare, re.IGNORECASE)
        if article:
            front = f"{article.group(2)} {article.group(1)}"
            keys.add(normalize(front))
            year = re.search(r"\((\d{4})\)\s*$", title)
            if year:
                keys.add(normalize(f"{front} {year.group(1)}"))
        keys.discard("")
        return keys

    def __len__(self):
        return len(self.item_ids)

    def has_item(self, item_id):
        return str(item_id) in self._items

    def has_user(self, user_id):
        return str(user_id) in self._users

    def title(self, item_id):
        """The display title of an item (its id's name when no text)."""
        return self._titles[str(item_id)]

    def text(self, item_id):
        """The catalogue text of an item (`""` when none)."""
        return self._texts[str(item_id)]

    def describe(self, item_id, score=None):
        """A JSON-ready dict: `id`, `name`, `title`, `text` (and `score`)."""
        item_id = str(item_id)
        out = {"id": item_id, "name": self.item_prefix + item_id,
               "title": self.title(item_id), "text": self.text(item_id)}
        if score is not None:
            out["score"] = float(score)
        return out

    def label(self, item_id):
        """`"Harbor Electric (1959) [item_1014]"`."""
        return f"{self.title(item_id)} [{self.item_prefix}{item_id}]"

    def item_id(self, name):
        """The id of an item named `item_<id>` or `<id>`, else None."""
        name = str(name).strip()
        if name.lower().startswith(self.item_prefix.lower()):
            name = name[len(self.item_prefix):]
        return name if name in self._items else None

    def resolve(self, name):
        """One item id for a name typed by a person, or an `Unresolved`.

        Args:
            name: an id (`1014`, `item_1014`) or a title (any case and
                punctuation; the year is optional).

        Returns:
            The item id (a string), or `Unresolved` with "did you mean"
            candidates.
        """
        item = self.item_id(name)
        if item is not None:
            return item
        key = normalize(name)
        exact = self._by_title.get(key, [])
        if len(exact) == 1:
            return exact[0]
        if exact:
            return Unresolved(name, list(exact), ambiguous=True)
        return Unresolved(name, self.search(name, limit=5, fuzzy_only=True),
                          ambiguous=False)

    def search(self, query, limit=10, fuzzy_only=False):
        """Item ids whose titles match `query`, best first.

        Titles that contain every word of the query come first (in catalogue
        order), then close spellings (`difflib`).

        Args:
            query: free text (`""` lists the catalogue from the start).
            limit: the most ids to return.
            fuzzy_only: skip the containment matches (for "did you mean").

        Returns:
            A list of item ids.
        """
        key = normalize(query)
        if not key:
            return [] if fuzzy_only else self.item_ids[:limit]
        out = []
        if not fuzzy_only:
            words = key.split()
            for item in self.item_ids:
                title = normalize(self._titles[item])
                if all(re.search(rf"\b{re.escape(w)}", title) for w in words):
                    out.append(item)
                    if len(out) >= limit:
                        return out
        close = difflib.get_close_matches(key, self._keys, n=limit, cutoff=0.6)
        for title_key in close:
            for item in self._by_title[title_key]:
                if item not in out:
                    out.append(item)
        return out[:limit]

    def find_titles(self, text):
        """Titles named in running text, longest first, at word boundaries.

        Only titles of two words or more (or with their year) are found
        this way: a one-word title ("Heat") must be named where an item is
        expected ("recommend something after Heat") or quoted.

        Returns:
            A list of `(start, end, key)` spans of `normalize(text)`'s words
            with the normalised title `key`.
        """
        words = normalize(text).split()
        spans, i = [], 0
        while i < len(words):
            for n in range(min(self._max_words, len(words) - i), 1, -1):
                key = " ".join(words[i:i + n])
                if key in self._by_title:
                    spans.append((i, i + n, key))
                    i += n
                    break
            else:
                i += 1
        return spans

    def resolve_list(self, text):
        """The items named in a list such as `"A, B and C"`.

        The list is cut at `,`, `;`, `&`, `and`, `or`, `then`; neighbouring
        pieces are joined again when together they are a title ("Sense and
        Sensibility"), the longest first.

        Returns:
            `(items, unresolved)`: item ids in the order named, and the
            `Unresolved` names (when some items were found, only the names
            with "did you mean" candidates: the others are taken for the
            rest of the sentence).
        """
        parts = [p for p in _SEPARATORS.split(text.strip()) if p is not None]
        seps = _SEPARATORS.findall(text.strip())
        items, unresolved, i = [], [], 0
        while i < len(parts):
            for j in range(len(parts), i, -1):
                joined = parts[i]
                for s, p in zip(seps[i:j - 1], parts[i + 1:j]):
                    joined += s + p
                if j - i > 1 and len(self._by_title.get(normalize(joined), [])) != 1:
                    continue
                name = _strip_filler(joined)
                if not set(normalize(name).split()) - _COMMON_WORDS:
                    i = j
                    break
                found = self.resolve(name)
                if j - i == 1 or not isinstance(found, Unresolved):
                    if isinstance(found, Unresolved):
                        unresolved.append(found)
                    else:
                        items.append(found)
                    i = j
                    break
        if items:
            # Words that look like no title beside known items are the rest
            # of the sentence ("X and Y, what next?"), not a title.
            unresolved = [u for u in unresolved if u.candidates]
        return items, unresolved


def _strip_filler(text):
    """`"something X please?"` -> `"X"`."""
    text = _TRAILING_FILLER.sub("", text.strip())
    return _LEADING_FILLER.sub("", text).strip()


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


def tidy_generated(text):
    """Model text for people: no `[UNK]`, no spaces before punctuation.

    Example:
    ```python
    tidy_generated("Harbor ( 1959 ) . Genres : Comedy .")
    # "Harbor (1959). Genres: Comedy."
    ```
    """
    text = re.sub(r"\[UNK\]", " ", text)
    text = re.sub(r"\s+([.,:;!?)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    return " ".join(text.split())


class ChatModel:
    """One trained `ItemLanguageModel` for conversations: prompts, one lock.

    Every model and tokenizer call goes through `self.lock`, so any number
    of conversations (threads of a server) can share one model. Calls use
    fixed shapes (batch 1, prompts padded to `sequence_length`, a fixed
    `max_k` beam width or ranking size, generation to `max_length`), so
    `warm_up()` compiles everything a conversation needs once.

    Args:
        model: an `ItemLanguageModel` with its preprocessor (e.g.
            `ItemLanguageModel.from_preset(path)`).
        k: default number of recommendations.
        max_k: the largest `k` a request may ask for (capped at the
            catalogue size); recommendations are computed at this size and
            cut, so every `k` uses one compiled program.
        max_length: generation length in tokens (prompt included); defaults
            to the preprocessor's `sequence_length`.

    Example:
    ```python
    chat_model = ChatModel(ItemLanguageModel.from_preset("runs/qs/preset"))
    items, dropped = chat_model.recommend(["1014", "1007"], k=5)
    ```
    """

    def __init__(self, model, k=10, max_k=20, max_length=None):
        if model.preprocessor is None:
            raise ValueError("The model has no preprocessor; load a preset "
                             "saved with one (`ItemLanguageModel.from_preset`).")
        self.model = model
        self.preprocessor = model.preprocessor
        self.catalogue = Catalogue(self.preprocessor)
        if len(self.catalogue) < 1:
            raise ValueError("The model's catalogue has no items.")
        self.max_k = max(1, min(int(max_k), len(self.catalogue)))
        if int(k) < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        self.k = min(int(k), self.max_k)
        self.sequence_length = int(self.preprocessor.sequence_length)
        self.max_length = int(max_length or self.sequence_length)
        if self.max_length < 2:
            raise ValueError(f"`max_length` must be >= 2, got {self.max_length}.")
        self.lock = threading.RLock()
        model.compile(sampler="greedy")
        # One prompt width for every recommendation (no recompiles), when
        # the backbone's positions allow it.
        self._length_bucket = self.sequence_length
        try:
            trie = model.item_trie()
            model.backbone.check_length(self.sequence_length + trie.max_length, "")
        except ValueError:
            self._length_bucket = 16

    # -- prompts ------------------------------------------------------------
    def user_name(self, user_id):
        return self.catalogue.user_prefix + str(user_id)

    def item_name(self, item_id):
        return self.catalogue.item_prefix + str(item_id)

    def history_prompt(self, history, user=None):
        """The prompt for "what comes after `history`" (oldest first)."""
        user = self.user_name(user) if user is not None else ANONYMOUS_USER
        if not history:
            return STRAIGHTFORWARD.template(0).format(user=user)
        return SEQUENTIAL.template(0).format(
            user=user,
            history=HISTORY_SEPARATOR.join(self.item_name(i) for i in history))

    def _fits(self, prompt, mentions):
        if mentions > self.preprocessor.max_mentions:
            return False
        # Mentions are known ids and counted above: a ValueError here is a
        # prompt longer than `sequence_length`.
        try:
            with self.lock:  # Keras layers (the tokenizer) are not thread-safe
                lengths = self.preprocessor.recommend_preprocess([prompt])["lengths"]
        except ValueError:
            return False
        return int(lengths[0]) <= self.sequence_length

    def fit_history(self, history, user=None):
        """The newest part of `history` whose prompt fits the model.

        Args:
            history: item ids, oldest first.
            user: optional user id.

        Returns:
            `(kept, dropped)`: the items that fit (the newest), and those
            dropped (the oldest), each oldest first.

        Raises:
            ValueError: not even an empty history fits (a model whose
                `sequence_length` is shorter than the template).
        """
        history = list(history)
        user_mentions = 0 if user is None else (
            2 if history else 1)  # the templates name the user twice / once
        start = 0
        while True:
            kept = history[start:]
            mentions = len(kept) + (user_mentions if kept else min(user_mentions, 1))
            if self._fits(self.history_prompt(kept, user), mentions):
                return kept, history[:start]
            if not kept:
                raise ValueError(
                    "Even a prompt without history is longer than the model's "
                    f"sequence_length={self.sequence_length}.")
            start += 1

    # -- model calls ----------------------------------------------------------
    def rank(self, prompt, k, exclude=()):
        """The top `k` items for `prompt`, none in `exclude`.

        Args:
            prompt: a model prompt (e.g. `history_prompt(...)`).
            k: how many items.
            exclude: item ids never to return.

        Returns:
            Item dicts (`Catalogue.describe`, with `score`), best first.

        The model always ranks `max_k` items (one compiled program for
        every request). When `exclude` leaves fewer than `max_k` items in
        the catalogue, only as many exclusions as leave `max_k` go to the
        model and the rest are filtered from its list, which may then hold
        fewer than `k` items.
        """
        exclude = set(exclude)
        if len(exclude) >= len(self.catalogue):
            return []
        passed = sorted(exclude)[:len(self.catalogue) - self.max_k]
        with self.lock:
            items, scores = self.model.recommend(
                prompt, k=self.max_k, exclude=passed,
                length_bucket=self._length_bucket)
        ranked = [self.catalogue.describe(i, s) for i, s in zip(items, scores)
                  if str(i) not in exclude]
        return ranked[:k]

    def check_k(self, k):
        """`k` as an int in `1..max_k`, or a ValueError saying the range."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"`k` must be an integer in 1..{self.max_k}, got {k!r}.")
        if not 1 <= k <= self.max_k:
            raise ValueError(f"`k` must be in 1..{self.max_k}, got {k}.")
        return int(k)

    def recommend(self, history=(), user=None, k=None, exclude=()):
        """Items to try after `history` (and/or for `user`).

        Args:
            history: item ids, oldest first (the newest that fit are used).
            user: optional user id (`"12"`).
            k: how many (default `self.k`).
            exclude: item ids never to return; the whole `history` (the
                dropped part too) is always excluded.

        Returns:
            `(items, dropped)`: item dicts (`Catalogue.describe`, with
            `score`), best first (fewer than `k` when the exclusions leave
            fewer), and the history items dropped to fit the model.

        Raises:
            ValueError: an unknown item or user id, no history and no
                user, or `k` out of range.
        """
        k = self.check_k(self.k if k is None else k)
        history = [str(i) for i in history]
        for item in list(history) + [str(i) for i in exclude]:
            if not self.catalogue.has_item(item):
                raise ValueError(f"Unknown item {item!r}.")
        if user is not None and not self.catalogue.has_user(user):
            raise ValueError(f"Unknown user {user!r}.")
        if not history and user is None:
            raise ValueError("Give a history (item ids) or a user id.")
        kept, dropped = self.fit_history(history, user)
        prompt = self.history_prompt(kept, user)
        items = self.rank(prompt, k, set(history) | {str(i) for i in exclude})
        return items, dropped

    def generate(self, prompt):
        """The model's greedy continuation of `prompt`, without the prompt.

        Raises:
            ValueError: the prompt leaves no room to generate.
        """
        tokenizer = self.preprocessor.tokenizer
        with self.lock:
            out = self.model.generate(prompt, max_length=self.max_length,
                                      stop_token_ids="auto")
            echoed = tokenizer.detokenize(tokenizer(prompt))
        echoed = echoed.decode("utf-8") if isinstance(echoed, bytes) else str(echoed)
        out = out.decode("utf-8") if isinstance(out, bytes) else str(out)
        if out.startswith(echoed):
            out = out[len(echoed):]
        return tidy_generated(out)

    def describe(self, item_id):
        """What the model says about an item, from its soft tokens.

        Returns:
            The description (a string).
        """
        if not self.catalogue.has_item(item_id):
            raise ValueError(f"Unknown item {item_id!r}.")
        return self.generate(DESCRIBE_TEMPLATE.format(item=item_id))

    def warm_up(self):
        """Compiles what conversations use: one recommendation, one reply."""
        item = self.catalogue.item_ids[0]
        self.recommend([item], k=1)
        self.describe(item)


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
        arg = _strip_filler(arg)
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
            if _PRONOUN.match(_strip_filler(arg)) or _RANKED.match(_strip_filler(arg)):
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
