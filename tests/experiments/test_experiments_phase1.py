"""Phase 1 of the pipeline on data with and without item texts."""

import dataclasses

import pytest

from ilm_keras import data as ild
from ilm_keras.experiments import PipelineConfig
from ilm_keras.experiments import pipeline as pl

CONFIG = PipelineConfig(
    max_history=3, cf_dim=8, cf_iterations=3, qformer_layers=1,
    qformer_hidden=16, qformer_heads=2, num_query_tokens=2, num_cf_tokens=2,
    phase1_epochs=1, phase1_batch_size=8, phase1_steps_per_epoch=4, verbose=0,
)


@pytest.fixture(scope="module")
def textless_split():
    data, _ = ild.make_synthetic_data(num_users=30, num_items=20, num_clusters=2,
                                      interactions_per_user=5)
    data = dataclasses.replace(data, item_texts=None)  # like OpenP5 Beauty
    split = pl.prepare_split(data, CONFIG)
    _, user_table, item_table = pl.train_cf(split, CONFIG)
    return split, user_table, item_table


def test_text_free_phase1_trains_pair_losses(textless_split):
    split, user_table, item_table = textless_split
    config = dataclasses.replace(CONFIG, phase1_losses="ii_ui")
    qformer, history = pl.pretrain_qformer(split, user_table, item_table, config)
    assert set(history.history) == {"loss", "ii_loss", "ui_loss"}
    assert len(history.history["loss"]) == 1
    items = qformer.encode_items(item_table[:3])
    assert tuple(items.shape) == (3, 2, 16)


def test_item_text_losses_without_texts_name_the_fix(textless_split):
    split, user_table, item_table = textless_split
    config = dataclasses.replace(CONFIG, phase1_losses="it_ui")
    with pytest.raises(ValueError, match="no item texts.*'ii_ui'"):
        pl.pretrain_qformer(split, user_table, item_table, config)
