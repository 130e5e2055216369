"""CF baselines on OpenP5 leave-last-out: popularity, iALS, TFRS, implicit.

For every dataset:
1. Load it with `ilm_keras.data.load_openp5` and split leave-last-out with
   full histories (`max_history=None`): train on `items[:-2]`, validate on
   `items[:-2] -> items[-2]`, test on `items[:-1] -> items[-1]`.
2. Tune on the VALIDATION split only: a grid over iALS regularization/alpha
   and TFRS epochs/logQ correction; the config with the best validation HR@10
   (history items excluded) is kept. The test split is evaluated once, for
   the kept configs.
3. Test: the iALS user vector is recomputed from `items[:-1]` by fold-in
   (an exact solve with the item table fixed), as is `implicit`'s
   (`recalculate_user`); TFRS uses its user tower as trained. Full ranking
   over all items, with and without removing the user's history items.
4. Time our iALS against `implicit`'s ALS at the same objective (implicit's
   confidence is `alpha * r`, ours `1 + alpha * r`: implicit alpha = ours + 1
   on binary data), best of `--repeats` fits each, interleaved.

Writes a markdown report (tables, command, machine, versions) to `--output`.

Usage (from the repository root):
    python benchmarks/cf_baselines.py
    python benchmarks/cf_baselines.py --datasets=ML100K --repeats=1
"""

import itertools
import os
import platform
import shlex
import sys
import time

import implicit
import numpy as np
import scipy
import threadpoolctl
from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cf_common import fit_implicit  # noqa: E402
from cf_common import implicit_als  # noqa: E402
from ilm_keras.cf import IALS  # noqa: E402
from ilm_keras.cf import TFRSMatrixFactorization  # noqa: E402
from ilm_keras.cf import interaction_matrix  # noqa: E402
from ilm_keras.data import leave_last_out  # noqa: E402
from ilm_keras.data import load_openp5  # noqa: E402
from ilm_keras.metrics import evaluate_retrieval  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "data_dir",
    "../shared/data/openp5",
    "OpenP5 folder with one sub-folder per dataset (relative paths are "
    "resolved against the repository root).",
)
flags.DEFINE_list("datasets", ["ML100K", "Beauty"], "Datasets to run.")
flags.DEFINE_integer("factors", 64, "Embedding dimension of every method.")
flags.DEFINE_integer("iterations", 15, "ALS iterations (ours and implicit).")
flags.DEFINE_integer("seed", 0, "Seed of every method.")
flags.DEFINE_list(
    "ials_regularization",
    ["0.05", "0.5", "5", "50"],
    "iALS regularization grid (tuned on validation).",
)
flags.DEFINE_list(
    "ials_alpha",
    ["1", "3", "10", "30"],
    "iALS confidence slope grid (validation).",
)
flags.DEFINE_list(
    "tfrs_epochs", ["2", "4", "8"], "TFRS epochs grid (validation)."
)
flags.DEFINE_float("tfrs_learning_rate", 0.1, "TFRS Adagrad learning rate.")
flags.DEFINE_integer(
    "tfrs_batch_size", 1024, "TFRS batch (in-batch negatives)."
)
flags.DEFINE_integer(
    "repeats", 3, "Timed fits per ALS implementation (best kept)."
)
flags.DEFINE_string(
    "output",
    "benchmarks/results/cf_baselines.md",
    "Markdown report (relative paths are resolved against the repo root).",
)

KS = (5, 10)
# The untuned setting of /work/shared/notes/stack-facts.md, in our alpha.
REFERENCE = {"regularization": 0.05, "alpha": 1.0}


def _resolve(path):
    return path if os.path.isabs(path) else os.path.join(REPO, path)


def _evaluate(user_vectors, item_table, targets, histories):
    return {
        excluded: evaluate_retrieval(
            user_vectors,
            item_table,
            targets,
            histories,
            exclude_history=excluded,
            ks=KS,
        )
        for excluded in (True, False)
    }


