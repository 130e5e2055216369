"""Quiet, honest logs for our command-line entry points.

Two helpers, for scripts (`examples/*.py`, `benchmarks/*.py`), never called
by the library on import (importing `ilm_keras` changes no logging):

- `quiet_backend_logs()`, called before TensorFlow or JAX is imported, hides
  their start-up noise: TensorFlow's C++ INFO and WARNING lines (by
  `TF_CPP_MIN_LOG_LEVEL=2`, which keeps errors), and the known probe lines
  that TensorFlow prints whatever that level says (before its logging is
  set up, or at ERROR level): CPU-instruction and oneDNN notices, the CUDA
  probe of a machine without an NVIDIA device, cuDNN/cuFFT/cuBLAS factory
  re-registration. Every other line of standard error passes unchanged.
- `fit_verbosity()` picks `fit`'s `verbose`: progress bars on a terminal,
  one line per epoch (`verbose=2`) when standard output is a file or pipe
  (progress-bar redraws fill a log file with hundreds of kilobytes).

Set `ILM_KERAS_QUIET_LOGS=0` to keep every line.
"""

import atexit
import os
import subprocess
import sys

# Lines that say nothing about the run on any machine.
_NOISE = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called "
    r"are written to STDERR$",
    r"\] oneDNN custom operations are on\. ",
    r"\] oneDNN supports DT_BOOL only on platforms with AVX-512\. ",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .*rebuild TensorFlow with the "
    r"appropriate compiler flags\.$",
    r"Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register "
    r"factory for plugin cu\w+ when one has already been registered",
    r"computation_placer\.cc:\d+\] computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"assert_op\.cc:\d+\] Ignoring Assert operator ",
)
# CUDA and TPU probe lines: noise where no such device exists, a real
# problem (a broken driver) where one does.
_PROBES = (
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"cuda_platform\.cc:\d+\] failed call to cuInit: ",
    r"cuda_executor\.cc:\d+\] failed call to cuInit",
    r"cuda_diagnostics\.cc:\d+\] ",
    r"Unable to initialize backend '(cuda|rocm|tpu)'",
    r"Platform '(cuda|rocm|tpu)' is experimental",
    r"TPU platform|libtpu\.so",
)
_FILTER = r"""
import os, re, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Forward the parent's traceback.
noise = re.compile(sys.argv[1].encode())
out, pending = sys.stdout.buffer, b""
def emit(chunk):
    for line in chunk.splitlines(keepends=True):
        if not noise.search(line.rstrip(b"\r\n")):
            out.write(line)
    out.flush()
while True:
    if pending and not select.select([0], [], [], 0.2)[0]:
        emit(pending)  # A partial line, quiet for 0.2 s: show it.
        pending = b""
    data = os.read(0, 65536)
    if not data:
        break
    pending += data
    cut = pending.rfind(b"\n") + 1
    emit(pending[:cut])
    pending = pending[cut:]
emit(pending)
"""
_ENV_SWITCH = "ILM_KERAS_QUIET_LOGS"
_ENV_FILTERED = "ILM_KERAS_FILTERED_STDERR"  # the filtered pipe, "dev:inode"


def _has_accelerator():
    """Whether this machine shows an NVIDIA, AMD or TPU device node."""
    nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/accel0",
             "/dev/vfio", "/proc/driver/nvidia")
    return any(os.path.exists(node) for node in nodes)


def _stderr_id():
    try:
        st = os.fstat(2)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def quiet_backend_logs():
    """Hides TensorFlow/JAX start-up noise; keeps errors and everything else.

    Call it at the top of a script, before anything imports TensorFlow, JAX
    or Keras. It sets `TF_CPP_MIN_LOG_LEVEL=2` (INFO and WARNING off, errors
    kept) unless the environment already sets it, and passes standard error
    through a small filter process that drops only the lines listed in this
    module (`_NOISE` everywhere; `_PROBES`, the CUDA/TPU probes, only on a
    machine without an accelerator device node). The filter is a separate
    process so that nothing is lost when this one crashes or is killed.
    Calling it again, or in a child process that inherits the filtered
    standard error, does nothing. `ILM_KERAS_QUIET_LOGS=0` turns it off.

    Example:
    ```python
    from ilm_keras.utils.quiet import quiet_backend_logs

    quiet_backend_logs()
    import keras  # TensorFlow's start-up lines are not printed
    ```
    """
    if os.environ.get(_ENV_SWITCH, "1") == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.name != "posix" or os.environ.get(_ENV_FILTERED) == _stderr_id():
        return
    patterns = _NOISE + (() if _has_accelerator() else _PROBES)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return  # No usable standard error: nothing to filter.
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER, "|".join(patterns)],
            stdin=read_end, stdout=saved, stderr=saved, close_fds=True,
        )
    except OSError:
        for fd in (read_end, write_end, saved):
            os.close(fd)
        return  # No filter: every line is shown.
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.environ[_ENV_FILTERED] = _stderr_id()

    def restore():
        # The filter ends when its pipe closes; wait so that its last lines
        # come before the shell prompt.
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # A child process of ours still holds the pipe.

    atexit.register(restore)


def fit_verbosity(verbose=1):
    """`fit`'s `verbose`: 2 (a line per epoch) instead of progress bars when
    standard output is not a terminal.

    Args:
        verbose: the wanted verbosity; only 1 and `"auto"` (progress bars)
            change, to 2 when `sys.stdout` is not a TTY (a file, a pipe)
            outside Jupyter. 0 and 2 are returned as they are.

    Returns:
        0, 1 or 2.

    Example:
    ```python
    model.fit(dataset, epochs=3, verbose=fit_verbosity())
    ```
    """
    if verbose not in (1, "auto"):
        return verbose
    interactive = getattr(sys.stdout, "isatty", lambda: False)()
    if interactive or "ipykernel" in sys.modules:
        return 1
    return 2
