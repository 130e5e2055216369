"""One cell of the paper's Tables 3-4 on an OpenP5 dataset, resumable."""

import dataclasses
import os
import time

from ilm_keras import data as ild
from ilm_keras.experiments import pipeline as pl
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer
from ilm_keras.models.qformer import QFormer  # noqa: F401 (registers it)
from ilm_keras.models.qformer_pretrainer import LOSS_SETS
from ilm_keras.utils import files
from ilm_keras.utils.determinism import seed_everything
from ilm_keras.utils.quiet import fit_verbosity
from ilm_keras.utils.resume import TrainingBackup

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


def _backup(directory, name, config, log):
    """Where one fit of a cell saves its training state (`resumable_fit`)."""
    return TrainingBackup(os.path.join(directory, "backup", name),
                          every_steps=config.backup_steps, log=log)


def _done(path):
    return os.path.exists(path)


# Every file a cell writes is written atomically (`ilm_keras.utils.files`):
# a kill leaves the old file or the new one, never a part of one.
def _json_dump(path, value):
    files.write_json(path, value, indent=2, default=float)


def _text_dump(path, text):
    files.write_text(path, text)


def _npz_dump(path, **arrays):
    files.write_npz(path, **arrays)


def _add_last_item(references, item_table, split, config):
    """Adds the last-item reference row (`pl.last_item_metrics`) to
    `references` written before it existed; True if it added it."""
    if all("last item" in references[s] for s in ("valid", "test")):
        return False
    for subset in ("valid", "test"):
        references[subset]["last item"] = pl.last_item_metrics(
            item_table, split, subset, config.exclude_history,
            max_users=config.max_eval_users)
    return True


