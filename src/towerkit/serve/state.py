"""What a server holds between requests: the model served (swapped whole on reload), its
metrics, the micro-batcher the request path submits jobs to, and the reload itself.

Every request takes the model it starts with (``app.state.served``), so a reload swaps the
model atomically: requests in flight finish on the old one, which is retired later.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from towerkit.errors import TowerkitError
from towerkit.index import ItemFilter
from towerkit.serve.batching import MicroBatcher
from towerkit.serve.model import Served, load_served, to_items

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One query, encoded: a known user (``user`` > 0) or a history."""

    served: Served
    user: int
    history: np.ndarray | None
    features: dict[str, Any] | None
    exclude: np.ndarray
    k: int
    where: ItemFilter | None = None


def run_jobs(jobs: Sequence[Job]) -> list[Any]:
    """Answer jobs together: one tower call for the histories, one search per model and
    filter."""
    results: list[Any] = [None] * len(jobs)
    by_model: dict[tuple[int, str | None], list[int]] = {}
    for position, job in enumerate(jobs):
        where = None if job.where is None else job.where.expression
        by_model.setdefault((id(job.served), where), []).append(position)
    for positions in by_model.values():
        try:
            _run_group([jobs[p] for p in positions], positions, results)
        except Exception as err:
            for p in positions:
                results[p] = err
    return results


def _run_group(jobs: list[Job], positions: list[int], results: list[Any]) -> None:
    retriever = jobs[0].served.retriever
    known = [i for i, job in enumerate(jobs) if job.history is None]
    new = [i for i, job in enumerate(jobs) if job.history is not None]
    blocks = []
    if known:
        blocks.append((known, retriever.user_queries(np.asarray([jobs[i].user for i in known]))))
    if new:
        blocks.append((new, retriever.history_queries(
            [jobs[i].history for i in new], [jobs[i].features for i in new]
        )))  # fmt: skip
    # [D] per job, or [K, D] for a multi-interest model (searched per interest, merged)
    queries = np.empty((len(jobs), *blocks[0][1].shape[1:]), dtype=np.float32)
    for rows, block in blocks:
        queries[rows] = block
    recs = retriever.search(
        queries, max(job.k for job in jobs), [job.exclude for job in jobs], jobs[0].where
    )
    for row, (job, position) in enumerate(zip(jobs, positions, strict=True)):
        results[position] = to_items(recs, row, job.k)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "towerkit_requests", "Requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "towerkit_request_seconds", "Request latency by endpoint", ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )  # fmt: skip
        self.model = Gauge(
            "towerkit_model_info", "The model served (value 1)", ["version", "index", "model"],
            registry=self.registry,
        )  # fmt: skip
        self.reloads = Counter(
            "towerkit_reloads", "Reloads by outcome", ["outcome"], registry=self.registry
        )

    def serving(self, served: Served) -> None:
        self.model.clear()
        self.model.labels(served.version, served.index, served.manifest["model"]).set(1)


def _freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach: the loaded model
    (vocabularies, histories, titles: millions of objects) would otherwise be traversed by each
    full collection, a pause of a hundred milliseconds or more in the middle of requests."""
    gc.collect()
    gc.freeze()


def retire(old: Served) -> None:
    """Close a replaced model and give its objects back to the collector (frozen, a cycle in
    them would never be freed); once this callback has let go of it, what is still alive is
    frozen again."""
    old.close()
    gc.unfreeze()
    asyncio.get_running_loop().call_soon(_freeze_heap)


class ServerState:
    """The server's state: the model (kept in ``state.served``, the app's state, where every
    request reads it), metrics, the micro-batcher, and the reload of another directory.

    Args:
        state: the app's ``app.state``.
        source: the run or export directory served first (loaded now: a broken directory fails
            here, before any request).
        index, index_options: the index to search (default: the export's, or the run's).
        max_wait: the micro-batcher's window.
    """

    def __init__(
        self,
        state: Any,
        source: str | Path,
        *,
        index: str | None,
        index_options: dict[str, Any],
        max_wait: float,
    ) -> None:
        self.state, self.index, self.options = state, index, dict(index_options)
        self.state.served = load_served(source, index, **self.options)
        _freeze_heap()
        self.metrics = Metrics()
        self.metrics.serving(self.served)
        self.batcher = MicroBatcher(run_jobs, max_wait=max_wait)
        self._reload_lock = asyncio.Lock()

    @property
    def served(self) -> Served:
        return self.state.served

    async def reload(self, path: str) -> Served:
        """Load ``path`` off the event loop and swap it in; a directory that cannot be served
        is refused (422) and the old model serves on."""
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(
                    None, lambda: load_served(path, self.index, **self.options)
                )
            except (TowerkitError, ValueError, KeyError, OSError) as err:
                self.metrics.reloads.labels("refused").inc()
                logger.warning("reload of %s refused: %s", path, err)
                message = f"reload refused, still serving the old model: {err}"
                raise HTTPException(422, message) from None
            old, self.state.served = self.served, new
            _freeze_heap()
            self.metrics.serving(new)
            self.metrics.reloads.labels("done").inc()
            logger.info("reloaded %s (model %s)", path, new.version)
            # Requests in flight hold the old model; it goes once they had time to end.
            loop.call_later(30.0, retire, old)
            return new

    async def hangup(self) -> None:
        """SIGHUP: reload the directory served now (a refusal is logged; the old model serves
        on)."""
        with contextlib.suppress(HTTPException):
            await self.reload(str(self.served.source))

    def close(self) -> None:
        self.batcher.close()
        self.served.close()
