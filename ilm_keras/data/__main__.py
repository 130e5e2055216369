"""Command line: `python -m ilm_keras.data stats PATH`.

Prints the users, items and interactions of a dataset folder, choosing the
loader from the folder's files: `user_sequence.txt` → OpenP5; `u.data` or
`*.inter` → MovieLens-100K; `ratings.dat` → MovieLens-1M; `ratings.csv` →
MovieLens-25M (MovieLens folders are 5-core filtered; see `--core`).
"""

import argparse
import os
import sys

from ilm_keras.data.movielens import detect_movielens_format
from ilm_keras.data.movielens import load_movielens
from ilm_keras.data.openp5 import load_openp5


def detect_format(path):
    """Returns `"openp5"`, a MovieLens format name, or None."""
    if os.path.isfile(os.path.join(path, "user_sequence.txt")):
        return "openp5"
    return detect_movielens_format(path)


def stats(path, core=5, out=None):
    """Loads the dataset folder `path`; prints its format, size and drops.

    Args:
        path: a dataset folder (see `detect_format`).
        core: the k-core filter of MovieLens folders.
        out: a text stream (default: standard output).

    Returns:
        The loaded `InteractionData`.

    Raises:
        FileNotFoundError: `path` does not exist.
        NotADirectoryError: `path` is a file, not a folder.
        ValueError: a folder without a known dataset file, or a malformed
            file (named with its line).

    Example:
    ```python
    stats("../shared/data/openp5/ML100K")  # prints users, items, ...
    ```
    """
    out = sys.stdout if out is None else out
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: does not exist.")
    if not os.path.isdir(path):
        raise NotADirectoryError(
            f"{path}: is a file, not a dataset folder; give the folder that "
            "holds it."
        )
    kind = detect_format(path)
    if kind is None:
        raise ValueError(
            f"{path}: unknown dataset folder (expected user_sequence.txt, "
            "u.data, *.inter, ratings.dat or ratings.csv)."
        )
    if kind == "openp5":
        data = load_openp5(path)
    else:
        data = load_movielens(path, core=core)
    print(f"dataset: {data.name} ({kind})", file=out)
    print(f"users: {data.num_users:,}", file=out)
    print(f"items: {data.num_items:,}", file=out)
    print(f"interactions: {data.num_interactions:,}", file=out)
    for reason, count in data.dropped.items():
        print(f"dropped ({reason}): {count:,}", file=out)
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m ilm_keras.data", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    stats_parser = commands.add_parser(
        "stats", help="print users, items and interactions of a folder"
    )
    stats_parser.add_argument("path", help="dataset folder")
    stats_parser.add_argument(
        "--core", type=int, default=5, help="k-core filter for MovieLens (default 5)"
    )
    args = parser.parse_args(argv)
    try:
        stats(args.path, core=args.core)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
