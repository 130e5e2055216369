"""CF at ML-25M scale: our iALS beside `implicit`, TFRS MF with and without
`tf.distribute.MirroredStrategy`; fit time and peak memory, same run.

1. Data (made here, seeded, vectorised NumPy): an implicit-feedback matrix
   of MovieLens-25M's size by default (162,541 users, 59,047 items,
   25,000,095 interactions). Item popularity is Zipf-like,
   `p(rank) ~ (rank + offset)^-exponent` over a random item order; users
   get `min_per_user` + a log-normal number of items (heavy-tailed), scaled
   to the target total and capped at a tenth of the catalogue. Each user
   also has one of `--clusters` tastes: with probability `--cluster_share`
   an item is drawn among its cluster's items (by popularity), otherwise
   among all items, so a working CF model beats popularity. Repeated
   (user, item) draws are removed and redrawn (a few rounds) until every
   user has its count; the final number of interactions is reported.
   `--scale` multiplies users and interactions (the per-user distribution
   is kept) and the items by `sqrt(scale)` (a linear scale would leave the
   small catalogue denser than the users' counts allow).
2. Hold-out: `--eval_users` users (sampled once) each lose one random
   interaction before fitting; the same matrix, users and targets serve
   every method. Quality: HR@10 / NDCG@10 of ranking all items by each
   method's trained user vector (its user table as fitted: no fold-in),
   the user's training items excluded; popularity (training counts) for
   reference.
3. Each method runs in its own fresh process (this script with `--part`),
   one after another, reading the matrix from one `.npz`, so peak memory
   is per method: the process's peak resident size (`VmHWM`) at the end,
   and its resident size just after loading the matrix (imports
   included), so "peak minus data" is what fitting added. (`ru_maxrss` of
   `RUSAGE_SELF` would not do: Linux carries the spawning process's peak
   into the child.) TFRS trains in a grandchild process
   (`TFRSMatrixFactorization` runs a TensorFlow worker); its peak is
   `ru_maxrss` of `RUSAGE_CHILDREN`, read in the method's process after
   the worker exited (the largest waited-for child: the worker). That
   value is the worker's own peak whenever it exceeds the method process's
   peak (the most the worker can have inherited); the report checks it.
   - iALS (ours, `ilm_keras.cf.IALS`): conjugate gradient (3 steps), a
     `--threads`-thread pool over blocks of short rows, single-threaded
     BLAS.
   - implicit (`implicit.cpu.als.AlternatingLeastSquares`): the same
     objective (`implicit` alpha = ours + 1 on binary data), the same
     iterations and CG steps, `--threads` threads, single-threaded BLAS.
   - TFRS MF (`ilm_keras.cf.TFRSMatrixFactorization`): in-batch softmax
     over `--tfrs_batch_size` pairs, `--tfrs_epochs` epochs; once on one
     device and once with `devices=2` (MirroredStrategy over 2 logical
     CPU devices of the same cores, global batch unchanged). A pair costs
     time in proportion to the batch (it is scored against every
     candidate), so on CPU a larger batch makes an epoch slower, not
     faster: at `--scale=0.05` on 2 cores an epoch took 20 s at batch
     1,024 and 91 s at 4,096, which is why the default is 1,024.

Writes a markdown report (`--output`). Every number in it is measured by
that run.

Usage (from the repository root):
    nice -n 19 python benchmarks/cf_scale.py                 # ML-25M size
    nice -n 19 python benchmarks/cf_scale.py --scale=0.01 \\
        --output=/tmp/cf_scale_small.md                       # a minute
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
import scipy.sparse
from absl import app
from absl import flags

import report

FLAGS = flags.FLAGS
flags.DEFINE_float(
    "scale", 1.0, "Users and interactions x scale, items x sqrt(scale)."
)
flags.DEFINE_integer("num_users", 162_541, "Users at scale 1 (ML-25M).")
flags.DEFINE_integer("num_items", 59_047, "Items at scale 1 (ML-25M).")
flags.DEFINE_integer(
    "num_interactions", 25_000_095, "Interactions at scale 1 (ML-25M)."
)
flags.DEFINE_float(
    "popularity_exponent", 1.6, "Zipf-like exponent of item popularity."
)
flags.DEFINE_float(
    "popularity_offset",
    200.0,
    "Rank offset of the popularity law at scale 1 (scaled with the items).",
)
flags.DEFINE_integer("min_per_user", 20, "Fewest items of a user (ML-25M).")
flags.DEFINE_float(
    "user_sigma", 1.4, "Log-normal sigma of the items per user above the min."
)
flags.DEFINE_integer("clusters", 32, "User / item taste clusters.")
flags.DEFINE_float(
    "cluster_share", 0.5, "Share of a user's draws from its own cluster."
)
flags.DEFINE_integer("seed", 0, "Seed of the data, hold-out and models.")
flags.DEFINE_integer("eval_users", 2000, "Users with a held-out item.")
flags.DEFINE_list(
    "methods",
    ["ials", "implicit", "tfrs", "tfrs_mirrored"],
    "Methods to run, each in its own process.",
)
flags.DEFINE_integer("factors", 64, "Embedding dimension of every method.")
flags.DEFINE_integer("iterations", 15, "ALS iterations (ours and implicit).")
flags.DEFINE_float("regularization", 50.0, "ALS L2 weight (both).")
flags.DEFINE_float(
    "alpha", 10.0, "Our iALS confidence slope; implicit gets alpha + 1."
)
flags.DEFINE_integer("threads", 2, "Threads of both ALS implementations.")
flags.DEFINE_integer("tfrs_epochs", 1, "TFRS epochs.")
flags.DEFINE_integer(
    "tfrs_batch_size",
    1024,
    "TFRS global batch (in-batch candidates); epoch time grows with it.",
)
flags.DEFINE_float("tfrs_learning_rate", 0.1, "TFRS Adagrad learning rate.")
flags.DEFINE_bool("tfrs_logq", True, "TFRS logQ correction.")
flags.DEFINE_string(
    "workdir", None, "Folder for the data and per-method files (default: "
    "a temporary folder, removed at the end)."
)
flags.DEFINE_string(
    "output",
    "benchmarks/results/cf_scale.md",
    "Markdown report (relative paths are resolved against the repo root).",
)
# Internal: the method a child process runs, and its files.
flags.DEFINE_enum(
    "part",
    None,
    ["ials", "implicit", "tfrs", "tfrs_mirrored"],
    "(internal) the method this child process fits.",
)
flags.DEFINE_string("data", None, "(internal) the matrix's .npz file.")
flags.DEFINE_string("result", None, "(internal) the child's JSON output.")

GIB = 1024**3
LABELS = {
    "ials": "iALS (ours, NumPy)",
    "implicit": "implicit ALS",
    "tfrs": "TFRS MF, one device",
    "tfrs_mirrored": "TFRS MF, MirroredStrategy x2",
}


# ----------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------
def sizes():
    """`(users, items, interactions)` at `--scale`."""
    return (
        max(1, round(FLAGS.num_users * FLAGS.scale)),
        max(1, round(FLAGS.num_items * np.sqrt(FLAGS.scale))),
        max(1, round(FLAGS.num_interactions * FLAGS.scale)),
    )


def user_counts(rng, num_users, num_items, total):
    """Heavy-tailed items per user summing to `total` (min, cap respected).

    `min_per_user + s * lognormal(0, user_sigma)`, with `s` found by
    bisection so that the capped, rounded-down counts come closest to
    `total` from below; the remainder goes one item each to random users
    under the cap.
    """
    low, cap = FLAGS.min_per_user, max(FLAGS.min_per_user, num_items // 10)
    if not low * num_users <= total <= cap * num_users:
        raise ValueError(
            f"{total} interactions cannot be spread over {num_users} users "
            f"with {low} to {cap} items each; change --scale or the sizes."
        )
    tail = rng.lognormal(0.0, FLAGS.user_sigma, num_users)

    def counts(s):
        return np.minimum(low + np.floor(s * tail), cap).astype(np.int64)

    lo, hi = 0.0, float(cap)
    while counts(hi).sum() < total:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if counts(mid).sum() <= total:
            lo = mid
        else:
            hi = mid
    out = counts(lo)
    short = total - int(out.sum())
    if short:
        room = np.flatnonzero(out < cap)
        out[rng.choice(room, size=short, replace=False)] += 1
    return out


def generate(seed):
    """The synthetic user x item matrix; returns `(csr, stats)`."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    num_users, num_items, total = sizes()
    counts = user_counts(rng, num_users, num_items, total)
    # Item popularity over a random item order, items grouped by cluster so
    # that one cumulative sum serves every cluster and the whole catalogue.
    offset = FLAGS.popularity_offset * num_items / FLAGS.num_items
    weight = (np.arange(num_items) + offset) ** -FLAGS.popularity_exponent
    weight = weight[rng.permutation(num_items)]
    item_cluster = rng.integers(FLAGS.clusters, size=num_items)
    by_cluster = np.argsort(item_cluster, kind="stable")
    cumulative = np.cumsum(weight[by_cluster])
    bounds = np.searchsorted(
        item_cluster[by_cluster], np.arange(FLAGS.clusters + 1)
    )
    cum_start = np.concatenate([[0.0], cumulative])[bounds[:-1]]
    cum_end = np.concatenate([[0.0], cumulative])[bounds[1:]]
    user_cluster = rng.integers(FLAGS.clusters, size=num_users)

    def draw(users):
        """One item per entry of `users` (the mixture of step 1)."""
        u = rng.random(users.size)
        own = rng.random(users.size) < FLAGS.cluster_share
        c = user_cluster[users]
        target = np.where(
            own,
            cum_start[c] + u * (cum_end[c] - cum_start[c]),
            u * cumulative[-1],
        )
        position = np.searchsorted(cumulative, target, side="right")
        return by_cluster[np.minimum(position, num_items - 1)]

    users = np.repeat(np.arange(num_users, dtype=np.int64), counts)
    keys = np.unique(users * num_items + draw(users))
    drawn, rounds = users.size, 1
    del users
    # Repeated pairs are dropped and each user's shortfall redrawn (from the
    # same mixture, so every user's items are a sample without replacement).
    # Heavy users exhaust their likely items, so round r draws 2^(r-1) times
    # the shortfall and keeps, per user, the first new items in draw order.
    have = np.bincount(keys // num_items, minlength=num_users)
    while rounds < 100 and (have < counts).any():
        missing = counts - have
        factor = 2 ** min(rounds, 6)
        users = np.repeat(
            np.arange(num_users, dtype=np.int64), factor * missing
        )
        new = users * num_items + draw(users)
        drawn += users.size
        rounds += 1
        found = np.minimum(np.searchsorted(keys, new), keys.size - 1)
        new = new[keys[found] != new]
        first = np.sort(np.unique(new, return_index=True)[1])
        new = new[first]  # distinct, in draw order (grouped by user)
        owner = new // num_items
        rank = np.arange(new.size) - np.searchsorted(owner, owner)
        new = np.sort(new[rank < missing[owner]])
        have += np.bincount(new // num_items, minlength=num_users)
        # Two sorted runs: the stable sort merges them in linear time.
        keys = np.sort(np.concatenate([keys, new]), kind="stable")
    rows, cols = keys // num_items, (keys % num_items).astype(np.int32)
    del keys
    indptr = np.concatenate(
        [[0], np.cumsum(np.bincount(rows, minlength=num_users))]
    )
    matrix = scipy.sparse.csr_matrix(
        (np.ones(cols.size, np.float32), cols, indptr),
        shape=(num_users, num_items),
    )
    per_user = np.diff(matrix.indptr)
    per_item = np.bincount(matrix.indices, minlength=num_items)
    top = np.sort(per_item)[::-1]
    stats = {
        "users": num_users,
        "items": num_items,
        "target_interactions": total,
        "interactions": int(matrix.nnz),
        "drawn": int(drawn),
        "rounds": rounds,
        "density": matrix.nnz / (num_users * num_items),
        "per_user": [
            int(per_user.min()),
            float(np.median(per_user)),
            float(per_user.mean()),
            int(per_user.max()),
        ],
        "per_item": [
            int(per_item.min()),
            float(np.median(per_item)),
            float(per_item.mean()),
            int(per_item.max()),
        ],
        "items_without": int((per_item == 0).sum()),
        "top1_share": float(top[: max(1, num_items // 100)].sum() / matrix.nnz),
        "top10_share": float(top[: max(1, num_items // 10)].sum() / matrix.nnz),
        "seconds": time.perf_counter() - start,
    }
    return matrix, stats


def hold_out(matrix, rng, count):
    """Removes one random interaction of `count` random users.

    Returns `(train_matrix, users, targets)`.
    """
    lengths = np.diff(matrix.indptr)
    eligible = np.flatnonzero(lengths >= 2)
    users = np.sort(rng.choice(eligible, size=min(count, eligible.size),
                               replace=False))
    picked = matrix.indptr[users] + rng.integers(lengths[users])
    targets = matrix.indices[picked].copy()
    keep = np.ones(matrix.nnz, bool)
    keep[picked] = False
    indptr = matrix.indptr.copy()
    removed = np.zeros(matrix.shape[0], np.int64)
    removed[users] = 1
    indptr[1:] -= np.cumsum(removed)
    train = scipy.sparse.csr_matrix(
        (matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape
    )
    return train, users, targets


# ----------------------------------------------------------------------
# A child process: one method.
# ----------------------------------------------------------------------
def status_gib(field):
    """`VmRSS` (resident now) or `VmHWM` (peak resident) of this process.

    `VmHWM` belongs to the process image, so it starts afresh at `exec`;
    `ru_maxrss` of `RUSAGE_SELF` does not: Linux carries the spawning
    process's peak over into the child (with Python's vfork-based
    `subprocess`, the parent's peak so far), so every method's process
    would report at least the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError(f"No {field} in /proc/self/status (Linux only).")


def run_part(part):
    start = time.perf_counter()
    with np.load(FLAGS.data) as data:
        shape = tuple(int(x) for x in data["shape"])
        matrix = scipy.sparse.csr_matrix(
            (
                np.ones(data["indices"].size, np.float32),
                data["indices"],
                data["indptr"],
            ),
            shape=shape,
        )
        eval_users = data["eval_users"]
    result = {
        "part": part,
        "load_seconds": time.perf_counter() - start,
        "rss_after_load_gib": status_gib("VmRSS"),
        "versions": {},
    }
    if part == "ials":
        from ilm_keras.cf import IALS

        model = IALS(
            factors=FLAGS.factors,
            regularization=FLAGS.regularization,
            alpha=FLAGS.alpha,
            iterations=FLAGS.iterations,
            seed=FLAGS.seed,
            num_threads=FLAGS.threads,
        )
        model.fit(matrix)
        result.update(fit_seconds=model.fit_seconds, steps=FLAGS.iterations)
        users, items = model.user_table, model.item_table
    elif part == "implicit":
        import implicit

        from cf_common import fit_implicit
        from cf_common import implicit_als

        model = implicit_als(
            FLAGS.regularization,
            FLAGS.alpha,
            FLAGS.factors,
            FLAGS.iterations,
            FLAGS.seed,
            num_threads=FLAGS.threads,
        )
        seconds = fit_implicit(model, matrix)
        result.update(fit_seconds=seconds, steps=FLAGS.iterations)
        result["versions"]["implicit"] = implicit.__version__
        users = np.asarray(model.user_factors)
        items = np.asarray(model.item_factors)
    else:
        from ilm_keras.cf import TFRSMatrixFactorization

        model = TFRSMatrixFactorization(
            factors=FLAGS.factors,
            epochs=FLAGS.tfrs_epochs,
            batch_size=FLAGS.tfrs_batch_size,
            learning_rate=FLAGS.tfrs_learning_rate,
            logq_correction=FLAGS.tfrs_logq,
            seed=FLAGS.seed,
            devices=2 if part == "tfrs_mirrored" else None,
        )
        model.fit(matrix)
        result.update(
            fit_seconds=model.train_seconds,
            call_seconds=model.fit_seconds,
            steps=FLAGS.tfrs_epochs,
            loss_history=model.loss_history,
            num_replicas=model.num_replicas,
            # The largest waited-for child: the TensorFlow worker. Its
            # ru_maxrss is at least this process's peak when it spawned the
            # worker (see `status_gib`); the report says when it is more.
            worker_peak_gib=resource.getrusage(resource.RUSAGE_CHILDREN)
            .ru_maxrss * 1024 / GIB,
        )
        result["versions"].update(model.versions)
        users, items = model.user_table, model.item_table
    np.savez(
        FLAGS.result + ".npz",
        users=np.asarray(users[eval_users], np.float32),
        items=np.asarray(items, np.float32),
    )
    result["peak_gib"] = status_gib("VmHWM")
    with open(FLAGS.result, "w") as f:
        json.dump(result, f)


# ----------------------------------------------------------------------
# The parent: data once, one child per method, the report.
# ----------------------------------------------------------------------
def run_child(part, data, folder):
    result = os.path.join(folder, f"{part}.json")
    forwarded = [
        f"--{name}={FLAGS[name].value}"
        for name in (
            "seed", "factors", "iterations", "regularization", "alpha",
            "threads", "tfrs_epochs", "tfrs_batch_size",
            "tfrs_learning_rate", "tfrs_logq",
        )
    ]
    command = [
        sys.executable, os.path.abspath(__file__), *forwarded,
        f"--part={part}", f"--data={data}", f"--result={result}",
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    with open(result) as f:
        out = json.load(f)
    out["child_seconds"] = wall
    out["load"] = (load_before, load_after)
    with np.load(result + ".npz") as tables:
        out["users"], out["items"] = tables["users"], tables["items"]
    print(
        f"{part}: fit {out['fit_seconds']:.1f} s, child {wall:.1f} s, "
        f"peak {out['peak_gib']:.2f} GiB",
        flush=True,
    )
    return out


def memory_gib():
    """`(total, available)` memory of the machine, GiB."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024 / GIB
    return info["MemTotal"], info["MemAvailable"]


def main(argv):
    del argv
    if FLAGS.part:
        run_part(FLAGS.part)
        return
    unknown = set(FLAGS.methods) - set(LABELS)
    if unknown:
        raise app.UsageError(
            f"--methods: unknown {sorted(unknown)}; choose from "
            f"{sorted(LABELS)}."
        )
    start = time.perf_counter()
    load_start = os.getloadavg()
    memory_start = memory_gib()
    matrix, stats = generate(FLAGS.seed)
    print("data:", json.dumps(stats), flush=True)
    rng = np.random.default_rng([FLAGS.seed, 1])
    train, eval_users, targets = hold_out(matrix, rng, FLAGS.eval_users)
    del matrix
    histories = [
        train.indices[train.indptr[u] : train.indptr[u + 1]].copy()
        for u in eval_users
    ]
    item_counts = np.bincount(train.indices, minlength=train.shape[1])
    with tempfile.TemporaryDirectory(prefix="cf_scale_") as tmp:
        folder = FLAGS.workdir or tmp
        os.makedirs(folder, exist_ok=True)
        data = os.path.join(folder, "matrix.npz")
        np.savez(
            data,
            indptr=train.indptr.astype(np.int64),
            indices=train.indices.astype(np.int32),
            shape=np.array(train.shape, np.int64),
            eval_users=eval_users,
        )
        stats["train_interactions"] = int(train.nnz)
        del train
        results = [run_child(part, data, folder) for part in FLAGS.methods]
    load_end = os.getloadavg()

    from ilm_keras.metrics import evaluate_retrieval

    def quality(users, items):
        return evaluate_retrieval(
            users, items, targets, histories, exclude_history=True, ks=(10,)
        )

    popularity = quality(
        np.ones((len(targets), 1), np.float32),
        item_counts[:, None].astype(np.float32),
    )
    for r in results:
        r["quality"] = quality(r.pop("users"), r.pop("items"))
    write_report(
        stats,
        results,
        popularity,
        len(targets),
        (load_start, load_end),
        memory_start,
        time.perf_counter() - start,
    )


def _ratio(results, a, b, key):
    by = {r["part"]: r for r in results}
    if a in by and b in by:
        return by[a][key] / by[b][key]
    return None


def write_report(stats, results, popularity, num_eval, loads, memory, wall):
    fmt_load = lambda x: ", ".join(f"{v:.1f}" for v in x)  # noqa: E731
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    for r in results:
        versions.update(r["versions"])
    als = f"{FLAGS.iterations} ALS iterations"
    lines = [
        "# Collaborative filtering at ML-25M scale: fit time and peak memory",
        "",
        "Written by `benchmarks/cf_scale.py` (its docstring says what each "
        "method runs); every number below was measured by this command, in "
        "one run.",
        "",
        "```",
        "nice -n 19 python " + " ".join(sys.argv),
        "```",
        "",
        f"- Machine: {report.cpu_description()}, "
        f"{memory[0]:.1f} GiB RAM ({memory[1]:.1f} GiB available at the "
        f"start), {platform.platform()}; code {report.code_revision()}.",
        f"- Load average (1, 5, 15 min) at start / end: "
        f"{fmt_load(loads[0])} / {fmt_load(loads[1])} (a shared machine: "
        "absolute times are noisy, ratios less so).",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}.",
        f"- Total wall time {wall:.0f} s (data {stats['seconds']:.1f} s).",
        "",
        "## Data (synthetic, seed "
        f"{FLAGS.seed}, scale {FLAGS.scale:g})",
        "",
        "| | value |",
        "|---|---|",
        f"| users x items | {stats['users']:,} x {stats['items']:,} |",
        f"| interactions (target / final, no duplicates) | "
        f"{stats['target_interactions']:,} / {stats['interactions']:,} |",
        f"| pairs drawn (duplicates redrawn, {stats['rounds']} rounds) | "
        f"{stats['drawn']:,} |",
        f"| density | {100 * stats['density']:.3f}% |",
        "| items per user (min / median / mean / max) | "
        + " / ".join(f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"
                     for v in stats["per_user"]) + " |",
        "| users per item (min / median / mean / max) | "
        + " / ".join(f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"
                     for v in stats["per_item"]) + " |",
        f"| items without interactions | {stats['items_without']:,} |",
        f"| share of interactions on the top 1% / 10% of items | "
        f"{100 * stats['top1_share']:.1f}% / "
        f"{100 * stats['top10_share']:.1f}% |",
        f"| training interactions (after the hold-out) | "
        f"{stats['train_interactions']:,} |",
        "",
        f"Popularity `(rank + {FLAGS.popularity_offset:g} x scale_items)^-"
        f"{FLAGS.popularity_exponent:g}`; items per user {FLAGS.min_per_user}"
        f" + log-normal (sigma {FLAGS.user_sigma:g}), at most a tenth of the "
        f"catalogue; {FLAGS.clusters} taste clusters, "
        f"{100 * FLAGS.cluster_share:g}% of a user's draws from its own.",
        "",
        "## Fit time and memory",
        "",
        f"Factors {FLAGS.factors}. ALS: {als}, regularization "
        f"{FLAGS.regularization:g}, alpha {FLAGS.alpha:g} (implicit "
        f"{FLAGS.alpha + 1:g}: the same objective), conjugate gradient with "
        f"3 steps, {FLAGS.threads} threads each, single-threaded BLAS. "
        f"TFRS: {FLAGS.tfrs_epochs} epoch(s), global batch "
        f"{FLAGS.tfrs_batch_size:,}, Adagrad lr {FLAGS.tfrs_learning_rate:g},"
        f" logQ correction {'on' if FLAGS.tfrs_logq else 'off'}, accidental "
        "hits removed, TensorFlow's default threads (on CPU an epoch's time "
        "grows with the batch, as every pair is scored against every "
        "in-batch candidate; the script's docstring has a measurement). "
        "MirroredStrategy: 2 logical devices of the same 2 cores, the global "
        "batch split over them, candidates gathered from both replicas (the "
        "single-device objective).",
        "",
        "| method | fit s | s per iteration / epoch | whole process s "
        "| RSS after loading data, GiB | peak RSS, GiB | peak minus data, "
        "GiB | TF worker peak RSS, GiB | load (1 min) at start / end |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        worker = r.get("worker_peak_gib")
        lines.append(
            f"| {LABELS[r['part']]} | {r['fit_seconds']:.1f} | "
            f"{r['fit_seconds'] / r['steps']:.2f} | "
            f"{r['child_seconds']:.1f} | {r['rss_after_load_gib']:.2f} | "
            f"{r['peak_gib']:.2f} | "
            f"{r['peak_gib'] - r['rss_after_load_gib']:.2f} | "
            f"{'-' if worker is None else f'{worker:.2f}'} | "
            f"{r['load'][0]:.1f} / {r['load'][1]:.1f} |"
        )
    tfrs = [r for r in results if "worker_peak_gib" in r]
    if all(r["worker_peak_gib"] > r["peak_gib"] for r in tfrs):
        worker_note = (
            "each exceeds its method process's peak, the most a child can "
            "inherit through `ru_maxrss`, so it is the worker's own peak"
        )
    else:
        worker_note = (
            "NOT above every method process's peak, so it may be that "
            "inherited value rather than the worker's own peak"
        )
    lines += [
        "",
        "- fit s: ALS, the library's `fit` call (setup included: our CG "
        "blocks, implicit's transpose); TFRS, Keras `fit` inside the worker "
        "(`train_seconds`). whole process s: the method's process from "
        "start to exit (Python start, imports, data loading; TFRS: also the "
        "worker's start, TensorFlow import and the pairs' hand-over).",
        "- RSS after loading data: the method's process (`VmRSS`) after "
        "reading the matrix, imports included. peak RSS: its `VmHWM` at the "
        "end (for TFRS: the method's process, which builds the training "
        "pairs and hands them to the worker). TF worker peak RSS: "
        "`ru_maxrss` of `RUSAGE_CHILDREN` in the TFRS method's process, i.e."
        " the TensorFlow worker (the pairs, the `tf.data` shuffle buffer over"
        " all pairs, the tables and optimizer state); "
        + worker_note + ".",
        "",
        "| ratio (same run) | fit s | peak RSS |",
        "|---|---|---|",
    ]
    for label, a, b, peak_key in (
        ("ours / implicit", "ials", "implicit", "peak_gib"),
        ("MirroredStrategy x2 / one device", "tfrs_mirrored", "tfrs",
         "worker_peak_gib"),
    ):
        fit = _ratio(results, a, b, "fit_seconds")
        peak = _ratio(results, a, b, peak_key)
        if fit is not None:
            lines.append(f"| {label} | {fit:.2f}x | {peak:.2f}x |")
    lines += [
        "",
        "(TFRS peak ratio: the workers' peaks.)",
        "",
        f"## Quality sanity check ({num_eval:,} held-out interactions)",
        "",
        "HR@10 / NDCG@10 of each method's trained user vector against all "
        "items, the user's training items excluded (no fold-in: the users "
        "were trained on everything but the held-out item).",
        "",
        "| method | HR@10 | NDCG@10 |",
        "|---|---|---|",
        f"| popularity (training counts) | {popularity['HR@10']:.4f} | "
        f"{popularity['NDCG@10']:.4f} |",
    ]
    for r in results:
        q = r["quality"]
        lines.append(
            f"| {LABELS[r['part']]} | {q['HR@10']:.4f} | {q['NDCG@10']:.4f} |"
        )
    if tfrs:
        lines += ["", "TFRS mean training loss per pair, by epoch:", ""]
        for r in tfrs:
            lines.append(
                f"- {LABELS[r['part']]} ({r['num_replicas']} replica(s)): "
                + ", ".join(f"{x:.4f}" for x in r["loss_history"])
            )
    lines.append("")
    report.write_report(lines, _resolve(FLAGS.output))


def _resolve(path):
    return path if os.path.isabs(path) else os.path.join(report.REPO, path)


if __name__ == "__main__":
    app.run(main)
