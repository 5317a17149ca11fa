"""Readers: a user's files in, validated frames out.

Every reader checks its input at the boundary and raises :class:`~towerkit.errors.DataError`
naming the file and the line, row or column at fault: a missing column, an unparsable timestamp,
an empty file, bytes that are not UTF-8, a ragged row. Nothing here loops over rows in Python.

Interaction frames always come out with the columns ``user``, ``item``, ``timestamp`` (int64
seconds since the epoch, UTC) and, when asked for, ``rating`` (float32), in file order.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from towerkit.errors import DataError

logger = logging.getLogger(__name__)

PathLike = str | Path

_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


# --------------------------------------------------------------------------------------------
# Low-level table reading with errors that name the line
# --------------------------------------------------------------------------------------------


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")


def _first_bad_utf8_line(path: Path, encoding: str) -> str:
    """Name the line of the first byte that does not decode (error path only)."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        bad = raw[err.start : err.start + 1]
        return (
            f"{path}: line {line}: byte {bad!r} is not valid {encoding}; "
            f"re-save the file as {encoding}"
        )
    return f"{path}: the file is not valid {encoding}"


def read_delimited(
    path: PathLike,
    *,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a delimited text file as strings, keeping physical line numbers.

    Every value is read as a string (types are checked by the caller, which knows what each column
    should hold). The returned frame's index is the 1-based physical line of each row, so errors
    raised later can name it. Blank lines are skipped.

    Raises:
        DataError: the file is missing or empty, a row has more fields than the header, or a byte
            does not decode in ``encoding``.
    """
    path = Path(path)
    check_file(path)
    if sep is None:
        sep = _SEPARATORS.get(path.suffix.lower())
        if sep is None:
            raise DataError(
                f"{path}: cannot tell the separator from the suffix {path.suffix!r}; "
                "pass sep=',' or sep='\\t' (or name the file .csv / .tsv)"
            )
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            names=list(names) if names is not None else None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            quoting=csv.QUOTE_MINIMAL,
            skip_blank_lines=False,
            encoding=encoding,
            encoding_errors="strict",
            engine="c",
        )
    except UnicodeDecodeError:
        raise DataError(_first_bad_utf8_line(path, encoding)) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as err:
        detail = str(err).split("C error: ")[-1].strip()
        raise DataError(f"{path}: ragged row: {detail}") from None
    # Physical line numbers: the header is line 1 when present.
    frame.index = np.arange(len(frame)) + (2 if header else 1)
    # Drop blank lines (read as one empty field, the rest missing) without renumbering.
    if len(frame.columns) > 0:
        blank = np.logical_and.reduce([_missing(frame[c]) for c in frame.columns])
        frame = frame[~blank]
    if frame.empty:
        raise DataError(f"{path}: the file has no data rows")
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    check_file(path)
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    if frame.empty:
        raise DataError(f"{path}: the file has no data rows")
    frame.index = np.arange(len(frame))
    return frame


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read 1 rather than int64(1)."""
    return value.item() if isinstance(value, np.generic) else value


def where(path: Path, frame: pd.DataFrame, position: int) -> str:
    """'line N' for text files (the frame index holds lines), 'row N' for Parquet."""
    label = frame.index[position]
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return f"row {label}"
    return f"line {label}"


def _require_columns(path: Path, frame: pd.DataFrame, wanted: Mapping[str, str]) -> None:
    """Check that each source column named in ``wanted`` (role -> column) exists."""
    have = [str(c) for c in frame.columns]
    for role, column in wanted.items():
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column {column!r} for the {role} (the columns are: "
                f"{', '.join(have)}); pass {role}=<column name> to map it"
            )


def is_text(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column.dtype) or column.dtype == object


def _missing(column: pd.Series) -> np.ndarray:
    missing = column.isna().to_numpy()
    if is_text(column):
        missing = missing | (column.fillna("").astype(str) == "").to_numpy()
    return missing


def check_present(path: Path, frame: pd.DataFrame, column: str) -> None:
    missing = _missing(frame[column])
    if missing.any():
        pos = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path}: {where(path, frame, pos)}: no value in column {column!r} "
            "(a row with too few fields, or an empty cell)"
        )


