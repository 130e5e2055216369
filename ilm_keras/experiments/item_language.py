"""Item-language tasks over a frozen pretrained LLM (the paper's Table 1).

The ILM paper's Table 1: with a frozen LLM, an item encoder pretrained to
align CF embeddings with language (`ilm`) describes items better than the
same encoder untrained (`ilm_rand`) and than CoLLM's MLP (`mlp`). This
module holds the pieces of that experiment on MovieLens (CF from the
ratings, text from title / year / genres); `benchmarks/item_language_table.py`
runs it and `examples/item_language.py` runs one cell.

- `split_items`: seen items (their texts are phase-1 and phase-2 targets)
  and held-out items (never a text target; only their CF vectors known).
- `item_task_examples`, `answer_subject_text`, `chat_prompt`,
  `reference_prompt`, `prior_answers`: the prompts and answers of the
  conversational tasks (`ilm_keras.data.templates`; the answers name the
  item by its title or as "This movie"), and the reference rows' prompts.
- `parse_genres`, `genre_scores`, `parse_year`, `year_within`: the exact
  metrics (no embedding model needed).
- `linear_probe`: ridge regression from the CF vector to genres and year,
  the ceiling of what any item encoder can pass on from CF alone.
- `build_variant`: the one place an `ItemLanguageModel` is constructed.
- `train_variant`, `generate_answers`, `answer_log_perplexity`,
  `score_answers`, `run_item_language_seed`: phase 2 and evaluation.
"""

import dataclasses
import re
import time

import keras
import numpy as np

from ilm_keras import data as ild
from ilm_keras.data.movielens import readable_title
from ilm_keras.experiments import pipeline as pl
from ilm_keras.experiments.configs import ITEM_LANGUAGE_RECIPES
from ilm_keras.experiments.configs import parse_overrides
from ilm_keras.metrics.perplexity import token_nll
from ilm_keras.models.item_language_model import ItemLanguageModel
from ilm_keras.models.item_language_model_backbone import ItemLanguageModelBackbone
from ilm_keras.models.prompt_response_batches import PromptResponseBatches
from ilm_keras.models.soft_token_aligner import SoftTokenAligner
from ilm_keras.models.soft_token_aligner import mean_target_mse
from ilm_keras.models.soft_token_aligner import soft_token_bag_targets
from ilm_keras.models.soft_token_aligner import soft_token_spread
from ilm_keras.models.soft_token_aligner import soft_token_targets
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.utils.determinism import seed_everything
from ilm_keras.utils.schedules import warmup_cosine

VARIANTS = ("mlp", "ilm_rand", "ilm")
ALIGN_TARGETS = ("genre_list", "genre_bag")
# Who the answers of the item tasks are about (`ItemLanguageConfig.answer_subject`).
ANSWER_SUBJECTS = ("title", "this_movie")
ROWS = ("text_reference", "mlp", "ilm_rand", "ilm", "floor_llm", "floor_prior")
ROW_NAMES = {
    "text_reference": "frozen LLM + title in text (upper reference)",
    "mlp": "MLP (CoLLM)",
    "ilm_rand": "ILM-rand",
    "ilm": "ILM",
    "floor_llm": "frozen LLM, nothing about the item (floor)",
    "floor_prior": "most frequent answer of seen items (prior floor)",
}

# The 18 MovieLens genres and the word stems that name them in free text
# (lower case; an answer names a genre when one of its stems starts a word).
GENRE_STEMS = {
    "Action": ("action",),
    "Adventure": ("adventur",),
    "Animation": ("animat", "cartoon"),
    "Children's": ("children", "child", "kids", "family"),
    "Comedy": ("comed", "comic", "funny"),
    "Crime": ("crime", "criminal", "gangster"),
    "Documentary": ("documentar",),
    "Drama": ("drama",),
    "Fantasy": ("fantas",),
    "Film-Noir": ("film-noir", "film noir", "noir"),
    "Horror": ("horror",),
    "Musical": ("musical",),
    "Mystery": ("myster",),
    "Romance": ("romanc", "romantic"),
    "Sci-Fi": ("sci-fi", "science fiction", "science-fiction", "scifi"),
    "Thriller": ("thriller",),
    "War": ("war", "wartime"),
    "Western": ("western",),
}
GENRES = tuple(GENRE_STEMS)
_GENRE_PATTERNS = {
    genre: re.compile(r"(?<![a-z])(?:" + "|".join(
        re.escape(s) + (r"\b" if s in ("war", "child", "kids", "noir") else "")
        for s in stems) + ")")
    for genre, stems in GENRE_STEMS.items()
}
_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20[0-2]\d)(?!\d)")
_MENTION = re.compile(r"(?<![A-Za-z0-9_])item_([A-Za-z0-9]+)")


@dataclasses.dataclass
class ItemLanguageConfig:
    """Knobs of the item-language experiment (defaults: one seed in about
    30 minutes on a 2-core CPU shared with another job).

    Attributes:
        heldout_fraction: share of the items with title, year and genres
            held out (never a text target; only their CF vectors known).
        train_tasks: single-item conversational tasks trained in phase 2.
        eval_tasks: tasks scored (each on seen and held-out items).
        num_eval_items: test items per subset (seen / held-out), a random
            sample drawn per seed.
        phase1_losses, phase1_epochs, phase1_steps_per_epoch: phase 1
            (`QFormerPretrainer`), on the seen items' texts only.
        cf_dim, cf_regularization, cf_alpha, cf_iterations: iALS.
        qformer_layers, qformer_hidden, qformer_heads, num_query_tokens,
        num_cf_tokens: the Q-Former (N soft tokens per item).
        num_mlp_tokens: soft tokens of the MLP (CoLLM) variant.
        phase2_steps, phase2_batch_size, phase2_learning_rate,
        phase2_warmup_steps: phase 2 (one pass of `phase2_steps` batches).
        align_epochs: beyond the paper: epochs of `SoftTokenAligner`
            before phase 2, in which each variant's encoder + adaptor fit the
            LLM's input embeddings of the seen items' genre lists (0: off,
            the paper's recipe). No LLM pass; held-out items are not used.
        align_learning_rate: its Adam learning rate.
        align_validation: fraction of the seen items the alignment keeps
            back to choose its epoch (0: fit every seen item for
            `align_epochs`): it stops after `align_patience` epochs without
            a lower MSE on them and restores the best epoch's weights
            (`keras.callbacks.EarlyStopping`).
        align_patience: see `align_validation`.
        align_target: what the alignment fits (`ALIGN_TARGETS`):
            "genre_list", the embeddings of the first N tokens of the
            genre list (" Comedy, Drama"); "genre_bag", the mean of the
            item's genres' embeddings in every slot (order-free;
            `soft_token_bag_targets`).
        answer_subject: how the answers name their item (`ANSWER_SUBJECTS`):
            "title", the templates' answers ("Toy Story is Animation,
            Children's and Comedy."); "this_movie", the same answers with
            the title replaced by "This movie" (beyond the paper: a
            held-out item's title cannot be known from its CF vector, so
            the answer asks only for what can). The `title` task needs
            "title".
        max_new_tokens: the longest generated answer.
        generate_batch_size: prompts per `generate` call.
        one_shot: give the reference rows (frozen LLM, no training) one
            worked example of the answer format, from a seen item.
        llm: the frozen LLM (`ilm_keras.llm.load_causal_lm` source).
        num_general_prompts: item-free prompts of the preserved-ability
            check (at most `len(GENERAL_PROMPTS)`).
        seed: split, CF, phase 1, phase 2 and the evaluation sample.
        verbose: `fit` verbosity.
    """

    heldout_fraction: float = 0.2
    train_tasks: tuple = ("describe", "genres", "year")
    eval_tasks: tuple = ("describe", "genres", "year")
    num_eval_items: int = 32
    phase1_losses: str = "it"
    phase1_epochs: int = 4
    phase1_steps_per_epoch: int = None
    cf_dim: int = 64
    cf_regularization: float = 50.0
    cf_alpha: float = 10.0
    cf_iterations: int = 15
    qformer_layers: int = 2
    qformer_hidden: int = 64
    qformer_heads: int = 4
    num_query_tokens: int = 4
    num_cf_tokens: int = 4
    num_mlp_tokens: int = 4
    phase2_steps: int = 100
    phase2_batch_size: int = 8
    phase2_learning_rate: float = 1e-3
    phase2_warmup_steps: int = 10
    align_epochs: int = 0
    align_learning_rate: float = 1e-3
    align_validation: float = 0.0
    align_patience: int = 10
    align_target: str = "genre_list"
    answer_subject: str = "title"
    max_new_tokens: int = 24
    generate_batch_size: int = 16
    one_shot: bool = True
    llm: str = "smollm2"
    num_general_prompts: int = 20
    seed: int = 0
    verbose: int = 2

    def __post_init__(self):
        if self.align_target not in ALIGN_TARGETS:
            raise ValueError(f"align_target must be one of {ALIGN_TARGETS}, "
                             f"got {self.align_target!r}.")
        if self.answer_subject not in ANSWER_SUBJECTS:
            raise ValueError(f"answer_subject must be one of {ANSWER_SUBJECTS}, "
                             f"got {self.answer_subject!r}.")
        tasks = set(self.train_tasks) | set(self.eval_tasks)
        if self.answer_subject != "title" and "title" in tasks:
            raise ValueError("The `title` task's answer is the title: it needs "
                             f"answer_subject='title', got {self.answer_subject!r}.")

    def pipeline_config(self):
        """The `PipelineConfig` of the shared steps (CF, phase 1, Q-Former):
        every field both configs have, taken from this one."""
        shared = {f.name for f in dataclasses.fields(pl.PipelineConfig)}
        return pl.PipelineConfig(**{
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name in shared})

    def to_dict(self):
        return dataclasses.asdict(self)


