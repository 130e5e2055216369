import math

import numpy as np
import pytest

from ilm_keras.metrics import hit_rate_at_k
from ilm_keras.metrics import ndcg_at_k
from ilm_keras.metrics import target_ranks

RANKED = [[3, 1, 2], [5, 6, -1], [7, 8, 9]]
TARGETS = [1, 7, 9]


def openp5_reference(ranked, targets, k):
    """OpenP5's rel-list formulas (sum over rows, then / number of users)."""
    relevance = [
        [int(item == t) for item in row] for row, t in zip(ranked, targets)
    ]
    hits = sum(1.0 for row in relevance if sum(row[:k]) > 0)
    ndcg = sum(
        sum(rel / math.log(i + 2, 2) for i, rel in enumerate(row[:k]))
        for row in relevance
    )
    return hits / len(targets), ndcg / len(targets)


def test_hand_worked_k2():
    # user 0: target at rank 2 -> 1/log2(3); user 1: absent; user 2: rank 3 > k.
    assert hit_rate_at_k(RANKED, TARGETS, k=2) == pytest.approx(1 / 3)
    assert ndcg_at_k(RANKED, TARGETS, k=2) == pytest.approx(
        (1 / math.log2(3)) / 3
    )


def test_hand_worked_k3():
    assert hit_rate_at_k(RANKED, TARGETS, k=3) == pytest.approx(2 / 3)
    assert ndcg_at_k(RANKED, TARGETS, k=3) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4)) / 3
    )


def test_first_position_scores_one():
    assert ndcg_at_k([[4, 1]], [4], k=1) == 1.0
    assert hit_rate_at_k([[4, 1]], [4], k=1) == 1.0


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_matches_openp5_formulas(k):
    rng = np.random.default_rng(k)
    ranked = np.stack([rng.permutation(12)[:5] for _ in range(40)])
    targets = rng.integers(0, 12, size=40)
    hr, ndcg = openp5_reference(ranked.tolist(), targets.tolist(), k)
    assert hit_rate_at_k(ranked, targets, k) == pytest.approx(hr)
    assert ndcg_at_k(ranked, targets, k) == pytest.approx(ndcg)
    # The list path (ragged input) agrees with the array path.
    assert ndcg_at_k(ranked.tolist(), targets.tolist(), k) == pytest.approx(
        ndcg
    )


def test_ragged_string_lists_and_pads_keep_their_position():
    ranked = [["item_1", "item_2"], ["item_3"], [None, "item_9"]]
    targets = ["item_3", "item_3", "item_9"]
    np.testing.assert_array_equal(target_ranks(ranked, targets, k=5), [0, 1, 2])
    assert hit_rate_at_k(ranked, targets, k=5) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranked, targets, k=5) == pytest.approx(
        (1 + 1 / math.log2(3)) / 3
    )
    np.testing.assert_array_equal(target_ranks([[-1, 4]], [4]), [2])


def test_errors():
    with pytest.raises(ValueError, match="item 3 twice"):
        ndcg_at_k([[3, 3, 1]], [1], k=3)
    with pytest.raises(ValueError, match="list 1 contains item 'b' twice"):
        ndcg_at_k([["a"], ["b", "b"]], ["a", "b"], k=3)
    # Pads may repeat; duplicates beyond k do not matter.
    assert hit_rate_at_k(np.array([[-1, -1, 2, 5, 5]]), [2], k=3) == 1.0
    with pytest.raises(ValueError, match="2 ranked lists for 1 targets"):
        hit_rate_at_k([[1], [2]], [1], k=1)
    with pytest.raises(ValueError, match="targets` is empty"):
        hit_rate_at_k([], [], k=1)
    with pytest.raises(ValueError, match="padding value"):
        hit_rate_at_k(np.array([[1, 2]]), np.array([-1]), k=1)
    with pytest.raises(ValueError, match="padding value"):
        hit_rate_at_k([[1, 2]], [None], k=1)
    for bad_k in (0, 1.5, True):
        with pytest.raises(ValueError, match="positive int"):
            ndcg_at_k([[1]], [1], k=bad_k)
