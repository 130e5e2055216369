"""The paper's Table 3 on this machine: every variant x seed, one protocol.

    python benchmarks/openp5_table.py --datasets ML100K,Beauty --seeds 0,1,2

Runs `ilm_keras.experiments.openp5.run_openp5_cell` for every dataset x seed
x variant of a named config (`--config`, default `openp5_cpu`; override
fields with `--set FIELD=VALUE`); CF, phase 1 and the LLM backbone are
shared by the variants of one dataset and seed. Then writes
`benchmarks/results/openp5.md` (and a bar chart beside it): test HR/NDCG@{5,10}
as mean ± standard error over seeds, with popularity, iALS and a random
ranking scored on the same protocol, and the paper's Table 3 for reference.

One protocol for every row (stated again at the top of the results file):
the same test users (all of them; a fixed random sample of `--sample_users`
on datasets with more users), the same exclusion set (every item the user
saw before the target on MovieLens, nothing on Amazon, as OpenP5), the same
leave-last-out split and the same histories (the last `max_history` items,
which the prompts show and from which iALS folds in the user vector).
Resumable: finished cells are read back from `--work_dir`.
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

from ilm_keras.experiments import VARIANT_NAMES  # noqa: E402
from ilm_keras.experiments.configs import config_from_flags  # noqa: E402
from ilm_keras.experiments.configs import define_config_flags  # noqa: E402
from ilm_keras.experiments.openp5 import dataset_config  # noqa: E402
from ilm_keras.experiments.openp5 import METRIC_KEYS  # noqa: E402
from ilm_keras.experiments.openp5 import load_dataset  # noqa: E402
from ilm_keras.experiments.openp5 import run_openp5_cell  # noqa: E402
from ilm_keras.utils import files  # noqa: E402
from report import code_revision  # noqa: E402
from report import command_line  # noqa: E402
from report import cpu_description  # noqa: E402
from report import library_versions  # noqa: E402
from seed_stats import mean_and_se  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["ML100K"], "OpenP5 datasets.")
flags.DEFINE_list("variants", ["none", "mlp", "ilm_rand", "ilm"], "Variants.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
define_config_flags("openp5_cpu")
flags.DEFINE_integer("sample_users", 2000,
                     "Datasets with more test users than this are scored on "
                     "a fixed random sample of this many (the same for every "
                     "row and seed).")
flags.DEFINE_string("data_dir", "../shared/data/openp5", "OpenP5 folder.")
flags.DEFINE_string("ml100k_texts", "../shared/data/ml-100k", "ML100K item texts.")
flags.DEFINE_string("work_dir", "/tmp/openp5_table", "Per-cell outputs.")
flags.DEFINE_string("output", "benchmarks/results/openp5.md",
                    "Results file; the bar chart goes beside it (.png).")
flags.DEFINE_string("notes_file", None,
                    "Markdown appended to the results file (written notes on "
                    "the run, kept apart so a rewrite keeps them).")

SETTINGS = ("sequential/seen", "sequential/unseen",
            "straightforward/seen", "straightforward/unseen")
REFERENCES = ("popularity", "iALS", "last item", "random")
SLOT_ROW = ("decoder + MLP trained together (the slot pretraining itself; "
            "beyond the paper)")
REFERENCE_NAMES = {
    "popularity": "popularity (training counts)",
    "iALS": "iALS (user folded in from the prompt's history)",
    "last item": "last shown item's iALS neighbours (item . last item)",
    "random": "random ranking (expected)",
}
# Paper Table 3 (seen / unseen), HR@5, NDCG@5, HR@10, NDCG@10.
PAPER = {
    "ML1M": {
        "none": ((0.0688, 0.0455, 0.1033, 0.0566), (0.0696, 0.0449, 0.1041, 0.0560)),
        "mlp": ((0.0692, 0.0459, 0.1041, 0.0572), (0.0716, 0.0470, 0.1045, 0.0576)),
        "ilm_rand": ((0.0723, 0.0478, 0.1084, 0.0594), (0.0710, 0.0477, 0.1033, 0.0581)),
        "ilm": ((0.0724, 0.0485, 0.1064, 0.0595), (0.0717, 0.0481, 0.1086, 0.0600)),
    },
    "Beauty": {
        "none": ((0.0208, 0.0162, 0.0254, 0.0177), (0.0206, 0.0161, 0.0253, 0.0176)),
        "mlp": ((0.0199, 0.0150, 0.0255, 0.0168), (0.0203, 0.0151, 0.0255, 0.0168)),
        "ilm_rand": ((0.0206, 0.0154, 0.0259, 0.0171), (0.0206, 0.0157, 0.0263, 0.0175)),
        "ilm": ((0.0213, 0.0164, 0.0270, 0.0182), (0.0213, 0.0162, 0.0269, 0.0181)),
    },
}


def config_for(seed, data):
    """The named config for one dataset and seed (the rest is shared)."""
    return dataset_config(config_from_flags(seed=seed), data,
                          sample_users=FLAGS.sample_users)


def main(argv):
    del argv
    start = time.time()
    load_start = os.getloadavg()
    results, errors, sizes = {}, [], {}
    for dataset in FLAGS.datasets:
        texts = FLAGS.ml100k_texts if dataset == "ML100K" else None
        data = load_dataset(FLAGS.data_dir, dataset, item_texts_from=texts)
        sizes[dataset] = (data.num_users, data.num_items)
        for seed in map(int, FLAGS.seeds):
            config = config_for(seed, data)
            shared = os.path.join(FLAGS.work_dir, f"shared_{dataset}_seed{seed}")
            for variant in FLAGS.variants:
                out = os.path.join(FLAGS.work_dir, f"{dataset}_{variant}_seed{seed}")
                try:
                    results[(dataset, variant, seed)] = run_openp5_cell(
                        data, variant, config, out, shared_dir=shared)
                except ValueError as e:  # e.g. `ilm` without item texts.
                    errors.append(f"{dataset} {variant} seed {seed}: {e}")
                    print(errors[-1])
    write_markdown(results, errors, sizes, time.time() - start, load_start,
                   os.getloadavg())


def fmt(values):
    mean, se = mean_and_se(values)
    return f"{mean:.4f}" if len(values) < 2 else f"{mean:.4f} ± {se:.4f}"


def cells_of(results, dataset, variant):
    return [c for (d, v, _), c in sorted(results.items())
            if d == dataset and v == variant]


def seed_cells(results, dataset, key="references"):
    """One cell per seed (any variant holding `key`): the seed's shared
    references (or slot-pretraining scores)."""
    seen, out = set(), []
    for (d, _, s), c in sorted(results.items()):
        if d == dataset and s not in seen and c.get(key):
            seen.add(s)
            out.append(c)
    return out


def write_markdown(results, errors, sizes, total, load_start, load_end):
    any_cell = next(iter(results.values()), None)
    lines = [
        "# OpenP5 recommendation (paper Table 3) at CPU scale",
        "",
        "Written by `benchmarks/openp5_table.py`; every number below was "
        "measured by this command, in one run:",
        "", "```", command_line(), "```", "",
        f"- Machine: {cpu_description()}, {platform.platform()} (load average "
        f"at start / end: {', '.join(f'{x:.1f}' for x in load_start)} / "
        f"{', '.join(f'{x:.1f}' for x in load_end)}); {library_versions()}; "
        f"code {code_revision()}.",
        f"- Wall time of this invocation: {total:.0f} s (cells already on disk "
        "are read back; each cell's own time is listed under its dataset).",
        "- Config (every cell but the seed; per dataset only `exclude_history`, "
        "`max_eval_users` and, without item texts, `phase1_losses` differ): "
        f"`{json.dumps(any_cell['config']) if any_cell else '{}'}`",
        "",
        "## Protocol (the same for every row of every table)",
        "",
        "- Split: OpenP5's leave-last-out; test target `items[-1]`, validation "
        "`items[-2]`, training on every prefix of `items[:-2]`. Nothing is "
        "tuned on the test split; the phase-2 checkpoint is the epoch with "
        "the best validation NDCG@10.",
        "- Users: every test user, or, where a dataset has more than "
        f"{FLAGS.sample_users}, the same fixed random sample of "
        f"{FLAGS.sample_users} for every row and seed (the users column).",
        "- Exclusion: on MovieLens every item the user saw before the target "
        "(the whole known history, not only what the prompt shows) is removed "
        "from every ranking; on Amazon (Beauty) nothing is, as in OpenP5.",
        "- Histories: prompts show the last `max_history` items; iALS folds the "
        "user vector in from exactly those items (fixed item table), as the "
        "LLM variants' leak-free user vectors do (`user_vectors`); the "
        "last-item row ranks items by their iALS dot product with the last "
        "item the prompt shows (no user vector).",
        "- LLM rows rank every catalogue item (`recommend()`, exact for atomic "
        "ids); popularity ranks by training counts; the random row is the "
        "expectation of a uniform ranking of the non-excluded items.",
        "- Cells: mean ± standard error over the seeds (CF, phase 1, the LLM "
        "and phase 2 all re-drawn per seed).",
        "",
    ]
    for dataset in sorted(sizes):
        lines += dataset_section(results, dataset, sizes[dataset])
    lines += paper_section()
    if errors:
        lines += ["## Cells that did not run", ""] + [f"- {e}" for e in errors] + [""]
    chart = os.path.splitext(FLAGS.output)[0] + ".png"
    try:
        write_chart(results, chart)
        lines += [f"Bar chart: `{os.path.basename(chart)}` (test HR@10, mean ± "
                  "standard error over seeds).", ""]
    except ImportError:
        lines += ["No bar chart: matplotlib is not installed "
                  "(`pip install -e '.[bench]'`).", ""]
    if FLAGS.notes_file:
        with open(FLAGS.notes_file) as f:
            lines += [f.read().rstrip(), ""]
    files.write_text(FLAGS.output, "\n".join(lines))  # atomic
    print("\n".join(lines))


def dataset_section(results, dataset, size):
    seeds = sorted({s for d, _, s in results if d == dataset})
    variants = [v for v in FLAGS.variants if cells_of(results, dataset, v)]
    lines = [f"## {dataset} ({size[0]} users, {size[1]} items; seeds {seeds})", ""]
    for setting in SETTINGS:
        lines += [f"### {setting}", "",
                  "| method | " + " | ".join(METRIC_KEYS) + " | users | phase-2 s |",
                  "|---|" + "---|" * (len(METRIC_KEYS) + 2)]
        for variant in variants:
            cells = cells_of(results, dataset, variant)
            row = [fmt([c["test"][setting][k] for c in cells]) for k in METRIC_KEYS]
            secs = np.mean([c["seconds"]["phase2"] for c in cells])
            lines.append(f"| {VARIANT_NAMES[variant]} | " + " | ".join(row)
                         + f" | {cells[0]['test'][setting]['num_users']} "
                         f"| {secs:.0f} |")
        joint = [c["slot_pretraining"][setting] for c in seed_cells(
            results, dataset, "slot_pretraining")]
        if joint:  # `llm_slot_encoder`, beyond the paper.
            row = [fmt([m[k] for m in joint]) for k in METRIC_KEYS]
            lines.append(f"| {SLOT_ROW} | " + " | ".join(row)
                         + f" | {joint[0]['num_users']} | - |")
        for name in REFERENCES:
            if name in ("iALS", "last item") and not setting.startswith("sequential"):
                continue  # Its history is the sequential prompts'.
            refs = [c["references"]["test"][name] for c in seed_cells(results, dataset)
                    if name in c["references"]["test"]]
            if not refs:
                continue  # Cells written before this row existed.
            row = [fmt([r[k] for r in refs]) for k in METRIC_KEYS]
            lines.append(f"| {REFERENCE_NAMES[name]} | " + " | ".join(row)
                         + f" | {int(refs[0]['num_users'])} | - |")
        lines.append("")
    lines += validation_section(results, dataset, variants)
    for seed in seeds:
        parts = [f"{VARIANT_NAMES[v]} {results[(dataset, v, seed)]['seconds']['total']:.0f} s"
                 for v in variants if (dataset, v, seed) in results]
        lines.append(f"- Seed {seed}, wall time per cell (the first cell of a seed "
                     "includes CF and the LLM pretraining, the ILM cell phase 1): "
                     + ", ".join(parts) + ".")
    lines += [""] + findings(results, dataset, variants) + [""]
    return lines


def validation_section(results, dataset, variants, setting="sequential/seen"):
    """The kept models and the references on the validation targets of the
    test's users: how far each row's test score is from its validation one
    (cells written before `valid` was recorded are left out)."""
    rows = []
    for variant in variants:
        cells = [c for c in cells_of(results, dataset, variant) if c.get("valid")]
        if cells:
            rows.append((VARIANT_NAMES[variant], [c["valid"][setting] for c in cells]))
    if not rows:
        return []
    for name in REFERENCES:
        if name == "random":
            continue
        refs = [c["references"]["valid"][name] for c in seed_cells(results, dataset)
                if name in c["references"]["valid"]]
        if refs:
            rows.append((REFERENCE_NAMES[name], refs))
    lines = [f"### validation: {setting} (the same users' `items[-2]`; the kept "
             "models, chosen as above)", "",
             "| method | " + " | ".join(METRIC_KEYS) + " | users | seeds |",
             "|---|" + "---|" * (len(METRIC_KEYS) + 2)]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(fmt([m[k] for m in metrics])
                                                 for k in METRIC_KEYS)
                     + f" | {int(metrics[0]['num_users'])} | {len(metrics)} |")
    return lines + [""]


def findings(results, dataset, variants, setting="sequential/seen"):
    """Measured statements: each variant against popularity and iALS, ILM
    against OpenP5-R (paired over seeds), and the order of the variants."""
    def per_seed(variant, key="HR@10"):
        return {s: c["test"][setting][key] for (d, v, s), c in results.items()
                if d == dataset and v == variant}

    refs = {name: [c["references"]["test"][name]["HR@10"]
                   for c in seed_cells(results, dataset)
                   if name in c["references"]["test"]] for name in REFERENCES}
    popularity, ials = np.mean(refs["popularity"]), np.mean(refs["iALS"])
    notes = [f"Findings ({setting}, test HR@10, means over seeds):", ""]
    means = {v: float(np.mean(list(per_seed(v).values()))) for v in variants}
    above = [v for v in variants if means[v] > popularity]
    notes.append(
        f"- Above popularity ({popularity:.4f}): "
        + (", ".join(f"{VARIANT_NAMES[v]} {means[v]:.4f}" for v in above) or "none")
        + (f"; not above: {', '.join(VARIANT_NAMES[v] for v in variants if v not in above)}"
           if len(above) < len(variants) else "") + ".")
    best = max(means, key=means.get)
    notes.append(
        f"- Best LLM variant: {VARIANT_NAMES[best]} {means[best]:.4f}, "
        f"{means[best] / ials:.2f}x iALS on the embeddings it reads ({ials:.4f})"
        + (f", {means[best] / np.mean(refs['last item']):.2f}x the last item's "
           f"iALS neighbours ({np.mean(refs['last item']):.4f})"
           if refs["last item"] else "") + ".")
    if "ilm" in means and "none" in means:
        ilm, base = per_seed("ilm"), per_seed("none")
        common = sorted(set(ilm) & set(base))
        gaps = [ilm[s] - base[s] for s in common]
        mean, se = mean_and_se(gaps)
        verdict = ("more than two standard errors above" if len(gaps) > 1 and mean > 2 * se
                   else "not more than two standard errors above")
        notes.append(
            f"- ILM - OpenP5-R, paired by seed: {mean:+.4f} ± {se:.4f} "
            f"({verdict} OpenP5-R; the paper's claim is that it is).")
    order = sorted(means, key=means.get)
    notes.append("- Order, low to high: " + " < ".join(
        f"{VARIANT_NAMES[v]} ({means[v]:.4f})" for v in order)
        + ". The paper's: OpenP5-R < MLP < ILM-rand < ILM.")
    return notes


def paper_section():
    lines = ["## The paper's Table 3 (for reference; not measured here)", "",
             "8-layer models trained 10^4-10^5 steps on TPUs; ML1M and Beauty "
             "(ML100K is not in the paper); random item ids; the user's CF table "
             "row. seen / unseen.", "",
             "| dataset | method | HR@5 | NDCG@5 | HR@10 | NDCG@10 |",
             "|---|---|---|---|---|---|"]
    for dataset, rows in PAPER.items():
        for variant, (seen, unseen) in rows.items():
            for tag, vals in (("seen", seen), ("unseen", unseen)):
                lines.append(f"| {dataset} | {VARIANT_NAMES[variant]} ({tag}) | "
                             + " | ".join(f"{v:.4f}" for v in vals) + " |")
    return lines + [""]


def write_chart(results, path):
    """Bars: test HR@10 per variant and reference, one panel per dataset
    (sequential, seen), mean ± standard error over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for d, _, _ in results})
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 3.6),
                                squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        names, means, errors, colors = [], [], [], []
        for variant in FLAGS.variants:
            cells = cells_of(results, dataset, variant)
            if cells:
                mean, se = mean_and_se([c["test"]["sequential/seen"]["HR@10"]
                                        for c in cells])
                names.append(VARIANT_NAMES[variant])
                means.append(mean)
                errors.append(se)
                colors.append("#4c72b0")
        for name in REFERENCES:
            vals = [c["references"]["test"][name]["HR@10"]
                    for c in seed_cells(results, dataset)
                    if name in c["references"]["test"]]
            if not vals:
                continue
            mean, se = mean_and_se(vals)
            names.append(name)
            means.append(mean)
            errors.append(se)
            colors.append("#9e9e9e")
        axis.bar(names, means, yerr=errors, capsize=3, color=colors)
        axis.set_title(f"{dataset}, sequential / seen")
        axis.set_ylabel("test HR@10")
        axis.tick_params(axis="x", labelrotation=25)
    figure.tight_layout()
    files.atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100))
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
