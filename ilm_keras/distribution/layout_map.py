"""One `keras.distribution.LayoutMap` for every phase of the ILM.

Model parallelism on JAX goes through Keras' own machinery: a
`keras.distribution.DeviceMesh`, a `LayoutMap` from variable paths to
`TensorLayout`s, and `keras.distribution.ModelParallel`. keras-hub ships the
frozen LLM's part (`LlamaBackbone.get_layout_map`,
`GemmaBackbone.get_layout_map`, ...); `layout_map` adds the layouts of the
parts this project trains or holds (the Q-Former item encoder, the adaptor,
the CF table) and returns both in one map.
"""

import keras
import keras_hub

# The ILM's own parts, keyed by `variable.path` (`re.fullmatch`, as
# `LayoutMap` reads its keys). Every key names a layer that only this project
# creates (`qformer_layer_<i>`, `cf_projection`, `adaptor`,
# `item_soft_tokens`), so none can also match a keras-hub backbone key, which
# `LayoutMap` would refuse. "M" stands for the model-parallel axis.
#
# Q-Former blocks are split Megatron-style: the layers that widen (the fused
# query/key/value projection, cross-attention's query and key/value
# projections, the first FFN layers) are split by output column, the layers
# that narrow back (attention outputs, second FFN layers) by input row, so
# each block needs one reduction per sub-layer. The text tower's embeddings,
# the learned queries, layer norms and phase 1's small heads stay replicated.
_ANY = r"(?:.*/)?"
_BLOCK = _ANY + r"qformer_layer_\d+/"
_OWN_LAYOUTS = (
    # Q-Former (phases 1 and 2).
    (_ANY + r"cf_projection/kernel", (None, "M")),
    (_ANY + r"cf_projection/bias", ("M",)),
    (_BLOCK + r"self_attention/query_key_value/kernel", (None, "M")),
    (_BLOCK + r"self_attention/query_key_value/bias", ("M",)),
    (_BLOCK + r"cross_attention/(?:query|key_value)/kernel", (None, "M")),
    (_BLOCK + r"cross_attention/(?:query|key_value)/bias", ("M",)),
    (_BLOCK + r"(?:self|cross)_attention/attention_output/kernel", ("M", None)),
    (_BLOCK + r"(?:query|text)_ffn_in/kernel", (None, "M")),
    (_BLOCK + r"(?:query|text)_ffn_in/bias", ("M",)),
    (_BLOCK + r"(?:query|text)_ffn_out/kernel", ("M", None)),
    # Adaptor into the LLM width (phase 2): `LinearAdaptor` ...
    (_ANY + r"adaptor/projection/kernel", (None, "M")),
    (_ANY + r"adaptor/projection/bias", ("M",)),
    # ... or the CoLLM `MLPAdaptor`.
    (_ANY + r"adaptor/hidden/kernel", (None, "M")),
    (_ANY + r"adaptor/hidden/bias", ("M",)),
    (_ANY + r"adaptor/output_projection/kernel", ("M", None)),
    # The CF table (items then users) is gathered by arbitrary row ids every
    # step and its row count rarely divides a mesh: replicated.
    (_ANY + r"item_soft_tokens/cf_table", (None, None)),
)


def _find_backbone(model):
    """The keras-hub backbone (class) behind `model`, or None."""
    if model is None:
        return None
    if isinstance(model, type):
        return model if issubclass(model, keras_hub.models.Backbone) else None
    if not isinstance(model, keras_hub.models.Backbone):
        model = getattr(model, "backbone", None)
    # An `ItemLanguageModelBackbone` wraps the keras-hub LLM as `llm`.
    return getattr(model, "llm", model)


def _mesh_axis_size(device_mesh, axis):
    return device_mesh.shape[list(device_mesh.axis_names).index(axis)]


def _check_divisible(model, layouts, device_mesh):
    """Raises a `ValueError` naming every variable of `model` whose layout
    splits a dimension the mesh does not divide (JAX refuses to shard such a
    variable when it is created, with a less specific error)."""
    problems = []
    for variable in model.variables:
        layout = layouts[variable.path]
        if layout is None:
            continue
        for index, (dim, axes) in enumerate(zip(variable.shape, layout.axes)):
            if axes is None:
                continue
            parts = 1
            for axis in (axes,) if isinstance(axes, str) else axes:
                parts *= _mesh_axis_size(device_mesh, axis)
            if dim % parts:
                problems.append(
                    f"{variable.path} {tuple(variable.shape)}: axis {index} "
                    f"(size {dim}) split over {axes!r} ({parts} devices)"
                )
                break
    if problems:
        raise ValueError(
            "The layout map splits dimensions that the device mesh "
            f"{dict(zip(device_mesh.axis_names, device_mesh.shape))} does not "
            "divide:\n  " + "\n  ".join(problems) + "\nPick a mesh whose axes "
            "divide them, or resize the model (e.g. pad the LLM's "
            "`vocabulary_size` to a multiple of the mesh size; a tokenizer "
            "smaller than the embedding table is fine)."
        )


