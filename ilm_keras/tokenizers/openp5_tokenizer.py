"""An offline word-level tokenizer for OpenP5-style prompts and item ids."""

import re
import string

import keras
import keras_hub

try:
    import tensorflow as tf
except ImportError:  # pragma: no cover - TF ships with keras-hub on Linux.
    tf = None

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
START_TOKEN = "<s>"
END_TOKEN = "</s>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, START_TOKEN, END_TOKEN)
DIGITS = tuple(string.digits)
PUNCTUATION = tuple(string.punctuation)

# keras-hub's WordPiece pre-tokenizer: split on whitespace and on
# punctuation, which includes `_` (every ASCII non-alphanumeric), keeping each
# punctuation character as a word: "sci_fi" -> sci _ fi.
_WORD_RE = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)
# Detokenizing joins tokens with spaces: glue `item _ 1001` back together.
_MENTION_GLUE = r"\b(item|user) _ (\d+)"
ITEM_INDEXINGS = ("random", "atomic")
# Atomic indexing: `item_<id>` is written `item<id>` before WordPiece sees it,
# one vocabulary word per item (RE2 and Python `re` read this pattern alike).
_ATOMIC_MENTION = r"(^|[^A-Za-z0-9_])item_([A-Za-z0-9]+)"
_ATOMIC_REWRITE_TF = r"\1item\2"
_ATOMIC_WORD = re.compile(r"\bitem([A-Za-z0-9]+)\b")


def _words(text):
    """The words of `text` as keras-hub's WordPiece pre-tokenizer cuts them."""
    return _WORD_RE.findall(text)


@keras.saving.register_keras_serializable(package="ilm_keras")
class OpenP5Tokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """Word-level tokenizer for OpenP5 prompts, with a choice of item indexing.

    A WordPiece tokenizer whose vocabulary is: the special tokens
    (`[PAD]` = 0, `[UNK]` = 1, `<s>` = 2, `</s>` = 3), ASCII punctuation, the
    digits `0`-`9` and their continuation pieces `##0`-`##9`, then whole
    words (the words of the OpenP5 prompt templates, plus any words of extra
    texts, e.g. item titles). Numbers are not words of the vocabulary, so
    every number is spelled digit by digit:

    `"item_1001"` -> `item _ 1 ##0 ##0 ##1` (6 tokens, like OpenP5's T5 ids
    for random indexing). Every item name is therefore a fixed path of tokens
    whose first three (`item _ <digit>`) are shared, which is what the
    item trie of `ItemLanguageModel.recommend()` needs. Tokenization is the
    same whether a string is tokenized whole or cut at whitespace, so the
    piecewise tokenization of `ItemLanguageModelPreprocessor` matches it.

    Item indexing (`item_indexing=`):
    - `"random"` (the paper's OpenP5 setting): item ids spelled by digit, as
      above. A decoder must learn each item as a combination of digit
      choices, which it learns slowly (`benchmarks/learning_curves.py`).
    - `"atomic"`: every catalogue item is one vocabulary entry. Before
      WordPiece sees the text, `item_<id>` is rewritten `item<id>` (a word
      without `_`), and `from_texts(item_ids=...)` adds the word `item<id>`
      of every item to the vocabulary: `"item_1001"` -> `item1001` (one
      token). A mention of an id outside the catalogue falls back to
      WordPiece pieces. User ids are still spelled by digit.

    Case is kept (`lowercase=False`). A word outside the vocabulary becomes
    `[UNK]` (`count_unknown` counts them). `detokenize` joins tokens with
    spaces and glues mentions back (`"item_1001 , item_1002"`).

    The start/end/pad ids are exposed as `start_token_id`, `end_token_id`
    and `pad_token_id`, as keras-hub's causal-LM machinery expects. No
    download is needed: build one with `OpenP5Tokenizer.from_texts(texts)`.

    Args:
        vocabulary: list of strings or a vocabulary file; must hold the four
            special tokens. Usually made by `from_texts`.
        **kwargs: `keras_hub.tokenizers.WordPieceTokenizer` arguments
            (`sequence_length`, `dtype`, ...).

    Example:
    ```python
    tokenizer = OpenP5Tokenizer.from_texts(["Galaxy Hidden (1984). Genres: Drama."])
    tokenizer("user_7 : item_1001 , item_1002")
    # [user, _, 7, :, item, _, 1, ##0, ##0, ##1, ",", item, _, 1, ##0, ##0, ##2]
    tokenizer.detokenize(tokenizer("item_1001 ."))  # "item_1001 ."
    ```
    """

    def __init__(self, vocabulary=None, item_indexing="random", **kwargs):
        if item_indexing not in ITEM_INDEXINGS:
            raise ValueError(
                f"`item_indexing` must be one of {ITEM_INDEXINGS}, got "
                f"{item_indexing!r}."
            )
        self.item_indexing = item_indexing
        self._add_special_token(PAD_TOKEN, "pad_token")
        self._add_special_token(START_TOKEN, "start_token")
        self._add_special_token(END_TOKEN, "end_token")
        kwargs.setdefault("lowercase", False)
        kwargs.setdefault("oov_token", UNK_TOKEN)
        super().__init__(vocabulary=vocabulary, **kwargs)

    @classmethod
    def from_texts(cls, texts=(), min_count=1, item_ids=None,
                   item_indexing="random", **kwargs):
        """A tokenizer whose words are the OpenP5 template words + `texts`.

        Args:
            texts: extra strings whose words join the vocabulary (e.g. item
                titles, conversational responses). Numbers in them are
                spelled by digit, so they add no vocabulary.
            min_count: int, a word of `texts` needs this many occurrences.
            item_ids: the catalogue's item ids (e.g. `data.item_index`);
                required by `item_indexing="atomic"`, which adds one
                vocabulary entry per item (after every other word, in the
                given order).
            item_indexing: `"random"` or `"atomic"` (see the class
                docstring).
            **kwargs: passed to the constructor.

        Returns:
            An `OpenP5Tokenizer`.
        """
        from ilm_keras.data.templates import RECOMMENDATION_TASKS

        counts = {}
        for spec in RECOMMENDATION_TASKS.values():
            for template in spec.seen + (spec.unseen,):
                for word in _words(re.sub(r"\{\w+\}", " ", template)):
                    counts[word] = counts.get(word, 0) + min_count
        for word in ("item", "user"):
            counts[word] = counts.get(word, 0) + min_count
        for i, text in enumerate(texts):
            if text is None:
                continue
            if not isinstance(text, str):
                raise TypeError(f"`texts[{i}]` must be a string, got {type(text).__name__}.")
            for word in _words(text):
                counts[word] = counts.get(word, 0) + 1
        fixed = list(SPECIAL_TOKENS) + list(PUNCTUATION) + list(DIGITS)
        fixed += ["##" + d for d in DIGITS]
        words = sorted(
            w
            for w, c in counts.items()
            if c >= min_count and w not in fixed and not any(ch.isdigit() for ch in w)
        )
        if item_indexing == "atomic":
            words += _atomic_item_words(item_ids)
        return cls(vocabulary=fixed + words, item_indexing=item_indexing,
                   **kwargs)

    def get_config(self):
        config = super().get_config()
        config["item_indexing"] = self.item_indexing
        return config

    def tokenize(self, inputs):
        if self.item_indexing == "atomic":
            inputs = _rewrite_atomic_mentions(inputs)
        return super().tokenize(inputs)

    def count_unknown(self, texts):
        """Number of `[UNK]` tokens `texts` would produce (a coverage check)."""
        unk = self.token_to_id(UNK_TOKEN)
        out = self(list(texts))
        out = out.to_list() if hasattr(out, "to_list") else out
        return int(sum(int(t == unk) for row in out for t in list(row)))

    def detokenize(self, inputs):
        outputs = super().detokenize(inputs)
        if tf is not None and isinstance(outputs, tf.Tensor):
            outputs = tf.strings.regex_replace(outputs, _MENTION_GLUE, r"\1_\2")
            if self.item_indexing == "atomic":
                outputs = tf.strings.regex_replace(
                    outputs, _ATOMIC_WORD.pattern, r"item_\1"
                )
            return outputs
        if isinstance(outputs, (list, tuple)):
            return [self._glue(_as_str(o)) for o in outputs]
        return self._glue(_as_str(outputs))

    def _glue(self, text):
        text = re.sub(_MENTION_GLUE, r"\1_\2", text)
        if self.item_indexing == "atomic":
            text = _ATOMIC_WORD.sub(r"item_\1", text)
        return text


