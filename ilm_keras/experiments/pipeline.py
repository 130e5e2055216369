"""The OpenP5 experiment pipeline: CF -> phase 1 -> LLM pretraining -> phase 2.

Each step is one function, so examples and benchmarks read as a list of
steps and a researcher can swap one of them:

1. `prepare_split`: random item indexing (if missing) + leave-last-out split.
2. `train_cf`: iALS on the training sequences (`items[:-2]`).
3. `pretrain_qformer`: phase 1 (`QFormerPretrainer`) on item-text pairs plus
   item-item / user-item pairs, as `config.phase1_losses` says.
4. `pretrain_llm`: an `OpenP5Tokenizer` and a small `LlamaBackbone` trained on
   the text-only OpenP5 prompts (paper §4.4), then frozen.
5. `train_phase2`: an `ItemLanguageModel` of one variant (`none` = OpenP5-R,
   `mlp`, `ilm_rand`, `ilm`) over the frozen backbone; the checkpoint with the
   best validation NDCG@10 is kept.
6. `recommendation_metrics`: HR@k / NDCG@k of `recommend()` on validation or
   test prompts (a seen template or the unseen one).

`cf_retrieval_metrics` scores the same CF embeddings by dot product (the
baseline every ILM variant reads).
"""

import dataclasses
import functools
import os
import re
import time

import keras
import numpy as np

from ilm_keras import data as ild
from ilm_keras.cf import IALS
from ilm_keras.generation.item_trie import ItemTrie
from ilm_keras.models.phase1_batches import make_phase1_dataset
from ilm_keras.models.prompt_response_batches import PromptResponseBatches
from ilm_keras.experiments.backbone_pretraining import make_llama_backbone
from ilm_keras.experiments.backbone_pretraining import pretrain_backbone
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer
from ilm_keras.metrics import evaluate_retrieval
from ilm_keras.metrics import hit_rate_at_k
from ilm_keras.metrics import ndcg_at_k
from ilm_keras.models.item_language_model import ItemLanguageModel
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.models.qformer import QFormer
from ilm_keras.models.qformer_pretrainer import LOSS_SETS
from ilm_keras.models.qformer_pretrainer import QFormerPretrainer
from ilm_keras.tokenizers.qformer_tokenizer import QFormerTokenizer
from ilm_keras.tokenizers.qformer_tokenizer import SPECIAL_TOKENS
from ilm_keras.utils import files
from ilm_keras.utils import resume
from ilm_keras.utils.quiet import fit_verbosity
from ilm_keras.utils.schedules import warmup_cosine

VARIANTS = ("none", "mlp", "ilm_rand", "ilm")
VARIANT_NAMES = {
    "none": "OpenP5-R",
    "mlp": "MLP",
    "ilm_rand": "ILM-rand",
    "ilm": "ILM",
}
DESCRIBE_TEMPLATE = "What is item_{item} about?"


