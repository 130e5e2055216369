"""How much of the CF signal reaches the decoder state the OpenP5 rows rank from.

    KERAS_BACKEND=tensorflow python benchmarks/openp5_probe.py \
        --runs faithful=/tmp/openp5_table,slots=/tmp/openp5_slots --seeds 1,2

Reads the cells `benchmarks/openp5_table.py` left in each run's work dir
(`<dataset>_<variant>_seed<N>/preset` and `shared_<dataset>_seed<N>/cf.npz`)
and, on the validation prompts (sequential task, seen template 0, every
validation user), measures:

- **Decoder-state probes**: the decoder's last hidden state `h` (the state
  `recommend()` turns into item scores) of each trained model, and a ridge
  regression from `h` to three CF vectors: the last item the prompt shows,
  the mean of the shown items, and the target item. Held-out R² (two folds
  of the users, each fitted on the other; standardised features, the ridge
  penalty chosen inside each fit's rows).
  The same regression from the user vector iALS folds in from the shown
  items is the CF-side reference.
- **Rankings from the CF vectors alone**, on the same users with the same
  exclusion (the user's whole known history): items by dot product with
  the last shown item's vector, with the mean of the shown items' vectors,
  and with the user folded in from the shown items (iALS fold-in, as the
  tables' iALS row); beside each model's own `recommend()` HR@10.

Validation only. Writes `--output` (markdown), with the command and commit.
"""

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ilm_keras.utils.quiet import quiet_backend_logs  # noqa: E402

quiet_backend_logs()

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from ilm_keras import ItemLanguageModel  # noqa: E402
from ilm_keras import data as ild  # noqa: E402
from ilm_keras.experiments import pipeline as pl  # noqa: E402
from ilm_keras.experiments.configs import define_openp5_data_flags  # noqa: E402
from ilm_keras.experiments.openp5 import load_dataset  # noqa: E402
from ilm_keras.layers.user_fold_in import fold_in_users  # noqa: E402
from ilm_keras.metrics.retrieval import evaluate_retrieval  # noqa: E402
from ilm_keras.utils import files  # noqa: E402
from report import code_revision  # noqa: E402
from report import command_line  # noqa: E402
from report import library_versions  # noqa: E402
from seed_stats import mean_and_se  # noqa: E402

FLAGS = flags.FLAGS
define_openp5_data_flags()
flags.DEFINE_list("runs", ["faithful=/tmp/openp5_table"],
                  "NAME=WORK_DIR of openp5_table.py runs.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds whose cells are probed.")
flags.DEFINE_list("variants", ["none", "mlp", "ilm_rand", "ilm"], "Cells probed.")
flags.DEFINE_string("output", "benchmarks/results/openp5_probe.md", "Results file.")

TARGETS = ("last shown item", "mean of shown items", "target item")


PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _ridge_predict(x_fit, y_fit, x_new, penalty):
    """Ridge predictions for `x_new`, features standardised on `x_fit`."""
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-8
    x = np.hstack([(x_fit - mean) / std, np.ones((len(x_fit), 1))])
    gram = x.T @ x + penalty * np.diag([1.0] * (x.shape[1] - 1) + [0.0])
    weights = np.linalg.solve(gram, x.T @ y_fit)
    return np.hstack([(x_new - mean) / std, np.ones((len(x_new), 1))]) @ weights


