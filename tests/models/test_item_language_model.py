"""Tests for ItemLanguageModel (phase 2) and its constrained recommend()."""

import os

import keras
import keras_hub
import numpy as np
import pytest

from ilm_keras.cf import CFEmbeddings
from ilm_keras.models.item_language_model import ItemLanguageModel
from ilm_keras.models.item_language_model_backbone import ItemLanguageModelBackbone
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.models.qformer import QFormer

# Item ids of different token lengths (single digits are single tokens), so
# catalogue strings have different lengths.
ITEM_IDS = ["7", "42", "305", "1001", "1002", "99", "5"]
USER_IDS = ["1", "2", "3"]
CF_DIM = 8
VOCAB = 140
ARCHS = ["gpt2", "llama", "gemma", "gemma3"]
# Items mid-prompt, several per prompt, a user, different lengths, a prompt
# without mentions and one ending right after a mention.
PROMPTS = [
    "user_1 watched item_7 , item_1001 then",
    "hello world",
    "user_2 watched item_42 , item_5 , item_99 next",
    "user_3 watched item_305",
]


def make_tokenizer():
    """A tiny byte-level BPE (GPT-2 style) tokenizer built in the test."""
    vocab = {"<|endoftext|>": 0}
    for c in [chr(c) for c in range(33, 127)] + ["Ġ"]:
        vocab[c] = len(vocab)
    merges = []
    for word in [
        "item",
        "Ġitem",
        "user",
        "Ġuser",
        "Ġwatched",
        "Ġnext",
        "Ġthen",
        "hello",
        "Ġworld",
    ]:
        current = word[0]
        for ch in word[1:]:
            merge = f"{current} {ch}"
            if merge not in merges:
                merges.append(merge)
            current += ch
            vocab.setdefault(current, len(vocab))
    assert len(vocab) <= VOCAB
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)


def make_backbone(arch, dropout=0.0):
    common = {
        "vocabulary_size": VOCAB,
        "num_layers": 2,
        "hidden_dim": 16,
        "intermediate_dim": 32,
        "dropout": dropout,
    }
    if arch == "gpt2":
        return keras_hub.models.GPT2Backbone(
            num_heads=2, max_sequence_length=128, **common
        )
    if arch == "llama":
        return keras_hub.models.LlamaBackbone(
            num_query_heads=2, num_key_value_heads=1, **common
        )
    if arch == "gemma":
        return keras_hub.models.GemmaBackbone(
            num_query_heads=2, num_key_value_heads=1, head_dim=8, **common
        )
    return keras_hub.models.Gemma3Backbone(
        image_size=16,
        num_query_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        vision_encoder=None,
        sliding_window_size=4,
        **common,
    )


STOCK_LM = {
    "gpt2": keras_hub.models.GPT2CausalLM,
    "llama": keras_hub.models.LlamaCausalLM,
    "gemma": keras_hub.models.GemmaCausalLM,
    "gemma3": keras_hub.models.Gemma3CausalLM,
}


def make_tables(seed=0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(len(ITEM_IDS), CF_DIM)).astype("float32")
    users = rng.normal(size=(len(USER_IDS), CF_DIM)).astype("float32")
    return items, users


def make_qformer():
    return QFormer(
        vocabulary_size=50,
        cf_dim=CF_DIM,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        num_query_tokens=3,
        max_text_length=8,
        num_cf_tokens=2,
        dropout=0.0,
    )


