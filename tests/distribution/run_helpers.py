"""Runs a `distributed_runs.py` scenario in a child process."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def run_scenario(scenario, timeout=600):
    """Runs `distributed_runs.py scenario` and returns its `RESULT` dict.

    The child gets its own devices (8 virtual JAX CPU devices or 2 logical
    TensorFlow CPU devices), fixed when its backend starts; a timeout
    bounds it.
    """
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distributed_runs.py"), scenario],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT "):])