@dataclasses.dataclass
class PipelineConfig:
    """Sizes and schedules of every phase (defaults: a CPU-sized run).

    Attributes (grouped by phase):
        max_history: OpenP5 history cut (paper/OpenP5: 20).
        cf_dim, cf_iterations, cf_regularization, cf_alpha: iALS.
        qformer_layers, qformer_hidden, qformer_heads, num_query_tokens,
        num_cf_tokens, qformer_text_length: the Q-Former (N = num_query_tokens
            soft tokens per mention for `ilm` / `ilm_rand`).
        qformer_initializer_range: the Q-Former's initializer standard
            deviation (None: `1 / sqrt(qformer_hidden)`, which lets the CF
            vector through a narrow Q-Former from the start; BLIP-2's 0.02
            nearly blocks it, see `QFormer`).
        phase1_losses: `"it"`, `"it_ii"`, `"it_ui"`, `"all"`, or `"ii_ui"`
            (no item texts needed).
        phase1_steps_per_epoch: optional cap on phase-1 batches per epoch.
        phase1_epochs, phase1_batch_size, phase1_learning_rate: phase 1.
        llm_layers, llm_hidden, llm_heads: the pretrained decoder.
        llm_epochs, llm_batch_size, llm_learning_rate: its pretraining.
        templates_per_example: seen templates per example per task and epoch
            (OpenP5: 3), for LLM pretraining and phase 2.
        describe_items: also train "What is item_<id> about?" -> item text
            (LLM pretraining and phase 2), for a conversational exchange.
        describe_repeats: how many times each describe pair appears in an
            epoch (one pair per item, against one recommendation prompt per
            training prefix and template: once, they are a small share).
        num_mlp_tokens: soft tokens per mention of the `mlp` variant.
        phase2_epochs, phase2_batch_size, phase2_learning_rate: phase 2.
        phase2_steps_per_epoch: optional cap on phase-2 batches per epoch.
        phase2_train_llm: beyond the paper: the LLM decoder trains in
            phase 2 too, beside the item encoder and adaptor (the paper
            keeps it frozen). Every variant then trains, `none` (OpenP5-R)
            included, on the same batches: its decoder gets the same extra
            steps on the text-only prompts, so the comparison stays fair.
            Each variant trains its own copy of the decoder. A small decoder
            pretrained on text alone does not learn to read soft tokens
            while frozen (README, "Recommendation quality").
        llm_steps_per_epoch: optional cap on pretraining batches per epoch.
        llm_slot_encoder: beyond the paper: `"mlp"` pretrains the decoder
            with soft-token slots present. Every item and user mention is
            followed by `num_mlp_tokens` soft tokens from an MLP over its CF
            vector (`user_vectors` for users), trained beside the decoder
            on the same prompts, steps and schedule as the text-only
            decoder (`pretrain_llm_with_slots`). Phase 2 then keeps this
            decoder frozen, as the paper does, and each variant fills the
            slots with its own freshly initialised encoder; OpenP5-R still
            reads the text-only decoder. Needs `num_mlp_tokens ==
            num_query_tokens`, so that every variant writes the slot layout
            the decoder learned. `"none"` (default): the paper's text-only
            decoder for every variant.
        cf_output_head: beyond the paper: the variants with an item encoder
            add `h . (W v_i)` to each item token's logit, `W` a trainable
            projection of the item's CF vector, zero at the start
            (`CFItemOutputHead`; atomic item ids only). The LLM stays
            frozen; `W` trains with the encoder and adaptor.
        num_beams: beam width of `recommend()` (OpenP5: 10); unused with
            atomic item indexing, whose ranking is exact.
        exclude_history: drop every item the user saw before the target
            (the whole known history, not only what the prompt shows) from
            every method's ranking: the LLM variants, popularity and iALS.
        max_eval_users: evaluate on a fixed random sample of this many users
            (None: all). The sample depends on the data only (not on
            `seed`), so every method and seed is scored on the same users
            (`evaluation_rows`).
        item_indexing: how the LLM writes items: `"atomic"` (one vocabulary
            entry per item; exact one-step ranking) or `"random"` (OpenP5's
            random indexing, ids spelled digit by digit; the paper's
            setting). See `OpenP5Tokenizer`.
        user_vectors: the CF vector of a user mention in phase 2:
            `"fold_in"` (folded in from the items the prompt shows, leak
            free) or `"table"` (the user's row of the CF table, the paper's;
            it holds the training targets). See `ItemSoftTokens`.
        llm_warmup_steps, phase2_warmup_steps: linear warmup of the
            learning rate before its cosine decay to 0 over the whole fit
            (`ilm_keras.utils.schedules.warmup_cosine`).
        max_valid_users: users of the per-epoch validation (checkpoint pick;
            None: all), sampled as `max_eval_users`.
        length_bucket: training batch widths are multiples of this (a larger
            bucket: fewer shapes to compile, more padding).
        length_group: training batches per length-sorted group (pairs of
            similar length share a batch; 1: plain shuffled batches).
        verbose: `fit` verbosity (1: progress bars).
        seed: one seed for indexing, CF, model init and shuffles.
        backup_steps: a resumable run (`run_openp5_cell`) saves each fit's
            training state every this many steps and at every epoch end; a
            rerun after a kill resumes from there, with the same result as
            an uninterrupted run (`ilm_keras.utils.resume`).
    """

    max_history: int = 20
    cf_dim: int = 32
    cf_iterations: int = 15
    cf_regularization: float = 0.1
    cf_alpha: float = 2.0
    qformer_layers: int = 2
    qformer_hidden: int = 64
    qformer_heads: int = 4
    num_query_tokens: int = 4
    num_cf_tokens: int = 4
    qformer_text_length: int = 32
    qformer_initializer_range: float = None
    phase1_losses: str = "all"
    phase1_epochs: int = 10
    phase1_batch_size: int = 32
    phase1_learning_rate: float = 1e-3
    phase1_steps_per_epoch: int = None
    llm_layers: int = 2
    llm_hidden: int = 64
    llm_heads: int = 4
    llm_epochs: int = 5
    llm_batch_size: int = 64
    llm_learning_rate: float = 2e-3
    llm_steps_per_epoch: int = None
    llm_slot_encoder: str = "none"
    cf_output_head: bool = False
    templates_per_example: int = 3
    describe_items: bool = False
    describe_repeats: int = 1
    num_mlp_tokens: int = 1
    phase2_epochs: int = 2
    phase2_batch_size: int = 32
    phase2_learning_rate: float = 1e-3
    phase2_steps_per_epoch: int = None
    phase2_train_llm: bool = False
    num_beams: int = 10
    exclude_history: bool = True
    max_eval_users: int = None
    item_indexing: str = "atomic"
    user_vectors: str = "fold_in"
    llm_warmup_steps: int = 100
    phase2_warmup_steps: int = 50
    max_valid_users: int = 200
    length_bucket: int = 16
    length_group: int = 50
    verbose: int = 1
    seed: int = 0
    backup_steps: int = 200

    def to_dict(self):
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------
# Data and CF (phase 0).
# ----------------------------------------------------------------------
def prepare_split(data, config):
    """Random indexing (when `data` has none) and the leave-last-out split."""
    if data.item_index is None or data.user_index is None:
        data = ild.random_indexing(data, seed=config.seed)
    return ild.leave_last_out(data, max_history=config.max_history)