# Fields that change only what is trained, never the reference rows (the
# frozen LLM's answers given the title or nothing, and the constant answer):
# those rows depend on the split, the test prompts and the decoding alone.
# The soft-token counts are not here: they set the sequence length, which
# `reusable_reference_rows` compares directly.
TRAINING_ONLY_FIELDS = frozenset({
    "phase1_losses", "phase1_epochs", "phase1_steps_per_epoch", "cf_dim",
    "cf_regularization", "cf_alpha", "cf_iterations", "qformer_layers",
    "qformer_hidden", "qformer_heads", "phase2_steps", "phase2_batch_size",
    "phase2_learning_rate", "phase2_warmup_steps", "align_epochs",
    "align_learning_rate", "align_validation", "align_patience",
    "align_target", "num_general_prompts", "verbose"})
REFERENCE_ROWS = ("text_reference", "floor_llm", "floor_prior")
# How `generate_answers` decodes, stored with every result: answers of an
# earlier scheme are never reused. 1 (unnamed in older results): a batch
# decoded to its longest prompt + `max_new_tokens`, so shorter prompts got
# more tokens; 2: exactly `max_new_tokens` per answer.
GENERATION = 2


def reusable_reference_rows(previous, config, sequence_length, metrics=None):
    """The reference rows of an earlier run of the same seed, if they are
    exactly the rows this run would compute.

    They are when every config field but `TRAINING_ONLY_FIELDS` is equal and
    the sequence length and the decoding scheme (`GENERATION`) are too
    (greedy decoding of the same prompts by the same frozen LLM).

    Args:
        previous: an earlier `run_item_language_seed` result (its JSON).
        config: this run's `ItemLanguageConfig`.
        sequence_length: this run's sequence length.
        metrics: optional, a row of this run (`{subset: {task: {metric:
            value}}}`): the earlier text-reference row must have the same
            subsets, tasks and metrics (an older run may lack a metric).

    Returns:
        `(rows, examples, None)` with the rows of `REFERENCE_ROWS` and their
        examples, or `(None, None, reason)` naming the first difference.
    """
    mine = config.to_dict()
    theirs = previous.get("config", {})
    for field in sorted(mine):
        if field in TRAINING_ONLY_FIELDS:
            continue
        a, b = mine[field], theirs.get(field)
        if isinstance(a, tuple):
            a, b = list(a), list(b) if isinstance(b, (list, tuple)) else b
        if a != b:
            return None, None, f"config field {field!r}: {b!r} there, {a!r} here"
    if previous.get("generation", 1) != GENERATION:
        return None, None, (f"answers decoded by scheme {previous.get('generation', 1)} "
                            f"there, {GENERATION} here (`GENERATION`)")
    if previous.get("sequence_length") != sequence_length:
        return None, None, (f"sequence length {previous.get('sequence_length')} "
                            f"there, {sequence_length} here")
    missing = [r for r in REFERENCE_ROWS if r not in previous.get("rows", {})]
    if missing:
        return None, None, f"no rows {missing} there"
    if metrics is not None:
        def keys(row):
            return {(subset, task, metric) for subset, tasks in row.items()
                    for task, values in tasks.items() for metric in values}
        if keys(previous["rows"]["text_reference"]) != keys(metrics):
            return None, None, "other subsets, tasks or metrics there"
    return ({r: previous["rows"][r] for r in REFERENCE_ROWS},
            {r: previous.get("examples", {}).get(r, {}) for r in REFERENCE_ROWS},
            None)


SMOKE = dict(num_eval_items=8, phase1_epochs=1, phase1_steps_per_epoch=20,
             phase2_steps=6, phase2_warmup_steps=2, max_new_tokens=12,
             num_general_prompts=4, eval_tasks=("genres", "year"))


def replace_from_assignments(config, assignments):
    """`config` with `["field=value", ...]` applied, each value converted to
    the field's type (tuples: comma-separated; `none`: None), as
    `configs.parse_overrides` reads them.

    Example:
    ```python
    replace_from_assignments(ItemLanguageConfig(), ["phase2_steps=300"])
    ```
    """
    return dataclasses.replace(
        config, **parse_overrides(assignments, type(config))
    )


def config_from_flags(flag_values=None, **changes):
    """The `ItemLanguageConfig` that `--recipe` and `--set` name
    (`configs.define_item_language_flags`), with `changes` (a script's own
    settings) applied over the recipe and `--set` over both.

    Example:
    ```python
    config = config_from_flags(seed=1)  # after absl parsed the flags
    ```
    """
    from absl import flags

    values = flags.FLAGS if flag_values is None else flag_values
    config = ItemLanguageConfig(**{**ITEM_LANGUAGE_RECIPES[values.recipe], **changes})
    return replace_from_assignments(config, values.set)


# ----------------------------------------------------------------------
# Items, prompts and answers.
# ----------------------------------------------------------------------
def split_items(data, heldout_fraction=0.2, seed=0):
    """Seen and held-out items among those with a title, year and genres.

    Args:
        data: `InteractionData` with `item_meta`.
        heldout_fraction: the held-out share.
        seed: the draw.

    Returns:
        `(seen, held_out)`: sorted int64 arrays of item indices, disjoint.
        Items without full metadata are in neither (no text target exists).

    Example:
    ```python
    seen, held_out = split_items(data, 0.2, seed=0)
    ```
    """
    if data.item_meta is None:
        raise ValueError(f"{data.name}: no item_meta (title, year, genres).")
    eligible = np.array([
        i for i, m in enumerate(data.item_meta)
        if m and m.get("genres") and m.get("year") is not None
    ], dtype=np.int64)
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1); got {heldout_fraction}.")
    rng = np.random.default_rng([seed, 19])
    shuffled = rng.permutation(eligible)
    count = int(round(heldout_fraction * len(eligible)))
    return np.sort(shuffled[count:]), np.sort(shuffled[:count])


