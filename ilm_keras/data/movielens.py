"""MovieLens loaders (ML-100K, ML-1M, ML-25M) into `InteractionData`.

Every rating counts as one implicit interaction (the rating value is not
used), as in OpenP5. The loaders then

1. drop repeated (user, movie) rows, keeping the earliest (counted in
   `InteractionData.dropped`; the MovieLens releases have none);
2. apply a k-core filter (default 5): users and items with fewer than `core`
   interactions are removed, repeatedly, until every remaining user and item
   has at least `core` (counted in `dropped`);
3. order each user's items by time. **Tie rule**: interactions with the same
   timestamp keep the order of their rows in the ratings file (a stable sort
   by timestamp, then row number).

Users and items are numbered from 0 in ascending order of their raw MovieLens
id. Item texts come from the movies file: `"Toy Story (1995). Genres:
Animation, Children's, Comedy."`; the parsed fields are kept in
`InteractionData.item_meta`.
"""

import contextlib
import csv
import io
import os
import re
import warnings

import numpy as np
import pandas as pd

from ilm_keras.data.interactions import InteractionData

# The 19 genre flags of ML-100K's `u.item`, in column order (`u.genre`).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# Genre names that mean "no genre" and are left out of item texts.
_NO_GENRE = {"unknown", "(no genres listed)", ""}


@contextlib.contextmanager
def naming_decode_errors(path, encoding):
    """Turns a `UnicodeDecodeError` while reading `path` into a `ValueError`
    that names the file and the first line that is not `encoding` text.

    pandas and `open` report a byte offset into a buffer, not the line, so
    the file is scanned again, line by line, when the error happens.

    Args:
        path: the file being read.
        encoding: its expected text encoding.

    Example:
    ```python
    with naming_decode_errors("ml-100k/u.data", "utf-8"):
        text = open("ml-100k/u.data", encoding="utf-8").read()
    ```
    """
    try:
        yield
    except UnicodeDecodeError as error:
        number, reason = None, error.reason
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    line.decode(encoding)
                except UnicodeDecodeError as line_error:
                    reason = line_error.reason
                    break
            else:
                number = None
        where = f"{path}, line {number}" if number else path
        name = "UTF-8" if encoding.lower().startswith("utf") else encoding
        raise ValueError(f"{where}: not {name} text ({reason}).") from None


def read_table(
    path,
    columns,
    sep,
    types=None,
    header=False,
    encoding="utf-8",
):
    """Reads a delimited text file with pandas; bad lines name file and line.

    Fields are split at every separator (quotes have no special meaning, as
    in MovieLens ratings files). Every line must have exactly
    `len(columns)` fields, none of them empty,
    and the fields named in `types` must parse as numbers. Blank lines are
    errors too, so that row `r` of the result is always line
    `r + 1 (+ 1 with a header)` of the file.

    Args:
        path: the file.
        columns: the column names, in file order.
        sep: the field separator; a separator longer than one character
            (MovieLens-1M's `"::"`) is replaced by a tab before parsing.
        types: optional dict `{column: int or float}`; those columns are
            returned as int64 / float64, the others as strings.
        header: whether the first line is a header (skipped).
        encoding: the file's text encoding (`"latin-1"` for ML-1M, u.item).

    Returns:
        A `pandas.DataFrame` with the given columns.

    Raises:
        ValueError: a malformed line, or text that is not in `encoding`,
            naming the file and line number.

    Example:
    ```python
    ratings = read_table(
        "ml-100k/u.data", ["user", "item", "rating", "timestamp"], "\\t",
        types={"user": int, "item": int, "rating": float, "timestamp": int},
    )
    ```
    """
    path = os.fspath(path)
    with naming_decode_errors(path, encoding):
        return _read_table(path, columns, sep, types, header, encoding)


