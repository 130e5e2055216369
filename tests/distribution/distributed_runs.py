"""Training runs on several virtual CPU devices, for the distribution tests.

Run as `python distributed_runs.py SCENARIO` in a fresh process (the device
count is fixed when the backend starts): the JAX scenarios see 8 virtual
CPU devices (`--xla_force_host_platform_device_count=8`), the TensorFlow
ones 2 logical CPU devices. Each trains the same tiny model on one device
and distributed, from the same weights on the same batches, and prints one
line `RESULT <json>` with what the tests compare (losses, weight
differences, variable shardings, recommendations). The assertions live in
the tests (`test_distribution_jax_mesh.py`, `test_distribution_tf_mirrored.py`).

Scenarios:
    jax_phase1_data_parallel, jax_phase1_model_parallel:
        `QFormerPretrainer.fit` on one device and under `DataParallel` over
        8 devices / `ModelParallel` on a (2, 4) mesh.
    jax_phase2: `ItemLanguageModel.fit` (Llama + Q-Former encoder), the
        same three settings; the shardings of every variable.
    jax_recommend_llama, jax_recommend_gemma: a few one-device training
        steps, then `recommend()` on one device and under `ModelParallel`
        (Llama: shared-prompt beam search, Q-Former encoder; Gemma: per-beam
        caches, MLP adaptor, Gemma's keras-hub layout map).
    tf_phase1, tf_phase2: `fit` on one device and under
        `tf.distribute.MirroredStrategy` over 2 logical CPUs.
"""

import functools
import json
import os
import sys

SCENARIO = sys.argv[1]
if SCENARIO.startswith("jax"):
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
else:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    # Before TensorFlow initializes its devices.
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import ilm_keras  # noqa: E402
from tiny_models import ITEMS  # noqa: E402
from tiny_models import phase1_dataset  # noqa: E402
from tiny_models import phase1_pretrainer  # noqa: E402
from tiny_models import phase1_problem  # noqa: E402
from tiny_models import phase2_model  # noqa: E402
from tiny_models import phase2_pairs  # noqa: E402
from tiny_models import phase2_tokenizer  # noqa: E402


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def max_diff(a, b):
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b)))


class BatchLosses(keras.callbacks.Callback):
    """Every batch's logs (Keras' running means within the epoch)."""

    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})


# ----------------------------------------------------------------------
# Phase 2 training, shared by both backends.
# ----------------------------------------------------------------------
def fit_phase2(model, weights, x, y=None, sample_weight=None, epochs=2):
    """SGD from `weights`, batches of 8 in order; every batch's loss."""
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    losses = BatchLosses()
    # Strings go through the preprocessor (keras-hub's `fit`), arrays not.
    fit = model.fit if y is None else functools.partial(keras.Model.fit, model)
    fit(
        x, y, sample_weight=sample_weight, batch_size=8, epochs=epochs,
        shuffle=False, verbose=0, callbacks=[losses],
    )
    return [log["loss"] for log in losses.logs]


# ----------------------------------------------------------------------
# JAX: keras.distribution on 8 virtual devices.
# ----------------------------------------------------------------------
def mesh_2x4():
    return keras.distribution.DeviceMesh(
        (2, 4), ("batch", "model"), keras.distribution.list_devices()
    )


def shardings(variables):
    """`{path: [spec, devices, shard shape, shape]}`."""
    out = {}
    for v in variables:
        sharding = v.value.sharding
        out[v.path] = [
            [None if a is None else str(a) for a in sharding.spec]
            + [None] * (len(v.shape) - len(sharding.spec)),
            len(sharding.device_set),
            list(sharding.shard_shape(tuple(v.shape))),
            list(v.shape),
        ]
    return out


