"""Every bad input we know of, and the error that names it: one table.

Each row of `CASES` is one bad input: a short id, a callable that feeds it
to ilm_keras on tiny data made here (it gets pytest's `tmp_path`), the
exception type and a regular expression its message must match. To cover a
new bad input, add a row. Bad inputs of compiled steps (a NaN CF vector
inside `fit`, a mixed batch inside `fit`) and the model's tensor checks have
their own tests next to the layer they guard; the rows here are the host
side, where the error comes straight from the call.
"""

import functools
import os
import subprocess
import sys
from typing import Callable, NamedTuple

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITEMS = ["1", "2", "3", "4", "5"]  # short names: a short search to compile
USERS = ["1", "2"]
CF_DIM = 4
PROMPT = "user_1 watched item_1 , item_2"


class Case(NamedTuple):
    id: str
    trigger: Callable  # trigger(tmp_path) raises
    error: type
    message: str  # a regular expression


# ----------------------------------------------------------------------
# Tiny objects the triggers use (built once, on first use).
# ----------------------------------------------------------------------
def tables(dim=CF_DIM):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(len(ITEMS), dim)).astype("float32"),
            rng.normal(size=(len(USERS), dim)).astype("float32"))


def build_ilm(item_embeddings=None, user_embeddings=None, **kwargs):
    from ilm_keras import ItemLanguageModel
    from ilm_keras import ItemLanguageModelPreprocessor
    from ilm_keras.tokenizers import OpenP5Tokenizer
    from ilm_keras.experiments.backbone_pretraining import make_llama_backbone

    tokenizer = OpenP5Tokenizer.from_texts(["watched"])
    backbone = make_llama_backbone(
        tokenizer.vocabulary_size(), num_layers=1, hidden_dim=16, num_heads=2
    )
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, ITEMS, USERS, sequence_length=32, max_mentions=3
    )
    items, users = tables()
    kwargs.setdefault("item_encoder", "mlp")
    return ItemLanguageModel(
        backbone,
        preprocessor,
        item_embeddings=items if item_embeddings is None else item_embeddings,
        user_embeddings=users if user_embeddings is None else user_embeddings,
        **kwargs,
    )


@functools.lru_cache(maxsize=None)
def ilm():
    return build_ilm()


@functools.lru_cache(maxsize=None)
def qformer():
    from ilm_keras import QFormer

    return QFormer(vocabulary_size=40, cf_dim=CF_DIM, num_layers=1,
                   hidden_dim=8, num_heads=2, intermediate_dim=16,
                   num_query_tokens=2, max_text_length=6, num_cf_tokens=2)


def phase1_pair_batch():
    """An item-item batch as `make_phase1_dataset` builds it (no text)."""
    return {
        "kind": np.array([1, 1, 1, 1], "int32"),
        "cf_a": tables()[0][:4], "id_a": np.arange(4),
        "cf_b": tables()[0][1:5], "id_b": np.arange(1, 5),
        "token_ids": np.zeros((0, 6), "int32"),
        "padding_mask": np.zeros((0, 6), bool),
    }


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.parent


# ----------------------------------------------------------------------
# Triggers.
# ----------------------------------------------------------------------
def recommend(prompts, **kwargs):
    return lambda tmp_path: ilm().recommend(prompts, k=2, **kwargs)


def nan_item_table(tmp_path):
    items, users = tables()
    items[3, 1] = np.nan
    build_ilm(item_embeddings=items, user_embeddings=users)


def wrong_dim_item_table(tmp_path):
    items, users = tables(dim=CF_DIM + 1)
    build_ilm(item_embeddings=items, user_embeddings=users,
              item_encoder="ilm", qformer=qformer())  # cf_dim=4


def qformer_nan_cf(tmp_path):
    cf = tables()[0].copy()
    cf[0, 0] = np.nan
    qformer().encode_items(cf)


def qformer_wrong_cf_dim(tmp_path):
    qformer().encode_items(np.zeros((2, CF_DIM + 2), "float32"))


def phase1_dataset(**kwargs):
    def trigger(tmp_path):
        from ilm_keras import make_phase1_dataset

        items = tables()[0]
        ids = np.ones((len(items), 3), "int32")
        mask = np.ones((len(items), 3), bool)
        arguments = dict(item_text=(np.arange(len(items)), ids, mask),
                         item_item=[[0, 1], [1, 2], [2, 3]], losses="it_ii",
                         batch_size=2)
        arguments.update(kwargs)
        make_phase1_dataset(items, **arguments)

    return trigger


def phase1_mixed_batch(tmp_path):
    from ilm_keras import QFormerPretrainer

    batch = phase1_pair_batch()
    batch["kind"][2] = 2  # a user-item pair among item-item pairs
    QFormerPretrainer(qformer(), losses="all", embed_dim=8)(batch)


