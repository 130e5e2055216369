import keras
import numpy as np
import pytest

from ilm_keras import QFormer
from ilm_keras.layers.qformer_attention_mask import qformer_attention_mask

CF_DIM, N, L, VOCAB = 6, 3, 7, 40


def tiny_qformer(**overrides):
    config = dict(
        vocabulary_size=VOCAB,
        cf_dim=CF_DIM,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        num_query_tokens=N,
        max_text_length=L,
        num_cf_tokens=2,
        cross_attention_frequency=1,
        dropout=0.0,
    )
    config.update(overrides)
    return QFormer(**config)


def make_inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    padding_mask = np.ones((batch, L), bool)
    padding_mask[0, 5:] = False
    return {
        "cf_embedding": rng.normal(size=(batch, CF_DIM)).astype("float32"),
        "token_ids": rng.integers(5, VOCAB, size=(batch, L)).astype("int32"),
        "padding_mask": padding_mask,
    }


@pytest.fixture(scope="module")
def qformer():
    return tiny_qformer()


def run(model, inputs, mode):
    out = model(inputs, mode=mode)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def with_token(inputs, position, token):
    changed = {k: np.array(v) for k, v in inputs.items()}
    changed["token_ids"][:, position] = token
    return changed


def test_output_shapes(qformer):
    for mode in ("unimodal", "matching", "generation"):
        out = run(qformer, make_inputs(), mode)
        assert out["query_outputs"].shape == (2, N, 16)
        assert out["text_outputs"].shape == (2, L, 16)
    assert keras.ops.convert_to_numpy(
        qformer.encode_items(make_inputs()["cf_embedding"])
    ).shape == (2, N, 16)


def test_unimodal_queries_ignore_text(qformer):
    inputs = make_inputs()
    base = run(qformer, inputs, "unimodal")
    changed = run(qformer, with_token(inputs, 2, 4), "unimodal")
    np.testing.assert_array_equal(base["query_outputs"], changed["query_outputs"])
    assert not np.allclose(base["text_outputs"], changed["text_outputs"])
    # The text tower also ignores the item.
    other_item = dict(inputs, cf_embedding=inputs["cf_embedding"] + 1.0)
    np.testing.assert_allclose(
        base["text_outputs"],
        run(qformer, other_item, "unimodal")["text_outputs"],
        atol=1e-6,
    )


def test_unimodal_query_outputs_equal_encode_items(qformer):
    inputs = make_inputs()
    np.testing.assert_allclose(
        run(qformer, inputs, "unimodal")["query_outputs"],
        keras.ops.convert_to_numpy(qformer.encode_items(inputs["cf_embedding"])),
        atol=1e-6,
    )


def test_generation_is_causal_and_queries_ignore_text(qformer):
    inputs = make_inputs()
    base = run(qformer, inputs, "generation")
    changed = run(qformer, with_token(inputs, 4, 4), "generation")
    np.testing.assert_allclose(
        base["text_outputs"][:, :4], changed["text_outputs"][:, :4], atol=1e-6
    )
    assert not np.allclose(base["text_outputs"][:, 4:], changed["text_outputs"][:, 4:])
    np.testing.assert_array_equal(base["query_outputs"], changed["query_outputs"])
    # Text does see the item.
    other_item = dict(inputs, cf_embedding=inputs["cf_embedding"] + 1.0)
    assert not np.allclose(
        base["text_outputs"], run(qformer, other_item, "generation")["text_outputs"]
    )


def test_matching_is_bidirectional(qformer):
    inputs = make_inputs()
    base = run(qformer, inputs, "matching")
    changed = run(qformer, with_token(inputs, 4, 4), "matching")
    assert not np.allclose(base["query_outputs"], changed["query_outputs"])
    assert not np.allclose(base["text_outputs"][:, :4], changed["text_outputs"][:, :4])


def test_padding_is_ignored(qformer):
    inputs = make_inputs()
    base = run(qformer, inputs, "matching")
    changed = run(qformer, with_token(inputs, 6, 4), "matching")
    # Row 0 is padded from position 5: its real rows must not change.
    np.testing.assert_allclose(
        base["query_outputs"][0], changed["query_outputs"][0], atol=1e-6
    )
    np.testing.assert_allclose(
        base["text_outputs"][0, :5], changed["text_outputs"][0, :5], atol=1e-6
    )


