"""Tests for pair sequences made when read (`TrainingPrompts`, `ConcatenatedPairs`)."""

import numpy as np
import pytest

from ilm_keras import data as ild


def _split(max_history):
    data, _ = ild.make_synthetic_data(
        num_users=40, num_items=30, interactions_per_user=9, seed=4)
    return ild.leave_last_out(ild.random_indexing(data, seed=1),
                              max_history=max_history)


def _eager_prompts(split, epoch, seed, k):
    """The epoch as a list, built the direct way: every example of
    `train_examples()`, templates drawn with the same generator."""
    examples = split.train_examples()
    count = len(examples.targets)
    rng = np.random.default_rng([seed, epoch])
    pairs = []
    for task, spec in ild.RECOMMENDATION_TASKS.items():
        chosen = np.argsort(rng.random((count, len(spec.seen))), axis=1)[:, :k]
        repeated = ild.SequenceExamples(
            np.repeat(examples.users, k),
            [h for h in examples.histories for _ in range(k)],
            np.repeat(examples.targets, k))
        pairs.extend(ild.prompt_pairs(split.data, repeated, task,
                                      chosen.reshape(-1)))
    return pairs


@pytest.mark.parametrize("max_history", [20, 3, None])
def test_training_prompts_equal_the_eager_epoch(max_history):
    split = _split(max_history)
    for epoch, k in ((0, 3), (2, 1)):
        pairs = ild.training_prompts(split, epoch=epoch, seed=7,
                                     templates_per_example=k)
        eager = _eager_prompts(split, epoch, 7, k)
        assert len(pairs) == len(eager) and list(pairs) == eager
        assert pairs[-1] == eager[-1] and pairs[5:11] == eager[5:11]
        assert pairs.responses() == {r for _, r in eager}
    with pytest.raises(IndexError, match="out of range"):
        pairs[len(pairs)]


def test_concatenated_pairs_read_parts_in_order():
    split = _split(20)
    prompts = ild.training_prompts(split, epoch=1, seed=0)
    extra = [("What is item_1 about?", "A film."), ("Hi", "item_2")]
    both = ild.ConcatenatedPairs([prompts, extra, extra])
    assert len(both) == len(prompts) + 4
    assert list(both) == list(prompts) + extra + extra
    assert both[-1] == extra[-1] and both[len(prompts)] == extra[0]
    assert both.responses() == prompts.responses() | {"A film.", "item_2"}
    assert ild.distinct_responses(extra) == {"A film.", "item_2"}
    with pytest.raises(TypeError, match="indexed by int"):
        both["0"]
