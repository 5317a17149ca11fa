"""What a server holds between requests: the model served (swapped whole on reload), its
metrics, the micro-batcher the request path submits jobs to, and the reload itself.

Every request takes the model it starts with (``app.state.served``), so a reload swaps the
model atomically: requests in flight finish on the old one, which is retired later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from towerkit import storage
from towerkit.errors import TowerkitError
from towerkit.retrieval.export import ExportError
from towerkit.retrieval.retriever import coerce_raw
from towerkit.serve.batching import MicroBatcher
from towerkit.serve.jobs import Job, run_jobs
from towerkit.serve.loading import is_run, load_export, load_served
from towerkit.serve.model import Served
from towerkit.storage import is_url

logger = logging.getLogger(__name__)


class Metrics:
    """The server's Prometheus metrics (``/metrics``): requests, latency, batch sizes and the model
    served."""

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
        self.upserts = Counter(
            "towerkit_items_upserted", "Items added or changed live", registry=self.registry
        )

        # The labelled children, found once each (labels() takes a lock and builds a key).
        self._counts: dict[tuple[str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count a request answered and its latency."""
        latency = self._latencies.get(endpoint)
        if latency is None:
            latency = self._latencies[endpoint] = self.latency.labels(endpoint)
        count = self._counts.get((endpoint, status))
        if count is None:
            count = self._counts[endpoint, status] = self.requests.labels(endpoint, str(status))
        latency.observe(seconds)
        count.inc()

    def serving(self, served: Served) -> None:
        """Mark ``served`` as the model now served."""
        self.model.clear()
        self.model.labels(served.version, served.index, served.manifest["model"]).set(1)


#: the longest a batch may hold the event loop (as its model's probe predicts it): handing a
#: by-id batch to the worker thread and back cost more CPU than running it, and 20% of the
#: requests/s (benchmarks/serve_load.py); a millisecond is what a request waits for a turn of
#: the loop under load anyway
INLINE_SECONDS = 1e-3


def cheap(jobs: Sequence[Job]) -> bool:
    """Whether a batch runs on the event loop rather than in the worker, by the seconds its
    model's probe measured for each kind of query (a model without them: never)."""
    counts: dict[tuple[int, str], int] = {}
    for job in jobs:
        key = (id(job.served), "history" if job.history is not None else "user")
        counts[key] = counts.get(key, 0) + 1
    served = {id(job.served): job.served for job in jobs}
    total = 0.0
    for (model, kind), n in counts.items():
        seconds = served[model].seconds.get(kind)
        if seconds is None:
            return False
        total += seconds[0] + n * seconds[1]
    return total <= INLINE_SECONDS


