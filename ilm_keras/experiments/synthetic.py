"""Every phase on the built-in synthetic data (the quickstart's pipeline)."""

import dataclasses
import re
import time

from ilm_keras import data as ild
from ilm_keras.experiments import pipeline as pl
from ilm_keras.experiments.configs import QUICKSTART_DATA
from ilm_keras.experiments.configs import QUICKSTART_SMALL_DATA
from ilm_keras.experiments.configs import get_config
from ilm_keras.utils import files
from ilm_keras.utils.determinism import seed_everything
from ilm_keras.utils.quiet import fit_verbosity


def run_synthetic(
    config,
    num_users=300,
    num_items=60,
    num_clusters=6,
    interactions_per_user=12,
    variants=("none", "ilm"),
    log=print,
):
    """CF -> phase 1 -> LLM pretraining -> phase 2 -> test, on synthetic data.

    Data: `make_synthetic_data` (planted clusters shared by interactions and
    item texts). Recommendations are evaluated on the test split with the
    sequential task and seen template 0; history items are excluded when
    `config.exclude_history` (the default). The conversational exchange asks
    the last variant to describe the test target of the first test user
    (`"What is item_<id> about?"`; `config.describe_items` makes both the
    backbone and phase 2 train on such pairs).

    Args:
        config: `PipelineConfig`.
        num_users, num_items, num_clusters, interactions_per_user: data size.
        variants: phase-2 variants to train and compare.
        log: a print function (progress lines).

    Returns:
        dict: `"metrics"` `{variant: {"HR@10", "NDCG@10", ...}}`,
        `"cf_dot_product"` (the CF baseline), `"random"` (the expected HR@10
        / NDCG@10 of a uniformly random ranking of the non-excluded items),
        `"conversation"` `{"prompt", "reply", "reference"}`, `"describe"`
        (per variant, `describe_accuracy` over 50 items), `"seconds"`
        per phase, `"llm_loss"` (per pretraining epoch), the `"split"` and
        the models (`"models"`, `"backbone"`).

    Example:
    ```python
    results = run_synthetic(PipelineConfig(describe_items=True))
    results["metrics"]["ilm"]["NDCG@10"]
    ```
    """
    seed_everything(config.seed)
    seconds = {}
    data, _ = ild.make_synthetic_data(
        num_users=num_users,
        num_items=num_items,
        num_clusters=num_clusters,
        interactions_per_user=interactions_per_user,
        seed=config.seed,
    )
    split = pl.prepare_split(data, config)
    evaluated = min(len(split.test_users),
                    config.max_eval_users or len(split.test_users))
    log(f"data: {data.stats()}, {len(split.test_users)} test users "
        f"({evaluated} evaluated)")

    start = time.time()
    ials, user_table, item_table = pl.train_cf(split, config)
    seconds["cf"] = time.time() - start
    cf = pl.cf_retrieval_metrics(
        ials, split, "test", config.exclude_history, max_users=config.max_eval_users
    )
    log(f"phase 0: iALS in {seconds['cf']:.1f}s; dot-product test "
        f"HR@10 {cf['HR@10']:.3f} NDCG@10 {cf['NDCG@10']:.3f}")

    qformer = None
    if "ilm" in variants:
        start = time.time()
        log("phase 1: Q-Former pretraining")
        qformer, _ = pl.pretrain_qformer(split, user_table, item_table, config)
        seconds["phase1"] = time.time() - start

    start = time.time()
    log("LLM backbone pretraining on text-only prompts")
    tokenizer, backbone, llm_history = pl.pretrain_llm(split, config)
    seconds["llm"] = time.time() - start

    metrics, models = {}, {}
    for variant in variants:
        start = time.time()
        log(f"phase 2: {pl.VARIANT_NAMES[variant]} ({variant})")
        model = pl.build_phase2(
            variant, backbone, tokenizer, split, user_table, item_table, config,
            qformer=qformer,
        )
        if pl.phase2_trains(variant, config):
            pl.train_phase2(model, split, config)
        metrics[variant] = pl.recommendation_metrics(
            model, split, "test", "sequential", 0, config,
            max_users=config.max_eval_users,
        )
        models[variant] = model
        seconds[f"phase2_{variant}"] = time.time() - start
        log(f"  test HR@10 {metrics[variant]['HR@10']:.3f} "
            f"NDCG@10 {metrics[variant]['NDCG@10']:.3f}")

    # Expected HR/NDCG of a random ranking of the same users' rankable items.
    random = pl.random_metrics(split, "test", config.exclude_history,
                               max_users=config.max_eval_users)
    conversation = _conversation(models[variants[-1]], split)
    describe = {v: describe_accuracy(m, split) for v, m in models.items()}
    log("describe: share of items whose genres the reply names: " + ", ".join(
        f"{v} {d['genres_correct']:.2f}" for v, d in describe.items()))
    return {
        "describe": describe,
        "metrics": metrics,
        "cf_dot_product": cf,
        "random": random,
        "conversation": conversation,
        "seconds": seconds,
        "llm_loss": [float(x) for x in llm_history.history["loss"]],
        "split": split,
        "models": models,
        "backbone": backbone,
    }