def _read_table(path, columns, sep, types, header, encoding):
    types = dict(types or {})
    first_line = 2 if header else 1
    shown_sep = sep
    if len(sep) > 1:
        with open(path, encoding=encoding) as f:
            source = io.StringIO(f.read().replace(sep, "\t"))
        sep = "\t"
    else:
        source = path
    _check_leading_lines(path, len(columns), shown_sep, first_line, encoding)

    def read(dtype, **kwargs):
        if isinstance(source, io.StringIO):
            source.seek(0)
        return _read_csv_strict(
            path,
            source,
            sep=sep,
            header=0 if header else None,
            names=list(columns),
            index_col=False,
            dtype=dtype,
            skip_blank_lines=False,
            quoting=csv.QUOTE_NONE,
            encoding=encoding,
            engine="c",
            **kwargs,
        )

    try:
        # Fast path: let pandas parse the numbers. Any bad field makes it
        # fail, and the slow path below finds the line.
        dtype = {c: "str" for c in columns}
        dtype.update(
            {c: ("int64" if t is int else "float64") for c, t in types.items()}
        )
        frame = read(dtype)
        if not frame.isna().any().any():
            return frame
    except pd.errors.ParserError as error:
        _raise_parser_error(path, error, len(columns), shown_sep)
    except (ValueError, TypeError, OverflowError):
        pass  # A field that is not a number: find it below.

    frame = read("str", na_filter=False)
    for column in columns:
        empty = np.flatnonzero(frame[column].to_numpy() == "")
        if empty.size:
            raise ValueError(
                f"{path}, line {empty[0] + first_line}: expected "
                f"{len(columns)} fields ({', '.join(columns)}) separated by "
                f"{shown_sep!r}; field {column!r} is missing or empty."
            )
    for column, kind in types.items():
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(values)
        if kind is int:
            bad |= values != np.round(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}, line {row + first_line}: field {column!r} is "
                f"{frame[column].iloc[row]!r}, not "
                f"{'an integer' if kind is int else 'a number'}."
            )
        frame[column] = values.astype(np.int64 if kind is int else np.float64)
    return frame


