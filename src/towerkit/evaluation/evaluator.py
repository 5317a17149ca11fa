"""Exact full-catalogue evaluation: score every item for every user, mask the seen, take top-K.

Scoring runs in chunks of users so that no ``users x items`` matrix larger than ``max_bytes`` is
ever held. Items a user has already interacted with (the whole history before the evaluated
stage) are masked before the top-K, as DESIGN.md's protocol asks.

The metrics (HR, recall, NDCG, MRR, precision and coverage at each K) are the formulas of
:mod:`towerkit.evaluation.metrics`, averaged over the evaluated users.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from towerkit import distributed
from towerkit.data.history import gather_history
from towerkit.data.split import Split, Stage
from towerkit.errors import TowerkitError
from towerkit.evaluation.metrics import ranking_metrics, target_ranks
from towerkit.evaluation.outcomes import TOP_KEPT, Outcomes
from towerkit.index import Index, make_index, recall_at_k
from towerkit.index.exact import chunked_topk
from towerkit.similarity import Similarity
from towerkit.types import Batch

logger = logging.getLogger(__name__)

DEFAULT_KS = (10, 50)


class DivergedError(TowerkitError):
    """A model whose vectors are not finite numbers: there is nothing to rank by."""


@dataclass(frozen=True)
class Queries:
    """The users of one evaluation stage, their histories and their targets (CSR).

    Attributes:
        users: int64 ``[U]`` encoded users with at least one target.
        history_start, history_end: int64 ``[U]`` absolute bounds of each history in the
            split's flat arrays (everything before the stage).
        target_offsets: int64 ``[U + 1]``; user ``i``'s targets are
            ``target_items[target_offsets[i]:target_offsets[i + 1]]``.
    """

    users: np.ndarray
    history_start: np.ndarray
    history_end: np.ndarray
    target_offsets: np.ndarray
    target_items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_split(cls, split: Split, stage: Stage) -> Queries:
        """The queries of one stage (``valid`` or ``test``) of a split: each user's history before
        the stage and its targets."""
        targets = split.targets(stage)  # grouped by user, users ascending
        users, first, counts = np.unique(targets.users, return_index=True, return_counts=True)
        offsets = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(
            users=users,
            history_start=split.sequences.offsets[users],
            history_end=targets.history_end[first],
            target_offsets=offsets,
            target_items=targets.items,
        )

    def sample(self, n: int, seed: int = 0) -> Queries:
        """A seeded sample of ``n`` of these users (in user order), or all of them if fewer."""
        if n <= 0 or n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        lengths = np.diff(self.target_offsets)[keep]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        positions = np.arange(offsets[-1], dtype=np.int64) + np.repeat(
            self.target_offsets[keep] - offsets[:-1], lengths
        )
        return Queries(
            users=self.users[keep],
            history_start=self.history_start[keep],
            history_end=self.history_end[keep],
            target_offsets=offsets,
            target_items=self.target_items[positions],
        )

    def seen_targets(self, items: np.ndarray, n_items: int) -> np.ndarray:
        """bool ``[T]``: whether each target is an item its user saw before the stage (masking
        seen items, as the protocol asks, puts such a target out of reach)."""
        indptr, seen = self.exclusions(items)
        stride = np.int64(n_items + 1)
        users = np.arange(len(self), dtype=np.int64)
        history = np.repeat(users, np.diff(indptr)) * stride + seen
        rows = np.repeat(users, np.diff(self.target_offsets))
        return np.isin(rows * stride + self.target_items, history)

    def exclusions(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr [U + 1], item ids)`` of every item each user saw before the stage."""
        lengths = self.history_end - self.history_start
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        positions = np.arange(indptr[-1], dtype=np.int64) + np.repeat(
            self.history_start - indptr[:-1], lengths
        )
        return indptr, items[positions]


