"""One process of a multi-process data-parallel run (JAX, CPU collectives).

    python multi_process_runs.py PROCESS_ID NUM_PROCESSES PORT OUT.json

Each process sees 2 virtual CPU devices; `keras.distribution.initialize`
joins the processes through a coordinator on 127.0.0.1:PORT (process 0
hosts it), and JAX's gloo CPU collectives carry the all-reduces. Each process
first trains the tiny models on one local device without any distribution
(the single-process reference; every process does, so that they reach the
first collective together), then every
process trains them under `DataParallel` over all processes' devices,
making only its own rows of every global batch (`make_phase1_dataset`'s and
`PromptResponseBatches.fit_input`'s `num_processes` / `process_id`). Each writes its losses and
weights (and process 0 the reference's) to OUT.json; the assertions live
in `test_distribution_multi_process.py`.
"""

import json
import os
import sys

PROCESS_ID, NUM_PROCESSES, PORT, OUT = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
)
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
)

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import keras  # noqa: E402

keras.distribution.initialize(
    job_addresses=f"127.0.0.1:{PORT}", num_processes=NUM_PROCESSES,
    process_id=PROCESS_ID,
)

from ilm_keras.models.prompt_response_batches import (  # noqa: E402
    PromptResponseBatches,
)
from distributed_runs import BatchLosses  # noqa: E402
from distributed_runs import max_diff  # noqa: E402
from distributed_runs import to_np  # noqa: E402
from tiny_models import phase1_dataset  # noqa: E402
from tiny_models import phase1_pretrainer  # noqa: E402
from tiny_models import phase1_problem  # noqa: E402
from tiny_models import phase2_model  # noqa: E402
from tiny_models import phase2_pairs  # noqa: E402
from tiny_models import phase2_tokenizer  # noqa: E402


def fit(model, weights, dataset, steps):
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    logs = BatchLosses()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False,
              verbose=0, callbacks=[logs])
    return logs.logs, [to_np(w) for w in model.weights]


def reference(model, weights, dataset, steps):
    """The single-process, one-device run. Every process computes it (the
    same numbers), so that all of them reach the first collective together:
    when only process 0 did, the others waited in gloo's connect for as long
    as the reference took, past its timeout on a loaded machine."""
    return fit(model, weights, dataset, steps)


def phase1():
    problem = phase1_problem()
    base = phase1_pretrainer(problem, "it")
    weights = base.get_weights()
    one_logs, one_weights = reference(
        base, weights, phase1_dataset(problem, "it", batch_size=8), steps=6
    )
    # Each process makes only its own rows of every global batch.
    with keras.distribution.DataParallel(auto_shard_dataset=False).scope():
        model = phase1_pretrainer(problem, "it")
        dataset = phase1_dataset(problem, "it", batch_size=8,
                                 num_processes=NUM_PROCESSES,
                                 process_id=PROCESS_ID)
        logs, got = fit(model, weights, dataset, steps=6)
    return {
        "one": one_logs, "multi": logs,
        "weights": [w.tolist() for w in got],
        "weight_diff": None if one_weights is None else max_diff(got, one_weights),
        "moved": None if one_weights is None else max_diff(one_weights, weights),
    }


def phase2():
    tokenizer = phase2_tokenizer()
    base = phase2_model(tokenizer)
    pairs = phase2_pairs()
    pairs = list(zip(pairs["prompts"], pairs["responses"]))

    def batches(**shard):
        return PromptResponseBatches(
            base.preprocessor, pairs, batch_size=8, seed=0).fit_input(
                **shard)[0]

    weights = base.get_weights()
    one_logs, one_weights = reference(base, weights, batches(), steps=4)
    with keras.distribution.DataParallel(auto_shard_dataset=False).scope():
        model = phase2_model(tokenizer)
        logs, got = fit(model, weights, batches(
            num_processes=NUM_PROCESSES, process_id=PROCESS_ID), steps=4)
    return {
        "one": one_logs, "multi": logs,
        "weights": [w.tolist() for w in got],
        "weight_diff": None if one_weights is None else max_diff(got, one_weights),
        "moved": None if one_weights is None else max_diff(one_weights, weights),
    }


result = {
    "process_id": PROCESS_ID,
    "process_count": jax.process_count(),
    "devices": jax.device_count(),
    "local_devices": jax.local_device_count(),
    "phase1": phase1(),
    "phase2": phase2(),
}
with open(OUT, "w") as f:
    json.dump(result, f)
print("done", PROCESS_ID, flush=True)
