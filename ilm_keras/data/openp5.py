"""OpenP5 folders and OpenP5's random indexing.

An OpenP5 dataset folder holds

- `user_sequence.txt`: one line per user, `user item item ...`, raw ids,
  items oldest first (already 5-core filtered); no empty lines;
- `item_random_indexing.txt`: `raw_item random_index` lines; OpenP5 shuffles
  the items and numbers them from 1001, and prompts write `item_<index>`;
- `user_indexing.txt`: `raw_user index` lines (users numbered from 1, in
  `user_sequence.txt` order); prompts write `user_<index>`.

Random indexing avoids the answer leak of sequential indexing (P5 PR #3).
"""

import dataclasses
import os

import numpy as np

from ilm_keras.data.interactions import InteractionData
from ilm_keras.data.movielens import item_text
from ilm_keras.data.movielens import naming_decode_errors
from ilm_keras.data.movielens import read_movies
from ilm_keras.data.movielens import read_table

FIRST_ITEM_INDEX = 1001


def read_index_file(path):
    """Reads an OpenP5 `raw_id index` file into `{raw id: int index}`.

    Args:
        path: `item_random_indexing.txt` or `user_indexing.txt`.

    Returns:
        A dict from raw id (str) to index (int), in file order.

    Raises:
        ValueError: a malformed line, or a raw id or index given twice
            (naming file and line).

    Example:
    ```python
    item_map = read_index_file("openp5/ML1M/item_random_indexing.txt")
    item_map["1193"]  # OpenP5's random index of movie 1193
    ```
    """
    frame = read_table(path, ["raw", "index"], " ", types={"index": int})
    for column in ("raw", "index"):
        repeated = frame[column].duplicated().to_numpy()
        if repeated.any():
            row = int(np.flatnonzero(repeated)[0])
            raise ValueError(
                f"{path}, line {row + 1}: {column} "
                f"{str(frame[column].iloc[row])!r} appears a second time."
            )
    return dict(zip(frame["raw"].astype(str), frame["index"].astype(int)))


def random_indexing(
    data, seed=0, item_map=None, user_map=None, first_item_index=FIRST_ITEM_INDEX
):
    """Gives every item an OpenP5 random index and every user an index.

    Items: with `item_map`, the given indices; otherwise the items are
    shuffled with `seed` and numbered from `first_item_index` (1001), as
    OpenP5 does. Users: with `user_map`, the given indices; otherwise
    1..N in `data`'s user order (OpenP5 numbers users in file order).

    Args:
        data: `InteractionData`.
        seed: the shuffle seed (ignored when `item_map` is given).
        item_map: optional `{raw item id: index}` (e.g. from
            `read_index_file`); must cover every item of `data`.
        user_map: optional `{raw user id: index}`; must cover every user.
        first_item_index: the first random index (OpenP5: 1001).

    Returns:
        A copy of `data` with `item_index` and `user_index` set.

    Example:
    ```python
    data = random_indexing(load_ml1m("ml-1m"), item_map=read_index_file(
        "openp5/ML1M/item_random_indexing.txt"))
    data.item_token(0)  # "item_<OpenP5's index of the first movie>"
    ```
    """
    if item_map is not None:
        item_index = _lookup(item_map, data.item_ids, data.name, "item")
    else:
        order = np.random.default_rng(seed).permutation(data.num_items)
        item_index = np.empty(data.num_items, dtype=np.int64)
        item_index[order] = first_item_index + np.arange(data.num_items)
    if user_map is not None:
        user_index = _lookup(user_map, data.user_ids, data.name, "user")
    else:
        user_index = np.arange(1, data.num_users + 1)
    return dataclasses.replace(data, item_index=item_index, user_index=user_index)


def _lookup(mapping, raw_ids, name, what):
    mapping = {str(k): int(v) for k, v in mapping.items()}
    missing = [r for r in raw_ids if r not in mapping]
    if missing:
        raise ValueError(
            f"{name}: the {what} map has no index for {len(missing)} "
            f"{what}(s), e.g. {missing[:5]}."
        )
    return np.array([mapping[r] for r in raw_ids], dtype=np.int64)


def _read_sequences(path):
    """Reads `user_sequence.txt` into (raw users, raw item lists, line numbers)."""
    users, sequences, lines = [], [], []
    first_line = {}
    with naming_decode_errors(path, "utf-8"):
        with open(path, encoding="utf-8") as f:
            rows = f.read().split("\n")
    if rows[-1] == "":
        rows.pop()  # The newline that ends the last line.
    for number, line in enumerate(rows, start=1):
        tokens = line.split()
        if not tokens:
            raise ValueError(
                f"{path}, line {number}: empty line; expected `user item "
                "[item ...]` on every line (delete the line)."
            )
        if len(tokens) < 2:
            raise ValueError(
                f"{path}, line {number}: expected `user item [item ...]`; "
                f"user {tokens[0]!r} has no items."
            )
        if tokens[0] in first_line:
            raise ValueError(
                f"{path}, line {number}: user {tokens[0]!r} already has a "
                f"sequence on line {first_line[tokens[0]]}."
            )
        first_line[tokens[0]] = number
        users.append(tokens[0])
        sequences.append(tokens[1:])
        lines.append(number)
    if not users:
        raise ValueError(f"{path}: no user sequences.")
    return users, sequences, lines


