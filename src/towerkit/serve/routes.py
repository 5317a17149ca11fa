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
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from towerkit.index import FilterError, ItemFilter
from towerkit.retrieval import encode_user_features
from towerkit.serve.bodies import (
    BatchRequest,
    BatchResponse,
    ItemsRequest,
    ItemsResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    SimilarRequest,
)
from towerkit.serve.jobs import Job
from towerkit.serve.model import Served, plain
from towerkit.serve.state import ServerState

router = APIRouter()


def server(request: Request) -> ServerState:
    """The server state of a request's app (a FastAPI dependency)."""
    return request.app.state.server


Body = TypeVar("Body", bound=BaseModel)
#: the request bodies read by :func:`_parse`, documented in the OpenAPI schema by
#: :func:`document_bodies`
BODIES = (RecommendRequest, BatchRequest, SimilarRequest)


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body :func:`_parse` reads."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _parse(raw: bytes, model: type[Body]) -> Body:
    """The JSON body, parsed and validated by pydantic in one pass (its own JSON parser).
    FastAPI's way (``json.loads``, the content type read by ``email``, dependency solving, then
    validation) cost a by-id request a tenth of its time on the event loop. A body that does
    not validate is a 422 naming each field, as FastAPI's would be."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False)) from None


def document_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema with the bodies :func:`_parse` reads in its components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in BODIES:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    return schema


def _json(payload: Any) -> Response:
    """A response serialised once, by orjson (built as the endpoint's documented model, not
    validated against it again)."""
    return Response(orjson.dumps(payload), media_type="application/json")


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


def _jobs(
    served: Served, queries: Sequence[RecommendRequest], numbered: bool
) -> list[tuple[Job, bool]]:
    """Validate and encode queries (4xx naming what is wrong: in a batch, which query), each
    kind of id looked up once for them all; ``(job, history truncated)`` per query."""
    try:
        return _encode(served, queries)
    except HTTPException as err:
        if not numbered or len(queries) == 1:
            raise
        for position, query in enumerate(queries):  # which one: query by query, on error only
            try:
                _encode(served, [query])
            except HTTPException as one:
                raise HTTPException(one.status_code, f"queries[{position}]: {one.detail}") from None
        raise err from None


_NONE = np.zeros(0, dtype=np.int64)


def _encode(served: Served, queries: Sequence[RecommendRequest]) -> list[tuple[Job, bool]]:
    retriever = served.retriever
    filters: dict[str | None, ItemFilter | None] = {}
    for query in queries:
        _check_k(served, query.k)
        if query.filter not in filters:
            filters[query.filter] = _filter(served, query.filter)
        if query.history is not None and not query.history:
            raise HTTPException(422, "history is empty: give at least one item")
        if retriever.reads_times and query.history is not None and query.times is None:
            raise HTTPException(
                422, "this model reads the times of a history (model.time_bias): give times, "
                "one epoch second per item"
            )  # fmt: skip
        if not retriever.reads_times and (query.times is not None or query.at is not None):
            raise HTTPException(422, "this model reads no times: leave times and at out")
    excludes: Any = [_NONE] * len(queries)
    if any(query.exclude for query in queries):
        try:
            excludes = retriever.encode_histories([query.exclude for query in queries])
        except KeyError as err:
            raise HTTPException(422, f"exclude: {_message(err)}") from None
    known = [query.user for query in queries if query.user is not None]
    try:
        codes = retriever.encode_users(known) if known else np.zeros(0, np.int64)
    except KeyError as err:
        raise HTTPException(404, _message(err)) from None
    users, seen = iter(codes.tolist()), iter(retriever.seen(codes))
    try:
        histories = iter(retriever.encode_histories(
            [query.history for query in queries if query.history is not None]
        ))  # fmt: skip
    except KeyError as err:
        raise HTTPException(422, f"history: {_message(err)}") from None
    described = [query.features for query in queries if query.features]
    if described:
        try:  # the names and values are checked now, not in the batch
            encode_user_features(retriever.user_features, described)
        except KeyError as err:
            raise HTTPException(422, _message(err)) from None
    out = []
    for query, exclude in zip(queries, excludes, strict=True):
        where = filters[query.filter]
        if query.user is not None:
            user, items = next(users), next(seen)
            if query.filter_seen:
                exclude = np.concatenate([exclude, items])
            out.append((Job(served, query.k, exclude, where, user=user, at=query.at), False))
            continue
        history = next(histories)
        if query.filter_seen:
            exclude = np.concatenate([exclude, history])
        job = Job(served, query.k, exclude, where, history=history,
                  features=query.features or None, times=query.times, at=query.at)  # fmt: skip
        out.append((job, len(history) > served.max_len))
    return out


def _answer(served: Served, items: Any, truncated: bool, where: str = "") -> dict[str, Any]:
    """A query's response (``items`` is its job's result: an exception raises its 4xx or
    5xx)."""
    if isinstance(items, KeyError):  # an error of this query
        raise HTTPException(422, f"{where}{_message(items)}")
    if isinstance(items, BaseException):  # the database's (503) or a bug (500)
        raise items
    return {"items": items, "model_version": served.version, "index": served.index,
            "history_truncated": truncated}  # fmt: skip


async def recommend_payload(app: Any, raw: bytes) -> dict[str, Any]:
    """``POST /recommend``'s answer to a raw body (4xx as :class:`HTTPException`)."""
    body = _parse(raw, RecommendRequest)
    served: Served = app.served
    ((job, truncated),) = _jobs(served, [body], numbered=False)
    (items,) = await app.server.batcher.submit_many([job])
    return _answer(served, items, truncated)