@torch.no_grad()
def query_vectors(
    model: torch.nn.Module,
    items: np.ndarray,
    users: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    *,
    max_len: int,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    timestamps: np.ndarray | None = None,
    at: np.ndarray | None = None,
) -> torch.Tensor:
    """``[U, D]`` query vectors of ``users``, each from its history ``items[start:end]``
    (the last ``max_len`` items), computed ``batch_size`` users at a time.

    A model that reads times (``reads_times``) needs ``timestamps``, aligned with ``items``,
    and ``at [U]``: the time each query is made (the time of the target it predicts)."""
    reads_times = getattr(model, "reads_times", False)
    if reads_times and (timestamps is None or at is None):
        raise ValueError(
            f"{type(model).__name__} reads the times of a history: give timestamps and at"
        )
    out = []
    for begin in range(0, len(users), batch_size):
        sl = slice(begin, begin + batch_size)
        history = torch.from_numpy(gather_history(items, starts[sl], ends[sl], max_len))
        times = when = None
        if reads_times:
            times = torch.from_numpy(gather_history(timestamps, starts[sl], ends[sl], max_len))
            when = torch.from_numpy(at[sl])
        batch = Batch(  # the user tower never reads targets
            torch.from_numpy(users[sl]), history, torch.zeros(len(history), dtype=torch.long),
            times=times, at=when,
        )  # fmt: skip
        out.append(model.encode_users(batch.to(device)).float())  # fp32 under autocast too
    if not out:
        return torch.zeros(0, getattr(model, "embedding_dim", 0), device=device)
    return torch.cat(out)


def check_interests(users: torch.Tensor | np.ndarray, interests: int | None) -> None:
    """Raise unless ``users`` have the shape the model declares: ``[U, D]`` for one vector
    per user (``interests`` None), ``[U, K, D]`` for K interests."""
    expected = "[U, D]" if interests is None else f"[U, {interests}, D]"
    ndim = 2 if interests is None else 3
    if users.ndim != ndim or (interests is not None and users.shape[1] != interests):
        raise ValueError(
            f"user vectors of shape {tuple(users.shape)}, but the model declares {expected} "
            f"(n_interests={interests})"
        )


def best_interest_scores(
    users: torch.Tensor, items: torch.Tensor, similarity: Similarity, interests: int | None = None
) -> torch.Tensor:
    """``[U, N]`` scores of users against items: for a model of K interests (``[U, K, D]``
    users) the best of their K interests' scores (what merging K searches by best score ranks
    by)."""
    check_interests(users, interests)
    if interests is None:
        return similarity.pairwise(users, items)
    n, _, dim = users.shape
    return (
        similarity.pairwise(users.reshape(n * interests, dim), items).view(n, interests, -1).amax(1)
    )


