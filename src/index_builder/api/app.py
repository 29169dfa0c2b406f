"""The FastAPI application: ``create_app(settings)``.

Routes are thin; the work happens in :mod:`index_builder.services` (shared with
the CLI) and runs off the event loop in worker threads.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from index_builder import __version__
from index_builder.api.cache import ResponseCache
from index_builder.api.dashboard import install_dashboard
from index_builder.api.deps import (
    BuildVersions,
    FreshnessMiddleware,
    Services,
    make_job_queue,
)
from index_builder.api.docs import install_docs
from index_builder.api.fast_reads import FastReadMiddleware
from index_builder.api.problems import install_problem_handlers
from index_builder.api.routers import admin, builds, exports, indices, providers, reads
from index_builder.api.schedule import ScheduleThread
from index_builder.calendar import get_calendar
from index_builder.export.files import ExportFiles
from index_builder.ops.observability import install_observability
from index_builder.ops.protection import attach_protection, close_protection, install_protection
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import ensure_builtins
from index_builder.services.queries import IndexReader
from index_builder.settings import Settings, get_settings
from index_builder.storage.factory import make_store
from index_builder.storage.failures import library_error_types

log = logging.getLogger("index_builder.api")

DESCRIPTION = """
Rules-based stock indices: build them at request time, read their performance,
compositions and composition changes, and export them.

* Returns are **fractions** (0.0123 = 1.23%); levels are index points; prices and
  market caps are USD; dates are exchange dates, `YYYY-MM-DD`.
* Every error is RFC 9457 `application/problem+json` with `type`, `title`,
  `status`, `detail` and, when one input is at fault, `field`.
* GET responses are cached in Redis per index build version (`X-Cache: HIT|MISS`);
  a rebuild changes the version, so cached answers never outlive it.
* Point in time: `as_of` (a date = the end of that day UTC, or a date-time) on
  POST /build-index builds the index from the market data known at that moment,
  next to the current results; the same `as_of` on the reads and the export reads
  that build.
* Protection: rate limits per API key or client address (`RateLimit-*` headers,
  `429` with `Retry-After`); API keys in `X-API-Key` for builds, definition
  changes, exports and admin endpoints (`401` missing or unknown, `403` without
  the scope); request bodies, windows and page sizes are bounded; a read not
  answered in time is `504`.
* The dashboard: `/` (levels, drawdowns, comparisons, compositions, changes, builds
  and exports in the browser, through this API).
* The methodology: docs/methodology.md in the repository.
"""


def build_services(settings: Settings) -> Services:
    """Open the store and create the long-lived objects of one API process."""
    calendar = get_calendar(settings.calendar, settings.calendar_start)
    store = make_store(settings, calendar).open()
    ensure_builtins(store)
    store.broken_definitions()  # logs each stored definition that no longer validates
    cache = ResponseCache(
        settings.redis_url,
        ttl_seconds=settings.cache_ttl_seconds,
        timeout_seconds=settings.redis_timeout_seconds,
        retry_seconds=settings.redis_retry_seconds,
        local_entries=settings.local_cache_entries if settings.redis_url else 0,
    )
    flags = settings.feature_flags()
    builder = IndexBuilder(store, calendar, flags)
    reader = IndexReader(store, calendar)
    services = Services(
        settings,
        store,
        reader,
        builder,
        cache,
        jobs=None,  # type: ignore[arg-type]  # needs the services' job runner, set below
        versions=BuildVersions(store),
        flags=flags,
        exports=ExportFiles(
            settings.export_folder, dt.timedelta(hours=settings.export_retention_hours)
        ),
    )
    # in this process (recorded with the data), or on the Redis queue of the workers
    services.jobs = make_job_queue(services)
    attach_protection(services)
    return services


def create_app(
    settings: Settings | None = None,
    *,
    scheduler_clock: Callable[[], dt.datetime] | None = None,
) -> FastAPI:
    """The API application over the database of ``settings``.

    With ``scheduler_enabled`` the daily schedule runs in a background thread of
    this process (``scheduler_clock``: a fake aware-UTC clock for tests).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.services = services
        log.info(
            "serving %s (redis: %s, jobs: %s)",
            settings.database,
            services.cache.status,
            services.jobs.mode,
        )
        schedule = (
            ScheduleThread(services, clock=scheduler_clock) if settings.scheduler_enabled else None
        )
        app.state.schedule = schedule
        if schedule is not None:
            schedule.start()
        try:
            yield
        finally:
            if schedule is not None:
                schedule.stop()
            services.jobs.shutdown()
            await services.cache.close()
            await close_protection(services)
            services.store.close()

    app = FastAPI(
        title="Index Builder",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: install_docs, local files instead of a CDN
        redoc_url=None,
    )
    app.add_middleware(FastReadMiddleware)  # innermost: remembered cached reads, no routing
    app.add_middleware(FreshnessMiddleware)  # the newest version of the store first
    install_problem_handlers(app)
    # a library's storage error (DuckDB, OSError, S3, catalog) is answered where the
    # answer is made, 503 storage-unavailable (or 500 for a bug), not re-raised to the
    # server as a crash (which logs and counts it as a 500)
    for kind in library_error_types():
        app.add_exception_handler(kind, app.exception_handlers[Exception])
    install_observability(app, settings)
    install_protection(app, settings)
    routers = (builds, reads, indices, exports, admin, providers)
    for router in (module.router for module in routers):
        app.include_router(router)
    install_docs(app)
    install_dashboard(app)  # last: the API's routes are matched first
    return app
