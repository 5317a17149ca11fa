"""Negatives: what each positive is contrasted with, drawn per batch and vectorised.

A strategy only produces candidates: their ids, how they are shared among the batch's queries,
their log sampling probability (for the log-q correction) and, where it has them already, their
vectors. It computes no score and no loss: :class:`~towerkit.task.RetrievalTask` scores the
candidates, scales, corrects, masks and applies the objective, in that order, for every
strategy alike.

Strategies:

- :class:`SampledNegatives`: N items from the catalogue (uniform, popularity^alpha or
  log-popularity), per query or shared by the batch;
- :class:`InBatchNegatives`: the other positives of the batch, with optional log-q correction
  (Yi et al. 2019: subtract the log of each candidate's sampling probability);
- :class:`MixedNegatives`: in-batch plus sampled;
- :class:`FullNegatives`: the whole catalogue (exact softmax).

The task masks a candidate that equals the query's positive (an accidental hit), so no strategy
ever pushes a positive away from its own query.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from towerkit import distributed
from towerkit.types import SamplerKind

#: how a set of candidates is shared by the queries of a batch: one set for the whole batch,
#: one set per query, or one set per window (shared by the window's positions).
Sharing = Literal["batch", "query", "window"]


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
        """Every item equally likely (padding id 0 never drawn)."""
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
        """The sampler of a config's ``sampler`` kind over item ``counts`` (index 0: padding)."""
        if kind == "uniform":
            return cls.uniform(len(counts) - 1)
        if kind == "popularity":
            return cls.popularity(counts, alpha)
        if kind == "log_popularity":
            return cls.log_popularity(counts)
        raise ValueError(f"unknown sampler {kind!r}; use uniform, popularity or log_popularity")

    @property
    def n_items(self) -> int:
        """Items that can be drawn (ids ``1..n_items``)."""
        return len(self.probs) - 1

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """int64 item ids of the given shape, drawn with replacement."""
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        ids = torch.searchsorted(self._cdf, u, right=True)
        return ids.clamp_(1, self.n_items)

    def to(self, device: torch.device | str) -> CatalogueSampler:
        """Move the probabilities to ``device``; returns the sampler."""
        self.probs, self.log_probs = self.probs.to(device), self.log_probs.to(device)
        return self


@dataclass(frozen=True)
class Shard:
    """This rank's part of a global batch under ``torchrun`` (:mod:`towerkit.distributed`).

    Attributes:
        rank: this process's rank.
        queries: int ``[world]`` queries per rank.
        windows: int ``[world]`` windows per rank (0 for independent samples).
    """

    rank: int
    queries: np.ndarray
    windows: np.ndarray

    def offset(self, counts: np.ndarray) -> int:
        """Where this rank's rows start in the global batch, given each rank's ``counts``."""
        return int(counts[: self.rank].sum())

    def rows(self, counts: np.ndarray) -> slice:
        """This rank's rows of something with ``counts.sum()`` rows in rank order."""
        begin = self.offset(counts)
        return slice(begin, begin + int(counts[self.rank]))


@dataclass(frozen=True)
class Candidates:
    """Negative candidates for a batch of ``Q`` queries.

    Attributes:
        ids: int64 item ids: ``[N]`` shared by every query (``sharing="batch"``), ``[Q, N]`` one
            set per query (``"query"``) or ``[W, N]`` one set per window of the batch's layout
            (``"window"``).
        log_q: float ``[shape of ids]``: the log probability with which each candidate was
            drawn, for the log-q correction.
        sharing: see ``ids``.
        vectors: the candidates' vectors (``[*ids.shape, D]``) when the strategy has them
            already (in-batch candidates are the positives); None to encode ``ids``.
        includes_positives: candidate ``own_offset + i`` of a batch-shared set is query
            ``i``'s own positive (in-batch), so it never counts as that query's negative,
            whether accidental hits are masked or not.
        own_offset: where this rank's positives begin among candidates gathered from every
            rank (0 in one process).
    """

    ids: torch.Tensor
    log_q: torch.Tensor
    sharing: Sharing
    vectors: torch.Tensor | None = None
    includes_positives: bool = False
    own_offset: int = 0


@dataclass(frozen=True)
class BatchContext:
    """What a strategy reads of one batch, passed whole.

    Attributes:
        positives: int64 ``[Q]`` positive item ids.
        positive_vectors: ``[Q, D]`` their vectors, which in-batch strategies reuse (None where
            the strategy is exhaustive: the fused full softmax encodes no positive).
        layout: for windows, the boolean ``[W, T]`` mask of the positions the queries come
            from (row-major order); None for independent samples.
        shard: under ``torchrun``, this rank's part of the global batch: candidates are those
            of the global batch (in-batch ones gathered from every rank, sampled ones drawn for
            the whole batch, this rank's rows kept); None in one process.
    """

    positives: torch.Tensor
    positive_vectors: torch.Tensor | None = None
    layout: torch.Tensor | None = None
    shard: Shard | None = None


class Negatives(ABC):
    """A negative strategy: a batch in, candidates out (see :class:`Candidates`).

    A strategy that draws at random owns its generator (seeded at construction and again by
    :meth:`manual_seed` when training starts; its state is part of a checkpoint)."""

    #: every catalogue item is a candidate (the exact softmax; nothing is sampled).
    exhaustive: ClassVar[bool] = False

    @abstractmethod
    def candidates(self, batch: BatchContext) -> list[Candidates]:
        """The negative candidates of a batch."""

    def manual_seed(self, seed: int) -> None:
        """Seed the random source of drawn candidates (none here: nothing is drawn)."""
        return None

    def rng_state(self) -> torch.Tensor | None:
        """The random source's state (None: the strategy draws nothing)."""
        return None

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        """Restore :meth:`rng_state` (a state given to a strategy that draws nothing is
        ignored)."""
        return None

    @abstractmethod
    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        """Log sampling probability of items ``ids`` (what log-q subtracts from a positive)."""


