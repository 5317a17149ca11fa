"""Annoy (Spotify): a forest of random-projection trees, memory-mapped from disk.

Cosine and L2-normalised Euclidean search use Annoy's ``angular`` metric by default (or
``euclidean`` on normalised vectors, as the document the project starts from does: the two rank
identically); dot product uses ``dot``; plain Euclidean uses ``euclidean``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from towerkit.index.base import (
    Index,
    IndexArgumentError,
    exclusion_counts,
    filter_candidates,
    normalized,
    require,
)
from towerkit.similarity import Similarity

ANNOY_FILE = "annoy.ann"


class AnnoyIndex(Index):
    """Annoy behind the index protocol.

    Args:
        similarity, normalize: see :class:`~towerkit.index.base.Index`.
        n_trees: trees built; more trees, better recall, bigger index.
        search_k: nodes inspected per query. ``None`` (the default) inspects
            ``search_k_factor * n_trees * n_fetch`` nodes, where ``n_fetch`` is ``k`` plus the
            query's exclusions; Annoy's own default (``-1``) is ``n_trees * n_fetch``. On the
            ML-1M YouTubeDNN vectors (``benchmarks/ann.py``), factor 2 with 50 trees finds
            99.3% of the exact top-10; 10 trees with Annoy's default, torch-rechub's setting,
            92.3%.
        search_k_factor: see ``search_k``.
        annoy_metric: for cosine or normalised Euclidean: ``"angular"`` or ``"euclidean"`` on
            L2-normalised vectors (identical rankings).
        seed: Annoy's random seed (the trees are reproducible).
        n_jobs: threads used to build the trees (-1: all). One thread by default: with
            several, each thread builds trees from its own random stream for as long as trees
            are missing, so the forest (and the recall) depends on thread timing and a seeded
            build is no longer reproducible.

    Exclusions are applied by over-fetching: each query asks Annoy for ``k`` plus its number
    of excluded ids and drops the excluded ones, so a query never gets fewer than ``k``
    results while the index holds enough items.
    """

    kind = "annoy"
    upserts = False  # its trees are fixed once built
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "n_trees": (1, 10_000),
        "search_k": (-1, 1 << 40),  # -1: Annoy's own default
        "search_k_factor": (1, 10_000),
        "seed": (0, 2**31 - 1),
        "n_jobs": (-1, 1024),
    }

    def __init__(
        self,
        similarity: str | Similarity = "cosine",
        *,
        normalize: bool = False,
        n_trees: int = 50,
        search_k: int | None = None,
        search_k_factor: int = 2,
        annoy_metric: Literal["angular", "euclidean"] = "angular",
        seed: int = 0,
        n_jobs: int = 1,
    ) -> None:
        super().__init__(similarity, normalize=normalize)
        if n_trees < 1:
            raise IndexArgumentError(f"n_trees must be >= 1, got {n_trees}")
        if search_k is not None and search_k < 1 and search_k != -1:
            raise IndexArgumentError(f"search_k must be >= 1 or -1, got {search_k}")
        if search_k_factor < 1:
            raise IndexArgumentError(f"search_k_factor must be >= 1, got {search_k_factor}")
        if annoy_metric not in ("angular", "euclidean"):
            raise IndexArgumentError(
                f"annoy_metric must be angular or euclidean, not {annoy_metric!r}"
            )
        self.n_trees, self.search_k, self.search_k_factor = n_trees, search_k, search_k_factor
        self.annoy_metric, self.seed, self.n_jobs = annoy_metric, seed, n_jobs
        self._annoy = None

    def options(self) -> dict:
        return {
            "n_trees": self.n_trees,
            "search_k": self.search_k,
            "search_k_factor": self.search_k_factor,
            "annoy_metric": self.annoy_metric,
            "seed": self.seed,
            "n_jobs": self.n_jobs,
        }

    @property
    def _metric(self) -> str:
        if self.similarity.name == "dot":
            return "dot"
        if self.similarity.normalize:  # cosine, or euclidean on normalised vectors
            return self.annoy_metric
        return "euclidean"

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        # Annoy's angular metric normalises by itself; euclidean needs normalised inputs.
        return normalized(x) if self._metric == "euclidean" and self.similarity.normalize else x

    def _new(self):
        annoy = require("annoy", "annoy")
        return annoy.AnnoyIndex(self.dim, self._metric)

    def _build(self, vectors: np.ndarray) -> None:
        index = self._new()
        index.set_seed(self.seed)
        for i, row in enumerate(self._prepare(vectors).tolist()):
            index.add_item(i, row)
        index.build(self.n_trees, n_jobs=self.n_jobs)
        self._annoy = index

    def _scores(self, distances: np.ndarray) -> np.ndarray:
        if self.similarity.name == "dot":
            return distances  # Annoy's "distance" for dot is the inner product
        squared = distances.astype(np.float64) ** 2
        if self.similarity.name == "cosine":
            return 1.0 - squared / 2.0  # angular distance = sqrt(2 - 2 cos)
        return -squared  # negative squared Euclidean distance

    def _search_positions(self, queries, k, excluded, where):
        n = len(queries)
        counts = exclusion_counts(excluded, n)
        allowed = self.allowed(where)
        # A filter keeping a share s of the items: fetch 2/s as many candidates (the forest
        # has no filter of its own), so that k + exclusions of them pass it with room to spare.
        spread = 1.0 if allowed is None else 2.0 / max(float(allowed.mean()), 1.0 / len(self))
        fetch = np.minimum(np.ceil((k + counts) * spread).astype(np.int64), len(self))
        width = int(fetch.max())
        positions = np.full((n, width), -1, dtype=np.int64)
        distances = np.zeros((n, width), dtype=np.float32)
        rows = self._prepare(queries).tolist()
        for row, (query, n_fetch) in enumerate(zip(rows, fetch, strict=True)):
            search_k = self.search_k or self.search_k_factor * self.n_trees * int(n_fetch)
            found, dist = self._annoy.get_nns_by_vector(
                query, int(n_fetch), search_k=search_k, include_distances=True
            )
            positions[row, : len(found)] = found
            distances[row, : len(found)] = dist
        scores = np.where(positions >= 0, self._scores(distances), -np.inf)
        return filter_candidates(positions, scores, k, excluded, allowed)

    def _save(self, path: Path) -> None:
        self._annoy.save(str(path / ANNOY_FILE))

    def _load(self, path: Path) -> None:
        index = self._new()
        index.load(str(path / ANNOY_FILE))
        self._annoy = index
