"""Memory and time of building the phase-1 and phase-2 inputs at Clothing size.

What it costs to build one epoch of each phase's training input on a
synthetic dataset the size of OpenP5's Clothing (39,387 users, 23,033 items,
7 interactions per user: 275,709 interactions), with this checkout's
`ilm_keras` and, in the same run, with another checkout's (`--before`, e.g.
the commit before a change), so the two are measured side by side:

- phase 2: `PromptResponseBatches` over the pipeline's `training_pairs`
  (`--config`'s templates, history cut, item indexing, batch size, length
  grouping) with a `loss_positions` preprocessor as `build_phase2` makes it:
  building the epoch (shuffle, label width) and reading `--phase2_batches`
  batches from `fit_input()` (tokenization included); with this checkout
  also as process 0 of 2 (`fit_input(num_processes=2, process_id=0)`).
- phase 1: `make_phase1_dataset` with every loss (item-text pairs of a
  `QFormerTokenizer`, item-item and user-item pairs of the training
  sequences, random 64-d CF tables), one whole epoch read.

Each measurement runs in its own fresh process. Memory is the resident set
(RSS, `/proc/self/statm`) sampled every 5 ms by a thread: "peak above data"
is the highest RSS while building and reading minus the RSS just before
(data, tokenizer and preprocessor already made), i.e. what the input
pipeline itself holds. Writes `--output` (markdown).

    nice -n 19 python benchmarks/input_memory.py \
        --before=/tmp/ilm_before --set templates_per_example=3
    python benchmarks/input_memory.py --users=2000 --items=1000 --smoke
"""

import json
import os
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

import report

from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags

FLAGS = flags.FLAGS
define_config_flags("openp5_cpu")  # templates, history cut, batch sizes
flags.DEFINE_integer("users", 39387, "Users (OpenP5 Clothing: 39,387).")
flags.DEFINE_integer("items", 23033, "Items (OpenP5 Clothing: 23,033).")
flags.DEFINE_integer("interactions_per_user", 7, "Items per user's sequence.")
flags.DEFINE_integer("phase2_batches", 200, "Phase-2 batches read.")
flags.DEFINE_string("before", None, "Another checkout's root to measure beside this one.")
flags.DEFINE_bool("smoke", False, "A few batches only (a check that it runs).")
flags.DEFINE_string("output", "benchmarks/results/input_memory.md", "Report path.")
flags.DEFINE_string("child", None, "Internal: run one measurement.")
flags.DEFINE_string("library", None, "Internal: the checkout the child imports.")


class PeakRSS:
    """Samples this process's resident set in a thread; `peak` in bytes."""

    def __init__(self, interval=0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _data(config):
    from ilm_keras import data as ild

    data, _ = ild.make_synthetic_data(
        num_users=FLAGS.users, num_items=FLAGS.items, num_clusters=16,
        interactions_per_user=FLAGS.interactions_per_user, seed=0)
    data = ild.random_indexing(data, seed=0)
    return ild.leave_last_out(data, max_history=config.max_history)


def _phase2(config, split, num_processes):
    from ilm_keras.experiments import pipeline
    from ilm_keras.models.item_language_model_preprocessor import (
        ItemLanguageModelPreprocessor,
    )
    from ilm_keras.models.prompt_response_batches import PromptResponseBatches
    from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer

    data = split.data
    texts = [t for t in data.item_texts if t] if config.describe_items else []
    tokenizer = OpenP5Tokenizer.from_texts(
        texts, item_ids=data.item_index, item_indexing=config.item_indexing)
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, item_ids=[str(i) for i in data.item_index],
        user_ids=[str(u) for u in data.user_index],
        sequence_length=pipeline.sequence_length_for(
            split, tokenizer, config.num_query_tokens, config),
        max_mentions=config.max_history + 2, loss_positions=True,
        num_soft_tokens=config.num_query_tokens)
    shard = {} if num_processes == 1 else dict(
        num_processes=num_processes, process_id=0)
    count = 3 if FLAGS.smoke else FLAGS.phase2_batches
    with PeakRSS() as memory:
        before = memory.peak
        start = time.perf_counter()
        batches = PromptResponseBatches(
            preprocessor, lambda epoch: pipeline.training_pairs(split, config, epoch),
            batch_size=config.phase2_batch_size, seed=config.seed,
            length_bucket=config.length_bucket, length_group=config.length_group)
        built = time.perf_counter() - start
        built_peak = memory.peak
        dataset, _ = batches.fit_input(**shard)
        rows = 0
        start = time.perf_counter()
        for x, _, _ in dataset.take(count):
            rows += int(x["token_ids"].shape[0])
        read = time.perf_counter() - start
    return {
        "pairs": len(batches.order) if hasattr(batches, "order") else len(batches.pairs),
        "batches_per_epoch": len(batches), "batches_read": count,
        "rows_per_batch": rows / count, "build_s": built,
        "read_s_per_batch": read / count, "data_rss": before,
        "build_peak_above": built_peak - before,
        "peak_above": memory.peak - before,
    }


