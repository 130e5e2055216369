"""The README's main job (`examples/quickstart.py`) per Keras backend and seed.

Runs the quickstart as a user does, one fresh process per backend and seed
(`KERAS_BACKEND` set, `--set seed=<n>`, the script's `--output` JSON), and
writes to one markdown file: the wall time (process start to exit, imports
included) and each phase's seconds, the test HR@10 / NDCG@10 of every method
per seed with the mean ± standard error over seeds, whether ILM beat OpenP5-R
and the random ranking on every seed, the share of 50 items that "What is
item_<id> about?" describes with the right genres, and one reply per run;
with the command, machine, versions and code.

    python benchmarks/quickstart_backends.py --seeds 0,1,2
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
from seed_stats import mean_and_se

FLAGS = flags.FLAGS
flags.DEFINE_list("backends", ["tensorflow", "jax"], "Keras backends, in order.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (`--set seed=<n>`).")
flags.DEFINE_bool("small", False, "Pass --small (a smoke run).")
flags.DEFINE_multi_string("set", [], "Passed on to the quickstart: replace "
                          "one config field, FIELD=VALUE (repeatable).")
flags.DEFINE_string("output", "benchmarks/results/quickstart.md",
                    "Markdown results file.")

REFERENCES = (("random", "random ranking (expected)"),
              ("cf_dot_product", "iALS dot product"))


def run_quickstart(backend, seed, path):
    """Runs the quickstart on `backend`; returns (wall seconds, its JSON)."""
    command = [sys.executable, os.path.join(report.REPO, "examples",
                                            "quickstart.py"),
               f"--set=seed={seed}", f"--output={path}"]
    command += [f"--set={assignment}" for assignment in FLAGS.set]
    if FLAGS.small:
        command.append("--small")
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(
        filter(None, [report.REPO, os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    seconds = time.perf_counter() - start
    with open(path) as f:
        return seconds, json.load(f)


def variant_name(variant):
    return f"{'OpenP5-R' if variant == 'none' else variant.upper()} ({variant})"


def metric(result, key):
    return result[key] if key in result else result["metrics"][key]


def main(argv):
    del argv
    runs = {}  # (backend, seed) -> (seconds, results)
    with tempfile.TemporaryDirectory() as folder:
        for backend in FLAGS.backends:
            for seed in FLAGS.seeds:
                runs[backend, seed] = run_quickstart(
                    backend, seed, os.path.join(folder, f"{backend}_{seed}.json"))
    load = os.getloadavg()
    first = next(iter(runs.values()))[1]
    phases = list(first["seconds"])
    small = " --small" if FLAGS.small else ""
    lines = [
        "# The quickstart (README main job) per Keras backend and seed",
        "",
        "Command: `python " + " ".join(sys.argv) + "` (each run a fresh "
        "process: `KERAS_BACKEND=<backend> python examples/quickstart.py"
        f" --set seed=<seed>{small}"
        + "".join(f" --set {a}" for a in FLAGS.set) + "`)",
        "",
        f"Machine: {report.cpu_description()}, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in load)}; {report.library_versions()};"
        f" code {report.code_revision()}",
        "",
        "Config: `" + json.dumps(first["config"], sort_keys=True) + "`",
        "",
        "## Time",
        "",
        "Wall time is the whole process (imports included); the phases are "
        "the quickstart's own clocks.",
        "",
        "| backend | seed | wall s | " + " | ".join(f"{k} s" for k in phases)
        + " |",
        "|---|---|---|" + "---|" * len(phases),
    ]
    for (backend, seed), (seconds, result) in runs.items():
        lines.append(f"| {backend} | {seed} | {seconds:.0f} | " + " | ".join(
            f"{result['seconds'].get(k, 0):.0f}" for k in phases) + " |")

    rows = list(REFERENCES) + [(v, variant_name(v)) for v in first["metrics"]]
    lines += ["", "## Recommendation", "",
              "Test users, sequential task, seen template 0, every item the "
              "user saw before the target excluded from the ranking (the same "
              "rule and users for every row); HR@10 per seed, then mean ± "
              "standard error over seeds, and the mean NDCG@10.", ""]
    for backend in FLAGS.backends:
        lines += [f"### {backend}", "",
                  "| method | " + " | ".join(f"seed {s}" for s in FLAGS.seeds)
                  + " | mean ± se HR@10 | mean NDCG@10 |",
                  "|---|" + "---|" * (len(FLAGS.seeds) + 2)]
        for key, name in rows:
            cells = [metric(runs[backend, s][1], key) for s in FLAGS.seeds]
            hr_mean, hr_se = mean_and_se([m["HR@10"] for m in cells])
            ndcg_mean, _ = mean_and_se([m["NDCG@10"] for m in cells])
            lines.append(f"| {name} | " + " | ".join(
                f"{m['HR@10']:.3f}" for m in cells)
                + f" | {hr_mean:.3f} ± {hr_se:.3f} | {ndcg_mean:.3f} |")
        lines.append("")
        if "ilm" in first["metrics"]:
            for other, label in (("none", "OpenP5-R"), ("random", "random")):
                wins = [metric(runs[backend, s][1], "ilm")["HR@10"]
                        > metric(runs[backend, s][1], other)["HR@10"]
                        for s in FLAGS.seeds]
                lines.append(f"- ILM above {label} in HR@10 on {sum(wins)} of "
                             f"{len(wins)} seeds.")
            lines.append("")

    lines += ["## Describing items", "",
              "\"What is item_<id> about?\" for the first items of the "
              "catalogue (greedy decoding); the share whose reply names "
              "exactly the item's two genres:", "",
              "| backend | seed | " + " | ".join(
                  variant_name(v) for v in first["describe"]) + " |",
              "|---|---|" + "---|" * len(first["describe"])]
    for (backend, seed), (_, result) in runs.items():
        lines.append(f"| {backend} | {seed} | " + " | ".join(
            f"{d['genres_correct']:.2f} of {d['items']}"
            for d in result["describe"].values()) + " |")
    lines += ["", "One exchange per run (prompt, reply, the item's text):", ""]
    for (backend, seed), (_, result) in runs.items():
        chat = result["conversation"]
        lines.append(f"- {backend}, seed {seed}: \"{chat['prompt']}\" -> "
                     f"\"{chat['reply']}\" (item text: \"{chat['reference']}\")")
    lines += [
        "", "## Reproducing these numbers", "",
        "Same code, seed, library versions and CPU: bit-identical (tested "
        "by `tests/experiments/test_experiments_determinism.py`). Another "
        "CPU need not be: oneDNN and XLA:CPU choose kernels by instruction "
        "set and split sums by core count, so weights differ in the last "
        "bits from the first steps and training drifts from there "
        "(`ilm_keras/utils/determinism.py`); compare over seeds.",
    ]
    report.write_report(lines, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
