"""`TrainingPrompts`: one epoch of OpenP5 training prompts, made when read."""

import numpy as np

from ilm_keras.data.pair_sequences import PairSequence
from ilm_keras.data.templates import _Mentions
from ilm_keras.data.templates import _task


class TrainingPrompts(PairSequence):
    """One epoch of training `(prompt, target)` pairs, made when read.

    For every training example of `split` (each prefix of each user's
    training sequence predicts the next item, as `split.train_examples()`)
    and every task, `templates_per_example` distinct seen templates (OpenP5:
    3) are drawn with a generator seeded by `(seed, epoch)`, so each epoch
    differs and reruns repeat. Pair order: task by task, example by
    example, the sampled templates in sampled order (shuffle for training).

    Only integers are kept: per example its user and its position in the
    user's training sequence, per example and task the drawn templates.
    Each prompt is formatted when it is read, so an epoch of a large dataset
    (OpenP5 Clothing: 200k examples x 2 tasks x 3 templates) is not a list
    of a million strings.

    Args:
        split: a `LeaveLastOutSplit` of data with random indexing.
        epoch: int, the epoch (changes the sample).
        seed: int, the base seed.
        tasks: the recommendation tasks.
        templates_per_example: seen templates per example per task (1-10).

    Example:
    ```python
    pairs = TrainingPrompts(leave_last_out(data), epoch=0, seed=1)
    prompt, target = pairs[0]
    ```
    """

    def __init__(self, split, epoch=0, seed=0,
                 tasks=("sequential", "straightforward"),
                 templates_per_example=3):
        self.split = split
        self.mentions = _Mentions(split.data)  # Raises without indexing.
        self.specs = [_task(task) for task in tasks]
        self.templates_per_example = int(templates_per_example)
        lengths = np.array([len(s) for s in split.train_sequences], np.int64)
        examples = np.maximum(lengths - 1, 0)
        # Example k: user `users[k]`, target at position `ends[k]` of the
        # user's training sequence, history the items before it.
        self.users = np.repeat(np.arange(len(lengths)), examples)
        starts = np.cumsum(examples) - examples
        self.ends = np.arange(len(self.users)) - np.repeat(starts, examples) + 1
        count = len(self.users)
        rng = np.random.default_rng([seed, epoch])
        self.chosen = []
        for spec in self.specs:
            if not 1 <= templates_per_example <= len(spec.seen):
                raise ValueError(
                    f"templates_per_example must be in 1..{len(spec.seen)}; "
                    f"got {templates_per_example}."
                )
            # A random permutation per example; its first k entries are the
            # k distinct templates.
            order = np.argsort(rng.random((count, len(spec.seen))), axis=1)
            self.chosen.append(
                order[:, :templates_per_example].astype(np.int8))

    def __len__(self):
        return len(self.specs) * len(self.users) * self.templates_per_example

    def pair(self, position):
        per_task = len(self.users) * self.templates_per_example
        task, rest = divmod(position, per_task)
        example, slot = divmod(rest, self.templates_per_example)
        spec = self.specs[task]
        user = int(self.users[example])
        end = int(self.ends[example])
        sequence = self.split.train_sequences[user]
        values = {"user": self.mentions.users[user]}
        if "history" in spec.fields:
            start = 0 if self.split.max_history is None else max(
                0, end - self.split.max_history)
            values["history"] = self.mentions.history(sequence[start:end])
        prompt = spec.seen[int(self.chosen[task][example, slot])].format(**values)
        return prompt, self.mentions.items[int(sequence[end])]

    def responses(self):
        targets = {
            int(self.split.train_sequences[u][e])
            for u, e in zip(self.users.tolist(), self.ends.tolist())
        }
        return {self.mentions.items[t] for t in targets}


def training_prompts(
    split,
    epoch=0,
    seed=0,
    tasks=("sequential", "straightforward"),
    templates_per_example=3,
):
    """One epoch of training (prompt, target) pairs (`TrainingPrompts`).

    Args:
        split: a `LeaveLastOutSplit` of data with random indexing.
        epoch: the epoch number (changes the sample).
        seed: the base seed.
        tasks: the recommendation tasks.
        templates_per_example: seen templates per example per task (1-10).

    Returns:
        A `TrainingPrompts` sequence of `(prompt, target)` string tuples,
        `len(tasks) * templates_per_example * num_train_examples` long;
        `list(...)` it for a list.

    Example:
    ```python
    pairs = training_prompts(leave_last_out(data), epoch=0, seed=1)
    ```
    """
    return TrainingPrompts(split, epoch=epoch, seed=seed, tasks=tasks,
                           templates_per_example=templates_per_example)
