"""The HTTP server: FastAPI over one :class:`~towerkit.serve.model.Served` model.

Endpoints (OpenAPI at ``/docs``): ``POST /recommend``, ``POST /recommend/batch``,
``POST /similar``, ``GET /items`` (autocomplete), ``GET /users/{user}/history``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` (Prometheus), ``POST /admin/reload`` (with ``--admin-token``)
and ``GET /`` (a page to look at the model).

Every request takes the model it starts with, so a reload swaps the model atomically: requests
in flight finish on the old one. Bad requests are 4xx that name what is wrong; a 500 is a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import signal
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from towerkit.errors import TowerkitError
from towerkit.retrieval import encode_user_features
from towerkit.serve.batching import MicroBatcher
from towerkit.serve.model import Served, load_served, to_items

logger = logging.getLogger(__name__)

RawId = str | int
FeatureValue = str | int | float | list[str | int]
MAX_BODY = 1 << 20  # bytes
MAX_BATCH_QUERIES = 1000


# --------------------------------------------------------------------------------------------
# Request and response bodies
# --------------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Body):
    """A known user, or a history of items (with optional side features) for anyone else."""

    user: RawId | None = Field(default=None, description="a known user's raw id")
    history: list[RawId] | None = Field(
        default=None, description="raw item ids, oldest first (the last max_len are read)"
    )
    features: dict[str, FeatureValue | None] | None = Field(
        default=None, description="raw user side features of a history request"
    )
    k: int = Field(default=10, description="how many items: 1 to min(1000, catalogue)")
    exclude: list[RawId] = Field(default_factory=list, description="raw item ids to leave out")
    filter_seen: bool = Field(
        default=True,
        validation_alias=AliasChoices("filter_seen", "exclude_seen"),
        description="leave the user's (or the history's) own items out of the results "
        "(exclude_seen, its earlier name, is still read)",
    )

    @model_validator(mode="after")
    def _one_query(self) -> RecommendRequest:
        if (self.user is None) == (self.history is None):
            raise ValueError("give either user or history")
        if self.features is not None and self.history is None:
            raise ValueError("features describe the user of a history request")
        return self


class Item(BaseModel):
    id: RawId
    title: str | None
    score: float


class RecommendResponse(BaseModel):
    items: list[Item]
    model_version: str
    index: str
    history_truncated: bool = Field(
        default=False, description="the history was longer than max_len: its last max_len read"
    )


class BatchRequest(_Body):
    queries: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class SimilarRequest(_Body):
    item: RawId
    k: int = 10
    exclude: list[RawId] = Field(default_factory=list)


class ReloadRequest(_Body):
    path: str = Field(description="a run or export directory on the server's machine")


# --------------------------------------------------------------------------------------------
# Work done in batches
# --------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One query, encoded: a known user (``user`` > 0) or a history."""

    served: Served
    user: int
    history: np.ndarray | None
    features: dict[str, Any] | None
    exclude: np.ndarray
    k: int


def run_jobs(jobs: Sequence[Job]) -> list[Any]:
    """Answer jobs together: one tower call for the histories, one search per model."""
    results: list[Any] = [None] * len(jobs)
    by_model: dict[int, list[int]] = {}
    for position, job in enumerate(jobs):
        by_model.setdefault(id(job.served), []).append(position)
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
    recs = retriever.search(queries, max(job.k for job in jobs), [job.exclude for job in jobs])
    for row, (job, position) in enumerate(zip(jobs, positions, strict=True)):
        results[position] = to_items(recs, row, job.k)


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


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


def _encode_items(served: Served, raw: Sequence[RawId], what: str) -> np.ndarray:
    try:
        return served.retriever.encode_histories([list(raw)])[0]
    except KeyError as err:
        raise HTTPException(422, f"{what}: {_message(err)}") from None


def _message(err: Exception) -> str:
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


def _check_k(served: Served, k: int) -> None:
    if not 1 <= k <= served.max_k:
        raise HTTPException(422, f"k must lie in [1, {served.max_k}], got {k}")


