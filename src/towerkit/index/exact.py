"""Exact search with torch: every query scored against every vector, in memory-bounded chunks.

The reference every approximate index is measured against. :func:`chunked_topk` is the one
exact top-K of the project: the exact index and the evaluator both rank through it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from towerkit.index.base import Index
from towerkit.similarity import Similarity

VECTORS_FILE = "vectors.npy"


def chunked_topk(
    score_rows: Callable[[int, int], torch.Tensor],
    n_queries: int,
    n_items: int,
    k: int,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    max_bytes: int = 256 * 2**20,
    first_id: int = 1,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K item ids ``first_id .. first_id + n_items - 1`` per query, scoring ``rows`` queries
    at a time.

    Args:
        score_rows: ``(begin, end) -> [end - begin, n_items]`` scores; column ``j`` belongs to
            id ``first_id + j`` (items ``1..n_items`` by default).
        exclude: CSR ``(indptr, ids)`` of ids to mask per query.
        max_bytes: the largest score block held at once.
        first_id: the id of column 0.
        allowed: a boolean mask over the ``n_items`` columns: only those may be returned.

    Returns:
        ``ids`` int64 ``[Q, k]`` and ``scores`` float32 ``[Q, k]``, best first; masked items
        never appear unless fewer than ``k`` remain (their score is then ``-inf``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, n_items)
    rows = max(1, int(max_bytes // (4 * n_items)))
    banned = None if allowed is None else torch.from_numpy(~np.asarray(allowed, dtype=bool))
    ids = np.empty((n_queries, k), dtype=np.int64)
    scores = np.empty((n_queries, k), dtype=np.float32)
    for begin in range(0, n_queries, rows):
        end = min(begin + rows, n_queries)
        block = score_rows(begin, end).float()  # (rows, n_items)
        if banned is not None:
            block[:, banned.to(block.device)] = float("-inf")
        if exclude is not None:
            indptr, excluded = exclude
            lengths = np.diff(indptr[begin : end + 1])
            row = np.repeat(np.arange(end - begin), lengths)
            col = excluded[indptr[begin] : indptr[end]] - first_id
            if block.device.type == "cpu":  # numpy's fancy assignment: a tenth of torch's cost
                block.numpy()[row, col] = float("-inf")
            else:
                block[torch.from_numpy(row), torch.from_numpy(col)] = float("-inf")
        top_scores, top_idx = torch.topk(block, k, dim=1)
        ids[begin:end] = top_idx.cpu().numpy() + first_id
        scores[begin:end] = top_scores.cpu().numpy()
    return ids, scores


class ExactIndex(Index):
    """Brute-force top-K through :meth:`Similarity.pairwise` (the training scores exactly).

    Args:
        similarity, normalize: see :class:`~towerkit.index.base.Index`.
        max_bytes: the largest ``queries x vectors`` score block held at once.
    """

    kind = "exact"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"max_bytes": (1 << 16, 1 << 40)}
    is_exact = True
    takes_tensors = True

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
        self._squared_norms: torch.Tensor | None = None

    def options(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def _build(self, vectors: torch.Tensor) -> None:
        # Stored prepared (normalised for cosine), so a search never normalises them again.
        self._vectors = self.similarity.prepare(vectors)
        self._squared_norms = None

    def _upsert(self, positions, vectors, ids, rows):
        prepared = self.similarity.prepare(vectors.to(self._vectors.device))
        known = torch.from_numpy(positions >= 0)
        table = self._vectors.clone()  # the searches holding the old index keep the old table
        if bool(known.any()):
            table[torch.from_numpy(positions[positions >= 0])] = prepared[known]
        self._vectors = torch.cat([table, prepared[~known]])
        self._squared_norms = None
        return positions < 0

    def _score(self, queries: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` scores of prepared queries, as ``Similarity.pairwise`` defines them."""
        dots = queries @ self._vectors.T
        if self.similarity.name != "euclidean":
            return dots
        if self._squared_norms is None:
            self._squared_norms = (self._vectors * self._vectors).sum(-1)
        squared = (queries * queries).sum(-1, keepdim=True) - 2 * dots + self._squared_norms
        return -squared.clamp_min(0.0)

    def _search_positions(self, queries, k, excluded, where):
        q = self.similarity.prepare(queries.to(self._vectors.device))
        positions, scores = chunked_topk(
            lambda begin, end: self._score(q[begin:end]),
            len(q),
            len(self._vectors),
            k,
            excluded,
            self.max_bytes,
            first_id=0,
            allowed=self.allowed(where),
        )
        # Masked items surface (at -inf) only when fewer than k remain: report them as padding.
        positions = np.where(np.isneginf(scores), -1, positions)
        if positions.shape[1] < k:
            pad = k - positions.shape[1]
            positions = np.pad(positions, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return positions, scores

    def _save(self, path: Path) -> None:
        np.save(path / VECTORS_FILE, self._vectors.cpu().numpy())

    def _load(self, path: Path) -> None:
        self._vectors = torch.from_numpy(np.load(path / VECTORS_FILE))  # saved prepared
