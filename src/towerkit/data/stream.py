"""The out-of-core path: a log too large for a data frame, from Parquet shards (or one CSV) to
CSR sequences, read in record batches with ``pyarrow.dataset``.

Two passes over the files, never a frame of the whole log:

1. **Vocabularies.** Per record batch, each raw user and item id's first appearance (its
   earliest time, ties broken by file position) and its count; the partial tables are merged
   as they come. Ids are numbered by first appearance in time order, exactly as the in-memory
   :func:`~towerkit.data.encoding.encode` numbers them.
2. **CSR.** Per record batch, ids are encoded and each interaction is written straight into its
   user's slot of the flat arrays (a counting sort: user offsets come from pass 1's counts,
   file order is kept inside a user). A user whose rows were not in time order in the files
   is then sorted (stably) in place; logs written in time order need no sort at all.

What lives in memory is the result (int64 items and timestamps, int32 users: 20 bytes per
interaction) plus one record batch. The sequences and everything after them (split, batches,
fingerprint) are the same as the in-memory path's for the same log, bit for bit.

This path reads logs whose ids are integer or string columns and whose times are integer
epoch seconds or Arrow timestamps in whole seconds, with no rating or weight column and no
filter. :func:`streamable` says whether a data config qualifies; the in-memory readers take
everything else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
from tqdm.auto import tqdm

from towerkit.data.cells import MAX_SECONDS, MIN_SECONDS, NA_TOKENS, column_names, id_column
from towerkit.data.encoding import EncodedInteractions
from towerkit.data.readers import Keep, shards_dataset
from towerkit.data.sequences import Sequences
from towerkit.data.vocab import Vocab
from towerkit.errors import DataError, detail, naming

logger = logging.getLogger(__name__)

BATCH_ROWS = 1 << 20


def open_dataset(
    path: Path, sep: str | None = None, text: tuple[str, ...] = (), keep: Keep | None = None
) -> pads.Dataset:
    """A Parquet file or directory of shards (shards in name order, Hive partition folders as
    columns, ``keep``: which shards, by relative path), or one CSV / TSV file (the ``text``
    columns read as text, as the in-memory reader reads ids)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if keep is not None and not path.is_dir():
        raise DataError(f"{path}: data.partitions filters the shards of a directory, not a file")
    if path.is_dir():
        return shards_dataset(path, keep)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pads.dataset(str(path), format="parquet")
    delimiter = sep or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    csv = pads.CsvFileFormat(
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in text},
            null_values=sorted(NA_TOKENS),
            strings_can_be_null=True,
        ),
    )
    return pads.dataset(str(path), format=csv)


@dataclass(frozen=True)
class _Columns:
    user: str
    item: str
    timestamp: str | None


def _check_schema(path: Path, schema: pa.Schema, columns: _Columns) -> None:
    for role in ("user", "item", "timestamp"):
        name = getattr(columns, role)
        if name is None:
            continue
        if name not in schema.names:
            raise DataError(
                f"{path}: no {role} column {name!r}; the columns are: {column_names(schema.names)}"
            )
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if role != "timestamp" and pa.types.is_nested(kind):
            raise DataError(
                f"{path}: the {role} column {name!r} holds {kind} values; ids must be integers "
                "or text"
            )


def _ids(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_integer(array.type):
        return array.cast(pa.int64())
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array.cast(pa.string())


def _seconds(path: Path, array: pa.Array, name: str, first_row: int) -> np.ndarray:
    """Integer epoch seconds, or Arrow timestamps cast to whole seconds."""
    if pa.types.is_timestamp(array.type):
        whole = pc.cast(array, pa.timestamp("s"), safe=False)
        if not pc.all(pc.equal(pc.cast(whole, array.type), array)).as_py():
            raise NotStreamable(f"{name} has fractions of a second")
        values = whole.cast(pa.int64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(array.type):
        values = array.cast(pa.int64()).to_numpy(zero_copy_only=False)
    else:
        raise NotStreamable(f"{name} is of type {array.type}, not integer epoch seconds")
    bad = (values < MIN_SECONDS) | (values > MAX_SECONDS)
    if bad.any():
        row = first_row + int(np.flatnonzero(bad)[0]) + 1
        raise DataError(
            f"{path}: row {row}: timestamp {values[bad][0]} in {name!r} is not a time: it must "
            "lie in the years 1678-2261 as epoch seconds (another unit? set the timestamp unit)"
        )
    return values


class NotStreamable(Exception):
    """The log holds something only the in-memory reader handles (the message says what)."""


def _batches(dataset: pads.Dataset, columns: list[str]):
    """The record batches that hold rows (an empty row group has nothing to count)."""
    # A threaded scan keeps decoding ahead of a slower consumer: 1.1 GB in flight at 100M
    # rows, against 0.2 GB read on this thread (and no slower: the work here is the encoding).
    batches = dataset.to_batches(
        columns=columns, batch_size=BATCH_ROWS, batch_readahead=2, fragment_readahead=1,
        use_threads=False,
    )  # fmt: skip
    return (batch for batch in batches if batch.num_rows)


def _check_present(path: Path, batch: pa.RecordBatch, names: list[str], first_row: int) -> None:
    """A null, or text the in-memory reader reads as missing (:data:`NA_TOKENS`), is an error."""
    for name in names:
        column = batch.column(name)
        missing = column.is_null()
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            spelled = pc.is_in(pc.utf8_trim_whitespace(column), pa.array(sorted(NA_TOKENS)))
            missing = pc.or_(missing, spelled)
        if pc.any(missing).as_py():
            row = first_row + int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0]) + 1
            raise DataError(f"{path}: row {row}: missing value in column {name!r}")


