"""Kill -9 safety of the resumable OpenP5 pipeline (`run_openp5_cell`).

The ILM cell runs on tiny synthetic data in a subprocess, which a test hook
kills with SIGKILL mid-epoch, in turn during phase 1, during LLM
pretraining and during phase 2; the same command is rerun after each kill.
Each rerun must resume the killed fit from its last backup (mid-epoch, not
from the epoch's start nor from scratch), load the phases finished before,
and the chain must end with the uninterrupted run's results and, bit for
bit, its trained weights.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Two epochs of 4 steps per fit, a backup every 2 steps.
CONFIG = dict(
    max_history=3, cf_dim=8, cf_iterations=3, qformer_layers=1,
    qformer_hidden=16, qformer_heads=2, num_query_tokens=2, num_cf_tokens=2,
    phase1_losses="ii_ui", phase1_epochs=2, phase1_batch_size=8,
    phase1_steps_per_epoch=4, llm_layers=1, llm_hidden=16, llm_heads=2,
    llm_epochs=2, llm_batch_size=16, llm_steps_per_epoch=4,
    llm_warmup_steps=0, templates_per_example=1, phase2_epochs=2,
    phase2_batch_size=16, phase2_steps_per_epoch=4, phase2_warmup_steps=0,
    max_eval_users=4, max_valid_users=4, length_bucket=64, verbose=0,
    backup_steps=2,
)

# `KILL_AT=<backup name>:<epoch>:<batch>` sends SIGKILL to the process at
# the end of that batch of that fit (before the backup of that step).
_JOB = textwrap.dedent(
    """
    import hashlib, json, os, signal, sys
    import keras, numpy as np
    from ilm_keras import data as ild
    from ilm_keras.experiments import PipelineConfig
    from ilm_keras.experiments.openp5 import run_openp5_cell
    from ilm_keras.utils import resume

    kill_at = os.environ.get("KILL_AT")
    fit = resume.resumable_fit

    class Kill9(keras.callbacks.Callback):
        def __init__(self, epoch, batch):
            super().__init__()
            self.at, self.epoch = (epoch, batch), None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == self.at:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    class Digest(keras.callbacks.Callback):
        # First callback: its `on_train_end` sees the trained state, before
        # the best-epoch checkpoint puts the best weights back.
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_train_end(self, logs=None):
            h = hashlib.sha256()
            for v in self.model.variables + self.model.optimizer.variables:
                h.update(np.ascontiguousarray(
                    keras.ops.convert_to_numpy(v)).tobytes())
            print(f"DIGEST {self.name} {h.hexdigest()}", flush=True)

    def hooked_fit(model, make_input, epochs, backup=None, callbacks=None,
                   **kwargs):
        name = os.path.basename(backup.directory)
        callbacks = [Digest(name)] + list(callbacks or [])
        if kill_at and kill_at.split(":")[0] == name:
            epoch, batch = map(int, kill_at.split(":")[1:])
            callbacks.append(Kill9(epoch, batch))
        return fit(model, make_input, epochs, backup=backup,
                   callbacks=callbacks, **kwargs)

    resume.resumable_fit = hooked_fit
    data, _ = ild.make_synthetic_data(num_users=30, num_items=20,
                                      num_clusters=2, interactions_per_user=5)
    data = ild.random_indexing(data, seed=0)
    config = PipelineConfig(**json.loads(sys.argv[2]))
    results = run_openp5_cell(data, "ilm", config, sys.argv[1], log=print)
    print("RESULTS " + json.dumps({
        "test": {k: {m: v for m, v in x.items() if m != "seconds"}
                 for k, x in results["test"].items()},
        "valid_per_epoch": results["valid_per_epoch"],
        "references": results["references"],
    }))
    """
)


def _start(tmp_path, out, kill_at=None):
    script = tmp_path / "job.py"
    if not script.exists():
        script.write_text(_JOB)
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=REPO)
    env.pop("PYTHONHASHSEED", None)
    env.pop("KILL_AT", None)
    if kill_at:
        env["KILL_AT"] = kill_at
    # JAX's compilation cache, shared by the runs: a run compiles what an
    # earlier one compiled already in much less time (the same executables,
    # so the same numbers).
    env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return subprocess.Popen(
        [sys.executable, str(script), str(out), json.dumps(CONFIG)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _finish(run):
    stdout, stderr = run.communicate(timeout=600)
    lines = stdout.splitlines()
    digests = dict(line.split()[1:] for line in lines
                   if line.startswith("DIGEST "))
    results = [json.loads(line[len("RESULTS "):]) for line in lines
               if line.startswith("RESULTS ")]
    return (run.returncode, stderr), lines, digests, (
        results[-1] if results else None)


def _run(tmp_path, out, kill_at=None):
    return _finish(_start(tmp_path, out, kill_at))


def _resumed(lines, name, epoch, step):
    want = f"backup{os.sep}{name}: resumed at epoch {epoch}/2, step {step}/4"
    return any(want in line for line in lines)


def test_a_cell_killed_mid_epoch_in_every_phase_ends_as_if_never_killed(
    tmp_path,
):
    # The uninterrupted run, beside the killed ones.
    reference = _start(tmp_path, tmp_path / "reference")
    try:
        _check_the_killed_runs(tmp_path, reference)
    finally:
        if reference.poll() is None:  # a failed check: stop it
            reference.kill()
            reference.communicate()


def _check_the_killed_runs(tmp_path, reference):
    out = tmp_path / "killed"
    backups = out / "backup"
    digests = {}
    # (kill, then what the rerun must resume), each kill mid-epoch: the
    # last backup before it is 2 steps into an epoch of 4.
    chain = [
        ("qformer_ii_ui:0:2", ("qformer_ii_ui", 1, 2)),
        ("llm:1:2", ("llm", 2, 2)),
        ("phase2:1:2", ("phase2", 2, 2)),
        (None, None),
    ]
    resumes = None
    for kill_at, next_resumes in chain:
        run, lines, got, results = _run(tmp_path, out, kill_at)
        if resumes:  # this run resumed the fit the last one was killed in
            assert _resumed(lines, *resumes), (resumes, lines)
        returncode, stderr = run
        if kill_at:
            assert returncode == -signal.SIGKILL, stderr[-3000:]
            name = kill_at.split(":")[0]
            assert (backups / name / "state.npz").exists()
            assert not os.path.exists(out / "results.json")
        else:
            assert returncode == 0, stderr[-3000:]
        for name in got:  # a fit that finished in this run
            assert name not in digests, name  # no fit finished twice
        digests.update(got)
        resumes = next_resumes
    # The phases finished before a kill were loaded, not trained again.
    assert any("phase 1: loaded" in line for line in lines)
    assert any("LLM: loaded" in line for line in lines)
    assert not os.listdir(backups)  # cleared once the cell was done

    (returncode, stderr), _, want_digests, want = _finish(reference)
    assert returncode == 0, stderr[-3000:]
    assert set(want_digests) == {"qformer_ii_ui", "llm", "phase2"}
    assert results == want
    assert digests == want_digests
