"""The ranking metrics, in one place: from each target's rank in its user's ranked list, per
user, and their means over users.

A rank is 1-based, 0 when the target is not among the ranked items. For each K:

- ``hr@K``: 1 if any target is in the top K (equal to recall@K with one target);
- ``recall@K``: targets found / number of targets;
- ``ndcg@K``: binary-relevance DCG / ideal DCG, ranks discounted by ``log2(rank + 1)``;
- ``mrr@K``: 1 / rank of the first target found (0 if none in the top K);
- ``precision@K``: targets found / K;
- ``coverage@K`` (of a whole ranking, not per user): distinct items shown / catalogue size.

A target listed twice for one user is one ranked position, counted once. The evaluator's
means (:func:`ranking_metrics`) and the per-user values a saved run's outcomes give
(:meth:`~towerkit.evaluation.outcomes.Outcomes.per_user`) are the same formulas, so they agree.

    >>> ids = np.array([[3, 1, 2], [2, 4, 1]])            # two users' ranked items
    >>> ranks = target_ranks(ids, np.array([0, 1, 2]), np.array([1, 4]))
    >>> ranks.tolist()
    [2, 2]
    >>> per_user(ranks, np.array([0, 1, 2]), "ndcg", 3).round(4).tolist()
    [0.6309, 0.6309]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the metrics defined per user (``towerkit compare`` compares each at each K)
PER_USER = ("hr", "ndcg", "recall", "mrr", "precision")

__all__ = ["PER_USER", "per_user", "ranking_metrics", "target_ranks"]


def target_ranks(
    ids: np.ndarray, target_offsets: np.ndarray, target_items: np.ndarray, chunk: int = 1 << 16
) -> np.ndarray:
    """int32 ``[n_targets]``: each target's 1-based position in its user's ranked ``ids``
    (``[U, depth]``), 0 when it is not among them. ``chunk`` targets at a time (a
    ``[chunk, depth]`` comparison)."""
    rows = np.repeat(np.arange(len(ids), dtype=np.int64), np.diff(target_offsets))
    ranks = np.zeros(len(target_items), dtype=np.int32)
    for begin in range(0, len(target_items), chunk):
        part = slice(begin, begin + chunk)
        equal = ids[rows[part]] == target_items[part, None]  # (chunk, depth)
        ranks[part] = np.where(equal.any(1), equal.argmax(1) + 1, 0)
    return ranks


def per_user(ranks: np.ndarray, offsets: np.ndarray, metric: str, k: int) -> np.ndarray:
    """float64 ``[U]``: ``metric`` (one of :data:`PER_USER`) at ``k`` for each user, from the
    ranks of their targets (user ``i``'s are ``ranks[offsets[i]:offsets[i + 1]]``)."""
    return _at_k(ranks, offsets, k, (metric,))[metric]


def ranking_metrics(
    topk_ids: np.ndarray,
    target_offsets: np.ndarray,
    target_items: np.ndarray,
    n_items: int,
    ks: Sequence[int] = (10, 50),
) -> dict[str, float]:
    """The means over users of every :data:`PER_USER` metric, and the coverage, at each K,
    from top-K lists.

    Args:
        topk_ids: int64 ``[U, K_max]`` ranked item ids per user (-1: padding).
        target_offsets, target_items: each user's targets, CSR.
    """
    width = topk_ids.shape[1]
    if max(ks) > width:
        raise ValueError(f"top-K lists of width {width} cannot give metrics at K={max(ks)}")
    ranks = target_ranks(topk_ids, target_offsets, target_items)
    out: dict[str, float] = {}
    for k in ks:
        values = _at_k(ranks, target_offsets, k, PER_USER)
        for metric in PER_USER:
            out[f"{metric}@{k}"] = float(values[metric].mean())
        shown = np.unique(topk_ids[:, :k])
        out[f"coverage@{k}"] = float((shown > 0).sum() / n_items)  # -1 padding not counted
    return out


def _at_k(
    ranks: np.ndarray, offsets: np.ndarray, k: int, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    unknown = set(metrics) - set(PER_USER)
    if unknown:
        raise ValueError(
            f"unknown per-user metric {sorted(unknown)[0]!r}; use {', '.join(PER_USER)}"
        )
    n_users = len(offsets) - 1
    n_targets = np.diff(offsets)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), n_targets)
    hit = (ranks > 0) & (ranks <= k)
    # A target listed twice is one ranked position: each (user, rank) counts once.
    keys = np.unique(rows[hit] * np.int64(k + 1) + ranks[hit])
    hit_rows, hit_ranks = keys // (k + 1), keys % (k + 1)
    found = np.bincount(hit_rows, minlength=n_users).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for metric in metrics:
        if metric == "hr":
            out[metric] = (found > 0).astype(np.float64)
        elif metric == "recall":
            out[metric] = found / n_targets
        elif metric == "precision":
            out[metric] = found / k
        elif metric == "ndcg":
            discounts = 1.0 / np.log2(np.arange(2, k + 2))
            gains = np.bincount(hit_rows, weights=discounts[hit_ranks - 1], minlength=n_users)
            out[metric] = gains / np.cumsum(discounts)[np.minimum(n_targets, k) - 1]
        else:  # mrr
            first = np.full(n_users, np.inf)
            np.minimum.at(first, hit_rows, hit_ranks.astype(np.float64))
            out[metric] = np.where(np.isfinite(first), 1.0 / first, 0.0)
    return out