def _read_csv_strict(path, source, **kwargs):
    """`pd.read_csv` where a ParserWarning (pandas dropping data) is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(source, **kwargs)
        except pd.errors.ParserWarning as warning:
            raise ValueError(f"{path}: cannot parse: {warning}") from None


def _check_leading_lines(path, num_fields, sep, count, encoding):
    """Checks the field count of the first `count` lines (header included).

    pandas, given column names, silently drops extra fields of the first
    line (a ParserWarning) instead of failing; later lines with extra fields
    fail with a ParserError that `_raise_parser_error` reports.
    """
    with open(path, encoding=encoding) as f:
        for number in range(1, count + 1):
            line = f.readline()
            if not line:
                return
            found = len(line.rstrip("\r\n").split(sep))
            if found > num_fields:
                raise ValueError(
                    f"{path}, line {number}: expected {num_fields} fields "
                    f"separated by {sep!r}, found {found}."
                )


def _raise_parser_error(path, error, num_fields, sep):
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
    if match:
        raise ValueError(
            f"{path}, line {match.group(2)}: expected {num_fields} fields "
            f"separated by {sep!r}, found {match.group(3)}."
        ) from None
    raise ValueError(f"{path}: cannot parse: {error}") from None


def split_title_year(title):
    """Splits `"Toy Story (1995)"` into `("Toy Story", 1995)`.

    A title without a trailing `(yyyy)` is returned whole, with year `None`.
    """
    title = title.strip()
    match = re.fullmatch(r"(.*\S)\s*\((\d{4})\)", title)
    if match is None:
        return title, None
    return match.group(1), int(match.group(2))


_ARTICLES = ("The", "A", "An", "Les", "La", "Le", "L'", "Il", "Das", "Der",
             "Die", "El", "Los", "Las")


def readable_title(title):
    """Moves MovieLens' trailing article to the front.

    `"Usual Suspects, The"` → `"The Usual Suspects"`; `"Misérables, Les"` →
    `"Les Misérables"`; an alternative title in parentheses stays at the end:
    `"City of Lost Children, The (Cité des enfants perdus, La)"` → `"The City
    of Lost Children (Cité des enfants perdus, La)"`.
    """
    articles = "|".join(re.escape(a) for a in _ARTICLES)
    match = re.fullmatch(rf"(.+?), ({articles})(\s*\(.*\))?", title)
    if match is None:
        return title
    article, rest = match.group(2), match.group(1)
    joined = article + rest if article.endswith("'") else f"{article} {rest}"
    return joined + (match.group(3) or "")


def item_text(meta):
    """The text of one item from its metadata dict.

    Example:
    ```python
    item_text({"title": "Toy Story", "year": 1995,
               "genres": ["Animation", "Children's", "Comedy"]})
    # "Toy Story (1995). Genres: Animation, Children's, Comedy."
    ```
    The title goes through `readable_title` ("Usual Suspects, The" →
    "The Usual Suspects").
    """
    text = readable_title(meta["title"])
    if meta.get("year") is not None:
        text += f" ({meta['year']})"
    text += "."
    genres = [g for g in meta.get("genres", ()) if g not in _NO_GENRE]
    if genres:
        text += f" Genres: {', '.join(genres)}."
    return text


def _meta(title, year, genres):
    genres = [g for g in genres if g not in _NO_GENRE]
    return {"title": title, "year": year, "genres": genres}


def read_movies(path):
    """Reads a MovieLens movies file into `{raw movie id: metadata dict}`.

    The format is chosen from the file name: `u.item` (ML-100K original,
    latin-1, `|`-separated with 19 genre flags), `*.item` (RecBole atomic
    file with a `item_id:token ...` header), `movies.dat` (ML-1M,
    `MovieID::Title::Genres`, latin-1) or `movies.csv` (ML-20M/25M,
    `movieId,title,genres`). A folder is searched for one of them.

    Each metadata dict has `"title"` (without the year), `"year"` (int or
    `None`) and `"genres"` (list of str, without "unknown" /
    "(no genres listed)").

    Args:
        path: the file, or a folder holding one of the files above.

    Returns:
        A dict from raw movie id (str) to metadata dict.

    Example:
    ```python
    movies = read_movies("ml-1m/movies.dat")
    movies["1"]  # {"title": "Toy Story", "year": 1995, "genres": [...]}
    ```
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = _find_file(
            path, ["u.item", "movies.dat", "movies.csv"], suffix=".item"
        )
    base = os.path.basename(path)
    movies = {}
    if base == "u.item":
        columns = ["id", "title", "release", "video", "url"] + [
            f"g{k}" for k in range(len(ML100K_GENRES))
        ]
        frame = _read_u_item(path, columns)
        flags = frame[columns[5:]].to_numpy()
        for row, (movie, title, release) in enumerate(
            zip(frame["id"], frame["title"], frame["release"])
        ):
            title, year = split_title_year(title)
            if year is None and re.fullmatch(r".*\d{4}", release):
                year = int(release[-4:])
            genres = [g for g, f in zip(ML100K_GENRES, flags[row]) if f == 1]
            movies[str(movie)] = _meta(title, year, genres)
    elif base.endswith(".item"):
        frame = _read_recbole(path, {"item_id": "id", "movie_title": "title",
                                     "release_year": "year", "class": "genres"})
        for movie, title, year, genres in zip(
            frame["id"], frame["title"], frame["year"], frame["genres"]
        ):
            year = int(year) if re.fullmatch(r"\d{4}", year) else None
            movies[movie] = _meta(title, year, genres.split())
    elif base.endswith(".dat"):
        frame = read_table(
            path, ["id", "title", "genres"], "::", encoding="latin-1",
            types={"id": int},
        )
        for movie, title, genres in zip(frame["id"], frame["title"], frame["genres"]):
            movies[str(movie)] = _meta(*split_title_year(title), genres.split("|"))
    elif base.endswith(".csv"):
        frame = _read_movies_csv(path)
        for movie, title, genres in zip(frame["id"], frame["title"], frame["genres"]):
            movies[str(movie)] = _meta(*split_title_year(title), genres.split("|"))
    else:
        raise ValueError(
            f"{path}: unknown movies file; expected u.item, *.item (RecBole), "
            "movies.dat or movies.csv."
        )
    if len(movies) != len(frame):
        ids = frame["id"].astype(str)
        row = int(np.flatnonzero(ids.duplicated().to_numpy())[0])
        raise ValueError(
            f"{path}, line {row + (1 if base == 'u.item' or base.endswith('.dat') else 2)}: "
            f"movie id {ids.iloc[row]!r} appears a second time."
        )
    return movies