def train_cf(split, config):
    """iALS on `split.train_sequences`; returns `(ials, user_table, item_table)`."""
    ials = IALS(
        factors=config.cf_dim,
        regularization=config.cf_regularization,
        alpha=config.cf_alpha,
        iterations=config.cf_iterations,
        seed=config.seed,
    )
    user_table, item_table = ials.fit(
        split.train_sequences,
        num_users=split.data.num_users,
        num_items=split.data.num_items,
    )
    return ials, user_table, item_table


def evaluation_rows(split, subset, max_users=None):
    """Which examples of `split.examples(subset)` an evaluation scores.

    All of them, or a sorted random sample of `max_users` drawn with a fixed
    generator: the same users for every method, seed and run on this split.

    Returns:
        int64 array of row indices.
    """
    count = len(split.examples(subset).targets)
    if max_users is None or max_users >= count:
        return np.arange(count)
    if int(max_users) < 1:
        raise ValueError(f"max_users must be >= 1 or None; got {max_users}.")
    rng = np.random.default_rng(20240611)
    return np.sort(rng.choice(count, int(max_users), replace=False))


def cf_retrieval_metrics(ials, split, subset, exclude_history, ks=(5, 10),
                         max_users=None):
    """HR/NDCG of ranking all items by `user . item`, the user folded in from
    the history the prompts show (the same items the LLM variants read).

    With `exclude_history`, every item the user saw before the target is
    removed from the ranking (`split.known_items`), as for every other
    method of a comparison."""
    users = split.examples(subset)
    rows = evaluation_rows(split, subset, max_users)
    histories = [users.histories[r] for r in rows]
    targets = users.targets[rows]
    known_items = split.known_items(subset)
    known = [known_items[r] for r in rows]
    result = evaluate_retrieval(
        ials.fold_in(histories),
        ials.item_table,
        targets,
        histories=known,
        exclude_history=exclude_history,
        ks=ks,
    )
    return {k: float(v) for k, v in result.items()}


def last_item_metrics(item_table, split, subset, exclude_history, ks=(5, 10),
                      max_users=None):
    """HR/NDCG of ranking all items by `last . item`, `last` the CF vector
    of the last item the prompt shows (item-to-item CF, no user vector),
    with the same users and exclusion rule as `cf_retrieval_metrics`."""
    rows = evaluation_rows(split, subset, max_users)
    users = split.examples(subset)
    last = np.asarray([users.histories[r][-1] for r in rows], np.int64)
    item_table = np.asarray(item_table, np.float32)
    known_items = split.known_items(subset)
    result = evaluate_retrieval(
        item_table[last],
        item_table,
        users.targets[rows],
        histories=[known_items[r] for r in rows],
        exclude_history=exclude_history,
        ks=ks,
    )
    return {k: float(v) for k, v in result.items()}


def popularity_metrics(split, subset, exclude_history, ks=(5, 10),
                       max_users=None):
    """HR/NDCG of ranking all items by their count in the training
    sequences, with the same exclusion rule as `cf_retrieval_metrics`."""
    rows = evaluation_rows(split, subset, max_users)
    targets = split.examples(subset).targets[rows]
    known_items = split.known_items(subset)
    known = [known_items[r] for r in rows]
    counts = np.bincount(
        np.concatenate([np.asarray(s, dtype=np.int64) for s in split.train_sequences]),
        minlength=split.data.num_items,
    ).astype(np.float32)
    result = evaluate_retrieval(
        np.ones((len(targets), 1), dtype=np.float32),
        counts[:, None],
        targets,
        histories=known,
        exclude_history=exclude_history,
        ks=ks,
    )
    return {k: float(v) for k, v in result.items()}


