"""Decoder pretraining with and without length-grouped batches, same run.

`PromptResponseBatches` (LLM pretraining and phase 2) groups pairs of
similar length into the same batch (`length_group`, default 50 batches per
sorted group); `length_group=1` is a plain shuffle. This script pretrains
the quickstart's decoder (`pipeline.pretrain_llm`, synthetic data of
`examples/quickstart.py`) both ways, interleaved, from the same seed, and
reports seconds per epoch after the first (compiling) epoch, the share of
batch tokens that are real (not padding), the batch widths, and the last
epoch's training loss and accuracy on response tokens. Then it runs the
whole quickstart (`run_synthetic`) both ways for each of `--quickstart_seeds`
and reports its test HR@10 / NDCG@10 and seconds per phase: grouping changes
which pairs share a batch, so quality must be compared over seeds.

    KERAS_BACKEND=jax python benchmarks/length_grouping.py
"""

import collections
import dataclasses
import os
import statistics
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from seed_stats import mean_and_se  # noqa: E402
from report import report_header  # noqa: E402
from report import write_report  # noqa: E402
from throughput import FLAGS  # noqa: E402  (with its --output, --repeats)

flags.DEFINE_list("groups", ["1", "50"], "length_group values compared.")
flags.DEFINE_integer("epochs", 4, "Pretraining epochs per run.")
flags.FLAGS.set_default("repeats", 2)  # throughput.py's flag: runs per setting.
flags.DEFINE_integer("num_users", 300, "Synthetic users (quickstart: 300).")
flags.DEFINE_integer("num_items", 60, "Synthetic items (quickstart: 60).")
flags.DEFINE_list("quickstart_seeds", ["0", "1", "2"],
                  "Seeds of the whole-quickstart comparison (empty: skip).")
flags.FLAGS.set_default("output", "benchmarks/results/length_grouping.md")


class _EpochClock:
    """Seconds of each epoch of a `fit`."""

    def __init__(self):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(clock, epoch, logs=None):
                clock.start = time.perf_counter()

            def on_epoch_end(clock, epoch, logs=None):
                self.seconds.append(time.perf_counter() - clock.start)

        self.seconds = []
        self.callback = Clock()


def _padding(split, config, tokenizer, group):
    """(real-token share, {width: batches}) of epoch 0's batches."""
    from ilm_keras.experiments import pipeline as pl
    from ilm_keras.experiments.backbone_pretraining import pretraining_batches

    batches = pretraining_batches(
        tokenizer, **pl.llm_batch_args(
            split, tokenizer, dataclasses.replace(config, length_group=group)))
    real = total = 0
    widths = collections.Counter()
    for index in range(len(batches)):
        x, _, _ = batches[index]
        real += int(x["padding_mask"].sum())
        total += x["padding_mask"].size
        widths[x["token_ids"].shape[1]] += 1
    return real / total, dict(sorted(widths.items()))


