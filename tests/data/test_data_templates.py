"""Prompt templates: counts, mentions, sampling and conversational tasks."""

import re
import string

import numpy as np
import pytest

from ilm_keras.data import CONVERSATION_TASKS
from ilm_keras.data import RECOMMENDATION_TASKS
from ilm_keras.data import InteractionData
from ilm_keras.data import conversation_prompts
from ilm_keras.data import evaluation_prompts
from ilm_keras.data import format_prompt
from ilm_keras.data import leave_last_out
from ilm_keras.data import random_indexing
from ilm_keras.data import training_prompts


def make_data():
    meta = [
        {"title": "Toy Story", "year": 1995, "genres": ["Animation", "Comedy"]},
        {"title": "Usual Suspects, The", "year": 1995, "genres": ["Crime", "Thriller"]},
        {"title": "Heat", "year": None, "genres": []},
        {"title": "Babe", "year": 1998, "genres": ["Comedy", "Drama"]},
        None,
    ]
    data = InteractionData(
        name="toy",
        user_ids=["a", "b"],
        item_ids=["10", "11", "12", "13", "14"],
        sequences=[np.array([0, 1, 2, 3, 4]), np.array([4, 3, 2])],
        item_meta=meta,
        item_texts=[None] * 5,
    )
    return random_indexing(
        data, item_map={"10": 1001, "11": 1002, "12": 1003, "13": 1004, "14": 1005},
        user_map={"a": 1, "b": 2},
    )


def fields(template):
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("task", ["sequential", "straightforward"])
def test_template_counts(task):
    spec = RECOMMENDATION_TASKS[task]
    assert len(spec.seen) == 10 and len(set(spec.seen)) == 10
    assert isinstance(spec.unseen, str) and spec.unseen not in spec.seen
    for template in spec.seen + (spec.unseen,):
        assert fields(template) == set(spec.fields)


def test_sequential_and_straightforward_prompts():
    data = make_data()
    prompt = format_prompt(data, "sequential", 2, user=0, history=[0, 3])
    assert prompt == "Given the history item_1001 , item_1004 of user_1, what comes next?"
    split = leave_last_out(data, max_history=2)
    test = evaluation_prompts(split, "test", "sequential", "unseen")
    assert len(test) == 2
    assert "item_1003 , item_1004" in test[0][0] and "user_1" in test[0][0]
    assert test[0][1] == "item_1005"
    valid = evaluation_prompts(split, "valid", "straightforward", 0)
    assert valid == [("Which item should we recommend to user_1?", "item_1004"),
                     ("Which item should we recommend to user_2?", "item_1004")]
    with pytest.raises(ValueError, match="template must be 0..9 or 'unseen'"):
        evaluation_prompts(split, "test", "sequential", 10)
    with pytest.raises(ValueError, match="Unknown task"):
        evaluation_prompts(split, "test", "conversation", 0)


def test_training_prompts_sample_three_seen_templates():
    data = make_data()
    split = leave_last_out(data, max_history=20)
    examples = split.train_examples()  # user a: 0->1, 0 1->2; user b: none.
    assert len(examples.targets) == 2
    pairs = training_prompts(split, epoch=0, seed=0)
    assert len(pairs) == 2 * 3 * 2  # tasks x templates x examples
    sequential = [p for p, _ in pairs[:6]]
    # Each example gets 3 distinct seen templates, never the unseen one.
    for k in range(2):
        assert len(set(sequential[3 * k: 3 * k + 3])) == 3
    for task in ("sequential", "straightforward"):
        unseen_start = RECOMMENDATION_TASKS[task].unseen.split("{")[0]
        assert not any(p.startswith(unseen_start) for p, _ in pairs)
    for prompt, target in pairs:
        assert "user_1" in prompt and re.fullmatch(r"item_\d+", target)
    assert [t for _, t in pairs[:6]] == ["item_1002"] * 3 + ["item_1003"] * 3
    assert "item_1001 , item_1002" in pairs[3][0] or "item_1001 , item_1002" in pairs[4][0]
    assert list(training_prompts(split, epoch=0, seed=0)) == list(pairs)
    assert any(list(training_prompts(split, epoch=e, seed=0)) != list(pairs)
               for e in range(1, 6))


def test_prompts_need_indexing():
    data = InteractionData("toy", ["a"], ["x", "y", "z"], [np.array([0, 1, 2])])
    with pytest.raises(ValueError, match="random_indexing"):
        training_prompts(leave_last_out(data))


def test_conversation_prompts():
    data = make_data()
    pairs = conversation_prompts(data, tasks=("describe", "genres", "year", "title"))
    by_target = dict((t, p) for p, t in pairs)
    assert "Toy Story is a movie from 1995 in the Animation and Comedy genres." in by_target
    assert "The Usual Suspects is Crime and Thriller." in by_target
    assert "Heat is a movie." in by_target
    assert "Heat." in by_target  # The title task, without a year.
    # Heat has no genres and no year: no genre or year question for it.
    assert sum("item_1003" in p for p, _ in pairs) == 2
    assert all(re.search(r"item_100[1-4]", p) for p, _ in pairs)
    assert not any("item_1005" in p for p, _ in pairs)  # Item 14 has no metadata.

    compare = conversation_prompts(data, tasks=("compare", "why_like"), pairs=[[0, 3]])
    assert len(compare) == 2
    assert "item_1001" in compare[0][0] and "item_1004" in compare[0][0]
    assert compare[0][1] == (
        "Toy Story (1995) and Babe (1998) are both Comedy. Only Toy Story is "
        "Animation. Only Babe is Drama. Toy Story is the older one, by 3 years."
    )
    assert compare[1][1] == (
        "Like Toy Story, Babe (1998) is Comedy, so it offers more of what you "
        "enjoyed. It adds some Drama as well."
    )

    random_pairs = conversation_prompts(data, tasks=("compare",), num_pairs=5, seed=1)
    assert len(random_pairs) == 5
    for prompt, _ in random_pairs:
        first, second = re.findall(r"item_\d+", prompt)
        assert first != second
    assert set(CONVERSATION_TASKS) >= {"describe", "compare", "why_like"}
    with pytest.raises(ValueError, match="no metadata"):
        conversation_prompts(data, tasks=("title",), items=[4])
    with pytest.raises(ValueError, match="Unknown conversational task"):
        conversation_prompts(data, tasks=("summary",))