def shared_phases(data, config, shared_dir, need_qformer, log=print,
                  slot_llm=False):
    """CF, phase 1 (if `need_qformer`) and LLM pretraining, cached on disk.

    With `slot_llm` the decoder is the one pretrained with soft-token slots
    (`config.llm_slot_encoder`, `pipeline.pretrain_llm_with_slots`), kept
    apart from the text-only one; the jointly trained model it came from is
    scored on the test prompts once, as a reference (`slot_pretraining`).

    Each phase writes its output under `shared_dir` when it finishes and is
    loaded instead of rerun next time; a phase killed mid-`fit` (even by
    `kill -9`, even mid-epoch) resumes from its last backup, at most
    `config.backup_steps` steps back, and ends as if never interrupted
    (`ilm_keras.utils.resume`). Later phases always read an earlier phase's
    output from its file, so a cell gives the same result whichever phases
    ran in this process. A truncated or corrupt output raises
    `CorruptFileError`, naming the file to delete. The outputs depend on
    `config` (sizes, seed): use one `shared_dir` per config.

    Returns:
        dict with `split`, `user_table`, `item_table`, `references` (per
        subset, the popularity / iALS / random rows on the LLM variants'
        protocol, `pipeline.reference_metrics`),
        `qformer` (or None), `tokenizer`, `backbone`, `seconds`, and with
        `slot_llm` `slot_pretraining` (that model's test metrics).
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
        tables = files.read_npz(cf_path, ["user_table", "item_table"])
        user_table, item_table = tables["user_table"], tables["item_table"]
        references = files.read_json(references_path)
        log(f"phase 0: loaded {cf_path}")
        if _add_last_item(references, item_table, split, config):
            _json_dump(references_path, references)
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
        backup = _backup(shared_dir, name, config, log)
        trained = not _done(path)
        if trained:
            start = time.time()
            log(f"phase 1: Q-Former pretraining, losses {config.phase1_losses}")
            seed_everything(config.seed)
            qformer, _ = pl.pretrain_qformer(
                split, user_table, item_table, config, backup=backup,
            )
            seconds["phase1"] = time.time() - start
            files.save_model(qformer, path)
        backup.clear()  # the output is stored
        # Read back as every later run reads it, after the same seeding (the
        # dropout layers draw their seeds when they are made).
        seed_everything(config.seed)
        qformer = files.load_model(path)
        if not trained:
            log(f"phase 1: loaded {path}")

    # The LLM backbone.
    name = "llm_slots" if slot_llm else "llm"
    vocab_path = os.path.join(shared_dir, "llm_vocabulary.json")
    backbone_path = os.path.join(shared_dir, name + "_backbone.keras")
    slot_metrics_path = os.path.join(shared_dir, "llm_slots_test.json")
    backup = _backup(shared_dir, name, config, log)
    trained = not (_done(vocab_path) and _done(backbone_path)
                   and (not slot_llm or _done(slot_metrics_path)))
    if trained:
        start = time.time()
        seed_everything(config.seed)
        if slot_llm:
            log("LLM: pretraining with soft-token slots "
                f"({config.llm_slot_encoder} encoder, beyond the paper)")
            tokenizer, backbone, joint, _ = pl.pretrain_llm_with_slots(
                split, user_table, item_table, config, backup=backup)
            seconds["llm_slots"] = time.time() - start
            _json_dump(slot_metrics_path, pl.test_metrics(joint, split, config))
        else:
            log("LLM: pretraining on the text-only OpenP5 prompts")
            tokenizer, backbone, _ = pl.pretrain_llm(split, config, backup=backup)
            seconds["llm"] = time.time() - start
        files.save_model(backbone, backbone_path)
        _json_dump(vocab_path, tokenizer.get_vocabulary())
    backup.clear()
    tokenizer = OpenP5Tokenizer(vocabulary=files.read_json(vocab_path),
                                item_indexing=config.item_indexing)
    seed_everything(config.seed)
    backbone = files.load_model(backbone_path)
    if not trained:
        log(f"LLM: loaded {backbone_path}")
    out = dict(split=split, user_table=user_table, item_table=item_table,
               references=references, qformer=qformer, tokenizer=tokenizer,
               backbone=backbone, seconds=seconds)
    if slot_llm:
        out["slot_pretraining"] = files.read_json(slot_metrics_path)
    return out


def run_openp5_cell(data, variant, config, output_dir, shared_dir=None,
                    log=print):
    """CF -> phase 1 -> LLM -> phase 2 (`variant`) -> test; resumable.

    The phase-2 checkpoint kept is the epoch with the best validation
    NDCG@10 (sequential task, seen template 0, the first
    `config.max_valid_users` users). The test covers both tasks with seen
    template 0 and the unseen template; the kept model is also scored on
    the validation targets of the same users (sequential, seen template 0:
    `valid`), beside the references' validation rows. Writes `results.json` and
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
    backup = _backup(output_dir, "phase2", config, log)
    if _done(results_path):
        results = files.read_json(results_path)
        backup.clear()
        log(f"{results_path} exists: done.")
        cf_path = os.path.join(shared_dir or output_dir, "cf.npz")
        missing = any("last item" not in results["references"][s]
                      for s in ("valid", "test"))
        if missing and _done(cf_path):  # a cell written before that row
            _add_last_item(results["references"],
                           files.read_npz(cf_path, ["item_table"])["item_table"],
                           pl.prepare_split(data, config), config)
            _json_dump(results_path, results)
        return results
    start = time.time()
    # Beyond the paper, `llm_slot_encoder`: every variant with soft tokens
    # reads the decoder pretrained with slots; OpenP5-R the text-only one.
    slot_llm = config.llm_slot_encoder != "none" and variant != "none"
    shared = shared_phases(data, config, shared_dir or output_dir,
                           need_qformer=(variant == "ilm"), log=log,
                           slot_llm=slot_llm)
    split = shared["split"]
    seed_everything(config.seed)
    model = pl.build_phase2(
        variant, shared["backbone"], shared["tokenizer"], split,
        shared["user_table"], shared["item_table"], config,
        qformer=shared["qformer"],
    )
    phase2_seconds = 0.0
    valid_scores = None
    if pl.phase2_trains(variant, config):  # not OpenP5-R over a frozen LLM
        t = time.time()
        log(f"phase 2: {pl.VARIANT_NAMES[variant]}")
        best = os.path.join(output_dir, "best.weights.h5")
        pl.train_phase2(
            model, split, config, checkpoint_path=best, backup=backup,
            checkpoint_delete=[best, best + ".json", backup.directory],
        )
        phase2_seconds = time.time() - t
        valid_scores = files.read_json(best + ".json")["scores"]
    t = time.time()
    test = pl.test_metrics(model, split, config)
    # The kept model on the validation users of the references and the test
    # (the same sample), so a table shows each row's validation-test gap
    # beside the references' (never used to choose anything).
    valid = {"sequential/seen": pl.recommendation_metrics(
        model, split, "valid", "sequential", 0, config,
        max_users=config.max_eval_users)}
    results = {
        "dataset": data.name,
        "variant": variant,
        "method": pl.VARIANT_NAMES[variant],
        "num_users": data.num_users,
        "num_items": data.num_items,
        "config": config.to_dict(),
        "test": test,
        "valid": valid,
        "valid_per_epoch": valid_scores,
        "references": shared["references"],
        "slot_pretraining": shared.get("slot_pretraining"),
        "seconds": {**shared["seconds"], "phase2": phase2_seconds,
                    "test": time.time() - t, "total": time.time() - start},
    }
    # The trained model, loadable anywhere with `ItemLanguageModel.from_preset`.
    results["preset"] = os.path.join(output_dir, "preset")
    files.save_preset(model, results["preset"])
    log(f"preset: {results['preset']}")
    _text_dump(os.path.join(output_dir, "results.md"), results_markdown(results))
    _json_dump(results_path, results)  # last: it marks the cell done
    backup.clear()
    return results


