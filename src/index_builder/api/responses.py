"""JSON responses: orjson bytes, cached by the index's build version, with HTTP
validators (``ETag``, ``Cache-Control``, ``304``: :mod:`index_builder.api.http_cache`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.cache import cache_key
from index_builder.api.deps import Services
from index_builder.api.fast_reads import STATE_KEY_KNOWN, KnownReads
from index_builder.api.http_cache import (
    if_none_match,
    not_modified,
    read_cache_control,
    strong_etag,
)
from index_builder.ops.metrics import CACHE_REQUESTS
from index_builder.services.queries import NotInMemory, known_build

_CACHE_HIT = CACHE_REQUESTS.labels(result="hit")
_CACHE_MISS = CACHE_REQUESTS.labels(result="miss")
_CACHE_ERROR = CACHE_REQUESTS.labels(result="error")

JSON = "application/json"


def json_response(payload: Any, status_code: int = 200, **headers: str) -> Response:
    """Serialize with orjson (dates as ISO strings)."""
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type=JSON,
        headers=headers or None,
    )


def read_json(
    request: Request, services: Services, payload: Any, *, public: bool = True
) -> Response:
    """A read's JSON with a strong ``ETag`` over its bytes; ``304`` when the client's
    copy (``If-None-Match``) is current. ``public=False`` (answers that need an API
    key): only the client may keep it, revalidating every time."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    etag = strong_etag(body)
    cache_control = (
        read_cache_control(services.settings.http_max_age_seconds)
        if public
        else "private, no-cache"
    )
    if if_none_match(request, etag):
        return not_modified(etag, cache_control)
    return Response(body, media_type=JSON, headers={"ETag": etag, "Cache-Control": cache_control})


async def cached_json(
    request: Request,
    services: Services,
    route: str,
    index_id: str,
    params: dict[str, Any],
    produce: Callable[[], Any],
) -> Response:
    """Cache-aside: the stored bytes for this index version and parameters, or
    ``produce()`` (run off the event loop), stored for next time.

    ``index_id`` is the result key read: the index id, or ``<id>@<as of>`` for
    a build as of a moment (its own version).

    ``X-Cache`` says ``HIT`` or ``MISS``. Errors are raised, never cached. A miss is
    produced on the event loop when the reader has what it needs in memory, else in
    a worker thread (:func:`~index_builder.services.queries.known_build`). Lookups
    count in ``index_builder_cache_requests_total{result}`` (hit, miss, or error
    while Redis is down).

    The ``ETag`` hashes the same key (build version and query), so a client whose
    ``If-None-Match`` names it gets ``304`` before any cache or store is read.

    Only for reads (the routes' ``ReadServices``: the reads budget and the ``read``
    scope): the URL is remembered, and its next GETs are answered before routing
    while the version and the cached bytes last (:mod:`index_builder.api.fast_reads`).
    """
    versions = services.versions
    if versions.known(index_id):
        version = versions.get(index_id)  # memory only: no thread hop on the hot path
    else:
        version = await run_in_threadpool(versions.get, index_id)
    key = cache_key(route, index_id, version, params) if version is not None else None
    cache_control = read_cache_control(services.settings.http_max_age_seconds)
    headers = {"Cache-Control": cache_control}
    if key is not None:
        known: KnownReads | None = request.scope.get("state", {}).get(STATE_KEY_KNOWN)
        if known is not None:  # the next GET of this URL may skip the route (fast_reads)
            known.remember(request.scope, route, index_id, params)
        etag = headers["ETag"] = strong_etag(key)
        if if_none_match(request, etag):
            return not_modified(etag, cache_control)
        hit = await services.cache.get(key)
        if hit is not None:
            _CACHE_HIT.inc()
            return Response(hit, media_type=JSON, headers={**headers, "X-Cache": "HIT"})
        # a lookup while Redis is down is an error, not a miss
        (_CACHE_ERROR if services.cache.status == "down" else _CACHE_MISS).inc()
    payload = await _produce(index_id, version, produce)
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if key is not None:
        await services.cache.set(key, body)
    return Response(body, media_type=JSON, headers={**headers, "X-Cache": "MISS"})


async def _produce(index_id: str, version: int | None, produce: Callable[[], Any]) -> Any:
    """``produce()`` with the build version the API knows (no query for it): on the event
    loop when the reader answers from memory (levels, compositions, definitions read
    before), else in a worker thread (it reads the store)."""
    if version is None:
        return await run_in_threadpool(produce)
    try:
        with known_build(index_id, version, memory_only=True):
            return produce()
    except NotInMemory:
        pass

    def from_store() -> Any:
        with known_build(index_id, version):
            return produce()

    return await run_in_threadpool(from_store)
