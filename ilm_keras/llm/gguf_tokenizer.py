"""A keras-hub byte-level BPE tokenizer built from a GGUF vocabulary."""

import keras
from keras_hub.tokenizers import BytePairTokenizer
from tokenizers import pre_tokenizers

# `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# `tokenizer.ggml.pre` values this tokenizer reproduces exactly (eager mode).
# "gpt-2": GPT-2's split regex; "smollm": digits split one by one first.
PRE_TOKENIZERS = ("gpt-2", "smollm")


@keras.saving.register_keras_serializable(package="ilm_keras")
class GGUFBytePairTokenizer(BytePairTokenizer):
    """Byte-level BPE tokenizer (GPT-2 style) with a GGUF model's specials.

    A `keras_hub.tokenizers.BytePairTokenizer` that also carries the start,
    end and padding tokens and the control tokens of the model it came from,
    so it plugs into `keras_hub.models.CausalLMPreprocessor` (which reads
    `start_token_id`, `end_token_id` and `pad_token_id`) and survives a
    `get_config()` / `from_config()` or `save_to_preset()` round trip.
    (`keras_hub.tokenizers.Llama3Tokenizer` would otherwise fit, but its
    config does not record custom start/end tokens, so a reloaded copy falls
    back to Llama 3's `<|begin_of_text|>`, which other vocabularies lack.)

    Control tokens (e.g. `<|im_start|>`) are never split: they are matched
    whole in the input text, as llama.cpp does.

    Pre-tokenization follows the GGUF `tokenizer.ggml.pre` type: `"gpt-2"`
    (GPT-2's split regex) or `"smollm"` (digits split one by one, then
    GPT-2's regex). On SmolLM2 the ids equal those of a Hugging Face
    `tokenizers` pipeline with SmolLM's pre-tokenizer (`Digits` +
    `ByteLevel`) over the same vocabulary and merges, runs of spaces and
    chat control tokens included (checked in the tests).
    Caveat: inside `tf.data` / `tf.function`, keras-hub runs its own
    TensorFlow implementation instead, which splits runs of spaces
    differently and breaks control tokens that contain `|` (keras-hub 0.32);
    tokenize eagerly (or precompute ids) when exact ids matter.

    Args:
        vocabulary: dict mapping token string to id, or a path to a json file.
        merges: list of merge rules `"a b"`, or a path to a text file.
        start_token: str or None. The token keras-hub's preprocessors
            prepend to every sequence, or `None` for models that expect none
            (`bpe_tokenizer_from_gguf` passes the GGUF `bos_token_id` only
            when `tokenizer.ggml.add_bos_token` is true; SmolLM2's is false).
        end_token: str. The end-of-sequence token (also the generation stop).
        pad_token: str. The padding token. It must differ from
            `end_token`: keras-hub's `generate()` stops as soon as every
            row holds an end token past its prompt, padding included.
        control_tokens: list of str. Tokens matched whole, never split.
        pre_tokenizer: str. One of `PRE_TOKENIZERS`.
        **kwargs: passed to `keras_hub.tokenizers.BytePairTokenizer`.

    Example:

    ```python
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "ab": 5}
    tokenizer = GGUFBytePairTokenizer(
        vocabulary=vocab, merges=["a b"], start_token="<s>",
        end_token="</s>", pad_token="<pad>",
    )
    tokenizer("abab")            # [5, 5]
    tokenizer.end_token_id       # 2
    ```
    """

    def __init__(
        self,
        vocabulary=None,
        merges=None,
        start_token=None,
        end_token=None,
        pad_token=None,
        control_tokens=(),
        pre_tokenizer="gpt-2",
        **kwargs,
    ):
        if pre_tokenizer not in PRE_TOKENIZERS:
            raise ValueError(
                f"Unsupported pre_tokenizer {pre_tokenizer!r}; expected one "
                f"of {PRE_TOKENIZERS}."
            )
        # Read by `_set_vocabulary_and_merges_tokenizers` during
        # `super().__init__`, so it must be set first.
        self.pre_tokenizer = pre_tokenizer
        if end_token is None:
            raise ValueError(
                "`end_token` is required: it is the token that stops "
                "generation."
            )
        if pad_token is None or pad_token == end_token:
            raise ValueError(
                f"`pad_token` must be given and differ from `end_token` "
                f"({end_token!r}): keras-hub's `generate()` would read the "
                "padding as end tokens and stop at once. Received: "
                f"pad_token={pad_token!r}."
            )
        self.control_tokens = list(control_tokens)
        # Special tokens must be registered before the vocabulary is set, so
        # that `set_vocabulary_and_merges` resolves (and checks) their ids.
        if start_token is not None:
            self._add_special_token(start_token, "start_token")
        else:
            self.start_token = None
            self.start_token_id = None
        self._add_special_token(end_token, "end_token")
        self._add_special_token(pad_token, "pad_token")
        for i, token in enumerate(self.control_tokens):
            self._add_special_token(token, f"control_token_{i:04d}")
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)

    def _set_vocabulary_and_merges_tokenizers(self, vocabulary, merges):
        # keras-hub builds a Hugging Face `tokenizers` BPE model with Llama
        # 3's split pattern; swap in the pre-tokenizer this vocabulary was
        # trained with.
        super()._set_vocabulary_and_merges_tokenizers(vocabulary, merges)
        steps = []
        if self.pre_tokenizer == "smollm":
            steps.append(pre_tokenizers.Digits(individual_digits=True))
        steps.append(
            pre_tokenizers.ByteLevel(
                add_prefix_space=self.add_prefix_space, use_regex=True
            )
        )
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pre_tokenizer": self.pre_tokenizer,
                "start_token": self.start_token,
                "end_token": self.end_token,
                "pad_token": self.pad_token,
                "control_tokens": self.control_tokens,
            }
        )
        return config


