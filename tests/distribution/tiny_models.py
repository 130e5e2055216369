"""Tiny phase-1 and phase-2 models and data for the distribution tests.

Shared by the in-process layout-map tests and `distributed_runs.py` (which
sets up virtual devices before importing this). Sizes are chosen so that
every dimension the layouts split divides a (2, 4) mesh.
"""

import keras
import keras_hub
import numpy as np

import ilm_keras
from ilm_keras.data import item_item_pairs
from ilm_keras.data import make_synthetic_data
from ilm_keras.data import user_item_pairs
from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer

ITEMS = [str(1000 + i) for i in range(8)]  # every item name: 7 tokens
USERS = [str(i) for i in range(4)]
CF_DIM = 8
# The tokenizer has 145 entries; keras-hub's layouts split the embedding
# table's rows over the mesh, so the backbone's vocabulary is padded to a
# multiple of 8 (unused rows are never produced by the tokenizer).
LLM_VOCABULARY = 152


# ----------------------------------------------------------------------
# Phase 1.
# ----------------------------------------------------------------------
def phase1_problem():
    """`(data, planted, tokenizer, item_text)` of a small synthetic set."""
    data, planted = make_synthetic_data(
        num_users=30, num_items=32, num_clusters=4, interactions_per_user=6,
        seed=0,
    )
    tokenizer = ilm_keras.QFormerTokenizer.train(data.item_texts, 120, 12)
    ids, mask = tokenizer.encode(data.item_texts)
    return data, planted, tokenizer, (np.arange(32), ids, mask)


def phase1_dataset(problem, losses, batch_size, num_processes=1,
                   process_id=0):
    data, planted, _, item_text = problem
    dataset, _ = ilm_keras.make_phase1_dataset(
        planted["item_factors"], item_text=item_text,
        item_item=item_item_pairs(data.sequences),
        user_item=user_item_pairs(data.sequences),
        user_table=planted["user_factors"], losses=losses,
        batch_size=batch_size, seed=0, num_processes=num_processes,
        process_id=process_id,
    )
    return dataset


def phase1_pretrainer(problem, losses):
    """A one-layer `QFormerPretrainer` (seeded)."""
    keras.utils.set_random_seed(1)
    _, planted, tokenizer, _ = problem
    # One query: query selection is an argmax over queries, and the queries
    # of an untrained Q-Former are nearly parallel (cosine ~0.9999 here),
    # so rounding differences between programs can flip the choice and
    # with it the loss. With one query there is no choice to flip.
    qformer = ilm_keras.QFormer(
        tokenizer.vocabulary_size(), planted["item_factors"].shape[1],
        num_layers=1, hidden_dim=16,
        num_heads=2, intermediate_dim=32, num_query_tokens=1,
        max_text_length=12, num_cf_tokens=2, dropout=0.0,
    )
    return ilm_keras.QFormerPretrainer(
        qformer, losses=losses, embed_dim=8,
        dec_token_id=tokenizer.dec_token_id, seed=3,
    )


# ----------------------------------------------------------------------
# Phase 2.
# ----------------------------------------------------------------------
def phase2_tokenizer():
    return OpenP5Tokenizer.from_texts(["watched then next"], item_ids=ITEMS)


def phase2_pairs():
    """16 prompt/response pairs; every response is one item (same length,
    so every replica of a split batch holds as many response tokens)."""
    prompts, responses = [], []
    for u in range(4):
        for j in range(4):
            a, b = ITEMS[(u + j) % 8], ITEMS[(u + 2 * j + 3) % 8]
            prompts.append(f"user_{u} watched item_{a} , item_{b} then")
            responses.append(f"item_{ITEMS[(3 * u + j + 1) % 8]}")
    return {"prompts": prompts, "responses": responses}


def phase2_model(
    tokenizer, arch="llama", encoder="ilm", num_layers=2,
    vocabulary_size=LLM_VOCABULARY,
):
    """An `ItemLanguageModel` over a tiny Llama or Gemma backbone, with a
    Q-Former (`encoder="ilm"`) or the MLP adaptor (`"mlp"`)."""
    keras.utils.set_random_seed(1)
    common = dict(
        vocabulary_size=vocabulary_size, num_layers=num_layers, hidden_dim=16,
        intermediate_dim=32, dropout=0.0,
    )
    if arch == "llama":
        backbone = keras_hub.models.LlamaBackbone(
            num_query_heads=4, num_key_value_heads=2, **common
        )
    else:
        backbone = keras_hub.models.GemmaBackbone(
            num_query_heads=4, num_key_value_heads=4, head_dim=4, **common
        )
    if encoder == "ilm":
        kwargs = dict(
            qformer=ilm_keras.QFormer(
                vocabulary_size=50, cf_dim=CF_DIM, num_layers=1, hidden_dim=16,
                num_heads=2, intermediate_dim=32, num_query_tokens=2,
                max_text_length=8, num_cf_tokens=2, dropout=0.0,
            )
        )
    else:
        kwargs = dict(num_mlp_tokens=2)
    rng = np.random.default_rng(0)
    preprocessor = ilm_keras.ItemLanguageModelPreprocessor(
        tokenizer, ITEMS, USERS, sequence_length=32, max_mentions=4,
        loss_positions=True,
    )
    return ilm_keras.ItemLanguageModel(
        backbone, preprocessor, item_encoder=encoder,
        item_embeddings=rng.normal(size=(len(ITEMS), CF_DIM)).astype("float32"),
        user_embeddings=rng.normal(size=(len(USERS), CF_DIM)).astype("float32"),
        **kwargs,
    )