def _atomic_item_words(item_ids):
    """The vocabulary words `item<id>` of atomic indexing, checked."""
    if item_ids is None:
        raise ValueError(
            "`item_indexing='atomic'` needs `item_ids` (one vocabulary entry "
            "per item)."
        )
    words = []
    for i in item_ids:
        name = str(i)
        if not re.fullmatch(r"[A-Za-z0-9]+", name):
            raise ValueError(f"Item ids must be alphanumeric; got {name!r}.")
        words.append("item" + name)
    if len(set(words)) != len(words):
        raise ValueError("`item_ids` has duplicates.")
    if not words:
        raise ValueError("`item_ids` is empty.")
    return words


def _rewrite_atomic_mentions(inputs):
    """`item_<id>` -> `item<id>` in a string, a (nested) list or a tensor."""
    if tf is not None and isinstance(inputs, (tf.Tensor, tf.RaggedTensor)):
        return tf.strings.regex_replace(inputs, _ATOMIC_MENTION, _ATOMIC_REWRITE_TF)
    if isinstance(inputs, (str, bytes)):
        return re.sub(_ATOMIC_MENTION, r"\1item\2", _as_str(inputs))
    if isinstance(inputs, (list, tuple)):
        return [_rewrite_atomic_mentions(x) for x in inputs]
    if hasattr(inputs, "dtype") and getattr(inputs, "ndim", None) is not None:
        # NumPy string / object arrays (e.g. from `tf.numpy_function`).
        import numpy as np

        flat = [_rewrite_atomic_mentions(x) for x in np.asarray(inputs).reshape(-1)]
        return np.asarray(flat, dtype=object).reshape(np.shape(inputs)).tolist()
    return inputs


def _as_str(x):
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)
