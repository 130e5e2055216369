"""Phases 1 and 2 under `tf.distribute.MirroredStrategy` (TensorFlow).

Each test runs a scenario of `distributed_runs.py` in a child process with
2 logical CPU devices, and compares `fit` under the strategy with `fit` on
one device from the same weights on the same batches (plain SGD).

- Phase 2: the same global batches of 8. Every response is one item name
  (7 tokens), so both replicas hold as many response tokens, and the mean
  of the replicas' losses (what Keras optimizes under a strategy) is the
  one-device loss.
- Phase 1: its contrastive losses take their negatives from the batch, and
  each replica sees only its half. The one-device run therefore trains on
  the two halves of every global batch in turn, their gradients averaged
  (`gradient_accumulation_steps=2`): the strategy must match that exactly.
  It did not before `QFormerPretrainer.compute_loss` divided its loss by
  the number of replicas (`ilm_keras.utils.replicas`): the replicas'
  gradients were summed, twice the step, and twice the reported loss.

Boolean inputs are fed as int32 (see `int_masks` there: Keras 3.15's `fit`
under a strategy cannot average a bool batch when it builds the model).

Tolerances: every batch loss within `rtol=1e-5` and every weight within
`1e-4` of the one-device run's, after training moved some weight by more
than 0.01 (measured: losses ~5e-7 apart, weights 2e-6 in phase 1 and 1e-8
in phase 2). Each child costs 15-25 s of CPU.
"""

import keras
import numpy as np
import pytest

from run_helpers import run_scenario

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute strategies run on the TensorFlow backend",
)


def test_phase1_fit_under_mirrored_strategy_matches_one_device_on_replica_halves():
    result = run_scenario("tf_phase1")
    one, mirrored = result["one"], result["mirrored"]
    assert mirrored["replicas"] == 2
    assert len(one["logs"]) == len(mirrored["logs"]) == 6
    # Item-text, item-item and user-item batches took turns.
    last = one["logs"][-1]
    assert all(last[f"{name}_loss"] > 0 for name in ("itc", "itg", "itm", "ii", "ui"))
    for a, b in zip(one["logs"], mirrored["logs"]):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6,
                                       err_msg=name)
    assert result["moved"] > 0.01
    assert mirrored["weight_diff"] < 1e-4


def test_phase2_fit_under_mirrored_strategy_matches_one_device():
    result = run_scenario("tf_phase2")
    one, mirrored = result["one"], result["mirrored"]
    assert mirrored["replicas"] == 2
    assert len(one["losses"]) == 4  # 2 epochs of 2 batches of 8
    np.testing.assert_allclose(mirrored["losses"], one["losses"], rtol=1e-5)
    assert result["moved"] > 0.01
    assert mirrored["weight_diff"] < 1e-4