async def batch_payload(app: Any, raw: bytes) -> dict[str, Any]:
    """``POST /recommend/batch``'s answer to a raw body."""
    body = _parse(raw, BatchRequest)
    served: Served = app.served
    jobs = _jobs(served, body.queries, numbered=True)
    results = await app.server.batcher.submit_many([job for job, _ in jobs])
    return {"results": [
        _answer(served, items, truncated, f"queries[{position}]: ")
        for position, ((_, truncated), items) in enumerate(zip(jobs, results, strict=True))
    ]}  # fmt: skip


async def similar_payload(app: Any, raw: bytes) -> dict[str, Any]:
    """``POST /similar``'s answer to a raw body."""
    body = _parse(raw, SimilarRequest)
    served: Served = app.served
    _check_k(served, body.k)
    where = _filter(served, body.filter)
    retriever = served.retriever
    try:
        (item,) = retriever.encode_histories([[body.item]])[0].tolist()
    except KeyError as err:
        raise HTTPException(404, _message(err)) from None
    try:
        (exclude,) = retriever.encode_histories([body.exclude])
    except KeyError as err:
        raise HTTPException(422, f"exclude: {_message(err)}") from None
    job = Job(served, body.k, np.concatenate([[item], exclude]), where, item=item)
    (items,) = await app.server.batcher.submit_many([job])
    return _answer(served, items, False)


#: The hot endpoints: ``path -> (app state, raw body) -> payload``. The app answers them
#: before FastAPI's stack (:class:`towerkit.serve.app.HotPaths`); the routes below document
#: them in the OpenAPI schema and answer them wherever the fast path does not apply.
HOT: dict[str, Callable[[Any, bytes], Awaitable[dict[str, Any]]]] = {
    "/recommend": recommend_payload,
    "/recommend/batch": batch_payload,
    "/similar": similar_payload,
}


@router.post(
    "/recommend", response_model=RecommendResponse, openapi_extra=_documented(RecommendRequest)
)
async def recommend(request: Request) -> Response:
    """Top-k items for a known user or for a history of items."""
    return _json(await recommend_payload(request.app.state, await request.body()))


@router.post(
    "/recommend/batch", response_model=BatchResponse, openapi_extra=_documented(BatchRequest)
)
async def recommend_batch(request: Request) -> Response:
    """Many queries in one call (each validated as for /recommend), answered in the same
    micro-batches as single requests."""
    return _json(await batch_payload(request.app.state, await request.body()))


@router.post(
    "/similar", response_model=RecommendResponse, openapi_extra=_documented(SimilarRequest)
)
async def similar(request: Request) -> Response:
    """The items nearest to an item (itself left out)."""
    return _json(await similar_payload(request.app.state, await request.body()))


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
            {"id": jsonable_encoder(plain(i)), "title": None if titles is None else
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
    return {"ready": True, "model": served.manifest["model"], "model_version": served.version,
            "index": served.index, "items": served.n_items, "max_len": served.max_len}  # fmt: skip


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    """Prometheus metrics: requests, latencies, the model served, reloads."""
    return Response(
        generate_latest(server(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The page to look at the model (``/``)."""
    return HTMLResponse(resources.files("towerkit.serve").joinpath("page.html").read_text())


@router.get("/report", response_class=HTMLResponse, include_in_schema=False)
async def report_page(request: Request) -> HTMLResponse:
    """The loaded model's report: the charts of ``towerkit report`` for its run."""
    from towerkit.reports import render_html

    served: Served = request.app.state.served
    if served.report is None:
        raise HTTPException(
            404,
            "the loaded model has no report: its run has no per-user outcomes (towerkit "
            "evaluate RUN --save, then export again)",
        )
    name = str(served.source).rstrip("/").rsplit("/", 1)[-1]
    title = f"towerkit report: {name} (model {served.version})"
    return HTMLResponse(render_html(served.report, title, script_src="report/plotly.js"))


@router.get("/report/plotly.js", include_in_schema=False)
async def plotly_script() -> Response:
    """plotly.js for the page, served locally (the page works offline)."""
    from towerkit.errors import MissingExtra
    from towerkit.reports import plotly_js

    try:
        return Response(plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "max-age=86400"})  # fmt: skip
    except MissingExtra as err:
        raise HTTPException(404, str(err)) from None


def admin_routes(token: str) -> APIRouter:
    """``POST /admin/reload`` and ``POST /admin/items`` for requests bearing ``token``."""
    admin = APIRouter()

    def check(authorization: str | None) -> None:
        expected = f"Bearer {token}"
        # as bytes: compare_digest refuses str with non-ASCII characters (a header is latin-1)
        given = None if authorization is None else authorization.encode("utf-8", "replace")
        if given is None or not hmac.compare_digest(given, expected.encode("utf-8")):
            raise HTTPException(401, "a valid 'Authorization: Bearer TOKEN' is needed")

    @admin.post("/admin/reload")
    async def admin_reload(
        body: ReloadRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Load another run or export directory (or what is published at the URL served now:
        a newer export) and swap it in (the old model serves until then, and keeps serving if
        the new one is refused)."""
        check(authorization)
        state = server(request)
        new = await state.reload(body.path or str(state.served.source))
        return {"model_version": new.version, "index": new.index, "source": str(new.source)}

    @admin.post("/admin/items", response_model=ItemsResponse)
    async def admin_items(
        body: ItemsRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Add new items or change known ones, live: each with its vector, or its side
        features for the exported item tower. They are recommended from the next request on
        (exact, Faiss and Milvus indexes take them as they are; Annoy's is built anew first,
        while the old one serves). A refused batch changes nothing."""
        check(authorization)
        return await server(request).upsert_items(body.items)

    return admin