def _fit_implicit(matrix, config, factors, iterations, seed):
    model = implicit_als(
        config["regularization"], config["alpha"], factors, iterations, seed
    )
    return model, fit_implicit(model, matrix)


def _implicit_fold_in(model, histories, num_items):
    matrix = interaction_matrix(histories, num_items=num_items)
    with threadpoolctl.threadpool_limits(1, "blas"):
        start = time.perf_counter()
        vectors = model.recalculate_user(np.arange(len(histories)), matrix)
        seconds = time.perf_counter() - start
    return np.asarray(vectors), seconds


def run_dataset(name):
    path = os.path.join(_resolve(FLAGS.data_dir), name)
    data = load_openp5(path)
    split = leave_last_out(data, max_history=None)
    train = split.train_sequences
    num_items = data.num_items
    log = lambda *a: print(f"[{name}]", *a, flush=True)  # noqa: E731
    log(data.stats(), "excluded users:", len(split.excluded_users))
    rows, grid_rows, speed = [], [], []

    def add(method, config, results, fit_seconds):
        for excluded, res in results.items():
            rows.append((method, config, excluded, res, fit_seconds))

    # Popularity (training counts).
    start = time.perf_counter()
    counts = np.bincount(np.concatenate(train), minlength=num_items)
    pop_seconds = time.perf_counter() - start
    ones = np.ones((len(split.test_users), 1), np.float32)
    pop_table = counts[:, None].astype(np.float32)
    valid_pop = evaluate_retrieval(
        ones,
        pop_table,
        split.valid_target,
        split.valid_history,
        exclude_history=True,
        ks=KS,
    )
    grid_rows.append(("popularity", "-", valid_pop, pop_seconds))
    add(
        "popularity",
        "train counts",
        _evaluate(ones, pop_table, split.test_target, split.test_history),
        pop_seconds,
    )

    # iALS grid on validation.
    best = None
    for reg, alpha in itertools.product(
        map(float, FLAGS.ials_regularization), map(float, FLAGS.ials_alpha)
    ):
        model = IALS(
            factors=FLAGS.factors,
            regularization=reg,
            alpha=alpha,
            iterations=FLAGS.iterations,
            seed=FLAGS.seed,
        )
        model.fit(train, num_items=num_items)
        valid = evaluate_retrieval(
            model.fold_in(split.valid_history),
            model.item_table,
            split.valid_target,
            split.valid_history,
            exclude_history=True,
            ks=KS,
        )
        label = f"reg={reg:g}, alpha={alpha:g}"
        grid_rows.append(("iALS (ours)", label, valid, model.fit_seconds))
        log(
            "iALS",
            label,
            f"valid HR@10={valid['HR@10']:.4f}",
            f"{model.fit_seconds:.2f}s",
        )
        key = (valid["HR@10"], valid["NDCG@10"])
        if best is None or key > best[0]:
            best = (key, {"regularization": reg, "alpha": alpha}, model)
    _, chosen, ials = best
    chosen_label = (
        f"reg={chosen['regularization']:g}, alpha={chosen['alpha']:g}"
    )

    # Test: ours and implicit at the chosen and at the reference config.
    matrix = interaction_matrix(train, num_items=num_items)
    for tag, config in (("tuned", chosen), ("reference", REFERENCE)):
        label = f"reg={config['regularization']:g}, alpha={config['alpha']:g}"
        ours = (
            ials
            if config == chosen
            else IALS(
                factors=FLAGS.factors,
                iterations=FLAGS.iterations,
                seed=FLAGS.seed,
                **config,
            )
        )
        if ours.item_table is None:
            ours.fit(train, num_items=num_items)
        start = time.perf_counter()
        users = ours.fold_in(split.test_history)
        ours_fold = time.perf_counter() - start
        add(
            f"iALS (ours), {tag}",
            label,
            _evaluate(
                users, ours.item_table, split.test_target, split.test_history
            ),
            ours.fit_seconds,
        )
        theirs, theirs_fit = _fit_implicit(
            matrix, config, FLAGS.factors, FLAGS.iterations, FLAGS.seed
        )
        users, theirs_fold = _implicit_fold_in(
            theirs, split.test_history, num_items
        )
        add(
            f"implicit ALS, {tag}",
            f"reg={config['regularization']:g}, alpha={config['alpha'] + 1:g}",
            _evaluate(
                users,
                np.asarray(theirs.item_factors),
                split.test_target,
                split.test_history,
            ),
            theirs_fit,
        )
        if tag == "tuned":
            ours_times, theirs_times = [], []
            for _ in range(FLAGS.repeats):
                again = IALS(
                    factors=FLAGS.factors,
                    iterations=FLAGS.iterations,
                    seed=FLAGS.seed,
                    **config,
                )
                again.fit(train, num_items=num_items)
                ours_times.append(again.fit_seconds)
                theirs_times.append(
                    _fit_implicit(
                        matrix,
                        config,
                        FLAGS.factors,
                        FLAGS.iterations,
                        FLAGS.seed,
                    )[1]
                )
            speed.append(
                (
                    label,
                    min(ours_times),
                    min(theirs_times),
                    ours_fold,
                    theirs_fold,
                    ours_times,
                    theirs_times,
                )
            )
            log("speed", speed[-1])

    # TFRS grid on validation (the user tower is used as trained).
    best = None
    for epochs, logq in itertools.product(
        map(int, FLAGS.tfrs_epochs), (True, False)
    ):
        if not logq and epochs != max(map(int, FLAGS.tfrs_epochs)):
            continue  # without logQ correction only the longest run
        model = TFRSMatrixFactorization(
            factors=FLAGS.factors,
            epochs=epochs,
            batch_size=FLAGS.tfrs_batch_size,
            learning_rate=FLAGS.tfrs_learning_rate,
            logq_correction=logq,
            seed=FLAGS.seed,
        )
        model.fit(train, num_items=num_items)
        valid = evaluate_retrieval(
            model.user_table[split.valid_users],
            model.item_table,
            split.valid_target,
            split.valid_history,
            exclude_history=True,
            ks=KS,
        )
        label = f"epochs={epochs}, logQ={'on' if logq else 'off'}"
        grid_rows.append(("TFRS MF", label, valid, model.fit_seconds))
        log(
            "TFRS",
            label,
            f"valid HR@10={valid['HR@10']:.4f}",
            f"{model.fit_seconds:.1f}s",
        )
        key = (valid["HR@10"], valid["NDCG@10"])
        if best is None or key > best[0]:
            best = (key, label, model)
    _, label, tfrs_model = best
    add(
        "TFRS MF (user tower)",
        label,
        _evaluate(
            tfrs_model.user_table[split.test_users],
            tfrs_model.item_table,
            split.test_target,
            split.test_history,
        ),
        tfrs_model.fit_seconds,
    )
    return {
        "name": name,
        "stats": data.stats(),
        "rows": rows,
        "grid": grid_rows,
        "speed": speed,
        "chosen": chosen_label,
        "tfrs_versions": tfrs_model.versions,
        "num_test_users": len(split.test_target),
        "targets_in_history": rows[0][3]["targets_in_history"],
    }