def mentioned_items(data, texts):
    """Item indices mentioned (`item_<index>`) in any of `texts`."""
    row = {str(k): i for i, k in enumerate(data.item_index)}
    out = set()
    for text in texts:
        out.update(row[m] for m in _MENTION.findall(text) if m in row)
    return out


def assert_never_targets(data, held_out, phase1_items=(), phase2_pairs=()):
    """Raises if a held-out item is a text target of phase 1 (an item-text
    pair) or of phase 2 (mentioned in a training prompt, whose answer is its
    text); the guarantee behind every held-out number."""
    held_out = set(int(i) for i in held_out)
    leaked = held_out & set(int(i) for i in phase1_items)
    if leaked:
        raise AssertionError(f"Held-out items {sorted(leaked)[:5]} are phase-1 text targets.")
    leaked = held_out & mentioned_items(data, [p for p, _ in phase2_pairs])
    if leaked:
        raise AssertionError(f"Held-out items {sorted(leaked)[:5]} are phase-2 text targets.")


def chat_prompt(question, examples=()):
    """A user turn in SmolLM2's chat format (ChatML), preceded by worked
    `(question, answer)` examples, ending where the assistant answers."""
    turns = ""
    for q, a in examples:
        turns += (f"<|im_start|>user\n{q}<|im_end|>\n"
                  f"<|im_start|>assistant\n{a}<|im_end|>\n")
    return turns + f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def item_task_examples(data, items, task, seed=0, subject="title"):
    """`(item, question, answer)` of one single-item task for `items`.

    The question mentions the item as `item_<index>` (one of the task's
    three phrasings, drawn with `seed`); the answer is the template text of
    `ilm_keras.data.templates` (e.g. "Toy Story is Animation, Children's
    and Comedy."), with the title replaced by "This movie" when `subject`
    is "this_movie" (`ANSWER_SUBJECTS`).

    Example:
    ```python
    item_task_examples(data, [0], "genres")
    # [(0, "Which genres does item_1001 belong to?", "Toy Story is ...")]
    ```
    """
    items = [int(i) for i in items]
    pairs = ild.conversation_prompts(data, tasks=(task,), items=items, seed=seed)
    if len(pairs) != len(items):
        raise ValueError(f"{task}: {len(items)} items but {len(pairs)} answers "
                         "(an item lacks the metadata the task needs).")
    if subject == "title":
        return [(i, q, a) for i, (q, a) in zip(items, pairs)]
    if subject != "this_movie" or task == "title":
        raise ValueError(f"subject must be one of {ANSWER_SUBJECTS} ('title' for "
                         f"the title task); got {subject!r} for {task!r}.")
    out = []
    for i, (q, a) in zip(items, pairs):
        title = answer_subject_text(data, i, subject="title")
        if not a.startswith(title):
            raise ValueError(f"{task} answer {a!r} does not start with the title {title!r}.")
        out.append((i, q, answer_subject_text(data, i, subject) + a[len(title):]))
    return out


def answer_subject_text(data, item, subject="title"):
    """How an answer names `item`: its readable title, or "This movie"."""
    if subject == "this_movie":
        return "This movie"
    return readable_title(data.item_meta[item]["title"])


def reference_prompt(question, data, item, mode):
    """The question of a reference row: the mention replaced by the item's
    title in plain text (`"title"`) or by "this movie" (`"nothing"`)."""
    if mode == "title":
        name = readable_title(data.item_meta[item]["title"])
    elif mode == "nothing":
        name = "this movie"
    else:
        raise ValueError(f"mode must be 'title' or 'nothing'; got {mode!r}.")
    return _MENTION.sub(name, question)


def prior_answers(data, seen):
    """The most frequent answer of the seen items per task, with the title
    unknown: `{"genres": "This movie is Drama.", ...}` (the prior floor)."""
    genres = [g for i in seen for g in data.item_meta[i]["genres"]]
    top = max(set(genres), key=genres.count)
    years = [data.item_meta[i]["year"] for i in seen]
    year = max(set(years), key=years.count)
    return {
        "genres": f"This movie is {top}.",
        "year": f"This movie was released in {year}.",
        "describe": f"This movie is a movie from {year} in the {top} genre.",
        "title": "This movie.",
    }


# ----------------------------------------------------------------------
# Exact metrics.
# ----------------------------------------------------------------------
def parse_genres(text):
    """The MovieLens genres an answer names.

    Only the part after the first " is " is read when there is one (the
    answer format puts the title before it, and a title may hold a genre
    word); genre words are matched by stem ("animated" -> Animation,
    "science fiction" -> Sci-Fi, "romantic" -> Romance).

    Example:
    ```python
    parse_genres("Toy Story is Animation, Children's and Comedy.")
    # frozenset({"Animation", "Children's", "Comedy"})
    ```
    """
    text = (text or "").lower()
    if " is " in text:
        text = text.split(" is ", 1)[1]
    return frozenset(g for g, p in _GENRE_PATTERNS.items() if p.search(text))


def genre_scores(answer, genres):
    """Precision, recall and F1 of the genres `answer` names against the
    true `genres` (an answer naming none scores 0, 0, 0).

    Returns:
        dict `precision`, `recall`, `f1`, `exact` (1.0 if the sets match).

    Example:
    ```python
    genre_scores("X is Comedy and Drama.", ["Comedy"])
    # {"precision": 0.5, "recall": 1.0, "f1": 0.667, "exact": 0.0}
    ```
    """
    predicted, true = parse_genres(answer), frozenset(genres)
    if not true:
        raise ValueError("An item without genres cannot be scored.")
    hits = len(predicted & true)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(true)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "exact": float(predicted == true)}


def parse_year(text):
    """The last year (1800-2029) an answer names, or None."""
    found = _YEAR.findall(text or "")
    return int(found[-1]) if found else None


def year_within(answer, year, tolerance=2):
    """1.0 if the year `answer` names is within `tolerance` of `year`."""
    predicted = parse_year(answer)
    return float(predicted is not None and abs(predicted - int(year)) <= tolerance)


# ----------------------------------------------------------------------
# Linear probe: what the CF vectors hold.
# ----------------------------------------------------------------------
def genre_matrix(genre_lists):
    """Multi-hot `[n, len(GENRES)]` float32 matrix of genre lists."""
    out = np.zeros((len(genre_lists), len(GENRES)), np.float32)
    for r, genres in enumerate(genre_lists):
        for g in genres:
            out[r, GENRES.index(g)] = 1.0
    return out


