"""Tests for ItemTrie (dense trie tables over item token sequences)."""

import numpy as np
import pytest

from ilm_keras.generation.item_trie import ItemTrie

END = 2
SEQUENCES = [[5, 7, END], [5, 8, END], [6, END], [5, 7, 9, END]]


def walk(trie, seq):
    node = 0
    for t in seq:
        column = int(np.nonzero(trie.alphabet == t)[0][0])
        node = int(trie.transitions[node, column])
        assert node > 0
    return node


def test_tables_encode_every_sequence():
    trie = ItemTrie(SEQUENCES)
    assert trie.alphabet.tolist() == [2, 5, 6, 7, 8, 9]
    assert trie.max_length == 4 and trie.num_items == 4
    for i, seq in enumerate(SEQUENCES):
        leaf = walk(trie, seq)
        assert trie.leaf_item[leaf] == i
        assert (trie.transitions[leaf] == -1).all()  # leaves have no children
        path = trie.item_paths[i]
        assert path[len(seq) - 1] == leaf and (path[len(seq) :] == -1).all()
    # Root counts every item; the node after token 5 counts three.
    assert trie.item_count[0] == 4
    assert trie.item_count[walk(trie, [5])] == 3
    assert (trie.leaf_item >= 0).sum() == 4
    # Every transition entry is a valid node or -1.
    assert trie.transitions.max() < trie.num_nodes
    assert trie.transitions.min() == -1


def test_alive_mask_excludes_items_and_dead_branches():
    trie = ItemTrie(SEQUENCES)
    alive = trie.alive_mask([[], [2], [0, 1, 3, 3]])
    assert alive.shape == (3, trie.num_nodes)
    assert alive[0].all()
    assert not alive[1, walk(trie, [6])] and not alive[1, walk(trie, [6, END])]
    assert alive[1, walk(trie, [5])]
    # Excluding every item under 5 kills the branch (no dead ends).
    assert not alive[2, walk(trie, [5])] and alive[2, 0]
    with pytest.raises(ValueError, match="out of range"):
        trie.alive_mask([[4]])


def test_invalid_catalogues():
    with pytest.raises(ValueError, match="prefix of item 'b'"):
        ItemTrie([[5, 7], [5, 7, 8]], names=["a", "b"])
    with pytest.raises(ValueError, match="'b'.*prefix of item 'a'"):
        ItemTrie([[5, 7, 8], [5, 7]], names=["a", "b"])
    with pytest.raises(ValueError, match="same tokens"):
        ItemTrie([[5, 7], [5, 7]])
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        ItemTrie([[5], []])
    with pytest.raises(ValueError, match="at least one item"):
        ItemTrie([])


def test_beam_widths_bound_the_beams_per_depth():
    # Depth 1: {5, 6}; depth 2: {5 7, 5 8, 6 2 (an item)}; depth 3: two
    # items plus the finished `6 2`.
    trie = ItemTrie([[5, 7, 2], [5, 8, 2], [6, 2]])
    assert trie.beam_widths(10) == [1, 2, 3, 3]
    assert trie.beam_widths(2) == [1, 2, 2, 2]
    # A shared prefix keeps a single beam.
    trie = ItemTrie([[4, 4, 1, 2], [4, 4, 3, 2]])
    assert trie.beam_widths(5) == [1, 1, 1, 2, 2]


def test_single_tokens_only_for_one_token_items():
    np.testing.assert_array_equal(
        ItemTrie([[7, 2], [5, 2], [9, 2]]).single_tokens(), [7, 5, 9]
    )
    np.testing.assert_array_equal(ItemTrie([[7], [5]]).single_tokens(), [7, 5])
    assert ItemTrie([[5, 7, 2], [5, 8, 2]]).single_tokens() is None
    assert ItemTrie([[7, 2], [5, 3]]).single_tokens() is None  # ends differ
