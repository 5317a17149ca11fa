"""The index protocol every back end follows, and the pieces they share.

An index holds ``N`` item vectors under int64 ids and answers batches of queries::

    index = make_index("annoy", "cosine").build(item_vectors, ids=item_ids)
    ids, scores = index.search(user_vectors, k=10, exclude=seen)  # [B, k] each, best first

Scores follow the index's similarity exactly as :mod:`towerkit.similarity` defines it (cosine,
dot, or negative squared Euclidean distance), so results of an approximate back end compare
directly with exact search. Rows with fewer than ``k`` results (a small index, or exclusions)
are padded with id ``-1`` and score ``-inf``.

``exclude`` names ids to leave out per query: a sequence of id arrays (one per query) or a CSR
pair ``(indptr [B + 1], ids)``. Ids that are not in the index are ignored.

``where`` keeps only the items a filter on their attributes accepts (:mod:`towerkit.index.filters`,
Milvus's expression syntax), for every query of the call. The attributes are a table with one
row per vector, given to ``build`` (``attributes=``) and saved with the index; the Milvus back
end hands the expression to the database, every other back end searches the rows it keeps.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from towerkit.errors import MissingExtra, TowerkitError
from towerkit.index.filters import FilterError, ItemFilter, parse_filter
from towerkit.similarity import Similarity, get_similarity

if TYPE_CHECKING:  # pandas loads only where a filter or saved attributes need it
    import pandas as pd

Exclusions = Sequence[Sequence[int] | np.ndarray] | tuple[np.ndarray, np.ndarray] | None

META_FILE = "index.json"
IDS_FILE = "ids.npy"
#: positions replaced by an upsert (searched no more), where an index has any
DEAD_FILE = "dead.npy"
ATTRIBUTES_FILE = "attributes.parquet"
#: a filter's kept rows, remembered for this many distinct filters per index
MASK_CACHE = 64


class IndexArgumentError(TowerkitError, ValueError):
    """A bad argument to an index: empty, wrong dimension, k < 1, not built, ..."""


class IndexUnavailable(MissingExtra):
    """An optional back end whose package is not installed."""


def require(module: str, extra: str) -> Any:
    """Import an optional back end's package, or say which pip extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise IndexUnavailable(
            f"the {module!r} package is not installed; install it with "
            f"pip install 'towerkit[{extra}]'"
        ) from err