def linear_probe(train_vectors, train_genres, train_years, test_vectors,
                 test_genres, test_years, regularization=1.0):
    """Ridge regression from CF vectors to genres and year, trained on one
    item set and scored on another with the exact metrics.

    A genre is predicted when its score is >= 0.5 (the top-scoring genre
    when none is); the year is the rounded regression output. The scores
    bound what an item encoder reading only these vectors can pass on to a
    linear read-out (a nonlinear encoder may do somewhat better).

    Args:
        train_vectors, test_vectors: float arrays `[n, d]`.
        train_genres, test_genres: lists of genre lists.
        train_years, test_years: int arrays `[n]`.
        regularization: the ridge penalty.

    Returns:
        dict: `genre_precision`, `genre_recall`, `genre_f1`, `genres_exact`,
        `year_within_2`, `genre_auc` / `genre_top1` (the genre scores'
        ranking, `genre_ranking_scores`), `genre_item_auc`
        (`genre_item_auc`), `predictions` (genre lists of the test items).

    Example:
    ```python
    probe = linear_probe(item_table[seen], genres_seen, years_seen,
                         item_table[held], genres_held, years_held)
    probe["genre_f1"]
    ```
    """
    def design(v):
        v = np.asarray(v, np.float64)
        return np.concatenate([v, np.ones((len(v), 1))], axis=1)

    x, x_test = design(train_vectors), design(test_vectors)
    targets = np.concatenate([
        genre_matrix(train_genres),
        np.asarray(train_years, np.float64)[:, None]], axis=1)
    penalty = regularization * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not penalised
    weights = np.linalg.solve(x.T @ x + penalty, x.T @ targets)
    scores = x_test @ weights
    predictions = []
    for row in scores[:, :len(GENRES)]:
        picked = [GENRES[j] for j in np.flatnonzero(row >= 0.5)]
        predictions.append(picked or [GENRES[int(np.argmax(row))]])
    per_item = [genre_scores(f"x is {', '.join(p)}.", g)
                for p, g in zip(predictions, test_genres)]
    years = np.rint(scores[:, -1])
    ranking = genre_ranking_scores(scores[:, :len(GENRES)], test_genres)
    return {
        "genre_auc": float(np.mean(ranking["genre_auc"])),
        "genre_top1": float(np.mean(ranking["genre_top1"])),
        "genre_item_auc": genre_item_auc(scores[:, :len(GENRES)], test_genres)[0],
        "genre_precision": float(np.mean([s["precision"] for s in per_item])),
        "genre_recall": float(np.mean([s["recall"] for s in per_item])),
        "genre_f1": float(np.mean([s["f1"] for s in per_item])),
        "genres_exact": float(np.mean([s["exact"] for s in per_item])),
        "year_within_2": float(np.mean(np.abs(years - np.asarray(test_years)) <= 2)),
        "predictions": predictions,
    }


def feature_probe(features, data, seen, held_out, penalties=(0.1, 1, 10, 100, 1e3, 1e4),
                  validation=0.2, seed=0):
    """`linear_probe` from any per-item features (e.g. an encoder's soft
    tokens, flattened) to genres and year: features standardised with the
    seen items' statistics, the ridge penalty chosen by genre item AUC on a
    seeded `validation` share of the seen items, then refitted on all seen
    items and scored on `held_out`.

    Args:
        features: `[num_items, ...]`, indexed by item.
        data: `InteractionData` with `item_meta` (genres, year).
        seen, held_out: item indices (fit on the first, score the second).
        penalties: ridge penalties to choose from.
        validation: share of `seen` the choice is made on.
        seed: the validation draw.

    Returns:
        `linear_probe`'s dict without `predictions`, plus `penalty`.
    """
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    x = (x - x[seen].mean(axis=0)) / (x[seen].std(axis=0) + 1e-6)
    genres = lambda ids: [data.item_meta[int(i)]["genres"] for i in ids]
    years = lambda ids: [data.item_meta[int(i)]["year"] for i in ids]
    order = np.random.default_rng([seed, 40]).permutation(np.asarray(seen))
    val, fit = order[:max(1, int(len(order) * validation))], order[int(len(order) * validation):]
    penalty = max(penalties, key=lambda r: linear_probe(
        x[fit], genres(fit), years(fit), x[val], genres(val), years(val),
        r)["genre_item_auc"])
    probe = linear_probe(x[seen], genres(seen), years(seen), x[held_out],
                         genres(held_out), years(held_out), penalty)
    probe.pop("predictions")
    probe["penalty"] = float(penalty)
    return probe


# ----------------------------------------------------------------------
# Models: construction, phase 2, generation, perplexity.
# ----------------------------------------------------------------------
def build_variant(variant, backbone, tokenizer, data, item_table, config,
                  sequence_length, qformer=None):
    """The `ItemLanguageModel` of `variant` over the frozen `backbone`; the
    one place this benchmark constructs one.

    Args:
        variant: `"mlp"`, `"ilm_rand"` or `"ilm"`.
        backbone, tokenizer: the frozen LLM (`load_causal_lm`).
        data: `InteractionData` with `item_index` (prompt names).
        item_table: float `[num_items, cf_dim]`, every item's CF vector
            (held-out items included: their vectors are known).
        config: `ItemLanguageConfig`.
        sequence_length: the preprocessor's padded length.
        qformer: the phase-1 `QFormer` (`"ilm"`; its config for
            `"ilm_rand"` when given).

    Returns:
        An `ItemLanguageModel` (preprocessor with `loss_positions=True`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}.")
    if variant == "ilm" and qformer is None:
        raise ValueError("variant 'ilm' needs the phase-1 qformer.")
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer,
        item_ids=[str(i) for i in data.item_index],
        sequence_length=sequence_length,
        max_mentions=2,
        add_start_token=tokenizer.start_token_id is not None,
        loss_positions=True,
    )
    if variant == "ilm_rand" and qformer is None:
        qformer = pl.qformer_config(item_table, config.pipeline_config())
    ilm_backbone = ItemLanguageModelBackbone(
        llm=backbone,
        item_encoder=variant,
        qformer=qformer if variant != "mlp" else None,
        item_embeddings=np.asarray(item_table, np.float32),
        num_mlp_tokens=config.num_mlp_tokens,
    )
    return ItemLanguageModel(backbone=ilm_backbone, preprocessor=preprocessor)


class StepLosses(keras.callbacks.Callback):
    """Keeps each training step's own loss in `self.losses`.

    `fit` reports the running mean of the epoch's losses after each batch;
    step k's own loss is `k * mean_k - (k - 1) * mean_(k-1)`.
    """

    def __init__(self):
        super().__init__()
        self.losses = []
        self._mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._mean = 0.0
        self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        mean = float((logs or {})["loss"])
        self._seen += 1
        self.losses.append(self._seen * mean - (self._seen - 1) * self._mean)
        self._mean = mean


def genre_list_text(data, item):
    """" Comedy, Drama": the text whose LLM embeddings `align_soft_tokens`
    fits an item's soft tokens to."""
    return " " + ", ".join(data.item_meta[int(item)]["genres"])


def alignment_targets(model, tokenizer, data, items, target="genre_list"):
    """What `align_soft_tokens` fits `items`' soft tokens to: the LLM's
    input embeddings of their genre lists (`target="genre_list"`,
    `soft_token_targets`) or the mean of their genres' embeddings
    (`"genre_bag"`, `soft_token_bag_targets`); `[len(items), N, dim]`."""
    num = model.backbone.item_soft_tokens.num_soft_tokens
    if target == "genre_list":
        return soft_token_targets(model.backbone, tokenizer,
                                  [genre_list_text(data, i) for i in items], num)
    if target == "genre_bag":
        return soft_token_bag_targets(
            model.backbone, tokenizer,
            [[" " + g for g in data.item_meta[int(i)]["genres"]] for i in items], num)
    raise ValueError(f"Unknown alignment target {target!r}; expected one of "
                     f"{ALIGN_TARGETS}.")


def describe_align_target(target):
    """One phrase for reports: what `align_target` fits the soft tokens to."""
    if target == "genre_bag":
        return ("the mean of the LLM's input embeddings of the item's genres, "
                "in every soft-token slot (`genre_bag`)")
    return ("the LLM's input embeddings of the first soft-token-count tokens "
            "of the item's genre list (`genre_list`)")


