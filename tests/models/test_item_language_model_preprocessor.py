"""Tests for ItemLanguageModelPreprocessor (mentions -> soft-token slots)."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)

ITEM_IDS = ["7", "42", "1001"]
USER_IDS = ["1", "2"]


def make_tokenizer():
    vocab = {"<|endoftext|>": 0}
    for c in [chr(c) for c in range(33, 127)] + ["Ġ"]:
        vocab[c] = len(vocab)
    merges = []
    for word in ["item", "Ġitem", "user", "Ġuser", "Ġnext"]:
        current = word[0]
        for ch in word[1:]:
            merges.append(f"{current} {ch}")
            current += ch
            vocab.setdefault(current, len(vocab))
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def make_preprocessor(tokenizer, n=2, **kwargs):
    kwargs.setdefault("sequence_length", 40)
    kwargs.setdefault("max_mentions", 3)
    return ItemLanguageModelPreprocessor(
        tokenizer, ITEM_IDS, USER_IDS, num_soft_tokens=n, **kwargs
    )


def test_soft_slots_follow_each_mention(tokenizer):
    prep = make_preprocessor(tokenizer)
    x = prep.generate_preprocess(["user_2 liked item_1001 , item_7 next"])
    ids = x["token_ids"][0].tolist()
    soft = x["soft_token_mask"][0].tolist()
    start = tokenizer.start_token_id
    pieces = ["user_2", " liked item_1001", " , item_7", " next"]
    expected_ids, expected_soft = [start], [False]
    for i, piece in enumerate(pieces):
        toks = list(tokenizer(piece))
        expected_ids += toks
        expected_soft += [False] * len(toks)
        if i < 3:
            expected_ids += [prep.pad_token_id] * 2
            expected_soft += [True, True]
    n = len(expected_ids)
    assert ids[:n] == expected_ids and soft[:n] == expected_soft
    assert x["padding_mask"][0].sum() == n and not any(soft[n:])
    # Users come after items in the CF table.
    assert x["entity_ids"][0].tolist() == [3 + 1, 2, 0]


def test_prompt_without_mentions_is_tokenized_whole(tokenizer):
    prep = make_preprocessor(tokenizer)
    text = "hello, next thing"
    x = prep.generate_preprocess([text])
    toks = [tokenizer.start_token_id] + list(tokenizer(text))
    assert x["token_ids"][0, : len(toks)].tolist() == toks
    assert x["entity_ids"][0].tolist() == [-1, -1, -1]
    # The text-only variant (no soft tokens) tokenizes mentions whole too.
    none = make_preprocessor(tokenizer, n=0)
    text = "user_1 liked item_42"
    x = none.generate_preprocess([text])
    assert set(x) == {"token_ids", "padding_mask"}
    toks = [tokenizer.start_token_id] + list(tokenizer(text))
    assert x["token_ids"][0, : len(toks)].tolist() == toks


def test_mention_boundaries(tokenizer):
    prep = make_preprocessor(tokenizer)
    x = prep.generate_preprocess(["xitem_7 (item_7), user_1."])
    # "xitem_7" is not a mention; "item_7" in brackets and "user_1." are.
    assert x["entity_ids"][0].tolist() == [0, 3, -1]


def test_labels_and_weights_cover_the_response_only(tokenizer):
    prep = make_preprocessor(tokenizer)
    x, y, sw = prep({"prompts": ["user_1 liked item_7"], "responses": ["item_42"]})
    ids = x["token_ids"][0]
    mask = x["padding_mask"][0]
    response = list(tokenizer("item_42")) + [tokenizer.end_token_id]
    n = int(mask.sum())  # the unshifted length (it fits: no token cut)
    # y is the next token; weights mark exactly the response (+ end token).
    assert y[0, n - 1 - len(response) : n - 1].tolist() == response
    assert sw[0].sum() == len(response)
    assert sw[0, n - 1 - len(response) : n - 1].tolist() == [1.0] * len(response)
    np.testing.assert_array_equal(y[0, : n - 2], ids[1 : n - 1])
    # Plain strings: every real text token is a target, soft slots never.
    x, y, sw = prep(["user_1 liked item_7"])
    soft_next = x["soft_token_mask"][0, 1:]
    assert sw[0, :-1][soft_next].sum() == 0
    # Targets: every position but the first (start) and the 2x2 soft slots.
    assert sw[0].sum() == x["padding_mask"][0].sum() - 1 - 4


def test_tf_data_path_matches_eager(tokenizer):
    prep = make_preprocessor(tokenizer)
    data = {
        "prompts": ["user_1 liked item_7", "item_1001 next"],
        "responses": ["item_42", "item_7"],
    }
    eager = prep(data)
    ds = tf.data.Dataset.from_tensor_slices(data).batch(2).map(prep)
    graph = next(iter(ds))
    for a, b in zip(keras.tree.flatten(eager), keras.tree.flatten(graph)):
        np.testing.assert_array_equal(a, b.numpy())
    assert graph[0]["token_ids"].shape == (2, 40)


def test_loss_positions_option_in_eager_and_tf_data(tokenizer):
    data = {
        "prompts": ["user_1 liked item_7", "item_1001 next"],
        "responses": ["item_42", "item_1001"],
    }
    plain = make_preprocessor(tokenizer)(data)
    prep = make_preprocessor(tokenizer, loss_positions=True)
    want = prep.select_loss_positions(*plain)
    eager = prep(data)
    assert set(eager[0]) == set(plain[0]) | {"loss_positions"}
    ds = tf.data.Dataset.from_tensor_slices(data).batch(2).map(prep)
    graph = next(iter(ds))
    for got in (eager, graph):
        for a, b in zip(keras.tree.flatten(want), keras.tree.flatten(got)):
            np.testing.assert_array_equal(a, np.asarray(b))
    assert eager[1].shape[1] < plain[1].shape[1]
    config = prep.get_config()
    config["tokenizer"] = tokenizer
    assert ItemLanguageModelPreprocessor.from_config(config).loss_positions
    # Plain strings (e.g. `predict`) keep every position, in both paths.
    texts = ["user_1 liked item_7", "item_1001 next"]
    for x, y, _ in (prep(texts), next(iter(
            tf.data.Dataset.from_tensor_slices(texts).batch(2).map(prep)))):
        assert "loss_positions" not in x and y.shape == (2, 40)


def test_a_mention_cut_by_the_shift_is_an_error(tokenizer):
    # Plain strings without an end token: the last position is a label only,
    # so a prompt ending in a mention must not reach it.
    x, _, _ = make_preprocessor(tokenizer, add_end_token=False)(["a item_7"])
    length = int(x["padding_mask"].sum())  # All its tokens fit in 40.
    prep = make_preprocessor(tokenizer, sequence_length=length - 1,
                             add_end_token=False)
    with pytest.raises(ValueError, match="ends with a mention's soft tokens"):
        prep(["a item_7"])
    make_preprocessor(tokenizer, sequence_length=length,
                      add_end_token=False)(["a item_7"])  # One more: fits.


def test_errors(tokenizer):
    prep = make_preprocessor(tokenizer)
    with pytest.raises(ValueError, match="Prompt 1 mentions unknown item `item_5`"):
        prep.generate_preprocess(["item_7", "a item_5 b"])
    with pytest.raises(ValueError, match="unknown user `user_3`"):
        prep.generate_preprocess(["user_3"])
    with pytest.raises(ValueError, match="`prompts` is empty"):
        prep.generate_preprocess([])
    with pytest.raises(ValueError, match="Response 1 mentions unknown item `item_8888`"):
        prep({"prompts": ["item_7", "item_42"],
              "responses": ["item_42", "item_8888"]})
    with pytest.raises(ValueError, match="mentions 4 items/users but"):
        prep.generate_preprocess(["item_7 item_7 item_7 item_42"])
    with pytest.raises(ValueError, match=r"Example 0 has \d+ tokens"):
        prep({"prompts": ["item_7 " + "next " * 40], "responses": ["x"]})
    with pytest.raises(ValueError, match="no room left to generate"):
        prep.generate_preprocess(["next " * 39])
    with pytest.raises(ValueError, match="computes `y`"):
        prep(["a"], y=np.zeros((1, 40)))
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        prep({"prompts": ["a", "b"], "responses": ["c"]})
    with pytest.raises(ValueError, match="duplicate ids"):
        ItemLanguageModelPreprocessor(tokenizer, ["1", "2", "1"])
    with pytest.raises(ValueError, match="alphanumeric"):
        ItemLanguageModelPreprocessor(tokenizer, ["a-1"])
    with pytest.raises(ValueError, match="`num_soft_tokens` is not set"):
        ItemLanguageModelPreprocessor(tokenizer, ITEM_IDS).generate_preprocess(["x"])


def test_errors_on_large_batches_stay_short(tokenizer):
    # Keras appends a failing `call`'s arguments to its error; 3,000 prompts
    # would bury the one line that names the problem.
    prep = make_preprocessor(tokenizer)
    prompts = ["a item_7 b"] * 3000 + ["a item_5 b"]
    with pytest.raises(ValueError) as info:
        prep({"prompts": prompts, "responses": ["item_42"] * len(prompts)})
    message = str(info.value)
    assert message.startswith("Prompt 3000 mentions unknown item `item_5`")
    assert len(message) < 300
    with pytest.raises(TypeError, match=r"`prompts\[1\]` must be a string"):
        prep({"prompts": ["a", 3], "responses": ["b", "c"]})


def test_config_round_trip(tokenizer):
    prep = make_preprocessor(tokenizer, item_prefix="movie_")
    config = prep.get_config()
    # The tokenizer's vocabulary travels as assets (tested with the model's
    # `.keras` round trip); here re-attach the tokenizer.
    config["tokenizer"] = tokenizer
    restored = ItemLanguageModelPreprocessor.from_config(config)
    text = ["user_1 liked movie_1001 and item_7"]
    a = prep.generate_preprocess(text)
    b = restored.generate_preprocess(text)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["entity_ids"][0].tolist() == [3, 2, -1]
    assert restored.item_index("movie_42") == 1 == restored.item_index(42)


def test_generate_postprocess_drops_soft_tokens(tokenizer):
    prep = make_preprocessor(tokenizer)
    x = prep.generate_preprocess(["user_1 liked item_7"])
    assert prep.generate_postprocess(x) == ["user_1 liked item_7"]


def test_recommend_preprocess_pads_to_the_longest_prompt(tokenizer):
    prep = make_preprocessor(tokenizer)
    prompts = ["user_2 liked item_1001 , item_7 next", "item_42"]
    x = prep.recommend_preprocess(prompts, length_multiple=8)
    full = prep.generate_preprocess(prompts)
    lengths = full["padding_mask"].sum(axis=1)
    np.testing.assert_array_equal(x["lengths"], lengths)
    width = x["token_ids"].shape[1]
    assert width % 8 == 0 and lengths.max() <= width < lengths.max() + 8
    for key in ("token_ids", "padding_mask", "soft_token_mask"):
        np.testing.assert_array_equal(x[key], full[key][:, :width])
    np.testing.assert_array_equal(x["entity_ids"], full["entity_ids"])
    with pytest.raises(ValueError, match="Prompt 0 has .* longer than"):
        make_preprocessor(tokenizer, sequence_length=8).recommend_preprocess(
            prompts
        )
    with pytest.raises(ValueError, match="only whitespace"):
        prep.recommend_preprocess(["  "])


def test_response_token_ids_end_like_training_responses(tokenizer):
    prep = make_preprocessor(tokenizer)
    x, y, w = prep({"prompts": ["next"], "responses": ["item_42"]})
    rows = prep.response_token_ids(["item_42"])
    assert y[0][w[0] > 0].tolist() == rows[0]
    assert rows[0][-1] == prep.end_token_id


def test_item_catalogue(tokenizer):
    texts = {"42": "Film 42", "7": "Film 7"}
    prep = make_preprocessor(tokenizer, item_texts=texts)
    assert prep.item_text("item_42") == "Film 42"
    assert prep.item_text(1001) == ""  # no text given for it
    restored = ItemLanguageModelPreprocessor.from_config(prep.get_config())
    assert restored.item_texts == ["Film 7", "Film 42", ""]
    with pytest.raises(ValueError, match="not in `item_ids`, e.g. \\['8'\\]"):
        make_preprocessor(tokenizer, item_texts={"8": "?"})
    with pytest.raises(ValueError, match="2 texts for 3 items"):
        make_preprocessor(tokenizer, item_texts=["a", "b"])
    with pytest.raises(ValueError, match="Unknown item 'item_9'"):
        prep.item_text("item_9")
    with pytest.raises(ValueError, match="no item catalogue"):
        make_preprocessor(tokenizer).item_text("7")


def test_ids_from_cf_embeddings(tokenizer):
    from ilm_keras.cf import CFEmbeddings

    cf = CFEmbeddings(
        np.zeros((2, 4), "float32"), np.zeros((3, 4), "float32"),
        user_ids=USER_IDS, item_ids=ITEM_IDS,
    )
    prep = ItemLanguageModelPreprocessor(tokenizer, cf_embeddings=cf)
    assert prep.item_ids == ITEM_IDS and prep.user_ids == USER_IDS
    with pytest.raises(ValueError, match="either `cf_embeddings` or"):
        ItemLanguageModelPreprocessor(tokenizer, ITEM_IDS, cf_embeddings=cf)
    with pytest.raises(ValueError, match="item ids are missing"):
        ItemLanguageModelPreprocessor(tokenizer)
