"""Prompt templates: OpenP5-style recommendation tasks and item conversations.

Recommendation tasks (OpenP5 protocol, our own wording):

- `"sequential"`: the user and their history → the next item;
- `"straightforward"`: the user only → the next item.

Each has 10 *seen* templates (training, and the seen test) and 1 *unseen*
template (test only). Every training epoch samples 3 distinct seen templates
per example per task (seeded by `seed` and the epoch).

Items appear in prompts as `item_<random index>` and users as
`user_<index>` in plain text; histories are joined with `" , "` as in
OpenP5. The phase-2 model finds these mentions and inserts each one's CF soft
tokens right after it (ILM paper, §4.4), so templates only produce text.
Targets of recommendation prompts are the target item's mention,
`item_<index>`.

Conversational item tasks (for a pretrained LLM; need `data.item_meta`,
i.e. MovieLens-style title / year / genres): describe a movie, its genres,
its year, its title, compare two movies, and why one might like a movie
given another. Prompts mention the items; targets are plain sentences built
from the metadata.
"""

import dataclasses
from typing import Tuple

import numpy as np

from ilm_keras.data.movielens import readable_title


@dataclasses.dataclass(frozen=True)
class TaskTemplates:
    """The templates of one recommendation task.

    Args:
        task: the task name.
        seen: the 10 training templates.
        unseen: the template kept for the unseen test.
        fields: the placeholders every template uses (`{user}`,
            `{history}`).
    """

    task: str
    seen: Tuple[str, ...]
    unseen: str
    fields: Tuple[str, ...]

    def template(self, which):
        """Seen template number `which` (0-9), or the unseen one ("unseen")."""
        if which == "unseen":
            return self.unseen
        if isinstance(which, (int, np.integer)) and 0 <= which < len(self.seen):
            return self.seen[which]
        raise ValueError(
            f"{self.task}: template must be 0..{len(self.seen) - 1} or "
            f"'unseen'; got {which!r}."
        )


SEQUENTIAL = TaskTemplates(
    task="sequential",
    seen=(
        "{user} has interacted with these items, in order: {history}. "
        "Which item will {user} choose next?",
        "Here is what {user} picked so far, oldest first: {history}. "
        "Predict the next item for {user}.",
        "Given the history {history} of {user}, what comes next?",
        "{user} went through {history}. Recommend the item {user} is most "
        "likely to pick after that.",
        "Items seen by {user}, in time order: {history}. Name the next item.",
        "What should {user} get next, knowing the past choices {history}?",
        "Past items of {user}: {history}. Suggest one more item.",
        "After {history}, which item would {user} want?",
        "Sequence of {user}: {history}. Continue the sequence with one item.",
        "{user} recently engaged with {history}. Which item is the best next "
        "recommendation?",
    ),
    unseen=(
        "Looking at the list {history} that {user} has gone through, pick "
        "the single item to show {user} next."
    ),
    fields=("user", "history"),
)

STRAIGHTFORWARD = TaskTemplates(
    task="straightforward",
    seen=(
        "Which item should we recommend to {user}?",
        "Pick the next item for {user}.",
        "What will {user} choose next?",
        "Recommend one item to {user}.",
        "{user} is looking for something new. Which item fits?",
        "Suggest an item that {user} is likely to pick.",
        "Predict the next item of {user}.",
        "What is the best item to show {user} now?",
        "Name an item {user} would want next.",
        "Give {user} a recommendation.",
    ),
    unseen=(
        "Out of the whole catalogue, which single item would you offer "
        "{user} at this moment?"
    ),
    fields=("user",),
)

RECOMMENDATION_TASKS = {t.task: t for t in (SEQUENTIAL, STRAIGHTFORWARD)}

HISTORY_SEPARATOR = " , "


def _task(task):
    if task not in RECOMMENDATION_TASKS:
        raise ValueError(
            f"Unknown task {task!r}; choose from {sorted(RECOMMENDATION_TASKS)}."
        )
    return RECOMMENDATION_TASKS[task]


class _Mentions:
    """Caches the `item_<i>` / `user_<u>` strings of one dataset."""

    def __init__(self, data):
        data.item_token(0)  # Raises a clear error without indexing.
        data.user_token(0)
        self.items = [f"item_{k}" for k in data.item_index]
        self.users = [f"user_{k}" for k in data.user_index]

    def history(self, history):
        if len(history) == 0:
            raise ValueError("A sequential prompt needs a non-empty history.")
        return HISTORY_SEPARATOR.join(self.items[i] for i in history)


def format_prompt(data, task, template, user, history=None):
    """One recommendation prompt.

    Args:
        data: `InteractionData` with `item_index` and `user_index`.
        task: `"sequential"` or `"straightforward"`.
        template: a seen template number (0-9) or `"unseen"`.
        user: the user index.
        history: item indices, oldest first (sequential task only).

    Returns:
        The prompt string.

    Example:
    ```python
    format_prompt(data, "sequential", 2, user=0, history=[5, 9])
    # "Given the history item_1523 , item_1088 of user_1, what comes next?"
    ```
    """
    spec = _task(task)
    mentions = _Mentions(data)
    values = {"user": mentions.users[user]}
    if "history" in spec.fields:
        if history is None:
            raise ValueError(f"The {task} task needs a history.")
        values["history"] = mentions.history(history)
    return spec.template(template).format(**values)


