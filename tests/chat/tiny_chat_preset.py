"""A tiny trained ILM preset for the chat and serve tests (seconds to build).

Synthetic catalogue made here: two-word titles, two films named "Heat"
(an ambiguous title), a title with "and" in it and one with a trailing
", The". `build_tiny_preset()` trains for two short epochs and saves one
preset per process (the chat and serve tests share it).
"""

import argparse
import atexit
import os
import shutil
import tempfile

import keras
import keras_hub
import numpy as np

import ilm_keras
from ilm_keras.tokenizers import OpenP5Tokenizer
from ilm_keras.utils import files

_WORDS = ["Harbor", "Dragon", "Galaxy", "Garden"]
_SECOND = ["Electric", "Night", "Lost", "Velvet", "Winter"]
_GENRES = {"Harbor": "Animation, Comedy", "Dragon": "Action, Adventure",
           "Galaxy": "Crime, Documentary", "Garden": "Drama, Romance"}
TITLES = [f"{a} {b} ({1950 + 2 * i + j})" for i, a in enumerate(_WORDS)
          for j, b in enumerate(_SECOND)]
TITLES += ["Heat (1986)", "Heat (1995)", "Sense and Sensibility (1995)",
           "Matrix, The (1999)"]
TEXTS = [f"{t}. Genres: {_GENRES.get(t.split()[0], 'Drama, Thriller')}."
         for t in TITLES]
ITEMS = [str(1001 + i) for i in range(len(TITLES))]
USERS = [str(u) for u in range(1, 6)]
SEQUENCE_LENGTH = 48
MAX_MENTIONS = 6

_built = {}


def tiny_model():
    """A tiny `ItemLanguageModel` trained on describe and history pairs."""
    keras.utils.set_random_seed(0)
    tokenizer = OpenP5Tokenizer.from_texts(
        TEXTS + ["this What is about ?"], item_ids=ITEMS, item_indexing="atomic")
    llm = keras_hub.models.LlamaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=1,
        num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=128)
    preprocessor = ilm_keras.ItemLanguageModelPreprocessor(
        tokenizer, ITEMS, USERS, sequence_length=SEQUENCE_LENGTH,
        max_mentions=MAX_MENTIONS, item_texts=TEXTS, loss_positions=True)
    rng = np.random.default_rng(0)
    backbone = ilm_keras.ItemLanguageModelBackbone(
        llm=llm, item_encoder="mlp", num_mlp_tokens=1,
        item_embeddings=rng.normal(size=(len(ITEMS), 4)).astype("float32"),
        user_embeddings=rng.normal(size=(len(USERS), 4)).astype("float32"))
    model = ilm_keras.ItemLanguageModel(backbone=backbone, preprocessor=preprocessor)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    prompts = [f"What is item_{i} about?" for i in ITEMS]
    responses = list(TEXTS)
    for n in range(0, len(ITEMS) - 3, 3):  # a few "next item" pairs
        history = " , ".join(f"item_{i}" for i in ITEMS[n:n + 3])
        prompts.append(f"this user has interacted with these items, in order: "
                       f"{history}. Which item will this user choose next?")
        responses.append(f"item_{ITEMS[n + 3]}")
    model.fit({"prompts": prompts, "responses": responses},
              batch_size=len(prompts), epochs=2, verbose=0)
    return model


def build_tiny_preset(folder=None):
    """The path of a saved tiny preset (built once per process and backend).

    Args:
        folder: where to save it; pytest's `tmp_path_factory` passes one it
            cleans up itself (a killed run leaves nothing behind it does not
            remove later). Without one, a temporary folder removed at exit.
    """
    backend = keras.backend.backend()
    if backend not in _built:
        if folder is None:
            folder = tempfile.mkdtemp(prefix="ilm_chat_preset_")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = os.path.join(str(folder), "preset")
        files.save_preset(tiny_model(), path)
        _built[backend] = path
    return _built[backend]


def tiny_chat_model(preset):
    """A warmed-up `ChatModel` of `preset` loaded as the front ends load
    it (k=3, max_k=5); one per process and backend."""
    key = ("chat_model", keras.backend.backend(), preset)
    if key not in _built:
        from ilm_keras.chat.options import add_model_options
        from ilm_keras.chat.options import load_chat_model

        parser = argparse.ArgumentParser()
        add_model_options(parser)
        _built[key], _ = load_chat_model(
            parser.parse_args([preset, "--k", "3", "--max-k", "5"]))
    return _built[key]