def make_model(
    backbone, tokenizer, item_encoder="mlp", tables=None, sequence_length=48, **kwargs
):
    items, users = tables if tables is not None else make_tables()
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer,
        ITEM_IDS,
        USER_IDS,
        sequence_length=sequence_length,
        max_mentions=4,
    )
    if item_encoder == "mlp":
        kwargs.setdefault("num_mlp_tokens", 2)
    return ItemLanguageModel(
        backbone,
        preprocessor,
        item_encoder=item_encoder,
        item_embeddings=items,
        user_embeddings=users,
        **kwargs,
    )


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def backbones():
    keras.utils.set_random_seed(1)
    return {arch: make_backbone(arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def mlp_models(backbones, tokenizer):
    keras.utils.set_random_seed(2)
    return {a: make_model(backbones[a], tokenizer) for a in ARCHS}


def llm_inputs(x):
    return {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def logits_of(model, x):
    """Compiled forward pass (one compile per model and input shape)."""
    return to_np(model.predict_on_batch(x))


# ----------------------------------------------------------------------
# Pretrained abilities preserved.
# ----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_frozen_llm_without_items(arch, backbones, mlp_models):
    model = mlp_models[arch]
    stock = STOCK_LM[arch](backbone=backbones[arch], preprocessor=None)
    x = model.preprocessor.generate_preprocess(
        ["hello world", "then next hello"], sequence_length=16
    )
    assert not x["soft_token_mask"].any()
    # Compiled (both models jit-compiled). The eager path is checked in
    # `test_none_variant_is_the_llm_on_plain_text`.
    np.testing.assert_array_equal(logits_of(model, x), logits_of(stock, llm_inputs(x)))


def test_none_variant_is_the_llm_on_plain_text(backbones, tokenizer):
    backbone = backbones["llama"]
    model = make_model(backbone, tokenizer, item_encoder="none")
    assert model.num_soft_tokens == 0 and model.cf_table is None
    assert model.trainable_weights == []
    x = model.preprocessor.generate_preprocess(PROMPTS, sequence_length=32)
    assert set(x) == {"token_ids", "padding_mask"}
    # The prompt is tokenized whole, exactly as plain text.
    plain = tokenizer(PROMPTS[2])
    n = len(plain)
    np.testing.assert_array_equal(x["token_ids"][2, 1 : n + 1], plain)
    stock = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    # Eager, and with items mentioned in the text.
    np.testing.assert_array_equal(to_np(model(x)), to_np(stock(x)))


@pytest.mark.parametrize("user_vectors", ["table", "fold_in"])
def test_soft_tokens_sit_right_after_their_mention(backbones, tokenizer, user_vectors):
    keras.utils.set_random_seed(2)
    model = make_model(backbones["llama"], tokenizer, user_vectors=user_vectors)
    prep = model.preprocessor
    x = prep.generate_preprocess([PROMPTS[0]], sequence_length=32)
    ids, soft = x["token_ids"][0], x["soft_token_mask"][0]
    # "item_1001" is the second item mention: its soft slots come after its
    # last text token "1".
    slots = np.nonzero(soft)[0]
    user_slots = slots[: model.num_soft_tokens]
    second = slots[2 * model.num_soft_tokens :][: model.num_soft_tokens]
    mention = list(prep.tokenizer(" item_1001"))
    assert list(ids[second[0] - len(mention) : second[0]]) == mention
    assert list(x["entity_ids"][0]) == [
        len(ITEM_IDS) + USER_IDS.index("1"),
        ITEM_IDS.index("7"),
        ITEM_IDS.index("1001"),
        -1,
    ]
    before = logits_of(model, x)
    items, users = make_tables()
    items = items.copy()
    items[ITEM_IDS.index("1001")] += 1.0
    model.set_cf_tables(items, users)
    after = logits_of(model, x)
    # Causal: positions before the first soft slot that reads item_1001's
    # row are untouched. With the table, that is the item's own first slot;
    # with fold-in, the user's (folded in from every item of the prompt,
    # item_1001 included), which comes first.
    first = second[0] if user_vectors == "table" else user_slots[0]
    np.testing.assert_array_equal(before[0, :first], after[0, :first])
    assert np.abs(before[0, first] - after[0, first]).max() > 1e-4


# ----------------------------------------------------------------------
# Generation with a KV cache.
# ----------------------------------------------------------------------
def uncached_greedy(model, x, steps):
    token_ids = x["token_ids"].copy()
    mask = x["padding_mask"].copy()
    lengths = mask.sum(axis=1)
    for _ in range(steps):
        inputs = dict(x, token_ids=token_ids, padding_mask=mask)
        logits = logits_of(model, inputs)
        for b, n in enumerate(lengths):
            token_ids[b, n] = int(np.argmax(logits[b, n - 1]))
            mask[b, n] = True
        lengths = lengths + 1
    return token_ids


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_greedy_equals_uncached_greedy(arch, mlp_models):
    model = mlp_models[arch]
    model.compile(sampler="greedy")
    length, steps = 40, 4
    x = model.preprocessor.generate_preprocess(PROMPTS, sequence_length=length)
    lengths = x["padding_mask"].sum(axis=1)
    assert len(set(lengths)) == len(PROMPTS)  # different lengths (padding)
    # Run the cached generate() on preprocessed inputs, so that we can compare
    # token ids; generation runs to `length`, compare the first `steps` new
    # tokens of every row.
    model_preprocessor = model.preprocessor
    model.preprocessor = None
    try:
        out = model.generate(dict(x), stop_token_ids=None)
    finally:
        model.preprocessor = model_preprocessor
    expected = uncached_greedy(model, x, steps)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(
            to_np(out["token_ids"])[b, : n + steps], expected[b, : n + steps]
        )


def test_generate_strings(mlp_models):
    model = mlp_models["gpt2"]
    model.compile(sampler="greedy")
    out = model.generate(PROMPTS[:2], max_length=40, stop_token_ids=None)
    assert out[0].startswith(PROMPTS[0]) and out[1].startswith(PROMPTS[1])
    stripped = model.generate(
        PROMPTS[:2], max_length=40, stop_token_ids=None, strip_prompt=True
    )
    assert [o.endswith(s) for o, s in zip(out, stripped)] == [True, True]


def test_generate_with_stop_tokens_where_the_pad_token_is_the_end_token(mlp_models):
    # GPT-2 pads with its end token: the positions not yet decoded must not
    # read as answers that already ended.
    model = mlp_models["gpt2"]
    tokenizer = model.preprocessor.tokenizer
    assert tokenizer.pad_token_id == tokenizer.end_token_id
    model.compile(sampler="greedy")
    free = model.generate(PROMPTS[:2], max_length=40, stop_token_ids=None,
                          strip_prompt=True)
    stopped = model.generate(PROMPTS[:2], max_length=40, strip_prompt=True)
    assert all(stopped)  # something was decoded
    # The same greedy tokens up to the end token, if one was decoded.
    assert [f.startswith(s) for f, s in zip(free, stopped)] == [True, True]


# ----------------------------------------------------------------------
# Constrained top-K recommendation.
# ----------------------------------------------------------------------
def exhaustive_scores(model, prompts):
    """Sequence log-likelihood of every item for every prompt, no cache."""
    prep = model.preprocessor
    seqs = model.item_trie().sequences
    # One row per (prompt, item): the prompt followed by the item's tokens.
    x = prep.generate_preprocess([p for p in prompts for _ in seqs], sequence_length=48)
    starts = x["padding_mask"].sum(axis=1)
    for r, n in enumerate(starts):
        seq = seqs[r % len(seqs)]
        x["token_ids"][r, n : n + len(seq)] = seq
        x["padding_mask"][r, n : n + len(seq)] = True
    logits = logits_of(model, x).astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    scores = np.zeros((len(prompts), len(seqs)))
    for r, n in enumerate(starts):
        seq = seqs[r % len(seqs)]
        scores[r // len(seqs), r % len(seqs)] = sum(
            log_probs[r, n - 1 + j, t] for j, t in enumerate(seq)
        )
    return scores


# The per-architecture cache glue is covered by the greedy test above; the
# search itself is checked on a stacked-cache, absolute-position model (GPT-2),
# a tuple-cache, sliding-window one (Gemma3), and on Llama, which decodes its
# beams against one shared prompt cache (`beam_decode_step`) with per-step
# beam widths from the trie.
@pytest.mark.parametrize("arch", ["gpt2", "gemma3", "llama"])
def test_recommend_matches_exhaustive_ranking(arch, mlp_models):
    model = mlp_models[arch]
    lengths = model.preprocessor.recommend_preprocess(PROMPTS)["lengths"].tolist()
    # One prompt fills its length bucket (16) exactly: decoding then runs
    # past the padded prompt width.
    assert 32 in lengths
    expected = exhaustive_scores(model, PROMPTS)
    exclude = [["7", "item_1001"], [], ["42", "5", "99"], []]
    k = len(ITEM_IDS) - 3
    items, scores = model.recommend(
        PROMPTS, k=k, exclude=exclude, num_beams=len(ITEM_IDS)
    )
    assert items.shape == scores.shape == (len(PROMPTS), k)
    for b in range(len(PROMPTS)):
        banned = {e.replace("item_", "") for e in exclude[b]}
        allowed = [i for i in range(len(ITEM_IDS)) if ITEM_IDS[i] not in banned]
        ranked = sorted(allowed, key=lambda i: -expected[b, i])[:k]
        assert list(items[b]) == [ITEM_IDS[i] for i in ranked]
        np.testing.assert_allclose(scores[b], expected[b, ranked], rtol=1e-5, atol=1e-4)

    # A narrow beam still returns valid, distinct items, best first, scored
    # with their true sequence log-likelihood.
    items, scores = model.recommend(PROMPTS, k=3, exclude=exclude)
    for b in range(len(PROMPTS)):
        assert len(set(items[b])) == 3
        assert not set(items[b]) & {e.replace("item_", "") for e in exclude[b]}
        rows = [ITEM_IDS.index(i) for i in items[b]]
        np.testing.assert_allclose(scores[b], expected[b, rows], rtol=1e-5, atol=1e-4)
        assert np.all(np.diff(scores[b]) <= 0)


def test_recommend_single_prompt_batching_and_prefix(mlp_models):
    model = mlp_models["gpt2"]
    items, scores = model.recommend(PROMPTS[0], k=2)
    assert items.shape == scores.shape == (2,)
    kept, _ = model.recommend(PROMPTS[0], k=2, exclude=[items[0]])
    assert items[0] not in kept and kept[0] == items[1]
    # Batching in chunks (sorted by length) gives the same answers.
    a, sa = model.recommend(PROMPTS, k=3, batch_size=2)
    b, sb = model.recommend(PROMPTS, k=3, batch_size=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-5)
    assert list(a[0][:2]) == list(items)
    # A response prefix is part of every candidate string.
    trie = model.item_trie(response_prefix="next ")
    prefix = model.preprocessor.tokenizer("next ")
    assert all(s[: len(prefix)] == list(prefix) for s in trie.sequences)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_atomic_items_rank_exactly_in_one_step(arch):
    """Atomic indexing: one token per item, so `recommend()` ranks every item
    exactly by log p(item token | prompt), whatever `num_beams`."""
    from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer

    tokenizer = OpenP5Tokenizer.from_texts(
        ["watched then next"], item_ids=ITEM_IDS, item_indexing="atomic"
    )
    keras.utils.set_random_seed(3)
    common = dict(vocabulary_size=tokenizer.vocabulary_size(), num_layers=1,
                  hidden_dim=16, intermediate_dim=32, dropout=0.0)
    if arch == "llama":
        backbone = keras_hub.models.LlamaBackbone(
            num_query_heads=2, num_key_value_heads=1, **common)
    else:
        backbone = keras_hub.models.GPT2Backbone(
            num_heads=2, max_sequence_length=64, **common)
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, item_ids=ITEM_IDS, user_ids=USER_IDS, sequence_length=48,
        max_mentions=4,
    )
    items_table, users_table = make_tables()
    model = ItemLanguageModel(
        backbone, preprocessor, item_encoder="mlp", item_embeddings=items_table,
        user_embeddings=users_table, num_mlp_tokens=2,
        fold_in_regularization=1.0, fold_in_alpha=2.0,
    )
    assert model.item_trie().single_tokens() is not None
    x = preprocessor.generate_preprocess(PROMPTS, sequence_length=48)
    last = x["padding_mask"].sum(axis=1) - 1
    logits = logits_of(model, x).astype("float64")[np.arange(len(PROMPTS)), last]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    item_tokens = [int(np.asarray(tokenizer(f"item_{i}"))[0]) for i in ITEM_IDS]
    expected = log_probs[:, item_tokens]
    exclude = [["7", "item_1001"], [], ["42", "5", "99"], []]
    k = len(ITEM_IDS) - 3
    for num_beams in (k, 10):
        items, scores = model.recommend(
            PROMPTS, k=k, exclude=exclude, num_beams=num_beams
        )
        for b in range(len(PROMPTS)):
            banned = {e.replace("item_", "") for e in exclude[b]}
            allowed = [i for i in range(len(ITEM_IDS)) if ITEM_IDS[i] not in banned]
            ranked = sorted(allowed, key=lambda i: -expected[b, i])[:k]
            assert list(items[b]) == [ITEM_IDS[i] for i in ranked]
            np.testing.assert_allclose(scores[b], expected[b, ranked], atol=1e-4)


# ----------------------------------------------------------------------
# Training: encoder trains, LLM frozen (bit-identical), dropout off.
# ----------------------------------------------------------------------
TRAIN = {
    "prompts": [PROMPTS[0], PROMPTS[2], PROMPTS[3], "user_1 watched item_5"],
    "responses": ["item_42", "item_305", "item_7", "item_1002"],
}


def test_fit_trains_encoder_only_and_llm_dropout_is_off(tokenizer):
    # GPT-2 has dropout on its embeddings and in every block.
    backbone = make_backbone("gpt2", dropout=0.5)
    model = make_model(backbone, tokenizer)
    x, _, _ = model.preprocessor(TRAIN)
    # Dropout inside the frozen LLM is off even in training mode (the MLP
    # adaptor has no dropout, so the whole model is deterministic).
    np.testing.assert_array_equal(
        to_np(model(x, training=True)), to_np(model(x, training=False))
    )
    llm_before = [to_np(w).copy() for w in backbone.weights]
    table_before = to_np(model.cf_table).copy()
    adaptor_before = [to_np(w).copy() for w in model.adaptor.weights]
    assert {id(w) for w in model.trainable_weights} == {
        id(w) for w in model.adaptor.trainable_weights
    }
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    # Raw strings: preprocessing runs inside the tf.data pipeline.
    history = model.fit(TRAIN, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for before, w in zip(llm_before, backbone.weights):
        np.testing.assert_array_equal(before, to_np(w))
    np.testing.assert_array_equal(table_before, to_np(model.cf_table))
    changed = [
        np.abs(b - to_np(w)).max() > 0
        for b, w in zip(adaptor_before, model.adaptor.weights)
    ]
    assert all(changed)


def test_loss_counts_response_tokens_only(mlp_models):
    model = mlp_models["llama"]
    x, y, sw = model.preprocessor(TRAIN)
    logits = logits_of(model, x)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    )
    per_token = to_np(loss_fn(y, logits))
    expected = (per_token * sw).sum() / sw.sum()
    model.compile()
    got = model.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sw)
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-5)


