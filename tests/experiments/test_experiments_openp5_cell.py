"""run_openp5_cell on tiny synthetic data: outputs, shared phases, resuming."""

import json
import os

from ilm_keras import data as ild
from ilm_keras.experiments import PipelineConfig
from ilm_keras.experiments.openp5 import run_openp5_cell

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
    assert os.path.exists(tmp_path / "none" / "results.md")

    # A second variant loads CF and the LLM instead of retraining them.
    logs.clear()
    mlp = run_openp5_cell(data, "mlp", CONFIG, str(tmp_path / "mlp"),
                          shared_dir=shared, log=logs.append)
    assert any("loaded" in line and "cf.npz" in line for line in logs)
    assert any("loaded" in line and "llm_backbone.keras" in line for line in logs)
    assert [s["epoch"] for s in mlp["valid_per_epoch"]] == [0, 1]
    assert mlp["cf_dot_product"] == none["cf_dot_product"]

    # A finished cell is read back, not rerun.
    logs.clear()
    again = run_openp5_cell(data, "mlp", CONFIG, str(tmp_path / "mlp"),
                            shared_dir=shared, log=logs.append)
    with open(tmp_path / "mlp" / "results.json") as f:
        assert again == json.load(f)
    assert logs and "done" in logs[0]
