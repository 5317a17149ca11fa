"""Negatives: what each positive is contrasted with, drawn per batch and vectorised.

A strategy turns a batch of query vectors and positive item ids into the logits an objective
needs: ``pos [B]``, ``neg [B, N]`` and a ``mask [B, N]`` of the negatives that count. The steps
follow one documented order (as in TensorFlow Recommenders' retrieval task):

    scores (similarity) -> / temperature -> - log q (sampling correction) -> mask accidental hits

Strategies:

- :class:`SampledNegatives`: N items from the catalogue (uniform, popularity^alpha or
  log-popularity), per query or shared by the batch;
- :class:`InBatchNegatives`: the other positives of the batch, with optional log-q correction
  (Yi et al. 2019: subtract the log of each candidate's sampling probability);
- :class:`MixedNegatives`: in-batch plus sampled;
- :class:`FullNegatives`: the whole catalogue (exact softmax).

A negative that equals the query's positive (an accidental hit) is always masked out, so no
strategy ever pushes a positive away from its own query.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from towerkit.similarity import Similarity, Temperature

ItemEncoder = Callable[[torch.Tensor], torch.Tensor]
Logits = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
SamplerKind = Literal["uniform", "popularity", "log_popularity"]


class CatalogueSampler:
    """Draws item ids ``1..n`` from a fixed distribution (inverse-CDF, vectorised).

    Args:
        probs: ``[n_items + 1]`` probabilities; index 0 (padding) must be 0.

    Use the constructors :meth:`uniform`, :meth:`popularity` and :meth:`log_popularity`.
    """

    def __init__(self, probs: torch.Tensor, kind: str = "custom") -> None:
        probs = torch.as_tensor(probs, dtype=torch.float64)
        if probs[0] != 0 or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError("probs must be >= 0, with probs[0] = 0 (padding) and a positive sum")
        self.kind = kind
        self.probs = (probs / probs.sum()).to(torch.float32)
        self.log_probs = torch.log(self.probs.clamp_min(1e-30))
        self._cdf = torch.cumsum(probs / probs.sum(), 0).to(torch.float64)
        self._cdf[-1] = 1.0

    @classmethod
    def uniform(cls, n_items: int) -> CatalogueSampler:
        probs = torch.ones(n_items + 1)
        probs[0] = 0
        return cls(probs, "uniform")

    @classmethod
    def popularity(cls, counts: np.ndarray | torch.Tensor, alpha: float = 0.75) -> CatalogueSampler:
        """``q(i) ∝ count(i)^alpha`` (word2vec's smoothing; alpha=1 is plain popularity).

        Args:
            counts: ``[n_items + 1]`` training counts per item id.
        """
        counts = torch.as_tensor(counts, dtype=torch.float64)
        probs = counts.clamp_min(0) ** alpha
        probs[0] = 0
        return cls(probs, f"popularity^{alpha:g}")

    @classmethod
    def log_popularity(cls, counts: np.ndarray | torch.Tensor) -> CatalogueSampler:
        """``q(i) ∝ log(1 + count(i))``: flatter than popularity, rarer items drawn more."""
        counts = torch.as_tensor(counts, dtype=torch.float64)
        probs = torch.log1p(counts.clamp_min(0))
        probs[0] = 0
        return cls(probs, "log_popularity")

    @classmethod
    def build(
        cls, kind: SamplerKind, counts: np.ndarray | torch.Tensor, alpha: float = 0.75
    ) -> CatalogueSampler:
        if kind == "uniform":
            return cls.uniform(len(counts) - 1)
        if kind == "popularity":
            return cls.popularity(counts, alpha)
        if kind == "log_popularity":
            return cls.log_popularity(counts)
        raise ValueError(f"unknown sampler {kind!r}; use uniform, popularity or log_popularity")

    @property
    def n_items(self) -> int:
        return len(self.probs) - 1

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """int64 item ids of the given shape, drawn with replacement."""
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        ids = torch.searchsorted(self._cdf, u, right=True)
        return ids.clamp_(1, self.n_items)

    def to(self, device: torch.device | str) -> CatalogueSampler:
        self.probs, self.log_probs = self.probs.to(device), self.log_probs.to(device)
        return self


class Negatives(ABC):
    """A negative strategy: queries and positives in, ``(pos, neg, mask)`` logits out."""

    @abstractmethod
    def logits(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        encode_items: ItemEncoder,
        similarity: Similarity,
        temperature: Temperature,
        generator: torch.Generator | None = None,
        layout: torch.Tensor | None = None,
    ) -> Logits:
        """Args:
            queries: ``[B, D]`` query (user) vectors.
            positives: int64 ``[B]`` positive item ids.
            encode_items: the model's item tower, ids ``[N]`` -> vectors ``[N, D]``.
            layout: for a batch of sequences, the boolean ``[W, T]`` mask of the positions
                the queries come from (in row-major order); None for independent samples.

        Returns:
            ``pos [B]``, ``neg [B, N]`` logits (scaled and corrected) and ``mask [B, N]``.
        """


class SampledNegatives(Negatives):
    """N negatives drawn from the catalogue for each query (or once for the whole batch).

    Args:
        sampler: the catalogue distribution.
        n: negatives per query.
        shared: draw one set of ``n`` for the whole batch and score it with one matrix
            product; cheaper for large ``n`` (sampled softmax). For a batch of sequences
            (``layout`` given) one set per sequence, shared by its positions: a batch of 64
            ML-1M windows holds ~12,000 queries, and one draw of 256 for all of them trained
            SASRec to below the popularity baseline, while a draw per sequence matches the
            full softmax closely (``benchmarks/results/ml1m_sequential.md``).
        logq: subtract ``log q(item)`` from every logit (the positive's too), which makes
            sampled softmax an unbiased estimate of the full softmax.
    """

    def __init__(
        self, sampler: CatalogueSampler, n: int, *, shared: bool = False, logq: bool = False
    ) -> None:
        if n < 1:
            raise ValueError(f"the number of sampled negatives must be >= 1, got {n}")
        self.sampler, self.n, self.shared, self.logq = sampler, n, shared, logq

    def logits(
        self,
        queries,
        positives,
        encode_items,
        similarity,
        temperature,
        generator=None,
        layout=None,
    ):
        batch, inv_t = len(positives), temperature.inverse()
        pos_vectors = encode_items(positives)  # (B, D)
        pos = similarity.rowwise(queries, pos_vectors, inv_t)  # (B,)
        if self.shared and layout is not None:
            n_seq, width = layout.shape
            ids = self.sampler.sample((n_seq, self.n), generator).to(positives.device)  # (W, N)
            vectors = encode_items(ids.reshape(-1)).reshape(n_seq, self.n, -1)  # (W, N, D)
            padded = queries.new_zeros(n_seq, width, queries.shape[-1])
            padded[layout] = queries
            neg = similarity.pairwise(padded, vectors, inv_t)[layout]  # (B, N)
            ids = ids[:, None, :].expand(-1, width, -1)[layout]  # (B, N)
        elif self.shared:
            ids = self.sampler.sample((self.n,), generator).to(positives.device)  # (N,)
            neg = similarity.pairwise(queries, encode_items(ids), inv_t)  # (B, N)
            ids = ids[None, :].expand(batch, -1)
        else:
            ids = self.sampler.sample((batch, self.n), generator).to(positives.device)  # (B, N)
            vectors = encode_items(ids.reshape(-1)).reshape(batch, self.n, -1)  # (B, N, D)
            neg = similarity.rowwise(queries, vectors, inv_t)  # (B, N)
        if self.logq:
            log_probs = self.sampler.log_probs.to(positives.device)
            pos = pos - log_probs[positives]
            neg = neg - log_probs[ids]
        return pos, neg, ids != positives[:, None]


class InBatchNegatives(Negatives):
    """The batch's other positives serve as negatives: one ``[B, B]`` matrix product.

    Items appear in a batch in proportion to their popularity, so popular items are pushed
    down too often; ``log_probs`` (log of each item's share of training interactions) corrects
    that when given. Every column whose item equals the row's positive is masked, which removes
    the diagonal and any duplicate of the positive.

    Args:
        log_probs: ``[n_items + 1]`` log sampling probability per item id, or None for no
            correction.
    """

    def __init__(self, log_probs: torch.Tensor | None = None) -> None:
        self.log_probs = log_probs

    @classmethod
    def from_counts(cls, counts: np.ndarray | torch.Tensor, logq: bool = True) -> InBatchNegatives:
        if not logq:
            return cls(None)
        counts = torch.as_tensor(counts, dtype=torch.float64)
        probs = counts / counts.sum()
        return cls(torch.log(probs.clamp_min(1e-30)).to(torch.float32))

    def logits(
        self,
        queries,
        positives,
        encode_items,
        similarity,
        temperature,
        generator=None,
        layout=None,
    ):
        vectors = encode_items(positives)  # (B, D)
        scores = similarity.pairwise(queries, vectors, temperature.inverse())  # (B, B)
        if self.log_probs is not None:
            scores = scores - self.log_probs.to(scores.device)[positives][None, :]
        pos = scores.diagonal()
        mask = positives[None, :] != positives[:, None]  # (B, B), False on the diagonal
        return pos, scores, mask


class MixedNegatives(Negatives):
    """In-batch negatives plus sampled ones, concatenated along the negative axis."""

    def __init__(self, in_batch: InBatchNegatives, sampled: SampledNegatives) -> None:
        self.in_batch, self.sampled = in_batch, sampled

    def logits(
        self,
        queries,
        positives,
        encode_items,
        similarity,
        temperature,
        generator=None,
        layout=None,
    ):
        pos, neg_a, mask_a = self.in_batch.logits(
            queries, positives, encode_items, similarity, temperature, generator, layout
        )
        _, neg_b, mask_b = self.sampled.logits(
            queries, positives, encode_items, similarity, temperature, generator, layout
        )
        return pos, torch.cat([neg_a, neg_b], 1), torch.cat([mask_a, mask_b], 1)


class FullNegatives(Negatives):
    """Every catalogue item is a negative: the exact softmax over ``n_items`` ids.

    Affordable for catalogues of a few thousand items (one ``[B, n_items]`` product per step).
    """

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def logits(
        self,
        queries,
        positives,
        encode_items,
        similarity,
        temperature,
        generator=None,
        layout=None,
    ):
        ids = torch.arange(1, self.n_items + 1, device=positives.device)
        scores = similarity.pairwise(queries, encode_items(ids), temperature.inverse())  # (B, n)
        pos = scores.gather(1, (positives - 1)[:, None]).squeeze(1)
        mask = ids[None, :] != positives[:, None]
        return pos, scores, mask

    def softmax_loss(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        encode_items: ItemEncoder,
        similarity: Similarity,
        temperature: Temperature,
    ) -> torch.Tensor:
        """The list-wise loss over the whole catalogue as one fused cross-entropy.

        Equal to ``listwise(*self.logits(...))``: the positive appears exactly once among the
        catalogue's scores, so softmax CE over [positive, every other item] is plain CE over
        all items. It skips the mask, the gather and the separate log-sum-exp over the
        ``[B, n_items]`` block, which dominate a step when the catalogue is scored for
        thousands of queries at once (sequential models).
        """
        ids = torch.arange(1, self.n_items + 1, device=positives.device)
        scores = similarity.pairwise(queries, encode_items(ids), temperature.inverse())
        return torch.nn.functional.cross_entropy(scores, positives - 1)


def item_counts(items: np.ndarray, n_items: int) -> np.ndarray:
    """int64 ``[n_items + 1]`` occurrences of each item id in ``items`` (index 0 stays 0)."""
    counts = np.bincount(items, minlength=n_items + 1).astype(np.int64)
    counts[0] = 0
    return counts
