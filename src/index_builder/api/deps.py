"""What the routes depend on: one :class:`Services` per app, injected with ``Annotated``.

The job's life (run, finish, record, invalidate) is :class:`~index_builder.services.jobs.
JobRunner`'s; the API submits jobs to its queue and reads them. :class:`Freshness`
brings a store other processes write (the lake) to their newest version before a
request is answered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from index_builder.api.cache import ResponseCache
from index_builder.export.files import ExportFiles
from index_builder.ops.auth import ApiKeyAuth
from index_builder.ops.flags import FlagStore
from index_builder.ops.ratelimit import RateLimiter
from index_builder.ops.state import BuildOutcomes, utc_now
from index_builder.point_in_time import AS_OF_SEPARATOR, as_of_prefix
from index_builder.services.builds import BuildResult, IndexBuilder
from index_builder.services.jobs import (
    OUTCOMES,
    BuildRequest,
    BuildsRequest,
    JobRunner,
    ProgressCallback,
    store_head,
)
from index_builder.services.queries import IndexReader
from index_builder.services.queue import JobManager, JobQueue, RedisQueue, queue_mode
from index_builder.settings import Settings
from index_builder.storage.duckdb.store import DuckDBStore

__all__ = [
    "OUTCOMES",
    "BuildVersions",
    "Freshness",
    "FreshnessMiddleware",
    "Services",
    "ServicesDep",
    "get_services",
    "make_job_queue",
]


class BuildVersions:
    """The build version of each result key (index id, or ``<id>@<as of>``), in memory.

    Cache keys need it on every GET. Every build of this process, definition change
    and removal calls :meth:`forget`; a newer version of the store written by another
    process (:meth:`Services.refresh_store`) calls :meth:`forget_all`. A version read
    from the store while a forget happened is not kept (the generation changed), so
    the memory copy never outlives the version it was read from.
    """

    def __init__(self, store: DuckDBStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._versions: dict[str, int | None] = {}
        self._generation = 0

    def known(self, index_id: str) -> bool:
        """True when the version is in memory (no database query needed)."""
        with self._lock:
            return index_id in self._versions

    def get(self, index_id: str) -> int | None:
        """The current build version (None: never built), from memory or the store."""
        with self._lock:
            if index_id in self._versions:
                return self._versions[index_id]
            generation = self._generation
        state = self._store.build_state(index_id)
        version = state.version if state is not None else None
        if version is None and AS_OF_SEPARATOR in index_id:
            return None  # as-of moments are the caller's to choose: remember built ones only
        with self._lock:
            if self._generation == generation:  # no forget meanwhile: still current
                self._versions[index_id] = version
        return version

    def forget_all(self) -> None:
        """Drop every memory copy (a newer version of the store, the daily cycle)."""
        with self._lock:
            self._generation += 1
            self._versions.clear()

    def forget(self, index_id: str) -> None:
        """Drop the memory copy (after a build or a definition change).

        An index id also drops its as-of keys (a definition change or removal
        deletes their results).
        """
        prefix = as_of_prefix(index_id)
        with self._lock:
            self._generation += 1
            self._versions.pop(index_id, None)
            for key in [k for k in self._versions if k.startswith(prefix)]:
                del self._versions[key]


@dataclass
class Services:
    """Long-lived objects of one API process."""

    settings: Settings
    store: DuckDBStore
    reader: IndexReader
    builder: IndexBuilder
    cache: ResponseCache
    jobs: JobQueue
    versions: BuildVersions
    flags: FlagStore | None = None
    clock: Callable[[], dt.datetime] = utc_now
    """Aware UTC now (readiness judges data freshness with it; tests set a fake one)."""
    build_outcomes: BuildOutcomes = field(default_factory=BuildOutcomes)
    auth: ApiKeyAuth | None = None
    rate_limiter: RateLimiter | None = None
    exports: ExportFiles | None = None
    """The files of export jobs (set by ``build_services``)."""
    runner: JobRunner | None = None
    """Runs this process's jobs (in-process queue) and records builds made outside jobs."""
    freshness: Freshness | None = None

    def __post_init__(self) -> None:
        if self.runner is None:
            self.runner = JobRunner(
                self.store,
                self.builder.calendar,
                builder=self.builder,
                reader=self.reader,
                exports=self.exports,
                outcomes=self.build_outcomes,
                on_published=self.forget_published,
                clock=lambda: self.clock(),
            )
        if self.freshness is None:
            self.freshness = Freshness(self)

    @property
    def job_runner(self) -> JobRunner:
        """The runner (always set after construction)."""
        assert self.runner is not None
        return self.runner

    def refresh_store(self) -> None:
        """Read the newest version another process wrote; drop the caches if any."""
        if self.store.refresh():
            self.invalidate_caches()

    def refresh_now(self) -> None:
        """Read the newest version at once (not waiting for the refresh interval)."""
        if self.store.refresh(force=True):
            self.invalidate_caches()

    def invalidate_caches(self) -> None:
        """After builds made outside the API's routes (the daily cycle, another process):
        forget the in-memory build versions and drop the local cache tier. Redis keys
        name a build version, so they can never answer for a newer build."""
        self.versions.forget_all()
        if self.cache.local is not None:
            self.cache.local.clear()

    def forget_published(self, keys: Sequence[str]) -> None:
        """A build of this process wrote (or tried to write) ``keys``: forget their
        versions at once."""
        for key in keys:
            self.versions.forget(key)

    # the job runner's checks and runs, under the names the routes and tests use
    def check_build(self, request: BuildRequest) -> int:
        """Validate a build request; returns how many trading days it will compute."""
        return self.job_runner.check_build(request)

    def run_build(self, request: BuildRequest, progress: ProgressCallback) -> dict[str, Any]:
        """Run a POST /build-index job here (see :meth:`JobRunner.run_build`)."""
        return self.job_runner.run_build(request, progress)

    def buildable(self, indices: list[str] | None) -> BuildsRequest:
        """Validate a POST /builds request (see :meth:`JobRunner.buildable`)."""
        return self.job_runner.buildable(indices)

    def run_builds(self, request: BuildsRequest, progress: ProgressCallback) -> dict[str, Any]:
        """Run a POST /builds job here (see :meth:`JobRunner.run_builds`)."""
        return self.job_runner.run_builds(request, progress)

    def record_builds(self, results: list[BuildResult]) -> None:
        """Count builds made outside jobs (the in-process daily cycle, a rollback) in
        the metrics, and remember their outcomes for readiness."""
        self.job_runner.record_builds(results)


