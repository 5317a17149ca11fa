"""What an evaluation found for each user: the rank of every target, kept so that any metric at
any K up to the kept depth, any bucket of users and any paired comparison can be computed later
without the model or the data.

A finished run writes the test stage's outcomes as ``outcomes.parquet``: one row per test user,
with the user's history length, targets, the rank of each target in the model's ranking and in
the popularity baseline's (1-based; 0 beyond the kept depth), and the model's top items. Reading
it needs numpy and pyarrow only (the report and ``towerkit compare`` load no model).

Per-user metrics come from the formulas of :mod:`towerkit.evaluation.metrics`, which the
evaluator's means use too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from towerkit.evaluation.metrics import per_user, target_ranks

#: the metrics computed per user (``towerkit compare`` compares each at each K)
PER_USER_METRICS = ("hr", "ndcg", "recall", "mrr")
#: how many of the model's top items are kept per user (what the report's coverage, Gini and
#: popularity charts describe)
TOP_KEPT = 10

__all__ = ["PER_USER_METRICS", "TOP_KEPT", "Outcomes", "target_ranks"]


@dataclass(frozen=True)
class Outcomes:
    """One stage's per-user outcomes (rows in the order of the evaluated users).

    Attributes:
        users: int64 ``[U]`` encoded user ids.
        history: int64 ``[U]`` history length before the stage.
        target_offsets: int64 ``[U + 1]``: user ``i``'s targets are
            ``targets[target_offsets[i]:target_offsets[i + 1]]``.
        targets: int64 encoded target items.
        ranks: int32, aligned with ``targets``: the model's rank of each (0: beyond ``depth``).
        popularity_ranks: the same for the most-popular-unseen baseline.
        top: int64 ``[U, TOP_KEPT]`` the model's first items per user.
        depth: how many ranked items the ranks cover.
        n_items: the catalogue size.
        item_counts: int64 ``[n_items + 1]`` training interactions per item (index 0 unused).
    """

    users: np.ndarray
    history: np.ndarray
    target_offsets: np.ndarray
    targets: np.ndarray
    ranks: np.ndarray
    popularity_ranks: np.ndarray
    top: np.ndarray
    depth: int
    n_items: int
    item_counts: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_targets(self) -> np.ndarray:
        """Targets per user."""
        return np.diff(self.target_offsets)

    # -- per-user metrics -------------------------------------------------------------------

    def per_user(self, metric: str, k: int, *, popularity: bool = False) -> np.ndarray:
        """float64 ``[U]``: ``metric`` (hr, ndcg, recall, mrr, precision) at ``k`` per user,
        of the model or (``popularity``) of the popularity baseline."""
        if not 1 <= k <= self.depth:
            raise ValueError(f"{metric}@{k}: the outcomes keep ranks up to {self.depth}")
        ranks = self.popularity_ranks if popularity else self.ranks
        return per_user(ranks, self.target_offsets, metric, k)

    def curve(self, metric: str, max_k: int | None = None, *, popularity: bool = False):
        """float64 ``[max_k]``: the mean of ``metric`` at K = 1..max_k (hr, ndcg, recall)."""
        max_k = min(max_k or self.depth, self.depth)
        ranks = self.popularity_ranks if popularity else self.ranks
        return np.array([per_user(ranks, self.target_offsets, metric, k).mean()
                         for k in range(1, max_k + 1)])  # fmt: skip

    # -- the file -----------------------------------------------------------------------------

    def to_table(self) -> pa.Table:
        """The outcomes as the Arrow table ``outcomes.parquet`` stores (lists per user)."""

        def lists(values: np.ndarray, dtype) -> pa.Array:
            return pa.ListArray.from_arrays(pa.array(self.target_offsets.astype(np.int32)),
                                            pa.array(values.astype(dtype)))  # fmt: skip

        top_offsets = np.arange(len(self) + 1, dtype=np.int32) * self.top.shape[1]
        table = pa.table({
            "user": pa.array(self.users.astype(np.int64)),
            "history": pa.array(self.history.astype(np.int32)),
            "targets": lists(self.targets, np.int32),
            "ranks": lists(self.ranks, np.int32),
            "popularity_ranks": lists(self.popularity_ranks, np.int32),
            "top": pa.ListArray.from_arrays(pa.array(top_offsets),
                                            pa.array(self.top.ravel().astype(np.int32))),
        })  # fmt: skip
        meta = {"depth": self.depth, "n_items": self.n_items,
                "item_counts": self.item_counts.astype(int).tolist()}  # fmt: skip
        return table.replace_schema_metadata({"towerkit": json.dumps(meta)})

    @classmethod
    def read(cls, path: Path) -> Outcomes:
        """Raises ValueError (naming the file) for a file that is not an outcomes table."""
        try:
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[b"towerkit"])
            targets = table.column("targets").combine_chunks()
            top = table.column("top").combine_chunks()

            def flat(name: str) -> np.ndarray:
                return table.column(name).combine_chunks().flatten().to_numpy().astype(np.int64)

            offsets = targets.offsets.to_numpy().astype(np.int64)
            return cls(
                users=table.column("user").to_numpy(),
                history=table.column("history").to_numpy().astype(np.int64),
                target_offsets=offsets - offsets[0],
                targets=flat("targets"),
                ranks=flat("ranks").astype(np.int32),
                popularity_ranks=flat("popularity_ranks").astype(np.int32),
                top=top.flatten().to_numpy().astype(np.int64).reshape(len(table), -1),
                depth=int(meta["depth"]),
                n_items=int(meta["n_items"]),
                item_counts=np.asarray(meta["item_counts"], dtype=np.int64),
            )
        except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as err:
            raise ValueError(f"{path}: not a readable outcomes table ({err})") from None


# -- buckets ------------------------------------------------------------------------------------


def popularity_tiers(item_counts: np.ndarray) -> np.ndarray:
    """int ``[n_items + 1]``: 0 head, 1 torso, 2 tail for each item id. Items are sorted by
    training interactions; the head is the most popular items that together hold the first
    third of all interactions, the torso the next third, the tail the rest (items never seen
    in training included)."""
    counts = item_counts[1:].astype(np.float64)
    order = np.argsort(-counts, kind="stable")
    total = counts.sum()
    before = np.cumsum(counts[order]) - counts[order]  # interactions of more popular items
    share = before / total if total else np.ones_like(before)
    tier_sorted = np.where(share < 1 / 3, 0, np.where(share < 2 / 3, 1, 2))
    tiers = np.empty(len(counts) + 1, dtype=np.int64)
    tiers[0] = 2
    tiers[1:][order] = tier_sorted
    return tiers


TIER_NAMES = ("head", "torso", "tail")


def popularity_percentiles(item_counts: np.ndarray) -> np.ndarray:
    """float ``[n_items + 1]``: each item's popularity percentile in the catalogue (100: the
    most popular; ties share the mean of their positions)."""
    counts = item_counts[1:]
    order = np.argsort(counts, kind="stable")
    ranks = np.empty(len(counts), dtype=np.float64)
    ranks[order] = np.arange(1, len(counts) + 1)
    # average the positions of tied counts
    _, inverse = np.unique(counts, return_inverse=True)
    mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    out = np.zeros(len(counts) + 1)
    out[1:] = 100.0 * mean_rank[inverse] / max(len(counts), 1)
    return out


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: all equal; towards 1: all on one)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def quantile_buckets(values: np.ndarray, n: int = 4) -> tuple[np.ndarray, list[str]]:
    """Each value's bucket among ``n`` quantile buckets of ``values`` (fewer where quantiles
    coincide) and a label per bucket (its value range)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n + 1)).round().astype(np.int64))
    if len(edges) < 2:
        return np.zeros(len(values), dtype=np.int64), [f"{int(values.min())}"]
    inner = edges[1:-1]
    bucket = np.searchsorted(inner, values, side="right")
    labels = []
    for i in range(len(edges) - 1):
        low = edges[i] if i == 0 else edges[i] + 1
        labels.append(f"{low}-{edges[i + 1]}")
    return bucket, labels


