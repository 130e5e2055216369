import keras
import numpy as np
import pytest

from ilm_keras.layers.qformer_attention import QFormerAttention
from ilm_keras.layers.qformer_attention import dense_rows
from ilm_keras.layers.qformer_layer import gelu

H, HEADS = 16, 4


def _rows(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _copy_into_reference(ours, reference):
    """Loads our fused kernels into a `keras.layers.MultiHeadAttention`."""
    if ours.cross:
        q_kernel, q_bias = ours.query_dense.get_weights()
        kv_kernel, kv_bias = ours.key_value_dense.get_weights()
        k_kernel, v_kernel = np.split(kv_kernel, 2, axis=1)
        k_bias, v_bias = np.split(kv_bias, 2)
    else:
        qkv_kernel, qkv_bias = ours.query_key_value_dense.get_weights()
        q_kernel, k_kernel, v_kernel = np.split(qkv_kernel, 3, axis=1)
        q_bias, k_bias, v_bias = np.split(qkv_bias, 3)
    o_kernel, o_bias = ours.output_dense.get_weights()
    head = H // HEADS
    reference.set_weights([
        q_kernel.reshape(H, HEADS, head), q_bias.reshape(HEADS, head),
        k_kernel.reshape(H, HEADS, head), k_bias.reshape(HEADS, head),
        v_kernel.reshape(H, HEADS, head), v_bias.reshape(HEADS, head),
        o_kernel.reshape(HEADS, head, H), o_bias,
    ])


@pytest.mark.parametrize("cross", [False, True])
def test_same_function_as_keras_multi_head_attention(cross):
    x = _rows((2, 5, H), 0)
    context = _rows((2, 3, H), 1) if cross else x
    keys = context.shape[1]
    mask = np.random.default_rng(2).random((2, 5, keys)) < 0.7
    mask[..., 0] = True  # every row keeps a key
    ours = QFormerAttention(H, HEADS, cross=cross)
    got = ours(x, context if cross else None, attention_mask=mask)
    reference = keras.layers.MultiHeadAttention(HEADS, H // HEADS)
    reference(x, context, attention_mask=mask)
    _copy_into_reference(ours, reference)
    expected = reference(x, context, attention_mask=mask)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected),
        atol=1e-5,
    )


def test_masked_keys_do_not_change_the_output():
    x = _rows((1, 4, H), 3)
    mask = np.ones((1, 4, 4), bool)
    mask[:, :, 3] = False
    layer = QFormerAttention(H, HEADS)
    before = keras.ops.convert_to_numpy(layer(x, attention_mask=mask))
    x2 = x.copy()
    x2[:, 3] += 10.0  # only the masked key/value row changes ...
    after = keras.ops.convert_to_numpy(layer(x2, attention_mask=mask))
    # ... so rows 0-2 are unchanged (row 3 changes: it is also a query).
    np.testing.assert_allclose(before[:, :3], after[:, :3], atol=1e-5)


def test_context_errors_are_named():
    with pytest.raises(ValueError, match="needs a `context`"):
        QFormerAttention(H, HEADS, cross=True)(_rows((1, 2, H), 0))
    with pytest.raises(ValueError, match="takes no `context`"):
        QFormerAttention(H, HEADS)(_rows((1, 2, H), 0), _rows((1, 2, H), 1))
    with pytest.raises(ValueError, match="not divisible"):
        QFormerAttention(10, 3)


def test_config_round_trip():
    layer = QFormerAttention(H, HEADS, cross=True, dropout=0.2)
    clone = QFormerAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_dense_rows_equals_dense():
    dense = keras.layers.Dense(7)
    x = _rows((2, 3, H), 4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(dense_rows(dense, x)),
        keras.ops.convert_to_numpy(dense(x)),
        atol=1e-6,
    )


def test_gelu_is_the_exact_erf_gelu():
    x = np.linspace(-6, 6, 101).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(gelu(x)),
        keras.ops.convert_to_numpy(
            keras.activations.gelu(x, approximate=False)
        ),
        atol=1e-6,
    )
