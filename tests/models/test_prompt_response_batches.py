"""Tests for `PromptResponseBatches` over lazily made pairs, and its
per-process shards."""

import numpy as np
import pytest

from ilm_keras import data as ild
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.models.prompt_response_batches import PromptResponseBatches
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer


@pytest.fixture(scope="module")
def split():
    data, _ = ild.make_synthetic_data(
        num_users=12, num_items=20, interactions_per_user=6, seed=2)
    return ild.leave_last_out(ild.random_indexing(data, seed=0), max_history=4)


def _preprocessor(split, loss_positions):
    data = split.data
    return ItemLanguageModelPreprocessor(
        OpenP5Tokenizer.from_texts(),
        item_ids=[str(i) for i in data.item_index],
        user_ids=[str(u) for u in data.user_index],
        sequence_length=128, num_soft_tokens=2, max_mentions=6,
        loss_positions=loss_positions)


def _pairs(split):
    describe = [(f"What is item_{split.data.item_index[i]} about?", "A film.")
                for i in range(3)]
    return lambda epoch: ild.ConcatenatedPairs(
        [ild.training_prompts(split, epoch=epoch, seed=1,
                              templates_per_example=1), describe])


def _same(a, b):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss_positions,length_group",
                         [(True, 3), (False, 1)])
def test_lazy_pairs_give_the_batches_a_list_gives(split, loss_positions,
                                                  length_group):
    preprocessor = _preprocessor(split, loss_positions)
    lazy = PromptResponseBatches(preprocessor, _pairs(split), batch_size=8,
                                 seed=3, length_group=length_group)
    listed = PromptResponseBatches(
        preprocessor, lambda epoch: list(_pairs(split)(epoch)), batch_size=8,
        seed=3, length_group=length_group)
    steps = len(lazy) + 3  # past the end of epoch 0
    for step in range(steps):
        for a, b in zip(lazy.batch_at(step), listed.batch_at(step)):
            _same(a, b)


@pytest.mark.parametrize("loss_positions,length_group",
                         [(True, 3), (False, 1), (True, 1)])
def test_process_rows_join_into_the_whole_batch(split, loss_positions,
                                                length_group):
    preprocessor = _preprocessor(split, loss_positions)

    def batches():
        return PromptResponseBatches(preprocessor, _pairs(split), batch_size=8,
                                     seed=5, length_group=length_group)

    whole = batches()
    shards = {n: [batches() for _ in range(n)] for n in (2, 4)}
    # Every batch of epoch 0 (its last one completed with the epoch's first
    # pairs) and the first batches of epoch 1.
    assert len(_pairs(split)(0)) % 8  # so the last batch wraps
    for step in range(len(whole) + 2):
        expected = whole.batch_at(step)
        for n, parts in shards.items():
            got = [p.batch_at(step, num_processes=n, process_id=i)
                   for i, p in enumerate(parts)]
            assert all(len(g[1]) == 8 // n for g in got)
            for k, field in enumerate(expected):
                if isinstance(field, dict):
                    joined = {key: np.concatenate([g[k][key] for g in got])
                              for key in field}
                else:
                    joined = np.concatenate([g[k] for g in got])
                _same(joined, field)


def test_process_rows_through_fit_input(split):
    preprocessor = _preprocessor(split, True)
    whole, _ = PromptResponseBatches(
        preprocessor, _pairs(split), batch_size=8, seed=5).fit_input()
    halves = [PromptResponseBatches(
        preprocessor, _pairs(split), batch_size=8, seed=5).fit_input(
            num_processes=2, process_id=i)[0] for i in range(2)]
    for expected, first, second in zip(whole.take(3), *[h.take(3) for h in halves]):
        np.testing.assert_array_equal(
            np.concatenate([first[1], second[1]]), expected[1])
        np.testing.assert_array_equal(
            np.concatenate([first[0]["token_ids"], second[0]["token_ids"]]),
            expected[0]["token_ids"])


def test_bad_process_arguments(split):
    batches = PromptResponseBatches(_preprocessor(split, False), _pairs(split),
                                    batch_size=6)
    with pytest.raises(ValueError, match="does not divide into 4 processes"):
        batches.batch(0, num_processes=4, process_id=0)
    with pytest.raises(ValueError, match="process_id"):
        batches.batch(0, num_processes=2, process_id=2)
