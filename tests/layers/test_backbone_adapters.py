"""Backbone adapters: what each relies on in keras-hub is still there.

A keras-hub release that renames an attribute, a block's call argument or a
private sublayer an adapter uses fails here, with the name in the message.
"""

import keras_hub
import numpy as np
import pytest
from keras import ops
from test_soft_token_decoder import ARCHS
from test_soft_token_decoder import make_backbone
from test_soft_token_decoder import make_inputs

from ilm_keras.layers import backbone_adapters
from ilm_keras.layers.backbone_adapters import LlamaAdapter
from ilm_keras.layers.backbone_adapters import adapter_for
from ilm_keras.layers.soft_token_decoder import SoftTokenDecoder

FAMILIES = {
    "gpt2": backbone_adapters.GPT2Adapter,
    "llama": LlamaAdapter,
    "mistral": LlamaAdapter,
    "qwen": LlamaAdapter,
    "qwen3": LlamaAdapter,
    "gemma": backbone_adapters.GemmaAdapter,
    "gemma3": backbone_adapters.Gemma3Adapter,
}


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_finds_everything_it_relies_on(arch):
    adapter = adapter_for(make_backbone(arch))
    assert type(adapter) is FAMILIES[arch]
    missing = adapter.missing_names()
    assert not missing, (
        f"keras-hub {keras_hub.__version__} changed {type(adapter.backbone).__name__}: "
        f"{type(adapter).__name__} relies on {missing}, which are gone."
    )
    # The shared-prompt beam search needs the private Llama sublayers.
    assert adapter.supports_shared_prompt_decoding == (arch == "llama")


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_without_soft_tokens_is_the_backbone(arch):
    backbone = make_backbone(arch)
    adapter = adapter_for(backbone)
    token_ids, padding_mask = make_inputs(length=6)
    x = adapter.add_positions(adapter.embed_tokens(token_ids))
    for block in adapter.blocks:
        x = adapter.block(block, x, padding_mask)
    hidden = adapter.final_norm(x)
    expected = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    np.testing.assert_allclose(
        ops.convert_to_numpy(hidden), ops.convert_to_numpy(expected), atol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(adapter.logits(hidden)),
        ops.convert_to_numpy(backbone.token_embedding(expected, reverse=True)),
        atol=1e-5,
    )


def test_llama_block_parts_are_the_blocks_sublayers():
    # `block_parts` run as the block does == the block (no cache, one token).
    backbone = make_backbone("llama")
    adapter = adapter_for(backbone)
    block = adapter.blocks[0]
    parts = adapter.block_parts(block)
    x = adapter.embed_tokens(np.array([[3]], "int32"))
    h = parts.attention_norm(x)
    value = parts.value_dense(h)  # one position: attention = its value
    value = ops.repeat(value, parts.num_key_value_groups, axis=2)
    x = parts.output_dense(value) + x
    h = parts.feedforward_norm(x)
    gate = ops.cast(parts.activation(ops.cast(parts.feedforward_gate_dense(h),
                                              "float32")), parts.compute_dtype)
    out = parts.feedforward_output_dense(
        parts.feedforward_intermediate_dense(h) * gate) + x
    expected = block(adapter.embed_tokens(np.array([[3]], "int32")),
                     decoder_padding_mask=np.ones((1, 1), bool))
    np.testing.assert_allclose(ops.convert_to_numpy(out),
                               ops.convert_to_numpy(expected), atol=1e-5)


def test_a_renamed_call_argument_fails_naming_it():
    class Renamed(LlamaAdapter):
        BLOCK_CALL_ARGUMENTS = ("decoder_padding_mask", "kv_cache")

    adapter = Renamed(make_backbone("llama"))
    assert "LlamaTransformerDecoder.call(kv_cache=...)" in adapter.missing_names()
    with pytest.raises(RuntimeError, match=r"missing .*call\(kv_cache=\.\.\.\)"):
        adapter.check()


def test_a_renamed_private_attribute_turns_the_fast_path_off():
    class Renamed(LlamaAdapter):
        PRIVATE_ATTRIBUTES = {
            **LlamaAdapter.PRIVATE_ATTRIBUTES,
            "LlamaAttention": ("_renamed_key_dense",),
        }

    adapter = Renamed(make_backbone("llama"))
    assert adapter.missing_names() == ["LlamaAttention._renamed_key_dense"]
    adapter.check()  # the general path does not need it
    assert not adapter.supports_shared_prompt_decoding


def test_decoder_refuses_a_backbone_its_adapter_cannot_run(monkeypatch):
    monkeypatch.setattr(
        backbone_adapters.GPT2Adapter, "BACKBONE_ATTRIBUTES",
        backbone_adapters.GPT2Adapter.BACKBONE_ATTRIBUTES + ("renamed_layer",))
    with pytest.raises(RuntimeError, match="GPT2Backbone.renamed_layer"):
        SoftTokenDecoder(make_backbone("gpt2"))
