"""SoftTokenAligner: the item encoder learns to put an item's soft tokens on
the LLM's embeddings of its text, trains the backbone's encoder in place,
and survives a save/load round trip."""

from types import SimpleNamespace

import keras
import keras_hub
import numpy as np
import pytest

from ilm_keras.experiments.item_language import align_soft_tokens
from ilm_keras.experiments.item_language import item_soft_tokens
from ilm_keras.models.item_language_model import ItemLanguageModel
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.models.qformer import QFormer
from ilm_keras.models.soft_token_aligner import SoftTokenAligner
from ilm_keras.models.soft_token_aligner import mean_target_mse
from ilm_keras.models.soft_token_aligner import soft_token_bag_targets
from ilm_keras.models.soft_token_aligner import soft_token_spread
from ilm_keras.models.soft_token_aligner import soft_token_targets

ITEMS = ["1", "2", "3", "4"]
TEXTS = [" Comedy", " Drama, War", " Horror", " Action, Comedy"]


def tiny_model(encoder):
    vocab = {"<|endoftext|>": 0}
    for c in [chr(c) for c in range(33, 127)] + ["Ġ"]:
        vocab[c] = len(vocab)
    vocab["qz"] = len(vocab)  # the tokenizer needs one merge
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=["q z"])
    llm = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocab), num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=64)
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, ITEMS, sequence_length=32, max_mentions=1)
    kwargs = {"num_mlp_tokens": 3} if encoder == "mlp" else {"qformer": QFormer(
        vocabulary_size=20, cf_dim=4, num_layers=1, hidden_dim=16, num_heads=2,
        intermediate_dim=32, num_query_tokens=3, max_text_length=8,
        num_cf_tokens=2, dropout=0.0)}
    tables = np.random.default_rng(0).normal(size=(len(ITEMS), 4)).astype("float32")
    model = ItemLanguageModel(llm, preprocessor, item_encoder=encoder,
                              item_embeddings=tables, **kwargs)
    return model, tokenizer


@pytest.mark.parametrize("encoder", ["mlp", "ilm_rand"])
def test_aligner_fits_the_text_embeddings_and_trains_the_backbone(encoder, seed):
    keras.utils.set_random_seed(seed)
    model, tokenizer = tiny_model(encoder)
    backbone = model.backbone
    aligner = SoftTokenAligner(backbone.item_soft_tokens)
    assert aligner.num_soft_tokens == 3
    targets = soft_token_targets(backbone, tokenizer, TEXTS, 3)
    assert targets.shape == (4, 3, 16)
    # " Comedy" is 7 byte tokens: the first three; " Horror" likewise.
    embed = keras.ops.convert_to_numpy(backbone.decoder.embed_tokens(
        np.asarray([tokenizer(" Co")])))[0]
    np.testing.assert_allclose(targets[0], embed, rtol=1e-6)

    rows = np.arange(4)
    before = float(np.mean((keras.ops.convert_to_numpy(aligner(rows)) - targets) ** 2))
    aligner.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse")
    aligner.fit(np.tile(rows, 8), np.tile(targets, (8, 1, 1)), batch_size=32,
                epochs=150, verbose=0)
    soft = keras.ops.convert_to_numpy(aligner(rows))
    after = float(np.mean((soft - targets) ** 2))
    assert after < 0.1 * before, (before, after)
    # Only the encoder trained: the LLM's embeddings are unchanged.
    np.testing.assert_allclose(soft_token_targets(backbone, tokenizer, TEXTS, 3),
                               targets)
    # The backbone's soft tokens are the aligner's (shared, trained in place).
    x = model.preprocessor.generate_preprocess(["about item_2 ?"], sequence_length=32)
    embedded = keras.ops.convert_to_numpy(backbone.input_embeddings(x))[0]
    mask = np.asarray(x["soft_token_mask"])[0].astype(bool)
    np.testing.assert_allclose(embedded[mask], soft[1], rtol=1e-5, atol=1e-6)


def test_aligner_fits_each_items_own_target():
    # Below the MSE of each slot's mean target: the soft tokens depend on the
    # item, not only on the slot (the loss alone cannot tell: a start far
    # from the targets falls by orders of magnitude on the mean alone).
    keras.utils.set_random_seed(0)
    model, tokenizer = tiny_model("mlp")
    aligner = SoftTokenAligner(model.backbone.item_soft_tokens)
    targets = soft_token_targets(model.backbone, tokenizer, TEXTS, 3)
    rows = np.arange(4)
    aligner.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    aligner.fit(np.tile(rows, 8), np.tile(targets, (8, 1, 1)), batch_size=32,
                epochs=300, verbose=0)
    after = float(np.mean((keras.ops.convert_to_numpy(aligner(rows)) - targets) ** 2))
    assert after < 0.1 * mean_target_mse(targets), (after, mean_target_mse(targets))


def test_aligner_round_trip(tmp_path):
    model, _ = tiny_model("ilm_rand")
    aligner = SoftTokenAligner(model.backbone.item_soft_tokens)
    rows = np.arange(4)
    expected = keras.ops.convert_to_numpy(aligner(rows))
    path = str(tmp_path / "aligner.keras")
    aligner.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(rows)), expected,
                               rtol=1e-6)


def test_targets_reject_empty_texts():
    model, tokenizer = tiny_model("mlp")
    with pytest.raises(ValueError, match="Text 1 .* has no tokens"):
        soft_token_targets(model.backbone, tokenizer, [" a", ""], 3)


def test_mean_target_mse_by_hand():
    targets = np.asarray([[[1.0, 2.0]], [[3.0, 6.0]]])  # 2 items, 1 slot
    # Mean [2, 4]: squared errors 1, 4, 1, 4.
    assert mean_target_mse(targets) == pytest.approx(2.5)
    assert mean_target_mse(targets, mean=[[1.0, 2.0]]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="items, N, dim"):
        mean_target_mse(np.zeros((2, 3)))


