"""JSON responses: orjson bytes, cached by the index's build version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.cache import cache_key
from index_builder.api.deps import Services
from index_builder.ops.metrics import CACHE_REQUESTS

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


async def cached_json(
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

    ``X-Cache`` says ``HIT`` or ``MISS``. Errors are raised, never cached. Lookups
    count in ``index_builder_cache_requests_total{result}`` (hit, miss, or error
    while Redis is down).
    """
    versions = services.versions
    if versions.known(index_id):
        version = versions.get(index_id)  # memory only: no thread hop on the hot path
    else:
        version = await run_in_threadpool(versions.get, index_id)
    key = cache_key(route, index_id, version, params) if version is not None else None
    if key is not None:
        hit = await services.cache.get(key)
        if hit is not None:
            _CACHE_HIT.inc()
            return Response(hit, media_type=JSON, headers={"X-Cache": "HIT"})
        # a lookup while Redis is down is an error, not a miss
        (_CACHE_ERROR if services.cache.status == "down" else _CACHE_MISS).inc()
    payload = await run_in_threadpool(produce)
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if key is not None:
        await services.cache.set(key, body)
    return Response(body, media_type=JSON, headers={"X-Cache": "MISS"})