SMALL_DATA = QUICKSTART_SMALL_DATA


def synthetic_sizes(config_name):
    """The synthetic data sizes (`run_synthetic` keyword arguments) that go
    with a named config: `QUICKSTART_SMALL_DATA` for `"quickstart_small"`,
    else `QUICKSTART_DATA`.

    Example:
    ```python
    run_synthetic(get_config("quickstart_small"),
                  **synthetic_sizes("quickstart_small"))
    ```
    """
    return dict(QUICKSTART_SMALL_DATA if config_name == "quickstart_small"
                else QUICKSTART_DATA)


def run_quickstart(config, sizes=None, output=None, variants=("none", "ilm"),
                   log=print, preset_dir=None):
    """The quickstart: `run_synthetic`, a printed report, a results JSON.

    What `examples/quickstart.py` and `python -m ilm_keras.experiments run
    --config quickstart` run. `config.verbose` becomes `fit_verbosity`'s
    (progress bars on a terminal, one line per epoch into a file or pipe).

    Args:
        config: `PipelineConfig`.
        sizes: `run_synthetic` data sizes (default `QUICKSTART_DATA`).
        output: optional path of a JSON file for `quickstart_summary`.
        variants: phase-2 variants to train and compare.
        log: a print function (progress lines and the report).
        preset_dir: optional folder for the last variant's trained model,
            a keras-hub preset (`ItemLanguageModel.from_preset`).

    Returns:
        `run_synthetic`'s results, plus `"total_seconds"` (and `"preset"`,
        the preset's folder, when `preset_dir` is given).

    Example:
    ```python
    run_quickstart(get_config("quickstart_small"),
                   synthetic_sizes("quickstart_small"), output="results.json")
    ```
    """
    config = dataclasses.replace(config, verbose=fit_verbosity(config.verbose))
    start = time.time()
    results = run_synthetic(config, variants=tuple(variants), log=log,
                            **(sizes or QUICKSTART_DATA))
    results["total_seconds"] = time.time() - start
    log(quickstart_report(results))
    if preset_dir:
        files.save_preset(results["models"][variants[-1]], preset_dir)
        results["preset"] = preset_dir
        log(f"\nThe trained {variants[-1]} model is a preset in {preset_dir}:\n"
            "  from ilm_keras import ItemLanguageModel\n"
            f"  model = ItemLanguageModel.from_preset({preset_dir!r})")
    if output:
        files.write_json(output, quickstart_summary(results, config), indent=2,
                         default=float)
    return results


def quickstart_summary(results, config):
    """The JSON-ready part of `run_synthetic`'s results (no models or
    split), with `"config"`: `config.to_dict()`."""
    keep = {k: results[k] for k in ("metrics", "cf_dot_product", "random",
                                    "conversation", "describe", "seconds",
                                    "total_seconds", "preset") if k in results}
    keep["config"] = config.to_dict()
    return keep