def align_soft_tokens(model, tokenizer, data, items, config, held_out=()):
    """Beyond the paper: fits `model`'s item encoder + adaptor so that each
    of `items`' soft tokens land on the LLM's input embeddings of its genre
    list (" Comedy, Drama"; `SoftTokenAligner`; or another
    `config.align_target`, `alignment_targets`), for at most
    `config.align_epochs` epochs of batch 64; with `config.align_validation`
    a seeded share of `items` is kept back to choose the epoch.

    Returns `(fit, seconds)`: `fit["loss"]` the per-epoch training MSE,
    `fit["mean_mse"]` the MSE of the per-slot mean target (the floor the
    loss is read against); with validation, `fit["val_loss"]` per epoch,
    `fit["best_epoch"]` (1-based, the weights kept) and `fit["val_mean_mse"]`
    (the training items' per-slot mean on the validation items) and
    `fit["validation_items"]`; for
    `held_out` items (never fitted; their genre lists are used only to
    score) `fit["held_out_mse"]`, the encoder's MSE on them, and
    `fit["held_out_mean_mse"]`, the training items' per-slot mean's."""
    def targets_of(ids):
        return alignment_targets(model, tokenizer, data, ids, config.align_target)

    aligner = SoftTokenAligner(model.backbone.item_soft_tokens)
    items = np.asarray(items, np.int32)
    validation, callbacks = None, []
    if config.align_validation:
        order = np.random.default_rng([config.seed, 30]).permutation(len(items))
        num_val = max(1, int(round(len(items) * config.align_validation)))
        if num_val >= len(items):
            raise ValueError(f"align_validation={config.align_validation} leaves "
                             f"no item of {len(items)} to fit.")
        val_items = np.sort(items[order[:num_val]])
        items = np.sort(items[order[num_val:]])
        validation = (val_items, targets_of(val_items))
        callbacks = [keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=int(config.align_patience),
            restore_best_weights=True)]
    targets = targets_of(items)
    aligner.compile(optimizer=keras.optimizers.Adam(config.align_learning_rate),
                    loss="mse")
    start = time.time()
    history = aligner.fit(items, targets, batch_size=64,
                          epochs=int(config.align_epochs), shuffle=True, verbose=0,
                          validation_data=validation, callbacks=callbacks)
    seconds = time.time() - start
    fit = {"loss": [float(x) for x in history.history["loss"]],
           "mean_mse": mean_target_mse(targets)}
    if validation is not None:
        fit["val_loss"] = [float(x) for x in history.history["val_loss"]]
        fit["best_epoch"] = int(np.argmin(fit["val_loss"])) + 1
        fit["val_mean_mse"] = mean_target_mse(validation[1], targets.mean(axis=0))
        fit["validation_items"] = [int(i) for i in validation[0]]
    if len(held_out):
        held_targets = targets_of(held_out)
        predicted = item_soft_tokens(model, held_out)
        fit["held_out_mse"] = float(np.mean((predicted - held_targets) ** 2))
        fit["held_out_mean_mse"] = mean_target_mse(held_targets, targets.mean(axis=0))
    return fit, seconds


def item_soft_tokens(model, items, batch_size=256):
    """`model`'s soft tokens for `items`: `[len(items), N, hidden_dim]`."""
    aligner = SoftTokenAligner(model.backbone.item_soft_tokens)
    return np.asarray(keras.ops.convert_to_numpy(aligner.predict(
        np.asarray(items, np.int32), batch_size=batch_size, verbose=0)))


def train_variant(model, pairs, config, seed=0):
    """Phase 2: `config.phase2_steps` AdamW steps (warmup + cosine) on the
    shuffled `(prompt, answer)` pairs; only the item encoder and adaptor
    train. Returns `(history, seconds)`; `history.history["step_loss"]`
    holds every step's own training loss."""
    batches = PromptResponseBatches(
        model.preprocessor, lambda epoch: pairs,
        batch_size=config.phase2_batch_size, seed=seed, length_bucket=16,
        length_group=20)
    steps = int(config.phase2_steps)
    model.compile(optimizer=keras.optimizers.AdamW(
        warmup_cosine(config.phase2_learning_rate, steps,
                      config.phase2_warmup_steps), weight_decay=0.01))
    dataset, _ = batches.fit_input(None, 0)
    losses = StepLosses()
    start = time.time()
    # `PromptResponseBatches` shuffles with the seed; fit's own shuffle
    # does not apply to a dataset (it only warned).
    history = keras.Model.fit(model, dataset, steps_per_epoch=steps, epochs=1,
                              shuffle=False, verbose=config.verbose,
                              callbacks=[losses])
    history.history["step_loss"] = losses.losses
    return history, time.time() - start