def as_matrix(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """A C-contiguous float32 ``[n, d]`` array, checked for shape and finiteness."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise IndexArgumentError(f"{what} must be a 2-D [n, d] array, got shape {x.shape}")
    if x.shape[1] == 0:
        raise IndexArgumentError(f"{what} have dimension 0")
    if not np.isfinite(x).all():
        raise IndexArgumentError(f"{what} contain NaN or infinite values")
    return x


def normalized(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Index(ABC):
    """One protocol for exact and approximate nearest-neighbour search.

    Args:
        similarity: ``"cosine"``, ``"dot"``, ``"euclidean"`` or a :class:`Similarity`.
        normalize: for euclidean: compare L2-normalised vectors.

    Subclasses implement ``_build``, ``_search_positions``, ``_save`` and ``_load``; this class
    checks arguments, maps ids and positions, and applies exclusions.
    """

    kind: ClassVar[str] = ""
    #: the range of each numeric constructor option this class adds (a test fails on one
    #: missing): far beyond any real index, short of a build that never ends or a size that
    #: overflows the back end's C++ int. :meth:`option_ranges` adds the base classes'.
    ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    is_exact: ClassVar[bool] = False
    #: searches with torch: builds and searches take torch tensors as they are (on their
    #: device) instead of numpy copies
    takes_tensors: ClassVar[bool] = False
    #: :meth:`upsert` adds and replaces vectors without a rebuild (Annoy's trees are fixed
    #: once built: a new one is built over all the vectors instead)
    upserts: ClassVar[bool] = True

    def __init__(self, similarity: str | Similarity = "cosine", *, normalize: bool = False) -> None:
        self.similarity = get_similarity(similarity, normalize=normalize)
        self.ids: np.ndarray | None = None
        self.dim = 0
        #: item attributes, one row per vector (what ``where`` filters read), or None
        self.attributes: pd.DataFrame | None = None
        self._masks: dict[str, np.ndarray] = {}
        #: positions whose vectors an upsert replaced by a new position (never searched), or
        #: None where there are none
        self._dead: np.ndarray | None = None

    # -- the protocol ---------------------------------------------------------------------

    def build(
        self,
        vectors: np.ndarray | torch.Tensor,
        ids: np.ndarray | Sequence[int] | None = None,
        attributes: pd.DataFrame | None = None,
    ):
        """Index ``vectors [N, D]`` under ``ids [N]`` (default ``0..N-1``), with ``attributes``
        (one row per vector) for filters; returns self. An index that searches with torch
        (:attr:`takes_tensors`) keeps torch vectors where they are (a GPU's on the GPU)."""
        vectors = self._matrix(vectors, "vectors")
        if len(vectors) == 0:
            raise IndexArgumentError("cannot build an index from an empty set of vectors")
        ids = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids)
        if ids.shape != (len(vectors),):
            raise IndexArgumentError(f"got {len(ids)} ids for {len(vectors)} vectors")
        if not np.issubdtype(ids.dtype, np.integer):
            raise IndexArgumentError(f"ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise IndexArgumentError("ids must be unique")
        self.dim = vectors.shape[1]
        self._set_ids(ids)
        self.set_attributes(attributes)
        self._build(vectors)
        return self

    def upsert(
        self,
        vectors: np.ndarray | torch.Tensor,
        ids: np.ndarray | Sequence[int],
        attributes: pd.DataFrame | None = None,
    ) -> Index:
        """Add the vectors of ids the index does not hold and replace the vectors of those it
        does, without a rebuild; returns the index to search from now on.

        The returned index is a new object (Milvus: over the same collection, changed in
        place): this one is left as it was, so the searches that hold it finish on it, and a
        caller swaps to the new one when it is ready. Where a back end cannot change a vector
        in place (Faiss's graphs and lists), the new vector takes a new position and the old
        one is never searched again.

        Args:
            attributes: one row per vector, in the index's columns (those left out, or all of
                them when None, are missing); ignored by an index without attributes.

        Raises:
            IndexArgumentError: an index that cannot add vectors (:attr:`upserts`), or vectors,
                ids or attributes that do not fit it.
        """
        import pandas as pd

        if not self.upserts:
            raise IndexArgumentError(
                f"the {self.kind} index cannot add vectors once built: build a new one over "
                "all of them"
            )
        if self.ids is None:
            raise IndexArgumentError(f"the {self.kind} index is empty: call build() first")
        vectors = self._matrix(vectors, "vectors")
        ids = np.asarray(ids)
        if ids.shape != (len(vectors),) or not np.issubdtype(ids.dtype, np.integer):
            raise IndexArgumentError(f"got {len(ids)} integer ids for {len(vectors)} vectors")
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids) or (ids < 0).any():
            raise IndexArgumentError("upserted ids must be unique and not negative")
        if vectors.shape[1] != self.dim:
            raise IndexArgumentError(
                f"vectors have dimension {vectors.shape[1]}, the index holds dimension {self.dim}"
            )
        positions = self._positions(ids)
        rows = self._attribute_rows(positions, attributes)
        new = copy.copy(self)
        new._masks = {}
        appended = new._upsert(positions, vectors, ids, rows)
        known = positions >= 0
        dead = positions[known & appended]  # replaced by a new position
        all_ids = np.concatenate([self.ids, ids[appended]])
        all_ids[dead] = -1 - dead  # unique, never a real id, never returned (masked)
        new._set_ids(all_ids)
        if len(dead) or self._dead is not None:
            flags = np.zeros(len(all_ids), dtype=bool)
            if self._dead is not None:
                flags[: len(self._dead)] = self._dead
            flags[dead] = True
            new._dead = flags
        if rows is not None:
            table = self.attributes.copy()
            in_place = known & ~appended
            if in_place.any():
                table.iloc[positions[in_place]] = rows[in_place].to_numpy()
            new.attributes = pd.concat([table, rows[appended]], ignore_index=True)
        return new

    def upserted_attributes(
        self, ids: np.ndarray, attributes: pd.DataFrame | None
    ) -> pd.DataFrame | None:
        """The whole attribute table after an upsert of ``ids`` with ``attributes`` (one row
        each; known ids keep the attributes not given, new ones follow in order), for an index
        built anew over every vector (None: the index holds no attributes)."""
        import pandas as pd

        positions = self._positions(np.asarray(ids, dtype=np.int64))
        rows = self._attribute_rows(positions, attributes)
        if rows is None:
            return None
        table = self.attributes.copy()
        known = positions >= 0
        if known.any():
            table.iloc[positions[known]] = rows[known].to_numpy()
        return pd.concat([table, rows[~known]], ignore_index=True)

    def _attribute_rows(
        self, positions: np.ndarray, attributes: pd.DataFrame | None
    ) -> pd.DataFrame | None:
        """Upserted attribute rows, checked, in the index's columns and their types: known
        ids (``positions`` >= 0) keep the attributes not given (a column left out, or a
        missing cell), new ones have them missing."""
        import pandas as pd

        if self.attributes is None:
            return None
        given = attributes if attributes is not None else pd.DataFrame(index=range(len(positions)))
        unknown = sorted(set(given.columns) - set(self.attributes.columns))
        if unknown:
            raise IndexArgumentError(f"no item attribute {unknown[0]!r} in the index")
        if len(given) != len(positions):
            raise IndexArgumentError(f"got {len(given)} attribute rows for {len(positions)} ids")
        columns = self.attributes.columns
        rows = given.reset_index(drop=True).reindex(columns=columns).astype(object)
        known = positions >= 0
        if known.any():  # a known id keeps every attribute not given (a missing cell)
            mine = rows.loc[known]
            old = self.attributes.iloc[positions[known]].astype(object)
            rows.loc[known] = mine.where(mine.notna(), old.set_axis(mine.index))
        return _typed_like(rows, self.attributes)

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """The position of each id in the index, -1 where it holds none."""
        if not len(self.ids):
            return np.full(len(ids), -1, dtype=np.int64)
        slot = np.searchsorted(self._sorted_ids, ids).clip(0, len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[slot] == ids, self._order[slot], -1)

    def _upsert(
        self,
        positions: np.ndarray,
        vectors: np.ndarray | torch.Tensor,
        ids: np.ndarray,
        rows: pd.DataFrame | None,
    ) -> np.ndarray:
        """Change this (new, shallow-copied) index's search structure, never the one it was
        copied from: replace the vectors of ``ids`` at ``positions`` (-1: a new id) or append
        them (``rows``: their attributes, or None). Returns which were appended (in order,
        after the positions there are): the others were replaced in place."""
        raise IndexArgumentError(f"the {self.kind} index cannot add vectors once built")

    def set_attributes(self, attributes: pd.DataFrame | None) -> None:
        """Give the index its item attributes (one row per vector), what filters read."""
        if attributes is not None:
            if len(attributes) != len(self.ids):
                raise IndexArgumentError(
                    f"got {len(attributes)} attribute rows for {len(self.ids)} vectors"
                )
            attributes = attributes.reset_index(drop=True)
        self.attributes, self._masks = attributes, {}

    def parse_filter(self, where: str | ItemFilter) -> ItemFilter:
        """``where`` read and checked against this index's attributes.

        Raises:
            FilterError: bad syntax, an unknown attribute, or an index without attributes.
        """
        if self.attributes is None:
            raise FilterError(
                f"the {self.kind} index holds no item attributes: it cannot filter by {where!s}"
            )
        columns = list(self.attributes.columns)
        if isinstance(where, ItemFilter) and set(where.columns) <= set(columns):
            return where  # parsed and checked already (a server parses each request's once)
        return parse_filter(where if isinstance(where, str) else where.text, columns)

    def allowed(self, where: ItemFilter | None) -> np.ndarray | None:
        """The positions a filter keeps, as a boolean mask (None: every position), less the
        positions an upsert replaced."""
        if where is None:
            return None if self._dead is None else ~self._dead
        mask = self._masks.get(where.expression)
        if mask is None:
            mask = where.mask(self.attributes)
            if self._dead is not None:
                mask = mask & ~self._dead
            if len(self._masks) >= MASK_CACHE:
                self._masks.pop(next(iter(self._masks)))
            self._masks[where.expression] = mask
        return mask

    def _matrix(self, x: np.ndarray | torch.Tensor, what: str) -> np.ndarray | torch.Tensor:
        """``[n, d]`` float32, checked: numpy, or for an index that :attr:`takes_tensors` a
        torch tensor left on its device."""
        if not self.takes_tensors:
            return as_matrix(x, what)
        if not isinstance(x, torch.Tensor):
            return torch.from_numpy(as_matrix(x, what))
        x = x.detach().float()
        if x.dim() != 2:
            raise IndexArgumentError(
                f"{what} must be a 2-D [n, d] array, got shape {tuple(x.shape)}"
            )
        if x.shape[1] == 0:
            raise IndexArgumentError(f"{what} have dimension 0")
        if not bool(torch.isfinite(x).all()):
            raise IndexArgumentError(f"{what} contain NaN or infinite values")
        return x

    def search(
        self,
        queries: np.ndarray | torch.Tensor,
        k: int,
        exclude: Exclusions = None,
        where: str | ItemFilter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best ids per query, best first, among the items ``where`` keeps.

        Returns:
            ``ids`` int64 ``[B, k]`` and ``scores`` float32 ``[B, k]`` (padding: -1, -inf).
        """
        if self.ids is None:
            raise IndexArgumentError(
                f"the {self.kind} index is empty: call build() or load() first"
            )
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise IndexArgumentError(f"k must be a positive integer, got {k!r}")
        queries = self._matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise IndexArgumentError(
                f"queries have dimension {queries.shape[1]}, the index holds dimension {self.dim}"
            )
        excluded = self._exclusions(exclude, len(queries))
        where = None if where is None else self.parse_filter(where)
        positions, scores = self._search_positions(queries, int(k), excluded, where)
        ids = np.where(positions >= 0, self.ids[np.maximum(positions, 0)], -1)
        return ids.astype(np.int64), scores.astype(np.float32)

    def search_multi(
        self,
        queries: np.ndarray | torch.Tensor,
        k: int,
        exclude: Exclusions = None,
        where: str | ItemFilter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best ids per user of multi-interest queries ``[B, K, D]``, best first.

        Each of a user's ``K`` interests is searched for ``k`` ids with the user's exclusions,
        and the lists are merged by best score (:func:`merge_interests`): an id found by
        several interests appears once, at its best score. ``exclude`` has one row per user.
        """
        if isinstance(queries, torch.Tensor) and not self.takes_tensors:
            queries = queries.detach().float().cpu().numpy()
        if not isinstance(queries, torch.Tensor):
            queries = np.asarray(queries)
        if queries.ndim != 3:
            raise IndexArgumentError(
                f"multi-interest queries are [B, K, D], got {tuple(queries.shape)}"
            )
        users, interests, dim = queries.shape
        excluded = self._exclusions(exclude, users)
        if excluded is not None:  # the user's row, once for each of its interests
            excluded = csr_rows(excluded, np.repeat(np.arange(users), interests))
        exclude_ids = None if excluded is None else (excluded[0], self.ids[excluded[1]])
        ids, scores = self.search(queries.reshape(users * interests, dim), k, exclude_ids, where)
        return merge_interests(ids, scores, interests, k)

    def __len__(self) -> int:
        return 0 if self.ids is None else len(self.ids)

    def save(self, path: str | Path) -> Path:
        """Write the index to a directory (created; files inside are replaced)."""
        if self.ids is None:
            raise IndexArgumentError(f"the {self.kind} index is empty: nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "similarity": self.similarity.name,
            "normalize": bool(self.similarity.normalize),
            "dim": self.dim,
            "options": self.options(),
        }
        np.save(path / IDS_FILE, self.ids)
        if self._dead is not None:
            np.save(path / DEAD_FILE, self._dead)
        if self.attributes is not None:
            self.attributes.to_parquet(path / ATTRIBUTES_FILE, index=False)
        self._save(path)
        (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read an index written by :meth:`save` (of this class)."""
        path = Path(path)
        meta = read_meta(path)
        if meta["kind"] != cls.kind:
            raise IndexArgumentError(f"{path} holds a {meta['kind']} index, not {cls.kind}")
        index = cls(meta["similarity"], normalize=meta["normalize"], **meta["options"])
        index._set_ids(np.load(path / IDS_FILE))
        if (path / DEAD_FILE).exists():
            index._dead = np.load(path / DEAD_FILE)
        index.dim = int(meta["dim"])
        if (path / ATTRIBUTES_FILE).exists():
            import pyarrow.parquet as pq

            index.set_attributes(pq.read_table(path / ATTRIBUTES_FILE).to_pandas())
        index._load(path)
        return index

    @classmethod
    def option_ranges(cls) -> dict[str, tuple[float, float]]:
        """The range of every numeric option of this index: its own and its bases'."""
        out: dict[str, tuple[float, float]] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("ranges", {}))
        return out

    @classmethod
    def check_ranges(cls, options: dict[str, Any]) -> None:
        """Each numeric option within :meth:`option_ranges` (else one line naming it)."""
        ranges = cls.option_ranges()
        for name, value in options.items():
            if name not in ranges or value is None or isinstance(value, bool):
                continue
            low, high = ranges[name]
            if not low <= value <= high:  # NaN too
                raise IndexArgumentError(
                    f"the {cls.kind} index option {name}={value!r} must lie in "
                    f"[{_number(low)}, {_number(high)}]"
                )

    def options(self) -> dict[str, Any]:
        """The constructor options that rebuild this index (saved with it)."""
        return {}

    def ready(self) -> str | None:
        """None when the index answers searches; else why not, in one line (a database back
        end whose collection is not loaded, or that cannot be reached)."""
        return None if self.ids is not None else f"the {self.kind} index is empty"

    def close(self) -> None:  # noqa: B027 - most back ends hold nothing outside
        """Let go of what the index holds outside the process (a database connection)."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        sim = repr(self.similarity)
        return f"{type(self).__name__}({sim}{', ' + opts if opts else ''}, n={len(self)})"

    # -- for subclasses -------------------------------------------------------------------

    @abstractmethod
    def _build(self, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _search_positions(
        self,
        queries: np.ndarray,
        k: int,
        excluded: tuple[np.ndarray, np.ndarray] | None,
        where: ItemFilter | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``positions [B, k]`` (-1 padding) and ``scores [B, k]`` (-inf padding).

        ``excluded`` is CSR ``(indptr [B + 1], positions)`` of positions to leave out; only
        the positions ``where`` keeps may be returned (:meth:`allowed`).
        """

    @abstractmethod
    def _save(self, path: Path) -> None: ...

    @abstractmethod
    def _load(self, path: Path) -> None: ...

    def _set_ids(self, ids: np.ndarray) -> None:
        """The ids of the vectors (position order), with what maps ids to positions: their
        sort order, or, for ids ``first..first + n - 1`` in order (every index towerkit
        builds), a subtraction."""
        self.ids = np.asarray(ids, dtype=np.int64)
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted_ids = self.ids[self._order]
        first = int(self.ids[0]) if len(self.ids) else 0
        contiguous = np.array_equal(self.ids, np.arange(first, first + len(self.ids)))
        self._first = first if contiguous else None

    def _exclusions(
        self, exclude: Exclusions, n_queries: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Exclusions as CSR over index positions (unknown ids dropped)."""
        if exclude is None:
            return None
        if isinstance(exclude, tuple) and len(exclude) == 2 and np.ndim(exclude[0]) == 1:
            indptr = np.asarray(exclude[0], dtype=np.int64)
            values = np.asarray(exclude[1], dtype=np.int64)
            if len(indptr) != n_queries + 1 or indptr[0] != 0 or indptr[-1] != len(values):
                raise IndexArgumentError(
                    f"exclude as CSR needs indptr of length {n_queries + 1} ending at "
                    f"{len(values)}, got length {len(indptr)}"
                )
        else:
            if len(exclude) != n_queries:
                raise IndexArgumentError(f"exclude has {len(exclude)} rows for {n_queries} queries")
            lists = [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
            indptr = np.zeros(n_queries + 1, dtype=np.int64)
            np.cumsum([len(e) for e in lists], out=indptr[1:])
            values = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
        # ids -> positions; ids not in the index are dropped.
        if self._first is not None:
            positions = values - self._first
            known = (positions >= 0) & (positions < len(self.ids))
        else:
            sorted_ids = self._sorted_ids
            slot = np.searchsorted(sorted_ids, values).clip(0, len(sorted_ids) - 1)
            known = sorted_ids[slot] == values
            positions = self._order[slot]
        row = np.repeat(np.arange(n_queries), np.diff(indptr))
        row, positions = row[known], positions[known]
        new_indptr = np.zeros(n_queries + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=n_queries), out=new_indptr[1:])
        return new_indptr, positions


def _typed_like(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Upserted attribute rows in the types of the index's columns: a missing integer is 0,
    a missing flag false, a missing text empty (a vector database's fields hold no nulls)."""
    import pandas as pd

    out = {}
    for name in table.columns:
        column, like = rows[name], table[name]
        if pd.api.types.is_bool_dtype(like.dtype):
            column = column.fillna(False).astype(bool)
        elif pd.api.types.is_integer_dtype(like.dtype):
            column = pd.to_numeric(column).fillna(0).astype(like.dtype)
        elif pd.api.types.is_float_dtype(like.dtype):
            column = pd.to_numeric(column).astype(like.dtype)
        else:
            column = column.astype(object).where(column.notna(), "")
        out[name] = column
    return pd.DataFrame(out, index=rows.index)


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata of an index saved at ``path`` (raises :class:`IndexArgumentError` when there is
    none)."""
    meta_file = Path(path) / META_FILE
    if not meta_file.exists():
        raise IndexArgumentError(f"{path}: not a saved index (no {META_FILE})")
    return json.loads(meta_file.read_text())


def filter_candidates(
    positions: np.ndarray,
    scores: np.ndarray,
    k: int,
    excluded: tuple[np.ndarray, np.ndarray] | None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep, per row, the first ``k`` candidates that are real (>= 0), not excluded and
    ``allowed`` (a boolean mask over positions, None: all).

    ANN back ends over-fetch ``k + (exclusions of the row)`` candidates and call this; the
    candidates' order (best first) is kept.
    """
    n, width = positions.shape
    keep = positions >= 0
    if allowed is not None:
        keep &= allowed[np.maximum(positions, 0)]
    if excluded is not None and len(excluded[1]):
        indptr, banned = excluded
        stride = np.int64(max(int(positions.max(initial=0)), int(banned.max())) + 1)
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        keys = np.arange(n, dtype=np.int64)[:, None] * stride + positions
        keep &= ~np.isin(keys, rows * stride + banned)
    # Stable sort puts kept candidates first, in their original order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    out_pos = np.take_along_axis(positions, order, 1)
    out_scores = np.take_along_axis(scores, order, 1).astype(np.float32)
    kept = np.take_along_axis(keep, order, 1)
    out_pos = np.where(kept, out_pos, -1)
    out_scores = np.where(kept, out_scores, -np.inf).astype(np.float32)
    if width < k:  # pad to k columns
        pad = k - width
        out_pos = np.pad(out_pos, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return out_pos, out_scores


def csr_rows(csr: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR ``(indptr, values)`` of ``csr``'s rows ``rows``, in that order (a row may come
    more than once)."""
    indptr, values = csr
    lengths = np.diff(indptr)[rows]
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    starts = np.repeat(indptr[rows] - out[:-1], lengths)
    return out, values[np.arange(out[-1]) + starts]


def exclusion_counts(excluded: tuple[np.ndarray, np.ndarray] | None, n: int) -> np.ndarray:
    """How many positions each query excludes."""
    return np.zeros(n, dtype=np.int64) if excluded is None else np.diff(excluded[0])


def over_fetch(
    n: int,
    k: int,
    excluded: tuple[np.ndarray, np.ndarray] | None,
    most: int,
    chunk: int,
    search_rows: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of ``n`` queries for a back end that searches without exclusions: queries in
    chunks ordered by their number of exclusions, each chunk asking ``search_rows(rows,
    n_fetch)`` for ``k`` plus its largest exclusion count (at most ``most``) candidates.

    ``search_rows`` returns ``positions`` and ``scores`` ``[len(rows), n_fetch]`` (-1 / -inf
    padding); the result is ``[n, width]`` candidates for :func:`filter_candidates`.
    """
    counts = exclusion_counts(excluded, n)
    order = np.argsort(counts, kind="stable")
    width = int(min(k + counts.max(initial=0), most))
    positions = np.full((n, width), -1, dtype=np.int64)
    scores = np.full((n, width), -np.inf, dtype=np.float32)
    for begin in range(0, n, chunk):
        rows = order[begin : begin + chunk]
        n_fetch = int(min(k + counts[rows].max(), most))
        positions[rows, :n_fetch], scores[rows, :n_fetch] = search_rows(rows, n_fetch)
    return positions, scores


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def check_sizes(**sizes: int) -> None:
    """Each named size is at least 1 (else an error naming it)."""
    for name, value in sizes.items():
        if value < 1:
            raise IndexArgumentError(f"{name} must be >= 1, got {value}")


def merge_interests(
    ids: np.ndarray, scores: np.ndarray, interests: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-interest top lists into one per user, by best score (vectorised).

    Args:
        ids, scores: ``[B * K, k']`` lists, best first, row ``b * K + j`` holding interest
            ``j`` of user ``b``; padding is id -1.
        interests: K.

    Returns:
        ``ids [B, k]`` and ``scores [B, k]``: each id once at the best score any interest gave
        it, best first (ties: the lower interest, then the earlier rank); -1 / -inf padding.
    """
    users = len(ids) // interests
    ids = ids.reshape(users, -1)
    scores = np.where(ids >= 0, scores.reshape(users, -1), -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")  # best first, ties in interest order
    ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
    # A later copy of an id (a worse score from another interest) is dropped.
    by_id = np.argsort(ids, axis=1, kind="stable")  # each id's copies, best first
    sorted_ids = np.take_along_axis(ids, by_id, 1)
    repeat = np.zeros_like(ids, dtype=bool)
    later = np.zeros_like(sorted_ids, dtype=bool)
    later[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    np.put_along_axis(repeat, by_id, later, 1)
    keep = (ids >= 0) & ~repeat
    first = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept entries, in score order
    out_ids = np.take_along_axis(ids, first, 1)
    out_scores = np.take_along_axis(scores, first, 1)
    kept = np.take_along_axis(keep, first, 1)
    out_ids, out_scores = np.where(kept, out_ids, -1), np.where(kept, out_scores, -np.inf)
    if out_ids.shape[1] < k:  # fewer candidates than k in all
        pad = k - out_ids.shape[1]
        out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return out_ids.astype(np.int64), out_scores.astype(np.float32)