class _FirstSeen:
    """Per raw id: the earliest (time, file position) and the count, merged batch by batch."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.integer_text = False  # text ids that the in-memory reader makes integers (vocab)

    def add(self, ids: pa.Array, times: np.ndarray, first_row: int) -> None:
        positions = np.arange(first_row, first_row + len(ids), dtype=np.int64)
        table = pa.table({"id": ids, "ts": times, "pos": positions})
        table = table.take(pc.sort_indices(table, [("ts", "ascending")]))  # stable: file order
        firsts = table.group_by("id", use_threads=False).aggregate(
            [("ts", "first"), ("pos", "first"), ("ts", "count")]
        )
        self.parts.append(firsts.rename_columns(["id", "ts", "pos", "count"]))
        if len(self.parts) >= 4:  # partial tables of 1M-row batches: bound what is held
            self.parts = [self._merge()]

    def _merge(self) -> pa.Table:
        table = pa.concat_tables(self.parts)
        table = table.take(pc.sort_indices(table, [("ts", "ascending"), ("pos", "ascending")]))
        merged = table.group_by("id", use_threads=False).aggregate(
            [("ts", "first"), ("pos", "first"), ("count", "sum")]
        )
        return merged.rename_columns(["id", "ts", "pos", "count"])

    def vocab(self, name: str) -> tuple[Vocab, np.ndarray]:
        """The ids in order of first appearance (earliest time, then file position) and their
        counts in that order."""
        table = self._merge()
        table = table.take(pc.sort_indices(table, [("ts", "ascending"), ("pos", "ascending")]))
        raw = table.column("id").to_numpy(zero_copy_only=False)
        if raw.dtype == object:
            # The in-memory reader's rule (all integers, none written "007": int64), applied to
            # the distinct ids, decides as it would on the whole column.
            as_ids = id_column(pd.Series(raw))
            if as_ids.dtype == np.int64:
                if as_ids.duplicated().any():
                    raise NotStreamable(f"text {name} ids that spell one integer two ways")
                raw, self.integer_text = as_ids.to_numpy(), True
        return Vocab(raw, name=name), table.column("count").to_numpy().astype(np.int64)


def _encode(vocab: Vocab, ids: pa.Array, integer_text: bool) -> np.ndarray:
    values = ids.to_numpy(zero_copy_only=False)
    if integer_text:  # as the in-memory reader converts them
        values = pd.to_numeric(values).astype(np.int64)
    return vocab.encode(values)


def stream_sequences(
    path: Path,
    *,
    user: str = "user",
    item: str = "item",
    timestamp: str | None = "timestamp",
    sep: str | None = None,
    progress: bool = True,
    keep: Keep | None = None,
) -> tuple[EncodedInteractions, Sequences]:
    """Read a log in record batches into an :class:`EncodedInteractions` whose arrays are
    grouped by user (time order within each user) and the CSR :class:`Sequences` over the same
    arrays (no copy): what ``Sequences.from_encoded`` gives on the in-memory path. Without a
    time column, file order is time order.

    Raises:
        DataError: a missing column or value, a time out of range, an empty log.
        NotStreamable: the log needs the in-memory reader (fractional times, text times).
    """
    path = Path(path)
    try:
        return _stream_sequences(path, user, item, timestamp, sep, progress, keep)
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:  # (a header that is not UTF-8)
        if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
            with naming(str(path)):
                raise
        # a text file Arrow cannot parse (a ragged row, bytes that are not UTF-8): the
        # in-memory reader names the line, where Arrow counts rows
        raise NotStreamable(f"Arrow cannot parse it ({detail(err)})") from None


def _stream_sequences(
    path: Path,
    user: str,
    item: str,
    timestamp: str | None,
    sep: str | None,
    progress: bool,
    keep: Keep | None,
) -> tuple[EncodedInteractions, Sequences]:
    dataset = open_dataset(path, sep, text=(user, item), keep=keep)
    columns = _Columns(user, item, timestamp)
    _check_schema(path, dataset.schema, columns)
    names = [user, item] + ([timestamp] if timestamp else [])
    total = dataset.count_rows()
    if total == 0:
        raise DataError(f"{path}: no data rows")
    users_seen, items_seen = _FirstSeen(), _FirstSeen()

    def times_of(batch: pa.RecordBatch, first: int) -> np.ndarray:
        if timestamp is None:
            return np.arange(first, first + batch.num_rows, dtype=np.int64)
        return _seconds(path, batch.column(timestamp), timestamp, first)

    bar = tqdm(total=2 * total, unit=" rows", desc="read", disable=not progress)
    first = 0
    for batch in _batches(dataset, names):
        _check_present(path, batch, names, first)
        times = times_of(batch, first)
        users_seen.add(_ids(batch.column(user)), times, first)
        items_seen.add(_ids(batch.column(item)), times, first)
        first += batch.num_rows
        bar.update(batch.num_rows)
    user_vocab, user_counts = users_seen.vocab("user")
    item_vocab, _ = items_seen.vocab("item")

    # Pass 2: a counting sort by user, file order kept within each user.
    offsets = np.zeros(len(user_vocab) + 2, dtype=np.int64)
    np.cumsum(user_counts, out=offsets[2:])
    filled = offsets[1:-1].copy()  # next free slot of each user (ids 1..n -> index id - 1)
    items = np.empty(total, dtype=np.int64)
    times = np.empty(total, dtype=np.int64)
    first = 0
    for batch in _batches(dataset, names):
        u = _encode(user_vocab, _ids(batch.column(user)), users_seen.integer_text) - 1
        order = np.argsort(u, kind="stable")
        u = u[order]
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        counts = np.diff(np.r_[starts, len(u)])
        rank = np.arange(len(u)) - np.repeat(starts, counts)
        slots = filled[u] + rank
        filled[u[starts]] += counts
        items[slots] = _encode(item_vocab, _ids(batch.column(item)), items_seen.integer_text)[order]
        times[slots] = times_of(batch, first)[order]
        first += batch.num_rows
        bar.update(batch.num_rows)
    bar.close()
    _sort_within_users(items, times, offsets)
    encoded = EncodedInteractions(
        users=np.repeat(np.arange(1, len(user_vocab) + 1, dtype=np.int32), np.diff(offsets[1:])),
        items=items,
        timestamps=times,
        ratings=None,
        user_vocab=user_vocab,
        item_vocab=item_vocab,
    )
    return encoded, Sequences(items=items, timestamps=times, offsets=offsets)


def _sort_within_users(items: np.ndarray, times: np.ndarray, offsets: np.ndarray) -> None:
    """Put each user's rows in time order (stable), in place, touching only the users whose
    rows are not in order already; checked in blocks so no full-size temporary is made."""
    bounds = offsets[1:]
    unsorted = []
    block = 1 << 24
    for begin in range(0, max(len(times) - 1, 0), block):
        end = min(begin + block + 1, len(times))
        falls = np.flatnonzero(np.diff(times[begin:end]) < 0) + begin + 1  # row after a fall
        if len(falls):
            owner = np.searchsorted(bounds, falls, side="right") - 1  # index into bounds
            starts = bounds[owner]
            unsorted.append(owner[falls != starts])  # a fall across users is no disorder
    if not unsorted:
        return
    owners = np.unique(np.concatenate(unsorted))
    if not len(owners):
        return
    lengths = bounds[owners + 1] - bounds[owners]
    rows = np.repeat(bounds[owners] - np.cumsum(lengths) + lengths, lengths) + np.arange(
        lengths.sum()
    )
    group = np.repeat(np.arange(len(owners)), lengths)
    order = np.lexsort((times[rows], group))  # stable: ties keep file order
    items[rows] = items[rows[order]]
    times[rows] = times[rows[order]]
    logger.info("%d users' rows were not in time order in the files: sorted", len(owners))


def streamable(data) -> str | None:
    """Why the ``data`` section of a config needs the in-memory reader, or None if the
    out-of-core path reads it (a log of ids and whole-second times, nothing filtered)."""
    path = data.path
    if path is None:
        return "a known data set"
    suffix = Path(path).suffix.lower()
    if data.format not in (None, "parquet", "csv", "tsv") or (
        not Path(path).is_dir() and suffix not in (".parquet", ".pq", ".csv", ".tsv", ".tab")
    ):
        return f"the {data.format or suffix or 'unknown'} format"
    c = data.columns
    if c.rating is not None or c.weight is not None:
        return "a rating or weight column"
    if c.timestamp_unit != "s":
        return f"times in {c.timestamp_unit}"
    if data.min_user_interactions or data.min_item_interactions or data.min_rating is not None:
        return "filters (min_rating, k-core)"
    if getattr(data.split, "ties", "stable") != "stable":
        return "HSTU's tie order (data.split.ties), which sorts the whole log as read"
    return None