def _job(served: Served, request: RecommendRequest) -> tuple[Job, bool]:
    """Validate and encode one request (raise 4xx naming what is wrong)."""
    _check_k(served, request.k)
    retriever = served.retriever
    exclude = _encode_items(served, request.exclude, "exclude")
    if request.user is not None:
        try:
            (user,) = retriever.encode_users([request.user])
        except KeyError as err:
            raise HTTPException(404, _message(err)) from None
        if request.filter_seen:
            exclude = np.concatenate([exclude, retriever.seen(np.asarray([user]))[0]])
        return Job(served, int(user), None, None, exclude, request.k), False
    if not request.history:
        raise HTTPException(422, "history is empty: give at least one item")
    history = _encode_items(served, request.history, "history")
    features = request.features or None
    if features is not None:
        try:  # the names and values are checked now, not in the batch
            encode_user_features(retriever.user_features, [features])
        except KeyError as err:
            raise HTTPException(422, _message(err)) from None
    if request.filter_seen:
        exclude = np.concatenate([exclude, history])
    truncated = len(history) > served.max_len
    return Job(served, 0, history, features, exclude, request.k), truncated


class Observe:
    """ASGI middleware: refuses a body declared larger than ``max_body`` (413) and counts every
    request by route template and status, with its latency. Plain ASGI rather than
    ``@app.middleware("http")``, whose per-request task and stream cost a third of an id
    request's time."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope["headers"]).get(b"content-length", b"")
        if size.isdigit() and int(size) > self.max_body:
            self.metrics.requests.labels("(too large)", "413").inc()
            detail = f"the body is {int(size)} bytes; at most {self.max_body}"
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            # The route's template (/users/{user}/history), not the path: labels stay few.
            endpoint = getattr(scope.get("route"), "path", "(no route)")
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            self.metrics.requests.labels(endpoint, str(status)).inc()


def _freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach: the loaded model
    (vocabularies, histories, titles: millions of objects) would otherwise be traversed by each
    full collection, a pause of a hundred milliseconds or more in the middle of requests."""
    gc.collect()
    gc.freeze()


def _retire(old: Served) -> None:
    """Close a replaced model and give its objects back to the collector (frozen, a cycle in
    them would never be freed); once this callback has let go of it, what is still alive is
    frozen again."""
    old.close()
    gc.unfreeze()
    asyncio.get_running_loop().call_soon(_freeze_heap)


