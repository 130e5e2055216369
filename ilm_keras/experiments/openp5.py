"""One cell of the paper's Tables 3-4 on an OpenP5 dataset, resumable."""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from ilm_keras import data as ild
from ilm_keras.experiments import pipeline as pl
from ilm_keras.llm.openp5_tokenizer import OpenP5Tokenizer
from ilm_keras.models.qformer import QFormer  # noqa: F401 (registers it)
from ilm_keras.models.qformer_pretrainer import LOSS_SETS
from ilm_keras.utils.determinism import seed_everything

METRIC_KEYS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def load_dataset(data_dir, dataset, item_texts_from=None):
    """`load_openp5(data_dir/dataset)` with OpenP5's own random indexing."""
    return ild.load_openp5(os.path.join(data_dir, dataset),
                           item_texts_from=item_texts_from)


def dataset_config(config, data, sample_users=None):
    """`config` with the settings that follow from the dataset, the same for
    every row of a comparison on it.

    - `exclude_history`: OpenP5's protocol: MovieLens rankings exclude the
      user's history, Amazon ones (repeat purchases) do not.
    - `max_eval_users`: datasets with more than `sample_users` users are
      scored on a fixed random sample of that many (`evaluation_rows`).
    - `phase1_losses`: without item texts (OpenP5's Amazon splits), the
      text-free `"ii_ui"`.
    """
    changes = {"exclude_history": data.name.upper().startswith("ML")}
    if sample_users is not None:
        changes["max_eval_users"] = (
            int(sample_users) if data.num_users > int(sample_users) else None
        )
    has_texts = any(data.item_texts or [])
    if not has_texts and "itc" in LOSS_SETS[config.phase1_losses]:
        changes["phase1_losses"] = "ii_ui"
    return dataclasses.replace(config, **changes)


def _backup(directory, name):
    return keras.callbacks.BackupAndRestore(
        os.path.join(directory, "backup", name), delete_checkpoint=True
    )


def _done(path):
    return os.path.exists(path)


def _json_dump(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, default=float)
    os.replace(tmp, path)


