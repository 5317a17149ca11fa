"""The work of a request, encoded (a :class:`Job`), and its answer for a whole micro-batch at
once (:func:`run_jobs`, run in the batcher's worker thread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from towerkit.index import ItemFilter
from towerkit.serve.model import Served, answers


@dataclass
class Job:
    """One query, encoded: a known user (``user`` > 0), a history, or an item (its
    neighbours).

    Attributes:
        served: the model the request started with.
        k: how many items.
        exclude: item ids to leave out.
        where: a filter on item attributes.
        user: a known user's id (0: not a known user's query).
        history: item ids, oldest first, for the user tower.
        features: the raw user side features of a history.
        item: an item's id, whose neighbours are asked for (0: not an item's query).
        times: the history's times, for a model that reads them.
        at: when the query is made, for a model that reads times (None: its default).
    """

    served: Served
    k: int
    exclude: np.ndarray
    where: ItemFilter | None = None
    user: int = 0
    history: np.ndarray | None = None
    features: dict[str, Any] | None = None
    item: int = 0
    times: list[int] | None = None
    at: int | None = None


def run_jobs(jobs: Sequence[Job]) -> list[Any]:
    """Answer jobs together: per model, filter and kind (users or items), one tower call for
    the histories and one search. A group that fails gives its exception to each of its jobs."""
    results: list[Any] = [None] * len(jobs)
    groups: dict[tuple[int, str | None, bool], list[int]] = {}
    for position, job in enumerate(jobs):
        where = None if job.where is None else job.where.expression
        groups.setdefault((id(job.served), where, job.item > 0), []).append(position)
    for (_, _, items), positions in groups.items():
        group = [jobs[p] for p in positions]
        try:
            found = _similar(group) if items else _recommend(group)
        except Exception as err:
            found = [err] * len(group)
        for position, answer in zip(positions, found, strict=True):
            results[position] = answer
    return results


def _recommend(jobs: list[Job]) -> list[list[dict[str, Any]]]:
    retriever = jobs[0].served.retriever
    known = [i for i, job in enumerate(jobs) if job.history is None]
    new = [i for i, job in enumerate(jobs) if job.history is not None]
    blocks = []
    if known:
        users = np.asarray([jobs[i].user for i in known])
        at = [jobs[i].at for i in known]
        if retriever.reads_times and any(when is not None for when in at):
            made = np.asarray([retriever.as_of if when is None else when for when in at])
            blocks.append((known, retriever.tower_queries(users, made)))
        else:
            blocks.append((known, retriever.user_queries(users)))
    if new:
        times = [jobs[i].times for i in new] if retriever.reads_times else None
        blocks.append((new, retriever.history_queries(
            [jobs[i].history for i in new], [jobs[i].features for i in new], times,
            [jobs[i].at for i in new],
        )))  # fmt: skip
    # (B, D) per job, or (B, K, D) for a multi-interest model (searched per interest, merged)
    queries = np.empty((len(jobs), *blocks[0][1].shape[1:]), dtype=np.float32)
    for rows, block in blocks:
        queries[rows] = block
    ks = [job.k for job in jobs]
    recs = retriever.search(queries, max(ks), [job.exclude for job in jobs], jobs[0].where)
    return answers(recs, ks)


def _similar(jobs: list[Job]) -> list[list[dict[str, Any]]]:
    retriever = jobs[0].served.retriever
    ks = [job.k for job in jobs]
    items = np.asarray([job.item for job in jobs])
    recs = retriever.similar(items, max(ks), [job.exclude for job in jobs], jobs[0].where)
    return answers(recs, ks)


__all__ = ["Job", "run_jobs"]