def create_app(
    source: str | Path,
    *,
    index: str | None = None,
    index_options: dict[str, Any] | None = None,
    admin_token: str | None = None,
    max_body: int = MAX_BODY,
    max_wait: float = 0.002,
) -> FastAPI:
    """The server app for a run or export directory (loaded now: a broken directory fails
    here, before any request)."""
    options = dict(index_options or {})
    first = load_served(source, index, **options)
    _freeze_heap()
    metrics = Metrics()
    metrics.serving(first)
    batcher = MicroBatcher(run_jobs, max_wait=max_wait)
    reload_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        # SIGHUP reloads the directory served now (not possible outside the main thread).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_hangup(app)))
        yield
        batcher.close()
        app.state.served.close()

    app = FastAPI(
        title="towerkit",
        summary="Recommendations from a trained matching model",
        version=first.version,
        lifespan=lifespan,
    )
    app.state.served = first
    app.state.metrics = metrics

    async def _hangup(app: FastAPI) -> None:
        with contextlib.suppress(HTTPException):  # refused: logged, the old model serves on
            await reload(app, str(app.state.served.source))

    async def reload(app: FastAPI, path: str) -> Served:
        async with reload_lock:
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(None, lambda: load_served(path, index, **options))
            except (TowerkitError, ValueError, KeyError, OSError) as err:
                metrics.reloads.labels("refused").inc()
                logger.warning("reload of %s refused: %s", path, err)
                message = f"reload refused, still serving the old model: {err}"
                raise HTTPException(422, message) from None
            old, app.state.served = app.state.served, new
            _freeze_heap()
            metrics.serving(new)
            metrics.reloads.labels("done").inc()
            logger.info("reloaded %s (model %s)", path, new.version)
            # Requests in flight hold the old model; it goes once they had time to end.
            loop.call_later(30.0, _retire, old)
            return new

    app.add_middleware(Observe, metrics=metrics, max_body=max_body)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        problems = []
        for item in err.errors():
            if item["type"] == "json_invalid":
                problems.append(f"the body is not valid JSON ({item['ctx']['error']})")
                continue
            where = ".".join(str(p) for p in item["loc"] if p != "body") or "body"
            problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    async def answer(served: Served, request: RecommendRequest) -> JSONResponse:
        job, truncated = _job(served, request)
        try:
            items = await batcher.submit(job)
        except KeyError as err:
            raise HTTPException(422, _message(err)) from None
        # Built as it is documented (RecommendResponse), without validating it again.
        return JSONResponse(
            {"items": items, "model_version": served.version, "index": served.index,
             "history_truncated": truncated}
        )  # fmt: skip

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest, request: Request) -> JSONResponse:
        """Top-k items for a known user or for a history of items."""
        return await answer(request.app.state.served, body)

    @app.post("/recommend/batch", response_model=BatchResponse)
    async def recommend_batch(body: BatchRequest, request: Request) -> BatchResponse:
        """Many queries in one call (each validated as for /recommend)."""
        served = request.app.state.served
        jobs = [_job(served, query) for query in body.queries]
        results = await batcher.call(run_jobs, [job for job, _ in jobs])
        out = []
        for (_, truncated), items in zip(jobs, results, strict=True):
            if not isinstance(items, list):  # an error of this query (a KeyError: 422)
                raise HTTPException(422 if isinstance(items, KeyError) else 500, _message(items))
            response = RecommendResponse(
                items=items,
                model_version=served.version,
                index=served.index,
                history_truncated=truncated,
            )
            out.append(response)
        return BatchResponse(results=out)

    @app.post("/similar", response_model=RecommendResponse)
    async def similar(body: SimilarRequest, request: Request) -> RecommendResponse:
        """The items nearest to an item (itself left out)."""
        served: Served = request.app.state.served
        _check_k(served, body.k)
        retriever = served.retriever
        try:
            (item,) = retriever.encode_histories([[body.item]])[0]
        except KeyError as err:
            raise HTTPException(404, _message(err)) from None
        exclude = np.concatenate([[item], _encode_items(served, body.exclude, "exclude")])
        query = retriever.item_vectors[item - 1][None]
        recs = await batcher.call(retriever.search, query, body.k, [exclude])
        return RecommendResponse(
            items=to_items(recs, 0, body.k), model_version=served.version, index=served.index
        )

    @app.get("/items")
    async def items(
        request: Request,
        q: Annotated[str, Query(min_length=1, max_length=200, description="text to look for")],
        limit: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> list[dict[str, Any]]:
        """Catalogue items whose title or id contains ``q`` (autocomplete)."""
        return request.app.state.served.search_items(q, limit)

    @app.get("/users/{user}/history")
    async def history(
        user: str, request: Request, n: Annotated[int, Query(ge=1, le=1000)] = 20
    ) -> dict[str, Any]:
        """A known user's most recent items, newest last."""
        served: Served = request.app.state.served
        try:
            (items,) = served.retriever.history_of([user])
        except KeyError as err:
            raise HTTPException(404, _message(err)) from None
        recent = items[-n:]
        titles = served.retriever.titles
        codes = served.retriever.encode_histories([list(recent)])[0]
        return {
            "user": user,
            "length": len(items),
            "items": [
                {"id": jsonable_encoder(_raw(i)), "title": None if titles is None else
                 str(titles[c])} for i, c in zip(recent, codes, strict=True)
            ],
        }  # fmt: skip

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> dict[str, Any]:
        """A model is loaded and answers."""
        served: Served = request.app.state.served
        return {"ready": True, "model_version": served.version, "index": served.index,
                "items": served.n_items, "max_len": served.max_len}  # fmt: skip

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics: requests, latencies, the model served, reloads."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if admin_token:

        @app.post("/admin/reload")
        async def admin_reload(
            body: ReloadRequest,
            request: Request,
            authorization: Annotated[str | None, Header()] = None,
        ) -> dict[str, Any]:
            """Load another run or export directory and swap it in (the old model serves
            until then, and keeps serving if the new one is refused)."""
            expected = f"Bearer {admin_token}"
            if authorization is None or not hmac.compare_digest(authorization, expected):
                raise HTTPException(401, "a valid 'Authorization: Bearer TOKEN' is needed")
            new = await reload(request.app, body.path)
            return {"model_version": new.version, "index": new.index, "source": str(new.source)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("towerkit.serve").joinpath("page.html").read_text())

    return app


def _raw(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def serve(
    source: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    index: str | None = None,
    index_options: dict[str, Any] | None = None,
    admin_token: str | None = None,
) -> None:
    """Run the server with uvicorn until interrupted."""
    import uvicorn

    app = create_app(source, index=index, index_options=index_options, admin_token=admin_token)
    # A request leaves a few hundred container objects behind for a moment; at the default
    # threshold (700) the young generation was collected every other request or so. 20,000
    # cuts the id request's p99 by a quarter (benchmarks/serve_load.py) for a few MB.
    gc.set_threshold(20_000, 20, 20)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


__all__ = ["create_app", "serve"]