def _read_movies_csv(path):
    """Reads `movieId,title,genres` (ML-20M/25M `movies.csv`).

    Titles with commas are quoted in the official release; some copies leave
    them unquoted. Since the id never holds a comma and the genres never do,
    a row with more than 3 fields is read as id, title (the middle fields
    joined by commas), genres.
    """
    ids, titles, genres = [], [], []
    with naming_decode_errors(path, "utf-8-sig"), open(
        path, encoding="utf-8-sig", newline=""
    ) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:1]] != ["movieId"]:
            raise ValueError(
                f"{path}, line 1: expected the header movieId,title,genres; "
                f"found {header}."
            )
        for row in reader:
            line = reader.line_num
            if len(row) < 3 or not row[0].strip().isdigit() or not row[-1]:
                raise ValueError(
                    f"{path}, line {line}: expected movieId,title,genres with "
                    f"an integer movieId; found {row}."
                )
            ids.append(int(row[0]))
            titles.append(",".join(row[1:-1]))
            genres.append(row[-1])
    return pd.DataFrame({"id": ids, "title": titles, "genres": genres})


def _read_u_item(path, columns):
    # `u.item` leaves the release date and video date empty for some movies,
    # so empty fields are allowed here; only the id and flags are checked.
    frame = read_table_allow_empty(path, columns, "|", encoding="latin-1")
    for column in ["id"] + columns[5:]:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(values) | (values != np.round(values))
        if column != "id":
            bad |= (values != 0) & (values != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}, line {row + 1}: field {column!r} is "
                f"{frame[column].iloc[row]!r}; expected "
                f"{'an integer id' if column == 'id' else 'a 0/1 genre flag'}."
            )
        frame[column] = values.astype(np.int64)
    return frame


def read_table_allow_empty(path, columns, sep, encoding="utf-8", header=False):
    """Like `read_table` (all string columns) but fields may be empty.

    The number of fields per line is still checked.
    """
    path = os.fspath(path)
    with naming_decode_errors(path, encoding):
        _check_leading_lines(
            path, len(columns), sep, 2 if header else 1, encoding
        )
        try:
            return _read_csv_strict(
                path, path, sep=sep, header=0 if header else None,
                names=list(columns), index_col=False, dtype="str",
                na_filter=False, skip_blank_lines=False,
                quoting=csv.QUOTE_NONE, encoding=encoding, engine="c",
            )
        except pd.errors.ParserError as error:
            _raise_parser_error(path, error, len(columns), sep)


def _read_recbole(path, wanted, types=None):
    """Reads a RecBole atomic file, keeping the `wanted` {field: name} columns."""
    path = os.fspath(path)
    with naming_decode_errors(path, "utf-8"):
        with open(path, encoding="utf-8") as f:
            fields = f.readline().rstrip("\n").split("\t")
    names = [field.split(":")[0] for field in fields]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(
            f"{path}, line 1: header {fields} lacks the field(s) {missing}."
        )
    columns = [wanted.get(n, f"_{n}") for n in names]
    frame = read_table_allow_empty(path, columns, "\t", header=True)
    for name in wanted.values():
        empty = np.flatnonzero(frame[name].to_numpy() == "")
        if empty.size and name not in ("year", "genres"):
            raise ValueError(
                f"{path}, line {empty[0] + 2}: field {name!r} is empty."
            )
    for column, kind in (types or {}).items():
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(values)
        if kind is int:
            bad |= values != np.round(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}, line {row + 2}: field {column!r} is "
                f"{frame[column].iloc[row]!r}, not a number."
            )
        frame[column] = values.astype(np.int64 if kind is int else np.float64)
    return frame[list(wanted.values())]


def _find_file(folder, names, suffix=None):
    for name in names:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    if suffix:
        found = sorted(f for f in os.listdir(folder) if f.endswith(suffix))
        if found:
            return os.path.join(folder, found[0])
    raise FileNotFoundError(
        f"{folder}: none of {names}"
        + (f" or *{suffix}" if suffix else "")
        + " found."
    )