def random_metrics(split, subset, exclude_history, ks=(5, 10), max_users=None):
    """Expected HR/NDCG of a uniformly random ranking of the items a method
    may recommend (all items, minus the user's known items when
    `exclude_history`), on the users `evaluation_rows` picks."""
    rows = evaluation_rows(split, subset, max_users)
    known_items = split.known_items(subset)
    num_items = split.data.num_items
    out = {}
    sizes = np.array([
        max(num_items - len(set(known_items[r].tolist())), 1)
        if exclude_history else num_items
        for r in rows
    ], dtype=np.float64)
    for k in ks:
        top = np.minimum(k, sizes)
        out[f"HR@{k}"] = float(np.mean(top / sizes))
        gains = np.array([np.sum(1.0 / np.log2(np.arange(2, int(t) + 2))) for t in top])
        out[f"NDCG@{k}"] = float(np.mean(gains / sizes))
    out["num_users"] = int(len(rows))
    return out


def reference_metrics(split, config, ials, subset="test"):
    """The non-LLM rows of a comparison, on the LLM variants' protocol:
    popularity, iALS (user folded in from the history the sequential
    prompts show), the last shown item's CF neighbours and a random
    ranking; same users, same exclusion."""
    return {
        "popularity": popularity_metrics(
            split, subset, config.exclude_history, max_users=config.max_eval_users
        ),
        "iALS": cf_retrieval_metrics(
            ials, split, subset, config.exclude_history,
            max_users=config.max_eval_users,
        ),
        "last item": last_item_metrics(
            ials.item_table, split, subset, config.exclude_history,
            max_users=config.max_eval_users,
        ),
        "random": random_metrics(
            split, subset, config.exclude_history, max_users=config.max_eval_users
        ),
    }


# ----------------------------------------------------------------------
# Phase 1.
# ----------------------------------------------------------------------
def pretrain_qformer(split, user_table, item_table, config, callbacks=None,
                     backup=None):
    """Phase 1: a `QFormer` pretrained with `config.phase1_losses`.

    Item-text pairs come from `data.item_texts` (required unless
    `phase1_losses="ii_ui"`, which trains the item-item and user-item
    contrastive losses alone); item-item and user-item pairs from the
    training sequences. With `backup` (a `TrainingBackup`) the fit saves its
    state there and a rerun resumes it exactly (`resumable_fit`).

    Returns:
        `(qformer, history)`.
    """
    data = split.data
    text_free = "itc" not in LOSS_SETS[config.phase1_losses]
    has_texts = any(data.item_texts or [])
    if not has_texts and not text_free:
        raise ValueError(
            f"{data.name}: no item texts, so phase 1 with "
            f"phase1_losses={config.phase1_losses!r} cannot run; use "
            "phase1_losses='ii_ui' (item-item and user-item contrastive "
            "only), variant 'ilm_rand', or load item texts."
        )
    if text_free:
        # The text tower is not trained; a vocabulary of the six special
        # tokens (+2) sizes its unused embedding.
        vocabulary_size, item_text = len(SPECIAL_TOKENS) + 2, None
        dec_token_id = SPECIAL_TOKENS.index("[DEC]")
    else:
        items, texts = ild.item_text_pairs(data)
        tokenizer = QFormerTokenizer.train(
            texts, vocabulary_size=2000,
            sequence_length=config.qformer_text_length,
        )
        token_ids, padding_mask = tokenizer.encode(list(texts))
        vocabulary_size = tokenizer.vocabulary_size()
        dec_token_id = tokenizer.dec_token_id
        item_text = (np.asarray(items), token_ids, padding_mask)
    dataset, steps = make_phase1_dataset(
        item_table,
        item_text=item_text,
        item_item=ild.item_item_pairs(split.train_sequences),
        user_item=ild.user_item_pairs(split.train_sequences),
        user_table=user_table,
        losses=config.phase1_losses,
        batch_size=config.phase1_batch_size,
        seed=config.seed,
    )
    if config.phase1_steps_per_epoch:
        steps = config.phase1_steps_per_epoch
    qformer = QFormer(
        **qformer_config(item_table, config, vocabulary_size)
    )
    pretrainer = QFormerPretrainer(
        qformer,
        losses=config.phase1_losses,
        embed_dim=64,
        dec_token_id=dec_token_id,
        seed=config.seed,
    )
    pretrainer.compile(
        optimizer=keras.optimizers.AdamW(config.phase1_learning_rate, weight_decay=0.01)
    )
    # The dataset shuffles itself; a resumed fit skips the batches of the
    # steps already trained. (Keras reads it through one iterator: the
    # pretrainer is built and has no compiled loss or metrics, so `fit` does
    # not read a batch to build them. A second iterator would draw the
    # next shuffles, and the stream would depend on how far the first read.)
    history = resume.resumable_fit(
        pretrainer,
        lambda start: (dataset.skip(start) if start else dataset, steps),
        epochs=config.phase1_epochs,
        backup=backup,
        callbacks=callbacks,
        verbose=fit_verbosity(config.verbose),
    )
    return qformer, history


