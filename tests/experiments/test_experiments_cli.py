"""`python -m ilm_keras.experiments`: the command line over the named configs."""

import json
import os
import subprocess
import sys

import pytest

from ilm_keras.experiments import __main__ as cli
from ilm_keras.experiments.configs import NAMED_CONFIGS
from ilm_keras.experiments.configs import get_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args):
    """Runs the command line in a child process; returns it finished."""
    env = {**os.environ, "ILM_KERAS_QUIET_LOGS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ilm_keras.experiments", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def test_configs_command_lists_and_prints_with_overrides():
    # One child process (the import of Keras dominates its time).
    done = _cli("configs", "openp5_cpu", "--set", "seed=7",
                "--set", "item_indexing=random")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("openp5_cpu: ")
    for field in ("max_history", "qformer_layers", "llm_hidden", "phase2_epochs"):
        assert f"\n  {field} " in out
    assert "seed" in out and "= 7  (--set)" in out
    assert "= 'random'  (--set)" in out
    assert "= 'fold_in'\n" in out  # not overridden: no mark


def test_list_and_json_in_process(capsys):
    assert cli.main(["configs"]) == 0
    listing = capsys.readouterr().out
    for name in NAMED_CONFIGS:
        assert f"  {name} " in listing
    assert cli.main(["configs", "paper", "--json", "--set", "seed=2"]) == 0
    assert json.loads(capsys.readouterr().out) == get_config(
        "paper", seed=2).to_dict()


@pytest.mark.parametrize("argv, message", [
    (["configs", "nope"], "Unknown config 'nope'; choose from ['openp5_cpu', "
     "'paper', 'quickstart', 'quickstart_small'"),
    (["configs", "paper", "--set", "sed=1"],
     "Unknown PipelineConfig field 'sed' in 'sed=1'. Did you mean 'seed'?"),
    (["configs", "paper", "--set", "seed=one"], "seed takes a int, got 'one'"),
    (["configs", "paper", "--set", "seed"], "Expected FIELD=VALUE, got 'seed'"),
    (["configs", "paper", "--set", "exclude_history=maybe"],
     "exclude_history takes true/false, got 'maybe'"),
    (["configs", "--set", "seed=1"], "--set needs a config name"),
    (["run", "--config", "nope"], "Unknown config 'nope'"),
    (["run", "--config", "quickstart_small", "--set", "llm_epochs=two"],
     "llm_epochs takes a int, got 'two'"),
    (["run", "--config", "openp5_cpu"], "--data is required with --config "
     "openp5_cpu"),
    (["run", "--config", "openp5_cpu", "--data", "no/such/folder"],
     "is neither 'synthetic' nor an OpenP5 dataset folder"),
    (["run", "--config", "quickstart_small", "--variant", "ilm2"],
     "Unknown variant(s) ['ilm2']"),
])
def test_bad_input_names_the_problem(argv, message, capsys, tmp_path):
    if argv[0] == "run":
        argv = argv + ["--work_dir", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert not os.path.exists(tmp_path / "run")  # nothing ran


def test_run_command_rejects_a_bad_config_in_a_child_process():
    done = _cli("run", "--config", "openp5", "--data", "synthetic")
    assert done.returncode == 2
    assert "error: Unknown config 'openp5'; choose from" in done.stderr
    assert "openp5_cpu" in done.stderr


# A full `run --config quickstart_small` takes about 2 minutes on this 2-core
# CPU (126 s of pipeline plus start-up), too long for this file; the
# pipeline itself is tested by test_experiments_quickstart.py. Here `run`
# is checked to hand the right config, data and folders to the functions
# the examples call.
def test_run_hands_synthetic_runs_to_run_quickstart(monkeypatch, tmp_path):
    from ilm_keras.experiments import synthetic

    calls = []
    monkeypatch.setattr(synthetic, "run_quickstart",
                        lambda config, sizes, **kwargs: calls.append(
                            (config, sizes, kwargs)))
    assert cli.main(["run", "--config", "quickstart_small", "--set", "seed=3",
                     "--work_dir", str(tmp_path)]) == 0
    (config, sizes, kwargs), = calls
    assert config == get_config("quickstart_small", seed=3)
    assert sizes == synthetic.synthetic_sizes("quickstart_small")
    assert kwargs["output"] == str(tmp_path / "results.json")
    assert kwargs["variants"] == ("none", "ilm")
    assert kwargs["preset_dir"] == str(tmp_path / "preset")


def test_run_hands_openp5_folders_to_run_openp5(monkeypatch, tmp_path):
    from ilm_keras.experiments import openp5

    data = tmp_path / "ML100K"
    data.mkdir()
    (data / "user_sequence.txt").write_text("1 1 2 3\n")
    calls = []

    def fake_run_openp5(dataset_dir, config, output_dir, **kwargs):
        calls.append((dataset_dir, config, output_dir, kwargs))
        os.makedirs(output_dir)
        with open(os.path.join(output_dir, "results.md"), "w") as f:
            f.write("table")
        return {"variant": kwargs["variant"]}

    monkeypatch.setattr(openp5, "run_openp5", fake_run_openp5)
    work = tmp_path / "work"
    assert cli.main(["run", "--config", "openp5_cpu", "--set", "seed=1",
                     "--data", str(data), "--variant", "ilm", "--variant",
                     "none", "--work_dir", str(work)]) == 0
    assert [c[2] for c in calls] == [str(work / "ilm"), str(work / "none")]
    for dataset_dir, config, _, kwargs in calls:
        assert dataset_dir == str(data)
        assert config == get_config("openp5_cpu", seed=1)
        assert kwargs["shared_dir"] == str(work / "shared")
    with open(work / "results.json") as f:
        assert json.load(f)["variants"] == {"ilm": {"variant": "ilm"},
                                            "none": {"variant": "none"}}
