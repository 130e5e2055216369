"""`python -m ilm_keras.data stats PATH` on tiny folders."""

import os
import subprocess
import sys

from ilm_keras.data.__main__ import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_stats(path, capsys):
    code = main(["stats", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_openp5(folder):
    folder.mkdir()
    (folder / "user_sequence.txt").write_text("u1 a b c\nu2 c a\n")
    (folder / "item_random_indexing.txt").write_text("a 1002\nb 1001\nc 1003\n")


def test_module_runs_as_a_command(tmp_path):
    write_openp5(tmp_path / "Toy")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "ilm_keras.data", "stats", str(tmp_path / "Toy")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "users: 2\nitems: 3\ninteractions: 5\n" in result.stdout


def test_stats_openp5_and_movielens(tmp_path, capsys):
    write_openp5(tmp_path / "Toy")
    code, out, err = run_stats(tmp_path / "Toy", capsys)
    assert code == 0, err
    assert "users: 2\n" in out
    assert "items: 3\n" in out
    assert "interactions: 5\n" in out

    ml1m = tmp_path / "ml1m"
    ml1m.mkdir()
    rows = [f"{u}::{i}::3::{100 * u + i}" for u in range(1, 7) for i in range(1, 7)]
    rows.append("7::1::3::5")  # One rating: removed by the 5-core filter.
    (ml1m / "ratings.dat").write_text("\n".join(rows) + "\n")
    code, out, err = run_stats(ml1m, capsys)
    assert code == 0, err
    assert "(ml-1m)" in out
    assert "users: 6\nitems: 6\ninteractions: 36\n" in out
    assert "dropped (5-core filter): 1" in out


def test_stats_errors(tmp_path, capsys):
    code, _, err = run_stats(tmp_path, capsys)
    assert code == 1 and "unknown dataset folder" in err
    (tmp_path / "user_sequence.txt").write_text("u1 a b\nu2\n")
    code, _, err = run_stats(tmp_path, capsys)
    assert code == 1
    assert "user_sequence.txt, line 2" in err


def test_missing_path_and_file_get_their_own_messages(tmp_path, capsys):
    code, _, err = run_stats(tmp_path / "nowhere", capsys)
    assert code == 1 and err == f"error: {tmp_path / 'nowhere'}: does not exist.\n"
    write_openp5(tmp_path / "Toy")
    file = tmp_path / "Toy" / "user_sequence.txt"
    code, _, err = run_stats(file, capsys)
    assert code == 1
    assert err.startswith(f"error: {file}: is a file, not a dataset folder")


_NO_BACKEND = """
import runpy, sys
sys.argv = ["python -m ilm_keras.data", "stats", sys.argv[1]]
try:
    runpy.run_module("ilm_keras.data", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = sorted(m for m in ("tensorflow", "jax", "keras", "keras_hub", "torch")
               if m in sys.modules)
print("HEAVY", heavy)
"""


def test_stats_imports_no_deep_learning_backend(tmp_path):
    write_openp5(tmp_path / "Toy")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-c", _NO_BACKEND, str(tmp_path / "Toy")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "users: 2\n" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout
    assert result.stderr == ""  # no backend, so no backend start-up lines
