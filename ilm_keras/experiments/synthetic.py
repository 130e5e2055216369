"""Every phase on the built-in synthetic data (the quickstart's pipeline)."""

import time

import keras
import numpy as np

from ilm_keras import data as ild
from ilm_keras.experiments import pipeline as pl


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
        `"conversation"` `{"prompt", "reply", "reference"}`, `"seconds"`
        per phase, `"llm_loss"` (per pretraining epoch), the `"split"` and
        the models (`"models"`, `"backbone"`).

    Example:
    ```python
    results = run_synthetic(PipelineConfig(describe_items=True))
    results["metrics"]["ilm"]["NDCG@10"]
    ```
    """
    keras.utils.set_random_seed(config.seed)
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
        if variant != "none":  # OpenP5-R: the backbone alone, nothing to train.
            pl.train_phase2(model, split, config)
        metrics[variant] = pl.recommendation_metrics(
            model, split, "test", "sequential", 0, config,
            max_users=config.max_eval_users,
        )
        models[variant] = model
        seconds[f"phase2_{variant}"] = time.time() - start
        log(f"  test HR@10 {metrics[variant]['HR@10']:.3f} "
            f"NDCG@10 {metrics[variant]['NDCG@10']:.3f}")

    random = _random_baseline(split, config, max_users=config.max_eval_users)
    conversation = _conversation(models[variants[-1]], split)
    return {
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


SMALL_DATA = dict(num_users=60, num_items=24, num_clusters=3,
                  interactions_per_user=8)


def quickstart_config(small=False, seed=0, llm_epochs=3, phase2_epochs=2):
    """The quickstart's `PipelineConfig` (`small`: the test-sized one)."""
    if small:
        return pl.PipelineConfig(
            max_history=5, cf_dim=16, qformer_layers=1, qformer_hidden=32,
            qformer_heads=2, num_query_tokens=2, num_cf_tokens=2,
            phase1_losses="it", phase1_epochs=1, phase1_batch_size=8,
            llm_layers=1, llm_hidden=32, llm_heads=2, llm_epochs=3,
            llm_batch_size=64, llm_learning_rate=1e-2, templates_per_example=1,
            describe_items=True, phase2_epochs=1, phase2_batch_size=64,
            max_eval_users=16, length_bucket=64,
            num_beams=10, verbose=0, seed=seed,
        )
    return pl.PipelineConfig(
        max_history=10, cf_dim=32, qformer_layers=2, qformer_hidden=64,
        qformer_heads=4, num_query_tokens=4, num_cf_tokens=4,
        phase1_epochs=10, phase1_batch_size=32, llm_layers=2, llm_hidden=64,
        llm_heads=4, llm_epochs=llm_epochs, llm_learning_rate=3e-3,
        templates_per_example=1, describe_items=True,
        phase2_epochs=phase2_epochs, phase2_learning_rate=1e-3,
        num_beams=10, verbose=1, seed=seed,
    )



def _random_baseline(split, config, k=10, max_users=None):
    """Expected HR@k / NDCG@k of a uniformly random ranking."""
    examples = split.examples("test")
    histories = examples.histories[:max_users] if max_users else examples.histories
    n = split.data.num_items
    hr, ndcg = [], []
    for h in histories:
        m = n - len(set(h.tolist())) if config.exclude_history else n
        m = max(m, 1)
        hr.append(min(k, m) / m)
        ndcg.append(sum(1 / np.log2(r + 1) for r in range(1, min(k, m) + 1)) / m)
    return {f"HR@{k}": float(np.mean(hr)), f"NDCG@{k}": float(np.mean(ndcg))}


def _conversation(model, split):
    """Ask `model` to describe the first test user's target item."""
    data = split.data
    item = int(split.test_target[0])
    prompt = pl.DESCRIBE_TEMPLATE.format(item=data.item_index[item])
    model.compile(sampler="greedy")
    length = model.preprocessor.sequence_length
    reply = model.generate([prompt], max_length=length, stop_token_ids="auto")[0]
    tokenizer = model.preprocessor.tokenizer
    echoed = str(tokenizer.detokenize(tokenizer(prompt)))
    if isinstance(echoed, bytes):
        echoed = echoed.decode("utf-8")
    reply = reply[len(echoed):].strip() if reply.startswith(echoed) else reply
    return {
        "prompt": prompt,
        "reply": reply,
        "reference": data.item_texts[item] if data.item_texts else None,
    }
