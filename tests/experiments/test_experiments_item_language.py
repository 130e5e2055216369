"""Exact metrics and data rules of the item-language benchmark
(`ilm_keras.experiments.item_language`), on synthetic strings and data."""

import numpy as np
import pytest

from ilm_keras.data.interactions import InteractionData
from ilm_keras.experiments import item_language as il


def test_parse_genres_reads_the_answer_after_the_title():
    assert il.parse_genres("Toy Story is Animation, Children's and Comedy.") == {
        "Animation", "Children's", "Comedy"}
    # A genre word in the title (before " is ") is not an answer.
    assert il.parse_genres("Horror Hotel is Drama.") == {"Drama"}
    # Free text by stem.
    assert il.parse_genres("an animated science fiction romantic comedy") == {
        "Animation", "Sci-Fi", "Romance", "Comedy"}
    assert il.parse_genres("It is a film noir about a war veteran.") == {
        "Film-Noir", "War"}
    # "war" as a word only; "award" / "warm" are not War.
    assert il.parse_genres("x is an award winning warm story") == frozenset()
    assert il.parse_genres("") == frozenset()


def test_genre_scores():
    s = il.genre_scores("X is Comedy and Drama.", ["Comedy"])
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["exact"] == 0.0
    s = il.genre_scores("X is Comedy.", ["Comedy"])
    assert (s["precision"], s["recall"], s["f1"], s["exact"]) == (1.0, 1.0, 1.0, 1.0)
    s = il.genre_scores("I do not know.", ["Comedy", "Drama"])
    assert (s["precision"], s["recall"], s["f1"], s["exact"]) == (0.0, 0.0, 0.0, 0.0)
    s = il.genre_scores("X is a movie from 1995 in the Western and War genres.",
                        ["War", "Drama"])
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        il.genre_scores("X is Drama.", [])


def test_year_metrics():
    assert il.parse_year("2001: A Space Odyssey was released in 1968.") == 1968
    assert il.parse_year("no year here, 123 or 12345") is None
    assert il.year_within("It came out in 1994.", 1996) == 1.0
    assert il.year_within("It came out in 1993.", 1996) == 0.0
    assert il.year_within("It came out in 1998.", 1996) == 1.0
    assert il.year_within("Not sure.", 1996) == 0.0
    scores = il.score_answers("year", ["in 1990", "in 1995"],
                              ["", ""], [{"year": 1991}, {"year": 1999}])
    np.testing.assert_array_equal(scores["year_within_2"], [1.0, 0.0])
    scores = il.score_answers("genres", ["X is Drama.", "X is War."], ["", ""],
                              [{"genres": ["Drama"]}, {"genres": ["Drama"]}])
    np.testing.assert_allclose(scores["genre_f1"], [1.0, 0.0])


def _toy_data(num_items=20):
    genres = [["Comedy"], ["Drama"], ["Action", "Thriller"], ["Horror"]]
    meta = [{"title": f"Movie {i}", "year": 1990 + i % 7,
             "genres": genres[i % 4]} for i in range(num_items)]
    meta[3] = None  # no metadata: never a text target, never tested
    return InteractionData(
        name="toy", user_ids=["u"], item_ids=[str(i) for i in range(num_items)],
        sequences=[np.arange(num_items)], item_meta=meta,
        item_texts=[None if m is None else m["title"] for m in meta],
        item_index=np.arange(1001, 1001 + num_items),
        user_index=np.array([1]))


def test_split_items_and_the_held_out_guard():
    data = _toy_data()
    seen, held = il.split_items(data, 0.25, seed=0)
    assert len(held) == 5 and len(seen) == 14  # 19 items with metadata
    assert not set(seen) & set(held) and 3 not in set(seen) | set(held)
    again = il.split_items(data, 0.25, seed=0)
    np.testing.assert_array_equal(again[1], held)
    assert not np.array_equal(il.split_items(data, 0.25, seed=1)[1], held)

    pairs = [(il.chat_prompt(q), a) for _, q, a in
             il.item_task_examples(data, seen, "genres")]
    il.assert_never_targets(data, held, phase1_items=seen, phase2_pairs=pairs)
    with pytest.raises(AssertionError, match="phase-1"):
        il.assert_never_targets(data, held, phase1_items=[held[0]])
    leak = [(f"Which genres does item_{data.item_index[held[0]]} belong to?", "x")]
    with pytest.raises(AssertionError, match="phase-2"):
        il.assert_never_targets(data, held, phase2_pairs=leak)


