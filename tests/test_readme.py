"""The README's "Use a trained model" block runs as written."""

import re
from pathlib import Path

import keras
import keras_hub
import numpy as np

import ilm_keras
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer
from ilm_keras.utils import files

README = Path(__file__).resolve().parents[1] / "README.md"
ITEMS = [str(100 + i) for i in range(10)]
USERS = ["1", "2"]
TEXTS = [f"Film {i} ( 199{i} ) . Genres : Drama" for i in range(10)]


def readme_block(marker):
    """The first ```python block after `<!-- marker -->` in the README."""
    text = README.read_text()
    match = re.search(
        rf"<!-- {re.escape(marker)} -->\s*```python\n(.*?)```", text, re.S
    )
    assert match, f"no python block after <!-- {marker} --> in README.md"
    return match.group(1)


def small_trained_model():
    tokenizer = OpenP5Tokenizer.from_texts(
        TEXTS + ["has interacted with these items in order Which will choose next"],
        item_ids=ITEMS,
    )
    llm = keras_hub.models.LlamaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=1,
        num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32,
    )
    preprocessor = ilm_keras.ItemLanguageModelPreprocessor(
        tokenizer, ITEMS, USERS, sequence_length=48, max_mentions=6,
        item_texts=TEXTS, loss_positions=True,
    )
    rng = np.random.default_rng(0)
    backbone = ilm_keras.ItemLanguageModelBackbone(
        llm=llm, item_encoder="mlp", num_mlp_tokens=1,
        item_embeddings=rng.normal(size=(10, 4)).astype("float32"),
        user_embeddings=rng.normal(size=(2, 4)).astype("float32"),
    )
    model = ilm_keras.ItemLanguageModel(backbone=backbone, preprocessor=preprocessor)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    pairs = {
        "prompts": [f"What is item_{i} about?" for i in ITEMS],
        "responses": TEXTS,
    }
    model.fit(pairs, batch_size=10, epochs=2, verbose=0)
    return model


def test_use_a_trained_model_block_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    files.save_preset(small_trained_model(), "runs/quickstart/preset")
    exec(compile(readme_block("use-a-trained-model"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    # Five recommended items, none from the history, each with its text.
    recommended = [line.split(" ", 1) for line in printed[:5]]
    assert {item for item, _ in recommended} <= set(ITEMS[3:])
    for item, text in recommended:
        assert text == TEXTS[ITEMS.index(item)]
    assert (tmp_path / "my_ilm" / "config.json").exists()
