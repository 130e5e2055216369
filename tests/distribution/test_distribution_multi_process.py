"""A real multi-process data-parallel run: 2 processes x 2 CPU devices (JAX).

`multi_process_runs.py` runs in two child processes joined by
`keras.distribution.initialize` through a loopback coordinator, with JAX's
gloo CPU collectives; each makes only its rows of every global batch
(`make_phase1_dataset` / `PromptResponseBatches.fit_input` with
`num_processes` and `process_id`). Phase 1 (item-text batches) and
phase 2 (Llama + Q-Former) `fit` under `DataParallel` over the 4 devices
must give the single-process, one-device run's batch losses (rtol 1e-5;
measured ~1e-6) and weights (within 1e-4; measured 3e-6 and 1.5e-8), and
both processes the same losses and weights. Bounded: each child has a timeout and is killed with the
other if one fails. About a minute of CPU per child.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution.initialize with CPU collectives runs on JAX",
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one_device(tmp_path):
    port = str(free_port())
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("XLA_FLAGS", None)
    outs = [str(tmp_path / f"out{i}.json") for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "multi_process_runs.py"),
             str(i), "2", port, outs[i]],
            env=env, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=480)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-4000:]
    results = [json.load(open(out)) for out in outs]
    for i, result in enumerate(results):
        assert result["process_id"] == i
        assert (result["process_count"], result["devices"],
                result["local_devices"]) == (2, 4, 2)
    first, second = results
    for phase in ("phase1", "phase2"):
        run = first[phase]  # every process also ran the one-device reference
        assert len(run["one"]) == len(run["multi"]) > 0
        for a, b in zip(run["one"], run["multi"]):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_allclose(b[name], a[name], rtol=1e-5,
                                           atol=1e-6, err_msg=(phase, name))
        assert run["moved"] > 0.01, phase  # it trained
        assert run["weight_diff"] < 1e-4, phase
        # Process 1 took the same global steps (and computed the same
        # reference).
        assert second[phase]["multi"] == run["multi"], phase
        assert second[phase]["one"] == run["one"], phase
        for a, b in zip(second[phase]["weights"], run["weights"]):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
