"""OpenP5 folders and random indexing, on files written by the tests."""

import numpy as np
import pytest

from ilm_keras.data import InteractionData
from ilm_keras.data import load_openp5
from ilm_keras.data import random_indexing
from ilm_keras.data import read_index_file


def write_folder(folder, sequences, item_index=None, user_index=None):
    folder.mkdir(exist_ok=True)
    (folder / "user_sequence.txt").write_text(
        "".join(f"{u} {' '.join(items)}\n" for u, items in sequences)
    )
    if item_index is not None:
        (folder / "item_random_indexing.txt").write_text(
            "".join(f"{i} {k}\n" for i, k in item_index)
        )
    if user_index is not None:
        (folder / "user_indexing.txt").write_text(
            "".join(f"{u} {k}\n" for u, k in user_index)
        )
    return folder


SEQUENCES = [("u9", ["a", "b", "c"]), ("u3", ["c", "a", "d", "b"])]
ITEM_INDEX = [("c", 1001), ("a", 1003), ("b", 1002), ("d", 1004), ("e", 1005)]
USER_INDEX = [("u9", 1), ("u3", 2)]


def test_load_openp5(tmp_path):
    folder = write_folder(tmp_path / "Toy", SEQUENCES, ITEM_INDEX, USER_INDEX)
    data = load_openp5(folder)
    assert data.name == "Toy"
    assert data.stats() == {"users": 2, "items": 4, "interactions": 7}
    # Items are numbered in random-index order; "e" has no interactions.
    assert data.item_ids == ["c", "b", "a", "d"]
    np.testing.assert_array_equal(data.item_index, [1001, 1002, 1003, 1004])
    np.testing.assert_array_equal(data.sequences[1], [0, 2, 3, 1])
    assert data.user_ids == ["u9", "u3"]
    assert data.item_token(2) == "item_1003" and data.user_token(1) == "user_2"
    assert data.item_for_token("item_1004") == 3
    assert data.dropped == {
        "item_random_indexing.txt entries of items without interactions": 1
    }
    with pytest.raises(ValueError, match="no item has the index 999"):
        data.item_for_token("item_999")
    with pytest.raises(ValueError, match="not an item mention"):
        data.item_for_token("user_3")


def test_missing_index_files_are_made_from_a_seed(tmp_path):
    folder = write_folder(tmp_path / "Toy", SEQUENCES)
    first = load_openp5(folder, seed=3)
    again = load_openp5(folder, seed=3)
    np.testing.assert_array_equal(first.item_index, again.item_index)
    assert sorted(first.item_index) == [1001, 1002, 1003, 1004]
    np.testing.assert_array_equal(first.user_index, [1, 2])
    others = [tuple(load_openp5(folder, seed=s).item_ids) for s in range(10)]
    assert len(set(others)) > 1  # The seed changes the shuffle.


def test_item_texts_from_movielens(tmp_path):
    sequences = [("1", ["1", "2", "3"]), ("2", ["2", "1", "3"])]
    folder = write_folder(tmp_path / "ML", sequences, [("1", 1002), ("2", 1001), ("3", 1003)])
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Comedy\n2::Misérables, Les (1995)::Drama\n".encode("latin-1")
    )
    data = load_openp5(folder, item_texts_from=tmp_path / "movies.dat")
    assert data.item_ids == ["2", "1", "3"]
    assert data.item_texts == [
        "Les Misérables (1995). Genres: Drama.",
        "Toy Story (1995). Genres: Animation, Comedy.",
        None,
    ]


@pytest.mark.parametrize(
    "sequence_text, item_index, message",
    [
        ("u1 a b\nu2\n", None, r"user_sequence.txt, line 2: .*has no items"),
        ("u1 a b\nu1 b a\n", None, r"user_sequence.txt, line 2: user 'u1' already .* line 1"),
        ("u1 a b\nu2 a z\n", "a 1001\nb 1002\n", r"user_sequence.txt, line 2: item 'z'"),
        ("u1 a b\n", "a 1001\nb x\n", r"item_random_indexing.txt, line 2: field 'index' is 'x'"),
        ("u1 a b\n", "a 1001\nb 1001\n", r"item_random_indexing.txt, line 2: index '1001' appears"),
        ("u1 a b\n", "a 1001 7\nb 1002\n", r"item_random_indexing.txt, line 1: expected 2 fields"),
    ],
)
def test_malformed_openp5_files(tmp_path, sequence_text, item_index, message):
    (tmp_path / "user_sequence.txt").write_text(sequence_text)
    if item_index is not None:
        (tmp_path / "item_random_indexing.txt").write_text(item_index)
    with pytest.raises(ValueError, match=message):
        load_openp5(tmp_path)


def test_sequences_that_are_not_utf8_name_the_file_and_line(tmp_path):
    (tmp_path / "user_sequence.txt").write_bytes(b"u1 a b\nu2 a \xff\n")
    with pytest.raises(ValueError, match=r"user_sequence.txt, line 2: not UTF-8"):
        load_openp5(tmp_path)


def test_unknown_user_and_not_a_folder(tmp_path):
    write_folder(tmp_path, SEQUENCES, ITEM_INDEX, [("u9", 1)])
    with pytest.raises(ValueError, match=r"line 2: user 'u3' is not in .*user_indexing.txt"):
        load_openp5(tmp_path)
    with pytest.raises(FileNotFoundError, match="no user_sequence.txt"):
        load_openp5(tmp_path / "nothing")


def toy_data():
    return InteractionData(
        name="toy",
        user_ids=["x", "y"],
        item_ids=["a", "b", "c"],
        sequences=[np.array([0, 1, 2]), np.array([2, 1])],
    )


def test_random_indexing_from_seed_or_map(tmp_path):
    data = toy_data()
    with pytest.raises(ValueError, match="random_indexing"):
        data.item_token(0)
    indexed = random_indexing(data, seed=0)
    assert sorted(indexed.item_index) == [1001, 1002, 1003]
    np.testing.assert_array_equal(indexed.user_index, [1, 2])
    assert data.item_index is None  # The input is not changed.
    np.testing.assert_array_equal(
        random_indexing(data, seed=0).item_index, indexed.item_index
    )

    (tmp_path / "items.txt").write_text("c 1005\na 1009\nb 1001\n")
    mapped = random_indexing(data, item_map=read_index_file(tmp_path / "items.txt"),
                             user_map={"x": 7, "y": 3})
    np.testing.assert_array_equal(mapped.item_index, [1009, 1001, 1005])
    assert mapped.user_token(0) == "user_7"
    with pytest.raises(ValueError, match=r"no index for 1 item\(s\), e.g. \['c'\]"):
        random_indexing(data, item_map={"a": 1, "b": 2})


def test_interaction_data_checks_indexing():
    data = toy_data()
    with pytest.raises(ValueError, match="item_index gives the index 5 to more than one"):
        InteractionData("toy", data.user_ids, data.item_ids, data.sequences, item_index=[5, 5, 6])
    with pytest.raises(ValueError, match="user_index has shape"):
        InteractionData("toy", data.user_ids, data.item_ids, data.sequences, user_index=[1])
