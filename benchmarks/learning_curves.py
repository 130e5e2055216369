"""Validation HR@10 of the OpenP5 decoder against training steps and seconds.

    python benchmarks/learning_curves.py --dataset ML100K \
        --indexings atomic,random --steps 6000 --eval_every 500

For each item indexing (`atomic`: one vocabulary entry per item; `random`:
OpenP5's ids spelled digit by digit), pretrains the text-only decoder of the
`openp5_cpu` config (OpenP5-R) and scores it on the validation users after
every `--eval_every` steps: HR@10 / NDCG@10 of `recommend()` (sequential
task, seen template 0, every item the user saw before excluded), with the
training seconds spent so far (evaluation time excluded). Popularity and
iALS (user folded in from the history the prompt shows) are scored on the
same users with the same exclusion, as flat reference lines. Writes
`benchmarks/results/learning_curves.md` and a PNG beside it. Validation
only: nothing here looks at the test split.
"""

import dataclasses
import os
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ilm_keras.utils.quiet import quiet_backend_logs  # noqa: E402

quiet_backend_logs()

import keras  # noqa: E402

from ilm_keras.experiments import pipeline as pl  # noqa: E402
from ilm_keras.experiments.configs import config_from_flags  # noqa: E402
from ilm_keras.experiments.configs import define_config_flags  # noqa: E402
from ilm_keras.experiments.configs import define_openp5_data_flags  # noqa: E402
from ilm_keras.experiments.openp5 import dataset_config  # noqa: E402
from ilm_keras.experiments.openp5 import load_dataset  # noqa: E402
from ilm_keras.experiments.backbone_pretraining import make_llama_backbone  # noqa: E402
from ilm_keras.experiments.backbone_pretraining import pretrain_backbone  # noqa: E402
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer  # noqa: E402
from ilm_keras.utils import files  # noqa: E402
from ilm_keras.utils.determinism import seed_everything  # noqa: E402
from report import code_revision  # noqa: E402
from report import command_line  # noqa: E402
from report import library_versions  # noqa: E402

FLAGS = flags.FLAGS
define_openp5_data_flags()
flags.DEFINE_list("indexings", ["atomic", "random"], "Item indexings to compare.")
flags.DEFINE_integer("steps", 6000, "Pretraining steps per indexing.")
flags.DEFINE_integer("eval_every", 500, "Steps between validation scores.")
flags.DEFINE_integer("sample_users", 2000,
                     "Datasets with more users than this are scored on a fixed "
                     "random sample of this many (as in openp5_table.py).")
define_config_flags("openp5_cpu")
flags.DEFINE_string("output", "benchmarks/results/learning_curves.md", "Results file.")


class _Curve(keras.callbacks.Callback):
    """Scores `model` on validation after every epoch (= `eval_every` steps)
    and keeps the training seconds, evaluation excluded."""

    def __init__(self, model, split, config, eval_every, log, points):
        super().__init__()
        self.scored, self.split, self.config = model, split, config
        self.eval_every, self.log = eval_every, log
        self.points, self.train_seconds = points, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds += time.time() - self._start
        metrics = pl.recommendation_metrics(
            self.scored, self.split, "valid", "sequential", 0, self.config,
            max_users=self.config.max_eval_users,
        )
        point = {
            "step": (epoch + 1) * self.eval_every,
            "seconds": round(self.train_seconds, 1),
            "loss": float(logs["loss"]),
            "HR@10": metrics["HR@10"],
            "NDCG@10": metrics["NDCG@10"],
        }
        self.points.append(point)
        self.log(point)


def curve(split, indexing, config, points, log=print):
    """The validation curve of one indexing's text-only decoder: appends
    each point to `points` and calls `log(point)` when it is measured."""
    config = dataclasses.replace(config, item_indexing=indexing)
    seed_everything(config.seed)
    data = split.data
    tokenizer = OpenP5Tokenizer.from_texts(
        [], item_ids=data.item_index, item_indexing=indexing
    )
    backbone = make_llama_backbone(
        tokenizer.vocabulary_size(), num_layers=config.llm_layers,
        hidden_dim=config.llm_hidden, num_heads=config.llm_heads,
    )
    scored = pl.build_phase2("none", backbone, tokenizer, split, None, None, config)
    callback = _Curve(scored, split, config, FLAGS.eval_every, log, points)
    pretrain_backbone(
        backbone, tokenizer, epochs=FLAGS.steps // FLAGS.eval_every,
        steps_per_epoch=FLAGS.eval_every, learning_rate=config.llm_learning_rate,
        warmup_steps=config.llm_warmup_steps, callbacks=[callback], verbose=0,
        **pl.llm_batch_args(split, tokenizer, config),
    )
    return callback.points