def genre_data():
    """The `item_meta` of TEXTS' items, as `align_soft_tokens` reads it."""
    return SimpleNamespace(item_meta={
        i: {"genres": text.strip().split(", ")} for i, text in enumerate(TEXTS)})


def expected_targets(model, tokenizer, target):
    """TEXTS' alignment targets, built here from the public target makers."""
    if target == "genre_list":
        return soft_token_targets(model.backbone, tokenizer, TEXTS, 3)
    return soft_token_bag_targets(
        model.backbone, tokenizer,
        [[" " + g for g in text.strip().split(", ")] for text in TEXTS], 3)


@pytest.mark.parametrize("target", ["genre_list", "genre_bag"])
def test_align_soft_tokens_scores_held_out_items_it_never_fits(target):
    keras.utils.set_random_seed(0)
    model, tokenizer = tiny_model("mlp")
    data = genre_data()
    config = SimpleNamespace(align_epochs=60, align_learning_rate=3e-2,
                             align_validation=0.0, align_target=target)
    fit, seconds = align_soft_tokens(model, tokenizer, data, [0, 1, 2], config,
                                     held_out=[3])
    assert seconds >= 0 and len(fit["loss"]) == 60
    assert fit["loss"][-1] < 0.5 * fit["loss"][0]
    targets = expected_targets(model, tokenizer, target)
    assert fit["mean_mse"] == pytest.approx(mean_target_mse(targets[:3]), rel=1e-5)
    assert fit["held_out_mean_mse"] == pytest.approx(
        mean_target_mse(targets[3:], targets[:3].mean(axis=0)), rel=1e-5)
    soft = item_soft_tokens(model, [3])
    assert fit["held_out_mse"] == pytest.approx(
        float(np.mean((soft - targets[3:]) ** 2)), rel=1e-4)
    config.align_target = "genre_soup"
    with pytest.raises(ValueError, match="Unknown alignment target 'genre_soup'"):
        align_soft_tokens(model, tokenizer, data, [0, 1, 2], config)


def test_soft_token_spread_by_hand():
    # Two items, one slot, two dims: [3, 1] and [3, -1]; the slot's mean is
    # [3, 0], so only the second dim varies (by +/-1).
    spread = soft_token_spread([[[3.0, 1.0]], [[3.0, -1.0]]])
    assert spread["rms"] == pytest.approx(np.sqrt(5.0))
    assert spread["item_rms"] == pytest.approx(np.sqrt(0.5))
    assert spread["item_share"] == pytest.approx(np.sqrt(0.1))
    assert soft_token_spread(np.ones((3, 2, 4)))["item_share"] == 0.0
    with pytest.raises(ValueError, match="items >= 2"):
        soft_token_spread(np.ones((1, 2, 4)))


def test_align_soft_tokens_keeps_the_best_validation_epoch():
    keras.utils.set_random_seed(0)
    model, tokenizer = tiny_model("mlp")
    data = genre_data()
    config = SimpleNamespace(align_epochs=80, align_learning_rate=3e-2,
                             align_validation=0.25, align_patience=3, seed=0,
                             align_target="genre_list")
    fit, _ = align_soft_tokens(model, tokenizer, data, [0, 1, 2, 3], config)
    (val_item,) = fit["validation_items"]
    assert len(fit["val_loss"]) == len(fit["loss"]) <= 80
    assert fit["best_epoch"] == int(np.argmin(fit["val_loss"])) + 1
    # The weights kept are the best epoch's: its validation MSE, now.
    targets = soft_token_targets(model.backbone, tokenizer, TEXTS, 3)
    soft = item_soft_tokens(model, [val_item])
    assert float(np.mean((soft - targets[[val_item]]) ** 2)) == pytest.approx(
        min(fit["val_loss"]), rel=1e-4)
    fitted = [i for i in range(4) if i != val_item]
    assert fit["mean_mse"] == pytest.approx(mean_target_mse(targets[fitted]), rel=1e-5)
    assert fit["val_mean_mse"] == pytest.approx(mean_target_mse(
        targets[[val_item]], targets[fitted].mean(axis=0)), rel=1e-5)
    with pytest.raises(ValueError, match="leaves no item"):
        align_soft_tokens(model, tokenizer, data, [0], config)


def test_bag_targets_are_the_order_free_mean_of_each_texts_mean_embedding():
    model, tokenizer = tiny_model("mlp")
    backbone = model.backbone

    def mean_embedding(text):
        ids = np.asarray([tokenizer(text)])
        return keras.ops.convert_to_numpy(backbone.decoder.embed_tokens(ids))[0].mean(0)

    targets = soft_token_bag_targets(
        backbone, tokenizer, [[" Co", " Dra"], [" Dra", " Co"], [" War"]], 3)
    assert targets.shape == (3, 3, 16)
    expected = (mean_embedding(" Co") + mean_embedding(" Dra")) / 2
    for slot in range(3):  # the same vector in every slot, in either order
        np.testing.assert_allclose(targets[0, slot], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(targets[1, slot], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(targets[2, slot], mean_embedding(" War"),
                                   rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="Item 1 needs a non-empty list"):
        soft_token_bag_targets(backbone, tokenizer, [[" a"], []], 3)
    with pytest.raises(ValueError, match="Item 0 needs a non-empty list"):
        soft_token_bag_targets(backbone, tokenizer, [" Comedy"], 3)
    with pytest.raises(ValueError, match="Text '' of item 0 has no tokens"):
        soft_token_bag_targets(backbone, tokenizer, [[""]], 3)
