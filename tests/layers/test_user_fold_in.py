"""User vectors folded in from a prompt's items: exact, and leak free."""

import keras
import numpy as np
import pytest

from ilm_keras import data as ild
from ilm_keras.cf import IALS
from ilm_keras.layers.item_soft_tokens import ItemSoftTokens
from ilm_keras.layers.user_fold_in import fold_in_users
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)

REGULARIZATION, ALPHA = 10.0, 5.0


def test_fold_in_users_equals_ials_fold_in():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 30, rng.integers(3, 15)) for _ in range(60)]
    ials = IALS(factors=6, regularization=3.0, alpha=2.0, iterations=4, seed=0)
    ials.fit(sequences, num_items=30)
    histories = [[3, 7], [1, 1, 2, 9, 9, 9], list(range(12))]
    rows = np.full((4, 12), -1)
    for i, h in enumerate(histories):
        rows[i, : len(h)] = h
    got = keras.ops.convert_to_numpy(
        fold_in_users(ials.item_table, rows, 3.0, 2.0)
    )
    np.testing.assert_allclose(got[:3], ials.fold_in(histories), atol=1e-5)
    np.testing.assert_array_equal(got[3], 0.0)  # no item: the empty history


@pytest.fixture(scope="module")
def problem():
    """400 synthetic users; CF fitted on all of them (`ials`) and, as the
    leak-free reference, on the even users only (`reference`)."""
    data, _ = ild.make_synthetic_data(
        num_users=400, num_items=40, num_clusters=4, interactions_per_user=12,
        seed=0,
    )
    data = ild.random_indexing(data, seed=0)
    split = ild.leave_last_out(data, max_history=5)
    sequences = split.train_sequences
    held = np.arange(data.num_users) % 2 == 1

    def fit(seqs):
        ials = IALS(factors=8, regularization=REGULARIZATION, alpha=ALPHA,
                    iterations=10, seed=0)
        ials.fit(seqs, num_users=data.num_users, num_items=data.num_items)
        return ials

    ials = fit(sequences)
    reference = fit([s[:0] if held[u] else s for u, s in enumerate(sequences)])
    examples = split.train_examples()
    keep = held[examples.users]
    known = [h for h, k in zip(split.known_items("train"), keep) if k]
    examples = ild.SequenceExamples(
        examples.users[keep],
        [h for h, k in zip(examples.histories, keep) if k],
        examples.targets[keep],
    )
    return dict(data=data, ials=ials, reference=reference,
                examples=examples, known=known)


def _hit_rate(user_vectors, item_table, targets, known, k=5):
    scores = user_vectors @ item_table.T
    for row, items in enumerate(known):
        scores[row, items] = -np.inf
    target = scores[np.arange(len(scores)), targets]
    return float(((scores > target[:, None]).sum(axis=1) < k).mean())


def _user_soft_token_vectors(problem, user_vectors):
    """The CF vector behind the user mention's soft tokens, for the held-out
    users' training prompts, through the real prompt path."""
    data, ials = problem["data"], problem["ials"]
    layer = ItemSoftTokens(
        "mlp", output_dim=4, num_rows=data.num_items + data.num_users,
        cf_dim=8, num_items=data.num_items, user_vectors=user_vectors,
        fold_in_regularization=REGULARIZATION, fold_in_alpha=ALPHA,
        cf_table_initializer=keras.initializers.Constant(
            np.concatenate([ials.item_table, ials.user_table])
        ),
    )
    tokenizer = OpenP5Tokenizer.from_texts(
        [], item_ids=data.item_index, item_indexing="atomic"
    )
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, item_ids=data.item_index, user_ids=data.user_index,
        sequence_length=96, max_mentions=8, num_soft_tokens=1,
    )
    pairs = ild.prompt_pairs(data, problem["examples"], "sequential", 0)
    x = preprocessor.generate_preprocess([p for p, _ in pairs])
    assert (x["entity_ids"][:, 0] >= data.num_items).all()  # user comes first
    vectors = keras.ops.convert_to_numpy(layer.mention_vectors(x["entity_ids"]))
    return vectors[:, 0]


def test_training_targets_are_no_easier_to_read_than_unseen_ones(problem):
    """A training prompt's soft tokens must not carry its target.

    Reference: the same prompts with CF fitted without their users, as at
    test time, where CF never saw the target. With the user's table row
    (fitted on sequences that hold every training target) the target is
    much easier to read than in the reference; with the vector folded in
    from the prompt's own items it is not (up to how much each item vector
    learned from one user). Measured over seeds 0-4 of this fixture's
    generator: table +0.11..+0.14 HR@5 over the reference, fold-in
    +0.000..+0.014."""
    ials, reference = problem["ials"], problem["reference"]
    examples, known = problem["examples"], problem["known"]
    clean = _hit_rate(
        reference.fold_in(examples.histories), reference.item_table,
        examples.targets, known,
    )
    folded = _hit_rate(
        _user_soft_token_vectors(problem, "fold_in"), ials.item_table,
        examples.targets, known,
    )
    table = _hit_rate(
        _user_soft_token_vectors(problem, "table"), ials.item_table,
        examples.targets, known,
    )
    assert folded <= clean + 0.04, (folded, clean)
    # The check can fail: the paper's table rows do leak.
    assert table >= clean + 0.07, (table, clean)
