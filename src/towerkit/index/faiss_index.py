"""Faiss (Meta): exact Flat, graph-based HNSW and inverted-file IVF-Flat indexes.

Cosine search normalises vectors and uses inner product; dot uses inner product; Euclidean uses
L2 (on normalised vectors when asked). Faiss's L2 distances are squared, so the negative
distance is the towerkit Euclidean score as is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np

from towerkit.index.base import (
    Index,
    IndexArgumentError,
    check_sizes,
    csr_rows,
    exclusion_counts,
    filter_candidates,
    normalized,
    over_fetch,
    require,
)
from towerkit.similarity import Similarity

FAISS_FILE = "faiss.index"


#: a query excluding more than max(k, this) ids is searched alone, its exclusions in a selector
SELECT_ABOVE = 32


def _faiss():
    return require("faiss", "faiss")


class FaissIndex(Index):
    """Shared parts of the Faiss back ends (use a subclass).

    Args:
        similarity, normalize: see :class:`~towerkit.index.base.Index`.
        threads: OpenMP threads Faiss may use (0: Faiss's default, all cores).
        query_chunk: queries searched per Faiss call (small chunks keep the over-fetch close
            to each query's own number of exclusions).

    Exclusions are applied by over-fetching: queries are searched in chunks ordered by their
    number of exclusions, each chunk asking for ``k`` plus its largest exclusion count, and
    the excluded ids are dropped. A query that excludes more than ``max(k, 32)`` ids (a known
    user with many seen items) is searched alone instead, with its exclusions as a Faiss
    selector: Faiss skips them while it searches, so it asks for ``k`` only (HNSW explores
    ``ef_search`` candidates, not ``k`` plus thousands).
    """

    kind = "faiss"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "threads": (0, 1024),
        "query_chunk": (1, 1 << 20),
    }

    def __init__(
        self,
        similarity: str | Similarity = "cosine",
        *,
        normalize: bool = False,
        threads: int = 0,
        query_chunk: int = 128,
    ) -> None:
        super().__init__(similarity, normalize=normalize)
        self.threads, self.query_chunk = threads, query_chunk
        self._faiss_index = None

    def options(self) -> dict:
        return {"threads": self.threads, "query_chunk": self.query_chunk}

    @property
    def _metric(self) -> int:
        faiss = _faiss()
        if self.similarity.name == "euclidean":
            return faiss.METRIC_L2
        return faiss.METRIC_INNER_PRODUCT

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return normalized(x) if self.similarity.normalize else x

    def _create(self, vectors: np.ndarray):
        raise NotImplementedError

    def _search_params(self, n_fetch: int, selector):
        """Per-call search parameters (HNSW's efSearch, IVF's nprobe) with a filter's selector
        (None: no filter)."""
        return _faiss().SearchParameters(sel=selector) if selector is not None else None

    def _build(self, vectors: np.ndarray) -> None:
        faiss = _faiss()
        if self.threads:
            faiss.omp_set_num_threads(self.threads)
        vectors = self._prepare(vectors)
        index = self._create(vectors)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        self._faiss_index = index

    def _upsert(self, positions, vectors, ids, rows):
        # A copy (the searches holding the old index keep theirs), then Faiss's own add: no
        # graph or list is rebuilt. A changed vector takes a new position (HNSW's graph and
        # IVF's lists cannot replace one); the old one is masked from every search.
        faiss = _faiss()
        index = faiss.clone_index(self._faiss_index)
        index.add(self._prepare(np.ascontiguousarray(vectors, dtype=np.float32)))
        self._faiss_index = index
        return np.ones(len(positions), dtype=bool)

    def _search_positions(self, queries, k, excluded, where):
        faiss = _faiss()
        if self.threads:
            faiss.omp_set_num_threads(self.threads)
        queries = self._prepare(queries)
        allowed = self.allowed(where)
        selector, bitmap = None, None
        if allowed is not None:  # Faiss skips the positions the filter drops, as it searches
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))

        def search_rows(rows: np.ndarray, n_fetch: int) -> tuple[np.ndarray, np.ndarray]:
            params = self._search_params(n_fetch, selector)
            values, found = self._faiss_index.search(queries[rows], n_fetch, params=params)
            if self._metric == faiss.METRIC_L2:
                values = -values  # squared L2 distance -> towerkit's euclidean score
            return found, np.where(found >= 0, values, -np.inf)

        counts = exclusion_counts(excluded, len(queries))
        alone = counts > max(k, SELECT_ABOVE)
        if not alone.any():
            positions, scores = over_fetch(
                len(queries), k, excluded, len(self), self.query_chunk, search_rows
            )
        else:
            positions, scores = self._search_split(
                queries, k, excluded, counts, alone, selector, search_rows
            )
        del bitmap  # the selector read it until here
        return filter_candidates(positions, scores, k, excluded, allowed)

    def _search_split(self, queries, k, excluded, counts, alone, selector, search_rows):
        """Rows of few exclusions over-fetched together; each row of many searched alone with
        its exclusions in the selector (and the filter's, when there is one)."""
        faiss = _faiss()
        n = len(counts)
        width = int(min(k + counts[~alone].max(initial=0), len(self)))
        positions = np.full((n, max(width, k)), -1, dtype=np.int64)
        scores = np.full(positions.shape, -np.inf, dtype=np.float32)
        indptr, banned = excluded
        few = np.flatnonzero(~alone)
        if len(few):
            found, values = over_fetch(
                len(few), k, csr_rows(excluded, few), len(self), self.query_chunk,
                lambda rows, n_fetch: search_rows(few[rows], n_fetch),
            )  # fmt: skip
            positions[few, : found.shape[1]], scores[few, : found.shape[1]] = found, values
        fetch = min(k, len(self))
        for row in np.flatnonzero(alone):
            ids = np.ascontiguousarray(banned[indptr[row] : indptr[row + 1]], dtype=np.int64)
            batch = faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
            keep = faiss.IDSelectorNot(batch)
            both = faiss.IDSelectorAnd(keep, selector) if selector is not None else keep
            values, found = self._faiss_index.search(
                queries[row : row + 1], fetch, params=self._search_params(fetch, both)
            )
            if self._metric == faiss.METRIC_L2:
                values = -values
            positions[row, :fetch] = found[0]
            scores[row, :fetch] = np.where(found[0] >= 0, values[0], -np.inf)
            del both, keep, batch, ids  # the selectors read them until here
        return positions, scores

    def _save(self, path: Path) -> None:
        _faiss().write_index(self._faiss_index, str(path / FAISS_FILE))

    def _load(self, path: Path) -> None:
        self._faiss_index = _faiss().read_index(str(path / FAISS_FILE))


class FaissFlatIndex(FaissIndex):
    """Faiss's exact brute-force index (``IndexFlatIP`` / ``IndexFlatL2``)."""

    kind = "faiss-flat"
    is_exact = True

    def _create(self, vectors):
        faiss = _faiss()
        return faiss.IndexFlat(self.dim, self._metric)


class FaissHNSWIndex(FaissIndex):
    """Hierarchical navigable small-world graph (``IndexHNSWFlat``).

    Args:
        M: graph neighbours per node (memory and recall grow with it).
        ef_construction: candidate list size while building.
        ef_search: candidate list size while searching (raised to the fetch size if smaller).
    """

    kind = "faiss-hnsw"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "M": (2, 1024),
        "ef_construction": (1, 1 << 16),
        "ef_search": (1, 1 << 16),
    }

    def __init__(
        self,
        similarity: str | Similarity = "cosine",
        *,
        normalize: bool = False,
        M: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        **kwargs,
    ) -> None:
        super().__init__(similarity, normalize=normalize, **kwargs)
        check_sizes(M=M, ef_construction=ef_construction, ef_search=ef_search)
        self.M, self.ef_construction, self.ef_search = M, ef_construction, ef_search

    def options(self) -> dict:
        return {
            **super().options(),
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
        }

    def _create(self, vectors):
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(self.dim, self.M, self._metric)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _search_params(self, n_fetch: int, selector):
        ef = max(self.ef_search, n_fetch)
        if selector is None:
            return _faiss().SearchParametersHNSW(efSearch=ef)
        return _faiss().SearchParametersHNSW(efSearch=ef, sel=selector)


class FaissIVFIndex(FaissIndex):
    """Inverted file over k-means cells, vectors stored flat (``IndexIVFFlat``).

    Args:
        nlist: k-means cells (default ``4 * sqrt(N)``, at most ``N / 39`` so that every
            centroid gets enough training points).
        nprobe: cells visited per query.
    """

    kind = "faiss-ivf"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "nlist": (1, 1 << 24),
        "nprobe": (1, 1 << 24),
    }

    def __init__(
        self,
        similarity: str | Similarity = "cosine",
        *,
        normalize: bool = False,
        nlist: int | None = None,
        nprobe: int = 16,
        **kwargs,
    ) -> None:
        super().__init__(similarity, normalize=normalize, **kwargs)
        if nlist is not None and nlist < 1:
            raise IndexArgumentError(f"nlist must be >= 1, got {nlist}")
        check_sizes(nprobe=nprobe)
        self.nlist, self.nprobe = nlist, nprobe

    def options(self) -> dict:
        return {**super().options(), "nlist": self.nlist, "nprobe": self.nprobe}

    def _create(self, vectors):
        faiss = _faiss()
        n = len(vectors)
        nlist = self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlat(self.dim, self._metric)
        index = faiss.IndexIVFFlat(quantizer, self.dim, min(nlist, n), self._metric)
        index.cp.seed = 1234
        self._quantizer = quantizer  # Faiss does not own it from Python: keep it alive
        return index

    def _search_params(self, n_fetch: int, selector):
        nprobe = min(self.nprobe, self._faiss_index.nlist)
        if selector is None:
            return _faiss().SearchParametersIVF(nprobe=nprobe)
        return _faiss().SearchParametersIVF(nprobe=nprobe, sel=selector)