# -- paired comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """A paired difference of one metric (B minus A) over the same users."""

    metric: str
    mean_a: float
    mean_b: float
    mean: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)


def bootstrap_intervals(
    differences: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_cells: int = 2**24,
) -> tuple[np.ndarray, np.ndarray]:
    """Paired bootstrap percentile intervals of the means of per-user ``differences``
    (``[M, U]``: M metrics of the same U users, or ``[U]``): ``resamples`` times, draw U users
    with replacement (one draw for every metric) and take each metric's mean difference.

    The draws are made a block of resamples at a time (at most ``max_cells`` indices), in the
    order a loop drawing one resample at a time from the same generator makes them.

    Returns:
        ``(low, high)``, each ``[M]`` (floats for a ``[U]`` input).
    """
    d = np.asarray(differences, dtype=np.float64)
    single = d.ndim == 1
    d = np.atleast_2d(d)
    n = d.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((len(d), resamples))
    chunk = max(1, min(resamples, max_cells // max(n, 1)))
    for begin in range(0, resamples, chunk):
        size = min(chunk, resamples - begin)
        idx = rng.integers(0, n, size=(size, n))
        means[:, begin : begin + size] = d[:, idx].mean(-1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha], axis=1)
    if single:
        return float(low[0]), float(high[0])
    return low, high


def paired_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test (scipy's ``ttest_rel``); 1.0 where the
    differences are all equal (nothing to test)."""
    from scipy import stats

    d = b - a
    if np.allclose(d, d[0] if len(d) else 0.0):
        return 1.0 if not len(d) or d[0] == 0 else 0.0
    return float(stats.ttest_rel(b, a).pvalue)


def compare_outcomes(
    a: Outcomes,
    b: Outcomes,
    ks: Sequence[int],
    *,
    b_popularity: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = PER_USER_METRICS,
) -> list[Difference]:
    """Per-user paired differences (B - A) of each metric at each K, with a bootstrap interval
    and a paired t-test. ``b_popularity``: B is A's popularity baseline.

    Raises:
        ValueError: the two hold different users or targets (not the same test stage).
    """
    if not (np.array_equal(a.users, b.users) and np.array_equal(a.targets, b.targets)):
        raise ValueError("the two evaluations hold different test users or targets")
    names, xs, ys = [], [], []
    for k in ks:
        for metric in metrics:
            names.append(f"{metric}@{k}")
            xs.append(a.per_user(metric, k))
            ys.append(b.per_user(metric, k, popularity=b_popularity))
    x, y = np.array(xs), np.array(ys)
    low, high = bootstrap_intervals(y - x, resamples=resamples, seed=seed)
    return [
        Difference(name, float(x[i].mean()), float(y[i].mean()), float((y[i] - x[i]).mean()),
                   float(low[i]), float(high[i]), paired_p_value(x[i], y[i]), x.shape[1])
        for i, name in enumerate(names)
    ]  # fmt: skip