def parse_timestamps(values: pd.Series, *, what: str = "timestamp") -> np.ndarray:
    """Convert a column to int64 seconds since the epoch (UTC).

    Accepts integer or float epoch seconds, datetime columns (naive ones are taken as UTC) and
    ISO-8601 strings. Raises ValueError naming the first bad position (a label of ``values``'s
    index) and value.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        if stamps.isna().any():
            label = stamps.index[int(np.flatnonzero(stamps.isna().to_numpy())[0])]
            raise ValueError(f"{label}: missing {what}")
        return stamps.astype("datetime64[s]").astype(np.int64).to_numpy()
    if pd.api.types.is_numeric_dtype(values.dtype):
        numeric = values.astype(np.float64)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
    is_number = numeric.notna().to_numpy()
    if is_number.all():
        return np.floor(numeric.to_numpy(dtype=np.float64)).astype(np.int64)
    if is_number.any():  # a column of numbers with a stray value: name the stray one
        bad = ~is_number
    else:  # no numbers at all: the column must be ISO-8601 dates
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{values.index[pos]}: cannot parse {what} {values.iloc[pos]!r} "
            "(expected epoch seconds or an ISO-8601 date such as 2000-12-31T22:12:40)"
        )
    return parsed.dt.tz_localize(None).astype("datetime64[s]").astype(np.int64).to_numpy()


def _id_column(column: pd.Series) -> pd.Series:
    """Ids stay strings unless every value is an integer, then they become int64."""
    if not is_text(column):
        if pd.api.types.is_float_dtype(column.dtype):
            as_int = column.astype(np.int64)
            if (as_int == column).all():
                return as_int
        return column
    numeric = pd.to_numeric(column, errors="coerce")
    if not numeric.isna().any() and (numeric == np.floor(numeric)).all():
        text = column.astype(str)
        # Keep ids such as "007" as strings: converting would merge them with "7".
        if not text.str.match(r"^-?0\d").any():
            return numeric.astype(np.int64)
    return column.astype(str)


# --------------------------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------------------------


def read_interactions(
    path: PathLike,
    *,
    user: str = "user",
    item: str = "item",
    timestamp: str = "timestamp",
    rating: str | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read an interaction log from CSV, TSV or Parquet with a column mapping.

    Args:
        path: a ``.csv``, ``.tsv`` or ``.parquet`` file (other suffixes need ``sep``).
        user, item, timestamp: the names of the source columns holding each role.
        rating: the rating column, if the log has one.
        sep: the separator of a text file; by default taken from the suffix.

    Returns:
        A frame with columns ``user``, ``item``, ``timestamp`` (int64 epoch seconds) and, when
        ``rating`` is given, ``rating`` (float32), in file order. Ids that are all integers
        become int64, other ids stay strings.

    Example:
        >>> log = read_interactions("ratings.csv", user="userId", item="movieId", rating="rating")
    """
    path = Path(path)
    frame = (
        _read_parquet(path)
        if path.suffix.lower() in _PARQUET_SUFFIXES
        else read_delimited(path, sep=sep)
    )
    wanted = {"user": user, "item": item, "timestamp": timestamp}
    if rating is not None:
        wanted["rating"] = rating
    _require_columns(path, frame, wanted)
    for column in wanted.values():
        check_present(path, frame, column)

    out = pd.DataFrame(
        {"user": _id_column(frame[user]).to_numpy(), "item": _id_column(frame[item]).to_numpy()}
    )
    try:
        out["timestamp"] = parse_timestamps(frame[timestamp], what=f"timestamp in {timestamp!r}")
    except ValueError as err:
        raise DataError(f"{path}: {_prefix(path)}{err}") from None
    if rating is not None:
        ratings = pd.to_numeric(frame[rating], errors="coerce")
        bad = ratings.isna().to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: {where(path, frame, pos)}: rating {frame[rating].iloc[pos]!r} in "
                f"column {rating!r} is not a number"
            )
        out["rating"] = ratings.to_numpy(dtype=np.float32)
    logger.debug("read %d interactions from %s", len(out), path)
    return out


def _prefix(path: Path) -> str:
    return "row " if path.suffix.lower() in _PARQUET_SUFFIXES else "line "


def read_side_table(
    path: PathLike,
    *,
    key: str,
    rename_key: str,
    columns: Sequence[str] | None = None,
    list_columns: Sequence[str] = (),
    list_sep: str = "|",
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a user or item side table (CSV, TSV or Parquet) keyed by ``key``.

    Args:
        key: the id column; it is renamed to ``rename_key`` (``"user"`` or ``"item"``).
        columns: the feature columns to keep (all by default).
        list_columns: text columns holding several values joined by ``list_sep`` (genres
            "Comedy|Drama"); they become lists of strings.

    Raises:
        DataError: a missing column, a missing or duplicated key.
    """
    path = Path(path)
    frame = (
        _read_parquet(path)
        if path.suffix.lower() in _PARQUET_SUFFIXES
        else read_delimited(path, sep=sep)
    )
    keep = list(columns) if columns is not None else [c for c in frame.columns if c != key]
    _require_columns(path, frame, {"key": key, **{f"feature {c!r}": c for c in keep}})
    check_present(path, frame, key)
    ids = _id_column(frame[key])
    duplicated = ids.duplicated().to_numpy()
    if duplicated.any():
        pos = int(np.flatnonzero(duplicated)[0])
        raise DataError(
            f"{path}: {where(path, frame, pos)}: {key} {_plain(ids.iloc[pos])!r} appears twice; "
            "a side table has one row per id"
        )
    out = pd.DataFrame({rename_key: ids.to_numpy()})
    for column in keep:
        values = frame[column]
        if column in list_columns:
            out[column] = values.astype(str).str.split(list_sep).to_numpy()
        elif is_text(values):
            numeric = pd.to_numeric(values, errors="coerce")
            out[column] = values.to_numpy() if numeric.isna().any() else numeric.to_numpy()
        else:
            out[column] = values.to_numpy()
    return out
