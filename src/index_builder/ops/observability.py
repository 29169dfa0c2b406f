"""Wire health, metrics and request logging into the app with one call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from index_builder.ops import collectors, health
from index_builder.ops.metrics import multiprocess_enabled
from index_builder.ops.middleware import ObservabilityMiddleware
from index_builder.settings import Settings

log = logging.getLogger("index_builder.ops")


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Add ``/health/live``, ``/health/ready``, ``/metrics`` and the request middleware
    (request id, access log line, request metrics); on shutdown, drop this
    process's live gauges from the shared metrics folder."""
    if settings.metrics_dir is not None and not multiprocess_enabled():
        log.warning(
            "INDEX_BUILDER_METRICS_DIR is set in the settings but was not in the "
            "environment when metrics were created: metrics are this process's only"
        )
    app.include_router(health.router)
    app.include_router(collectors.router)
    app.add_middleware(ObservabilityMiddleware)

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        try:
            async with inner(application) as state:
                yield state
        finally:
            collectors.mark_process_dead()

    app.router.lifespan_context = lifespan