def quickstart_report(results):
    """The quickstart's printed report of `run_synthetic`'s results."""
    lines = ["", "Test, sequential task, seen template 0, history items excluded:"]
    rows = [("random ranking", results["random"]),
            ("iALS dot product", results["cf_dot_product"])]
    rows += [(f"{'OpenP5-R' if v == 'none' else v.upper()} ({v})", m)
             for v, m in results["metrics"].items()]
    for name, m in rows:
        lines.append(f"  {name:>22}: HR@10 {m['HR@10']:.4f}  "
                     f"NDCG@10 {m['NDCG@10']:.4f}")
    describe = results["describe"]
    lines += ["", "\"What is item_<id> about?\" for " + str(
        next(iter(describe.values()))["items"]) + " items, share whose reply "
        "names exactly the item's genres: " + ", ".join(
            f"{v} {d['genres_correct']:.2f}" for v, d in describe.items())]
    chat = results["conversation"]
    lines += ["", f"user: {chat['prompt']}", f"ILM:  {chat['reply']}",
              f"(item text: {chat['reference']})"]
    seconds = results["seconds"]
    total = results.get("total_seconds", sum(seconds.values()))
    lines += ["", f"total {total:.0f}s; per phase: "
              + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items())]
    return "\n".join(lines)


def quickstart_config(small=False, seed=0, **overrides):
    """The quickstart's `PipelineConfig` (`small`: the test-sized one):
    `get_config("quickstart")` / `get_config("quickstart_small")`."""
    name = "quickstart_small" if small else "quickstart"
    return get_config(name, seed=seed, **overrides)


def _describe(model, prompts):
    """Greedy replies of `model` to `prompts`, without the echoed prompt."""
    model.compile(sampler="greedy")
    length = model.preprocessor.sequence_length
    replies = model.generate(list(prompts), max_length=length,
                             stop_token_ids="auto")
    tokenizer = model.preprocessor.tokenizer
    out = []
    for prompt, reply in zip(prompts, replies):
        echoed = str(tokenizer.detokenize(tokenizer(prompt)))
        if isinstance(echoed, bytes):
            echoed = echoed.decode("utf-8")
        out.append(reply[len(echoed):].strip() if reply.startswith(echoed)
                   else reply)
    return out


def _genres(text):
    """The genre set of a synthetic item text ("... Genres: A, B.")."""
    match = re.search(r"Genres\s*:\s*([^.]*)", text or "")
    if not match:
        return frozenset()
    return frozenset(g.strip().lower() for g in match.group(1).split(",")
                     if g.strip())


def describe_accuracy(model, split, num_items=50):
    """Share of items whose description names exactly their genres.

    Asks `"What is item_<id> about?"` for the first `num_items` items (item
    order, a fixed set) and compares the genres in the reply with those of
    the item's text.

    Returns:
        dict: `"items"` (how many asked), `"genres_correct"` (the share),
        `"examples"` (the first five prompt / reply / reference triples).
    """
    data = split.data
    items = list(range(min(num_items, data.num_items)))
    prompts = [pl.DESCRIBE_TEMPLATE.format(item=data.item_index[i]) for i in items]
    replies = _describe(model, prompts)
    correct = [
        bool(_genres(data.item_texts[i])) and _genres(r) == _genres(data.item_texts[i])
        for i, r in zip(items, replies)
    ]
    return {
        "items": len(items),
        "genres_correct": float(sum(correct) / max(len(items), 1)),
        "examples": [
            {"prompt": p, "reply": r, "reference": data.item_texts[i]}
            for p, r, i in list(zip(prompts, replies, items))[:5]
        ],
    }


def _conversation(model, split):
    """Ask `model` to describe the first test user's target item."""
    data = split.data
    item = int(split.test_target[0])
    prompt = pl.DESCRIBE_TEMPLATE.format(item=data.item_index[item])
    reply = _describe(model, [prompt])[0]
    return {
        "prompt": prompt,
        "reply": reply,
        "reference": data.item_texts[item] if data.item_texts else None,
    }