def _round_up(n, multiple=16):
    return -(-int(n) // multiple) * multiple


def _stop_token_ids(tokenizer):
    """The end tokens `CausalLM.generate(stop_token_ids="auto")` stops on."""
    stop = [tokenizer.end_token_id]
    if getattr(tokenizer, "end_token2_id", None) is not None:
        stop.append(tokenizer.end_token2_id)
    return stop


def generate_answers(model, prompts, max_new_tokens=24, batch_size=16):
    """Greedy answers of `model` to `prompts`, without the prompt: at most
    `max_new_tokens` new tokens each (the end token included), whatever the
    other prompts of its batch.

    Prompts go in fixed-size batches (the last one padded with repeats) of
    similar length, with `max_length` rounded up to 16, to bound the number
    of compiled shapes; a batch's shorter prompts may decode further, and
    their tokens past their own budget are dropped, so every answer has the
    same budget. `model` decodes with the sampler it was compiled with
    (compile it once, e.g. `model.compile(sampler="greedy")`: compiling
    again discards the compiled `generate`).

    Returns:
        A list of strings, one per prompt.
    """
    preprocessor = model.preprocessor
    stop = _stop_token_ids(preprocessor.tokenizer)
    generate = model.make_generate_function()
    prompts = list(prompts)
    full = preprocessor.sequence_length
    lengths = np.asarray(preprocessor.generate_preprocess(
        prompts, sequence_length=full)["padding_mask"]).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    out = [None] * len(prompts)
    for start in range(0, len(prompts), batch_size):
        rows = list(order[start:start + batch_size])
        batch = [prompts[r] for r in rows]
        batch += [batch[-1]] * (batch_size - len(batch))
        max_length = min(_round_up(max(lengths[r] for r in rows) + max_new_tokens), full)
        x = preprocessor.generate_preprocess(batch, sequence_length=max_length)
        y = generate(x, stop_token_ids=stop)
        mask = np.asarray(keras.ops.convert_to_numpy(y["padding_mask"])).astype(bool)
        own = np.asarray([lengths[r] for r in rows] + [lengths[rows[-1]]] *
                         (batch_size - len(rows)))[:, None]
        position = np.arange(mask.shape[1])[None, :]
        new = mask & (position >= own) & (position < own + max_new_tokens)
        texts = preprocessor.generate_postprocess(
            {"token_ids": y["token_ids"], "padding_mask": new})
        for r, text in zip(rows, texts):
            out[r] = text.strip()
    return out


def _answer_token_nll(model, pairs, batch_size):
    """Per batch of `(prompt, answer)` pairs: `(per_token_nll, weight,
    real)`, `[B, R]` arrays over the preprocessor's response positions
    (`weight` 1 on answer tokens, the end token included) and how many
    leading rows are real (the last batch is padded with repeats)."""
    preprocessor = model.preprocessor
    pairs = list(pairs)
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        real = len(batch)
        batch += [batch[-1]] * (batch_size - real)
        x, y, weight = preprocessor({"prompts": [p for p, _ in batch],
                                     "responses": [a for _, a in batch]})
        logits = model.predict_on_batch(x)
        weight = np.asarray(weight, np.float64)
        labels = np.where(weight > 0, np.asarray(y), 0)
        per_token = np.asarray(keras.ops.convert_to_numpy(token_nll(logits, labels)))
        yield per_token, weight, real


def answer_log_perplexity(model, pairs, batch_size=16):
    """Mean negative log-likelihood per answer token (nats; the end token
    included) of each `(prompt, answer)` pair under `model`.

    Returns:
        `(per_pair_means, per_pair_token_counts)`: float arrays.
    """
    nll, counts = [], []
    for per_token, weight, real in _answer_token_nll(model, pairs, batch_size):
        totals = (per_token * weight).sum(axis=1)
        count = weight.sum(axis=1)
        nll.extend((totals / count)[:real])
        counts.extend(count[:real])
    return np.asarray(nll), np.asarray(counts)


def answer_log_likelihood(model, pairs, batch_size=16):
    """Total log-likelihood (nats) of each `(prompt, answer)` pair's answer
    tokens under `model`, the end token left out: the probability that the
    answer *starts* with this text, so answers that go on ("... is Comedy
    and Drama.") are not penalised for going on.

    Returns:
        float array `[len(pairs)]` (<= 0).
    """
    if not getattr(model.preprocessor, "add_end_token", False):
        raise ValueError("answer_log_likelihood expects a preprocessor with "
                         "`add_end_token=True` (it drops that token).")
    out = []
    for per_token, weight, real in _answer_token_nll(model, pairs, batch_size):
        weight = weight.copy()
        last = weight.shape[1] - 1 - np.argmax(weight[:, ::-1] > 0, axis=1)
        weight[np.arange(len(weight)), last] = 0.0  # the end token
        out.extend(-(per_token * weight).sum(axis=1)[:real])
    return np.asarray(out)


def genre_log_likelihoods(model, prompts, titles, batch_size=16):
    """Scores of the 18 genres for each prompt: the log-likelihood of the
    answer "<title> is <genre>" (the `genres` task's answer format, the
    true title given as the answer's start, the genre its first word).

    `titles` are how each answer names its item (`answer_subject_text`: the
    true title, or "This movie"). The title tokens are the same for every
    candidate, so the ranking is
    that of the genre's own log-probability after "<title> is ". The title
    is given to every row alike (the floor row included), so a row's gain
    over the floor is what its prompt adds.

    Returns:
        float array `[len(prompts), len(GENRES)]`.
    """
    pairs = [(p, f"{t} is {g}") for p, t in zip(prompts, titles) for g in GENRES]
    scores = answer_log_likelihood(model, pairs, batch_size)
    return scores.reshape(len(prompts), len(GENRES))


def _scores_and_truth(scores, genre_lists):
    """`scores` as float64 `[n, 18]` (checked: shape, finite) and the
    multi-hot truth of `genre_lists` as bool."""
    scores = np.asarray(scores, np.float64)
    truth = genre_matrix(genre_lists).astype(bool)
    if scores.shape != truth.shape:
        raise ValueError(f"scores must be [n, {len(GENRES)}]; got {scores.shape}.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("Genre scores hold NaN or infinite values.")
    return scores, truth


def _auc(positive, negative):
    """The chance that a positive outscores a negative (ties count half)."""
    return float(np.mean((positive[:, None] > negative[None, :])
                         + 0.5 * (positive[:, None] == negative[None, :])))


def genre_ranking_scores(scores, genre_lists):
    """How well per-genre `scores` rank each item's true genres.

    Returns:
        dict of float arrays, one value per item: `genre_auc` (the chance
        that a true genre outscores a false one; ties count half; 0.5 is
        chance) and `genre_top1` (1.0 if the best-scored genre is true).

    Example:
    ```python
    genre_ranking_scores(np.eye(18)[[7]], [["Drama"]])
    # {"genre_auc": array([1.]), "genre_top1": array([1.])}
    ```
    """
    scores, truth = _scores_and_truth(scores, genre_lists)
    auc, top1 = [], []
    for row, true in zip(scores, truth):
        if not true.any() or true.all():
            raise ValueError("An item needs at least one true and one false genre.")
        auc.append(_auc(row[true], row[~true]))
        top1.append(float(true[np.argmax(row)]))
    return {"genre_auc": np.asarray(auc), "genre_top1": np.asarray(top1)}


def genre_item_auc(scores, genre_lists, min_items=2):
    """Per genre, how well `scores[:, genre]` ranks the items that have the
    genre above those that do not (AUC; ties count half), averaged over the
    genres with at least `min_items` items on each side.

    Unlike `genre_ranking_scores` this compares items, not genres, so a
    genre prior (the same score for every item) gets exactly 0.5: it
    measures only what the scores know about each item.

    Returns:
        `(mean_auc, num_genres)`; `(nan, 0)` when no genre qualifies.

    Example:
    ```python
    genre_item_auc(scores, [m["genres"] for m in metas])
    ```
    """
    scores, truth = _scores_and_truth(scores, genre_lists)
    aucs = []
    for g in range(len(GENRES)):
        pos, neg = scores[truth[:, g], g], scores[~truth[:, g], g]
        if len(pos) < min_items or len(neg) < min_items:
            continue
        aucs.append(_auc(pos, neg))
    return (float(np.mean(aucs)), len(aucs)) if aucs else (float("nan"), 0)


def score_answers(task, answers, references, metas):
    """Per-item exact metrics of one task's answers.

    Returns:
        dict of float arrays: genre `precision` / `recall` / `f1` / `exact`
        (tasks `genres` and `describe`), `year_within_2` (task `year`).
    """
    out = {}
    if task in ("genres", "describe"):
        scores = [genre_scores(a, m["genres"]) for a, m in zip(answers, metas)]
        for key in ("precision", "recall", "f1", "exact"):
            out[f"genre_{key}"] = np.array([s[key] for s in scores])
    if task == "year":
        out["year_within_2"] = np.array(
            [year_within(a, m["year"]) for a, m in zip(answers, metas)])
    return out


# ----------------------------------------------------------------------
# General prompts of the preserved-ability check.
# ----------------------------------------------------------------------
GENERAL_PROMPTS = (
    "What is the capital of France?",
    "Name three primary colors.",
    "How many days are in a week?",
    "What is 12 plus 7?",
    "Write a short greeting for a friend.",
    "What does a bee make?",
    "Give me a synonym for happy.",
    "What is the boiling point of water in Celsius?",
    "Which planet is known as the Red Planet?",
    "Translate 'thank you' into Spanish.",
    "What is the opposite of cold?",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
    "What language is spoken in Brazil?",
    "Suggest a name for a pet cat.",
    "What is the largest ocean on Earth?",
    "Complete the sentence: The early bird ...",
    "What do plants need to grow?",
    "Who wrote Romeo and Juliet?",
    "Explain what a movie trailer is in one sentence.",
)


def preserved_ability(model, plain_lm, prompts, max_new_tokens=24):
    """Greedy answers of the item model and of the plain LLM to item-free
    prompts, over the same token ids and the same lengths.

    `plain_lm` is keras-hub's own `CausalLM` task over the same backbone
    (e.g. `LlamaCausalLM(backbone, preprocessor=None)`); it is fed the
    token ids the item model's preprocessor makes (no mention: exactly the
    LLM tokenizer's ids) and its new tokens are detokenized with the same
    tokenizer, special tokens dropped, as the item model's are.

    Returns:
        dict `equal` (how many answers are identical), `total`, `pairs`
        (the first three `(prompt, ours, plain)`) and `differing` (all
        that differ).
    """
    preprocessor = model.preprocessor
    tokenizer = preprocessor.tokenizer
    prompts = list(prompts)
    ours = generate_answers(model, prompts, max_new_tokens, batch_size=len(prompts))
    lengths = np.asarray(preprocessor.generate_preprocess(
        prompts, sequence_length=preprocessor.sequence_length)["padding_mask"]).sum(axis=1)
    max_length = min(_round_up(lengths.max() + max_new_tokens),
                     preprocessor.sequence_length)
    x = preprocessor.generate_preprocess(prompts, sequence_length=max_length)
    plain_lm.compile(sampler="greedy")
    out = plain_lm.generate(
        {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]},
        stop_token_ids=_stop_token_ids(tokenizer))
    ids = np.asarray(keras.ops.convert_to_numpy(out["token_ids"]))
    mask = np.asarray(keras.ops.convert_to_numpy(out["padding_mask"])).astype(bool)
    special = set(getattr(tokenizer, "special_token_ids", []) or [])
    theirs = []
    for row, length in enumerate(lengths):
        end = length + max_new_tokens  # the budget `generate_answers` keeps
        new = [int(t) for t, m in zip(ids[row, length:end], mask[row, length:end])
               if m and int(t) not in special]
        text = tokenizer.detokenize([new])[0] if new else ""
        theirs.append((text.decode("utf-8") if isinstance(text, bytes) else str(text)).strip())
    differing = [(p, a, b) for p, a, b in zip(prompts, ours, theirs) if a != b]
    return {"equal": len(prompts) - len(differing), "total": len(prompts),
            "pairs": list(zip(prompts, ours, theirs))[:3],
            "differing": differing}


# ----------------------------------------------------------------------
# One seed.
# ----------------------------------------------------------------------
def _mean_metrics(per_item):
    return {k: float(np.mean(v)) for k, v in per_item.items()}


@dataclasses.dataclass
class PreparedSeed:
    """What every use of one seed shares: the split (its data filtered),
    the seen / held-out items, the iALS tables (every item has a vector),
    the data with only the seen items' texts (phase 1's), and the phase-1
    Q-Former (`None` until `phase1_qformer` trains it); `seconds` per
    stage."""

    split: object
    seen: np.ndarray
    held_out: np.ndarray
    user_table: np.ndarray
    item_table: np.ndarray
    phase1_data: object
    qformer: object = None
    phase1_loss: dict = None
    seconds: dict = dataclasses.field(default_factory=dict)

    @property
    def data(self):
        return self.split.data


def prepare_seed(data, config, phase1=True, log=print):
    """The split, CF and (with `phase1`) phase 1 of `config.seed`.

    Args:
        data: MovieLens `InteractionData` (with `item_meta`).
        config: `ItemLanguageConfig`.
        phase1: also train the phase-1 Q-Former (`phase1_qformer`).
        log: progress printer.

    Returns:
        A `PreparedSeed`.
    """
    seconds = {}
    seed = config.seed
    pconfig = config.pipeline_config()
    seed_everything(seed)
    split = pl.prepare_split(data, pconfig)
    data = split.data
    seen, held_out = split_items(data, config.heldout_fraction, seed)
    log(f"seed {seed}: {len(seen)} seen items, {len(held_out)} held-out")

    # CF on the ratings (training sequences; held-out items keep vectors).
    start = time.time()
    _, user_table, item_table = pl.train_cf(split, pconfig)
    seconds["cf"] = time.time() - start

    # Phase 1 sees only the seen items' texts.
    keep = set(int(i) for i in seen)
    phase1_data = dataclasses.replace(
        data, item_texts=[t if i in keep else None
                          for i, t in enumerate(data.item_texts)])
    phase1_items, _ = ild.item_text_pairs(phase1_data)
    assert_never_targets(data, held_out, phase1_items=phase1_items)
    prepared = PreparedSeed(split, seen, held_out, user_table, item_table,
                            phase1_data, seconds=seconds)
    if phase1:
        (prepared.qformer, prepared.phase1_loss,
         seconds["phase1"]) = phase1_qformer(prepared, config)
    return prepared


def phase1_qformer(prepared, config):
    """Phase 1 (`config.phase1_*`) on `prepared`'s seen items' texts.

    Returns:
        `(qformer, per-epoch losses, seconds)`.
    """
    seed_everything(config.seed)
    start = time.time()
    qformer, history = pl.pretrain_qformer(
        dataclasses.replace(prepared.split, data=prepared.phase1_data),
        prepared.user_table, prepared.item_table, config.pipeline_config())
    losses = {k: [float(x) for x in v] for k, v in history.history.items()}
    return qformer, losses, time.time() - start


def run_item_language_seed(data, config, backbone, tokenizer, encoder,
                           log=print, variants=VARIANTS, plain_lm=None,
                           previous=None):
    """Every row of the item-language table for one seed.

    Steps: seen / held-out split; iALS on the ratings (every item gets a CF
    vector); phase 1 on the seen items' texts; phase 2 of each variant on
    the seen items' conversational tasks; then, on `config.num_eval_items`
    seen and held-out items per task, greedy answers, their semantic
    consistency (`encoder`), the answers' log-perplexity and the exact
    metrics, for the variants and the reference rows; a linear probe from
    CF to genres / year; and the preserved-ability check on the ILM.

    Args:
        data: MovieLens `InteractionData` (with `item_meta`).
        config: `ItemLanguageConfig`.
        backbone, tokenizer: the frozen LLM.
        encoder: sentence encoder for semantic consistency (callable
            `list of str -> [n, d]`).
        log: progress printer.
        variants: which of `VARIANTS` to train.
        plain_lm: keras-hub `CausalLM` over `backbone` for the
            preserved-ability check (None: skipped).
        previous: an earlier result of the same seed (its JSON): its
            reference rows are reused when `reusable_reference_rows` says
            they are this run's (`result["references_from"]` then holds
            its `code`); otherwise they are computed and the reason logged.

    Returns:
        A JSON-serialisable dict (see `benchmarks/item_language_table.py`).

    Example:
    ```python
    result = run_item_language_seed(load_ml100k(path), ItemLanguageConfig(),
                                    backbone, tokenizer, MiniLMSentenceEncoder())
    result["rows"]["ilm"]["held_out"]["genres"]["genre_f1"]
    ```
    """
    from ilm_keras.metrics.semantic import semantic_consistency

    started = time.time()
    seed = config.seed
    prepared = prepare_seed(data, config, phase1="ilm" in variants, log=log)
    data, seen, held_out = prepared.data, prepared.seen, prepared.held_out
    item_table, qformer = prepared.item_table, prepared.qformer
    phase1_loss, seconds = prepared.phase1_loss, dict(prepared.seconds)

    # Phase-2 pairs (seen items only) and the test prompts.
    train_pairs = []
    for task in config.train_tasks:
        train_pairs += [(chat_prompt(q), a) for _, q, a in
                        item_task_examples(data, seen, task, seed=seed,
                                           subject=config.answer_subject)]
    assert_never_targets(data, held_out, phase2_pairs=train_pairs)
    rng = np.random.default_rng([seed, 20])
    subsets = {
        "seen": np.sort(rng.choice(seen, min(config.num_eval_items, len(seen)), replace=False)),
        "held_out": np.sort(rng.choice(held_out, min(config.num_eval_items, len(held_out)), replace=False)),
    }
    demo_item = int(seen[0])
    tests = {}  # (subset, task) -> list of (item, question, answer)
    for subset, items in subsets.items():
        for task in config.eval_tasks:
            tests[(subset, task)] = item_task_examples(
                data, items, task, seed=seed + 1000, subject=config.answer_subject)

    def reference_question(task, q, item, mode):
        shots = ()
        if config.one_shot:
            (_, dq, da), = item_task_examples(data, [demo_item], task, seed=seed,
                                              subject=config.answer_subject)
            shots = ((reference_prompt(dq, data, demo_item, mode), da),)
        return chat_prompt(reference_prompt(q, data, item, mode), shots)

    texts = [p + a for p, a in train_pairs]
    for (subset, task), rows in tests.items():
        for item, q, a in rows:
            texts.append(chat_prompt(q) + a)
            for mode in ("title", "nothing"):
                texts.append(reference_question(task, q, item, mode) + a)
    soft = max(config.num_query_tokens, config.num_mlp_tokens)
    longest = max(len(tokenizer(t)) for t in texts) + soft + 2
    sequence_length = _round_up(longest + config.max_new_tokens)
    log(f"{len(train_pairs)} phase-2 pairs; sequence length {sequence_length}")

    prior = prior_answers(data, seen)
    genre_prior = genre_matrix([data.item_meta[i]["genres"] for i in seen]).sum(axis=0)
    rows = {}
    examples = {}
    models = {}
    phase2_loss = {}  # variant -> every step's training loss
    align_loss = {}  # variant -> per-epoch alignment loss (`align_epochs`)
    align_fit = {}  # variant -> the alignment's floors and held-out MSE
    # variant -> stage -> `soft_token_spread` of the held-out items' soft
    # tokens; "llm" -> that of the LLM's embeddings of their genre lists.
    spread = {}

    def evaluate(row, model, prompt_of):
        result = {}
        for (subset, task), cases in tests.items():
            prompts = [chat_prompt(q) if model is None else prompt_of(task, q, item)
                       for item, q, _ in cases]
            references = [a for _, _, a in cases]
            metas = [data.item_meta[item] for item, _, _ in cases]
            if model is None:  # the prior floor: a constant answer
                answers = [prior[task]] * len(cases)
                nll = None
            else:
                unique = sorted(set(prompts))
                replies = dict(zip(unique, generate_answers(
                    model, unique, config.max_new_tokens,
                    config.generate_batch_size)))
                answers = [replies[p] for p in prompts]
                nll, _ = answer_log_perplexity(
                    model, list(zip(prompts, references)),
                    config.generate_batch_size)
            sc, per_pair = semantic_consistency(
                [a if a.strip() else "(no answer)" for a in answers],
                references, encoder=encoder, return_per_pair=True)
            metrics = {"semantic_consistency": float(sc), "n": len(cases)}
            if nll is not None:
                metrics["log_perplexity"] = float(np.mean(nll))
            metrics.update(_mean_metrics(score_answers(task, answers, references, metas)))
            if task == "genres":  # the genres' likelihood ranking
                if model is None:  # the prior floor: seen-item frequency
                    scores = np.tile(genre_prior, (len(cases), 1))
                else:
                    scores = genre_log_likelihoods(
                        model, prompts,
                        [answer_subject_text(data, item, config.answer_subject)
                         for item, _, _ in cases],
                        config.generate_batch_size)
                true_genres = [m["genres"] for m in metas]
                metrics.update(_mean_metrics(genre_ranking_scores(scores, true_genres)))
                metrics["genre_item_auc"] = genre_item_auc(scores, true_genres)[0]
            result.setdefault(subset, {})[task] = metrics
            examples.setdefault(row, {}).setdefault(subset, {})[task] = [
                {"item": int(item), "prompt": p, "answer": ans, "reference": ref}
                for (item, _, ref), p, ans in list(zip(cases, prompts, answers))[:10]]
            log(f"  {row} {subset} {task}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in metrics.items() if k != "n"))
        return result

    for variant in variants:
        seed_everything(seed)
        model = build_variant(variant, backbone, tokenizer, data, item_table,
                              config, sequence_length,
                              qformer=qformer if variant == "ilm" else None)
        if "llm" not in spread:
            spread["llm"] = soft_token_spread(alignment_targets(
                model, tokenizer, data, held_out, config.align_target))
        spread[variant] = {"init": soft_token_spread(item_soft_tokens(model, held_out))}
        if config.align_epochs:
            fit, seconds[f"align_{variant}"] = align_soft_tokens(
                model, tokenizer, data, seen, config, held_out=held_out)
            align_loss[variant] = fit.pop("loss")
            align_fit[variant] = fit
            log(f"  {variant} alignment: mse {align_loss[variant][0]:.3g} -> "
                f"{align_loss[variant][-1]:.3g}; " + ", ".join(
                    f"{k} {v:.3g}" for k, v in fit.items() if np.isscalar(v)))
            spread[variant]["aligned"] = soft_token_spread(
                item_soft_tokens(model, held_out))
        history, fit_seconds = train_variant(model, train_pairs, config, seed)
        spread[variant]["trained"] = soft_token_spread(item_soft_tokens(model, held_out))
        log(f"  {variant} held-out soft tokens' item share: " + ", ".join(
            f"{stage} {v['item_share']:.3g}" for stage, v in spread[variant].items()))
        seconds[f"phase2_{variant}"] = fit_seconds
        phase2_loss[variant] = history.history["step_loss"]
        model.compile(sampler="greedy")
        start = time.time()
        rows[variant] = evaluate(variant, model, lambda task, q, item: chat_prompt(q))
        seconds[f"eval_{variant}"] = time.time() - start
        models[variant] = model

    # Reference rows: the frozen LLM (no item mention: an item model's
    # logits are exactly the LLM's own), and the constant prior answer.
    reused, reason, references_from = None, "no earlier run given", None
    if previous is not None:
        reused, reused_examples, reason = reusable_reference_rows(
            previous, config, sequence_length, metrics=next(iter(rows.values())))
    if reused is not None:
        rows.update(reused)
        examples.update(reused_examples)
        references_from = previous.get("code", "an earlier run")
        log(f"reference rows reused from the earlier run ({references_from})")
    else:
        log(f"reference rows computed ({reason})")
        reference_model = next(iter(models.values()))
        start = time.time()
        rows["text_reference"] = evaluate(
            "text_reference", reference_model,
            lambda task, q, item: reference_question(task, q, item, "title"))
        rows["floor_llm"] = evaluate(
            "floor_llm", reference_model,
            lambda task, q, item: reference_question(task, q, item, "nothing"))
        rows["floor_prior"] = evaluate("floor_prior", None, None)
        seconds["eval_references"] = time.time() - start

    # What the CF vectors hold about genres and year.
    metas_seen = [data.item_meta[i] for i in seen]
    metas_held = [data.item_meta[i] for i in held_out]
    probe = linear_probe(
        item_table[seen], [m["genres"] for m in metas_seen],
        [m["year"] for m in metas_seen], item_table[held_out],
        [m["genres"] for m in metas_held], [m["year"] for m in metas_held])
    probe["predictions"] = [
        {"item": int(i), "title": readable_title(data.item_meta[i]["title"]),
         "genres": data.item_meta[i]["genres"], "probe": p}
        for i, p in list(zip(held_out, probe["predictions"]))[:10]]

    preserved = None
    if plain_lm is not None and "ilm" in models:
        start = time.time()
        preserved = preserved_ability(
            models["ilm"], plain_lm,
            [chat_prompt(p) for p in GENERAL_PROMPTS[:config.num_general_prompts]],
            config.max_new_tokens)
        seconds["preserved"] = time.time() - start
        log(f"preserved ability: {preserved['equal']}/{preserved['total']} identical")
    seconds["total"] = time.time() - started
    return {
        "seed": seed,
        "config": config.to_dict(),
        "num_items": {"seen": int(len(seen)), "held_out": int(len(held_out)),
                      "eval_seen": int(len(subsets["seen"])),
                      "eval_held_out": int(len(subsets["held_out"]))},
        "num_phase2_pairs": len(train_pairs),
        "sequence_length": int(sequence_length),
        "generation": GENERATION,
        "rows": rows,
        "references_from": references_from,
        "phase1_loss": phase1_loss,  # per epoch, each loss of phase 1
        "phase2_loss": phase2_loss,
        "align_loss": align_loss,
        "align_fit": align_fit,
        "soft_token_spread": spread,
        "examples": examples,
        "probe": probe,
        "prior_answers": prior,
        "preserved": preserved,
        "seconds": seconds,
        "models": models,  # dropped before writing JSON
    }
