"""Leave-last-out split and phase-1 pairs on hand-worked cases."""

import numpy as np
import pytest

from ilm_keras.data import InteractionData
from ilm_keras.data import item_item_pairs
from ilm_keras.data import item_text_pairs
from ilm_keras.data import leave_last_out
from ilm_keras.data import user_item_pairs


def make_data(sequences, texts=None):
    num_items = 1 + max(max(s) for s in sequences if len(s))
    return InteractionData(
        name="toy",
        user_ids=[f"u{k}" for k in range(len(sequences))],
        item_ids=[f"i{k}" for k in range(num_items)],
        sequences=[np.array(s) for s in sequences],
        item_texts=texts,
    )


def as_lists(arrays):
    return [list(map(int, a)) for a in arrays]


def test_leave_last_out_hand_worked():
    data = make_data([[0, 1, 2, 3, 4, 5], [6, 5, 4], [7, 8]])
    split = leave_last_out(data, max_history=2)

    assert as_lists(split.train_sequences) == [[0, 1, 2, 3], [6], []]
    np.testing.assert_array_equal(split.excluded_users, [2])

    users, histories, targets = split.train_examples()
    np.testing.assert_array_equal(users, [0, 0, 0])
    assert as_lists(histories) == [[0], [0, 1], [1, 2]]  # Cut to 2 items.
    np.testing.assert_array_equal(targets, [1, 2, 3])

    np.testing.assert_array_equal(split.valid_users, [0, 1])
    assert as_lists(split.valid_history) == [[2, 3], [6]]
    np.testing.assert_array_equal(split.valid_target, [4, 5])

    np.testing.assert_array_equal(split.test_users, [0, 1])
    assert as_lists(split.test_history) == [[3, 4], [6, 5]]
    np.testing.assert_array_equal(split.test_target, [5, 4])

    full = leave_last_out(data, max_history=None)
    assert as_lists(full.test_history) == [[0, 1, 2, 3, 4], [6, 5]]
    assert as_lists(full.train_examples().histories)[-1] == [0, 1, 2]
    for subset in ("train", "valid", "test"):
        examples = split.examples(subset)
        assert len(examples.histories) == len(examples.targets) == len(examples.users)


def test_short_users_error_and_bad_arguments():
    data = make_data([[0, 1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"1 user\(s\) have fewer than 3 items .*'u1' with 2"):
        leave_last_out(data, on_short_user="error")
    with pytest.raises(ValueError, match="max_history"):
        leave_last_out(data, max_history=0)
    with pytest.raises(ValueError, match="no user has 3 or more items"):
        leave_last_out(make_data([[0, 1], [1]]))


def test_item_item_pairs_dedup():
    sequences = [np.array([3, 1, 3, 2]), np.array([1, 3, 3, 0]), np.array([5])]
    pairs = item_item_pairs(sequences)
    # (3,1), (1,3), (3,1) are one pair; (3,3) is a self-pair and left out.
    np.testing.assert_array_equal(pairs, [[0, 3], [1, 3], [2, 3]])
    assert pairs.dtype == np.int64
    assert item_item_pairs([np.array([1])]).shape == (0, 2)


def test_user_item_pairs_dedup():
    pairs = user_item_pairs([np.array([4, 2, 4]), np.array([], dtype=int), np.array([2])])
    np.testing.assert_array_equal(pairs, [[0, 2], [0, 4], [2, 2]])
    assert pairs.dtype == np.int64


def test_item_text_pairs():
    data = make_data([[0, 1, 2]], texts=["Alpha.", None, "Gamma."])
    items, texts = item_text_pairs(data)
    np.testing.assert_array_equal(items, [0, 2])
    assert texts == ["Alpha.", "Gamma."]
    with pytest.raises(ValueError, match="no item texts"):
        item_text_pairs(make_data([[0, 1, 2]]))


def test_pairs_from_training_sequences_exclude_held_out_items():
    data = make_data([[0, 1, 2, 3, 4]])
    split = leave_last_out(data)
    assert 3 not in item_item_pairs(split.train_sequences)
    np.testing.assert_array_equal(user_item_pairs(split.train_sequences)[:, 1], [0, 1, 2])
