"""Readers: a user's files in, validated frames out.

Every reader checks its input at the boundary and raises :class:`~towerkit.errors.DataError`
naming the file and the line, row or column at fault: a missing column, an unparsable timestamp,
an empty file, bytes that are not UTF-8, a ragged row. Nothing here loops over rows in Python.

Interaction frames always come out with the columns ``user``, ``item``, ``timestamp`` (int64
seconds since the epoch, UTC) and, when asked for, ``rating`` (float32), in file order.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from towerkit.data.cells import (
    PARQUET_SUFFIXES,
    check_present,
    check_scalar_ids,
    empty_cells,
    exact_seconds,
    finite_numbers,
    id_column,
    is_text,
    missing_cells,
    plain,
    require_columns,
    where,
)
from towerkit.errors import DataError
from towerkit.types import Format, TimeUnit

logger = logging.getLogger(__name__)

PathLike = str | Path
#: a predicate on a shard's path relative to its log's directory (a partition filter)
Keep = Callable[[str], bool]


_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


# --------------------------------------------------------------------------------------------
# Low-level table reading with errors that name the line
# --------------------------------------------------------------------------------------------


def check_file(path: Path) -> None:
    """Raise a :class:`DataError` when ``path`` is missing, a directory or empty."""
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
        DataError: the file is missing or empty, a row has more or fewer fields than the header
            (pandas would otherwise take an extra field for an index and shift every column),
            or a byte does not decode in ``encoding``.
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
    # The C parser splits on one character; a longer separator (MovieLens' '::') is matched
    # literally by the Python one, which is slower but reads the same values.
    engine, split = ("c", sep) if len(sep) == 1 else ("python", re.escape(sep))
    try:
        with warnings.catch_warnings():
            # index_col=False: a row with one field too many must not become an index; pandas
            # then drops the extra field with a warning, which is made an error here.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep=split,
                header=0 if header else None,
                names=list(names) if names is not None else None,
                index_col=False,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                quoting=csv.QUOTE_MINIMAL,
                skip_blank_lines=False,
                encoding=encoding,
                encoding_errors="strict",
                engine=engine,
            )
    except UnicodeDecodeError:
        raise DataError(_first_bad_utf8_line(path, encoding)) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as err:
        try:
            message = _first_ragged_line(path, sep, header, names, encoding, err)
        except UnicodeDecodeError:  # a bad byte before the ragged row pandas stopped at
            message = _first_bad_utf8_line(path, encoding)
        raise DataError(message) from None
    # Physical line numbers: the header is line 1 when present, and a quoted field that holds
    # a line break makes its record span more than one line.
    frame.index = np.arange(len(frame)) + (2 if header else 1)
    if len(sep) == 1 and _breaks_inside_quotes(frame, path):
        starts = _record_lines(path, sep, encoding)
        frame.index = starts[1 if header else 0 :][: len(frame)]
    # Drop blank lines (read as one empty field, the rest missing) without renumbering.
    if len(frame.columns) > 0:
        blank = np.logical_and.reduce([empty_cells(frame[c]) for c in frame.columns])
        frame = frame[~blank]
    if frame.empty:
        raise DataError(f"{path}: the file has no data rows")
    return frame


def _breaks_inside_quotes(frame: pd.DataFrame, path: Path) -> bool:
    """Whether a value read holds a line break (only a quoted field can): then rows and
    physical lines part. Files without a quote character skip the look at the values."""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            if b'"' in chunk:
                break
        else:
            return False
    return any(frame[c].str.contains("\n|\r", regex=True).any() for c in frame.columns)


def _record_lines(path: Path, sep: str, encoding: str) -> np.ndarray:
    """The physical line on which each record of a delimited file starts (header included)."""
    starts, end = [], 0
    with open(path, newline="", encoding=encoding) as handle:
        rows = csv.reader(handle, delimiter=sep)
        try:
            for _ in rows:
                starts.append(end + 1)
                end = rows.line_num
        except csv.Error:  # a quote never closed: the record it opens starts after the last one
            starts.append(end + 1)
    return np.asarray(starts, dtype=np.int64)


def _first_ragged_line(
    path: Path, sep: str, header: bool, names, encoding: str, err: Exception
) -> str:
    """Name the first line whose field count differs from the header's, or the one where a
    quote opens that never closes (error path only)."""
    if len(sep) == 1:
        with open(path, newline="", encoding=encoding) as handle:
            rows = csv.reader(handle, delimiter=sep, strict=True)
            expected = len(names) if names is not None else None
            end = 0
            try:
                for row in rows:
                    start, end = end + 1, rows.line_num
                    if not row:
                        continue
                    if expected is None:
                        expected = len(row)
                        if header:
                            continue
                    if len(row) != expected:
                        return (
                            f"{path}: line {start}: {len(row)} fields where the "
                            f"{'header has' if header else 'first row has'} {expected}"
                        )
            except csv.Error:
                if "EOF" in str(err) or "end of data" in str(err).lower():
                    return f"{path}: line {end + 1}: a quoted field opens here and is never closed"
    else:  # a separator of several characters, which the csv module cannot split on
        expected = len(names) if names is not None else None
        with open(path, encoding=encoding) as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                fields = line.count(sep) + 1
                if expected is None:
                    expected = fields
                    if header:
                        continue
                if fields != expected:
                    return (
                        f"{path}: line {number}: {fields} fields where the "
                        f"{'header has' if header else 'first row has'} {expected}"
                    )
    detail = str(err).split("C error: ")[-1].strip()
    return f"{path}: ragged row: {detail}"


def parquet_shards(directory: Path, keep: Keep | None = None) -> list[Path]:
    """The Parquet files under a directory that hold rows, in name order (both readers, in
    memory and out of core, read these); with ``keep``, those whose path relative to the
    directory it accepts (a partition filter, :func:`towerkit.data.partitions.partition_filter`).

    An empty file (a writer that died before its first byte) and a shard of zero rows are
    skipped, each with a warning naming it: they hold nothing to lose. Only the footers are
    read here.

    Raises:
        DataError: no Parquet file at all, none with rows, a file that is not Parquet, or a
            shard whose columns differ from the first shard's (the message names both and
            the difference).
    """
    found = sorted(directory.rglob("*.parquet")) + sorted(directory.rglob("*.pq"))
    if not found:
        raise DataError(f"{directory}: a directory without .parquet files")
    if keep is not None:
        found = [p for p in found if keep(p.relative_to(directory).as_posix())]
        if not found:
            raise DataError(f"{directory}: no shard is in the partitions data.partitions asks for")
    shards: list[Path] = []
    first: tuple[Path, pa.Schema] | None = None
    for path in found:
        if path.stat().st_size == 0:
            logger.warning("%s: an empty file, skipped", path)
            continue
        try:
            metadata = pq.read_metadata(path)
            schema = metadata.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        if metadata.num_rows == 0:
            logger.warning("%s: a shard of zero rows, skipped", path)
            continue
        if first is None:
            first = (path, schema)
        elif _columns(schema) != _columns(first[1]):  # in any order: columns are read by name
            raise DataError(
                f"{path}: its columns differ from those of {first[0]} "
                f"({_schema_difference(schema, first[1])}); the shards of a log share one schema"
            )
        shards.append(path)
    if not shards:
        raise DataError(f"{directory}: no data rows (every Parquet file in it is empty)")
    return shards


def _columns(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {field.name: field.type for field in schema}


def _schema_difference(this: pa.Schema, first: pa.Schema) -> str:
    """What ``this`` schema has that ``first`` has not, and the other way round."""
    parts = []
    extra = [name for name in this.names if name not in first.names]
    missing = [name for name in first.names if name not in this.names]
    if missing:
        parts.append(f"no {', '.join(missing)}")
    if extra:
        parts.append(f"also {', '.join(extra)}")
    for name in this.names:
        if name in first.names and this.field(name).type != first.field(name).type:
            parts.append(f"{name} is {this.field(name).type}, not {first.field(name).type}")
    return "; ".join(parts)


def shards_dataset(directory: Path, keep: Keep | None = None) -> pads.Dataset:
    """The Parquet shards under ``directory`` as one dataset (shards in name order), with the
    values of Hive-style partition folders (``dt=2026-12-01/``) as columns."""
    shards = parquet_shards(directory, keep)
    return pads.dataset(
        [str(s) for s in shards], format="parquet", partitioning="hive",
        partition_base_dir=str(directory),
    )  # fmt: skip


def read_parquet(path: PathLike, keep: Keep | None = None) -> pd.DataFrame:
    """Read a Parquet file, or a directory of Parquet shards (read as one table, shards in
    name order; Hive partition folders as columns; ``keep``: see :func:`parquet_shards`). The
    index holds the 1-based row number."""
    path = Path(path)
    if path.is_dir():
        try:
            table = shards_dataset(path, keep).to_table()
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(
                f"{path}: the Parquet shards cannot be read as one table ({err})"
            ) from None
    else:
        check_file(path)
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    frame = table.to_pandas()
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    frame.index = np.arange(1, len(frame) + 1)
    return frame


def _read_text(path: Path) -> str:
    """A whole UTF-8 text file (a byte that is not UTF-8 is an error naming its line)."""
    check_file(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(_first_bad_utf8_line(path, "utf-8")) from None


def read_jsonl(path: PathLike) -> pd.DataFrame:
    """Read JSON lines (one object per line); the index holds the physical line number."""
    path = Path(path)
    records, numbers = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected an object, got {record!r:.40}")
        records.append(record)
        numbers.append(number)
    if not records:
        raise DataError(f"{path}: the file has no data rows")
    frame = pd.DataFrame.from_records(records)
    frame.index = np.asarray(numbers)
    return frame


def read_sequences(path: PathLike) -> pd.DataFrame:
    """Read the one-sequence-per-line format of the SASRec / S3-Rec benchmark files: ``user
    item item ...`` separated by spaces, items in time order.

    Returns a frame with the columns ``user`` and ``item`` as strings, one row per item in file
    order, indexed by the physical line of its user.
    """
    path = Path(path)
    users, items, numbers = [], [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 1:
            raise DataError(f"{path}: line {number}: user {tokens[0]!r} has no items")
        users.extend([tokens[0]] * (len(tokens) - 1))
        items.extend(tokens[1:])
        numbers.extend([number] * (len(tokens) - 1))
    if not users:
        raise DataError(f"{path}: the file has no sequences")
    return pd.DataFrame({"user": users, "item": items}, index=np.asarray(numbers))


def _looks_like_sequences(path: Path, lines: int = 200) -> bool:
    """Whether a ``.txt`` file reads as ``user item item ...`` lines (the SASRec and S3-Rec
    files): its first lines hold whitespace-separated tokens only, at least two each, in
    varying numbers (a log of one event per line has as many fields on every line)."""
    try:
        with path.open("rb") as file:
            head = file.read(1 << 16)
    except OSError:
        return False
    rows = [line.split() for line in head.splitlines()[:lines] if line.strip()]
    if len(rows) > 1 and len(head) == 1 << 16:
        rows = rows[:-1]  # the last line read may be cut
    return (
        len(rows) > 1
        and not any(mark in head for mark in (b",", b"\t", b";", b"|"))
        and all(len(tokens) >= 2 for tokens in rows)
        and len({len(tokens) for tokens in rows}) > 1
    )


def detect_format(path: PathLike, sep: str | None = None) -> Format:
    """The format of a file by its suffix (a directory: Parquet shards; any other suffix with a
    separator given: delimited text; a ``.txt`` of ``user item item ...`` lines: sequences)."""
    path = Path(path)
    if path.is_dir():
        return "parquet"
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in _SEPARATORS:
        return "tsv" if _SEPARATORS[suffix] == "\t" else "csv"
    if sep is not None:
        return "csv"
    if suffix == ".txt" and _looks_like_sequences(path):
        return "sequences"
    raise DataError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; name it (csv, tsv, "
        "parquet, jsonl, or sequences for 'user item item ...' lines)"
    )


def read_table(
    path: PathLike,
    *,
    format: Format | None = None,
    sep: str | None = None,
    keep: Keep | None = None,
):
    """Any supported file as a frame whose index names each row's line (or row) number
    (``keep``: which shards of a directory, see :func:`parquet_shards`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    format = format or detect_format(path, sep)
    if keep is not None and not (format == "parquet" and path.is_dir()):
        raise DataError(f"{path}: data.partitions filters the shards of a directory, not a file")
    if format == "parquet":
        return read_parquet(path, keep)
    if format == "jsonl":
        return read_jsonl(path)
    if format == "sequences":
        return read_sequences(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; only Parquet shards are read from one")
    return read_delimited(path, sep=sep or ("\t" if format == "tsv" else ","))


# --------------------------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------------------------


def read_interactions(
    path: PathLike,
    *,
    user: str = "user",
    item: str = "item",
    timestamp: str | None = "timestamp",
    rating: str | None = None,
    weight: str | None = None,
    format: Format | None = None,
    sep: str | None = None,
    timestamp_unit: TimeUnit = "s",
    keep: Keep | None = None,
) -> pd.DataFrame:
    """Read an interaction log with a column mapping.

    Args:
        path: a CSV, TSV, Parquet file or directory of Parquet shards, JSON lines file, or a
            file of ``user item item ...`` sequences (``format="sequences"``; its columns are
            fixed: no mapping, no timestamp).
        user, item: the names of the source columns holding each role.
        timestamp: the time column, or None: the file order is the time order.
        rating, weight: optional rating and interaction-weight columns.
        format: ``csv``, ``tsv``, ``parquet``, ``jsonl`` or ``sequences``; by default from the
            suffix (a directory: Parquet shards).
        sep: the separator of a text file; by default taken from the format or suffix.
        timestamp_unit: the unit of numeric timestamps (``s``, ``ms``, ``us``, ``ns``).
        keep: a directory's shards to read, by relative path (a partition filter; the
            others are never opened).

    Returns:
        A frame with columns ``user``, ``item``, ``timestamp`` (int64 epoch seconds; without a
        time column, the row's position) and ``rating`` / ``weight`` (float32) when mapped, in
        file order, except that rows whose times differ below a second are put in time order
        first (times are kept in whole seconds, and later sorts are stable). Ids that are all
        integers become int64, other ids stay strings.

    Raises:
        DataError: naming the file and line (or row) of the first bad value: a missing id, time
            or rating (empty, or spelled NaN, NULL, ...), a time that does not parse or is out of
            range, a rating or weight that is not a finite number, a weight <= 0.

    Example:
        >>> pd.DataFrame({"userId": [7, 7], "movieId": [31, 1029], "rating": [2.5, 3.0],
        ...               "timestamp": [1260759144, 1260759179]}).to_csv("ratings.csv", index=False)
        >>> log = read_interactions("ratings.csv", user="userId", item="movieId", rating="rating")
        >>> log.columns.tolist(), log["timestamp"].dtype.name
        (['user', 'item', 'timestamp', 'rating'], 'int64')
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    format = format or detect_format(path, sep)
    frame = read_table(path, format=format, sep=sep, keep=keep)
    if format == "sequences":
        if timestamp is not None and timestamp != "timestamp":
            raise DataError(f"{path}: a sequences file has no time column (items are in order)")
        user, item, timestamp = "user", "item", None
    wanted = {"user": user, "item": item}
    for role, column in (("timestamp", timestamp), ("rating", rating), ("weight", weight)):
        if column is not None:
            wanted[role] = column
    require_columns(path, frame, wanted)
    for column in wanted.values():
        check_present(path, frame, column)
    check_scalar_ids(path, frame, user, "user")
    check_scalar_ids(path, frame, item, "item")

    out = pd.DataFrame(
        {"user": id_column(frame[user]).to_numpy(), "item": id_column(frame[item]).to_numpy()}
    )
    if timestamp is None:
        out["timestamp"] = np.arange(len(frame), dtype=np.int64)
    else:
        try:
            exact = exact_seconds(
                frame[timestamp], what=f"timestamp in {timestamp!r}", unit=timestamp_unit
            )
        except ValueError as err:
            raise DataError(f"{path}: {_prefix(path)}{err}") from None
        seconds = np.floor(exact)
        if (exact != seconds).any():
            # Whole seconds would tie rows a fraction apart, and every later sort keeps ties in
            # file order: among the rows of each second, put them in time order now, while the
            # fractions are known (each row keeps a slot its second held in the file).
            slots = np.argsort(seconds, kind="stable")  # each second's slots, in file order
            order = np.empty(len(seconds), dtype=np.int64)
            order[slots] = np.lexsort((exact, seconds))  # each second's rows, in time order
            moved = int((order != np.arange(len(order))).sum())
            if moved:
                logger.info("%s: %d rows put in sub-second time order", path, moved)
                out = out.iloc[order].reset_index(drop=True)
                frame, seconds = frame.iloc[order], seconds[order]
        out["timestamp"] = seconds.astype(np.int64)
    if rating is not None:
        out["rating"] = finite_numbers(path, frame, rating, "rating").astype(np.float32)
    if weight is not None:
        weights = finite_numbers(path, frame, weight, "weight")
        if (weights <= 0).any():
            pos = int(np.flatnonzero(weights <= 0)[0])
            raise DataError(
                f"{path}: {where(path, frame, pos)}: weight {frame[weight].iloc[pos]!r} must be "
                "> 0 (drop the row instead)"
            )
        out["weight"] = weights.astype(np.float32)
    logger.debug("read %d interactions from %s", len(out), path)
    return out


def _as_list(value: object, sep: str) -> list[str]:
    """A multi-valued cell as a list of strings: a list as it is, text split at ``sep``."""
    if isinstance(value, list | tuple | np.ndarray):
        return [str(x) for x in value]
    return [x for x in str(value).split(sep) if x]


def _prefix(path: Path) -> str:
    return "row " if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES else "line "


def read_side_table(
    path: PathLike,
    *,
    key: str,
    rename_key: str,
    columns: Sequence[str] | None = None,
    list_columns: Sequence[str] = (),
    list_sep: str | Mapping[str, str] = "|",
    numeric_columns: Sequence[str] = (),
    format: Format | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a user or item side table keyed by ``key`` (CSV, TSV, Parquet, JSON lines).

    Args:
        key: the id column; it is renamed to ``rename_key`` (``"user"`` or ``"item"``).
        columns: the feature columns to keep (all by default).
        list_columns: multi-valued columns: text holding several values joined by ``list_sep``
            (genres "Comedy|Drama"; a mapping gives each column its own separator), or lists
            (Parquet, JSON); they become lists of strings.
        numeric_columns: columns that must hold numbers (a missing value stays missing).

    Raises:
        DataError: a missing column, a missing or duplicated key, a numeric feature value that
            is not a number.
    """
    path = Path(path)
    frame = read_table(path, format=format, sep=sep)
    keep = list(columns) if columns is not None else [c for c in frame.columns if c != key]
    require_columns(path, frame, {"key": key, **{f"feature {c!r}": c for c in keep}})
    check_present(path, frame, key)
    ids = id_column(frame[key])
    duplicated = ids.duplicated().to_numpy()
    if duplicated.any():
        pos = int(np.flatnonzero(duplicated)[0])
        raise DataError(
            f"{path}: {where(path, frame, pos)}: {key} {plain(ids.iloc[pos])!r} appears twice; "
            "a side table has one row per id"
        )
    out = pd.DataFrame({rename_key: ids.to_numpy()})
    for column in keep:
        values = frame[column]
        missing = missing_cells(values)
        if column in list_columns:
            separator = list_sep if isinstance(list_sep, str) else list_sep.get(column, "|")
            lists = values.map(lambda v, sep=separator: _as_list(v, sep))
            out[column] = lists.where(~missing, None).to_numpy()
        elif column in numeric_columns:
            numbers = pd.to_numeric(values.where(~missing), errors="coerce")
            bad = numbers.isna().to_numpy() & ~missing
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{path}: {where(path, frame, pos)}: {values.iloc[pos]!r} in the numeric "
                    f"feature {column!r} is not a number"
                )
            out[column] = numbers.to_numpy(dtype=np.float64)
        elif is_text(values):
            values = values.where(~missing, None)
            numeric = pd.to_numeric(values, errors="coerce")
            all_numbers = not (numeric.isna().to_numpy() & ~missing).any()
            out[column] = numeric.to_numpy() if all_numbers else values.to_numpy()
        else:
            out[column] = values.to_numpy()
    return out
