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


def _words(text):
    """The words of `text` as keras-hub's WordPiece pre-tokenizer cuts them."""
    return _WORD_RE.findall(text)


@keras.saving.register_keras_serializable(package="ilm_keras")
class OpenP5Tokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """Word-level tokenizer for OpenP5 prompts that spells numbers by digit.

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

    def __init__(self, vocabulary=None, **kwargs):
        self._add_special_token(PAD_TOKEN, "pad_token")
        self._add_special_token(START_TOKEN, "start_token")
        self._add_special_token(END_TOKEN, "end_token")
        kwargs.setdefault("lowercase", False)
        kwargs.setdefault("oov_token", UNK_TOKEN)
        super().__init__(vocabulary=vocabulary, **kwargs)

    @classmethod
    def from_texts(cls, texts=(), min_count=1, **kwargs):
        """A tokenizer whose words are the OpenP5 template words + `texts`.

        Args:
            texts: extra strings whose words join the vocabulary (e.g. item
                titles, conversational responses). Numbers in them are
                spelled by digit, so they add no vocabulary.
            min_count: int, a word of `texts` needs this many occurrences.
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
        return cls(vocabulary=fixed + words, **kwargs)

    def count_unknown(self, texts):
        """Number of `[UNK]` tokens `texts` would produce (a coverage check)."""
        unk = self.token_to_id(UNK_TOKEN)
        out = self(list(texts))
        out = out.to_list() if hasattr(out, "to_list") else out
        return int(sum(int(t == unk) for row in out for t in list(row)))

    def detokenize(self, inputs):
        outputs = super().detokenize(inputs)
        if tf is not None and isinstance(outputs, tf.Tensor):
            return tf.strings.regex_replace(outputs, _MENTION_GLUE, r"\1_\2")
        if isinstance(outputs, (list, tuple)):
            return [re.sub(_MENTION_GLUE, r"\1_\2", _as_str(o)) for o in outputs]
        return re.sub(_MENTION_GLUE, r"\1_\2", _as_str(outputs))


def _as_str(x):
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)