def test_select_loss_positions_layout():
    y = np.arange(18).reshape(3, 6)
    weight = np.array(
        [[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 2], [0, 0, 0, 0, 0, 0]], "float32"
    )
    x, y_kept, w_kept = ItemLanguageModelPreprocessor.select_loss_positions(
        {"token_ids": y}, y, weight, multiple=2
    )
    np.testing.assert_array_equal(
        x["loss_positions"], [[2, 3, 4, 0], [5, 0, 0, 0], [0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(y_kept, [[2, 3, 4, 0], [11, 0, 0, 0], [0] * 4])
    np.testing.assert_array_equal(w_kept, [[1, 1, 1, 0], [2, 0, 0, 0], [0] * 4])
    # Never wider than the sequence.
    x, _, _ = ItemLanguageModelPreprocessor.select_loss_positions(
        {}, y, weight, multiple=8
    )
    assert x["loss_positions"].shape == (3, 6)
    with pytest.raises(ValueError, match="sample_weight"):
        ItemLanguageModelPreprocessor.select_loss_positions({}, y, weight[:, :3])
    with pytest.raises(ValueError, match=">= 0"):
        ItemLanguageModelPreprocessor.select_loss_positions({}, y, -weight)
    with pytest.raises(ValueError, match="multiple"):
        ItemLanguageModelPreprocessor.select_loss_positions({}, y, weight, 2.5)
    with pytest.raises(ValueError, match="empty"):
        ItemLanguageModelPreprocessor.select_loss_positions({}, y[:0], weight[:0])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_loss_positions_give_the_same_logits_and_loss(arch, mlp_models):
    model = mlp_models[arch]
    x, y, sw = model.preprocessor(TRAIN)
    xs, ys, ws = model.preprocessor.select_loss_positions(x, y, sw)
    assert xs["loss_positions"].shape[1] < x["token_ids"].shape[1]
    full = logits_of(model, x)
    some = logits_of(model, xs)
    rows = np.arange(len(ys))[:, None]
    valid = ws > 0
    np.testing.assert_allclose(
        some[valid], full[rows, xs["loss_positions"]][valid], rtol=1e-5, atol=1e-5
    )
    model.compile()
    want = model.compute_loss(x=x, y=y, y_pred=full, sample_weight=sw)
    got = model.compute_loss(x=xs, y=ys, y_pred=some, sample_weight=ws)
    np.testing.assert_allclose(to_np(got), to_np(want), rtol=1e-5)
    # Symbolic inputs: the output spec follows the positions.
    symbolic = {
        k: keras.Input(shape=v.shape[1:], dtype=str(v.dtype), name=k)
        for k, v in xs.items()
    }
    want_shape = xs["loss_positions"].shape[1:] + (full.shape[-1],)
    assert tuple(model(symbolic).shape)[1:] == want_shape
    bad = dict(xs, loss_positions=xs["loss_positions"] + x["token_ids"].shape[1])
    with pytest.raises(Exception, match="loss_positions"):
        to_np(model(bad))


def twin_models(backbones, tokenizer, seed):
    """Two equal Llama models and the adaptor weights they start from."""
    keras.utils.set_random_seed(seed)
    full = make_model(backbones["llama"], tokenizer)
    some = make_model(backbones["llama"], tokenizer)
    some.set_weights(full.get_weights())
    return full, some, [to_np(w).copy() for w in full.adaptor.weights]


def assert_same_training(before, full, some):
    for w0, a, b in zip(before, full.adaptor.weights, some.adaptor.weights):
        assert np.abs(to_np(a) - w0).max() > 1e-4  # it trained
        np.testing.assert_allclose(to_np(a), to_np(b), rtol=1e-4, atol=1e-6)


def test_fit_with_loss_positions_equals_fit_on_every_position(backbones, tokenizer):
    full, some, before = twin_models(backbones, tokenizer, seed=5)
    x, y, sw = full.preprocessor(TRAIN)
    for model, data in ((full, (x, y, sw)),
                        (some, full.preprocessor.select_loss_positions(x, y, sw))):
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(data[0], data[1], sample_weight=data[2], batch_size=4,
                  epochs=2, shuffle=False, verbose=0)
    assert_same_training(before, full, some)


def test_fit_on_strings_with_a_loss_positions_preprocessor(backbones, tokenizer):
    full, some, before = twin_models(backbones, tokenizer, seed=6)
    some.preprocessor.loss_positions = True
    for model in (full, some):
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(TRAIN, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert_same_training(before, full, some)


# ----------------------------------------------------------------------
# Q-Former variants.
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained_qformer():
    keras.utils.set_random_seed(3)
    return make_qformer()


@pytest.fixture(scope="module")
def ilm_model(backbones, tokenizer, pretrained_qformer):
    return make_model(
        backbones["gemma"],
        tokenizer,
        item_encoder="ilm",
        qformer=pretrained_qformer,
    )


def test_ilm_and_ilm_rand_variants(ilm_model, pretrained_qformer, backbones, tokenizer):
    backbone = backbones["gemma"]
    ilm = ilm_model
    qformer = pretrained_qformer
    # `ilm` uses the given (pretrained) Q-Former itself, not a copy.
    assert ilm.qformer is qformer and ilm.num_soft_tokens == 3
    qformer_weights = [to_np(w).copy() for w in qformer.weights]

    rand = make_model(backbone, tokenizer, item_encoder="ilm_rand", qformer=qformer)
    assert rand.qformer is not qformer
    assert rand.qformer.get_config()["num_layers"] == 2
    diffs = [
        np.abs(to_np(a) - to_np(b)).max()
        for a, b in zip(rand.qformer.weights, qformer.weights)
        if a.shape != () and np.prod(a.shape) > 1
    ]
    assert max(diffs) > 0

    llm_before = [to_np(w).copy() for w in backbone.weights]
    ilm.compile(optimizer=keras.optimizers.Adam(1e-2))
    ilm.fit(TRAIN, batch_size=4, epochs=1, verbose=0)
    for before, w in zip(llm_before, backbone.weights):
        np.testing.assert_array_equal(before, to_np(w))
    moved = [
        np.abs(b - to_np(w)).max() > 0 for b, w in zip(qformer_weights, qformer.weights)
    ]
    assert any(moved)  # the pretrained Q-Former is fine-tuned in place


# ----------------------------------------------------------------------
# Save / load.
# ----------------------------------------------------------------------
@pytest.mark.parametrize("item_encoder", ["mlp", "ilm", "none"])
def test_save_load_round_trip(
    item_encoder, mlp_models, ilm_model, backbones, tokenizer, tmp_path
):
    if item_encoder == "mlp":
        model = mlp_models["gpt2"]
    elif item_encoder == "ilm":
        model = ilm_model
    else:
        model = make_model(backbones["gpt2"], tokenizer, item_encoder="none")
    # The frozen LLM is shared, not copied: each variable appears once and
    # the parameter count is the LLM's plus the item encoder's.
    ids = [id(w) for w in model.weights]
    assert len(ids) == len(set(ids))
    assert {id(w) for w in model.backbone.llm.weights} <= set(ids)
    encoder = model.item_soft_tokens
    encoder_params = 0 if encoder is None else encoder.count_params()
    assert model.count_params() == (model.backbone.llm.count_params() + encoder_params)
    path = os.path.join(tmp_path, "ilm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, ItemLanguageModel)
    assert loaded.item_encoder == item_encoder
    assert not loaded.backbone.llm.trainable
    x = model.preprocessor.generate_preprocess(PROMPTS, sequence_length=40)
    x2 = loaded.preprocessor.generate_preprocess(PROMPTS, sequence_length=40)
    for key in x:
        np.testing.assert_array_equal(x[key], x2[key])
    np.testing.assert_array_equal(logits_of(model, x), logits_of(loaded, x))
    if item_encoder == "mlp":
        a, sa = model.recommend(PROMPTS, k=3)
        b, sb = loaded.recommend(PROMPTS, k=3)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb, rtol=1e-6)


def test_preset_round_trip(backbones, tokenizer, pretrained_qformer, tmp_path):
    """`save_to_preset` / `from_preset`: keras-hub's files, the same logits
    and `recommend()` output, CF tables, ids and catalogue; the LLM frozen."""
    items, users = make_tables()
    texts = [f"Title {i}" for i in ITEM_IDS]
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, ITEM_IDS, USER_IDS, sequence_length=48, max_mentions=4,
        item_texts=texts,
    )
    backbone = ItemLanguageModelBackbone(
        llm=backbones["llama"], item_encoder="ilm", qformer=pretrained_qformer,
        item_embeddings=items, user_embeddings=users,
    )
    model = ItemLanguageModel(backbone=backbone, preprocessor=preprocessor)
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    for name in ("config.json", "task.json", "preprocessor.json",
                 "tokenizer.json", "model.weights.h5", "metadata.json"):
        assert os.path.exists(os.path.join(preset, name)), name
    loaded = ItemLanguageModel.from_preset(preset)
    assert isinstance(loaded.backbone, ItemLanguageModelBackbone)
    assert not loaded.backbone.llm.trainable
    assert loaded.preprocessor.item_ids == ITEM_IDS
    assert loaded.preprocessor.user_ids == USER_IDS
    assert loaded.preprocessor.item_text("item_42") == "Title 42"
    np.testing.assert_array_equal(
        to_np(loaded.cf_table), np.concatenate([items, users])
    )
    x = model.preprocessor.generate_preprocess(PROMPTS, sequence_length=40)
    np.testing.assert_array_equal(logits_of(model, x), logits_of(loaded, x))
    a, sa = model.recommend(PROMPTS, k=3)
    b, sb = loaded.recommend(PROMPTS, k=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


_OTHER_BACKEND = """
import sys
import keras, numpy as np
from ilm_keras import ItemLanguageModel  # registers the classes

out, prompts = sys.argv[1], sys.argv[2].split("|")
results = {"backend": keras.backend.backend()}
for kind, path in (("keras", sys.argv[3]), ("preset", sys.argv[4])):
    if kind == "keras":
        model = keras.saving.load_model(path, safe_mode=True)
    else:
        model = ItemLanguageModel.from_preset(path)
    x = model.preprocessor.generate_preprocess(prompts, sequence_length=40)
    items, scores = model.recommend(prompts, k=3)
    results[kind + "_logits"] = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    results[kind + "_items"] = np.asarray(items).astype(str)
    results[kind + "_scores"] = np.asarray(scores)
np.savez(out, **results)
"""


def test_a_saved_model_gives_the_same_answers_on_the_other_backend(
    ilm_model, tmp_path
):
    """A Q-Former ILM saved on this backend, as a `.keras` file and as a
    preset, and loaded in a fresh process on the other backend (float32):
    logits within 1e-4 and the same `recommend()` items, scores within
    1e-4. (The MLP variant passed too; one subprocess is enough.)"""
    import subprocess
    import sys

    model = ilm_model
    path = str(tmp_path / "model.keras")
    model.save(path)
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    x = model.preprocessor.generate_preprocess(PROMPTS, sequence_length=40)
    logits = logits_of(model, x)
    items, scores = model.recommend(PROMPTS, k=3)
    other = "tensorflow" if keras.backend.backend() == "jax" else "jax"
    script = tmp_path / "other.py"
    script.write_text(_OTHER_BACKEND)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=repo)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out.npz"),
         "|".join(PROMPTS), path, preset],
        check=True, env=env, cwd=repo,
    )
    got = np.load(tmp_path / "out.npz")
    assert str(got["backend"]) == other
    for kind in ("keras", "preset"):
        np.testing.assert_allclose(got[kind + "_logits"], logits, atol=1e-4)
        np.testing.assert_array_equal(
            got[kind + "_items"], np.asarray(items).astype(str)
        )
        np.testing.assert_allclose(got[kind + "_scores"], np.asarray(scores), atol=1e-4)


# ----------------------------------------------------------------------
# Clear errors.
# ----------------------------------------------------------------------
def test_unknown_item_or_user_in_prompt(mlp_models):
    model = mlp_models["llama"]
    with pytest.raises(ValueError, match="unknown item `item_8`"):
        model.recommend(["user_1 watched item_8"], k=2)
    with pytest.raises(ValueError, match="unknown user `user_9`"):
        model.generate(["user_9 watched item_7"], max_length=40)
    with pytest.raises(ValueError, match="Prompt 1 mentions unknown item"):
        model.preprocessor(
            {"prompts": ["item_7", "item_1003"], "responses": ["a", "b"]}
        )


def test_cf_table_errors(backbones, tokenizer, ilm_model):
    backbone = backbones["llama"]
    items, users = make_tables()
    prep = ItemLanguageModelPreprocessor(
        tokenizer, ITEM_IDS, USER_IDS, sequence_length=32
    )
    with pytest.raises(ValueError, match="item CF table is missing"):
        ItemLanguageModel(backbone, prep, item_encoder="mlp")
    with pytest.raises(ValueError, match="user CF table is missing"):
        ItemLanguageModel(backbone, prep, item_encoder="mlp", item_embeddings=items)
    with pytest.raises(ValueError, match="has dimension 5"):
        ItemLanguageModel(
            backbone,
            prep,
            item_encoder="mlp",
            item_embeddings=items,
            user_embeddings=users[:, :5],
        )
    with pytest.raises(ValueError, match="reads cf_dim=8|expects cf_dim=8"):
        ItemLanguageModel(
            backbone,
            prep,
            item_encoder="ilm",
            qformer=ilm_model.qformer,
            item_embeddings=items[:, :6],
            user_embeddings=users[:, :6],
        )
    with pytest.raises(ValueError, match="6 rows but the preprocessor knows 7"):
        ItemLanguageModel(
            backbone,
            prep,
            item_encoder="mlp",
            item_embeddings=items[:6],
            user_embeddings=users,
        )
    bad = items.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in 1 row\(s\).*\[3\]"):
        ItemLanguageModel(
            backbone,
            prep,
            item_encoder="mlp",
            item_embeddings=bad,
            user_embeddings=users,
        )
    model = ItemLanguageModel(
        backbone,
        prep,
        item_encoder="mlp",
        item_embeddings=items,
        user_embeddings=users,
    )
    with pytest.raises(ValueError, match="NaN or inf"):
        model.set_cf_tables(bad, users)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        model.set_cf_tables(items[0], users)
    with pytest.raises(ValueError, match="floating-point values, got dtype int"):
        model.set_cf_tables(np.ones((7, 8), "int32"), users)
    # One `CFEmbeddings` (tables + ids) for the backbone and the preprocessor.
    cf = CFEmbeddings(users, items, user_ids=USER_IDS, item_ids=ITEM_IDS)
    from_cf = ItemLanguageModel(
        backbone=ItemLanguageModelBackbone(
            llm=backbone, item_encoder="mlp", cf_embeddings=cf
        ),
        preprocessor=ItemLanguageModelPreprocessor(
            tokenizer, cf_embeddings=cf, sequence_length=32
        ),
    )
    np.testing.assert_array_equal(to_np(from_cf.cf_table), to_np(model.cf_table))
    with pytest.raises(ValueError, match="either `cf_embeddings` or"):
        ItemLanguageModelBackbone(
            llm=backbone, item_encoder="mlp", cf_embeddings=cf,
            item_embeddings=items,
        )
    with pytest.raises(TypeError, match="set those on the backbone"):
        ItemLanguageModel(from_cf.backbone, prep, item_encoder="mlp")
    with pytest.raises(TypeError, match="`llm` must be a keras-hub causal LM"):
        ItemLanguageModelBackbone(llm=from_cf.backbone, item_encoder="none")


def test_length_and_argument_errors(mlp_models, backbones, tokenizer):
    model = mlp_models["gpt2"]
    long_prompt = " ".join(["item_7"] * 4) + " then" * 40
    with pytest.raises(ValueError, match="no room left to generate"):
        model.generate([PROMPTS[0]], max_length=20)
    with pytest.raises(ValueError, match="longer than the preprocessor's"):
        model.recommend([long_prompt], k=2)
    with pytest.raises(ValueError, match="Example 0 has .* tokens"):
        model.preprocessor({"prompts": [long_prompt], "responses": ["x"]})
    with pytest.raises(ValueError, match="mentions 5 items/users but"):
        model.preprocessor.generate_preprocess(["item_7 " * 5])
    with pytest.raises(ValueError, match="only 2 items remain"):
        model.recommend(PROMPTS[:1], k=3, exclude=[ITEM_IDS[:5]])
    with pytest.raises(ValueError, match="k <= num_beams"):
        model.recommend(PROMPTS[:1], k=3, num_beams=2)
    with pytest.raises(ValueError, match=r"exclude\[0\].*Unknown item '8'"):
        model.recommend(PROMPTS[:1], k=3, exclude=[["8"]])
    with pytest.raises(ValueError, match="item_encoder"):
        make_model(backbones["gpt2"], tokenizer, item_encoder="lora")
    prep = ItemLanguageModelPreprocessor(
        tokenizer, ITEM_IDS, USER_IDS, num_soft_tokens=4
    )
    with pytest.raises(ValueError, match="lays out 4 soft tokens"):
        ItemLanguageModel(
            backbones["llama"],
            prep,
            item_encoder="mlp",
            num_mlp_tokens=2,
            item_embeddings=make_tables()[0],
            user_embeddings=make_tables()[1],
        )
    opt = keras_hub.models.OPTBackbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=32,
    )
    with pytest.raises(ValueError, match="does not know how to run `OPTBackbone`"):
        make_model(opt, tokenizer)


