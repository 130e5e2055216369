"""What each item encoder can hand the frozen LLM, without any LLM pass.

    KERAS_BACKEND=jax python benchmarks/item_encoder_probe.py --seeds 0,1,2

The item-language benchmark (`item_language_table.py`) measures answers;
this one measures the soft tokens behind them, per seed of the same split,
CF and phase 1, on the held-out items (their text never trained on):

- **ridge probe**: genres from each encoder's soft tokens as built
  (flattened, standardised, penalty chosen on seen items;
  `item_language.feature_probe`), beside the raw iALS vectors: how much
  genre information survives the encoder, read linearly;
- **item share**: how much of the soft tokens is the item's own rather
  than the slot's constant (`soft_token_spread`), as built and after the
  alignment; the LLM normalises what it reads, so a small share is a
  near-constant token;
- **alignment** (`SoftTokenAligner`, beyond the paper): the MSE to the
  LLM's embeddings of the item's genre list (or, with `--set
  align_target=genre_bag`, of its genres' mean) on seen items kept back from
  the fit (validation, which chooses the epoch) and on held-out items,
  each against predicting the slot's mean target (below it =
  item-specific), at the best validation epoch and at the last.

Encoders: the MLP (CoLLM), the Q-Former untrained (ILM-rand) and after
phase 1 of each `--phase1_epochs` (ILM). Writes `--output` (markdown) from
per-seed JSON files in `--work_dir`, which a rerun reads back.
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

import numpy as np  # noqa: E402

from ilm_keras.experiments import item_language as il  # noqa: E402
from ilm_keras.experiments.configs import define_item_language_flags  # noqa: E402
from ilm_keras.models.soft_token_aligner import soft_token_spread  # noqa: E402
from ilm_keras.utils import files  # noqa: E402
from ilm_keras.utils.determinism import seed_everything  # noqa: E402
from report import code_revision  # noqa: E402
from report import command_line  # noqa: E402
from report import cpu_description  # noqa: E402
from report import library_versions  # noqa: E402
from seed_stats import mean_and_se  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, run in order.")
flags.DEFINE_list("phase1_epochs", ["4"], "Phase-1 epochs of the ILM rows.")
flags.DEFINE_integer("align_epochs", 200, "Alignment epochs (all run; the "
                     "best validation epoch's weights are scored).")
flags.DEFINE_float("align_validation", 0.2, "Share of seen items kept back.")
define_item_language_flags()
flags.DEFINE_string("work_dir", "/tmp/item_encoder_probe", "Per-seed JSON files.")
flags.DEFINE_string("output", "benchmarks/results/item_encoder_probe.md",
                    "Results file.")


def config_for(seed, phase1_epochs=None):
    config = il.config_from_flags()
    config = dataclasses.replace(
        config, seed=seed, align_epochs=FLAGS.align_epochs,
        align_validation=FLAGS.align_validation,
        align_patience=FLAGS.align_epochs)  # every epoch runs: the full curve
    if phase1_epochs is not None:
        config = dataclasses.replace(config, phase1_epochs=phase1_epochs)
    return config


def probe_encoder(model, tokenizer, prepared, config):
    """One encoder's row: probe, item share, alignment."""
    every = np.arange(len(prepared.item_table))
    tokens = il.item_soft_tokens(model, every)
    row = {"probe": il.feature_probe(tokens, prepared.data, prepared.seen,
                                     prepared.held_out, seed=config.seed),
           "share_built": soft_token_spread(tokens[prepared.held_out])}
    fit, seconds = il.align_soft_tokens(model, tokenizer, prepared.data,
                                        prepared.seen, config,
                                        held_out=prepared.held_out)
    row["align"] = fit
    row["align_seconds"] = seconds
    row["share_aligned"] = soft_token_spread(
        il.item_soft_tokens(model, prepared.held_out))
    return row


def run_seed(seed, data, backbone, tokenizer):
    config = config_for(seed)
    prepared = il.prepare_seed(data, config, phase1=False)
    rows = {"cf": {"probe": il.feature_probe(
        prepared.item_table, prepared.data, prepared.seen, prepared.held_out,
        seed=seed)}}
    encoders = [("mlp", "mlp", None), ("ilm_rand", "ilm_rand", None)]
    encoders += [(f"ilm_{e}", "ilm", int(e)) for e in FLAGS.phase1_epochs]
    phase1 = {}
    for name, variant, epochs in encoders:
        qformer = None
        if epochs is not None:
            qformer, losses, seconds = il.phase1_qformer(
                prepared, config_for(seed, epochs))
            phase1[name] = {"loss": losses, "seconds": seconds}
        seed_everything(seed)
        model = il.build_variant(variant, backbone, tokenizer, prepared.data,
                                 prepared.item_table, config, 128, qformer=qformer)
        rows[name] = probe_encoder(model, tokenizer, prepared, config)
        print(name, {k: v for k, v in rows[name]["align"].items()
                     if np.isscalar(v)}, flush=True)
    return {"rows": rows, "phase1": phase1, "config": config.to_dict(),
            "seconds": prepared.seconds, "command": command_line(),
            "code": code_revision()}


