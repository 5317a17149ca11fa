"""The HTTP server: FastAPI over one :class:`~towerkit.serve.model.Served` model.

:func:`create_app` assembles it: the state (:mod:`towerkit.serve.state`: the model, swapped
whole on reload, metrics, the micro-batcher), the routes (:mod:`towerkit.serve.routes`), a
middleware that counts requests and refuses oversized bodies, and 422s that name the field. The
app is a :class:`Towerkit`, which answers the hot endpoints itself, ahead of all of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from towerkit.index import VectorDatabaseError
from towerkit.serve.routes import HOT, admin_routes, document_bodies, router
from towerkit.serve.state import Metrics, ServerState
from towerkit.serve.threads import available_cores, default_threads
from towerkit.serve.threads import configure as configure_threads

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes


def _declared_too_large(scope: Scope, max_body: int) -> str | None:
    """Why a request's declared body (its content-length) is refused, or None."""
    size = dict(scope["headers"]).get(b"content-length", b"")
    if size.isdigit() and int(size) > max_body:
        return f"the body is {int(size)} bytes; at most {max_body}"
    return None


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
        detail = _declared_too_large(scope, self.max_body)
        if detail is not None:
            self.metrics.requests.labels("(too large)", "413").inc()
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
            self.metrics.observe(endpoint, status, time.perf_counter() - start)


async def _unavailable(request: Request, err: Exception) -> JSONResponse:
    """The vector database cannot answer (unreachable, a collection dropped or not loaded):
    503 naming it; the server answers again once the database does."""
    logger.warning("%s", err)
    return JSONResponse({"detail": str(err)}, status_code=503, headers={"Retry-After": "1"})


def _shown(part: str | int) -> str:
    """A field's name as a message shows it: quoted where it is not a plain name (an unknown
    key of any text, a newline included, stays on the message's one line)."""
    return str(part) if isinstance(part, int) or str(part).isidentifier() else repr(part)


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    """A request that does not validate: 422 naming each field at fault."""
    return JSONResponse({"detail": _invalid_detail(err)}, status_code=422)


def _invalid_detail(err: RequestValidationError) -> str:
    problems = []
    for item in err.errors():
        if item["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({item['ctx']['error']})")
            continue
        where = ".".join(_shown(p) for p in item["loc"] if p != "body") or "body"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


class _TooLarge(Exception):
    pass


class Towerkit(FastAPI):
    """The server's app: FastAPI, whose hot endpoints (``routes.HOT``: ``POST /recommend``,
    ``/recommend/batch``, ``/similar``) are answered here, before FastAPI's stack.

    That stack (telemetry, body limit, error and exception middleware, the router, the route's
    request wrapper and dependency solving) was a fifth of a by-id request's CPU time under
    load. A hot request gets what it got there: the body limit (413), the body validated by the
    same pydantic model (422 naming each field), the same 4xx and 503 bodies, the request
    counted in ``/metrics``; an unexpected error is a 500 raised to the ASGI server. The routes
    stay registered: they give the OpenAPI schema, and answer where a root path is set.
    """

    max_body = MAX_BODY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            payload = HOT.get(scope["path"])
            if payload is not None:
                await self._hot(payload, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _hot(self, payload: Any, scope: Scope, receive: Receive, send: Send) -> None:
        metrics: Metrics = self.state.server.metrics
        start, status, headers = time.perf_counter(), 500, []
        try:
            try:
                raw = await self._read(scope, receive)
                if raw is None:  # the client left: nobody to answer, nothing to count
                    status = 0
                    return
                body, status = orjson.dumps(await payload(self.state, raw)), 200
            except HTTPException as err:
                status, headers = err.status_code, list((err.headers or {}).items())
                body = orjson.dumps({"detail": err.detail})
            except RequestValidationError as err:
                status, body = 422, orjson.dumps({"detail": _invalid_detail(err)})
            except VectorDatabaseError as err:
                logger.warning("%s", err)
                status, headers = 503, [("Retry-After", "1")]
                body = orjson.dumps({"detail": str(err)})
            except _TooLarge as err:
                status, body = 413, orjson.dumps({"detail": str(err)})
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((name.lower().encode("latin-1"), value.encode("latin-1"))
                  for name, value in headers),
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
        finally:
            if status:
                endpoint = "(too large)" if status == 413 else scope["path"]
                metrics.observe(endpoint, status, time.perf_counter() - start)

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request's body, refused (413) past ``max_body`` bytes, declared or sent (None:
        the client disconnected)."""
        declared = _declared_too_large(scope, self.max_body)
        if declared is not None:
            raise _TooLarge(declared)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge(f"the body is longer than the limit: at most {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def create_app(
    source: str | Path,
    *,
    index: str | None = None,
    index_options: dict[str, Any] | None = None,
    admin_token: str | None = None,
    max_body: int = MAX_BODY,
    threads: int | None = None,
) -> FastAPI:
    """The server app for a run or export directory (loaded now: a broken directory fails
    here, before any request).

    Args:
        threads: onnxruntime's threads for the user tower (default: every core but one). The
            process's own pools (torch's, OpenMP's) are not an app's to change: :func:`serve`
            sets them (:func:`towerkit.serve.threads.configure`).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        # SIGHUP reloads the directory served now (not possible outside the main thread).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.create_task(app.state.server.hangup())
            )
        yield
        app.state.server.close()

    app = Towerkit(title="towerkit", summary="Recommendations from a trained matching model",
                   lifespan=lifespan)  # fmt: skip
    app.max_body = max_body
    state = ServerState(app.state, source, index=index, index_options=index_options or {},
                        threads=threads or default_threads(available_cores()))  # fmt: skip
    app.state.server = state
    app.version = state.served.version
    app.add_middleware(Observe, metrics=state.metrics, max_body=max_body)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(VectorDatabaseError, _unavailable)
    # The routes themselves, not include_router: FastAPI keeps an included router as a router
    # of its own, matched and dispatched on every request before the route is.
    app.router.routes.extend(router.routes)
    if admin_token:
        app.router.routes.extend(admin_routes(admin_token).routes)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_bodies(generate())
        return app.openapi_schema

    app.openapi = openapi
    return app


def serve(
    source: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    index: str | None = None,
    index_options: dict[str, Any] | None = None,
    admin_token: str | None = None,
    threads: int | None = None,
) -> None:
    """Run the server with uvicorn until interrupted."""
    import uvicorn

    chosen = configure_threads(threads)  # again: torch has loaded since the CLI's call
    app = create_app(source, index=index, index_options=index_options, admin_token=admin_token,
                     threads=chosen.compute)  # fmt: skip
    # A request leaves a few hundred container objects behind for a moment; at the default
    # threshold (700) the young generation was collected every other request or so. 20,000
    # cuts the id request's p99 by a quarter (benchmarks/serve_load.py) for a few MB.
    gc.set_threshold(20_000, 20, 20)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


__all__ = ["Metrics", "Towerkit", "create_app", "serve"]
