import math

import numpy as np
import pytest

from ilm_keras.metrics import evaluate_retrieval
from ilm_keras.metrics import top_k_items

ITEMS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
USERS = np.array([[1.0, 0.2], [0.1, 1.0]])
# Scores: user 0 -> [1, .2, 1.2, -1] (order 2, 0, 1, 3);
#         user 1 -> [.1, 1, 1.1, -.1] (order 2, 1, 0, 3).


def test_top_k_order_ties_and_excluded():
    np.testing.assert_array_equal(
        top_k_items(USERS @ ITEMS.T, 3), [[2, 0, 1], [2, 1, 0]]
    )
    # Ties: lower index first, also when the tie straddles the cut-off.
    np.testing.assert_array_equal(
        top_k_items(np.array([[0.1, 0.5, 0.5, 0.2]]), 2), [[1, 2]]
    )
    np.testing.assert_array_equal(
        top_k_items(np.array([[1.0, 3.0, 3.0, 3.0]]), 2), [[1, 2]]
    )
    np.testing.assert_array_equal(
        top_k_items(np.array([[3.0, 3.0, 3.0, 1.0]]), 4), [[0, 1, 2, 3]]
    )
    # -inf (excluded) positions come back as -1.
    np.testing.assert_array_equal(
        top_k_items(np.array([[-np.inf, 2.0, -np.inf]]), 2), [[1, -1]]
    )


def test_top_k_errors():
    with pytest.raises(ValueError, match="row 1 contains NaN"):
        top_k_items(np.array([[1.0, 2.0], [np.nan, 0.0]]), 1)
    with pytest.raises(ValueError, match="1..2"):
        top_k_items(np.zeros((1, 2)), 3)


def test_hand_worked_full_ranking():
    got = evaluate_retrieval(USERS, ITEMS, targets=[0, 1], ks=(1, 2))
    # Both targets are at rank 2.
    assert got["HR@1"] == 0.0 and got["NDCG@1"] == 0.0
    assert got["HR@2"] == 1.0
    assert got["NDCG@2"] == pytest.approx(1 / math.log2(3))
    assert got["num_users"] == 2
    assert "targets_in_history" not in got


def test_excluding_history():
    histories = [[2], [2]]
    kept = evaluate_retrieval(USERS, ITEMS, [0, 1], histories, ks=(1,))
    assert kept["HR@1"] == 0.0 and kept["targets_in_history"] == 0
    got = evaluate_retrieval(
        USERS,
        ITEMS,
        [0, 1],
        histories,
        exclude_history=True,
        ks=(1,),
        batch_size=1,
    )
    assert got["HR@1"] == 1.0 and got["NDCG@1"] == 1.0
    # A target inside the history is removed with it: a miss, and counted.
    got = evaluate_retrieval(
        USERS, ITEMS, [0, 1], [[0], [2]], exclude_history=True, ks=(1, 3)
    )
    assert got["HR@1"] == 0.5 and got["HR@3"] == 0.5
    assert got["targets_in_history"] == 1


def test_popularity_as_a_dot_product():
    counts = np.array([5.0, 9.0, 1.0, 7.0])
    got = evaluate_retrieval(
        np.ones((3, 1)), counts[:, None], targets=[1, 3, 2], ks=(2,)
    )
    # Order 1, 3, 0, 2: users 0 and 1 hit at ranks 1 and 2, user 2 misses.
    assert got["HR@2"] == pytest.approx(2 / 3)
    assert got["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_errors():
    with pytest.raises(ValueError, match="dim 2 but item vectors have dim 3"):
        evaluate_retrieval(USERS, np.zeros((4, 3)), [0, 1])
    with pytest.raises(ValueError, match="outside 0..3"):
        evaluate_retrieval(USERS, ITEMS, [0, 4])
    with pytest.raises(ValueError, match="needs `histories`"):
        evaluate_retrieval(USERS, ITEMS, [0, 1], exclude_history=True)
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_retrieval(USERS * np.nan, ITEMS, [0, 1])
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        evaluate_retrieval(USERS, ITEMS, [0])
    with pytest.raises(ValueError, match="1 histories for 2 users"):
        evaluate_retrieval(USERS, ITEMS, [0, 1], [[1]])
    with pytest.raises(ValueError, match="ks"):
        evaluate_retrieval(USERS, ITEMS, [0, 1], ks=(5,))
