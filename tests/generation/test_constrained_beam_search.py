"""Constrained beam search vs exhaustive scoring, on a synthetic LM.

The synthetic language model keeps a positional "KV cache" of the tokens fed
so far and conditions on a hash of the whole history, so a wrong cache reorder
between beams, a wrong position, or a wrong prompt/token switch changes the
scores.
"""

import numpy as np
import pytest
from keras import ops

from ilm_keras.generation.constrained_beam_search import (
    constrained_beam_search,
)
from ilm_keras.generation.item_trie import ItemTrie

VOCAB, END, HASH = 12, 1, 97


def history_hash(tokens):
    return sum(int(t) * (i + 1) * 31 for i, t in enumerate(tokens)) % HASH


def make_problem(seed=0):
    rng = np.random.default_rng(seed)
    table = rng.normal(scale=3.0, size=(HASH, VOCAB)).astype("float32")
    items = set()
    while len(items) < 9:  # item strings of 1 to 3 tokens, then END
        n = int(rng.integers(1, 4))
        items.add(tuple(int(t) for t in rng.integers(2, VOCAB, size=n)))
    sequences = [list(s) + [END] for s in sorted(items)]
    prompts = [list(rng.integers(2, VOCAB, size=n)) for n in (3, 6, 1, 4)]
    return table, ItemTrie(sequences), prompts


def exhaustive(table, trie, prompt):
    log_probs = table - np.log(np.exp(table).sum(-1, keepdims=True))
    scores = []
    for seq in trie.sequences:
        history = list(prompt)
        total = 0.0
        for t in seq:
            total += log_probs[history_hash(history), t]
            history.append(t)
        scores.append(total)
    return np.array(scores)


def run_search(table, trie, prompts, num_beams, excluded):
    batch = len(prompts)
    width = max(len(p) for p in prompts)
    total = width + trie.max_length
    lengths = np.array([len(p) for p in prompts], "int32")
    prompt_ids = np.zeros((batch, total), "int32")
    for b, p in enumerate(prompts):
        prompt_ids[b, : len(p)] = p
    weights = (np.arange(total) + 1) * 31
    rows_prompt = np.repeat(prompt_ids, num_beams, axis=0)
    rows_length = np.repeat(lengths, num_beams)

    def step_fn(cache, index, tokens):
        pos = index - 1
        from_prompt = ops.take(rows_prompt, pos, axis=1)
        fed = ops.where(pos < rows_length, from_prompt, tokens)
        cache = ops.slice_update(cache, [0, pos], ops.expand_dims(fed, 1))
        seen = ops.cast(ops.arange(total) <= pos, "int32")
        h = ops.sum(cache * weights * seen, axis=1) % HASH
        return ops.log_softmax(ops.take(table, h, axis=0), axis=-1), cache

    # The "prompt pass": the prompt tokens in place, as a KV cache would be.
    return constrained_beam_search(
        step_fn,
        prompt_ids,
        lengths,
        trie.transitions,
        trie.alphabet,
        trie.leaf_item,
        trie.alive_mask(excluded),
        num_beams=num_beams,
        max_item_length=trie.max_length,
    )


def test_wide_beam_is_exact():
    table, trie, prompts = make_problem()
    excluded = [[], [0, 4], [], [8]]
    items, scores = run_search(table, trie, prompts, trie.num_items, excluded)
    items, scores = ops.convert_to_numpy(items), ops.convert_to_numpy(scores)
    for b, prompt in enumerate(prompts):
        expected = exhaustive(table, trie, prompt)
        allowed = [i for i in range(trie.num_items) if i not in excluded[b]]
        ranked = sorted(allowed, key=lambda i: -expected[i])
        n = len(ranked)
        assert items[b, :n].tolist() == ranked
        np.testing.assert_allclose(scores[b, :n], expected[ranked], atol=1e-4)
        # Fewer items than beams: the rest is marked invalid.
        assert (items[b, n:] == -1).all() and np.isneginf(scores[b, n:]).all()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_narrow_beam_returns_valid_distinct_items(num_beams):
    table, trie, prompts = make_problem(seed=1)
    excluded = [[1], [], [2, 3], []]
    items, scores = run_search(table, trie, prompts, num_beams, excluded)
    items, scores = ops.convert_to_numpy(items), ops.convert_to_numpy(scores)
    for b, prompt in enumerate(prompts):
        expected = exhaustive(table, trie, prompt)
        assert len(set(items[b].tolist())) == num_beams
        assert (items[b] >= 0).all()
        assert not set(items[b].tolist()) & set(excluded[b])
        np.testing.assert_allclose(scores[b], expected[items[b]], atol=1e-4)
        assert np.all(np.diff(scores[b]) <= 0)


def run_shared_prompt_search(table, trie, prompts, num_beams, excluded):
    """The same search with the prompt scored once and exact beam widths."""
    from ilm_keras.generation.constrained_beam_search import (
        shared_prompt_beam_search,
    )

    log_table = table - np.log(np.exp(table).sum(-1, keepdims=True))
    prompt_hash = np.array([history_hash(p) for p in prompts], "int32")
    lengths = np.array([len(p) for p in prompts], "int32")
    prompt_part = np.array(
        [sum(int(t) * (i + 1) * 31 for i, t in enumerate(p)) for p in prompts],
        "int32",
    )

    def step_fn(t, tokens, parent, state):
        # State: the beam's generated tokens so far, `[B, w, t]`; a wrong
        # reorder by `parent` changes the hash.
        tokens = ops.cast(tokens, "int32")
        if state is not None:
            state = ops.take_along_axis(state, ops.expand_dims(parent, -1), axis=1)
            state = ops.concatenate([state, ops.expand_dims(tokens, -1)], axis=-1)
        else:
            state = ops.expand_dims(tokens, -1)
        weights = (ops.expand_dims(lengths, 1) + ops.arange(1, t + 2)) * 31
        h = ops.sum(state * ops.expand_dims(weights, 1), axis=-1)
        h = (ops.expand_dims(prompt_part, 1) + h) % HASH
        return ops.take(log_table, h, axis=0), state

    return shared_prompt_beam_search(
        ops.take(log_table, prompt_hash, axis=0),
        step_fn,
        trie.transitions,
        trie.alphabet,
        trie.leaf_item,
        trie.alive_mask(excluded),
        widths=trie.beam_widths(num_beams),
        num_beams=num_beams,
    )


@pytest.mark.parametrize("num_beams", [1, 3, 9])
def test_shared_prompt_search_equals_per_beam_search(num_beams):
    table, trie, prompts = make_problem(seed=2)
    excluded = [[], [0, 4], [], [8]]
    widths = trie.beam_widths(num_beams)
    assert widths[0] == 1 and max(widths) <= num_beams
    a_items, a_scores = run_search(table, trie, prompts, num_beams, excluded)
    b_items, b_scores = run_shared_prompt_search(
        table, trie, prompts, num_beams, excluded
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(a_items), ops.convert_to_numpy(b_items)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(a_scores), ops.convert_to_numpy(b_scores), atol=1e-5
    )
    if num_beams == trie.num_items:
        items = ops.convert_to_numpy(b_items)
        for b, prompt in enumerate(prompts):
            expected = exhaustive(table, trie, prompt)
            allowed = [i for i in range(trie.num_items) if i not in excluded[b]]
            ranked = sorted(allowed, key=lambda i: -expected[i])
            assert items[b, : len(ranked)].tolist() == ranked