def qformer_tokenizer_single_string(tmp_path):
    from ilm_keras import QFormerTokenizer

    QFormerTokenizer.train("one lone text, not a list", vocabulary_size=40)


def empty_history(tmp_path):
    from ilm_keras.data import format_prompt
    from ilm_keras.data import make_synthetic_data
    from ilm_keras.data import random_indexing

    data, _ = make_synthetic_data(num_users=6, num_items=8, num_clusters=2,
                                  interactions_per_user=4)
    format_prompt(random_indexing(data), "sequential", 0, user=0, history=[])


def ials_empty_history(tmp_path):
    from ilm_keras.cf import IALS

    model = IALS(factors=2, iterations=1)
    model.fit([[0, 1], [1, 2], [2, 0]], num_items=3)
    model.fold_in([[0], []])


def load(loader, files):
    """Writes `files` ({name: bytes}) into a folder and loads it."""

    def trigger(tmp_path):
        from ilm_keras import data as ild

        for name, content in files.items():
            write(tmp_path / "ds" / name, content)
        getattr(ild, loader)(tmp_path / "ds")

    return trigger


def stats(make_path):
    def trigger(tmp_path):
        from ilm_keras.data.__main__ import stats as run_stats

        run_stats(str(make_path(tmp_path)))

    return trigger


U_DATA = b"1\t1001\t5\t100\n1\t1002\t4\t101\n"

CASES = [
    # recommend(): prompts.
    Case("recommend_empty_prompt", recommend(""), ValueError,
         r"`prompts` is empty \(''\)"),
    Case("recommend_whitespace_prompt", recommend(" \t "), ValueError,
         r"`prompts` is only whitespace"),
    Case("recommend_whitespace_prompt_in_list", recommend([PROMPT, "  "]),
         ValueError, r"`prompts\[1\]` is only whitespace \('  '\)"),
    Case("recommend_empty_bytes_prompt", recommend(b""), ValueError,
         r"`prompts` is empty"),
    Case("recommend_bytes_not_utf8", recommend([b"item_1 \xff"]),
         ValueError, r"`prompts\[0\]` is bytes that are not UTF-8"),
    Case("recommend_no_prompts", recommend([]), ValueError,
         r"`prompts` is empty: there is nothing to process"),
    Case("recommend_prompt_not_a_string", recommend([PROMPT, 7]), TypeError,
         r"`prompts\[1\]` must be a string, got int"),
    Case("recommend_unknown_item", recommend("user_1 watched item_9999"),
         ValueError, r"mentions unknown item `item_9999`"),
    Case("recommend_unknown_user", recommend("user_77 watched item_1"),
         ValueError, r"mentions unknown user `user_77`"),
    Case("recommend_exclude_is_a_string",
         recommend([PROMPT], exclude=["item_1"]), TypeError,
         r"`exclude\[0\]` is the string 'item_1'"),
    Case("recommend_k_above_num_beams", recommend(PROMPT, num_beams=1),
         ValueError, r"Need 1 <= k <= num_beams"),
    # CF tables and item encoders.
    Case("cf_table_nan", nan_item_table, ValueError,
         r"`item_embeddings` holds NaN or inf in 1 row\(s\), first rows: \[3\]"),
    Case("cf_table_wrong_dimension", wrong_dim_item_table, ValueError,
         r"`item_embeddings` has dimension 5 but the item encoder expects "
         r"cf_dim=4"),
    Case("qformer_nan_cf_vector", qformer_nan_cf, ValueError,
         r"cf_embedding holds NaN or inf"),
    Case("qformer_wrong_cf_dimension", qformer_wrong_cf_dim, ValueError,
         r"CF embedding has dimension 6, but this Q-Former was built for "
         r"cf_dim=4"),
    # Phase 1.
    Case("phase1_unknown_item_id", phase1_dataset(item_item=[[0, 1], [1, 9]]),
         ValueError, r"Unknown item id 9: the CF table has rows 0\.\.4"),
    Case("phase1_empty_text", phase1_dataset(
        item_text=(np.arange(5), np.ones((5, 3), "int32"),
                   np.eye(5, 3, k=1, dtype=bool))),
         ValueError, r"Empty text for item 0"),
    Case("phase1_batch_size_one", phase1_dataset(batch_size=1), ValueError,
         r"batch_size must be >= 2"),
    Case("phase1_batch_mixes_kinds", phase1_mixed_batch, ValueError,
         r"mixes pair kinds"),
    Case("qformer_tokenizer_single_string", qformer_tokenizer_single_string,
         TypeError, r"`texts` takes a list of texts, not a single string"),
    # Prompts and CF folding-in.
    Case("prompt_with_empty_history", empty_history, ValueError,
         r"needs a non-empty history"),
    Case("ials_fold_in_empty_history", ials_empty_history, ValueError,
         r"History 1 is empty"),
    # Data files.
    Case("openp5_empty_line", load("load_openp5", {
        "user_sequence.txt": b"u1 a b\n\nu2 b c\n"}), ValueError,
         r"user_sequence\.txt, line 2: empty line"),
    Case("openp5_whitespace_line", load("load_openp5", {
        "user_sequence.txt": b"u1 a b\nu2 b c\n \t\nu3 a c\n"}), ValueError,
         r"user_sequence\.txt, line 3: empty line"),
    Case("openp5_user_without_items", load("load_openp5", {
        "user_sequence.txt": b"u1 a b\nu2\n"}), ValueError,
         r"user_sequence\.txt, line 2: .*user 'u2' has no items"),
    Case("openp5_not_utf8", load("load_openp5", {
        "user_sequence.txt": b"u1 a b\nu2 b \xe9\n"}), ValueError,
         r"user_sequence\.txt, line 2: not UTF-8 text"),
    Case("openp5_no_sequences", load("load_openp5", {
        "user_sequence.txt": b""}), ValueError,
         r"user_sequence\.txt: no user sequences"),
    Case("movielens_malformed_line", load("load_ml100k", {
        "u.data": U_DATA + b"2\t1001\t3\n"}), ValueError,
         r"u\.data, line 3: .*field 'timestamp' is missing or empty"),
    Case("movielens_not_a_number", load("load_ml100k", {
        "u.data": U_DATA + b"2\t1001\tfive\t102\n"}), ValueError,
         r"u\.data, line 3: field 'rating' is 'five', not a number"),
    Case("movielens_u_data_not_utf8", load("load_ml100k", {
        "u.data": U_DATA + b"2\t1001\t3\t10\xff\n"}), ValueError,
         r"u\.data, line 3: not UTF-8 text"),
    Case("movielens_recbole_not_utf8", load("load_ml100k", {
        "ml.inter": b"user_id:token\titem_id:token\ttimestamp:float\n"
                    b"1\t2\t3\n1\t\xff\t4\n"}), ValueError,
         r"ml\.inter, line 3: not UTF-8 text"),
    Case("movielens_25m_not_utf8", load("load_ml25m", {
        "ratings.csv": b"userId,movieId,rating,timestamp\n1,2,3,4\n5,6,\xfe,8\n"}),
         ValueError, r"ratings\.csv, line 3: not UTF-8 text"),
    Case("movielens_movies_csv_not_utf8", load("read_movies", {
        "movies.csv": b"movieId,title,genres\n1,Toy Story (1995),Comedy\n"
                      b"2,Caf\xe9 (1999),Drama\n"}),
         ValueError, r"movies\.csv, line 3: not UTF-8 text"),
    # python -m ilm_keras.data stats PATH
    Case("stats_path_does_not_exist", stats(lambda t: t / "missing"),
         FileNotFoundError, r"missing: does not exist"),
    Case("stats_file_instead_of_folder",
         stats(lambda t: write(t / "ds" / "u.data", U_DATA) / "u.data"),
         NotADirectoryError, r"u\.data: is a file, not a dataset folder"),
    Case("stats_folder_without_dataset", stats(lambda t: t), ValueError,
         r"unknown dataset folder"),
]


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_raises_an_error_that_names_it(case, tmp_path):
    with pytest.raises(case.error, match=case.message):
        case.trigger(tmp_path)