def bpe_tokenizer_from_gguf(gguf_file):
    """Build a `GGUFBytePairTokenizer` from a GGUF file's `gpt2` vocabulary.

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile`.

    Returns:
        A `GGUFBytePairTokenizer`.
    """
    path = gguf_file.path
    model = gguf_file.metadata("tokenizer.ggml.model")
    if model != "gpt2":
        raise NotImplementedError(
            f"GGUF file '{path}' has a '{model}' tokenizer "
            "(`tokenizer.ggml.model`); only byte-level BPE ('gpt2') is "
            "supported for this architecture."
        )
    pre = gguf_file.metadata("tokenizer.ggml.pre", "gpt-2")
    if pre not in PRE_TOKENIZERS:
        raise NotImplementedError(
            f"GGUF file '{path}' uses the '{pre}' pre-tokenizer "
            f"(`tokenizer.ggml.pre`); supported: {', '.join(PRE_TOKENIZERS)}."
        )
    tokens = gguf_file.metadata("tokenizer.ggml.tokens")
    merges = gguf_file.metadata("tokenizer.ggml.merges")
    types = gguf_file.metadata("tokenizer.ggml.token_type", None)
    vocabulary = {}
    for i, token in enumerate(tokens):
        if token in vocabulary:
            raise ValueError(
                f"GGUF file '{path}': token {token!r} appears twice in "
                f"`tokenizer.ggml.tokens` (ids {vocabulary[token]} and {i})."
            )
        vocabulary[token] = i
    if types is not None and len(types) != len(tokens):
        raise ValueError(
            f"GGUF file '{path}': `tokenizer.ggml.token_type` has "
            f"{len(types)} entries but there are {len(tokens)} tokens."
        )
    control = []
    if types is not None:
        special_types = (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
        control = [t for t, k in zip(tokens, types) if k in special_types]

    def token_at(key):
        index = gguf_file.metadata(key, None)
        if index is None:
            return None
        if not 0 <= index < len(tokens):
            raise ValueError(
                f"GGUF file '{path}': `{key}` is {index}, outside the "
                f"vocabulary of {len(tokens)} tokens."
            )
        return tokens[index]

    # llama.cpp prepends BOS only when the file asks for it; for byte-level
    # BPE vocabularies without the key it does not.
    start_token = None
    if gguf_file.metadata("tokenizer.ggml.add_bos_token", False):
        start_token = token_at("tokenizer.ggml.bos_token_id")
        if start_token is None:
            raise KeyError(
                f"GGUF file '{path}' sets `tokenizer.ggml.add_bos_token` but "
                "has no `tokenizer.ggml.bos_token_id`."
            )
    end_token = token_at("tokenizer.ggml.eos_token_id")
    if end_token is None:
        raise KeyError(
            f"GGUF file '{path}' has no `tokenizer.ggml.eos_token_id`; "
            "generation needs an end token."
        )
    # The padding token only fills masked positions, but it must not be the
    # end token (see `GGUFBytePairTokenizer`). Files often set padding = EOS
    # (SmolLM2 does); then use the unknown token, else the first token that
    # is not the end token.
    pad_token = None
    for key in (
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.unknown_token_id",
    ):
        candidate = token_at(key)
        if candidate is not None and candidate != end_token:
            pad_token = candidate
            break
    if pad_token is None:
        pad_token = tokens[0] if tokens[0] != end_token else tokens[1]
    return GGUFBytePairTokenizer(
        vocabulary=vocabulary,
        merges=list(merges),
        start_token=start_token,
        end_token=end_token,
        pad_token=pad_token,
        control_tokens=control,
        pre_tokenizer=pre,
        add_prefix_space=gguf_file.metadata(
            "tokenizer.ggml.add_space_prefix", False
        ),
    )