def _phase1(config, split):
    import numpy as np

    import ilm_keras
    from ilm_keras import data as ild

    data = split.data
    tokenizer = ilm_keras.QFormerTokenizer.train(data.item_texts, 400, 24)
    ids, mask = tokenizer.encode(data.item_texts)
    rng = np.random.default_rng(0)
    item_table = rng.normal(size=(data.num_items, 64)).astype("float32")
    user_table = rng.normal(size=(len(data.user_ids), 64)).astype("float32")
    item_item = ild.item_item_pairs(split.train_sequences)
    user_item = ild.user_item_pairs(split.train_sequences)
    with PeakRSS() as memory:
        before = memory.peak
        start = time.perf_counter()
        dataset, steps = ilm_keras.make_phase1_dataset(
            item_table, item_text=(np.arange(data.num_items), ids, mask),
            item_item=item_item, user_item=user_item, user_table=user_table,
            losses="all", batch_size=config.phase1_batch_size, seed=0)
        steps = 5 if FLAGS.smoke else steps
        for _ in dataset.take(steps):
            pass
        seconds = time.perf_counter() - start
    return {
        "pairs": [int(data.num_items), len(item_item), len(user_item)],
        "steps": steps, "epoch_s": seconds, "data_rss": before,
        "peak_above": memory.peak - before,
    }


def child(config):
    sys.path.insert(0, FLAGS.library)
    split = _data(config)
    kind, _, processes = FLAGS.child.partition(":")
    if kind == "phase2":
        result = _phase2(config, split, int(processes or 1))
    else:
        result = _phase1(config, split)
    print("RESULT " + json.dumps(result), flush=True)


def measure(kind, library):
    env = dict(os.environ, PYTHONPATH=library, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:],
               f"--child={kind}", f"--library={library}"]
    out = subprocess.run(command, env=env, capture_output=True, text=True,
                         cwd=library)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{kind} with {library} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv):
    del argv
    config = config_from_flags()
    if FLAGS.child:
        return child(config)
    libraries = [("this checkout", report.REPO)]
    if FLAGS.before:
        libraries.insert(0, ("--before", os.path.abspath(FLAGS.before)))
    load = os.getloadavg()
    start = time.perf_counter()
    rows = []
    for name, library in libraries:
        kinds = ["phase1", "phase2"]
        if library == report.REPO:
            kinds.append("phase2:2")
        for kind in kinds:
            print(f"measuring {kind} with {name} ...", flush=True)
            rows.append((name, library, kind, measure(kind, library)))
    gib = 2.0 ** -30
    lines = report.report_header(
        "Input pipelines at OpenP5-Clothing size: memory and time")
    lines += [
        f"Synthetic data: {FLAGS.users:,} users, {FLAGS.items:,} items, "
        f"{FLAGS.interactions_per_user} items per user; config "
        f"`{FLAGS.config}` with templates_per_example="
        f"{config.templates_per_example}, max_history={config.max_history}, "
        f"item_indexing={config.item_indexing}, describe_items="
        f"{config.describe_items}, phase-1 batch {config.phase1_batch_size}, "
        f"phase-2 batch {config.phase2_batch_size}.",
        "",
        f"Load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}; "
        f"wall time {time.perf_counter() - start:.0f} s.",
        "",
        "Checkouts: " + "; ".join(f"{n}: `{p}`" for n, p in libraries) + ".",
        "",
        "## Phase 2: one epoch of `PromptResponseBatches` (`training_pairs`)",
        "",
        "| checkout | processes | pairs / epoch | build epoch, s | peak above data "
        "while building, GiB | ms / batch read | rows / batch | peak above "
        "data after reading, GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, _, kind, r in rows:
        if kind.startswith("phase2"):
            lines.append(
                f"| {name} | {kind.partition(':')[2] or 1} | {r['pairs']:,} | "
                f"{r['build_s']:.1f} | {r['build_peak_above'] * gib:.3f} | "
                f"{1000 * r['read_s_per_batch']:.0f} | {r['rows_per_batch']:.0f} | "
                f"{r['peak_above'] * gib:.3f} |")
    lines += [
        "",
        "## Phase 1: one epoch of `make_phase1_dataset` (every loss)",
        "",
        "| checkout | item-text / item-item / user-item pairs | batches | "
        "epoch, s | peak above data, GiB |",
        "|---|---|---|---|---|",
    ]
    for name, _, kind, r in rows:
        if kind == "phase1":
            lines.append(
                f"| {name} | {' / '.join(f'{p:,}' for p in r['pairs'])} | "
                f"{r['steps']} | {r['epoch_s']:.1f} | {r['peak_above'] * gib:.3f} |")
    report.write_report(lines, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
