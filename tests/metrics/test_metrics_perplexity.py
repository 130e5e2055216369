import math

import keras
import numpy as np
import pytest

from ilm_keras.metrics import LogPerplexity
from ilm_keras.metrics import log_perplexity
from ilm_keras.metrics import token_nll


def test_uniform_logits_give_log_vocab():
    logits = np.zeros((2, 3, 7), np.float32)
    labels = np.array([[0, 6, 3], [1, 1, 2]])
    assert log_perplexity(logits, labels) == pytest.approx(
        math.log(7), rel=1e-6
    )


def test_hand_worked_with_mask():
    logits = np.log(
        np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]])
    )
    labels = np.array([[0, 1, -100]])  # the last position is padding
    mask = np.array([[1, 1, 0]])
    want = (-math.log(0.5) - math.log(0.8)) / 2
    assert log_perplexity(logits, labels, mask) == pytest.approx(want, rel=1e-6)
    nll = keras.ops.convert_to_numpy(token_nll(logits[:, :2], labels[:, :2]))
    np.testing.assert_allclose(
        nll, [[-math.log(0.5), -math.log(0.8)]], rtol=1e-6
    )


def test_function_and_metric_agree_on_fractional_weights():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    labels = np.array([[0, 1]])
    mask = np.array([[1.0, 0.5]])
    want = (-math.log(0.5) - 0.5 * math.log(0.8)) / 1.5
    metric = LogPerplexity()
    metric.update_state(labels, logits, sample_weight=mask)
    assert float(metric.result()) == pytest.approx(want, rel=1e-6)
    assert log_perplexity(logits, labels, mask) == pytest.approx(want, rel=1e-6)


def test_large_logits_are_stable():
    logits = np.array([[[1000.0, 0.0]]], np.float32)
    assert log_perplexity(logits, np.array([[0]])) == pytest.approx(
        0.0, abs=1e-6
    )


def test_errors():
    logits = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match="selects no tokens"):
        log_perplexity(logits, np.array([[0, 1]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="outside 0..2"):
        log_perplexity(logits, np.array([[0, 3]]))
    with pytest.raises(ValueError, match="plus a vocabulary axis"):
        log_perplexity(logits, np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="`mask`"):
        log_perplexity(logits, np.array([[0, 1]]), np.ones((2, 2)))
    bad = logits.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        log_perplexity(bad, np.array([[0, 1]]))


def test_streaming_metric_weights_tokens_not_batches(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(3, 4))
    labels[2, 3] = -100
    mask = np.ones((3, 4), np.float32)
    mask[0, 2:] = 0  # uneven token counts per batch
    mask[2, 3] = 0
    metric = LogPerplexity()
    metric.update_state(labels[:1], logits[:1], sample_weight=mask[:1])
    metric.update_state(labels[1:], logits[1:], sample_weight=mask[1:])
    want = log_perplexity(logits, labels, mask)
    assert float(metric.result()) == pytest.approx(want, rel=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0

    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(LogPerplexity(name="ppl"))
    )
    assert isinstance(restored, LogPerplexity) and restored.name == "ppl"