def build_interaction_data(name, ratings, movies=None, core=5, dropped=None):
    """Turns raw (user, item, timestamp) rows into `InteractionData`.

    Applies the duplicate rule, the k-core filter and the time order with its
    tie rule described in this module's docstring.

    Args:
        name: the dataset name.
        ratings: a DataFrame with columns `user`, `item` (raw ids, any type
            convertible to str; sorted numerically when they are ints) and
            `timestamp`, one row per interaction in file order.
        movies: optional `{raw item id (str): metadata dict}` from
            `read_movies`; items missing from it get no text.
        core: the k of the k-core filter; 0 or 1 keeps everything.
        dropped: counts to start from (e.g. from parsing).

    Returns:
        `InteractionData`.
    """
    dropped = dict(dropped or {})
    frame = pd.DataFrame(
        {
            "user": ratings["user"].to_numpy(),
            "item": ratings["item"].to_numpy(),
            "timestamp": ratings["timestamp"].to_numpy(),
            "row": np.arange(len(ratings)),
        }
    )
    if len(frame) == 0:
        raise ValueError(f"{name}: no interactions to load.")
    # Time order; equal timestamps keep file order (the row number).
    frame = frame.sort_values(["user", "timestamp", "row"], kind="stable")

    duplicate = frame.duplicated(["user", "item"], keep="first")
    if duplicate.any():
        dropped["repeated (user, item) rows, later ones"] = int(duplicate.sum())
        frame = frame[~duplicate]

    if core > 1:
        before = len(frame)
        while True:
            user_counts = frame["user"].map(frame["user"].value_counts())
            item_counts = frame["item"].map(frame["item"].value_counts())
            keep = (user_counts >= core) & (item_counts >= core)
            if keep.all():
                break
            frame = frame[keep]
        if before != len(frame):
            dropped[f"{core}-core filter"] = before - len(frame)
        if len(frame) == 0:
            raise ValueError(
                f"{name}: the {core}-core filter removed every interaction."
            )

    users = np.sort(frame["user"].unique())
    items = np.sort(frame["item"].unique())
    user_codes = np.searchsorted(users, frame["user"].to_numpy())
    item_codes = np.searchsorted(items, frame["item"].to_numpy())
    # `frame` is sorted by user, so each user's items form one run.
    bounds = np.flatnonzero(np.diff(user_codes)) + 1
    sequences = np.split(item_codes, bounds)

    item_ids = [str(i) for i in items]
    item_meta = item_texts = None
    if movies is not None:
        item_meta = [movies.get(i) for i in item_ids]
        item_texts = [None if m is None else item_text(m) for m in item_meta]
    return InteractionData(
        name=name,
        user_ids=[str(u) for u in users],
        item_ids=item_ids,
        sequences=sequences,
        item_texts=item_texts,
        dropped=dropped,
        item_meta=item_meta,
    )


_RATING_TYPES = {"user": int, "item": int, "rating": float, "timestamp": float}


