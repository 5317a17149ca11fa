"""The server's endpoints (OpenAPI at ``/docs``): ``POST /recommend``, ``POST
/recommend/batch``, ``POST /similar``, ``GET /items`` (autocomplete), ``GET
/users/{user}/history``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET
/`` (a page to look at the model), and ``POST /admin/reload`` (:func:`admin_routes`, with a
token).

A request reads the model it starts with (``app.state.served``) and the server's state
(``app.state.server``: the micro-batcher, metrics, reload). Bad requests are 4xx that name what
is wrong; a 500 is a bug.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from towerkit.index import FilterError, ItemFilter
from towerkit.retrieval import encode_user_features
from towerkit.serve.bodies import (
    BatchRequest,
    BatchResponse,
    RawId,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    SimilarRequest,
)
from towerkit.serve.model import Served, to_items
from towerkit.serve.state import Job, ServerState, run_jobs

router = APIRouter()


def server(request: Request) -> ServerState:
    return request.app.state.server


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


def _filter(served: Served, text: str | None) -> ItemFilter | None:
    """A request's filter, checked against the model's item attributes (422 if it cannot be
    read)."""
    if text is None:
        return None
    try:
        return served.retriever.index.parse_filter(text)
    except FilterError as err:
        raise HTTPException(422, str(err)) from None


def _job(served: Served, request: RecommendRequest) -> tuple[Job, bool]:
    """Validate and encode one request (raise 4xx naming what is wrong)."""
    _check_k(served, request.k)
    where = _filter(served, request.filter)
    retriever = served.retriever
    exclude = _encode_items(served, request.exclude, "exclude")
    if request.user is not None:
        try:
            (user,) = retriever.encode_users([request.user])
        except KeyError as err:
            raise HTTPException(404, _message(err)) from None
        if request.filter_seen:
            exclude = np.concatenate([exclude, retriever.seen(np.asarray([user]))[0]])
        return Job(served, int(user), None, None, exclude, request.k, where), False
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
    return Job(served, 0, history, features, exclude, request.k, where), truncated


async def answer(http: Request, request: RecommendRequest) -> JSONResponse:
    served: Served = http.app.state.served
    job, truncated = _job(served, request)
    try:
        items = await server(http).batcher.submit(job)
    except KeyError as err:
        raise HTTPException(422, _message(err)) from None
    # Built as it is documented (RecommendResponse), without validating it again.
    return JSONResponse(
        {"items": items, "model_version": served.version, "index": served.index,
         "history_truncated": truncated}
    )  # fmt: skip


@router.post("/recommend", response_model=RecommendResponse)
async def recommend(body: RecommendRequest, request: Request) -> JSONResponse:
    """Top-k items for a known user or for a history of items."""
    return await answer(request, body)


@router.post("/recommend/batch", response_model=BatchResponse)
async def recommend_batch(body: BatchRequest, request: Request) -> BatchResponse:
    """Many queries in one call (each validated as for /recommend)."""
    served = request.app.state.served
    jobs = [_job(served, query) for query in body.queries]
    results = await server(request).batcher.call(run_jobs, [job for job, _ in jobs])
    out = []
    for (_, truncated), items in zip(jobs, results, strict=True):
        if isinstance(items, KeyError):  # an error of this query
            raise HTTPException(422, _message(items))
        if not isinstance(items, list):  # the database's (503) or a bug (500)
            raise items
        response = RecommendResponse(
            items=items,
            model_version=served.version,
            index=served.index,
            history_truncated=truncated,
        )
        out.append(response)
    return BatchResponse(results=out)


@router.post("/similar", response_model=RecommendResponse)
async def similar(body: SimilarRequest, request: Request) -> RecommendResponse:
    """The items nearest to an item (itself left out)."""
    served: Served = request.app.state.served
    _check_k(served, body.k)
    where = _filter(served, body.filter)
    retriever = served.retriever
    try:
        (item,) = retriever.encode_histories([[body.item]])[0]
    except KeyError as err:
        raise HTTPException(404, _message(err)) from None
    exclude = np.concatenate([[item], _encode_items(served, body.exclude, "exclude")])
    query = retriever.item_vectors[item - 1][None]
    recs = await server(request).batcher.call(retriever.search, query, body.k, [exclude], where)
    return RecommendResponse(
        items=to_items(recs, 0, body.k), model_version=served.version, index=served.index
    )


@router.get("/items")
async def items(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=200, description="text to look for")],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[dict[str, Any]]:
    """Catalogue items whose title or id contains ``q`` (autocomplete)."""
    return request.app.state.served.search_items(q, limit)


@router.get("/users/{user}/history")
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


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, Any]:
    """A model is loaded and its index answers (503 naming why not: a vector database that
    cannot be reached, or whose collection is not loaded)."""
    served: Served = request.app.state.served
    # off the event loop: a database back end asks its database
    problem = await server(request).batcher.call(served.retriever.index.ready)
    if problem is not None:
        raise HTTPException(503, f"not ready: {problem}")
    return {"ready": True, "model_version": served.version, "index": served.index,
            "items": served.n_items, "max_len": served.max_len}  # fmt: skip


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    """Prometheus metrics: requests, latencies, the model served, reloads."""
    return Response(
        generate_latest(server(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(resources.files("towerkit.serve").joinpath("page.html").read_text())


@router.get("/report", response_class=HTMLResponse, include_in_schema=False)
async def report_page(request: Request) -> HTMLResponse:
    """The loaded model's report: the charts of ``towerkit report`` for its run."""
    from towerkit.report import render_html

    served: Served = request.app.state.served
    if served.report is None:
        raise HTTPException(
            404,
            "the loaded model has no report: its run has no per-user outcomes (towerkit "
            "evaluate RUN --save, then export again)",
        )
    title = f"towerkit report: {served.source.name} (model {served.version})"
    return HTMLResponse(render_html(served.report, title, script_src="report/plotly.js"))


@router.get("/report/plotly.js", include_in_schema=False)
async def plotly_script() -> Response:
    from towerkit.errors import MissingExtra
    from towerkit.report import plotly_js

    try:
        return Response(plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "max-age=86400"})  # fmt: skip
    except MissingExtra as err:
        raise HTTPException(404, str(err)) from None


def _raw(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def admin_routes(token: str) -> APIRouter:
    """``POST /admin/reload`` for requests bearing ``token``."""
    admin = APIRouter()

    @admin.post("/admin/reload")
    async def admin_reload(
        body: ReloadRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Load another run or export directory and swap it in (the old model serves
        until then, and keeps serving if the new one is refused)."""
        expected = f"Bearer {token}"
        if authorization is None or not hmac.compare_digest(authorization, expected):
            raise HTTPException(401, "a valid 'Authorization: Bearer TOKEN' is needed")
        new = await server(request).reload(body.path)
        return {"model_version": new.version, "index": new.index, "source": str(new.source)}

    return admin
