"""Same seed, same result: the main job (reduced) run twice.

Two separate processes, started together: each imports the backend afresh
(its own hash seed, thread pools and compilation caches), and they compete
for the same cores, so thread scheduling differs between them. Everything
must still agree to the bit: CF tables, the weights after phase 1, LLM
pretraining and phase 2, the loss curve, the metrics and the reply.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_JOB = textwrap.dedent(
    """
    import dataclasses, hashlib, json
    import keras, numpy as np
    from ilm_keras.experiments import pipeline as pl
    from ilm_keras.experiments import quickstart_config, run_synthetic
    from ilm_keras.experiments.synthetic import SMALL_DATA

    digests = {}

    def digest(name, arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(a)).tobytes())
        digests[name] = h.hexdigest()

    # Every phase's output, at the moment the phase ends.
    train_cf, pretrain_qformer = pl.train_cf, pl.pretrain_qformer
    pretrain_llm, train_phase2 = pl.pretrain_llm, pl.train_phase2

    def cf(*args, **kwargs):
        out = train_cf(*args, **kwargs)
        digest("cf", out[1:])
        return out

    def phase1(*args, **kwargs):
        qformer, history = pretrain_qformer(*args, **kwargs)
        digest("phase1", qformer.weights)
        return qformer, history

    def llm(*args, **kwargs):
        tokenizer, backbone, history = pretrain_llm(*args, **kwargs)
        digest("llm", backbone.weights)
        return tokenizer, backbone, history

    def phase2(model, *args, **kwargs):
        history = train_phase2(model, *args, **kwargs)
        digest("phase2", model.trainable_weights)
        return history

    pl.train_cf, pl.pretrain_qformer = cf, phase1
    pl.pretrain_llm, pl.train_phase2 = llm, phase2
    # The test-sized quickstart, cut to a few steps per phase (compiling
    # dominates its time anyway).
    config = dataclasses.replace(
        quickstart_config(small=True), phase1_steps_per_epoch=4, llm_epochs=1,
        llm_steps_per_epoch=4, phase2_steps_per_epoch=2, max_eval_users=4,
    )
    results = run_synthetic(config, log=lambda *a: None, variants=("ilm",),
                            **SMALL_DATA)
    print("RESULTS " + json.dumps({
        "digests": digests,
        "llm_loss": results["llm_loss"],
        "metrics": results["metrics"],
        "cf_dot_product": results["cf_dot_product"],
        "reply": results["conversation"]["reply"],
    }))
    """
)


def test_the_main_job_gives_the_same_results_twice(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=REPO)
    env.pop("PYTHONHASHSEED", None)  # each process hashes strings its own way
    runs = [
        subprocess.Popen(
            [sys.executable, str(script)], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = []
    for run in runs:
        stdout, stderr = run.communicate()
        assert run.returncode == 0, stderr[-3000:]
        line = [x for x in stdout.splitlines() if x.startswith("RESULTS ")][-1]
        results.append(json.loads(line[len("RESULTS "):]))
    first, second = results
    assert set(first["digests"]) == {"cf", "phase1", "llm", "phase2"}
    for phase in ("cf", "phase1", "llm", "phase2"):  # the first difference
        assert first["digests"][phase] == second["digests"][phase], phase
    assert first == second


def test_the_openp5_llm_does_not_depend_on_what_ran_before_it(tmp_path):
    """The LLM that `shared_phases` pretrains is the same whether phase 1 ran
    before it in this process (an ILM cell) or not (an MLP cell), since
    each phase starts from the seed; otherwise the cell that happened to
    run first would decide the LLM every later cell loads."""
    import numpy as np

    from ilm_keras import data as ild
    from ilm_keras.experiments import PipelineConfig
    from ilm_keras.experiments.openp5 import shared_phases

    config = PipelineConfig(
        max_history=3, cf_dim=8, cf_iterations=3, qformer_layers=1,
        qformer_hidden=16, qformer_heads=2, num_query_tokens=2,
        num_cf_tokens=2, phase1_losses="ii_ui",  # the quickest to compile
        phase1_epochs=1, phase1_batch_size=8, phase1_steps_per_epoch=2,
        llm_layers=1, llm_hidden=16, llm_heads=2, llm_epochs=1,
        llm_batch_size=64, llm_steps_per_epoch=2, templates_per_example=1,
        verbose=0,
    )
    data, _ = ild.make_synthetic_data(num_users=30, num_items=20,
                                      num_clusters=2, interactions_per_user=5)
    data = ild.random_indexing(data, seed=0)
    quiet = lambda _: None  # noqa: E731
    with_phase1 = shared_phases(data, config, str(tmp_path / "ilm"),
                                need_qformer=True, log=quiet)
    without = shared_phases(data, config, str(tmp_path / "mlp"),
                            need_qformer=False, log=quiet)
    assert with_phase1["qformer"] is not None and without["qformer"] is None
    want = with_phase1["backbone"].get_weights()
    got = without["backbone"].get_weights()
    assert len(want) == len(got) > 0
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
