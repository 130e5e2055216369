"""`python -m ilm_keras.data stats PATH` on tiny folders."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_stats(path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "ilm_keras.data", "stats", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )


def test_stats_openp5_and_movielens(tmp_path):
    openp5 = tmp_path / "Toy"
    openp5.mkdir()
    (openp5 / "user_sequence.txt").write_text("u1 a b c\nu2 c a\n")
    (openp5 / "item_random_indexing.txt").write_text("a 1002\nb 1001\nc 1003\n")
    result = run_stats(openp5)
    assert result.returncode == 0, result.stderr
    assert "users: 2\n" in result.stdout
    assert "items: 3\n" in result.stdout
    assert "interactions: 5\n" in result.stdout

    ml1m = tmp_path / "ml1m"
    ml1m.mkdir()
    rows = [f"{u}::{i}::3::{100 * u + i}" for u in range(1, 7) for i in range(1, 7)]
    rows.append("7::1::3::5")  # One rating: removed by the 5-core filter.
    (ml1m / "ratings.dat").write_text("\n".join(rows) + "\n")
    result = run_stats(ml1m)
    assert result.returncode == 0, result.stderr
    assert "(ml-1m)" in result.stdout
    assert "users: 6\nitems: 6\ninteractions: 36\n" in result.stdout
    assert "dropped (5-core filter): 1" in result.stdout


def test_stats_errors(tmp_path):
    result = run_stats(tmp_path)
    assert result.returncode == 1 and "unknown dataset folder" in result.stderr
    (tmp_path / "user_sequence.txt").write_text("u1 a b\nu2\n")
    result = run_stats(tmp_path)
    assert result.returncode == 1
    assert "user_sequence.txt, line 2" in result.stderr
