"""Phases 1 and 2 and `recommend()` under `keras.distribution` (JAX).

Each test runs a scenario of `distributed_runs.py` in a child process with
8 virtual CPU devices: the same tiny model trains from the same weights on
the same batches on one device and distributed (`DataParallel` over the 8
devices, or `ModelParallel` on a (2, 4) `("batch", "model")` mesh with
`ilm_keras.distribution.layout_map`), with plain SGD (Adam's first steps
would turn rounding noise in near-zero gradients into +-lr moves).

Tolerances: every batch loss within `rtol=1e-5` of one device's, and every
weight within `1e-4` after training moved some weight by more than 0.01
(measured: losses agree to ~1e-6, weights to <= 6e-6 in phase 1 and <= 3e-8
in phase 2); `recommend()` scores within 1e-4 (measured 4e-6) and the same
items, in the same order, where the one-device ranking separates neighbours
by more than 1e-3 (measured >= 2.6e-3). Each child costs 20-40 s of CPU.
"""

import keras
import numpy as np
import pytest

from run_helpers import run_scenario

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution (DataParallel, ModelParallel) runs on JAX",
)

LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-4
SCORE_ATOL = 1e-4


def assert_same_training(one, other, moved):
    """Same batch losses (every log key) and weights as on one device."""
    if "logs" in one:
        assert len(one["logs"]) == len(other["logs"])
        for a, b in zip(one["logs"], other["logs"]):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_allclose(b[name], a[name], rtol=LOSS_RTOL,
                                           atol=1e-6, err_msg=name)
    else:
        np.testing.assert_allclose(other["losses"], one["losses"],
                                   rtol=LOSS_RTOL)
    assert moved > 0.01  # it trained
    assert other["weight_diff"] < WEIGHT_ATOL


@pytest.mark.parametrize("setting", ["data_parallel", "model_parallel"])
def test_phase1_fit_matches_one_device(setting):
    result = run_scenario(f"jax_phase1_{setting}")
    assert len(result["one"]["logs"]) == 6
    assert_same_training(result["one"], result[setting], result["moved"])
    shardings = result[setting]["shardings"]

    def find(suffix):  # the Q-Former's name depends on what ran before
        (path,) = [p for p in shardings if p.endswith(suffix)]
        return shardings[path]

    qkv = find("qformer_layer_0/self_attention/query_key_value/kernel")
    out = find("qformer_layer_0/self_attention/attention_output/kernel")
    if setting == "data_parallel":
        for spec, devices, shard, shape in shardings.values():
            assert devices == 8 and shard == shape  # replicated on all 8
    else:
        # Megatron-style split of the Q-Former block over the model axis.
        assert qkv[:3] == [[None, "model"], 8, [16, 12]]
        assert out[:3] == [["model", None], 8, [4, 16]]


def test_phase2_fit_matches_one_device_and_the_frozen_llm_is_sharded():
    result = run_scenario("jax_phase2")
    one = result["one"]
    assert len(one["losses"]) == 4  # 2 epochs of 2 batches of 8
    for setting in ("data_parallel", "model_parallel"):
        assert_same_training(one, result[setting], result["moved"])
    assert result["data_parallel"]["replicated"]

    mp = result["model_parallel"]
    assert mp["llm_unchanged"]  # frozen under ModelParallel too
    shardings = mp["shardings"]
    # Every backbone variable has keras-hub's own layout (or is replicated
    # where keras-hub gives none): the composed map leaves them alone.
    hub = mp["keras_hub_axes"]
    assert len(hub) >= 10
    for path in mp["backbone_paths"]:
        spec, devices, shard, shape = shardings[path]
        assert devices == 8
        assert spec == hub.get(path, [None] * len(shape)), path
    # ... and they really are split: each device holds a part.
    for path in (
        "token_embedding/embeddings",
        "transformer_layer_0/self_attention/query/kernel",
        "transformer_layer_1/feedforward_gate_dense/kernel",
    ):
        spec, devices, shard, shape = shardings[path]
        assert np.prod(shard) * 8 == np.prod(shape), path
    assert shardings["token_embedding/embeddings"][:3] == [
        ["model", "batch"], 8, [38, 8]
    ]
    # The trained parts and the CF table.
    assert shardings["adaptor/projection/kernel"][:3] == [[None, "model"], 8, [16, 4]]
    qkv = [p for p in shardings if p.endswith("self_attention/query_key_value/kernel")]
    assert qkv and all(shardings[p][0] == [None, "model"] for p in qkv)
    assert shardings["item_soft_tokens/cf_table"][:3] == [[None, None], 8, [12, 8]]


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_recommend_under_model_parallel_returns_the_same_items(arch):
    # Llama: Q-Former encoder, shared-prompt beam search. Gemma: MLP
    # adaptor, per-beam caches, Gemma's keras-hub layout map.
    result = run_scenario(f"jax_recommend_{arch}")
    one, mp = result["one"], result["model_parallel"]
    scores = np.array(one["scores"])
    # Items near-tied on one device could swap places under other rounding;
    # these are not (so equal lists are a real check).
    assert np.min(scores[:, :-1] - scores[:, 1:]) > 1e-3
    assert mp["items"] == one["items"]
    np.testing.assert_allclose(mp["scores"], one["scores"], atol=SCORE_ATOL)
    # Not all prompts get the same list.
    assert len({tuple(items) for items in one["items"]}) > 1
    sharded = [p for p, (spec, *_) in mp["shardings"].items()
               if any(axis is not None for axis in spec)]
    assert "token_embedding/embeddings" in sharded
    assert any(p.startswith("adaptor/") for p in sharded)
