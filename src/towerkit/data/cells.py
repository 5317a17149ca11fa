"""Cells: what a value in a user's column means, checked the same way by the in-memory
readers (:mod:`towerkit.data.readers`) and the out-of-core stream (:mod:`towerkit.data.stream`).

Ids (integers stay integers, ``"007"`` stays text), times (epoch numbers in a unit, datetimes,
ISO-8601 strings, within the years 1678-2261), finite numbers, and the cells that hold no value
(:data:`NA_TOKENS`). An error names the file, the line or row, the column and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from towerkit.errors import DataError
from towerkit.types import TimeUnit

PARQUET_SUFFIXES = {".parquet", ".pq"}
# Cells that mean "no value" (pandas' own list): an id, a time or a rating spelled so is missing,
# never a user named "NaN".
NA_TOKENS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip


def plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read 1 rather than int64(1)."""
    return value.item() if isinstance(value, np.generic) else value


def where(path: Path, frame: pd.DataFrame, position: int) -> str:
    """'line N' for text files (the frame index holds lines), 'row N' for Parquet."""
    label = frame.index[position]
    if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES:
        return f"row {label}"
    return f"line {label}"


def column_names(names) -> str:
    """Column names for a one-line message: as they are, or quoted where they hold a line break,
    a control character or nothing at all (a header read from a damaged file)."""
    return ", ".join(n if n.isprintable() and n.strip() else repr(n) for n in map(str, names))


def require_columns(path: Path, frame: pd.DataFrame, wanted: Mapping[str, str]) -> None:
    """Check that each source column named in ``wanted`` (role -> column) exists."""
    for role, column in wanted.items():
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column {column!r} for the {role} (the columns are: "
                f"{column_names(frame.columns)}); map the {role} to one of them"
            )


def is_text(column: pd.Series) -> bool:
    """Whether a column holds text (a string dtype, or Python objects as CSV readers leave them)."""
    return pd.api.types.is_string_dtype(column.dtype) or column.dtype == object


def empty_cells(column: pd.Series) -> np.ndarray:
    """Cells with nothing in them (a blank line's fields)."""
    empty = column.isna().to_numpy()
    if is_text(column):
        empty = empty | (column.fillna("").astype(str) == "").to_numpy()
    return empty


def missing_cells(column: pd.Series) -> np.ndarray:
    """Cells without a value: empty, or spelled as one of :data:`NA_TOKENS`."""
    missing = column.isna().to_numpy()
    if is_text(column):
        missing = missing | column.fillna("").astype(str).str.strip().isin(NA_TOKENS).to_numpy()
    return missing


def check_present(path: Path, frame: pd.DataFrame, column: str) -> None:
    """Raise a :class:`DataError` naming the first row of ``frame`` with no value in ``column`` (by
    its line in ``path``)."""
    missing = missing_cells(frame[column])
    if missing.any():
        pos = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path}: {where(path, frame, pos)}: no value in column {column!r} "
            f"(got {frame[column].iloc[pos]!r}: an empty cell, a missing value or a row with "
            "too few fields)"
        )


