"""An offline WordPiece tokenizer for the Q-Former's text tower."""

import keras
import keras_hub
import numpy as np

from ilm_keras.utils.texts import to_python_strings

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]", "[MASK]"]


@keras.saving.register_keras_serializable(package="ilm_keras")
class QFormerTokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """WordPiece tokenizer trained on the item texts themselves.

    The Q-Former's text tower is small and trained from scratch in phase 1,
    so it needs no pretrained vocabulary: `QFormerTokenizer.train` learns a
    WordPiece vocabulary from the item texts with keras-hub's
    `compute_word_piece_vocabulary`, entirely offline. The vocabulary starts
    with the special tokens `[PAD] [UNK] [CLS] [SEP] [DEC] [MASK]` (ids 0-5):
    `[CLS]` opens every text (its output is the text representation), `[DEC]`
    replaces it for item-grounded generation, `[PAD]` is id 0.

    Args:
        vocabulary: list of WordPiece strings, starting with the special
            tokens in the order above.
        sequence_length: int, length `encode` pads and truncates to.
        **kwargs: passed to `keras_hub.tokenizers.WordPieceTokenizer`.

    Raises:
        ValueError: the vocabulary lacks a special token or does not start
            with them in order.

    Example:
    ```python
    tokenizer = QFormerTokenizer.train(
        ["Toy Story (1995) Animation Comedy", "Heat (1995) Action Crime"],
        vocabulary_size=100, sequence_length=16,
    )
    token_ids, padding_mask = tokenizer.encode(["Heat (1995)"])
    ```
    """

    def __init__(self, vocabulary=None, sequence_length=32, **kwargs):
        kwargs.setdefault("lowercase", True)
        kwargs.setdefault("strip_accents", True)
        kwargs.setdefault("oov_token", "[UNK]")
        super().__init__(vocabulary=vocabulary, **kwargs)
        self.sequence_length = sequence_length
        if vocabulary is not None:
            missing = [t for t in SPECIAL_TOKENS if t not in self.vocabulary]
            if missing:
                raise ValueError(
                    f"QFormerTokenizer vocabulary lacks special tokens {missing}."
                )
            misplaced = [
                f"{t} at id {self.token_to_id(t)}, not {i}"
                for i, t in enumerate(SPECIAL_TOKENS)
                if self.token_to_id(t) != i
            ]
            if misplaced:
                raise ValueError(
                    "QFormerTokenizer vocabulary must start with the special "
                    f"tokens {SPECIAL_TOKENS} in order; found {misplaced}."
                )

    @classmethod
    def train(cls, texts, vocabulary_size=4000, sequence_length=32):
        """Learns a WordPiece vocabulary from `texts` (a list of strings)."""
        import tensorflow as tf

        texts = to_python_strings(
            texts, "texts", single="error", allow_empty=True)
        if not texts or not any(t.strip() for t in texts):
            raise ValueError("QFormerTokenizer.train needs non-empty texts.")
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            tf.data.Dataset.from_tensor_slices(texts).batch(256),
            vocabulary_size=vocabulary_size,
            lowercase=True,
            strip_accents=True,
            reserved_tokens=SPECIAL_TOKENS,
        )
        return cls(vocabulary=vocabulary, sequence_length=sequence_length)

    def _id(self, token):
        return self.token_to_id(token)

    @property
    def pad_token_id(self):
        return self._id("[PAD]")

    @property
    def cls_token_id(self):
        return self._id("[CLS]")

    @property
    def sep_token_id(self):
        return self._id("[SEP]")

    @property
    def dec_token_id(self):
        return self._id("[DEC]")

    def encode(self, texts):
        """Tokenizes texts to `[CLS] ... [SEP]`, padded with `[PAD]`.

        Args:
            texts: a list of strings.

        Returns:
            `(token_ids, padding_mask)`, NumPy int32 and bool arrays of shape
            `[len(texts), sequence_length]`.
        """
        texts = to_python_strings(
            texts, "texts", single="error", allow_empty=True)
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(
                f"Empty text at position(s) {empty[:10]}; every item text "
                "needs at least one word."
            )
        pieces = self.tokenize(texts)
        # keras-hub returns a ragged tensor under TensorFlow and a zero-padded
        # dense array elsewhere; id 0 is `[PAD]` (checked in the constructor),
        # which WordPiece never emits.
        pad = self.pad_token_id
        rows = [[t for t in np.asarray(p).tolist() if t != pad] for p in pieces]
        length = self.sequence_length
        token_ids = np.full((len(rows), length), self.pad_token_id, "int32")
        for i, row in enumerate(rows):
            row = [self.cls_token_id] + row[: length - 2] + [self.sep_token_id]
            token_ids[i, : len(row)] = row
        return token_ids, token_ids != self.pad_token_id

    def get_config(self):
        config = super().get_config()
        config["sequence_length"] = self.sequence_length
        return config