def test_attention_mask_matches_definition():
    padding = np.array([[1, 1, 0]], bool)
    got = keras.ops.convert_to_numpy(qformer_attention_mask("generation", 2, padding))[0]
    # rows/cols: q0 q1 t0 t1 t2(pad)
    expected = np.array(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(got, expected)
    uni = keras.ops.convert_to_numpy(qformer_attention_mask("unimodal", 2, padding))[0]
    np.testing.assert_array_equal(uni[:2], [[1, 1, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(uni[2:], [[0, 0, 1, 1, 0]] * 3)
    match = keras.ops.convert_to_numpy(qformer_attention_mask("matching", 2, padding))[0]
    np.testing.assert_array_equal(match, [[1, 1, 1, 1, 0]] * 5)
    with pytest.raises(ValueError, match="Unknown Q-Former mode"):
        qformer_attention_mask("causal", 2, padding)


def test_single_cf_token_gives_every_query_the_same_cross_attention():
    model = tiny_qformer(num_cf_tokens=1, num_layers=1)
    layer = model.transformer_layers[0]
    cf_tokens = model._cf_tokens(make_inputs()["cf_embedding"])
    queries = np.random.default_rng(1).normal(size=(2, N, 16)).astype("float32")
    out = keras.ops.convert_to_numpy(layer.cross_attention(queries, cf_tokens))
    np.testing.assert_allclose(out[:, 0], out[:, 1], atol=1e-5)
    np.testing.assert_allclose(out[:, 0], out[:, 2], atol=1e-5)


def test_save_and_load_round_trip(qformer, tmp_path):
    inputs = make_inputs()
    path = str(tmp_path / "qformer.keras")
    qformer.save(path)
    restored = keras.models.load_model(path)
    for mode in ("unimodal", "matching", "generation"):
        expected, got = run(qformer, inputs, mode), run(restored, inputs, mode)
        for key in expected:
            np.testing.assert_array_equal(expected[key], got[key])
    assert restored.get_config() == qformer.get_config()


def test_wrong_cf_dimension_is_named(qformer):
    with pytest.raises(ValueError, match="cf_dim=6"):
        qformer.encode_items(np.zeros((2, CF_DIM + 1), "float32"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_cf_vectors_raise(qformer, bad):
    cf = np.zeros((2, CF_DIM), "float32")
    cf[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        qformer.encode_items(cf)


def test_empty_text_raises(qformer):
    inputs = make_inputs()
    inputs["padding_mask"][1] = False
    with pytest.raises(ValueError, match="Empty text"):
        qformer(inputs, mode="matching")


def test_text_longer_than_limit_raises(qformer):
    inputs = make_inputs()
    inputs["token_ids"] = np.ones((2, L + 1), "int32")
    inputs["padding_mask"] = np.ones((2, L + 1), bool)
    with pytest.raises(ValueError, match="max_text_length"):
        qformer(inputs, mode="matching")


def test_bad_config_raises():
    with pytest.raises(ValueError, match="num_cf_tokens"):
        tiny_qformer(num_cf_tokens=0)
    with pytest.raises(ValueError, match="divisible"):
        tiny_qformer(num_heads=3)


def _cf_sensitivity(initializer_range, seed=0):
    """Mean relative change of an untrained width-64 Q-Former's query
    outputs when each item's CF vector is replaced by another item's."""
    keras.utils.set_random_seed(seed)
    qformer = QFormer(vocabulary_size=50, cf_dim=32, num_layers=2,
                      hidden_dim=64, num_heads=4, intermediate_dim=256,
                      num_query_tokens=4, max_text_length=8, num_cf_tokens=4,
                      initializer_range=initializer_range)
    cf = np.random.default_rng(seed).normal(size=(64, 32)).astype("float32")
    a = keras.ops.convert_to_numpy(qformer.encode_items(cf))
    b = keras.ops.convert_to_numpy(qformer.encode_items(np.roll(cf, 1, axis=0)))
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def test_a_narrow_qformer_reads_its_cf_vector_only_with_a_wider_init():
    # BLIP-2's 0.02 is sized for width 768; at width 64 another CF vector
    # moves the query outputs by 1.3-1.5% with it and by 56-64% with
    # 1/sqrt(64) (seeds 0-2 on JAX; the README's "Recommendation quality").
    for seed in range(3):
        narrow, wide = _cf_sensitivity(0.02, seed), _cf_sensitivity(0.125, seed)
        print(f"LEARNING cf sensitivity seed {seed}: 0.02 -> {narrow:.4f}, "
              f"0.125 -> {wide:.4f}")
        assert narrow < 0.05 and wide > 0.2 and wide > 8 * narrow, (narrow, wide)
