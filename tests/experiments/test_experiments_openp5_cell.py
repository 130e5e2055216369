"""run_openp5_cell on tiny synthetic data: outputs, shared phases, resuming."""

import dataclasses
import json
import os

import pytest

from ilm_keras import data as ild
from ilm_keras.experiments import PipelineConfig
from ilm_keras.experiments.openp5 import run_openp5_cell
from ilm_keras.experiments.openp5 import shared_phases

CONFIG = PipelineConfig(
    max_history=3, cf_dim=8, cf_iterations=3, llm_layers=1, llm_hidden=16,
    llm_heads=2, llm_epochs=1, llm_batch_size=64, templates_per_example=1,
    phase2_epochs=2, phase2_batch_size=64, phase2_steps_per_epoch=2,
    num_mlp_tokens=1, max_eval_users=4, max_valid_users=4, length_bucket=64,
    verbose=0,
)


def test_cells_share_phases_and_resume(tmp_path):
    data, _ = ild.make_synthetic_data(num_users=30, num_items=20, num_clusters=2,
                                      interactions_per_user=5)
    data = ild.random_indexing(data, seed=0)
    shared = str(tmp_path / "shared")
    logs = []
    none = run_openp5_cell(data, "none", CONFIG, str(tmp_path / "none"),
                           shared_dir=shared, log=logs.append)
    assert set(none["test"]) == {
        "sequential/seen", "sequential/unseen",
        "straightforward/seen", "straightforward/unseen",
    }
    for metrics in none["test"].values():
        assert 0.0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1.0
        assert metrics["num_users"] == 4
    assert none["valid_per_epoch"] is None  # OpenP5-R trains nothing.
    # The kept model on the validation targets of the same users.
    assert set(none["valid"]) == {"sequential/seen"}
    valid = none["valid"]["sequential/seen"]
    assert valid["num_users"] == 4
    assert 0.0 <= valid["NDCG@5"] <= valid["HR@5"] <= valid["HR@10"] <= 1.0
    with open(tmp_path / "none" / "results.md") as f:
        assert "| validation: sequential/seen |" in f.read()
    assert os.path.exists(tmp_path / "none" / "results.md")

    # A second variant loads CF and the LLM instead of retraining them.
    logs.clear()
    mlp = run_openp5_cell(data, "mlp", CONFIG, str(tmp_path / "mlp"),
                          shared_dir=shared, log=logs.append)
    assert any("loaded" in line and "cf.npz" in line for line in logs)
    assert any("loaded" in line and "llm_backbone.keras" in line for line in logs)
    assert [s["epoch"] for s in mlp["valid_per_epoch"]] == [0, 1]
    assert mlp["references"] == none["references"]
    assert set(none["references"]["test"]) == {"popularity", "iALS", "last item",
                                               "random"}
    for metrics in none["references"]["test"].values():
        assert metrics["num_users"] == 4  # the LLM rows' users

    # A finished cell is read back, not rerun.
    logs.clear()
    again = run_openp5_cell(data, "mlp", CONFIG, str(tmp_path / "mlp"),
                            shared_dir=shared, log=logs.append)
    with open(tmp_path / "mlp" / "results.json") as f:
        assert again == json.load(f)
    assert logs and "done" in logs[0]

    # Cells and shared references written before the last-item row get it
    # when read back, with the same numbers.
    for path in (tmp_path / "mlp" / "results.json", tmp_path / "shared" / "references.json"):
        with open(path) as f:
            old = json.load(f)
        refs = old.get("references", old)
        for subset in ("valid", "test"):
            del refs[subset]["last item"]
        with open(path, "w") as f:
            json.dump(old, f)
    assert run_openp5_cell(data, "mlp", CONFIG, str(tmp_path / "mlp"),
                           shared_dir=shared, log=logs.append) == again
    assert shared_phases(data, CONFIG, shared, need_qformer=False,
                         log=logs.append)["references"] == again["references"]


class _Killed(Exception):
    pass