def layout_map(
    model,
    device_mesh,
    model_parallel_dim_name="model",
    data_parallel_dim_name="batch",
    backbone_layout_map=None,
):
    """A `keras.distribution.LayoutMap` for an ILM, its LLM and Q-Former.

    Composes the frozen backbone's own keras-hub layout map
    (`type(backbone).get_layout_map(device_mesh, ...)`: `LlamaBackbone`,
    `Llama3Backbone`, `GemmaBackbone`, `QwenBackbone` in keras-hub 0.32) with
    layouts for what this project adds:

    - Q-Former blocks (phase 1 and the `ilm` / `ilm_rand` encoders of phase
      2), Megatron-style on the model-parallel axis: widening projections
      (fused query/key/value, cross-attention query and key/value, first FFN
      layers, the CF projection) split by output column, narrowing ones
      (attention outputs, second FFN layers) by input row. Embeddings,
      learned queries, norms and phase 1's heads are replicated.
    - The adaptor (`LinearAdaptor`, `MLPAdaptor`): split by output column
      (the MLP's second layer by input row).
    - The CF table: replicated (gathered by arbitrary ids each step).

    Pass the result to `keras.distribution.ModelParallel(layout_map=...,
    batch_dim_name=data_parallel_dim_name)`. Layouts apply when variables
    are created, so build (or load) the model under that distribution; a
    model built before can be rebuilt under it from its config with its
    weights (see the example). Every split dimension must be divisible by
    its mesh axis; given a model instance, this function checks that and
    names the variables that are not. The map is backend-neutral; only the
    JAX backend runs `ModelParallel`.

    Args:
        model: what to lay out: an `ItemLanguageModel` (its backbone's map
            plus the parts above), a keras-hub `Backbone` instance or class
            (for building an `ItemLanguageModel` over it, e.g. before
            `from_preset`), a `QFormer` or `QFormerPretrainer` (phase 1;
            no backbone), or None (the parts above only). Instances are
            checked for divisibility.
        device_mesh: a `keras.distribution.DeviceMesh` holding both axis
            names below.
        model_parallel_dim_name: str, the mesh axis that splits weights.
        data_parallel_dim_name: str, the mesh axis that splits batches (the
            backbone maps of keras-hub also split some weight dimensions
            over it).
        backbone_layout_map: optional `LayoutMap` for a backbone whose class
            has no `get_layout_map` (GPT-2, Gemma3, Mistral, Qwen3 in
            keras-hub 0.32): its entries are used in its place. None: use
            the class's own; a backbone without one raises a `ValueError`.

    Returns:
        A `keras.distribution.LayoutMap` over `device_mesh`.

    Example:
    ```python
    mesh = keras.distribution.DeviceMesh(
        shape=(2, 4), axis_names=("batch", "model"),
        devices=keras.distribution.list_devices(),
    )
    layouts = ilm_keras.distribution.layout_map(ilm, mesh)
    distribution = keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name="batch"
    )
    with distribution.scope():  # variables are created sharded
        sharded = ilm_keras.ItemLanguageModel.from_config(ilm.get_config())
        sharded.set_weights(ilm.get_weights())
        sharded.compile(optimizer="adam")
        sharded.fit(batches, epochs=1)
        items, scores = sharded.recommend(prompts, k=10)
    # Or build over a sharded preset directly:
    # layouts = layout_map(keras_hub.models.LlamaBackbone, mesh)
    # with ModelParallel(layout_map=layouts).scope():
    #     backbone = keras_hub.models.LlamaBackbone.from_preset(...)
    #     ilm = ilm_keras.ItemLanguageModel(backbone, ...)
    ```
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            "`device_mesh` must be a `keras.distribution.DeviceMesh`, got "
            f"{type(device_mesh).__name__}."
        )
    for name in (model_parallel_dim_name, data_parallel_dim_name):
        if name not in device_mesh.axis_names:
            raise ValueError(
                f"Axis {name!r} is not an axis of the device mesh "
                f"(axis_names={tuple(device_mesh.axis_names)})."
            )
    layouts = keras.distribution.LayoutMap(device_mesh)
    backbone = _find_backbone(model)
    if backbone is not None or backbone_layout_map is not None:
        if backbone_layout_map is None:
            backbone_class = backbone if isinstance(backbone, type) else type(backbone)
            if not hasattr(backbone_class, "get_layout_map"):
                raise ValueError(
                    f"keras-hub's {backbone_class.__name__} has no "
                    "`get_layout_map`, so its weights have no model-parallel "
                    "layout to compose. Pass `backbone_layout_map=` (a "
                    "`keras.distribution.LayoutMap` over its variable paths), "
                    "or train with `keras.distribution.DataParallel`."
                )
            backbone_layout_map = backbone_class.get_layout_map(
                device_mesh,
                model_parallel_dim_name=model_parallel_dim_name,
                data_parallel_dim_name=data_parallel_dim_name,
            )
        for key in backbone_layout_map:
            layout = backbone_layout_map[key]
            layouts[key] = keras.distribution.TensorLayout(layout.axes, device_mesh)
    for key, axes in _OWN_LAYOUTS:
        layouts[key] = tuple(
            model_parallel_dim_name if axis == "M" else axis for axis in axes
        )
    if model is not None and not isinstance(model, type):
        _check_divisible(model, layouts, device_mesh)
    return layouts