def load_openp5(path, name=None, item_texts_from=None, seed=0):
    """Loads an OpenP5 dataset folder into `InteractionData`.

    Items are numbered from 0 in ascending order of their random index, so
    item `i` is written `item_<data.item_index[i]>`; users keep the order of
    `user_sequence.txt`. Entries of the index files for items or users that
    have no sequence are counted in `data.dropped`.

    Args:
        path: the folder with `user_sequence.txt` (and usually
            `item_random_indexing.txt`, `user_indexing.txt`).
        name: the dataset name (default: the folder name).
        item_texts_from: optional MovieLens movies file or folder (see
            `read_movies`, e.g. `ml-100k/ml-100k.item` for OpenP5 ML100K or
            `ml-1m/movies.dat` for ML1M); joined on the raw movie id to fill
            `item_texts` and `item_meta` (`None` for items it lacks).
        seed: the shuffle seed used only when `item_random_indexing.txt` is
            missing (items are then shuffled and numbered from 1001).

    Returns:
        `InteractionData` with `item_index` and `user_index` set.

    Raises:
        ValueError: malformed or empty lines, or text that is not UTF-8
            (file and line named), a user given twice, or an item / user
            absent from the index files.

    Example:
    ```python
    data = load_openp5("../shared/data/openp5/ML100K",
                       item_texts_from="../shared/data/ml-100k")
    data.stats()  # {"users": 943, "items": 1349, "interactions": 99287}
    data.item_token(0)  # "item_1001"
    ```
    """
    path = os.fspath(path)
    name = name or os.path.basename(os.path.normpath(path))
    sequence_file = os.path.join(path, "user_sequence.txt")
    if not os.path.isfile(sequence_file):
        raise FileNotFoundError(f"{path}: no user_sequence.txt; not an OpenP5 folder.")
    users, raw_sequences, lines = _read_sequences(sequence_file)

    dropped = {}
    item_file = os.path.join(path, "item_random_indexing.txt")
    seen_items = list(dict.fromkeys(i for s in raw_sequences for i in s))
    if os.path.isfile(item_file):
        item_map = read_index_file(item_file)
        for user, seq, number in zip(users, raw_sequences, lines):
            unknown = [i for i in seq if i not in item_map]
            if unknown:
                raise ValueError(
                    f"{sequence_file}, line {number}: item {unknown[0]!r} of "
                    f"user {user!r} is not in {item_file}."
                )
        unused = len(item_map) - len(seen_items)
        if unused:
            dropped["item_random_indexing.txt entries of items without interactions"] = unused
    else:
        order = np.random.default_rng(seed).permutation(len(seen_items))
        item_map = {
            seen_items[k]: FIRST_ITEM_INDEX + rank for rank, k in enumerate(order)
        }

    user_file = os.path.join(path, "user_indexing.txt")
    if os.path.isfile(user_file):
        user_map = read_index_file(user_file)
        for user, number in zip(users, lines):
            if user not in user_map:
                raise ValueError(
                    f"{sequence_file}, line {number}: user {user!r} is not in "
                    f"{user_file}."
                )
        if len(user_map) > len(users):
            dropped["user_indexing.txt entries of users without a sequence"] = (
                len(user_map) - len(users)
            )
    else:
        user_map = {u: k + 1 for k, u in enumerate(users)}

    item_ids = sorted(seen_items, key=lambda i: item_map[i])
    position = {raw: k for k, raw in enumerate(item_ids)}
    sequences = [np.array([position[i] for i in s], dtype=np.int64) for s in raw_sequences]

    item_meta = item_texts = None
    if item_texts_from is not None:
        movies = read_movies(item_texts_from)
        item_meta = [movies.get(i) for i in item_ids]
        item_texts = [None if m is None else item_text(m) for m in item_meta]

    return InteractionData(
        name=name,
        user_ids=users,
        item_ids=item_ids,
        sequences=sequences,
        item_texts=item_texts,
        dropped=dropped,
        item_meta=item_meta,
        item_index=np.array([item_map[i] for i in item_ids], dtype=np.int64),
        user_index=np.array([user_map[u] for u in users], dtype=np.int64),
    )