def test_prompts_and_reference_rows():
    data = _toy_data()
    (item, question, answer), = il.item_task_examples(data, [2], "genres")
    assert "item_1003" in question and answer == "Movie 2 is Action and Thriller."
    assert "Movie 2" in il.reference_prompt(question, data, 2, "title")
    floor = il.reference_prompt(question, data, 2, "nothing")
    assert "this movie" in floor and "item_" not in floor
    prompt = il.chat_prompt("Q?", [("A?", "B.")])
    assert prompt.endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\nB.")
    prior = il.prior_answers(data, [0, 4, 8, 1])  # Comedy x3, Drama x1
    assert il.parse_genres(prior["genres"]) == {"Comedy"}


def test_answers_about_this_movie_drop_only_the_title():
    data = _toy_data()
    for task, expected in [("genres", "This movie is Action and Thriller."),
                           ("year", "This movie was released in 1992."),
                           ("describe", "This movie is a movie from 1992 in the "
                                        "Action and Thriller genres.")]:
        (_, question, titled), = il.item_task_examples(data, [2], task, seed=5)
        (_, same_question, answer), = il.item_task_examples(
            data, [2], task, seed=5, subject="this_movie")
        assert same_question == question and titled.startswith("Movie 2 ")
        assert answer == expected
        assert il.parse_genres(answer) == il.parse_genres(titled)
    with pytest.raises(ValueError, match="title"):
        il.item_task_examples(data, [2], "title", subject="this_movie")
    with pytest.raises(ValueError, match="answer_subject"):
        il.ItemLanguageConfig(answer_subject="the film")
    with pytest.raises(ValueError, match="title"):
        il.ItemLanguageConfig(answer_subject="this_movie",
                              eval_tasks=("genres", "title"))
    assert il.ItemLanguageConfig(answer_subject="this_movie").answer_subject == "this_movie"


def test_linear_probe_recovers_linear_genres():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 8))
    genres = [["Comedy"] if v[0] > 0 else ["Drama"] for v in vectors]
    years = np.rint(1990 + 3 * vectors[:, 1]).astype(int)
    probe = il.linear_probe(vectors[:300], genres[:300], years[:300],
                            vectors[300:], genres[300:], years[300:],
                            regularization=0.1)
    assert probe["genre_f1"] > 0.8
    assert probe["year_within_2"] > 0.9
    noise = il.linear_probe(rng.normal(size=(300, 8)), genres[:300], years[:300],
                            rng.normal(size=(100, 8)), genres[300:], years[300:])
    assert noise["genre_f1"] < probe["genre_f1"]


def test_feature_probe_reads_a_small_signal_under_a_large_constant():
    # The genre is the sign of a tiny item-dependent part on top of a large
    # shared vector in other dims: standardising makes it readable, and a
    # choice that only the validation items see picks the penalty.
    rng = np.random.default_rng(0)
    n = 400
    signal = rng.normal(size=n)
    features = np.concatenate([
        100.0 + 1e-3 * rng.normal(size=(n, 1, 3)),  # near-constant
        1e-3 * signal[:, None, None] * np.ones((n, 1, 3))], axis=1)
    meta = [{"genres": ["Comedy"] if x > 0 else ["Drama"], "year": 1990}
            for x in signal]
    data = InteractionData(
        name="toy", user_ids=["u"], item_ids=[str(i) for i in range(n)],
        sequences=[np.arange(n)], item_meta=meta, item_texts=[None] * n,
        item_index=np.arange(n), user_index=np.array([1]))
    seen, held = np.arange(300), np.arange(300, n)
    probe = il.feature_probe(features, data, seen, held, penalties=(1e-3, 1e6))
    assert probe["penalty"] == 1e-3 and "predictions" not in probe
    assert probe["genre_f1"] > 0.9 and probe["genre_item_auc"] > 0.95
    # Scored only on the held-out items: shuffling their features breaks it.
    shuffled = features.copy()
    shuffled[held] = features[rng.permutation(held)]
    assert il.feature_probe(shuffled, data, seen, held)["genre_item_auc"] < 0.75