def test_a_cell_killed_mid_training_resumes_from_its_last_epoch(
    tmp_path, monkeypatch
):
    """Phase 2 dies in its second epoch; the rerun starts at that epoch
    (not from scratch) and keeps the first epoch's validation score."""
    import keras

    from ilm_keras.experiments import openp5

    data, _ = ild.make_synthetic_data(num_users=30, num_items=20, num_clusters=2,
                                      interactions_per_user=5)
    data = ild.random_indexing(data, seed=0)
    train_phase2 = openp5.pl.train_phase2
    epochs_begun = []

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self._epoch == 1:  # mid-way through the second epoch
                raise _Killed()

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_begun.append(epoch)

    def with_callback(callback):
        def run(model, split, config, callbacks=None, **kwargs):
            return train_phase2(model, split, config,
                                callbacks=list(callbacks or []) + [callback],
                                **kwargs)
        return run

    out = str(tmp_path / "mlp")
    monkeypatch.setattr(openp5.pl, "train_phase2", with_callback(Kill()))
    with pytest.raises(_Killed):
        run_openp5_cell(data, "mlp", CONFIG, out, log=lambda _: None)
    assert not os.path.exists(os.path.join(out, "results.json"))

    monkeypatch.setattr(openp5.pl, "train_phase2", with_callback(Record()))
    logs = []
    resumed = run_openp5_cell(data, "mlp", CONFIG, out, log=logs.append)
    assert epochs_begun == [1]
    assert [s["epoch"] for s in resumed["valid_per_epoch"]] == [0, 1]
    # CF and the LLM were finished before the kill: loaded, not retrained.
    assert any("loaded" in line and "llm_backbone.keras" in line for line in logs)


def test_slot_pretrained_decoder_is_shared_by_encoders_and_stays_frozen(tmp_path):
    """`llm_slot_encoder="mlp"` (beyond the paper): the variants with soft
    tokens read a decoder pretrained with slots, frozen in phase 2;
    OpenP5-R keeps the text-only decoder."""
    import numpy as np

    from ilm_keras.models.item_language_model import ItemLanguageModel
    from ilm_keras.utils import files

    data, _ = ild.make_synthetic_data(num_users=30, num_items=20, num_clusters=2,
                                      interactions_per_user=5)
    data = ild.random_indexing(data, seed=0)
    config = dataclasses.replace(CONFIG, llm_slot_encoder="mlp",
                                 num_mlp_tokens=2, num_query_tokens=2)
    shared = str(tmp_path / "shared")
    logs = []
    mlp = run_openp5_cell(data, "mlp", config, str(tmp_path / "mlp"),
                          shared_dir=shared, log=logs.append)
    assert any("soft-token slots" in line for line in logs)
    assert not os.path.exists(os.path.join(shared, "llm_backbone.keras"))
    assert set(mlp["slot_pretraining"]) == set(mlp["test"])
    for metrics in mlp["slot_pretraining"].values():
        assert 0.0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1.0

    # Phase 2 left the slot decoder as pretrained.
    slots = files.load_model(os.path.join(shared, "llm_slots_backbone.keras"))
    trained = ItemLanguageModel.from_preset(mlp["preset"]).backbone.llm
    for a, b in zip(slots.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)

    # OpenP5-R pretrains and reads the text-only decoder; every later cell
    # with soft tokens loads the slot decoder instead of pretraining it
    # again (what `run_openp5_cell` asks of `shared_phases`).
    logs.clear()
    none = run_openp5_cell(data, "none", config, str(tmp_path / "none"),
                           shared_dir=shared, log=logs.append)
    assert none["slot_pretraining"] is None
    assert any("text-only" in line for line in logs)
    text = files.load_model(os.path.join(shared, "llm_backbone.keras"))
    assert any(np.abs(a - b).max() > 1e-3
               for a, b in zip(text.get_weights(), slots.get_weights())
               if a.shape == b.shape)
    logs.clear()
    again = shared_phases(data, config, shared, need_qformer=False,
                          log=logs.append, slot_llm=True)
    assert any("loaded" in line and "llm_slots_backbone.keras" in line
               for line in logs)
    assert not any("pretraining" in line for line in logs)
    for a, b in zip(slots.get_weights(), again["backbone"].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert again["slot_pretraining"] == mlp["slot_pretraining"]


def test_slot_pretraining_needs_one_slot_layout():
    from ilm_keras.experiments import pipeline as pl

    data, _ = ild.make_synthetic_data(num_users=30, num_items=20, num_clusters=2,
                                      interactions_per_user=5)
    split = pl.prepare_split(data, CONFIG)
    config = dataclasses.replace(CONFIG, llm_slot_encoder="mlp",
                                 num_mlp_tokens=1, num_query_tokens=4)
    with pytest.raises(ValueError, match="num_mlp_tokens"):
        pl.pretrain_llm_with_slots(split, None, None, config)
    with pytest.raises(ValueError, match="llm_slot_encoder"):
        pl.pretrain_llm_with_slots(split, None, None, CONFIG)
