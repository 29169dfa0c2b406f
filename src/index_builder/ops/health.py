"""``GET /health/live`` and ``GET /health/ready``.

Liveness says the process answers (it touches nothing). Readiness checks every
component and answers ``200`` with ``status`` ``ok`` or ``degraded``, or ``503``
with ``down``:

* storage: a trivial query within ``INDEX_BUILDER_HEALTH_TIMEOUT_SECONDS``
  (failing or slower: ``down``, the service is not ready);
* redis: the response cache pings Redis (down: ``degraded``, reads come from
  the database; not configured: ``disabled``);
* freshness, ingestion, builds: see :mod:`index_builder.ops.state` (stale data,
  a failed run or build: ``degraded``);
* circuit breakers, feature flags, rate limiter, API keys: their ``health()``;
* shadow_storage (with the ``shadow_storage`` flag): ``degraded`` while the shadow
  store is diverged, never ``down`` (:mod:`index_builder.storage.shadow`);
* the version.

Any ``down`` component makes the whole ``down`` (503), else any ``degraded``
makes it ``degraded`` (200). The body is plain JSON, not problem+json.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from index_builder import __version__
from index_builder.api.deps import Services
from index_builder.ops.breakers import breakers_health
from index_builder.ops.state import (
    StoreState,
    builds_component,
    definitions_component,
    ingestion_component,
    read_state,
)
from index_builder.storage.shadow import shadow_component

router = APIRouter(tags=["operations"])

_PROBES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="health")
"""Database checks run here, not in the request thread pool, so a busy API still
answers its probes (and a stuck check cannot starve the requests)."""

_IN_FLIGHT: set[futures.Future[StoreState]] = set()
"""Database checks submitted and not finished (a timed-out one keeps running)."""

_DB_COMPONENTS = ("freshness", "ingestion", "builds", "definitions")


def overall_status(components: dict[str, dict[str, Any]]) -> str:
    """``down`` if any component is down, else ``degraded`` if any is, else ``ok``."""
    statuses = {c.get("status") for c in components.values()}
    if "down" in statuses:
        return "down"
    if "degraded" in statuses:
        return "degraded"
    return "ok"


async def store_state(services: Services) -> StoreState:
    """Read the database's state off the event loop, within the health timeout."""
    settings = services.settings
    now = services.clock()
    grace = dt.timedelta(minutes=settings.freshness_grace_minutes)
    probe = _PROBES.submit(
        read_state,
        services.store,
        services.builder.calendar,
        now,
        grace,
        services.build_outcomes,
    )
    _IN_FLIGHT.add(probe)
    probe.add_done_callback(_IN_FLIGHT.discard)
    # shielded: a probe that times out keeps running (a thread cannot be stopped);
    # drain_probes() waits for it before the store closes
    return await asyncio.wait_for(
        asyncio.shield(asyncio.wrap_future(probe)), settings.health_timeout_seconds
    )


def drain_probes(timeout: float = 10.0) -> None:
    """Wait (bounded) for database checks still running, before the store closes:
    closing a connection that a check is using fails."""
    pending = [probe for probe in list(_IN_FLIGHT) if not probe.done()]
    if pending:
        futures.wait(pending, timeout=timeout)


async def readiness(services: Services) -> dict[str, Any]:
    """Every component's health and the overall status."""
    components: dict[str, dict[str, Any]] = {}
    try:
        state = await store_state(services)
    except TimeoutError:
        components["storage"] = {
            "status": "down",
            "detail": f"no answer within {services.settings.health_timeout_seconds} s",
        }
    except Exception as exc:  # any failure of the database is the answer here
        components["storage"] = {"status": "down", "detail": f"{type(exc).__name__}: {exc}"}
    else:
        components["storage"] = {"status": "ok", "schema_version": state.schema_version}
        components["freshness"] = state.freshness.as_dict()
        components["ingestion"] = ingestion_component(state)
        components["builds"] = builds_component(state)
        components["definitions"] = definitions_component(state)
    components["storage"].update(services.store.describe())
    if components["storage"]["status"] == "down":
        for name in _DB_COMPONENTS:
            components[name] = {"status": "unknown", "detail": "storage is unavailable"}

    await services.cache.ping()
    components["redis"] = services.cache.health()
    components["circuit_breakers"] = breakers_health()
    if services.flags is not None:
        components["feature_flags"] = services.flags.health()
    shadow = shadow_component(services.store, services.flags)
    if shadow is not None:
        components["shadow_storage"] = shadow
    if services.rate_limiter is not None:
        await services.rate_limiter.probe()  # an outage ends here too, not only on traffic
        components["rate_limiter"] = services.rate_limiter.health()
    if services.auth is not None:
        components["api_keys"] = services.auth.health()
    return {
        "status": overall_status(components),
        "version": __version__,
        "checked_at": services.clock(),
        "components": components,
    }


def _json(payload: Any, status_code: int = 200) -> Response:
    body = orjson.dumps(payload, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)
    return Response(
        body,
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/health/live",
    summary="Liveness: the process answers",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def live() -> Response:
    """`200 {"status": "ok"}` while the process serves requests (touches nothing)."""
    return _json({"status": "ok"})


@router.get(
    "/health/ready",
    summary="Readiness: every component's health",
    responses={
        200: {"description": "Ready: `status` is `ok` or `degraded` (e.g. Redis down)."},
        503: {"description": "Not ready: a component is `down` (e.g. storage unreachable)."},
    },
)
async def ready(request: Request) -> Response:
    """`status` (`ok`, `degraded` or `down`), `version`, `checked_at` and
    `components`: storage, redis, freshness (last trading day against the latest
    closed exchange session), ingestion (last run), builds (each index's last
    build), circuit_breakers, feature_flags, rate_limiter (`degraded` while it limits
    per process because Redis is down), api_keys (`degraded` when keys are required
    but none is configured) and, with the shadow_storage flag, shadow_storage
    (`degraded` while the shadow store is diverged)."""
    services: Services = request.app.state.services
    report = await readiness(services)
    return _json(report, 503 if report["status"] == "down" else 200)
