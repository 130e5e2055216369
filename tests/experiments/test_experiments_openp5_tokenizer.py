"""Tests for OpenP5Tokenizer (the offline tokenizer of the OpenP5 backbone)."""

import numpy as np
import pytest

from ilm_keras.llm.openp5_tokenizer import OpenP5Tokenizer


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