def qformer_config(item_table, config, vocabulary_size=2000):
    """The config dict of the `QFormer` that `pretrain_qformer` builds; also
    used alone for `ilm_rand`, which needs the architecture but not the
    weights (nor the text tower's vocabulary, unused in phase 2)."""
    return dict(
        vocabulary_size=vocabulary_size,
        cf_dim=int(item_table.shape[1]),
        num_layers=config.qformer_layers,
        hidden_dim=config.qformer_hidden,
        num_heads=config.qformer_heads,
        intermediate_dim=4 * config.qformer_hidden,
        num_query_tokens=config.num_query_tokens,
        max_text_length=config.qformer_text_length,
        num_cf_tokens=config.num_cf_tokens,
        dropout=0.1,
        initializer_range=(
            config.qformer_initializer_range
            or 1.0 / float(np.sqrt(config.qformer_hidden))
        ),
    )


# ----------------------------------------------------------------------
# The LLM backbone (text-only OpenP5 pretraining).
# ----------------------------------------------------------------------
def describe_pairs(data):
    """`("What is item_<id> about?", text)` for every item with a text."""
    if not data.item_texts:
        return []
    return [
        (DESCRIBE_TEMPLATE.format(item=data.item_index[i]), text)
        for i, text in enumerate(data.item_texts)
        if text
    ]


def training_pairs(split, config, epoch):
    """One epoch of phase-2 / pretraining pairs: OpenP5 sequential +
    straightforward prompts (`templates_per_example` seen templates each),
    plus the describe pairs (`config.describe_repeats` times each) when
    `config.describe_items`."""
    pairs = ild.training_prompts(
        split,
        epoch=epoch,
        seed=config.seed,
        templates_per_example=config.templates_per_example,
    )
    if config.describe_items:
        pairs = ild.ConcatenatedPairs(
            [pairs, describe_pairs(split.data) * config.describe_repeats])
    return pairs