def main(argv):
    del argv
    data = load_dataset(FLAGS.data_dir, FLAGS.dataset)
    # The dataset's protocol, as in openp5_table.py: exclusion on MovieLens
    # only, a fixed user sample on large datasets.
    config = dataset_config(config_from_flags(), data, sample_users=FLAGS.sample_users)
    split = pl.prepare_split(data, config)
    start = time.time()
    references = {}
    ials, _, _ = pl.train_cf(split, config)
    users = dict(max_users=config.max_eval_users)
    references["iALS (user folded in from the prompt's history)"] = (
        pl.cf_retrieval_metrics(ials, split, "valid", config.exclude_history, **users))
    references["popularity"] = pl.popularity_metrics(
        split, "valid", config.exclude_history, **users)
    references["last shown item's iALS neighbours"] = pl.last_item_metrics(
        ials.item_table, split, "valid", config.exclude_history, **users)
    curves = {}

    def write_so_far(point):  # a killed run keeps every point it measured
        print(f"  {point}")
        write(curves, references, config, data, time.time() - start)

    for indexing in FLAGS.indexings:
        print(f"{indexing}:")
        curves[indexing] = []
        curve(split, indexing, config, curves[indexing], log=write_so_far)
    write(curves, references, config, data, time.time() - start, done=True)


def write(curves, references, config, data, seconds, done=False):
    lines = [
        f"# Learning curves of the OpenP5 decoder ({data.name}, validation)",
        "",
        "Written by `benchmarks/learning_curves.py`:",
        "", "```", command_line(), "```", "",
        f"- {library_versions()}; code {code_revision()}; {os.cpu_count()} cores; "
        f"wall time {seconds:.0f} s"
        + ("." if done else " so far: the run had not finished when this was "
           "written (each point is written when measured)."),
        (f"- All {len(data.sequences)} users'" if config.max_eval_users is None
         else f"- A fixed sample of {config.max_eval_users} of the "
              f"{len(data.sequences)} users'")
        + " validation targets (`items[-2]`), sequential task, seen template 0; "
        + ("every item the user saw before the target is excluded from every "
           "ranking" if config.exclude_history else "nothing is excluded from "
           "the rankings (OpenP5's Amazon protocol)")
        + ". `recommend()` is exact for "
        f"atomic ids and a {config.num_beams}-beam trie search for random ids.",
        f"- Decoder: {config.llm_layers} layers x {config.llm_hidden}, batch "
        f"{config.llm_batch_size}, AdamW peak {config.llm_learning_rate}, "
        f"{config.llm_warmup_steps} warmup steps then cosine decay to 0 at "
        f"{FLAGS.steps} steps; history of {config.max_history} items in the "
        "prompt. `seconds` is training time only (evaluation excluded).",
        "",
        "| reference (same users, same exclusion) | HR@10 | NDCG@10 |",
        "|---|---|---|",
    ]
    for name, m in references.items():
        lines.append(f"| {name} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} |")
    for indexing, points in curves.items():
        lines += ["", f"## {indexing} item ids", "",
                  "| step | training s | loss | HR@10 | NDCG@10 |",
                  "|---|---|---|---|---|"]
        for p in points:
            lines.append(f"| {p['step']} | {p['seconds']:.0f} | {p['loss']:.3f} | "
                         f"{p['HR@10']:.4f} | {p['NDCG@10']:.4f} |")
    chart = os.path.splitext(FLAGS.output)[0] + ".png"
    try:
        _chart(curves, references, chart)
        lines += ["", f"Chart: `{os.path.basename(chart)}`."]
    except ImportError:
        lines += ["", "No chart: matplotlib is not installed (`.[bench]`)."]
    files.write_text(FLAGS.output, "\n".join(lines) + "\n")  # atomic
    if done:
        print("\n".join(lines))


def _chart(curves, references, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, x_key, label in ((axes[0], "step", "training steps"),
                               (axes[1], "seconds", "training seconds")):
        for indexing, points in curves.items():
            axis.plot([p[x_key] for p in points], [p["HR@10"] for p in points],
                      marker="o", label=f"{indexing} ids (OpenP5-R)")
        for (name, m), style in zip(references.items(), (":", "--", "-.")):
            axis.axhline(m["HR@10"], linestyle=style, color="gray", label=name)
        axis.set_xlabel(label)
        axis.set_ylabel("validation HR@10")
        axis.legend(fontsize=7)
    figure.tight_layout()
    files.atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100))
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