class Evaluator:
    """Full-catalogue evaluation of one stage of a split.

    Args:
        split: the split; ``stage`` picks ``"valid"`` or ``"test"`` targets.
        n_items: catalogue size (item ids ``1..n_items``).
        ks: the cut-offs to report.
        max_len: history length fed to the user tower.
        batch_size: users per user-tower batch.
        max_bytes: the largest block of scores held at once.
        index: the index every ranking goes through (``exact``, ``annoy``, ``faiss-hnsw``, ...
            see :mod:`towerkit.index`), built over the item vectors; one that is not exact
            (``is_exact``) is also measured: the metrics then report its ``index_recall@K``
            against the exact index's top-K.
        index_options: options of that index (``n_trees``, ``ef_search``, ...).
        sample_users: rank a seeded sample of this many of the stage's users (0: all).
        sample_seed: the seed of that sample.
        mask_seen: mask each user's earlier items from their ranking (DESIGN.md's protocol);
            False ranks them too (ComiRec's protocol).
        depth: rank at least this many items per user (default: ``max(ks)``); the final test
            stage ranks 200 so that its :meth:`outcomes` give metrics at every K up to 200.

    After each evaluation, ``last_ids`` holds the ranked item ids (``[U, width]``) it measured.

    Example::

        evaluator = Evaluator(split, "test", n_items=encoded.n_items)
        evaluator.evaluate(model, Cosine())["ndcg@10"]
    """

    def __init__(
        self,
        split: Split,
        stage: Stage,
        n_items: int,
        *,
        ks: Sequence[int] = DEFAULT_KS,
        max_len: int = 50,
        batch_size: int = 1024,
        max_bytes: int = 256 * 2**20,
        index: str = "exact",
        index_options: Mapping[str, Any] | None = None,
        sample_users: int = 0,
        sample_seed: int = 0,
        mask_seen: bool = True,
        depth: int = 0,
    ) -> None:
        self.split, self.stage, self.n_items = split, stage, n_items
        self.index, self.index_options = index, dict(index_options or {})
        self.ks, self.max_len, self.batch_size, self.max_bytes = (
            tuple(ks),
            max_len,
            batch_size,
            max_bytes,
        )
        self.queries = Queries.from_split(split, stage)
        if 0 < sample_users < len(self.queries):
            logger.info(
                "%s: ranking a seeded sample of %d of %d users (eval.sample_users)",
                stage, sample_users, len(self.queries),
            )  # fmt: skip
            self.queries = self.queries.sample(sample_users, sample_seed)
        if mask_seen:
            self.exclude = self.queries.exclusions(split.sequences.items)
            self._warn_unreachable()
        else:  # nothing is masked: an empty CSR
            self.exclude = (np.zeros(len(self.queries) + 1, np.int64), np.zeros(0, np.int64))
        self.width = max(max(self.ks), min(depth, n_items))
        self.last_seconds = 0.0
        self.last_ids: np.ndarray | None = None

    def _warn_unreachable(self) -> None:
        """Say how many users' target is an item they saw before: masking seen items, as the
        protocol asks, puts it out of reach (it counts as a miss). Repeated rows of the log are
        the usual cause, and are named."""
        q = self.queries
        repeated = q.seen_targets(self.split.sequences.items, self.n_items)
        if repeated.any():
            rows = np.repeat(np.arange(len(q)), np.diff(q.target_offsets))
            duplicates = self.split.sequences.repeated_rows()
            logger.warning(
                "%d of %d users have a %s target they interacted with before; masking seen "
                "items puts it out of reach (it counts as a miss)%s",
                len(np.unique(rows[repeated])), len(q), self.stage,
                f"; the log repeats {duplicates:,} (user, item, time) rows" if duplicates else "",
            )  # fmt: skip

    def _topk(
        self,
        score_rows: Callable[[int, int], torch.Tensor],
        n_queries: int | None = None,
        exclude: tuple[np.ndarray, np.ndarray] | None = None,
        max_bytes: int | None = None,
    ) -> np.ndarray:
        """Top-K ids of the stage's users (or ``n_queries`` of them with their ``exclude``)."""
        ids, _ = chunked_topk(
            score_rows,
            len(self.queries) if n_queries is None else n_queries,
            self.n_items,
            self.width,
            self.exclude if exclude is None else exclude,
            max_bytes or self.max_bytes,
        )
        return ids

    def ranking(self, ids: np.ndarray) -> dict[str, float]:
        """Metrics of given ``[U, max(ks)]`` top-K item ids of the stage's users (in the order
        of ``queries.users``), e.g. from an index searched elsewhere."""
        return ranking_metrics(
            ids, self.queries.target_offsets, self.queries.target_items, self.n_items, self.ks
        )

    def _metrics(self, score_rows: Callable[[int, int], torch.Tensor]) -> dict[str, float]:
        return self.ranking(self._topk(score_rows))

    @torch.no_grad()
    def user_vectors(
        self, model: torch.nn.Module, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """``[U, D]`` query vectors of the stage's users (histories end before the stage)."""
        q = self.queries
        return query_vectors(
            model, self.split.sequences.items, q.users, q.history_start, q.history_end,
            max_len=self.max_len, batch_size=self.batch_size, device=device,
            **self.times(q.history_end),
        )  # fmt: skip

    def times(self, first_target: np.ndarray) -> dict[str, np.ndarray]:
        """What :func:`query_vectors` needs for a model that reads times: the log's times, and
        each query made at the time of its stage's first target."""
        stamps = self.split.sequences.timestamps
        return {"timestamps": stamps, "at": stamps[first_target]}

    @torch.no_grad()
    def item_vectors(
        self, model: torch.nn.Module, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """``[n_items, D]`` vectors of items ``1..n_items``."""
        return model.encode_items(torch.arange(1, self.n_items + 1, device=device)).float()

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, similarity: Similarity, device: torch.device | str = "cpu"
    ) -> dict[str, float]:
        """Metrics of a model with ``encode_users`` / ``encode_items`` (put in eval mode)."""
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            ctx = distributed.context()
            if ctx.active:
                metrics = self._evaluate_shared(model, similarity, device, ctx)
            else:
                # The towers run at the caller's precision (bf16 under the trainer's autocast),
                # the vectors come out in fp32, and the ranking is computed in fp32.
                users = self.user_vectors(model, device)
                items = self.item_vectors(model, device)
                with torch.autocast(torch.device(device).type, enabled=False):
                    metrics = self.evaluate_vectors(
                        users, items, similarity, interests=model.n_interests
                    )
        finally:
            model.train(was_training)
        self.last_seconds = time.perf_counter() - start
        return metrics

    def _evaluate_shared(
        self,
        model: torch.nn.Module,
        similarity: Similarity,
        device,
        ctx: distributed.Context,
    ) -> dict[str, float]:
        """Under torchrun: each rank ranks a contiguous block of the users, the top-K lists
        are gathered and every rank computes the same metrics from all of them."""
        q = self.queries
        block = np.array_split(np.arange(len(q)), ctx.world)[ctx.rank]
        begin, end = (int(block[0]), int(block[-1]) + 1) if len(block) else (0, 0)
        users = query_vectors(
            model, self.split.sequences.items, q.users[begin:end], q.history_start[begin:end],
            q.history_end[begin:end], max_len=self.max_len, batch_size=self.batch_size,
            device=device, **self.times(q.history_end[begin:end]),
        )  # fmt: skip
        items = self.item_vectors(model, device)
        finite = bool(torch.isfinite(users).all()) and bool(torch.isfinite(items).all())
        if distributed.sizes(float(finite))[:, 0].min() < 1:  # every rank raises alike
            raise DivergedError(
                f"the query or item vectors hold NaN or infinite values ({self.stage} stage): "
                "training diverged; lower train.lr or raise temperature.value"
            )
        exclude = None
        if self.exclude is not None:
            indptr, seen = self.exclude
            exclude = (indptr[begin : end + 1] - indptr[begin], seen[indptr[begin] : indptr[end]])
        index = self.make_index(similarity)
        with torch.autocast(torch.device(device).type, enabled=False):  # ranked in fp32
            ranked = [self._search(index, users, items, model.n_interests, exclude)]
            if not index.is_exact:
                exact = self.make_index(similarity, "exact")
                ranked.append(self._search(exact, users, items, model.n_interests, exclude))
        gathered = [
            distributed.gather(torch.from_numpy(ids).to(device))[0].cpu().numpy() for ids in ranked
        ]
        return self._measured(gathered[0], None if index.is_exact else gathered[1])

    def evaluate_vectors(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        similarity: Similarity,
        *,
        interests: int | None = None,
    ) -> dict[str, float]:
        """Metrics from precomputed user vectors (``[U, D]``, or ``[U, K, D]`` for a model
        that declares ``interests=K``) and ``[n_items, D]`` item vectors, ranked through the
        evaluator's index (measured against the exact index when it is approximate).

        Raises:
            DivergedError: a vector holds NaN or infinity (ranking by it would be noise).
        """
        for what, vectors in (("query", users), ("item", items)):
            if not bool(torch.isfinite(vectors).all()):
                raise DivergedError(
                    f"the {what} vectors hold NaN or infinite values ({self.stage} stage): "
                    "training diverged; lower train.lr or raise temperature.value"
                )
        check_interests(users, interests)
        index = self.make_index(similarity)
        ids = self._search(index, users, items, interests)
        if index.is_exact:
            return self._measured(ids, None)
        exact = self._search(self.make_index(similarity, "exact"), users, items, interests)
        return self._measured(ids, exact)

    def make_index(self, similarity: Similarity, kind: str | None = None, **options: Any) -> Index:
        """An empty index of ``kind`` (default: the evaluator's, with its options); the exact
        index holds at most ``max_bytes`` of scores at once."""
        if kind is None:
            kind, options = self.index, {**self.index_options, **options}
        if kind == "exact":
            options = {"max_bytes": self.max_bytes, **options}
        return make_index(kind, similarity, **options)

    def _search(
        self,
        index: Index,
        users: torch.Tensor,
        items: torch.Tensor,
        interests: int | None,
        exclude: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``[U, max(ks)]`` ids: ``index`` built over the items and searched for the users
        (each of K interests, merged by best score), seen items excluded (``exclude``: the
        stage's by default)."""
        index.build(items, ids=np.arange(1, self.n_items + 1))
        search = index.search if interests is None else index.search_multi
        ids, _ = search(users, self.width, exclude=self.exclude if exclude is None else exclude)
        return ids

    def _measured(self, ids: np.ndarray, exact: np.ndarray | None) -> dict[str, float]:
        """The ranking metrics of ``ids``, and with the exact top-K ``exact`` their recall
        (``index_recall@K``) and the HR and NDCG the exact ranking gives (``exact_hr@K``,
        ``exact_ndcg@K``: what the index costs)."""
        self.last_ids = ids
        metrics = self.ranking(ids)
        if exact is not None:
            exact_metrics = self.ranking(exact)
            for cutoff in self.ks:
                metrics[f"index_recall@{cutoff}"] = recall_at_k(ids, exact, cutoff)
                for name in ("hr", "ndcg"):
                    metrics[f"exact_{name}@{cutoff}"] = exact_metrics[f"{name}@{cutoff}"]
        return metrics

    def evaluate_index(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        similarity: Similarity,
        kind: str,
        *,
        interests: int | None = None,
        **options: Any,
    ) -> dict[str, float]:
        """Metrics with the top-K taken from an index of ``kind`` built over the item vectors,
        always measured against the exact index (an exact one reports recall 1).

        Besides the ranking metrics, reports ``index_recall@K``: the share of the exact top-K
        (seen items masked) that the index also returns, for each K. How fast an index builds
        and searches is the benchmarks' business (``benchmarks/ann.py``).
        """
        check_interests(users, interests)
        ids = self._search(self.make_index(similarity, kind, **options), users, items, interests)
        exact = self._search(self.make_index(similarity, "exact"), users, items, interests)
        return self._measured(ids, exact)

    def evaluate_popularity(self) -> dict[str, float]:
        """The most-popular-unseen baseline: items ranked by their training count."""
        return self.ranking(self.popularity_ids())

    def item_counts(self) -> np.ndarray:
        """int64 ``[n_items + 1]``: training interactions per item id."""
        return np.bincount(self.split.train().items, minlength=self.n_items + 1)

    def popularity_ids(self) -> np.ndarray:
        """``[U, width]`` the most popular unseen items per user (ties towards lower ids)."""
        counts = self.item_counts()[1:]
        # Score = position in a stable popularity order, so ties break towards lower ids.
        order = np.argsort(-counts, kind="stable")
        rank_score = np.empty(self.n_items, dtype=np.float32)
        rank_score[order] = np.arange(self.n_items, 0, -1, dtype=np.float32)
        row = torch.from_numpy(rank_score)

        def score_rows(begin: int, end: int) -> torch.Tensor:
            return row[None, :].expand(end - begin, -1).clone()

        return self._topk(score_rows)

    def outcomes(
        self, ids: np.ndarray | None = None, *, popularity_ids: np.ndarray | None = None
    ) -> Outcomes:
        """Per-user outcomes of the last evaluation (or of ranked ``ids``) beside the
        popularity baseline's (``popularity_ids`` when already ranked): what ``towerkit
        report`` and ``towerkit compare`` read."""
        ids = self.last_ids if ids is None else ids
        if ids is None:
            raise ValueError("nothing evaluated yet: call evaluate first")
        q = self.queries

        def ranks(ranked: np.ndarray) -> np.ndarray:
            return target_ranks(ranked, q.target_offsets, q.target_items)

        top = np.full((len(q), TOP_KEPT), -1, dtype=np.int64)
        width = min(TOP_KEPT, ids.shape[1])
        top[:, :width] = ids[:, :width]
        return Outcomes(
            users=q.users,
            history=q.history_end - q.history_start,
            target_offsets=q.target_offsets,
            targets=q.target_items,
            ranks=ranks(ids),
            popularity_ranks=ranks(
                self.popularity_ids() if popularity_ids is None else popularity_ids
            ),
            top=top,
            depth=ids.shape[1],
            n_items=self.n_items,
            item_counts=self.item_counts(),
        )