def test_replace_from_assignments():
    config = il.replace_from_assignments(
        il.ItemLanguageConfig(),
        ["phase2_steps=7", "eval_tasks=genres,year", "one_shot=false",
         "phase1_steps_per_epoch=none", "phase2_learning_rate=0.01"])
    assert config.phase2_steps == 7 and config.eval_tasks == ("genres", "year")
    assert config.one_shot is False and config.phase1_steps_per_epoch is None
    assert config.phase2_learning_rate == 0.01
    with pytest.raises(ValueError, match="Unknown ItemLanguageConfig field 'nope'"):
        il.replace_from_assignments(il.ItemLanguageConfig(), ["nope=1"])
    assert il.replace_from_assignments(
        il.ItemLanguageConfig(), ["align_target=genre_bag"]).align_target == "genre_bag"
    with pytest.raises(ValueError, match="align_target must be one of .*'genre_soup'"):
        il.replace_from_assignments(il.ItemLanguageConfig(), ["align_target=genre_soup"])


def test_step_losses_recovers_each_steps_own_loss():
    """With a zero learning rate every step's loss is its batch's loss,
    which `StepLosses` recovers from fit's running means."""
    import keras

    x = np.arange(12, dtype="float32").reshape(6, 2) / 10.0
    y = np.array([[0.0], [1.0], [4.0], [2.0], [9.0], [3.0]], "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    recorder = il.StepLosses()
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0,
              callbacks=[recorder])
    expected = [float(np.mean((model.predict(x[i:i + 2], verbose=0) - y[i:i + 2]) ** 2))
                for i in (0, 2, 4)]
    np.testing.assert_allclose(recorder.losses, expected * 2, rtol=1e-4)
    assert len(set(np.round(expected, 4))) == 3  # the steps do differ


def test_genre_ranking_scores():
    drama, comedy, war = (il.GENRES.index(g) for g in ("Drama", "Comedy", "War"))
    scores = np.zeros((3, len(il.GENRES)))
    scores[0, drama] = 2.0                      # the true genre on top
    scores[1, comedy], scores[1, war] = 1.0, 3.0  # one true genre below a false one
    scores[2, war] = 0.5
    out = il.genre_ranking_scores(scores, [["Drama"], ["Comedy", "Drama"], ["War"]])
    # Row 0: Drama beats all 17 false genres. Row 1: Comedy beats 15 of 16
    # false genres (not War), Drama (score 0) ties 15 and loses to War.
    # Row 2: War beats every false genre.
    np.testing.assert_allclose(out["genre_auc"], [1.0, (15 + 7.5) / 32, 1.0])
    np.testing.assert_array_equal(out["genre_top1"], [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        il.genre_ranking_scores(np.full((1, len(il.GENRES)), np.nan), [["Drama"]])
    with pytest.raises(ValueError, match=r"scores must be \[n, 18\]"):
        il.genre_ranking_scores(np.zeros((1, 3)), [["Drama"]])


def test_probe_genre_ranking_is_near_perfect_on_linear_genres():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 4))
    genres = [["Comedy"] if v[0] > 0 else ["Drama"] for v in vectors]
    years = np.full(300, 1990)
    probe = il.linear_probe(vectors[:200], genres[:200], years[:200],
                            vectors[200:], genres[200:], years[200:])
    assert probe["genre_auc"] > 0.95 and probe["genre_top1"] > 0.9


def tiny_item_model():
    """A 2-layer GPT-2 over a byte-level tokenizer, with one item."""
    import keras_hub

    from ilm_keras.models.item_language_model import ItemLanguageModel
    from ilm_keras.models.item_language_model_preprocessor import (
        ItemLanguageModelPreprocessor,
    )

    vocab = {"<|endoftext|>": 0}
    for c in [chr(c) for c in range(33, 127)] + ["Ġ"]:
        vocab[c] = len(vocab)
    vocab["qz"] = len(vocab)  # one merge (the tokenizer needs one), unused
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=["q z"])
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=64)
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, item_ids=["1"], sequence_length=40, max_mentions=1,
        loss_positions=True)
    return ItemLanguageModel(
        backbone, preprocessor, item_encoder="mlp", num_mlp_tokens=1,
        item_embeddings=np.random.default_rng(0).normal(size=(1, 4)).astype("float32"))