def cell(values, digits=3):
    if not values:
        return "-"
    mean, se = mean_and_se(values)
    return f"{mean:.{digits}f}" if len(values) < 2 else f"{mean:.{digits}f} ± {se:.{digits}f}"


def write_markdown(results, seconds):
    seeds = sorted(results)
    first = results[seeds[0]]
    names = {"cf": "raw iALS vectors", "mlp": "MLP (CoLLM)",
             "ilm_rand": "ILM-rand (Q-Former untrained)"}
    names.update({f"ilm_{e}": f"ILM (phase 1, {e} epochs)" for e in FLAGS.phase1_epochs})
    order = [n for n in names if all(n in r["rows"] for r in results.values())]

    def vals(name, *path):
        out = []
        for r in results.values():
            v = r["rows"][name]
            for key in path:
                v = v.get(key) if isinstance(v, dict) else None
            if v is not None:
                out.append(v[-1] if isinstance(v, list) else v)
        return out

    lines = [
        "# What each item encoder hands the frozen LLM (no LLM pass)", "",
        "Written by `benchmarks/item_encoder_probe.py`; every number below was "
        f"measured by (seeds {', '.join(map(str, seeds))}):", "",
        "```", first["command"], "```", "",
        f"- Machine: {cpu_description()}; {library_versions()}; code "
        + "; ".join(f"seed {s} {results[s]['code']}" for s in seeds)
        + f"; wall time of this invocation {seconds:.0f} s (files on disk read back).",
        "- Split, CF and phase 1 are those of `item_language_table.py` for the "
        "same seed (`item_language.prepare_seed`); every number is on the "
        "held-out items (their text never trained on) unless it says "
        "validation (seen items kept back from the alignment's fit). Cells: "
        "mean ± standard error over seeds.", "",
        "## Genres read linearly from the soft tokens as built", "",
        "Ridge probe (`feature_probe`: features standardised on the seen "
        "items, penalty chosen on 20% of them by item AUC). Item AUC: per "
        "genre, chance that a held-out item with it scores above one "
        "without (0.5 = chance).", "",
        "| encoder | genre F1 | genre AUC | item AUC | item share as built |",
        "|---|---|---|---|---|"]
    for name in order:
        lines.append(f"| {names[name]} | " + " | ".join([
            cell(vals(name, "probe", "genre_f1")),
            cell(vals(name, "probe", "genre_auc")),
            cell(vals(name, "probe", "genre_item_auc")),
            cell(vals(name, "share_built", "item_share"), 4)]) + " |")
    lines += [
        "", "## Alignment to the LLM's embeddings of the genres", "",
        "Target: " + il.describe_align_target(first["config"].get("align_target"))
        + ". "
        f"{FLAGS.align_epochs} epochs of `SoftTokenAligner` (Adam "
        f"{first['config']['align_learning_rate']}, batch 64) on "
        f"{1 - FLAGS.align_validation:.0%} of the seen items; the best "
        "validation epoch's weights are kept. Floor = MSE of each slot's "
        "mean target over the fitted items; a ratio below 1 is item-specific.",
        "", "| encoder | best epoch | validation MSE / floor, best | "
        "validation MSE / floor, last epoch | held-out MSE / floor, best | "
        "item share after |", "|---|---|---|---|---|---|"]
    for name in order:
        if name == "cf":
            continue
        best, last, held = [], [], []
        for r in results.values():
            fit = r["rows"][name]["align"]
            best.append(min(fit["val_loss"]) / fit["val_mean_mse"])
            last.append(fit["val_loss"][-1] / fit["val_mean_mse"])
            held.append(fit["held_out_mse"] / fit["held_out_mean_mse"])
        lines.append(f"| {names[name]} | " + " | ".join([
            cell(vals(name, "align", "best_epoch"), 1), cell(best), cell(last),
            cell(held), cell(vals(name, "share_aligned", "item_share"), 4)]) + " |")
    phase1 = {n: [r["phase1"][n]["loss"]["itc_loss"][-1] for r in results.values()]
              for n in order if n.startswith("ilm_") and n != "ilm_rand"}
    if phase1:
        lines += ["", "Phase-1 item-text contrastive loss at its last epoch "
                  "(chance: log of the batch size): " + ", ".join(
                      f"{names[n]} {cell(v)}" for n, v in phase1.items()) + "."]
    files.write_text(FLAGS.output, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv):
    del argv
    start = time.time()
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    paths = {int(s): os.path.join(FLAGS.work_dir, f"seed{s}.json") for s in FLAGS.seeds}
    results = {s: files.read_json(p) for s, p in paths.items() if os.path.exists(p)}
    todo = [s for s in paths if s not in results]
    if todo:
        from ilm_keras.data.movielens import load_ml100k
        from ilm_keras.llm import load_causal_lm

        data = load_ml100k(FLAGS.data)
        backbone, tokenizer = load_causal_lm(config_for(todo[0]).llm)
        for seed in todo:
            files.write_json(paths[seed], run_seed(seed, data, backbone, tokenizer))
            results[seed] = files.read_json(paths[seed])
            write_markdown(results, time.time() - start)
    write_markdown(results, time.time() - start)


if __name__ == "__main__":
    app.run(main)