def test_recommend_rejects_a_string_as_a_prompts_exclusions(mlp_models):
    model = mlp_models["gpt2"]
    # Read character by character, "57" would exclude item_5 and item_7.
    with pytest.raises(TypeError, match=r"exclude\[0\]. .*must be a list of item"):
        model.recommend(PROMPTS[:2], k=2, exclude=["57", ["42"]])
    with pytest.raises(TypeError, match=r"exclude\[0\]. .*must be a list of item"):
        model.recommend(PROMPTS[0], k=2, exclude="57")
    with pytest.raises(ValueError, match="`prompts` is empty"):
        model.recommend([], k=2)
    with pytest.raises(ValueError, match="`prompts` is empty"):
        model.generate([], max_length=20)


def short_gpt2():
    """A tiny GPT-2 backbone with 16 positions."""
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=16,
    )


def test_gpt2_position_limit(tokenizer):
    backbone = short_gpt2()
    with pytest.raises(ValueError, match="exceeds the backbone's limit"):
        make_model(backbone, tokenizer, sequence_length=64)
    model = make_model(backbone, tokenizer, sequence_length=16)
    with pytest.raises(ValueError, match="max_sequence_length=16"):
        model.recommend(["hello world"], k=2)


def test_generate_past_the_gpt2_position_limit(tokenizer):
    model = make_model(short_gpt2(), tokenizer, sequence_length=16)
    model.compile(sampler="greedy")
    with pytest.raises(
        ValueError, match=r"`max_length` \(40.*max_sequence_length=16\)"
    ):
        model.generate(["hello world"], max_length=40)
    # Without a preprocessor, the inputs' width is the generation length.
    x = model.preprocessor.generate_preprocess(["hello world"], sequence_length=40)
    model.preprocessor = None
    with pytest.raises(ValueError, match=r"\(40; .*max_sequence_length=16\)"):
        model.generate(x, stop_token_ids=None)