def _freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach: the loaded model
    (vocabularies, histories, titles: millions of objects) would otherwise be traversed by each
    full collection, a pause of a hundred milliseconds or more in the middle of requests. At
    start only: it collects first, which a server answering requests cannot afford."""
    gc.collect()
    gc.freeze()


def retire(old: Served) -> None:
    """Close a replaced model. Its objects stay frozen (handing them back to the collector
    meant a full collection of the whole heap on the event loop: 0.7 s of stalled requests
    after 10 reloads); as they are let go, reference counting frees them all the same."""
    old.close()


class ServerState:
    """The server's state: the model (kept in ``state.served``, the app's state, where every
    request reads it), metrics, the micro-batcher, and the reload of another directory.

    Args:
        state: the app's ``app.state``.
        source: the run or export directory served first (loaded now: a broken directory fails
            here, before any request).
        index, index_options: the index to search (default: the export's, or the run's).
        threads: the tower's and the index's threads (see :mod:`towerkit.serve.threads`).
    """

    def __init__(
        self,
        state: Any,
        source: str | Path,
        *,
        index: str | None,
        index_options: dict[str, Any],
        threads: int,
    ) -> None:
        self.state, self.index, self.options = state, index, dict(index_options)
        self.threads = threads
        self.state.served = load_served(source, index, threads, **self.options)
        _freeze_heap()
        self.metrics = Metrics()
        self.metrics.serving(self.served)
        self.batcher = MicroBatcher(run_jobs, inline=cheap)
        self._reload_lock = asyncio.Lock()

    @property
    def served(self) -> Served:
        """The model served now."""
        return self.state.served

    async def reload(self, path: str) -> Served:
        """Load ``path`` off the event loop, probe it, and swap it in; a directory that cannot
        be served is refused (422) and the old model serves on. A run directory is exported by
        another process (``towerkit export``), at a lower priority, so that the export's work
        stalls no request."""
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            try:
                new = await self._load(path, loop)
            except (TowerkitError, ValueError, KeyError, OSError) as err:
                self.metrics.reloads.labels("refused").inc()
                logger.warning("reload of %s refused: %s", path, err)
                message = f"reload refused, still serving the old model: {err}"
                raise HTTPException(422, message) from None
            old, self.state.served = self.served, new
            gc.freeze()  # the new model's objects out of the collector's reach (no collection)
            self.metrics.serving(new)
            self.metrics.reloads.labels("done").inc()
            logger.info("reloaded %s (model %s)", path, new.version)
            # Requests in flight hold the old model; it goes once they had time to end.
            loop.call_later(30.0, retire, old)
            return new

    async def upsert_items(self, items: Sequence[Any]) -> dict[str, Any]:
        """Add new items and change known ones (``/admin/items``), live: their vectors (given,
        or the exported item tower's on their features) enter the index without a restart, and
        the new model is swapped in whole, so a request sees all of them or none. An index that
        cannot add (Annoy) is built anew off the event loop meanwhile; the old one serves until
        then.

        Raises:
            HTTPException: 422 naming what cannot be taken (nothing changes then).
        """
        async with self._reload_lock:
            served = self.served
            loop = asyncio.get_running_loop()
            try:
                new, added = await loop.run_in_executor(None, upserted, served, items)
            except (TowerkitError, ValueError, KeyError) as err:
                raise HTTPException(422, f"items refused: {_one_line(err)}") from None
            self.state.served = new  # (the old one shares its index and files: not retired)
            gc.freeze()
            self.metrics.upserts.inc(len(items))
            logger.info("%d item(s) upserted (%d new)", len(items), added)
            return {
                "added": added,
                "updated": len(items) - added,
                "items": new.n_items,
                "index": new.index,
                "rebuilt": not served.retriever.index.upserts,
            }

    async def _load(self, where: str, loop: asyncio.AbstractEventLoop) -> Served:
        source: str | Path = where if is_url(where) else Path(where)
        if is_url(where):  # what is published there now (a newer export: a new snapshot)
            path = await loop.run_in_executor(
                None, lambda: storage.pull(where, what="run or export")
            )
        else:
            path = Path(where)
        if not is_run(path):
            return await loop.run_in_executor(
                None, lambda: load_export(path, source, self.index, self.threads, **self.options)
            )
        from towerkit.runs import RunDir

        # An unfinished run is refused here, at once, not by a child process minutes later.
        await loop.run_in_executor(None, lambda: RunDir(path).require_finished())
        tmp = Path(tempfile.mkdtemp(prefix="towerkit-serve-"))
        try:
            await export_elsewhere(path, tmp / "export", self.index, self.options)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return await loop.run_in_executor(
            None,
            lambda: load_export(
                tmp / "export", source, self.index, self.threads, tmp=tmp, **self.options
            ),
        )

    async def hangup(self) -> None:
        """SIGHUP: reload the directory served now (a refusal is logged; the old model serves
        on)."""
        with contextlib.suppress(HTTPException):
            await self.reload(str(self.served.source))

    def close(self) -> None:
        """Stop the micro-batcher and release the model served."""
        self.batcher.close()
        self.served.close()


def _one_line(err: BaseException) -> str:
    text = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
    return text.splitlines()[0] if text else type(err).__name__


def upserted(served: Served, items: Sequence[Any]) -> tuple[Served, int]:
    """``served`` with ``items`` (:class:`~towerkit.serve.bodies.ItemUpsert`) added or
    changed, and how many were new: a new :class:`Served` over a new retriever (see
    :meth:`~towerkit.retrieval.Retriever.with_items`)."""
    import pandas as pd

    retriever = served.retriever
    raw = coerce_raw(retriever.item_vocab, [item.id for item in items])
    if len(set(raw.tolist())) != len(raw):
        raise ValueError("an item is listed more than once")
    dim = retriever.item_vectors.shape[1]
    vectors = np.zeros((len(items), dim), dtype=np.float32)
    by_features = [i for i, item in enumerate(items) if item.features is not None]
    for i, item in enumerate(items):
        if item.vector is not None:
            if len(item.vector) != dim:
                raise ValueError(f"item {item.id!r}: a vector of {len(item.vector)} numbers; "
                                 f"the index holds {dim}")  # fmt: skip
            vectors[i] = item.vector
    if by_features:
        vectors[by_features] = _tower_vectors(served, [items[i] for i in by_features],
                                              raw[by_features])  # fmt: skip
    if not np.isfinite(vectors).all():
        raise ValueError("a vector holds NaN or infinite numbers")
    known = retriever.item_vocab.encode(raw, unknown="padding") > 0
    attributes = pd.DataFrame([item.attributes for item in items])
    titles = [item.title for item in items]
    index = retriever.index
    new = retriever.with_items(
        raw, vectors, attributes if len(attributes.columns) else None,
        titles=titles if any(t is not None for t in titles) else None,
        rebuild=not index.upserts,
    )  # fmt: skip
    fresh = dataclasses.replace(served, retriever=new)
    fresh.catalogue  # noqa: B018  (built here, off the event loop, not by the next /items)
    return fresh, int((~known).sum())


def _tower_vectors(served: Served, items: Sequence[Any], raw: np.ndarray) -> np.ndarray:
    """The exported item tower's vectors of items given by their raw side features (a known
    item on its trained row, a new one on the unknown row)."""
    import pandas as pd

    from towerkit.retrieval.embed import encode_item_features

    tower = served.item_tower
    if tower is None:
        raise ValueError("this export has no item tower (exported before towerkit wrote one): "
                         "send vectors, or serve a new export")  # fmt: skip
    table = tower.item_features
    if not table.values:
        raise ValueError(f"the {served.manifest['model']} model's item tower reads item ids "
                         "only, so features give a new item no vector: send vectors")  # fmt: skip
    frame = pd.DataFrame([item.features for item in items])
    missing = [name for name in table.values if name not in frame.columns]
    if missing:
        raise ValueError(f"no value for the item feature(s) {', '.join(missing)} "
                         f"(the model reads: {', '.join(table.values)})")  # fmt: skip
    values, _ = encode_item_features(table, frame)
    codes = served.retriever.item_vocab.encode(raw, unknown="padding")
    codes = np.where(codes > served.retriever.model_items, 0, codes)  # added live: no row either
    return tower(codes, values)


async def export_elsewhere(
    run: Path, out: Path, index: str | None, options: dict[str, Any]
) -> None:
    """``towerkit export RUN --out OUT`` in a child process of lower priority, on one thread.

    Raises:
        ExportError: the export failed (its message, as the command printed it).
    """
    command = [sys.executable, "-m", "towerkit.cli", "-q", "export", str(run), "--out", str(out)]
    if index is not None:
        command += ["--index", index]
    for key, value in options.items():  # YAML reads JSON's values back as they were
        command += ["-o", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
    )
    with contextlib.suppress(OSError):  # a lower priority is a courtesy, not a requirement
        os.setpriority(os.PRIO_PROCESS, child.pid, 10)
    _, stderr = await child.communicate()
    if child.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines() or ["(no message)"]
        said = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        raise ExportError(f"{run}: the export failed: {said[-1] if said else lines[-1]}")
