"""`ilm_keras.utils.quiet`: quiet entry points, honest logs."""

import io
import os
import subprocess
import sys
import textwrap

import pytest

from ilm_keras.utils.quiet import fit_verbosity

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What TensorFlow prints on a CPU-only machine, before its logging is set
# up or at ERROR level, plus lines that must come through.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1796565696.045280    4182 port.cc:153] oneDNN custom "
    "operations are on. You may see slightly different numerical results.",
    "I0000 00:00:1796565696.045614    4182 cudart_stub.cc:31] Could not find "
    "cuda drivers on your machine, GPU will not be used.",
    "I0000 00:00:1796565696.248281    4182 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions.",
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796565706.333982    4182 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR "
    "(303)",
    "E0000 00:00:1796565726.227677    4182 util.cc:131] oneDNN supports "
    "DT_BOOL only on platforms with AVX-512. Falling back to Eigen.",
    "W0000 00:00:1796566501.549755    6226 assert_op.cc:39] Ignoring Assert "
    "operator q_former_1/Assert/Assert",
]
KEPT = [
    "E0000 00:00:1796565726.227677    4182 some_op.cc:12] a real error",
    "Traceback (most recent call last):",
    "ValueError: `prompts` is empty ('')",
]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from ilm_keras.utils.quiet import quiet_backend_logs
    quiet_backend_logs()
    print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"), flush=True)
    lines = sys.argv[1].split("\\n")
    os.write(2, ("\\n".join(lines) + "\\n").encode())  # as C++ code writes
    sys.stderr.write("python stderr line\\n")
    sys.stderr.flush()
    if sys.argv[2] == "abort":
        os._exit(3)  # no atexit: the filter must still deliver every line
    """
)


def run(lines, how="exit", **env):
    environ = dict(os.environ, PYTHONPATH=REPO, **env)
    for name in ("TF_CPP_MIN_LOG_LEVEL", "ILM_KERAS_QUIET_LOGS",
                 "ILM_KERAS_FILTERED_STDERR"):
        if name not in env:
            environ.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, "\n".join(lines), how],
        capture_output=True, text=True, env=environ, timeout=60,
    )


def test_noise_is_dropped_and_everything_else_kept():
    result = run(NOISE + KEPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2\n"  # INFO and WARNING off, errors kept
    for line in KEPT + ["python stderr line"]:
        assert line in result.stderr
    if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0")):
        assert result.stderr.splitlines() == KEPT + ["python stderr line"]


def test_lines_survive_a_process_that_dies():
    result = run(NOISE + KEPT, how="abort")
    assert result.returncode == 3
    for line in KEPT + ["python stderr line"]:
        assert line in result.stderr


def test_user_settings_win():
    result = run(NOISE, TF_CPP_MIN_LOG_LEVEL="0")
    assert result.stdout == "0\n"
    off = run(NOISE, ILM_KERAS_QUIET_LOGS="0")
    assert off.stdout == "None\n"
    assert off.stderr.splitlines() == NOISE + ["python stderr line"]


def test_importing_the_library_changes_no_logging():
    # Keras first: its backends set their own defaults (JAX sets
    # TF_CPP_MIN_LOG_LEVEL=1); ilm_keras must add nothing to them.
    script = textwrap.dedent(
        """
        import logging, os
        import keras
        import absl.logging
        def state():
            root = logging.getLogger()
            return (dict(os.environ), root.level, list(root.handlers),
                    absl.logging.get_verbosity(), os.fstat(2).st_ino)
        before = state()
        import ilm_keras
        from ilm_keras import ItemLanguageModel, QFormer, QFormerPretrainer
        import ilm_keras.data, ilm_keras.experiments
        assert state() == before, "importing ilm_keras changed logging"
        print("UNCHANGED")
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("ILM_KERAS_FILTERED_STDERR", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "UNCHANGED" in result.stdout


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    "stdout, verbose, expected",
    [(_Terminal(), 1, 1), (_Terminal(), "auto", 1), (io.StringIO(), 1, 2),
     (io.StringIO(), "auto", 2), (io.StringIO(), 0, 0), (_Terminal(), 2, 2)],
)
def test_progress_bars_only_on_a_terminal(monkeypatch, stdout, verbose, expected):
    monkeypatch.setattr(sys, "stdout", stdout)
    assert fit_verbosity(verbose) == expected