def _text_dump(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _npz_dump(path, **arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def shared_phases(data, config, shared_dir, need_qformer, log=print):
    """CF, phase 1 (if `need_qformer`) and LLM pretraining, cached on disk.

    Each phase writes its output under `shared_dir` when it finishes and is
    loaded instead of rerun next time; a phase killed mid-`fit` resumes from
    its last epoch (`keras.callbacks.BackupAndRestore`). The outputs depend
    on `config` (sizes, seed): use one `shared_dir` per config.

    Returns:
        dict with `split`, `user_table`, `item_table`, `references` (per
        subset, the popularity / iALS / random rows on the LLM variants'
        protocol, `pipeline.reference_metrics`),
        `qformer` (or None), `tokenizer`, `backbone`, `seconds`.
    """
    os.makedirs(shared_dir, exist_ok=True)
    # Every phase starts from the seed, so what it draws does not depend on
    # which earlier phases ran in this process and which were loaded.
    seed_everything(config.seed)
    split = pl.prepare_split(data, config)
    seconds = {}

    # Phase 0: CF.
    cf_path = os.path.join(shared_dir, "cf.npz")
    references_path = os.path.join(shared_dir, "references.json")
    if _done(cf_path) and _done(references_path):
        tables = np.load(cf_path)
        user_table, item_table = tables["user_table"], tables["item_table"]
        with open(references_path) as f:
            references = json.load(f)
        log(f"phase 0: loaded {cf_path}")
    else:
        start = time.time()
        ials, user_table, item_table = pl.train_cf(split, config)
        seconds["cf"] = time.time() - start
        references = {
            subset: pl.reference_metrics(split, config, ials, subset)
            for subset in ("valid", "test")
        }
        _npz_dump(cf_path, user_table=user_table, item_table=item_table)
        _json_dump(references_path, references)
        log(f"phase 0: iALS in {seconds['cf']:.1f}s")

    # Phase 1: Q-Former.
    qformer = None
    if need_qformer:
        name = f"qformer_{config.phase1_losses}"
        path = os.path.join(shared_dir, name + ".keras")
        if _done(path):
            qformer = keras.saving.load_model(path)
            log(f"phase 1: loaded {path}")
        else:
            start = time.time()
            log(f"phase 1: Q-Former pretraining, losses {config.phase1_losses}")
            seed_everything(config.seed)
            qformer, _ = pl.pretrain_qformer(
                split, user_table, item_table, config,
                callbacks=[_backup(shared_dir, name)],
            )
            seconds["phase1"] = time.time() - start
            qformer.save(path)

    # The LLM backbone.
    vocab_path = os.path.join(shared_dir, "llm_vocabulary.json")
    backbone_path = os.path.join(shared_dir, "llm_backbone.keras")
    if _done(vocab_path) and _done(backbone_path):
        with open(vocab_path) as f:
            tokenizer = OpenP5Tokenizer(
                vocabulary=json.load(f), item_indexing=config.item_indexing
            )
        backbone = keras.saving.load_model(backbone_path)
        log(f"LLM: loaded {backbone_path}")
    else:
        start = time.time()
        log("LLM: pretraining on the text-only OpenP5 prompts")
        seed_everything(config.seed)
        tokenizer, backbone, _ = pl.pretrain_llm(
            split, config, callbacks=[_backup(shared_dir, "llm")]
        )
        seconds["llm"] = time.time() - start
        backbone.save(backbone_path)
        _json_dump(vocab_path, tokenizer.get_vocabulary())
    return dict(split=split, user_table=user_table, item_table=item_table,
                references=references, qformer=qformer, tokenizer=tokenizer,
                backbone=backbone, seconds=seconds)


def run_openp5_cell(data, variant, config, output_dir, shared_dir=None,
                    log=print):
    """CF -> phase 1 -> LLM -> phase 2 (`variant`) -> test; resumable.

    The phase-2 checkpoint kept is the epoch with the best validation
    NDCG@10 (sequential task, seen template 0, the first
    `config.max_valid_users` users). The test covers both tasks with seen
    template 0 and the unseen template. Writes `results.json` and
    `results.md` to `output_dir`; a finished cell is not rerun.

    Args:
        data: `InteractionData` (OpenP5 random indexing).
        variant: `"none"`, `"mlp"`, `"ilm_rand"` or `"ilm"`.
        config: `PipelineConfig`.
        output_dir: this cell's folder.
        shared_dir: folder for CF / phase 1 / LLM outputs shared by cells of
            the same data and config (default: `output_dir`).
        log: print function.

    Returns:
        The results dict (also in `results.json`).
    """
    os.makedirs(output_dir, exist_ok=True)
    results_path = os.path.join(output_dir, "results.json")
    if _done(results_path):
        with open(results_path) as f:
            log(f"{results_path} exists: done.")
            return json.load(f)
    start = time.time()
    shared = shared_phases(data, config, shared_dir or output_dir,
                           need_qformer=(variant == "ilm"), log=log)
    split = shared["split"]
    seed_everything(config.seed)
    model = pl.build_phase2(
        variant, shared["backbone"], shared["tokenizer"], split,
        shared["user_table"], shared["item_table"], config,
        qformer=shared["qformer"],
    )
    phase2_seconds = 0.0
    valid_scores = None
    if variant != "none":  # OpenP5-R is the frozen backbone alone.
        t = time.time()
        log(f"phase 2: {pl.VARIANT_NAMES[variant]}")
        best = os.path.join(output_dir, "best.weights.h5")
        pl.train_phase2(
            model, split, config,
            callbacks=[_backup(output_dir, "phase2")],
            checkpoint_path=best,
        )
        phase2_seconds = time.time() - t
        with open(best + ".json") as f:
            valid_scores = json.load(f)["scores"]
    t = time.time()
    test = pl.test_metrics(model, split, config)
    results = {
        "dataset": data.name,
        "variant": variant,
        "method": pl.VARIANT_NAMES[variant],
        "num_users": data.num_users,
        "num_items": data.num_items,
        "config": config.to_dict(),
        "test": test,
        "valid_per_epoch": valid_scores,
        "references": shared["references"],
        "seconds": {**shared["seconds"], "phase2": phase2_seconds,
                    "test": time.time() - t, "total": time.time() - start},
    }
    _json_dump(results_path, results)
    _text_dump(os.path.join(output_dir, "results.md"), results_markdown(results))
    return results


def results_markdown(results):
    """A markdown table of one cell's test metrics."""
    lines = [
        f"# {results['dataset']}: {results['method']} ({results['variant']})",
        "",
        "| task / template | " + " | ".join(METRIC_KEYS) + " | users |",
        "|---|" + "---|" * (len(METRIC_KEYS) + 1),
    ]
    for key, m in results["test"].items():
        lines.append(f"| {key} | " + " | ".join(f"{m[k]:.4f}" for k in METRIC_KEYS)
                     + f" | {m['num_users']} |")
    for name, m in results["references"]["test"].items():
        lines.append(f"| {name} (sequential history) | "
                     + " | ".join(f"{m[k]:.4f}" for k in METRIC_KEYS)
                     + f" | {int(m['num_users'])} |")
    lines += ["", "History items excluded from the LLM rankings: "
              f"{results['config']['exclude_history']}.",
              f"Wall time: {results['seconds']['total']:.0f}s.", ""]
    return "\n".join(lines)