# ----------------------------------------------------------------------
# Inputs that look odd but are fine: handled like their plain form.
# ----------------------------------------------------------------------
def test_bytes_prompts_are_handled_exactly_like_str():
    # One prompt per call: the calls share one compiled search.
    model = ilm()
    items, scores = model.recommend(PROMPT, k=2, exclude=["item_1"])
    assert items.shape == (2,) and scores.shape == (2,)  # one prompt: [k]
    b_items, b_scores = model.recommend(
        PROMPT.encode(), k=2, exclude=["item_1"]
    )
    np.testing.assert_array_equal(b_items, items)
    np.testing.assert_array_equal(b_scores, scores)
    listed, _ = model.recommend([PROMPT.encode()], k=2, exclude=[["item_1"]])
    assert listed.shape == (1, 2)  # a list of prompts: [num_prompts, k]
    np.testing.assert_array_equal(listed[0], items)


def test_stats_messages_from_the_command_line(tmp_path):
    # The command prints the same messages (and exits 1), no traceback.
    write(tmp_path / "ds" / "u.data", U_DATA)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    for path, message in [(tmp_path / "missing", "does not exist"),
                          (tmp_path / "ds" / "u.data", "is a file, not a")]:
        result = subprocess.run(
            [sys.executable, "-m", "ilm_keras.data", "stats", str(path)],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
        )
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: {path}: {message}"), result.stderr
        assert "Traceback" not in result.stderr