def prompt_pairs(data, examples, task, templates):
    """(prompt, target) pairs for `examples` with the given template per example.

    Args:
        data: `InteractionData` with `item_index` and `user_index`.
        examples: `SequenceExamples` (users, histories, targets).
        task: `"sequential"` or `"straightforward"`.
        templates: one template (0-9 or `"unseen"`) for all examples, or a
            sequence with one per example.

    Returns:
        A list of `(prompt, target)` string tuples, in example order; the
        target is the mention `item_<index>` of the target item.
    """
    spec = _task(task)
    mentions = _Mentions(data)
    users, histories, targets = examples
    if isinstance(templates, (str, int, np.integer)):
        templates = [templates] * len(targets)
    if len(templates) != len(targets):
        raise ValueError(
            f"{len(templates)} templates for {len(targets)} examples."
        )
    texts = {}
    pairs = []
    for user, history, target, which in zip(users, histories, targets, templates):
        key = which if isinstance(which, str) else int(which)
        if key not in texts:
            texts[key] = spec.template(key)
        values = {"user": mentions.users[user]}
        if "history" in spec.fields:
            values["history"] = mentions.history(history)
        pairs.append((texts[key].format(**values), mentions.items[target]))
    return pairs


def evaluation_prompts(split, subset="test", task="sequential", template=0):
    """Validation or test (prompt, target) pairs, one per kept user.

    Args:
        split: a `LeaveLastOutSplit` of data with random indexing.
        subset: `"valid"` or `"test"`.
        task: `"sequential"` or `"straightforward"`.
        template: the seen template number used for the seen test (0-9), or
            `"unseen"`.

    Returns:
        A list of `(prompt, target)` tuples in `split.test_users` order.

    Example:
    ```python
    seen = evaluation_prompts(split, "test", "sequential", template=0)
    unseen = evaluation_prompts(split, "test", "sequential", "unseen")
    ```
    """
    if subset not in ("valid", "test"):
        raise ValueError(f"subset must be 'valid' or 'test'; got {subset!r}.")
    return prompt_pairs(split.data, split.examples(subset), task, template)


# ---------------------------------------------------------------------------
# Conversational item tasks.

ITEM_TASKS = ("describe", "genres", "year", "title")
PAIR_TASKS = ("compare", "why_like")
CONVERSATION_TASKS = ITEM_TASKS + PAIR_TASKS

CONVERSATION_PROMPTS = {
    "describe": (
        "Tell me about the movie {item}.",
        "What kind of film is {item}?",
        "Give a short description of {item}.",
    ),
    "genres": (
        "Which genres does {item} belong to?",
        "How would you classify {item} by genre?",
        "What genres describe {item}?",
    ),
    "year": (
        "When was {item} released?",
        "In which year did {item} come out?",
        "What is the release year of {item}?",
    ),
    "title": (
        "What is the title of {item}?",
        "What is {item} called?",
        "Name the movie {item}.",
    ),
    "compare": (
        "How do {item} and {other} compare?",
        "What do {item} and {other} have in common, and how do they differ?",
        "Compare the movies {item} and {other}.",
    ),
    "why_like": (
        "I enjoyed {item}. Why might I like {other}?",
        "Someone who liked {item} is considering {other}. What could appeal "
        "to them?",
        "Explain why a fan of {item} could enjoy {other}.",
    ),
}


def _join(words):
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _title(meta):
    return readable_title(meta["title"])


def _named(meta):
    if meta.get("year") is None:
        return _title(meta)
    return f"{_title(meta)} ({meta['year']})"


def _item_target(task, meta):
    """The answer of a single-item task, or None when the metadata lacks it."""
    genres = meta.get("genres") or []
    year = meta.get("year")
    if task == "describe":
        text = _title(meta)
        text += f" is a movie from {year}" if year is not None else " is a movie"
        if genres:
            text += f" in the {_join(genres)} genre{'s' if len(genres) > 1 else ''}"
        return text + "."
    if task == "genres":
        if not genres:
            return None
        return f"{_title(meta)} is {_join(genres)}."
    if task == "year":
        if year is None:
            return None
        return f"{_title(meta)} was released in {year}."
    if task == "title":
        return _named(meta) + "."
    raise ValueError(f"Unknown item task {task!r}.")