def main(argv):
    del argv
    import keras

    from ilm_keras import data as ild
    from ilm_keras.experiments import pipeline as pl
    from ilm_keras.experiments import quickstart_config
    from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer

    base = dataclasses.replace(
        quickstart_config(False, 0), llm_epochs=FLAGS.epochs, verbose=0)
    data, _ = ild.make_synthetic_data(
        num_users=FLAGS.num_users, num_items=FLAGS.num_items,
        num_clusters=6, interactions_per_user=12, seed=base.seed)
    split = pl.prepare_split(data, base)
    tokenizer = OpenP5Tokenizer.from_texts(
        [t for t in split.data.item_texts if t])
    groups = [int(g) for g in FLAGS.groups]
    runs = collections.defaultdict(list)
    start = time.time()
    for repeat in range(FLAGS.repeats):
        for group in groups:
            config = dataclasses.replace(base, length_group=group)
            clock = _EpochClock()
            keras.utils.set_random_seed(config.seed)
            _, _, history = pl.pretrain_llm(split, config, [clock.callback])
            runs[group].append((clock.seconds, history.history))
            print(f"length_group {group}, run {repeat}: epochs "
                  + ", ".join(f"{s:.1f}s" for s in clock.seconds)
                  + f"; loss {history.history['loss'][-1]:.4f}", flush=True)
    wall = time.time() - start

    def steady(group):
        # Median over runs of the mean epoch time after the first epoch.
        return statistics.median(
            sum(s[1:]) / len(s[1:]) for s, _ in runs[group])

    reference = steady(groups[0])
    lines = report_header(
        "Length-grouped batches: decoder pretraining",
        f"; pretraining runs: wall {wall:.0f} s.") + [
        f"Quickstart data ({FLAGS.num_users} users, {FLAGS.num_items} items) "
        f"and decoder ({base.llm_layers} layers, width {base.llm_hidden}, "
        f"batch {base.llm_batch_size}, length bucket {base.length_bucket}); "
        f"{FLAGS.epochs} epochs per run, {FLAGS.repeats} runs per setting, "
        "interleaved, same seed. Epoch time: the median over runs of the "
        "mean epoch time after the first (compiling) epoch. Real tokens and "
        "widths: epoch 0's batches. Loss and accuracy (response tokens): "
        "the fit's own training metrics over its last epoch, mean of the "
        "runs; a check that grouping does not hurt training, not a held-out "
        "score.",
        "",
        "| length_group | s / epoch | speed-up vs first row | real tokens "
        "| batch widths (width: batches) | last-epoch loss | last-epoch "
        "accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        share, widths = _padding(split, base, tokenizer, group)
        losses = [h["loss"][-1] for _, h in runs[group]]
        accuracies = [h["accuracy"][-1] for _, h in runs[group]]
        lines.append(
            f"| {group} | {steady(group):.2f} | "
            f"{reference / steady(group):.2f}x | {100 * share:.0f}% | "
            + ", ".join(f"{w}: {n}" for w, n in widths.items())
            + f" | {sum(losses) / len(losses):.4f} | "
            f"{sum(accuracies) / len(accuracies):.4f} |")
    if FLAGS.quickstart_seeds:
        lines += _quickstart_table(groups)
    write_report(lines, FLAGS.output)


def _quickstart_table(groups):
    """The quickstart (`examples/quickstart.py` defaults) per seed and group."""
    from ilm_keras.experiments import quickstart_config
    from ilm_keras.experiments import run_synthetic

    rows = collections.defaultdict(list)
    for seed in [int(s) for s in FLAGS.quickstart_seeds]:
        for group in groups:
            config = dataclasses.replace(
                quickstart_config(False, seed, llm_epochs=12, phase2_epochs=3),
                length_group=group, verbose=0)
            results = run_synthetic(
                config, num_users=FLAGS.num_users, num_items=FLAGS.num_items,
                num_clusters=6, interactions_per_user=12, log=lambda _: None)
            rows[group].append(results)
            print(f"quickstart seed {seed}, length_group {group}: "
                  + ", ".join(f"{v} HR@10 {m['HR@10']:.3f}"
                              for v, m in results["metrics"].items())
                  + f"; {sum(results['seconds'].values()):.0f} s", flush=True)

    def mean_se(values):
        return "{:.3f} ± {:.3f}".format(*mean_and_se(values))

    phases = list(rows[groups[0]][0]["seconds"])
    lines = [
        "",
        "## The whole quickstart",
        "",
        f"`examples/quickstart.py` defaults, seeds {', '.join(FLAGS.quickstart_seeds)}"
        " (seed-major, both settings per seed). Test HR@10 / NDCG@10 on the "
        "sequential task, seen template 0, history items excluded: mean ± "
        "standard error over seeds (per seed the random ranking gives HR@10 "
        f"{rows[groups[0]][0]['random']['HR@10']:.3f}). Seconds: mean per "
        "phase.",
        "",
        "| length_group | variant | HR@10 | NDCG@10 | "
        + " | ".join(f"{p} s" for p in phases) + " |",
        "|---|---|---|---|" + "---|" * len(phases),
    ]
    for group in groups:
        for variant in rows[group][0]["metrics"]:
            metrics = [r["metrics"][variant] for r in rows[group]]
            lines.append(
                f"| {group} | {variant} | "
                f"{mean_se([m['HR@10'] for m in metrics])} | "
                f"{mean_se([m['NDCG@10'] for m in metrics])} | "
                + " | ".join(
                    f"{statistics.mean(r['seconds'][p] for r in rows[group]):.0f}"
                    for p in phases) + " |")
    return lines


if __name__ == "__main__":
    app.run(main)
