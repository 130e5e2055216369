"""Tests for OpenP5Tokenizer (the offline tokenizer of the OpenP5 backbone)."""

import numpy as np
import pytest

from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer


def _tokens(tokenizer, text):
    return [tokenizer.id_to_token(int(i)) for i in np.asarray(tokenizer(text))]


@pytest.fixture(scope="module")
def tokenizer():
    return OpenP5Tokenizer.from_texts(["Galaxy Hidden (1984). Genres: Sci-Fi, Drama."])


def test_item_ids_are_spelled_by_digit(tokenizer):
    assert _tokens(tokenizer, "item_1001") == ["item", "_", "1", "##0", "##0", "##1"]
    assert _tokens(tokenizer, "user_7") == ["user", "_", "7"]
    # Every item name of the same length is a path of the same length.
    lengths = {len(np.asarray(tokenizer(f"item_{i}"))) for i in range(1001, 1400)}
    assert lengths == {6}


def test_template_and_text_words_are_known(tokenizer):
    from ilm_keras.data.templates import RECOMMENDATION_TASKS

    for spec in RECOMMENDATION_TASKS.values():
        for template in spec.seen + (spec.unseen,):
            text = template.format(user="user_3", history="item_1001 , item_1002")
            assert tokenizer.count_unknown([text]) == 0, text
    assert tokenizer.count_unknown(["Galaxy Hidden (1999)"]) == 0
    assert tokenizer.count_unknown(["Zebra item_1001"]) == 1


def test_words_with_underscores_are_known():
    # WordPiece splits "sci_fi" at "_"; the vocabulary must hold its parts.
    tokenizer = OpenP5Tokenizer.from_texts(["A sci_fi movie"])
    assert _tokens(tokenizer, "A sci_fi movie") == ["A", "sci", "_", "fi", "movie"]
    assert tokenizer.count_unknown(["A sci_fi movie"]) == 0


def test_piecewise_tokenization_matches_whole(tokenizer):
    # ItemLanguageModelPreprocessor cuts prompts after each mention.
    text = "user_12 went through item_1001 , item_1023. Recommend one item."
    cut = [0, 7, 32, 42, len(text)]
    pieces = [text[a:b] for a, b in zip(cut[:-1], cut[1:])]
    joined = [t for p in pieces for t in np.asarray(tokenizer(p)).tolist()]
    assert joined == np.asarray(tokenizer(text)).tolist()


def test_special_tokens(tokenizer):
    ids = {tokenizer.pad_token_id, tokenizer.start_token_id, tokenizer.end_token_id}
    assert len(ids) == 3
    assert sorted(tokenizer.special_token_ids) == sorted(ids)
    assert tokenizer.pad_token_id == 0


def test_detokenize_glues_mentions(tokenizer):
    out = tokenizer.detokenize(tokenizer(["item_1001 , item_1002", "user_7 : item_42"]))
    out = [o.decode() if isinstance(o, bytes) else str(o) for o in np.asarray(out)]
    assert out == ["item_1001 , item_1002", "user_7 : item_42"]


def test_config_and_assets_round_trip(tokenizer, tmp_path):
    tokenizer.save_assets(str(tmp_path))
    restored = OpenP5Tokenizer.from_config(tokenizer.get_config())
    restored.load_assets(str(tmp_path))
    text = "Given the history item_1001 , item_1002 of user_5, what comes next?"
    assert np.asarray(restored(text)).tolist() == np.asarray(tokenizer(text)).tolist()
    assert restored.end_token_id == tokenizer.end_token_id


def test_bad_text_raises():
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        OpenP5Tokenizer.from_texts(["fine", 3])


@pytest.fixture(scope="module")
def atomic():
    return OpenP5Tokenizer.from_texts(
        ["Galaxy Hidden (1984)."], item_ids=[1001, 1002, 1003],
        item_indexing="atomic",
    )


def test_atomic_items_are_one_token_each(atomic):
    assert _tokens(atomic, "item_1002") == ["item1002"]
    text = "user_12 went through item_1001 , item_1003. Recommend one item."
    assert _tokens(atomic, text) == [
        "user", "_", "1", "##2", "went", "through", "item1001", ",",
        "item1003", ".", "Recommend", "one", "item", ".",
    ]
    # Distinct ids, all past the other words, one per catalogue item.
    ids = [int(np.asarray(atomic(f"item_{i}"))[0]) for i in (1001, 1002, 1003)]
    assert ids == list(range(atomic.vocabulary_size() - 3, atomic.vocabulary_size()))
    # An id outside the catalogue is not an item token.
    assert "item1999" not in _tokens(atomic, "item_1999")


def test_atomic_piecewise_tokenization_and_detokenize(atomic):
    text = "user_12 went through item_1001 , item_1003. Recommend one item."
    cut = [0, 7, 32, 42, len(text)]
    pieces = [text[a:b] for a, b in zip(cut[:-1], cut[1:])]
    joined = [t for p in pieces for t in np.asarray(atomic(p)).tolist()]
    assert joined == np.asarray(atomic(text)).tolist()
    out = atomic.detokenize(atomic(["item_1001 , item_1002", "user_7 : item_1003"]))
    out = [o.decode() if isinstance(o, bytes) else str(o) for o in np.asarray(out)]
    assert out == ["item_1001 , item_1002", "user_7 : item_1003"]


def test_atomic_config_round_trip(atomic, tmp_path):
    atomic.save_assets(str(tmp_path))
    restored = OpenP5Tokenizer.from_config(atomic.get_config())
    restored.load_assets(str(tmp_path))
    assert restored.item_indexing == "atomic"
    assert np.asarray(restored("item_1003 .")).tolist() == np.asarray(
        atomic("item_1003 .")
    ).tolist()


def test_atomic_indexing_errors():
    with pytest.raises(ValueError, match="needs `item_ids`"):
        OpenP5Tokenizer.from_texts([], item_indexing="atomic")
    with pytest.raises(ValueError, match="alphanumeric"):
        OpenP5Tokenizer.from_texts([], item_ids=["a_b"], item_indexing="atomic")
    with pytest.raises(ValueError, match="duplicates"):
        OpenP5Tokenizer.from_texts([], item_ids=[5, 5], item_indexing="atomic")
    with pytest.raises(ValueError, match="item_indexing"):
        OpenP5Tokenizer.from_texts([], item_indexing="semantic")
