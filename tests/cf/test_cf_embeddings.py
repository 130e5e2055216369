import json

import numpy as np
import pytest

from ilm_keras.cf import CFEmbeddings


def make(**overrides):
    rng = np.random.default_rng(0)
    kwargs = dict(
        user_table=rng.normal(size=(3, 4)),
        item_table=rng.normal(size=(5, 4)).astype(np.float32),
        user_ids=["u1", "u2", "u3"],
        item_ids=["a", "b", "c", "d", "e"],
        method="ials",
        config={"factors": 4, "alpha": 1.0},
    )
    kwargs.update(overrides)
    return CFEmbeddings(**kwargs)


def test_round_trip(tmp_path):
    emb = make()
    assert emb.user_table.dtype == np.float32  # float64 input converted
    path = emb.save(tmp_path / "sub" / "emb")
    assert path.endswith("emb.npz")
    loaded = CFEmbeddings.load(path)
    np.testing.assert_array_equal(loaded.user_table, emb.user_table)
    np.testing.assert_array_equal(loaded.item_table, emb.item_table)
    assert loaded.user_ids == ["u1", "u2", "u3"]
    assert loaded.item_ids == ["a", "b", "c", "d", "e"]
    assert loaded.method == "ials"
    assert loaded.config == {"factors": 4, "alpha": 1.0}
    assert (loaded.num_users, loaded.num_items, loaded.dim) == (3, 5, 4)


def test_default_ids():
    emb = make(user_ids=None, item_ids=None)
    assert emb.user_ids == ["0", "1", "2"]
    assert emb.item_ids[-1] == "4"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"user_table": np.zeros((3,))}, "must be a 2-D array"),
        ({"item_table": np.zeros((5, 3))}, "same embedding dim"),
        ({"item_table": np.zeros((5, 4), dtype=np.int32)}, "floating-point"),
        (
            {"item_table": np.array([[0.0] * 4] * 2 + [[np.nan] * 4] * 3)},
            r"`item_table` holds NaN or inf in 3 row\(s\), first rows: \[2, 3, 4\]",
        ),
        ({"user_ids": ["u1", "u2"]}, "2 ids for a table of 3 rows"),
        ({"item_ids": ["a", "b", "a", "d", "e"]}, "id 'a' more than once"),
        ({"config": {"f": object()}}, "JSON-serializable"),
    ],
)
def test_construction_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def _write(path, **arrays):
    fields = dict(
        format_version=np.int64(1),
        user_table=np.zeros((2, 3), np.float32),
        item_table=np.zeros((4, 3), np.float32),
        user_ids=np.array(["x", "y"]),
        item_ids=np.array(["a", "b", "c", "d"]),
        method=np.array("ials"),
        config=np.array(json.dumps({})),
    )
    fields.update(arrays)
    fields = {k: v for k, v in fields.items() if v is not None}
    np.savez(path, **fields)
    return str(path)


def test_load_valid_hand_written_file(tmp_path):
    emb = CFEmbeddings.load(_write(tmp_path / "ok.npz"))
    assert emb.num_items == 4


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"item_table": None}, r"missing arrays \['item_table'\]"),
        ({"user_table": np.zeros((2, 3))}, "`user_table` has dtype float64"),
        ({"format_version": np.int64(7)}, "format_version 7"),
        ({"item_ids": np.array(["a", "b"])}, "2 ids for a table of 4 rows"),
        (
            {"item_table": np.full((4, 3), np.inf, np.float32)},
            "NaN or inf",
        ),
        ({"config": np.array("{not json")}, "not valid JSON"),
    ],
)
def test_load_errors_name_file_and_problem(tmp_path, arrays, message):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as info:
        CFEmbeddings.load(path)
    assert "bad.npz" in str(info.value)


def test_load_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        CFEmbeddings.load(tmp_path / "nope.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("hello")
    with pytest.raises(ValueError, match="garbage.npz: not a readable .npz"):
        CFEmbeddings.load(garbage)