def sequence_length_for(split, tokenizer, num_soft_tokens, config):
    """A `sequence_length` that fits every prompt + response of `split`
    with every template, rounded up to 16.

    Measured on a worst case: the user and the items whose mentions take
    the most tokens, with a history of `config.max_history` items."""
    data = split.data

    def costliest(prefix, ids):
        return int(np.argmax([len(tokenizer(f"{prefix}_{i}")) for i in ids]))

    user = costliest("user", data.user_index)
    item = costliest("item", data.item_index)
    worst = ild.SequenceExamples(
        np.array([user]), [np.full(config.max_history, item)], np.array([item])
    )
    longest = 0
    for task, spec in ild.RECOMMENDATION_TASKS.items():
        for template in list(range(len(spec.seen))) + ["unseen"]:
            (prompt, target), = ild.prompt_pairs(data, worst, task, template)
            mentions = len(re.findall(r"(?:item|user)_\d+", prompt))
            length = len(tokenizer(prompt)) + mentions * num_soft_tokens
            longest = max(longest, length + len(tokenizer(target)))
    if config.describe_items:
        for prompt, text in describe_pairs(split.data):
            longest = max(longest, len(tokenizer(prompt)) + num_soft_tokens
                          + len(tokenizer(text)))
    return -(-(longest + 2) // 16) * 16


def _new_llm(split, config):
    """The `OpenP5Tokenizer` of `split` and an untrained `LlamaBackbone`."""
    data = split.data
    texts = [t for t in (data.item_texts or []) if t] if config.describe_items else []
    tokenizer = OpenP5Tokenizer.from_texts(
        texts, item_ids=data.item_index, item_indexing=config.item_indexing
    )
    backbone = make_llama_backbone(
        tokenizer.vocabulary_size(),
        num_layers=config.llm_layers,
        hidden_dim=config.llm_hidden,
        num_heads=config.llm_heads,
    )
    return tokenizer, backbone


def pretrain_llm(split, config, callbacks=None, backup=None):
    """Builds the `OpenP5Tokenizer` and pretrains a `LlamaBackbone` on the
    text-only prompts (resumable with `backup`, as `pretrain_qformer`);
    returns `(tokenizer, backbone, history)`."""
    tokenizer, backbone = _new_llm(split, config)
    history = pretrain_backbone(
        backbone,
        tokenizer,
        epochs=config.llm_epochs,
        learning_rate=config.llm_learning_rate,
        callbacks=callbacks,
        verbose=fit_verbosity(config.verbose),
        steps_per_epoch=config.llm_steps_per_epoch,
        warmup_steps=config.llm_warmup_steps,
        backup=backup,
        **llm_batch_args(split, tokenizer, config),
    )
    return tokenizer, backbone, history


def pretrain_llm_with_slots(split, user_table, item_table, config,
                            callbacks=None, backup=None):
    """Beyond the paper: pretrains the decoder with soft-token slots present.

    The same prompts, steps, batch size and schedule as `pretrain_llm`, but
    through an `mlp` `ItemLanguageModel` whose decoder trains beside its
    encoder: every item and user mention is followed by
    `config.num_mlp_tokens` soft tokens from an MLP over its CF vector, so
    the decoder learns to read such slots. Phase 2 keeps it frozen and
    gives it a fresh encoder (`config.llm_slot_encoder`).

    Returns:
        `(tokenizer, backbone, model, history)`: the decoder (frozen again)
        and the jointly trained model it was part of.
    """
    if config.llm_slot_encoder != "mlp":
        raise ValueError(
            "pretrain_llm_with_slots needs llm_slot_encoder='mlp', got "
            f"{config.llm_slot_encoder!r}."
        )
    if config.num_mlp_tokens != config.num_query_tokens:
        raise ValueError(
            f"llm_slot_encoder='mlp' needs num_mlp_tokens "
            f"({config.num_mlp_tokens}) == num_query_tokens "
            f"({config.num_query_tokens}): the Q-Former variants must write "
            "the slot layout the decoder is pretrained on."
        )
    tokenizer, backbone = _new_llm(split, config)
    model = build_phase2("mlp", backbone, tokenizer, split, user_table,
                         item_table, dataclasses.replace(config, phase2_train_llm=False))
    model.backbone.llm.trainable = True
    history = fit_pairs(
        model, split, config, batch_size=config.llm_batch_size,
        epochs=config.llm_epochs, steps_per_epoch=config.llm_steps_per_epoch,
        learning_rate=config.llm_learning_rate,
        warmup_steps=config.llm_warmup_steps, callbacks=callbacks,
        backup=backup,
    )
    model.backbone.llm.trainable = False
    return tokenizer, backbone, model, history


def llm_batch_args(split, tokenizer, config):
    """`pretrain_llm`'s batch arguments of `pretrain_backbone` (and of
    `pretraining_batches`, to inspect its batches)."""
    data = split.data
    return dict(
        pairs_for_epoch=lambda epoch: training_pairs(split, config, epoch),
        item_ids=data.item_index,
        user_ids=data.user_index,
        batch_size=config.llm_batch_size,
        sequence_length=sequence_length_for(split, tokenizer, 0, config),
        seed=config.seed,
        length_bucket=config.length_bucket,
        length_group=config.length_group,
    )


# ----------------------------------------------------------------------
# Phase 2 and evaluation.
# ----------------------------------------------------------------------
def build_phase2(variant, backbone, tokenizer, split, user_table, item_table,
                 config, qformer=None):
    """The `ItemLanguageModel` of `variant` over the (frozen) `backbone`.

    With `config.phase2_train_llm`, over a trainable copy of `backbone`
    instead (`backbone` itself is left as it is)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if variant == "ilm" and qformer is None:
        raise ValueError("variant 'ilm' needs the phase-1 `qformer`.")
    data = split.data
    soft = {"none": 0, "mlp": config.num_mlp_tokens}.get(
        variant, config.num_query_tokens
    )
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer,
        item_ids=[str(i) for i in data.item_index],
        user_ids=[str(u) for u in data.user_index],
        sequence_length=sequence_length_for(split, tokenizer, soft, config),
        max_mentions=config.max_history + 2,
        # The catalogue, so that a saved model can name its items.
        item_texts=[t or "" for t in data.item_texts] if data.item_texts else None,
        loss_positions=True,  # phase 2: logits at response tokens only
    )
    if variant == "ilm_rand":
        qformer = qformer if qformer is not None else qformer_config(item_table, config)
    item_token_ids = None
    if config.cf_output_head and variant != "none":
        names = [preprocessor.item_name(i) for i in range(preprocessor.num_items)]
        item_token_ids = ItemTrie(preprocessor.response_token_ids(names)).single_tokens()
        if item_token_ids is None:
            raise ValueError(
                "cf_output_head needs one token per item "
                f"(item_indexing='atomic'), got {config.item_indexing!r}."
            )
    if config.phase2_train_llm:  # A copy: other variants read the original.
        copy = type(backbone).from_config(backbone.get_config())
        copy.set_weights(backbone.get_weights())
        backbone = copy
    model = ItemLanguageModel(
        backbone=backbone,
        preprocessor=preprocessor,
        item_encoder=variant,
        qformer=qformer if variant in ("ilm", "ilm_rand") else None,
        item_embeddings=None if variant == "none" else item_table,
        user_embeddings=None if variant == "none" else user_table,
        num_mlp_tokens=config.num_mlp_tokens,
        user_vectors=config.user_vectors,
        fold_in_regularization=config.cf_regularization,
        fold_in_alpha=config.cf_alpha,
        item_token_ids=item_token_ids,
    )
    if config.phase2_train_llm:
        model.backbone.llm.trainable = True
    return model


def phase2_trains(variant, config):
    """Whether `variant` has anything to train in phase 2: every variant
    but OpenP5-R (`none`, the frozen decoder alone), and that one too when
    the decoder trains (`config.phase2_train_llm`)."""
    return variant != "none" or config.phase2_train_llm


def recommendation_metrics(model, split, subset="test", task="sequential",
                           template=0, config=None, ks=(5, 10), max_users=None):
    """HR@k / NDCG@k of `model.recommend()` on one task and template.

    Args:
        model: an `ItemLanguageModel` with a preprocessor.
        split: the `LeaveLastOutSplit`.
        subset: `"valid"` or `"test"`.
        task: `"sequential"` or `"straightforward"`.
        template: a seen template number or `"unseen"`.
        config: `PipelineConfig` (beam width, history exclusion).
        ks: cutoffs (all <= `config.num_beams`).
        max_users: evaluate a fixed sample of this many users
            (`evaluation_rows`; None: all).

    Returns:
        dict `{"HR@5": ..., "NDCG@5": ..., ..., "num_users": n}`.
    """
    config = config or PipelineConfig()
    pairs = ild.evaluation_prompts(split, subset, task, template)
    rows = evaluation_rows(split, subset, max_users)
    known_items = split.known_items(subset)
    known = [known_items[r] for r in rows]
    pairs = [pairs[r] for r in rows]
    prompts = [p for p, _ in pairs]
    targets = [t[len("item_"):] for _, t in pairs]
    exclude = None
    if config.exclude_history:
        index = split.data.item_index
        exclude = [[str(index[i]) for i in h] for h in known]
    k = max(ks)
    items, _ = model.recommend(
        prompts, k=k, exclude=exclude, num_beams=max(config.num_beams, k)
    )
    ranked = [list(row) for row in np.asarray(items)]
    out = {}
    for cut in ks:
        out[f"HR@{cut}"] = hit_rate_at_k(ranked, targets, cut)
        out[f"NDCG@{cut}"] = ndcg_at_k(ranked, targets, cut)
    out["num_users"] = len(prompts)
    return out


class BestValidationCheckpoint(keras.callbacks.Callback):
    """Keeps the weights with the best validation NDCG@10 (paper §4.4).

    After each epoch, scores `model` with `evaluate(model) -> dict` and, when
    `metric` improved, saves the weights to `path` (and the scores to
    `path + ".json"`, so a resumed run keeps comparing against them), each
    file written atomically, the weights first. At the end of training the
    best weights are restored.

    A resumed fit (`resumable_fit`) may score an epoch again that the
    `.json` already holds (a kill after the scores were written but before
    the training state was): the epoch's new score replaces it.

    Args:
        evaluate: callable `model -> dict of metrics`.
        path: a `.weights.h5` path.
        metric: the key to maximise.
        delete: what to delete when `path` or its `.json` cannot be read
            (named in the error; default: both).
    """

    def __init__(self, evaluate, path, metric="NDCG@10", delete=None):
        super().__init__()
        self.evaluate = evaluate
        self.path = path
        self.metric = metric
        self.best = -np.inf
        self.scores = []
        self.delete = dict(
            delete=delete or [path, path + ".json"],
            consequence="the fit that picks the best epoch then starts again",
        )
        if os.path.exists(path + ".json"):
            saved = files.read_json(path + ".json", **self.delete)
            self.best = saved["best"]
            self.scores = saved["scores"]

    def on_train_begin(self, logs=None):
        # Fail now, not after training, if the kept weights are unreadable
        # (or gone: the run would silently end with the last epoch's).
        if self.scores and np.isfinite(self.best):
            if not os.path.exists(self.path):
                raise files.CorruptFileError(
                    self.path, f"{self.path}.json records its epoch",
                    problem="it is missing", **self.delete)
            files.check_h5(self.path, **self.delete)

    def on_epoch_end(self, epoch, logs=None):
        scores = self.evaluate(self.model)
        value = float(scores[self.metric])
        self.scores = [s for s in self.scores if s["epoch"] < epoch]
        self.best = max([float(s[self.metric]) for s in self.scores],
                        default=-np.inf)
        self.scores.append({"epoch": int(epoch), **scores})
        if logs is not None:
            logs[f"val_{self.metric}"] = value
        if value > self.best:
            self.best = value
            files.save_weights(self.model, self.path)
        files.write_json(self.path + ".json",
                         {"best": self.best, "scores": self.scores})

    def on_train_end(self, logs=None):
        if os.path.exists(self.path):
            files.load_weights(self.model, self.path, **self.delete)


def train_phase2(model, split, config, callbacks=None, checkpoint_path=None,
                 backup=None, checkpoint_delete=None):
    """One `fit` of phase 2 (encoder + adaptor; the LLM too with
    `config.phase2_train_llm`, else it stays frozen).

    Batches are tokenized by the model's own preprocessor
    (`PromptResponseBatches`, new templates every epoch), so the fit runs
    on preprocessed inputs (`keras.Model.fit`, bypassing keras-hub's
    preprocessing map); `build_phase2`'s preprocessor keeps the labels at
    response positions, so logits are computed there only. With `checkpoint_path`, a `BestValidationCheckpoint`
    on validation NDCG@10 (sequential task, seen template 0, the first
    `config.max_valid_users` users) picks the weights kept. With `backup`
    (a `TrainingBackup`) the fit saves its state there and a rerun resumes
    it exactly (`resumable_fit`); `checkpoint_delete` lists what the
    checkpoint's error names to delete when its files cannot be read.

    Returns:
        The Keras `History`.
    """
    callbacks = list(callbacks or [])
    if checkpoint_path is not None:
        callbacks.append(
            BestValidationCheckpoint(
                lambda m: recommendation_metrics(
                    m, split, "valid", "sequential", 0, config,
                    max_users=config.max_valid_users,
                ),
                checkpoint_path,
                delete=checkpoint_delete,
            )
        )
    return fit_pairs(
        model, split, config, batch_size=config.phase2_batch_size,
        epochs=config.phase2_epochs,
        steps_per_epoch=config.phase2_steps_per_epoch,
        learning_rate=config.phase2_learning_rate,
        warmup_steps=config.phase2_warmup_steps, callbacks=callbacks,
        backup=backup,
    )


def fit_pairs(model, split, config, *, batch_size, epochs, steps_per_epoch,
              learning_rate, warmup_steps, callbacks=None, backup=None):
    """One resumable `fit` of an `ItemLanguageModel` on `training_pairs`
    (what trains depends on the model's `trainable` flags): AdamW with a
    warmup + cosine schedule over the whole fit, batches of its own
    preprocessor (`PromptResponseBatches`, new templates every epoch).
    `train_phase2` and `pretrain_llm_with_slots` call it with their
    phase's sizes."""
    batches = PromptResponseBatches(
        model.preprocessor,
        lambda epoch: training_pairs(split, config, epoch),
        batch_size=batch_size,
        seed=config.seed,
        length_bucket=config.length_bucket,
        length_group=config.length_group,
    )
    steps = min(steps_per_epoch or len(batches),
                len(batches))  # as `batches.fit_input` counts them
    model.compile(
        optimizer=keras.optimizers.AdamW(
            warmup_cosine(learning_rate, steps * epochs, warmup_steps),
            weight_decay=0.01,
        )
    )
    return resume.resumable_fit(
        model,
        lambda start: batches.fit_input(steps_per_epoch, start),
        epochs=epochs,
        backup=backup,
        callbacks=callbacks,
        verbose=fit_verbosity(config.verbose),
        fit=functools.partial(keras.Model.fit, model),
    )


def test_metrics(model, split, config):
    """Test HR/NDCG@{5,10}, seen (template 0) and unseen, for both tasks."""
    out = {}
    for task in ("sequential", "straightforward"):
        for template in (0, "unseen"):
            key = f"{task}/{'seen' if template == 0 else 'unseen'}"
            start = time.time()
            out[key] = recommendation_metrics(
                model, split, "test", task, template, config,
                max_users=config.max_eval_users,
            )
            out[key]["seconds"] = round(time.time() - start, 1)
    return out
