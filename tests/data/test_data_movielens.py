"""MovieLens loaders on small files in the real formats, written by the tests."""

import numpy as np
import pytest

from ilm_keras.data import movielens
from ilm_keras.data.movielens import ML100K_GENRES


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def u_item_line(movie, title, genres, release="01-Jan-1995"):
    flags = ["1" if g in genres else "0" for g in ML100K_GENRES]
    return "|".join([str(movie), title, release, "", "http://x"] + flags)


def full_ratings(users, items, sep="\t", start=1000):
    """Every user rates every item, one second apart."""
    lines, t = [], start
    for u in users:
        for i in items:
            lines.append(sep.join([str(u), str(i), "4", str(t)]))
            t += 1
    return lines


def test_ml100k_original_format(tmp_path):
    lines = full_ratings([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    write(tmp_path / "u.data", "\n".join(lines) + "\n")
    write(
        tmp_path / "u.item",
        "\n".join(
            [
                u_item_line(10, "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
                u_item_line(20, "Misérables, Les (1995)", ["Drama", "Musical"]),
                u_item_line(30, "unknown", ["unknown"], release=""),
                u_item_line(40, "Usual Suspects, The (1995)", ["Crime", "Thriller"]),
            ]
        )
        + "\n",
        encoding="latin-1",
    )
    data = movielens.load_ml100k(tmp_path)
    assert data.stats() == {"users": 5, "items": 5, "interactions": 25}
    assert data.item_ids == ["10", "20", "30", "40", "50"]
    assert data.item_texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert data.item_texts[1] == "Les Misérables (1995). Genres: Drama, Musical."
    assert data.item_texts[2] == "unknown."
    assert data.item_texts[3] == "The Usual Suspects (1995). Genres: Crime, Thriller."
    assert data.item_texts[4] is None  # Item 50 is not in u.item.
    assert data.item_meta[1] == {"title": "Misérables, Les", "year": 1995, "genres": ["Drama", "Musical"]}
    np.testing.assert_array_equal(data.sequences[0], [0, 1, 2, 3, 4])
    assert data.dropped == {}


def test_ml100k_recbole_format(tmp_path):
    lines = full_ratings([7, 8, 9, 11, 12], [1, 2, 3, 4, 5])
    write(
        tmp_path / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "\n".join(lines)
        + "\n",
    )
    write(
        tmp_path / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
        "3\tunkonwn\tunkonwn\tunknown\n",
    )
    data = movielens.load_movielens(tmp_path)
    assert data.stats() == {"users": 5, "items": 5, "interactions": 25}
    # Users are numbered in ascending raw id order (numeric, not text).
    assert data.user_ids == ["7", "8", "9", "11", "12"]
    assert data.item_texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert data.item_meta[2] == {"title": "unkonwn", "year": None, "genres": []}
    assert data.item_texts[3] is None


def test_ml1m_latin1(tmp_path):
    lines = full_ratings([1, 2, 3, 4, 5], [1, 2, 3, 73, 5], sep="::")
    write(tmp_path / "ratings.dat", "\n".join(lines) + "\n", encoding="latin-1")
    write(
        tmp_path / "movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
        "73::Misérables, Les (1995)::Drama|Musical\n",
        encoding="latin-1",
    )
    data = movielens.load_ml1m(tmp_path)
    assert data.stats() == {"users": 5, "items": 5, "interactions": 25}
    assert data.item_ids == ["1", "2", "3", "5", "73"]
    assert data.item_texts[1] == "Star Wars: Episode IV - A New Hope (1977). Genres: Action, Sci-Fi."
    assert data.item_texts[4] == "Les Misérables (1995). Genres: Drama, Musical."
    assert data.item_meta[4]["title"] == "Misérables, Les"


def test_ml25m_csv(tmp_path):
    lines = full_ratings([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], sep=",")
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
    write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation\n"
        '2,"American President, The (1995)",Comedy|Drama\n'
        "3,20,000 Leagues Under the Sea (1954),Adventure\n"
        "4,Some Film,(no genres listed)\n",
    )
    data = movielens.load_ml25m(tmp_path)
    assert data.num_interactions == 25
    assert data.item_texts[:4] == [
        "Toy Story (1995). Genres: Adventure, Animation.",
        "The American President (1995). Genres: Comedy, Drama.",
        "20,000 Leagues Under the Sea (1954). Genres: Adventure.",
        "Some Film.",
    ]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("3\t10\t4", "field 'timestamp' is missing or empty"),
        ("3\t10\t4\t1000\t7", "expected 4 fields separated by '\\t', found 5"),
        ("3\tten\t4\t1000", "field 'item' is 'ten', not an integer"),
        ("3\t10\tfour\t1000", "field 'rating' is 'four', not a number"),
        ("", "missing or empty"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    lines = full_ratings([1, 2], [10, 20])
    lines.insert(2, bad_line)  # Line 3 of the file.
    write(tmp_path / "u.data", "\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        movielens.load_ml100k(tmp_path, core=1)
    assert f"{tmp_path / 'u.data'}, line 3:" in str(info.value)
    assert message in str(info.value)


def test_malformed_ml1m_and_recbole_lines(tmp_path):
    lines = full_ratings([1, 2], [1, 2], sep="::")
    lines[1] = "1::2::5"
    write(tmp_path / "ratings.dat", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"ratings.dat, line 2: .*'timestamp'"):
        movielens.load_ml1m(tmp_path)

    write(
        tmp_path / "x.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\tlate\n",
    )
    with pytest.raises(ValueError, match=r"x.inter, line 3: field 'timestamp' is 'late'"):
        movielens.load_ml100k(tmp_path)

    write(tmp_path / "movies.dat", "1::A (1990)::Drama\n2::B (1991)\n")
    with pytest.raises(ValueError, match=r"movies.dat, line 2: .*'genres'"):
        movielens.read_movies(tmp_path / "movies.dat")

    write(tmp_path / "movies.csv", "movieId,title,genres\n1,A,Drama\nx,B,Drama\n")
    with pytest.raises(ValueError, match=r"movies.csv, line 3"):
        movielens.read_movies(tmp_path / "movies.csv")

    write(tmp_path / "dup.dat", "1::A (1990)::Drama\n1::B (1991)::Drama\n")
    with pytest.raises(ValueError, match=r"dup.dat, line 2: movie id '1' appears a second time"):
        movielens.read_movies(tmp_path / "dup.dat")


def ratings_frame(rows):
    users, items, times = zip(*rows)
    import pandas as pd

    return pd.DataFrame({"user": users, "item": items, "timestamp": times})


def test_k_core_filter_iterates_until_stable():
    rows = []
    for user in ("A", "B", "C"):
        rows += [(user, "x", 1), (user, "y", 2), (user, "z", 3)]
    # D has 3 items, but w has too few users; once w goes, D has 2 and goes,
    # which a single pass would miss. E has 2 items and goes at once.
    rows += [("D", "x", 1), ("D", "y", 2), ("D", "w", 3)]
    rows += [("E", "w", 1), ("E", "v", 2)]
    data = movielens.build_interaction_data("toy", ratings_frame(rows), core=3)
    assert data.user_ids == ["A", "B", "C"]
    assert data.item_ids == ["x", "y", "z"]
    assert data.num_interactions == 9
    assert data.dropped == {"3-core filter": 5}


def test_five_core_default(tmp_path):
    lines = full_ratings([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    lines += full_ratings([6], [1, 2, 3, 4])  # 4 items: below 5-core.
    write(tmp_path / "u.data", "\n".join(lines) + "\n")
    data = movielens.load_ml100k(tmp_path)
    assert data.num_users == 5 and data.dropped == {"5-core filter": 4}
    assert movielens.load_ml100k(tmp_path, core=1).num_users == 6


def test_tie_rule_and_repeats():
    rows = [
        ("u", "c", 20),  # row 0
        ("u", "b", 10),  # row 1: equal timestamps keep file order: b, a.
        ("u", "a", 10),  # row 2
        ("u", "b", 30),  # row 3: repeat of (u, b); the earliest is kept.
        ("v", "a", 5),
    ]
    data = movielens.build_interaction_data("toy", ratings_frame(rows), core=1)
    sequence = [data.item_ids[i] for i in data.sequences[0]]
    assert sequence == ["b", "a", "c"]
    assert data.dropped == {"repeated (user, item) rows, later ones": 1}


def test_split_title_year():
    assert movielens.split_title_year("Toy Story (1995) ") == ("Toy Story", 1995)
    assert movielens.split_title_year("Heat") == ("Heat", None)
    assert movielens.readable_title("Avventura, L'") == "L'Avventura"
    assert movielens.readable_title("Girl, Interrupted") == "Girl, Interrupted"


def test_not_a_movielens_folder(tmp_path):
    with pytest.raises(ValueError, match="not a MovieLens folder"):
        movielens.load_movielens(tmp_path)
