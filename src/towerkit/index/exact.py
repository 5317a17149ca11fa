"""Exact search with torch: every query scored against every vector, in memory-bounded chunks.

The reference every approximate index is measured against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from towerkit.evaluation import chunked_topk
from towerkit.index.base import Index
from towerkit.similarity import Similarity

VECTORS_FILE = "vectors.npy"


class ExactIndex(Index):
    """Brute-force top-K through :meth:`Similarity.pairwise` (the training scores exactly).

    Args:
        similarity, normalize: see :class:`~towerkit.index.base.Index`.
        max_bytes: the largest ``queries x vectors`` score block held at once.
    """

    kind = "exact"
    is_exact = True

    def __init__(
        self,
        similarity: str | Similarity = "cosine",
        *,
        normalize: bool = False,
        max_bytes: int = 256 * 2**20,
    ) -> None:
        super().__init__(similarity, normalize=normalize)
        self.max_bytes = max_bytes
        self._vectors: torch.Tensor | None = None

    def options(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def _build(self, vectors: np.ndarray) -> None:
        # Kept as given: the similarity prepares (normalises) both sides when scoring.
        self._vectors = torch.from_numpy(vectors)

    def _search_positions(self, queries, k, excluded):
        q = torch.from_numpy(queries)
        vectors, similarity = self._vectors, self.similarity
        positions, scores = chunked_topk(
            lambda begin, end: similarity.pairwise(q[begin:end], vectors),
            len(q),
            len(vectors),
            k,
            excluded,
            self.max_bytes,
            first_id=0,
        )
        # Masked items surface (at -inf) only when fewer than k remain: report them as padding.
        positions = np.where(np.isneginf(scores), -1, positions)
        if positions.shape[1] < k:
            pad = k - positions.shape[1]
            positions = np.pad(positions, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return positions, scores

    def _save(self, path: Path) -> None:
        np.save(path / VECTORS_FILE, self._vectors.numpy())

    def _load(self, path: Path) -> None:
        self._vectors = torch.from_numpy(np.load(path / VECTORS_FILE))