def test_answer_log_likelihood_is_the_answers_tokens_without_the_end():
    import keras

    model = tiny_item_model()
    prompt = "what is item_1 ?"
    pairs = [(prompt, "ab"), (prompt, "abc"), ("say x", "xy")]
    # Three pairs in batches of two: the last batch is padded.
    ll = il.answer_log_likelihood(model, pairs, batch_size=2)
    nll, counts = il.answer_log_perplexity(model, pairs, batch_size=2)
    np.testing.assert_array_equal(counts, [3, 4, 3])  # answer bytes + end
    # By hand from one batch of all three: the log-probability of each
    # answer token, the end token left out.
    x, y, weight = model.preprocessor({"prompts": [p for p, _ in pairs],
                                       "responses": [a for _, a in pairs]})
    logp = np.asarray(keras.ops.convert_to_numpy(
        keras.ops.log_softmax(model.predict_on_batch(x), axis=-1)), np.float64)
    y, weight = np.asarray(y), np.asarray(weight)
    picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    for row, (_, answer) in enumerate(pairs):
        positions = np.flatnonzero(weight[row] > 0)
        np.testing.assert_allclose(ll[row], picked[row, positions[:-1]].sum(), rtol=1e-4)
        # The mean NLL with the end token counts one more (negative) term.
        np.testing.assert_allclose(-nll[row] * counts[row],
                                   picked[row, positions].sum(), rtol=1e-4)
    # "abc" is "ab" then "c": its likelihood is lower by log p(c | ..ab).
    assert ll[1] < ll[0]
    np.testing.assert_allclose(ll[1] - ll[0], picked[1, np.flatnonzero(weight[1])[2]],
                               rtol=1e-4)

    scores = il.genre_log_likelihoods(model, [prompt, "say x"], ["A", "B"],
                                      batch_size=8)
    assert scores.shape == (2, len(il.GENRES))
    expected = il.answer_log_likelihood(
        model, [("say x", f"B is {g}") for g in il.GENRES], batch_size=8)
    np.testing.assert_allclose(scores[1], expected, rtol=1e-5)


def test_genre_item_auc_ignores_genre_priors():
    genres = [["Drama"], ["Drama", "Comedy"], ["Comedy"], ["War"], ["Drama"], ["Comedy"]]
    truth = il.genre_matrix(genres)
    # A per-genre constant (a prior) knows nothing about the items.
    prior = np.tile(np.arange(len(il.GENRES), dtype=float), (len(genres), 1))
    assert il.genre_item_auc(prior, genres) == (0.5, 2)  # Drama, Comedy
    # The truth itself ranks perfectly; War has one item and is skipped.
    assert il.genre_item_auc(truth + prior, genres) == (1.0, 2)
    assert il.genre_item_auc(-truth, genres)[0] == 0.0
    assert np.isnan(il.genre_item_auc(truth, genres, min_items=4)[0])


def test_prepare_seed_keeps_held_out_texts_out_of_phase_1():
    rng = np.random.default_rng(0)
    num_items = 48  # 36 seen items: one phase-1 batch of 32
    genres = [["Comedy"], ["Drama"], ["Action", "Thriller"], ["Horror"]]
    meta = [{"title": f"Movie {i} (199{i % 10})", "year": 1990 + i % 10,
             "genres": genres[i % 4]} for i in range(num_items)]
    data = InteractionData(
        name="toy", user_ids=[str(u) for u in range(30)],
        item_ids=[str(i) for i in range(num_items)],
        sequences=[rng.choice(num_items, 8, replace=False) for _ in range(30)],
        item_meta=meta,
        item_texts=[f"{m['title']}. Genres: {', '.join(m['genres'])}." for m in meta],
        item_index=np.arange(1, num_items + 1), user_index=np.arange(1, 31))
    config = il.ItemLanguageConfig(
        heldout_fraction=0.25, cf_dim=4, cf_iterations=2, phase1_epochs=1,
        phase1_steps_per_epoch=1, qformer_layers=1, qformer_hidden=16,
        qformer_heads=2, num_query_tokens=2, num_cf_tokens=2, seed=0)
    prepared = il.prepare_seed(data, config, log=lambda *_: None)
    seen, held = prepared.seen, prepared.held_out
    assert len(held) == 12 and not set(seen) & set(held)
    assert prepared.item_table.shape == (num_items, 4)
    texts = prepared.phase1_data.item_texts
    assert all(texts[i] is None for i in held)
    assert all(texts[i] is not None for i in seen)
    assert prepared.qformer is not None and prepared.qformer.num_query_tokens == 2
    assert set(prepared.seconds) == {"cf", "phase1"}
    assert set(prepared.phase1_loss) >= {"loss", "itc_loss"}