def _pair_target(task, first, second):
    """The answer of a two-item task."""
    genres_a = first.get("genres") or []
    genres_b = second.get("genres") or []
    shared = [g for g in genres_a if g in genres_b]
    only_a = [g for g in genres_a if g not in genres_b]
    only_b = [g for g in genres_b if g not in genres_a]
    name_a, name_b = _named(first), _named(second)
    if task == "compare":
        if shared:
            text = f"{name_a} and {name_b} are both {_join(shared)}."
        else:
            text = f"{name_a} and {name_b} share no genre."
        if only_a:
            text += f" Only {_title(first)} is {_join(only_a)}."
        if only_b:
            text += f" Only {_title(second)} is {_join(only_b)}."
        year_a, year_b = first.get("year"), second.get("year")
        if year_a is not None and year_b is not None:
            if year_a == year_b:
                text += f" Both came out in {year_a}."
            else:
                gap = abs(year_a - year_b)
                earlier = _title(first) if year_a < year_b else _title(second)
                text += (
                    f" {earlier} is the older one, by {gap} "
                    f"year{'s' if gap > 1 else ''}."
                )
        return text
    if task == "why_like":
        if shared:
            text = (
                f"Like {_title(first)}, {name_b} is {_join(shared)}, so it "
                "offers more of what you enjoyed."
            )
            if only_b:
                text += f" It adds some {_join(only_b)} as well."
            return text
        if only_b:
            return (
                f"{name_b} is {_join(only_b)}: a change of pace from "
                f"{_title(first)} if you want something different."
            )
        return f"{name_b} could be a change of pace after {_title(first)}."
    raise ValueError(f"Unknown pair task {task!r}.")


def conversation_prompts(
    data, tasks=CONVERSATION_TASKS, items=None, pairs=None, num_pairs=None, seed=0
):
    """(prompt, target) pairs of conversational item tasks from metadata.

    Single-item tasks (`"describe"`, `"genres"`, `"year"`, `"title"`) run
    over `items`; an item is skipped for a task whose answer its metadata
    lacks (no genres, no year). Two-item tasks (`"compare"`, `"why_like"`)
    run over `pairs`. Each prompt uses one of 3 phrasings, chosen with
    `seed`. Prompts mention items as `item_<index>`; targets are plain text.

    Args:
        data: `InteractionData` with `item_meta` and `item_index`.
        tasks: the tasks to produce (subset of `CONVERSATION_TASKS`).
        items: item indices for the single-item tasks (default: every item
            with metadata).
        pairs: int array `[P, 2]` of item pairs for the two-item tasks, e.g.
            `item_item_pairs(split.train_sequences)` (co-watched movies). If
            None, `num_pairs` random pairs of distinct items with metadata
            are drawn with `seed`.
        num_pairs: number of random pairs when `pairs` is None (default: the
            number of items with metadata).
        seed: the seed for phrasings and random pairs.

    Returns:
        A list of `(prompt, target)` string tuples, task by task.

    Example:
    ```python
    conversation_prompts(data, tasks=("genres",), items=[0])
    # [("Which genres does item_1001 belong to?",
    #   "Toy Story is Animation, Children's and Comedy.")]
    ```
    """
    if data.item_meta is None:
        raise ValueError(
            f"{data.name}: conversational tasks need item_meta (title, year, "
            "genres), e.g. a MovieLens loader or load_openp5(..., "
            "item_texts_from=...)."
        )
    unknown = [t for t in tasks if t not in CONVERSATION_TASKS]
    if unknown:
        raise ValueError(
            f"Unknown conversational task(s) {unknown}; choose from "
            f"{list(CONVERSATION_TASKS)}."
        )
    mentions = _Mentions(data)
    meta = data.item_meta
    with_meta = np.array([i for i, m in enumerate(meta) if m], dtype=np.int64)
    rng = np.random.default_rng(seed)

    if items is None:
        items = with_meta
    items = np.asarray(items, dtype=np.int64)
    for i in items:
        if not meta[i]:
            raise ValueError(f"{data.name}: item {data.item_ids[i]!r} has no metadata.")

    if any(t in PAIR_TASKS for t in tasks):
        if pairs is None:
            if len(with_meta) < 2:
                raise ValueError(f"{data.name}: fewer than 2 items have metadata.")
            count = len(with_meta) if num_pairs is None else int(num_pairs)
            first = rng.integers(0, len(with_meta), count)
            second = (first + rng.integers(1, len(with_meta), count)) % len(with_meta)
            pairs = np.stack([with_meta[first], with_meta[second]], axis=1)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        for a, b in pairs:
            if not meta[a] or not meta[b]:
                missing = a if not meta[a] else b
                raise ValueError(
                    f"{data.name}: item {data.item_ids[missing]!r} of a pair has "
                    "no metadata."
                )

    results = []
    for task in tasks:
        phrasings = CONVERSATION_PROMPTS[task]
        if task in ITEM_TASKS:
            for i in items:
                target = _item_target(task, meta[i])
                if target is None:
                    continue
                prompt = phrasings[rng.integers(len(phrasings))]
                results.append((prompt.format(item=mentions.items[i]), target))
        else:
            for a, b in pairs:
                prompt = phrasings[rng.integers(len(phrasings))]
                results.append(
                    (
                        prompt.format(item=mentions.items[a], other=mentions.items[b]),
                        _pair_target(task, meta[a], meta[b]),
                    )
                )
    return results