def jax_phase1(setting):
    """`setting`: `"data_parallel"` or `"model_parallel"`, each against one
    device (two processes: one compile per setting costs ~12 s of CPU)."""
    problem = phase1_problem()
    losses = "it"  # item-text batches: contrastive, generation, matching
    base = phase1_pretrainer(problem, losses)
    weights = base.get_weights()

    def run(model):
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        logs = BatchLosses()
        model.fit(
            phase1_dataset(problem, losses, batch_size=8), steps_per_epoch=6,
            epochs=1, shuffle=False, verbose=0, callbacks=[logs],
        )
        return logs.logs, [to_np(w) for w in model.weights]

    one_logs, one_weights = run(base)
    if setting == "data_parallel":
        distribution = keras.distribution.DataParallel()
    else:
        distribution = keras.distribution.ModelParallel(
            layout_map=ilm_keras.distribution.layout_map(base, mesh_2x4()),
            batch_dim_name="batch",
        )
    with distribution.scope():
        model = phase1_pretrainer(problem, losses)
        logs, w = run(model)
    return {
        "one": {"logs": one_logs},
        setting: {
            "logs": logs,
            "weight_diff": max_diff(w, one_weights),
            "shardings": shardings(model.qformer.weights),
        },
        "moved": max_diff(one_weights, weights),
    }


def jax_phase2():
    tokenizer = phase2_tokenizer()
    pairs = phase2_pairs()
    base = phase2_model(tokenizer)
    weights = base.get_weights()
    out = {"one": {"losses": fit_phase2(base, weights, pairs)}}
    one_weights = [to_np(w) for w in base.weights]
    out["moved"] = max_diff(one_weights, weights)
    with keras.distribution.DataParallel().scope():
        model = phase2_model(tokenizer)
        losses = fit_phase2(model, weights, pairs)
    out["data_parallel"] = {
        "losses": losses,
        "weight_diff": max_diff([to_np(w) for w in model.weights], one_weights),
        "replicated": all(
            v.value.sharding.is_fully_replicated
            and len(v.value.sharding.device_set) == 8
            for v in model.weights
        ),
    }
    mesh = mesh_2x4()
    layouts = ilm_keras.distribution.layout_map(base, mesh)
    hub_layouts = keras_hub.models.LlamaBackbone.get_layout_map(mesh)
    with keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name="batch"
    ).scope():
        model = phase2_model(tokenizer)
        llm_before = [to_np(w) for w in model.backbone.llm.weights]
        losses = fit_phase2(model, weights, pairs)
    out["model_parallel"] = {
        "losses": losses,
        "weight_diff": max_diff([to_np(w) for w in model.weights], one_weights),
        "llm_unchanged": max_diff(
            [to_np(w) for w in model.backbone.llm.weights], llm_before
        ) == 0.0,
        "shardings": shardings(model.weights),
        "backbone_paths": [v.path for v in model.backbone.llm.weights],
        "keras_hub_axes": {
            v.path: list(hub_layouts[v.path].axes)
            for v in model.backbone.llm.weights
            if hub_layouts[v.path] is not None
        },
    }
    return out


def jax_recommend(arch, encoder):
    tokenizer = phase2_tokenizer()
    pairs = phase2_pairs()
    base = phase2_model(tokenizer, arch, encoder, num_layers=1)
    # A few one-device steps so that prompts score items differently.
    fit_phase2(base, base.get_weights(), pairs, epochs=2)
    weights = base.get_weights()
    prompts = pairs["prompts"][::2]
    exclude = [[p.split("item_")[1].split()[0]] for p in prompts]
    kwargs = dict(k=4, num_beams=len(ITEMS), exclude=exclude)
    items, scores = base.recommend(prompts, **kwargs)
    out = {"one": {"items": items.tolist(), "scores": scores.tolist()}}
    layouts = ilm_keras.distribution.layout_map(base, mesh_2x4())
    with keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name="batch"
    ).scope():
        model = phase2_model(tokenizer, arch, encoder, num_layers=1)
        model.set_weights(weights)
        items, scores = model.recommend(prompts, **kwargs)
    out["model_parallel"] = {
        "items": items.tolist(),
        "scores": scores.tolist(),
        "shardings": shardings(model.weights),
    }
    return out


