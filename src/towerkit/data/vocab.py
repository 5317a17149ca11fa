"""Vocab: raw ids <-> contiguous integers, with 0 reserved for padding."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from towerkit.errors import DataError, UnknownError, naming


def _as_numpy(values: Any) -> np.ndarray:
    """A 1-D numpy array of raw ids (pandas objects through ``to_numpy``, without importing
    pandas: serving loads vocabularies and nothing of the data layer)."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values))
    if array.dtype.kind in "US":  # numpy strings: object, as raw ids of text always are
        array = array.astype(object)
    return array


def _arrow(array: np.ndarray) -> pa.Array | None:
    """``array`` as an Arrow array of one type (integers or strings), or None when it mixes
    types (then dictionaries do the lookups)."""
    try:
        if array.dtype.kind in "iu":
            return pa.array(array, type=pa.int64())
        if array.dtype == object:
            return pa.array(array, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    return None


class Vocab:
    """A bijection between raw ids and the integers ``1..n``; ``0`` means padding.

    Lookups are hash-based and vectorised (Arrow's ``index_in`` for many ids, a dict for a
    request's few), so encoding a million ids is one call. Raw ids keep their type (integers or
    str) through save and load. Nothing here needs pandas.

    Example:
        >>> vocab = Vocab.from_values(["b", "a", "b", "c"], name="item")
        >>> vocab.encode(["a", "c"]).tolist()
        [2, 3]
        >>> vocab.decode([1]).tolist()
        ['b']
    """

    def __init__(self, raw: Iterable | np.ndarray, *, name: str = "id") -> None:
        array = _as_numpy(raw)
        if len(self._first_seen(array)) != len(array):
            first = self._first_seen(array)
            repeated = np.setdiff1d(np.arange(len(array)), first)[0]
            raise DataError(f"{name} vocab: raw id {_plain(array[repeated])!r} appears twice")
        self._raw = array
        self.name = name

    @staticmethod
    def _first_seen(array: np.ndarray) -> np.ndarray:
        """Positions of each distinct value's first appearance, in order."""
        if array.dtype.kind in "iub":
            _, first = np.unique(array, return_index=True)
            return np.sort(first)
        strings = _arrow(array)
        if strings is not None:  # Arrow's unique keeps the order of first appearance
            codes = pc.index_in(strings, value_set=pc.unique(strings))
            _, first = np.unique(codes.to_numpy(zero_copy_only=False), return_index=True)
            return np.sort(first)
        first: dict = {}
        for position, value in enumerate(array.tolist()):
            first.setdefault(value, position)
        return np.fromiter(first.values(), np.int64, len(first))

    @classmethod
    def from_values(cls, values: Iterable | np.ndarray, *, name: str = "id") -> Vocab:
        """Build a vocab whose ids follow the order of first appearance in ``values``."""
        array = _as_numpy(values)
        return cls(array[cls._first_seen(array)], name=name)

    def extend(self, values: Iterable | np.ndarray) -> Vocab:
        """This vocab with the ids of ``values`` it lacks appended, in order of first
        appearance: every known id keeps its integer, so a table trained on this vocab keeps
        its rows (a warm start on a newer log).

        >>> Vocab.from_values(["b", "a"], name="item").extend(["c", "a", "d", "c"]).raw.tolist()
        ['b', 'a', 'c', 'd']
        """
        array = _as_numpy(values)
        if not len(array):
            return self
        unique = array[self._first_seen(array)]
        new = unique[self.encode(unique, unknown="padding") == 0]
        if not len(new):
            return self
        raw = self._raw
        if len(raw) and raw.dtype.kind != new.dtype.kind:
            raise DataError(
                f"{self.name} ids: the vocab holds {_kind(raw)}, the new ids are {_kind(new)} "
                f"(e.g. {_plain(new[0])!r}); read both logs with the same id type"
            )
        return Vocab(np.concatenate([raw, new]) if len(raw) else new, name=self.name)

    def __len__(self) -> int:
        """Number of real ids (padding excluded)."""
        return len(self._raw)

    @property
    def size(self) -> int:
        """Rows an embedding table needs: ``len(vocab) + 1`` (row 0 is padding)."""
        return len(self._raw) + 1

    @property
    def raw(self) -> np.ndarray:
        """Raw ids in id order: ``raw[i]`` has id ``i + 1``."""
        return self._raw

    def encode(
        self, values: Iterable | np.ndarray, *, unknown: Literal["error", "padding"] = "error"
    ) -> np.ndarray:
        """Map raw ids to ints in ``1..n`` (int64).

        Args:
            unknown: ``"error"`` raises ``KeyError`` naming the ids the vocab has never seen;
                ``"padding"`` maps them to 0.
        """
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.Array) and self._arrow is not None:
            return self._encode_arrow(values, unknown)
        array = _as_numpy(values)
        codes = None
        if array.ndim == 1 and len(array) > 64:  # many ids: Arrow's hash lookup, in C++
            wanted, known = _arrow(array), self._arrow
            if wanted is not None and known is not None and wanted.type == known.type:
                found = pc.index_in(wanted, value_set=known)
                codes = found.fill_null(-1).to_numpy(zero_copy_only=False)
        if codes is None:  # a request's few ids, or ids of another type: a dict
            lookup = self._lookup
            flat = array.reshape(-1).tolist()
            codes = np.fromiter((lookup.get(v, -1) for v in flat), np.int64, len(flat))
            codes = codes.reshape(array.shape)
        if unknown == "error" and (codes < 0).any():
            bad = array[codes < 0]
            shown = ", ".join(repr(_plain(v)) for v in bad[self._first_seen(bad)][:5])
            raise UnknownError(
                f"unknown {self.name} id(s) {shown} ({int((codes < 0).sum())} value(s) not in "
                f"the vocab of {len(self)} {self.name}s)"
            )
        return codes.astype(np.int64) + 1

    def _encode_arrow(self, values: pa.Array, unknown: str) -> np.ndarray:
        """Arrow ids looked up in Arrow (C++, without the GIL): a server loading a million
        histories of text ids held the GIL for 100+ ms turning them into Python strings."""
        known = self._arrow
        if pa.types.is_integer(values.type) == pa.types.is_integer(known.type):
            try:
                wanted = values.cast(known.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                wanted = None
            if wanted is not None:
                codes = pc.index_in(wanted, value_set=known)
                if unknown == "padding" or codes.null_count == 0:
                    return codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        return self.encode(values.to_numpy(zero_copy_only=False), unknown=unknown)

    def find(self, values: Iterable) -> np.ndarray | None:
        """The ids of raw ids exactly as given (no conversion: ``"42"`` is not ``42``), or None
        where one of them is unknown (or unhashable). For a request's few ids the quickest way:
        one dict lookup each, without numpy in between; :meth:`encode` names what is unknown."""
        get = self._lookup.get
        try:
            codes = [get(value, -1) for value in values]
        except TypeError:
            return None
        if -1 in codes:
            return None
        return np.array(codes, dtype=np.int64) + 1

    @cached_property
    def _lookup(self) -> dict:
        return {raw: code for code, raw in enumerate(self._raw.tolist())}

    @cached_property
    def _arrow(self) -> pa.Array | None:
        return _arrow(self._raw)

    def decode(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map ints in ``1..n`` back to raw ids; 0 (padding) or out-of-range ids raise."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > len(self)):
            raise UnknownError(
                f"{self.name} ids must lie in 1..{len(self)}; got {ids.min()}..{ids.max()}"
            )
        return self._raw[ids - 1]

    def __contains__(self, raw: object) -> bool:
        try:
            return raw in self._lookup
        except TypeError:  # unhashable: no id
            return False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.name == other.name
            and self._raw.dtype == other._raw.dtype
            and np.array_equal(self._raw, other._raw)
        )

    def __repr__(self) -> str:
        return f"Vocab(name={self.name!r}, size={len(self)})"

    def save(self, path: str | Path) -> None:
        """Write the vocab to one Parquet file (column ``raw`` in id order)."""
        table = pa.table({"raw": self._arrow if self._arrow is not None else self._raw})
        table = table.replace_schema_metadata({"towerkit.vocab": json.dumps({"name": self.name})})
        pq.write_table(table, path)

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """A vocabulary :meth:`save` wrote.

        Raises:
            DataError: the file is not one (not Parquet, no ``raw`` column), naming it.
        """
        with naming(str(path)):
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(b"towerkit.vocab", b"{}"))
        if "raw" not in table.column_names or not isinstance(meta, dict):
            raise DataError(f"{path}: not a towerkit vocabulary (no 'raw' column)")
        return cls(table.column("raw").to_numpy(zero_copy_only=False), name=meta.get("name", "id"))


@dataclass(frozen=True)
class BaseVocabs:
    """The vocabularies a warm start extends (a finished run's): encoding onto them keeps every
    known id's integer, and numbers the new ids after them (see :meth:`Vocab.extend`).

    Attributes:
        user, item: the user and item vocabularies.
        user_features, item_features: the vocabularies of categorical and multi-valued side
            features, by feature name.
    """

    user: Vocab
    item: Vocab
    user_features: Mapping[str, Vocab] = field(default_factory=dict)
    item_features: Mapping[str, Vocab] = field(default_factory=dict)


def _kind(array: np.ndarray) -> str:
    return "integers" if array.dtype.kind in "iu" else "strings"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