# The range pandas and numpy datetimes cover, in seconds (years 1678 to 2261).
MIN_SECONDS, MAX_SECONDS = -9_223_372_036, 9_223_372_036
UNIT_SECONDS = {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def parse_timestamps(
    values: pd.Series, *, what: str = "timestamp", unit: TimeUnit = "s"
) -> np.ndarray:
    """Convert a column to int64 whole seconds since the epoch (UTC); see :func:`exact_seconds`
    for what is accepted."""
    return np.floor(exact_seconds(values, what=what, unit=unit)).astype(np.int64)


def exact_seconds(
    values: pd.Series, *, what: str = "timestamp", unit: TimeUnit = "s"
) -> np.ndarray:
    """Convert a column to float64 seconds since the epoch (UTC), fractions kept.

    Accepts numbers (epoch time in ``unit``), datetime columns (naive ones are taken as UTC)
    and ISO-8601 strings. Raises ValueError naming the first bad position (a label of
    ``values``'s index) and value: one that does not parse, is missing, is not finite or lies
    outside the years 1678-2261 (a time in milliseconds read as seconds lands there).
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        if stamps.isna().any():
            label = stamps.index[int(np.flatnonzero(stamps.isna().to_numpy())[0])]
            raise DataError(f"{label}: missing {what}")
        return stamps.astype("datetime64[ns]").astype(np.int64).to_numpy() / 1e9
    if pd.api.types.is_numeric_dtype(values.dtype):
        numeric = values.astype(np.float64)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
    is_number = numeric.notna().to_numpy()
    if is_number.all():
        seconds = numeric.to_numpy(dtype=np.float64) * UNIT_SECONDS[unit]
        bad = ~np.isfinite(seconds) | (seconds < MIN_SECONDS) | (seconds > MAX_SECONDS)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{values.index[pos]}: {what} {values.iloc[pos]!r} is not a time: it must be "
                f"finite and lie in the years 1678-2261 as epoch {unit} (another unit? set the "
                "timestamp unit: s, ms, us or ns)"
            )
        return seconds
    if is_number.any():  # a column of numbers with a stray value: name the stray one
        bad = ~is_number
    else:  # no numbers at all: the column must be ISO-8601 dates
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{values.index[pos]}: cannot parse {what} {values.iloc[pos]!r} "
            "(expected epoch seconds or an ISO-8601 date such as 2000-12-31T22:12:40)"
        )
    return parsed.dt.tz_localize(None).astype("datetime64[ns]").astype(np.int64).to_numpy() / 1e9


def check_scalar_ids(path: Path, frame: pd.DataFrame, column: str, role: str) -> None:
    """Ids are integers or text: a cell that holds a list, an array or a mapping (a nested
    Parquet or JSON column) is an error naming the column and the first such row."""
    values = frame[column]
    if values.dtype != object:
        return
    nested = values.map(lambda v: isinstance(v, list | tuple | dict | set | np.ndarray)).to_numpy()
    if nested.any():
        pos = int(np.flatnonzero(nested)[0])
        raise DataError(
            f"{path}: {where(path, frame, pos)}: the {role} column {column!r} holds "
            f"{type(values.iloc[pos]).__name__} values ({values.iloc[pos]!r}); ids must be "
            "integers or text"
        )


#: how an integer id is written in text: no sign but a minus, no leading zero ("007" and "7"
#: are two ids), no exponent ("1e5"), nothing not finite ("inf"); ".0" as a float export has it
INTEGER_SPELLING = r"\s*(?:0|-?[1-9][0-9]*)(?:\.0+)?\s*"


def id_column(column: pd.Series) -> pd.Series:
    """Ids stay strings unless every value is an integer written as one
    (:data:`INTEGER_SPELLING`) within int64, then they become int64: converting "007", "1e5"
    or "-0" would merge them with "7", "100000" or "0"."""
    if not is_text(column):
        if pd.api.types.is_float_dtype(column.dtype):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            whole = np.isfinite(values) & (np.abs(values) <= 2**53)
            if whole.all() and (values == np.floor(values)).all():
                return column.astype(np.int64)
        return column
    text = column.astype(str)
    array = pa.array(text.to_numpy(dtype=object), type=pa.large_string())  # Arrow: C++ speed
    if len(array) and pc.all(pc.match_substring_regex(array, f"^{INTEGER_SPELLING}$")).as_py():
        digits = pc.replace_substring_regex(pc.utf8_trim_whitespace(array), r"\.0+$", "")
        try:
            numbers = pc.cast(digits, pa.int64())
        except pa.ArrowInvalid:  # past int64: kept as text
            return text
        return pd.Series(numbers.to_numpy(), index=column.index, name=column.name)
    return text


def finite_numbers(path: Path, frame: pd.DataFrame, column: str, role: str) -> np.ndarray:
    """A column of finite numbers as float64, or an error naming the first other value."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {where(path, frame, pos)}: {role} {frame[column].iloc[pos]!r} in column "
            f"{column!r} is not a finite number"
        )
    return values