class Freshness:
    """Brings a store other processes write (the lake) to its newest version before
    a request is answered: at most every INDEX_BUILDER_LAKE_REFRESH_SECONDS it reads
    the newest commit id (one small catalog query) and, when another process
    committed since, loads that version and drops the caches.

    One refresh at a time; a request that arrives while one is under way waits for
    it, so once the process answered from a version it never answers from an older
    one. The DuckDB file has no other writer: nothing to do.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Refresh first when it is due (or wait for the refresh under way)."""
        store = self.services.store
        if not (self._lock.locked() or store.refresh_due()):
            return
        async with self._lock:
            if store.refresh_due():
                await run_in_threadpool(self.services.refresh_store)

    async def at_least(self, version: int | None) -> None:
        """Read at least store version ``version`` from now on (a job this process
        reports finished was published there: whoever saw it finish reads its result
        here at once)."""
        if not version or store_head(self.services.store) >= version:
            return
        async with self._lock:
            if store_head(self.services.store) < version:
                await run_in_threadpool(self.services.refresh_now)


class FreshnessMiddleware:
    """Runs :meth:`Freshness.ensure` before every HTTP request (pure ASGI: no cost
    beyond a time comparison when no refresh is due)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            services: Services | None = getattr(scope["app"].state, "services", None)
            if services is not None and services.freshness is not None:
                await services.freshness.ensure()
        await self.app(scope, receive, send)


def make_job_queue(services: Services) -> JobQueue:
    """The job queue the settings choose (:func:`~index_builder.services.queue.queue_mode`):
    Redis, shared with every API process and run by ``index-builder worker``; or this
    process's threads, with the jobs recorded in the store (the previous process's
    answer after a restart) and the export folder swept."""
    from index_builder.api.routers import exports  # the routes import this module
    from index_builder.storage.duckdb.jobs import DuckDBJobRecords

    settings = services.settings
    if queue_mode(settings) == "redis":
        assert settings.redis_url is not None
        return RedisQueue(
            settings.redis_url,
            keep=settings.jobs_keep,
            on_drop=lambda job: exports.drop_file(services, job),
            lease_seconds=settings.job_lease_seconds,
            wait_seconds=settings.request_timeout_seconds,
        )
    queue = JobManager(
        services.run_build,
        workers=settings.build_workers,
        keep=settings.jobs_keep,
        records=DuckDBJobRecords(services.store),
        export_workers=settings.export_workers,
        on_drop=lambda job: exports.drop_file(services, job),
        builds=services.run_builds,
        export=services.job_runner.run,
    )
    services.jobs = queue
    exports.sweep_files(services)  # files of jobs dropped or interrupted, and expired ones
    return queue


async def get_services(request: Request) -> Services:
    """The app's services (async: a sync dependency would cost a thread hop per request),
    on the newest version of the store (:class:`Freshness`)."""
    services: Services = request.app.state.services
    if services.freshness is not None:
        await services.freshness.ensure()
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
