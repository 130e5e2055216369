"""`ilm_keras.distribution.layout_map`: what the composed map holds.

A `LayoutMap` is plain data until a distribution applies it, so these run
in-process on either backend, over a mesh of 8 named (not real) devices.
Applying it is tested in `test_distribution_jax_mesh.py`.
"""

import keras
import keras_hub
import pytest

import ilm_keras
from ilm_keras.distribution import layout_map
from tiny_models import phase1_pretrainer
from tiny_models import phase1_problem
from tiny_models import phase2_model
from tiny_models import phase2_tokenizer

HUB_CLASSES = {
    "llama": keras_hub.models.LlamaBackbone,
    "gemma": keras_hub.models.GemmaBackbone,
}


def mesh(axis_names=("batch", "model")):
    return keras.distribution.DeviceMesh(
        (2, 4), axis_names, [f"cpu:{i}" for i in range(8)]
    )


def axes(layouts, path):
    layout = layouts[path]  # raises if two keys match the path
    return None if layout is None else tuple(layout.axes)


@pytest.fixture(scope="module")
def tokenizer():
    return phase2_tokenizer()


@pytest.mark.parametrize("arch,encoder", [("llama", "ilm"), ("gemma", "mlp")])
def test_composes_the_backbone_map_with_the_ilm_parts(tokenizer, arch, encoder):
    model = phase2_model(tokenizer, arch, encoder, num_layers=1)
    device_mesh = mesh()
    layouts = layout_map(model, device_mesh)
    hub = HUB_CLASSES[arch].get_layout_map(device_mesh)
    # keras-hub's entries, unchanged, on our mesh.
    for key in hub:
        assert axes(layouts, key) == tuple(hub[key].axes)
        assert layouts[key].device_mesh is device_mesh
    # No backbone variable is caught by one of our keys: each gets exactly
    # keras-hub's layout (or none).
    for v in model.backbone.llm.weights:
        assert axes(layouts, v.path) == axes(hub, v.path), v.path
    assert axes(layouts, "token_embedding/embeddings") == ("model", "batch")
    # Our parts: every variable resolves to at most one key.
    own = {v.path: axes(layouts, v.path) for v in model.weights}
    assert own["item_soft_tokens/cf_table"] == (None, None)
    if encoder == "ilm":
        assert own["adaptor/projection/kernel"] == (None, "model")
        assert own["adaptor/projection/bias"] == ("model",)
        block = f"{model.qformer.name}/qformer_layer_0/"
        assert own[block + "self_attention/query_key_value/kernel"] == (None, "model")
        assert own[block + "cross_attention/key_value/kernel"] == (None, "model")
        assert own[block + "cross_attention/attention_output/kernel"] == ("model", None)
        assert own[block + "query_ffn_in/kernel"] == (None, "model")
        assert own[block + "query_ffn_out/kernel"] == ("model", None)
        assert own[f"{model.qformer.name}/query_tokens"] is None  # replicated
    else:
        assert own["adaptor/hidden/kernel"] == (None, "model")
        assert own["adaptor/output_projection/kernel"] == ("model", None)


def test_backbone_class_qformer_and_custom_axis_names():
    # Before any model exists (e.g. to build over `from_preset` under the
    # distribution): the class's map plus ours.
    device_mesh = mesh(("data", "mp"))
    layouts = layout_map(
        keras_hub.models.LlamaBackbone, device_mesh,
        model_parallel_dim_name="mp", data_parallel_dim_name="data",
    )
    assert axes(layouts, "token_embedding/embeddings") == ("mp", "data")
    assert axes(layouts, "adaptor/projection/kernel") == (None, "mp")
    # Phase 1: no backbone; the Q-Former's blocks are split, the heads not.
    pretrainer = phase1_pretrainer(phase1_problem(), "it")
    layouts = layout_map(pretrainer, mesh())
    paths = {v.path: axes(layouts, v.path) for v in pretrainer.weights}
    qkv = [p for p in paths if p.endswith("self_attention/query_key_value/kernel")]
    assert qkv and all(paths[p] == (None, "model") for p in qkv)
    assert paths["item_projection/kernel"] is None
    assert axes(layout_map(None, mesh()), "token_embedding/embeddings") is None


def test_backbones_without_a_keras_hub_map(tokenizer):
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=152, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=64,
    )
    with pytest.raises(ValueError, match="GPT2Backbone has no `get_layout_map`"):
        layout_map(backbone, mesh())
    # A map of the user's own is composed in its place.
    device_mesh = mesh()
    own = keras.distribution.LayoutMap(device_mesh)
    own["transformer_layer_.*_intermediate_dense/kernel"] = (None, "model")
    layouts = layout_map(backbone, device_mesh, backbone_layout_map=own)
    path = "transformer_layer_0/feedforward_intermediate_dense/kernel"
    assert path in [v.path for v in backbone.weights]
    assert axes(layouts, path) == (None, "model")


def test_indivisible_dimensions_are_named(tokenizer):
    # The tokenizer's own vocabulary (145 rows) does not split 4 ways.
    model = phase2_model(
        tokenizer, num_layers=1, vocabulary_size=tokenizer.vocabulary_size()
    )
    with pytest.raises(ValueError) as error:
        layout_map(model, mesh())
    message = str(error.value)
    assert "token_embedding/embeddings (145, 16)" in message
    assert "vocabulary_size" in message


def test_bad_meshes():
    with pytest.raises(TypeError, match="DeviceMesh"):
        layout_map(None, (2, 4))
    with pytest.raises(ValueError, match="'model' is not an axis"):
        layout_map(None, mesh(("batch", "tensor")))


def test_public_name():
    assert ilm_keras.distribution.layout_map is layout_map
