"""`Catalogue`: the items a preset knows, found by id or by title.

The items of a preset (`preprocessor.item_ids` and its catalogue texts,
e.g. `"Harbor Electric (1959). Genres: Animation, Comedy."`), found in a
person's words by id (`item_1014`) or by title (`"harbor electric"`, case-
and punctuation-insensitive, the year optional), with "did you mean" for a
name that matches several items or none (`Unresolved`).
"""

import dataclasses
import difflib
import re
import unicodedata

_SEPARATORS = re.compile(r"\s*(?:,|;|&|\+|\band\b|\bthen\b|\bor\b)\s*",
                         re.IGNORECASE)
# Words that are never taken for a title in a list ("X and Y, what next?").
_COMMON_WORDS = frozenset("""
a also an and any anything are but can could do does else for fun get good
great i is it just like maybe me more movie movies my next now of ok one ones
or pick please see should so some something that the then this thanks thank
to too try very was watch we what which who would you film films item items
""".split())
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
                name = strip_filler(joined)
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


def strip_filler(text):
    """`"something X please?"` -> `"X"`."""
    text = _TRAILING_FILLER.sub("", text.strip())
    return _LEADING_FILLER.sub("", text).strip()