# ----------------------------------------------------------------------
# TensorFlow: tf.distribute.MirroredStrategy on 2 logical CPU devices.
# ----------------------------------------------------------------------
def int_masks(batch):
    """Boolean inputs as int32 (Keras 3.15's `fit` under a tf.distribute
    strategy averages the first batch over replicas to build the model,
    which fails on bool tensors; the models cast the masks back)."""
    return {
        k: tf.cast(v, "int32") if v.dtype == tf.bool else v
        for k, v in batch.items()
    }


def from_batches(batches):
    """A dataset of fixed batches: Keras iterates a dataset once more under
    a strategy (to build the model), so a dataset that reshuffles on every
    pass would train on other batches than the one-device run."""
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    return dataset


def halves(batch):
    """The two replicas' shares of a batch, one after the other (zero-row
    fields stay zero-row, as MirroredStrategy splits them)."""
    size = int(batch["kind"].shape[0]) // 2
    return [
        {k: v[i * size : (i + 1) * size] for k, v in batch.items()}
        for i in range(2)
    ]


def tf_phase1():
    problem = phase1_problem()
    losses = "all"
    # 2 examples per replica: each row then has at most one in-batch
    # negative, so the ITM hard negative does not depend on the random draw
    # (the one-device run below draws once per half batch, each replica of
    # the strategy once per step).
    batches = list(
        phase1_dataset(problem, losses, batch_size=4).take(6).map(int_masks)
    )
    base = phase1_pretrainer(problem, losses)
    weights = base.get_weights()

    def run(model, dataset, optimizer, run_eagerly=False):
        model.set_weights(weights)
        model.compile(optimizer=optimizer, run_eagerly=run_eagerly)
        logs = BatchLosses()
        model.fit(dataset, epochs=1, shuffle=False, verbose=0, callbacks=[logs])
        return logs.logs, [to_np(w) for w in model.weights]

    # One device: each global batch as its two halves, the gradients of the
    # pair averaged (plain SGD: Keras' Adam counts its steps differently
    # under gradient accumulation). Eager, which skips tracing the step.
    one_logs, one_weights = run(
        base,
        from_batches([h for b in batches for h in halves(b)]),
        keras.optimizers.SGD(0.5, gradient_accumulation_steps=2),
        run_eagerly=True,
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        logs, mirrored_weights = run(
            phase1_pretrainer(problem, losses), from_batches(batches),
            keras.optimizers.SGD(0.5),
        )
    return {
        # After each global step: the one-device run's second half-batch.
        "one": {"logs": one_logs[1::2]},
        "mirrored": {
            "logs": logs,
            "weight_diff": max_diff(mirrored_weights, one_weights),
            "replicas": strategy.num_replicas_in_sync,
        },
        "moved": max_diff(one_weights, weights),
    }


def tf_phase2():
    tokenizer = phase2_tokenizer()
    pairs = phase2_pairs()
    base = phase2_model(tokenizer, num_layers=1)
    weights = base.get_weights()
    x, y, sample_weight = base.preprocessor(pairs)
    x = int_masks(x)
    one = fit_phase2(base, weights, x, y, sample_weight)
    one_weights = [to_np(w) for w in base.weights]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = phase2_model(tokenizer, num_layers=1)
        losses = fit_phase2(model, weights, x, y, sample_weight)
    return {
        "one": {"losses": one},
        "mirrored": {
            "losses": losses,
            "weight_diff": max_diff([to_np(w) for w in model.weights], one_weights),
            "replicas": strategy.num_replicas_in_sync,
        },
        "moved": max_diff(one_weights, weights),
    }


SCENARIOS = {
    "jax_phase1_data_parallel": lambda: jax_phase1("data_parallel"),
    "jax_phase1_model_parallel": lambda: jax_phase1("model_parallel"),
    "jax_phase2": jax_phase2,
    "jax_recommend_llama": lambda: jax_recommend("llama", "ilm"),
    "jax_recommend_gemma": lambda: jax_recommend("gemma", "mlp"),
    "tf_phase1": tf_phase1,
    "tf_phase2": tf_phase2,
}

if __name__ == "__main__":
    if SCENARIO.startswith("jax"):
        import jax

        assert len(jax.devices()) == 8, jax.devices()
    print("RESULT " + json.dumps(SCENARIOS[SCENARIO]()), flush=True)