def run_openp5(dataset_dir, config, output_dir, variant="ilm", shared_dir=None,
               sample_users=2000, item_texts_from=None, log=print):
    """One OpenP5 cell from a dataset folder: what `examples/openp5.py` and
    `python -m ilm_keras.experiments run --data <folder>` run.

    Loads the folder (`load_dataset`), applies the dataset's settings
    (`dataset_config`) and `fit_verbosity` (progress bars on a terminal, one
    line per epoch into a file or pipe), then `run_openp5_cell`.

    Args:
        dataset_dir: an OpenP5 dataset folder, e.g.
            `../shared/data/openp5/ML100K` (`user_sequence.txt` and OpenP5's
            index files); its name is the dataset's.
        config: `PipelineConfig`.
        output_dir: this cell's folder (`results.json`, `results.md`).
        variant: `"none"`, `"mlp"`, `"ilm_rand"` or `"ilm"`.
        shared_dir: folder of the CF / phase-1 / LLM outputs shared by the
            variants of one dataset and config (default:
            `<output_dir>/../shared_<dataset>_seed<seed>`).
        sample_users: datasets with more test users are scored on a fixed
            random sample of this many (`dataset_config`).
        item_texts_from: MovieLens folder with the item texts (default for
            ML100K: `<dataset_dir>/../../ml-100k`).
        log: print function.

    Returns:
        The results dict (also in `<output_dir>/results.json`).

    Example:
    ```python
    run_openp5("../shared/data/openp5/ML100K", get_config("openp5_cpu"),
               "runs/ml100k_ilm", variant="ilm")
    ```
    """
    dataset_dir = os.path.abspath(dataset_dir.rstrip("/"))
    data_dir, dataset = os.path.split(dataset_dir)
    if item_texts_from is None and dataset == "ML100K":
        item_texts_from = os.path.join(os.path.dirname(data_dir), "ml-100k")
    data = load_dataset(data_dir, dataset, item_texts_from=item_texts_from)
    config = dataset_config(config, data, sample_users=sample_users)
    config = dataclasses.replace(config, verbose=fit_verbosity(config.verbose))
    shared = shared_dir or os.path.join(
        os.path.dirname(os.path.abspath(output_dir)),
        f"shared_{dataset}_seed{config.seed}",
    )
    return run_openp5_cell(data, variant, config, output_dir, shared_dir=shared,
                           log=log)


def results_markdown(results):
    """A markdown table of one cell's test metrics, then its validation ones."""
    lines = [
        f"# {results['dataset']}: {results['method']} ({results['variant']})",
        "",
        "| task / template | " + " | ".join(METRIC_KEYS) + " | users |",
        "|---|" + "---|" * (len(METRIC_KEYS) + 1),
    ]
    groups = (  # (row label prefix, {name: metrics}, label suffix)
        ("", results["test"], ""),
        ("", results["references"]["test"], " (sequential history)"),
        ("validation: ", results.get("valid", {}), ""),  # older cells lack it
        ("validation: ", results["references"]["valid"], " (sequential history)"),
    )
    for prefix, rows, suffix in groups:
        for name, m in rows.items():
            lines.append(f"| {prefix}{name}{suffix} | "
                         + " | ".join(f"{m[k]:.4f}" for k in METRIC_KEYS)
                         + f" | {int(m['num_users'])} |")
    lines += ["", "History items excluded from the LLM rankings: "
              f"{results['config']['exclude_history']}.",
              f"Wall time: {results['seconds']['total']:.0f}s.", ""]
    return "\n".join(lines)