def load_ml100k(path, core=5, name="ML100K"):
    """Loads MovieLens-100K into `InteractionData`.

    Reads either the original release (`u.data`: `user \\t item \\t rating
    \\t timestamp`; `u.item`, latin-1) or the RecBole atomic files
    (`*.inter` with `user_id`, `item_id`, `timestamp` fields; `*.item` with
    `item_id`, `movie_title`, `release_year`, `class`). See the module
    docstring for the filtering and ordering rules.

    Args:
        path: the folder.
        core: the k-core filter (default 5, as OpenP5).
        name: the dataset name.

    Returns:
        `InteractionData` with item texts and `item_meta`.

    Example:
    ```python
    data = load_ml100k("../shared/data/ml-100k")
    data.stats()  # {"users": 943, "items": 1349, "interactions": 99287}
    ```
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "u.data")):
        ratings = read_table(
            os.path.join(path, "u.data"),
            ["user", "item", "rating", "timestamp"], "\t", types=_RATING_TYPES,
        )
        movies_file = os.path.join(path, "u.item")
    else:
        inter = _find_file(path, [], suffix=".inter")
        ratings = _read_recbole(
            inter, {"user_id": "user", "item_id": "item", "timestamp": "timestamp"},
            types={"user": int, "item": int, "timestamp": float},
        )
        movies_file = inter[: -len(".inter")] + ".item"
    movies = read_movies(movies_file) if os.path.isfile(movies_file) else None
    return build_interaction_data(name, ratings, movies, core=core)


def load_ml1m(path, core=5, name="ML1M"):
    """Loads MovieLens-1M (`ratings.dat`, `movies.dat`) into `InteractionData`.

    `ratings.dat` lines are `UserID::MovieID::Rating::Timestamp`;
    `movies.dat` lines are `MovieID::Title::Genres` (genres `|`-separated),
    latin-1 encoded. See the module docstring for the rules.

    Args:
        path: the folder.
        core: the k-core filter (default 5, as OpenP5).
        name: the dataset name.

    Returns:
        `InteractionData` with item texts and `item_meta`.

    Example:
    ```python
    data = load_ml1m("ml-1m")  # 6,040 users, 3,416 items after 5-core
    ```
    """
    path = os.fspath(path)
    ratings = read_table(
        os.path.join(path, "ratings.dat"),
        ["user", "item", "rating", "timestamp"], "::",
        types=_RATING_TYPES, encoding="latin-1",
    )
    movies_file = os.path.join(path, "movies.dat")
    movies = read_movies(movies_file) if os.path.isfile(movies_file) else None
    return build_interaction_data(name, ratings, movies, core=core)


def load_ml25m(path, core=5, name="ML25M"):
    """Loads MovieLens-25M (or 20M) `ratings.csv` / `movies.csv`.

    `ratings.csv` has the header `userId,movieId,rating,timestamp`;
    `movies.csv` has `movieId,title,genres`. See the module docstring.

    Args:
        path: the folder.
        core: the k-core filter (default 5).
        name: the dataset name.

    Returns:
        `InteractionData` with item texts and `item_meta`.

    Example:
    ```python
    data = load_ml25m("ml-25m")
    ```
    """
    path = os.fspath(path)
    ratings = read_table(
        os.path.join(path, "ratings.csv"),
        ["user", "item", "rating", "timestamp"], ",", header=True,
        types=_RATING_TYPES,
    )
    movies_file = os.path.join(path, "movies.csv")
    movies = read_movies(movies_file) if os.path.isfile(movies_file) else None
    return build_interaction_data(name, ratings, movies, core=core)


def detect_movielens_format(path):
    """Returns `"ml-100k"`, `"ml-100k-recbole"`, `"ml-1m"`, `"ml-25m"` or None."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return None
    files = os.listdir(path)
    if "u.data" in files:
        return "ml-100k"
    if any(f.endswith(".inter") for f in files):
        return "ml-100k-recbole"
    if "ratings.dat" in files:
        return "ml-1m"
    if "ratings.csv" in files:
        return "ml-25m"
    return None


def load_movielens(path, core=5, name=None):
    """Loads a MovieLens folder, choosing the loader from its files.

    `u.data` or `*.inter` → `load_ml100k`; `ratings.dat` → `load_ml1m`;
    `ratings.csv` → `load_ml25m`.

    Args:
        path: the folder.
        core: the k-core filter (default 5).
        name: the dataset name (default: the folder name).

    Returns:
        `InteractionData`.

    Example:
    ```python
    data = load_movielens("../shared/data/ml-100k")
    ```
    """
    kind = detect_movielens_format(path)
    name = name or os.path.basename(os.path.normpath(os.fspath(path)))
    if kind in ("ml-100k", "ml-100k-recbole"):
        return load_ml100k(path, core=core, name=name)
    if kind == "ml-1m":
        return load_ml1m(path, core=core, name=name)
    if kind == "ml-25m":
        return load_ml25m(path, core=core, name=name)
    raise ValueError(
        f"{path}: not a MovieLens folder (no u.data, *.inter, ratings.dat or "
        "ratings.csv)."
    )
