"""What every results file states: the command, the machine, the versions
and the code it measured. Shared by the scripts in `benchmarks/`."""

import os
import platform
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def library_versions():
    """`keras 3.15.1, jax 0.10.2, ...`: Keras and the libraries this run
    loaded (a report names what ran, and importing torch only to print its
    version would cost seconds)."""
    import keras

    versions = [f"keras {keras.__version__}"]
    for module in ("keras_hub", "jax", "tensorflow", "torch", "transformers"):
        if module in sys.modules:
            versions.append(f"{module} {sys.modules[module].__version__}")
    return ", ".join(versions)


def cpu_description():
    """`Intel(R) Xeon(R) Processor, 2 cores, AVX-512`: the CPU model, the
    cores this process may use and its widest vector instructions.

    Float results (and so trained models and their metrics) depend on these:
    oneDNN and XLA pick or generate kernels for the instruction set, and
    split reductions by the number of threads
    (`ilm_keras/utils/determinism.py`)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    widest = next((name for flag, name in (
        ("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"),
        ("avx", "AVX")) if flag in flags), None)
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count())
    return ", ".join(x for x in (model, f"{cores} cores", widest) if x)


def code_revision():
    """The checkout's commit, with `+ uncommitted changes` when tracked files
    other than `benchmarks/results/` differ from it (results written by an
    earlier run are not code); `unknown` outside a git checkout."""
    try:
        def git(*args):
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True,
                check=True).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--",
                    ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"commit {commit}" + (" + uncommitted changes" if dirty else "")


def command_line():
    """This process's command, with the Keras backend it ran on."""
    import keras

    return (f"KERAS_BACKEND={keras.backend.backend()} python "
            + " ".join(sys.argv))


def report_header(title, note=""):
    """A report's title, exact command and machine (versions, code) lines."""
    return [
        f"# {title}",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {cpu_description()}; {library_versions()}; code "
        f"{code_revision()}{note}",
        "",
    ]


def write_report(lines, path):
    """Prints the markdown `lines` and writes them to `path`."""
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
