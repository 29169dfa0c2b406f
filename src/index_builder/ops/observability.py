"""Wire health, metrics and request logging into the app with one call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from index_builder.ops import collectors, health
from index_builder.ops.metrics import multiprocess_enabled
from index_builder.ops.request_records import flush_request_records
from index_builder.settings import Settings

log = logging.getLogger("index_builder.ops")


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Add ``/health/live``, ``/health/ready`` and ``/metrics``; on shutdown, flush the
    request records and drop this process's live gauges from the shared metrics
    folder. The request id, access line and request metrics of each request come
    from the request layer (:class:`~index_builder.ops.middleware.RequestMiddleware`,
    added by :func:`~index_builder.ops.protection.install_protection`)."""
    if settings.metrics_dir is not None and not multiprocess_enabled():
        log.warning(
            "INDEX_BUILDER_METRICS_DIR is set in the settings but was not in the "
            "environment when metrics were created: metrics are this process's only"
        )
    # routes added to the app itself, not as included routers: this FastAPI walks
    # every included router on each request, and these three would tax every read
    for router in (health.router, collectors.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            app.add_api_route(
                route.path,
                route.endpoint,
                methods=sorted(route.methods or ()),
                summary=route.summary,
                description=route.description,
                responses=route.responses,
                response_class=route.response_class,
                tags=list(route.tags),
                name=route.name,
            )
    # the request ids, access lines and request metrics are the request layer's
    # (ops/middleware.py), which install_protection adds: one ASGI layer for both
    if not settings.request_middleware:
        log.warning(
            "INDEX_BUILDER_REQUEST_MIDDLEWARE is off: no request ids, access lines or "
            "request metrics (for overhead measurements only)"
        )

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        try:
            async with inner(application) as state:
                try:
                    yield state
                finally:  # before the app's own shutdown closes the store
                    await run_in_threadpool(health.drain_probes)
        finally:
            flush_request_records()
            collectors.mark_process_dead()

    app.router.lifespan_context = lifespan
