"""The README's main job (`examples/quickstart.py`) on each Keras backend.

Runs the quickstart as a user does, one fresh process per backend
(`KERAS_BACKEND` set, the script's `--output` JSON), and writes its wall time
(process start to exit, imports included), the seconds of each phase, the
test HR@10 / NDCG@10 of every method and the conversational reply to one
markdown file with the command, machine, versions and code.

    python benchmarks/quickstart_backends.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

import report

FLAGS = flags.FLAGS
flags.DEFINE_list("backends", ["tensorflow", "jax"], "Keras backends, in order.")
flags.DEFINE_integer("seed", 0, "The quickstart's --seed.")
flags.DEFINE_bool("small", False, "Pass --small (a smoke run).")
flags.DEFINE_string("output", "benchmarks/results/quickstart.md",
                    "Markdown results file.")

METHODS = (("random", "random ranking"), ("cf_dot_product", "iALS dot product"))


def run_quickstart(backend, path):
    """Runs the quickstart on `backend`; returns (wall seconds, its JSON)."""
    command = [sys.executable, os.path.join(report.REPO, "examples",
                                            "quickstart.py"),
               f"--seed={FLAGS.seed}", f"--output={path}"]
    if FLAGS.small:
        command.append("--small")
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(
        filter(None, [report.REPO, os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    seconds = time.perf_counter() - start
    with open(path) as f:
        return seconds, json.load(f)


def main(argv):
    del argv
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for backend in FLAGS.backends:
            runs[backend] = run_quickstart(
                backend, os.path.join(folder, f"{backend}.json"))
    load = os.getloadavg()
    lines = [
        "# The quickstart (README main job) per Keras backend",
        "",
        "Command: `python " + " ".join(sys.argv) + "` (each backend in a "
        "fresh process: `KERAS_BACKEND=<backend> python examples/quickstart.py"
        f" --seed={FLAGS.seed}{' --small' if FLAGS.small else ''}`)",
        "",
        f"Machine: {os.cpu_count()} CPUs, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in load)}; {report.library_versions()};"
        f" code {report.code_revision()}",
        "",
        "Wall time is the whole process (imports included); the phases are "
        "the quickstart's own clocks.",
        "",
        "| backend | wall s | " + " | ".join(
            f"{k} s" for k in next(iter(runs.values()))[1]["seconds"]) + " |",
        "|---|---|" + "---|" * len(next(iter(runs.values()))[1]["seconds"]),
    ]
    for backend, (seconds, result) in runs.items():
        lines.append(f"| {backend} | {seconds:.0f} | " + " | ".join(
            f"{v:.0f}" for v in result["seconds"].values()) + " |")
    lines += ["", "Test, sequential task, seen template 0, history items "
              "excluded; HR@10 / NDCG@10:", "",
              "| method | " + " | ".join(runs) + " |",
              "|---|" + "---|" * len(runs)]
    first = next(iter(runs.values()))[1]
    rows = [(key, name) for key, name in METHODS] + [
        (variant, f"{'OpenP5-R' if variant == 'none' else variant.upper()} "
         f"({variant})") for variant in first["metrics"]]

    def metrics(result, key):
        return result[key] if key in result else result["metrics"][key]

    for key, name in rows:
        cells = [metrics(result, key) for _, result in runs.values()]
        lines.append(f"| {name} | " + " | ".join(
            f"{m['HR@10']:.3f} / {m['NDCG@10']:.3f}" for m in cells) + " |")
    lines += ["", "Conversation (prompt, reply, the item's text):", ""]
    for backend, (_, result) in runs.items():
        chat = result["conversation"]
        lines.append(f"- {backend}: \"{chat['prompt']}\" -> "
                     f"\"{chat['reply']}\" (item text: \"{chat['reference']}\")")
    report.write_report(lines, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