def _r2(y, predicted):
    return 1.0 - ((y - predicted) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()


def ridge_r2(features, targets, folds=2):
    """Held-out R² of a ridge regression `features -> targets` (all output
    dimensions pooled): rows split into `folds` interleaved folds, each
    predicted by a fit on the others, whose penalty is chosen among
    `PENALTIES` by a 2-fold split of the fit's own rows."""
    features = np.asarray(features, np.float64)
    targets = np.asarray(targets, np.float64)
    predicted = np.zeros_like(targets)
    rows = np.arange(len(features))
    for fold in range(folds):
        test, train = rows % folds == fold, rows % folds != fold
        x, y = features[train], targets[train]
        inner = np.arange(len(x)) % 2 == 0
        penalty = max(PENALTIES, key=lambda p: _r2(
            y[~inner], _ridge_predict(x[inner], y[inner], x[~inner], p)))
        predicted[test] = _ridge_predict(x, y, features[test], penalty)
    return float(_r2(targets, predicted))


def last_hidden_states(model, prompts, batch_size=128):
    """The decoder's hidden state at each prompt's last token: the state
    from which `recommend()` scores the first item token."""
    prep = model.preprocessor
    x = prep.recommend_preprocess(prompts)
    lengths = x.pop("lengths")
    decoder = model.backbone.decoder
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        inputs = {k: v[rows] for k, v in x.items()}
        padding_mask = ops.cast(inputs["padding_mask"], "bool")
        embeddings = model.input_embeddings(inputs, training=False)
        hidden = ops.convert_to_numpy(decoder.hidden_states(embeddings, padding_mask))
        out.append(hidden[np.arange(len(hidden)), lengths[rows] - 1])
    return np.concatenate(out).astype(np.float64)


def probe_seed(data, run_dir, seed):
    """Every measurement of one run's cells for one seed (see module doc)."""
    shared = os.path.join(run_dir, f"shared_{FLAGS.dataset}_seed{seed}")
    cells = {v: os.path.join(run_dir, f"{FLAGS.dataset}_{v}_seed{seed}")
             for v in FLAGS.variants}
    cells = {v: c for v, c in cells.items()
             if os.path.exists(os.path.join(c, "results.json"))
             and os.path.isdir(os.path.join(c, "preset"))}
    if not cells:
        return None
    saved = files.read_json(os.path.join(next(iter(cells.values())), "results.json"))
    fields = {f.name for f in dataclasses.fields(pl.PipelineConfig)}
    config = pl.PipelineConfig(**{k: v for k, v in saved["config"].items() if k in fields})
    split = pl.prepare_split(data, config)
    item_table = files.read_npz(os.path.join(shared, "cf.npz"), ["item_table"])["item_table"]
    item_table = np.asarray(item_table, np.float64)

    examples = split.examples("valid")
    pairs = ild.evaluation_prompts(split, "valid", "sequential", 0)
    prompts = [p for p, _ in pairs]
    shown = examples.histories
    targets = np.asarray(examples.targets)
    known = split.known_items("valid")
    last = item_table[[h[-1] for h in shown]]
    mean = np.stack([item_table[h].mean(0) for h in shown])
    probe_targets = dict(zip(TARGETS, (last, mean, item_table[targets])))

    out = {"config": saved["config"], "num_users": len(prompts), "probes": {},
           "rankings": {}}
    def ranking(user_vectors):
        result = evaluate_retrieval(
            np.asarray(user_vectors, np.float32), item_table.astype(np.float32),
            targets, histories=known, exclude_history=config.exclude_history)
        return float(result["HR@10"])

    width = max(len(h) for h in shown)
    rows = np.full((len(shown), width), -1, np.int64)
    for r, h in enumerate(shown):
        rows[r, :len(h)] = h
    folded = ops.convert_to_numpy(fold_in_users(
        item_table.astype(np.float32), rows, config.cf_regularization, config.cf_alpha))
    out["probes"]["CF: the user folded in from the shown items"] = {
        name: ridge_r2(folded, y) for name, y in probe_targets.items()}
    out["rankings"] = {
        "last shown item's vector": pl.last_item_metrics(
            item_table, split, "valid", config.exclude_history)["HR@10"],
        "mean of shown items' vectors": ranking(mean),
        "iALS fold-in from the shown items": ranking(folded),
    }
    for variant, cell in cells.items():
        start = time.time()
        model = ItemLanguageModel.from_preset(os.path.join(cell, "preset"))
        h = last_hidden_states(model, prompts)
        out["probes"][pl.VARIANT_NAMES[variant]] = {
            name: ridge_r2(h, y) for name, y in probe_targets.items()}
        metrics = pl.recommendation_metrics(model, split, "valid", "sequential", 0, config)
        out["rankings"][f"{pl.VARIANT_NAMES[variant]}: recommend()"] = float(metrics["HR@10"])
        print(f"  {variant}: {out['probes'][pl.VARIANT_NAMES[variant]]}, "
              f"HR@10 {metrics['HR@10']:.4f} ({time.time() - start:.0f}s)")
    return out


def cell(values):
    if not values:
        return "-"
    m, se = mean_and_se(values)
    return f"{m:.3f}" if len(values) < 2 else f"{m:.3f} ± {se:.3f}"


def _names(per_seed, key):
    """Row names of `key` over every seed, in first-seen order (a seed may
    lack a cell another has)."""
    names = {}
    for _, out in sorted(per_seed.items()):
        names.update(dict.fromkeys(out[key]))
    order = [pl.VARIANT_NAMES[v] for v in pl.VARIANTS]

    def rank(name):  # the CF rows first, then the variants in table order
        model = name.split(":")[0]
        return order.index(model) if model in order else -1

    return sorted(names, key=rank)


def write(results, seconds):
    lines = [
        "# Decoder-state probes and CF-only rankings (OpenP5, validation)", "",
        "Written by `benchmarks/openp5_probe.py`:", "", "```",
        command_line(), "```", "",
        f"- Code: {code_revision()}; {library_versions()}; {seconds:.0f} s.",
        f"- Dataset {FLAGS.dataset}; validation prompts of the sequential task, "
        "seen template 0, every validation user; rankings exclude the user's "
        "whole known history (as every row of the OpenP5 tables).",
        "- R²: held-out (two interleaved folds of the users, each predicted "
        "by a fit on the other), ridge on standardised features with the "
        f"penalty chosen among {PENALTIES} inside the fit's own rows, all "
        "output dimensions pooled. `h` = the decoder's hidden state at the "
        "prompt's last token, from which `recommend()` scores items. The CF "
        "row reads the iALS user vector folded in from the shown items (what "
        "the iALS ranking below scores with) instead of `h`.",
        "- Cells: mean ± standard error over the seeds of the row (a seed "
        "counts where the run has that cell's preset; cells a run copied from "
        "another, such as OpenP5-R over the text-only decoder, are the same "
        "models).", ""]
    for run, per_seed in results.items():
        seeds = sorted(per_seed)
        if not seeds:
            continue
        first = per_seed[seeds[0]]
        lines += [f"## {run} ({first['num_users']} users)", "",
                  "R² of a ridge regression to each CF vector:", "",
                  "| features | " + " | ".join(TARGETS) + " | seeds |",
                  "|---|" + "---|" * (len(TARGETS) + 1)]
        for name in _names(per_seed, "probes"):
            have = [s for s in seeds if name in per_seed[s]["probes"]]
            lines.append(f"| {name} | " + " | ".join(
                cell([per_seed[s]["probes"][name][t] for s in have])
                for t in TARGETS) + f" | {', '.join(map(str, have))} |")
        lines += ["", "Validation HR@10 on the same users and exclusion:", "",
                  "| ranking | HR@10 | seeds |", "|---|---|---|"]
        for name in _names(per_seed, "rankings"):
            have = [s for s in seeds if name in per_seed[s]["rankings"]]
            lines.append(f"| {name} | " + cell(
                [per_seed[s]["rankings"][name] for s in have])
                + f" | {', '.join(map(str, have))} |")
        lines.append("")
    files.write_text(FLAGS.output, "\n".join(lines))
    print("\n".join(lines))


def main(argv):
    del argv
    start = time.time()
    data = load_dataset(FLAGS.data_dir, FLAGS.dataset)
    results = {}
    for spec in FLAGS.runs:
        name, _, run_dir = spec.partition("=")
        if not run_dir:
            raise ValueError(f"--runs entries are NAME=WORK_DIR; got {spec!r}.")
        results[name] = {}
        for seed in map(int, FLAGS.seeds):
            print(f"{name} seed {seed}:")
            out = probe_seed(data, run_dir, seed)
            if out is not None:
                results[name][seed] = json.loads(json.dumps(out))
            write(results, time.time() - start)


if __name__ == "__main__":
    app.run(main)
