"""Vocab: raw ids <-> contiguous integers, with 0 reserved for padding."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from towerkit.errors import DataError, UnknownError


class Vocab:
    """A bijection between raw ids and the integers ``1..n``; ``0`` means padding.

    Lookups are hash-based and vectorised (a pandas ``Index``), so encoding a million ids is one
    call. Raw ids keep their type (int64 or str) through save and load.

    Example:
        >>> vocab = Vocab.from_values(["b", "a", "b", "c"], name="item")
        >>> vocab.encode(["a", "c"]).tolist()
        [2, 3]
        >>> vocab.decode([1]).tolist()
        ['b']
    """

    def __init__(self, raw: Iterable | np.ndarray | pd.Index, *, name: str = "id") -> None:
        index = pd.Index(raw if not isinstance(raw, pd.Index) else raw.to_numpy())
        if index.has_duplicates:
            dup = index[index.duplicated()][0]
            raise DataError(f"{name} vocab: raw id {dup!r} appears twice")
        self._index = index
        self.name = name

    @classmethod
    def from_values(cls, values: Iterable | np.ndarray | pd.Series, *, name: str = "id") -> Vocab:
        """Build a vocab whose ids follow the order of first appearance in ``values``."""
        uniques = pd.unique(pd.Series(values) if not isinstance(values, pd.Series) else values)
        return cls(uniques, name=name)

    def __len__(self) -> int:
        """Number of real ids (padding excluded)."""
        return len(self._index)

    @property
    def size(self) -> int:
        """Rows an embedding table needs: ``len(vocab) + 1`` (row 0 is padding)."""
        return len(self._index) + 1

    @property
    def raw(self) -> np.ndarray:
        """Raw ids in id order: ``raw[i]`` has id ``i + 1``."""
        return self._index.to_numpy()

    def encode(
        self,
        values: Iterable | np.ndarray | pd.Series,
        *,
        unknown: Literal["error", "padding"] = "error",
    ) -> np.ndarray:
        """Map raw ids to ints in ``1..n`` (int64).

        Args:
            unknown: ``"error"`` raises ``KeyError`` naming the ids the vocab has never seen;
                ``"padding"`` maps them to 0.
        """
        array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        if array.ndim == 1 and len(array) <= 64:  # a request's few ids: a dict is 100x faster
            lookup = self._lookup
            codes = np.fromiter((lookup.get(v, -1) for v in array.tolist()), np.int64, len(array))
        else:
            codes = self._index.get_indexer(array)
        if unknown == "error" and (codes < 0).any():
            bad = array[codes < 0]
            shown = ", ".join(
                repr(v.item() if isinstance(v, np.generic) else v) for v in pd.unique(bad)[:5]
            )
            raise UnknownError(
                f"unknown {self.name} id(s) {shown} ({int((codes < 0).sum())} value(s) not in the "
                f"vocab of {len(self)} {self.name}s)"
            )
        return codes.astype(np.int64) + 1

    @cached_property
    def _lookup(self) -> dict:
        return {raw: code for code, raw in enumerate(self._index.tolist())}

    def decode(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map ints in ``1..n`` back to raw ids; 0 (padding) or out-of-range ids raise."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > len(self)):
            raise UnknownError(
                f"{self.name} ids must lie in 1..{len(self)}; got {ids.min()}..{ids.max()}"
            )
        return self._index.to_numpy()[ids - 1]

    def __contains__(self, raw: object) -> bool:
        return raw in self._index

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.name == other.name
            and self._index.dtype == other._index.dtype
            and self._index.equals(other._index)
        )

    def __repr__(self) -> str:
        return f"Vocab(name={self.name!r}, size={len(self)})"

    def save(self, path: str | Path) -> None:
        """Write the vocab to one Parquet file (column ``raw`` in id order)."""
        table = pa.table({"raw": self._index.to_numpy()})
        table = table.replace_schema_metadata({"towerkit.vocab": json.dumps({"name": self.name})})
        pq.write_table(table, path)

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"towerkit.vocab", b"{}"))
        return cls(table.column("raw").to_numpy(zero_copy_only=False), name=meta.get("name", "id"))
