"""The non-LLM reference rows of the OpenP5 tables, against rankings done
by hand on a tiny synthetic split."""

import numpy as np
import pytest

from ilm_keras import data as ild
from ilm_keras.experiments import PipelineConfig
from ilm_keras.experiments import pipeline as pl


@pytest.mark.parametrize("exclude_history", [True, False])
def test_last_item_metrics_rank_by_the_last_shown_item(exclude_history):
    data, _ = ild.make_synthetic_data(num_users=40, num_items=30, num_clusters=3,
                                      interactions_per_user=6)
    split = pl.prepare_split(data, PipelineConfig(max_history=3))
    table = np.random.default_rng(0).normal(size=(data.num_items, 4)).astype("float32")
    got = pl.last_item_metrics(table, split, "test", exclude_history, max_users=25)

    rows = pl.evaluation_rows(split, "test", 25)
    examples, known = split.examples("test"), split.known_items("test")
    hits, gains = [], []
    for r in rows:
        scores = table @ table[examples.histories[r][-1]]
        if exclude_history:
            scores[[i for i in known[r] if i != examples.targets[r]]] = -np.inf
        rank = int(np.sum(scores > scores[examples.targets[r]]))
        hits.append(rank < 10)
        gains.append(1.0 / np.log2(rank + 2) if rank < 10 else 0.0)
    assert got["num_users"] == 25
    np.testing.assert_allclose(got["HR@10"], np.mean(hits), atol=1e-6)
    np.testing.assert_allclose(got["NDCG@10"], np.mean(gains), atol=1e-5)