class SampledNegatives(Negatives):
    """N negatives drawn from the catalogue for each query (or once for the whole batch).

    Args:
        sampler: the catalogue distribution.
        n: negatives per query.
        shared: draw one set of ``n`` for the whole batch and score it with one matrix
            product; cheaper for large ``n`` (sampled softmax). For a batch of windows
            (``layout`` given) one set per window, shared by its positions: a batch of 64
            ML-1M windows holds ~12,000 queries, and one draw of 256 for all of them trained
            SASRec to below the popularity baseline, while a draw per window matches the
            full softmax closely (``benchmarks/results/ml1m_sequential.md``).
    """

    def __init__(
        self, sampler: CatalogueSampler, n: int, *, shared: bool = False, seed: int = 0
    ) -> None:
        if n < 1:
            raise ValueError(f"the number of sampled negatives must be >= 1, got {n}")
        self.sampler, self.n, self.shared = sampler, n, shared
        # Seeded alike on every rank: the global batch's draws agree across processes.
        self.generator = torch.Generator().manual_seed(seed)

    def manual_seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None:
            self.generator.set_state(state)

    def candidates(self, batch: BatchContext) -> list[Candidates]:
        positives, layout, shard = batch.positives, batch.layout, batch.shard
        windows = self.shared and layout is not None  # (W, N): one set per window
        if self.shared and layout is None:  # (N,): one set, the same on every rank
            ids = self.sampler.sample((self.n,), self.generator)
        elif shard is None:  # (W, N), or (Q, N): one set per query
            shape = (len(layout) if windows else len(positives), self.n)
            ids = self.sampler.sample(shape, self.generator)
        else:  # drawn for the global batch, this rank's rows kept
            counts = shard.windows if windows else shard.queries
            drawn = self.sampler.sample((int(counts.sum()), self.n), self.generator)
            ids = drawn[shard.rows(counts)]
        ids = ids.to(positives.device)
        sharing = "window" if windows else "batch" if self.shared else "query"
        return [Candidates(ids, self.log_q(ids), sharing)]

    def log_q(self, ids):
        return self.sampler.log_probs.to(ids.device)[ids]


class InBatchNegatives(Negatives):
    """The batch's other positives serve as negatives: one ``[B, B]`` matrix product.

    Items appear in a batch in proportion to their popularity, so popular items are pushed
    down too often; the log-q correction (Yi et al. 2019: subtract the log of each candidate's
    share of training interactions) compensates when the task applies it.

    Args:
        log_probs: ``[n_items + 1]`` log probability of each item id appearing as a positive.
    """

    def __init__(self, log_probs: torch.Tensor) -> None:
        self.log_probs = log_probs

    @classmethod
    def from_counts(cls, counts: np.ndarray | torch.Tensor) -> InBatchNegatives:
        """From ``[n_items + 1]`` training counts per item id."""
        counts = torch.as_tensor(counts, dtype=torch.float64)
        probs = counts / counts.sum()
        return cls(torch.log(probs.clamp_min(1e-30)).to(torch.float32))

    def candidates(self, batch: BatchContext) -> list[Candidates]:
        positives, positive_vectors, shard = batch.positives, batch.positive_vectors, batch.shard
        offset = 0
        if shard is not None:  # every rank's positives, their vectors with gradients
            ids, offset = distributed.gather(positives, shard.queries)
            positive_vectors, _ = distributed.gather(positive_vectors, shard.queries)
            positives = ids
        return [
            Candidates(
                positives,
                self.log_q(positives),
                "batch",
                vectors=positive_vectors,
                includes_positives=True,
                own_offset=offset,
            )
        ]

    def log_q(self, ids):
        return self.log_probs.to(ids.device)[ids]


class MixedNegatives(Negatives):
    """In-batch negatives plus sampled ones (Yang et al. 2020, mixed negative sampling).

    A positive's log-q correction is its in-batch one: as a positive it was drawn by the batch.
    """

    def __init__(self, in_batch: InBatchNegatives, sampled: SampledNegatives) -> None:
        self.in_batch, self.sampled = in_batch, sampled

    def candidates(self, batch: BatchContext) -> list[Candidates]:
        return [*self.in_batch.candidates(batch), *self.sampled.candidates(batch)]

    def manual_seed(self, seed: int) -> None:
        self.sampled.manual_seed(seed)

    def rng_state(self) -> torch.Tensor:
        return self.sampled.rng_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        self.sampled.set_rng_state(state)

    def log_q(self, ids):
        return self.in_batch.log_q(ids)


class FullNegatives(Negatives):
    """Every catalogue item is a negative: the exact softmax over ``n_items`` ids.

    Affordable for catalogues of a few thousand items (one ``[B, n_items]`` product per step);
    with the list-wise objective the task computes it as one fused cross-entropy.
    """

    exhaustive = True

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def candidates(self, batch: BatchContext) -> list[Candidates]:
        ids = torch.arange(1, self.n_items + 1, device=batch.positives.device)
        return [Candidates(ids, self.log_q(ids), "batch")]

    def log_q(self, ids):
        # Nothing is sampled: every item is a candidate with probability 1.
        return torch.zeros(ids.shape, device=ids.device)
