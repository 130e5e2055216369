"""Truncated files of a resumable OpenP5 cell: a clear error, never a silent
restart from scratch nor a crash deep inside zipfile or h5py.

One ILM cell is stopped in phase 2 (by an exception, after a mid-epoch
backup), so that every kind of file the pipeline writes exists: the CF
tables (`.npz`), JSON files, `.keras` models, the best-epoch `.weights.h5`
checkpoint and a training backup. Each file in turn is cut to half its
size in a copy of the run, and the rerun must raise `CorruptFileError`
naming the file and what to delete.
"""

import os
import shutil

import keras
import numpy as np
import pytest

from ilm_keras import data as ild
from ilm_keras.experiments import PipelineConfig
from ilm_keras.experiments import openp5
from ilm_keras.utils import files
from ilm_keras.utils.files import CorruptFileError
from ilm_keras.utils.resume import TrainingBackup

CONFIG = PipelineConfig(
    max_history=3, cf_dim=8, cf_iterations=3, qformer_layers=1,
    qformer_hidden=16, qformer_heads=2, num_query_tokens=2, num_cf_tokens=2,
    phase1_losses="ii_ui", phase1_epochs=1, phase1_batch_size=8,
    phase1_steps_per_epoch=2, llm_layers=1, llm_hidden=16, llm_heads=2,
    llm_epochs=1, llm_batch_size=16, llm_steps_per_epoch=2,
    templates_per_example=1, phase2_epochs=2, phase2_batch_size=16,
    phase2_steps_per_epoch=4, max_eval_users=4, max_valid_users=4,
    length_bucket=64, verbose=0, backup_steps=2,
)


class _Stop(Exception):
    pass


def _data():
    data, _ = ild.make_synthetic_data(num_users=30, num_items=20,
                                      num_clusters=2, interactions_per_user=5)
    return ild.random_indexing(data, seed=0)


@pytest.fixture(scope="module")
def stopped_cell(tmp_path_factory):
    """A cell stopped in phase 2's second epoch, after its backup at step 6."""
    out = tmp_path_factory.mktemp("cell") / "ilm"
    train_phase2 = openp5.pl.train_phase2

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == (1, 2):
                raise _Stop()

    def stopped(model, split, config, callbacks=None, **kwargs):
        return train_phase2(model, split, config,
                            callbacks=list(callbacks or []) + [Stop()],
                            **kwargs)

    openp5.pl.train_phase2 = stopped
    try:
        with pytest.raises(_Stop):
            openp5.run_openp5_cell(_data(), "ilm", CONFIG, str(out),
                                   log=lambda _: None)
    finally:
        openp5.pl.train_phase2 = train_phase2
    return out


# (file, the paths the error must name to delete, relative to the cell)
CASES = [
    ("cf.npz", ["cf.npz"]),
    ("references.json", ["references.json"]),
    ("qformer_ii_ui.keras", ["qformer_ii_ui.keras"]),
    ("llm_vocabulary.json", ["llm_vocabulary.json"]),
    ("llm_backbone.keras", ["llm_backbone.keras"]),
    ("best.weights.h5",
     ["best.weights.h5", "best.weights.h5.json", "backup/phase2"]),
    ("best.weights.h5.json",
     ["best.weights.h5", "best.weights.h5.json", "backup/phase2"]),
    ("backup/phase2/state.npz", ["backup/phase2"]),
]


def _truncate(path):
    size = os.path.getsize(path)
    assert size > 2
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _copy(cell, tmp_path):
    copy = tmp_path / "ilm"
    shutil.copytree(cell, copy)
    return copy


def test_the_stopped_cell_has_every_kind_of_file(stopped_cell):
    for name, _ in CASES:
        assert (stopped_cell / name).exists(), name
    assert not (stopped_cell / "results.json").exists()
    # Nothing but complete files: no temporary file left behind.
    for root, _, names in os.walk(stopped_cell):
        assert not [n for n in names if n.startswith(".tmp-")], root


@pytest.mark.parametrize("name, delete", CASES, ids=[c[0] for c in CASES])
def test_a_truncated_file_names_itself_and_what_to_delete(
    stopped_cell, tmp_path, name, delete
):
    cell = _copy(stopped_cell, tmp_path)
    _truncate(cell / name)
    with pytest.raises(CorruptFileError) as error:
        openp5.run_openp5_cell(_data(), "ilm", CONFIG, str(cell),
                               log=lambda _: None)
    message = str(error.value)
    assert str(cell / name) in message
    assert "truncated or corrupt" in message
    for path in delete:
        assert f"{cell / path}" in message
    assert [os.path.normpath(p) for p in error.value.delete] == [
        os.path.normpath(str(cell / p)) for p in delete
    ]


def test_a_missing_best_checkpoint(stopped_cell, tmp_path):
    """Without it the resumed cell would end with its last epoch's weights
    while its scores say another epoch was kept."""
    cell = _copy(stopped_cell, tmp_path)
    os.remove(cell / "best.weights.h5")
    with pytest.raises(CorruptFileError, match="is missing") as error:
        openp5.run_openp5_cell(_data(), "ilm", CONFIG, str(cell),
                               log=lambda _: None)
    assert str(cell / "best.weights.h5.json") in str(error.value)


def test_a_truncated_results_file(stopped_cell, tmp_path):
    cell = _copy(stopped_cell, tmp_path)
    files.write_text(cell / "results.json", '{"dataset": "synth')
    with pytest.raises(CorruptFileError, match="results.json"):
        openp5.run_openp5_cell(_data(), "ilm", CONFIG, str(cell),
                               log=lambda _: None)


def test_deleting_what_the_error_names_recomputes_it(stopped_cell, tmp_path):
    cell = _copy(stopped_cell, tmp_path)
    want = files.read_npz(cell / "cf.npz")
    _truncate(cell / "cf.npz")
    with pytest.raises(CorruptFileError) as error:
        openp5.shared_phases(_data(), CONFIG, str(cell), need_qformer=True,
                             log=lambda _: None)
    for path in error.value.delete:
        os.remove(path)
    logs = []
    shared = openp5.shared_phases(_data(), CONFIG, str(cell),
                                  need_qformer=True, log=logs.append)
    assert any(line.startswith("phase 0: iALS") for line in logs)
    assert any("phase 1: loaded" in line for line in logs)
    np.testing.assert_array_equal(shared["item_table"], want["item_table"])
    np.testing.assert_array_equal(shared["user_table"], want["user_table"])


def test_a_keras_backup_is_not_taken_for_no_backup(tmp_path):
    """A folder holding `keras.callbacks.BackupAndRestore` files (an older
    run of the pipeline) is refused, not silently ignored."""
    backup = TrainingBackup(tmp_path / "phase2")
    os.makedirs(backup.directory)
    files.write_json(os.path.join(backup.directory, "training_metadata.json"),
                     {"epoch": 1, "batch": 0})
    with pytest.raises(CorruptFileError, match="BackupAndRestore"):
        backup.read()


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A writer that dies half-way leaves the previous file as it was."""
    path = tmp_path / "results.json"
    files.write_json(path, {"a": 1})

    def dying_dump(value, f, **kwargs):
        f.write('{"a": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(files.json, "dump", dying_dump)
    with pytest.raises(KeyboardInterrupt):
        files.write_json(path, {"a": 2})
    assert files.read_json(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]