def test_reference_rows_are_reused_only_from_a_run_that_computes_them_alike():
    import dataclasses
    import json

    config = il.ItemLanguageConfig(seed=3)
    row = {"held_out": {"genres": {"genre_f1": 0.5, "n": 4}}}
    previous = json.loads(json.dumps({  # as read back from its JSON file
        "config": dataclasses.asdict(dataclasses.replace(
            config, phase2_steps=7, align_epochs=5, align_target="genre_bag")),
        "sequence_length": 128, "code": "commit abc", "generation": il.GENERATION,
        "rows": {"text_reference": row, "floor_llm": row, "floor_prior": row, "mlp": row},
        "examples": {"text_reference": {"held_out": {}}}}))
    rows, examples, reason = il.reusable_reference_rows(previous, config, 128, metrics=row)
    assert reason is None and sorted(rows) == sorted(il.REFERENCE_ROWS)
    assert rows["floor_llm"] == row and examples["text_reference"] == {"held_out": {}}
    # Anything that changes the split, the prompts or the decoding: computed.
    for change, message in [({"seed": 4}, "field 'seed'"),
                            ({"num_eval_items": 8}, "field 'num_eval_items'"),
                            ({"eval_tasks": ("genres",)}, "field 'eval_tasks'"),
                            ({"max_new_tokens": 12}, "field 'max_new_tokens'")]:
        rows, _, reason = il.reusable_reference_rows(
            previous, dataclasses.replace(config, **change), 128)
        assert rows is None and message in reason
    assert "sequence length 128 there, 144 here" in il.reusable_reference_rows(
        previous, config, 144)[2]
    # Answers decoded by another scheme (older results do not name theirs).
    for scheme in ({"generation": il.GENERATION - 1}, {}):
        older = {k: v for k, v in previous.items() if k != "generation"}
        rows, _, reason = il.reusable_reference_rows({**older, **scheme}, config, 128)
        assert rows is None and "decoded by scheme 1" in reason
    other = {"held_out": {"genres": {"genre_f1": 0.5, "genre_item_auc": 0.6, "n": 4}}}
    assert "metrics" in il.reusable_reference_rows(previous, config, 128, metrics=other)[2]
    del previous["rows"]["floor_llm"]
    assert "no rows ['floor_llm']" in il.reusable_reference_rows(previous, config, 128)[2]


def test_generate_answers_gives_every_prompt_the_same_budget():
    model = tiny_item_model()
    model.compile(sampler="greedy")
    tokenizer = model.preprocessor.tokenizer
    # Prompt lengths far apart: a batch is padded to its longest prompt, so
    # the short prompts could decode far past `max_new_tokens`.
    prompts = ["a", "what is item_1 about, in more words?", "hi item_1",
               "x" * 25, "say y"]
    together = il.generate_answers(model, prompts, max_new_tokens=5, batch_size=4)
    alone = [il.generate_answers(model, [p], max_new_tokens=5, batch_size=1)[0]
             for p in prompts]
    assert together == alone  # an answer does not depend on its batch
    counts = [len(tokenizer(a)) for a in together]
    assert max(counts) <= 5 and max(counts) >= 3, (together, counts)
    # The same greedy tokens as a longer budget's, cut.
    longer = il.generate_answers(model, prompts, max_new_tokens=9, batch_size=4)
    for short, long in zip(together, longer):
        assert long.startswith(short)