def _machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.platform()}, {model}, {os.cpu_count()} cores"


def _versions(extra):
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "implicit": implicit.__version__,
    }
    versions.update(extra)
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def _fmt(res):
    return " | ".join(
        f"{res[m]:.4f}" for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
    )


def write_report(results, argv, loads, wall):
    lines = [
        "# CF baselines on the OpenP5 leave-last-out split",
        "",
        "Written by `benchmarks/cf_baselines.py`; every number below was "
        "measured by the command shown, in one run.",
        "",
        "```",
        "python " + " ".join(shlex.quote(a) for a in argv),
        "```",
        "",
        f"- Machine: {_machine()}; load average at start / end: "
        f"{loads[0]} / {loads[1]} (a shared machine: timings are noisy, "
        "which is why ALS fits are repeated and interleaved).",
        f"- Versions: {_versions(results[0]['tfrs_versions'])}.",
        f"- Total wall time: {wall:.0f} s.",
        f"- Factors {FLAGS.factors}, ALS iterations {FLAGS.iterations} "
        f"(conjugate gradient, 3 steps per half iteration; ours with "
        f"single-threaded BLAS and a {os.cpu_count()}-thread pool over row "
        f"blocks on sides with short rows (Beauty; ML100K runs on one "
        f"thread, see `ilm_keras/cf/ials.py`), implicit with single-threaded BLAS and its own "
        f"{os.cpu_count()} threads), seed {FLAGS.seed}. TFRS: Adagrad "
        f"lr {FLAGS.tfrs_learning_rate}, batch {FLAGS.tfrs_batch_size}, "
        "in-batch softmax with accidental hits removed.",
        "",
        "Protocol: train on `items[:-2]` of every user; test target "
        "`items[-1]`, full ranking over all items. iALS and implicit users "
        "are folded in from `items[:-1]` (exact solve with the item table "
        "fixed); TFRS uses its user tower as trained (it never sees "
        '`items[-2]`). "excl." = the user\'s history items (`items[:-1]`) '
        "removed from the ranking. Hyperparameters were chosen on the "
        "validation split (`items[:-2] -> items[-2]`, history excluded) "
        "only. implicit's `alpha` is ours + 1 (same objective on binary "
        'data). "fit s" is one training run\'s wall time (TFRS: the whole '
        "child process, TensorFlow import included).",
        "",
    ]
    for res in results:
        lines += [
            f"## {res['name']} — test ({res['num_test_users']} users; "
            f"{res['targets_in_history']} targets also in the history)",
            "",
            "| method | config | history | HR@5 | NDCG@5 | HR@10 | NDCG@10 "
            "| fit s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method, config, excluded, r, seconds in res["rows"]:
            lines.append(
                f"| {method} | {config} | {'excl.' if excluded else 'kept'} "
                f"| {_fmt(r)} | {seconds:.2f} |"
            )
        lines += [
            "",
            f"Speed at the tuned config ({res['chosen']}), "
            f"{FLAGS.repeats} interleaved fits each:",
            "",
            "| | ours (NumPy) | implicit 0.7 (Cython) | ours / implicit |",
            "|---|---|---|---|",
        ]
        for label, ours, theirs, ours_fold, theirs_fold, all_o, all_t in res[
            "speed"
        ]:
            median_o, median_t = np.median(all_o), np.median(all_t)
            lines.append(
                f"| fit, s, best | {ours:.2f} | {theirs:.2f} | "
                f"{ours / theirs:.2f}x |"
            )
            lines.append(
                f"| fit, s, median | {median_o:.2f} | {median_t:.2f} | "
                f"{median_o / median_t:.2f}x |"
            )
            lines.append(
                f"| fit, s, every run | {', '.join(f'{t:.2f}' for t in all_o)} "
                f"| {', '.join(f'{t:.2f}' for t in all_t)} | |"
            )
            lines.append(
                f"| test fold-in, s | {ours_fold:.2f} | {theirs_fold:.2f} | "
                f"{ours_fold / theirs_fold:.2f}x |"
            )
        lines += [
            "",
            f"Validation grid ({res['name']}; history excluded; what was "
            "tried):",
            "",
            "| method | config | HR@5 | NDCG@5 | HR@10 | NDCG@10 | fit s |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, config, r, seconds in res["grid"]:
            lines.append(f"| {method} | {config} | {_fmt(r)} | {seconds:.2f} |")
        lines.append("")
    path = _resolve(FLAGS.output)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("wrote", path)


def main(argv):
    del argv
    start = time.perf_counter()
    load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    results = [run_dataset(name) for name in FLAGS.datasets]
    load_end = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    write_report(
        results, sys.argv, (load_start, load_end), time.perf_counter() - start
    )


if __name__ == "__main__":
    app.run(main)
