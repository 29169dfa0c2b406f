"""What the routes depend on: one :class:`Services` per app, injected with ``Annotated``."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from index_builder.api.cache import ResponseCache
from index_builder.api.jobs import BuildRequest, BuildsRequest, JobManager, ProgressCallback
from index_builder.export.files import ExportFiles
from index_builder.ops.auth import ApiKeyAuth
from index_builder.ops.flags import FlagStore
from index_builder.ops.metrics import BUILD_DURATION, BUILD_FAILURES
from index_builder.ops.ratelimit import RateLimiter
from index_builder.ops.state import BuildOutcome, BuildOutcomes, utc_now
from index_builder.point_in_time import AS_OF_SEPARATOR, as_of_prefix, format_as_of, result_key
from index_builder.services.builds import BuildResult, IndexBuilder, no_market_data
from index_builder.services.queries import IndexReader
from index_builder.settings import Settings
from index_builder.storage.duckdb.store import DuckDBStore

OUTCOMES = ("built", "unchanged", "failed")


class BuildVersions:
    """The build version of each result key (index id, or ``<id>@<as of>``), in memory.

    Cache keys need it on every GET. This process is the only writer of the
    database (DuckDB locks the file), and every build, definition change and
    removal here calls :meth:`forget`, so the memory copy is never stale.
    """

    def __init__(self, store: DuckDBStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._versions: dict[str, int | None] = {}

    def known(self, index_id: str) -> bool:
        """True when the version is in memory (no database query needed)."""
        with self._lock:
            return index_id in self._versions

    def get(self, index_id: str) -> int | None:
        """The current build version (None: never built), from memory or the store."""
        with self._lock:
            if index_id in self._versions:
                return self._versions[index_id]
        state = self._store.build_state(index_id)
        version = state.version if state is not None else None
        if version is None and AS_OF_SEPARATOR in index_id:
            return None  # as-of moments are the caller's to choose: remember built ones only
        with self._lock:
            self._versions[index_id] = version
        return version

    def forget_all(self) -> None:
        """Drop every memory copy (after the daily cycle rebuilt the indices)."""
        with self._lock:
            self._versions.clear()

    def forget(self, index_id: str) -> None:
        """Drop the memory copy (after a build or a definition change).

        An index id also drops its as-of keys (a definition change or removal
        deletes their results).
        """
        prefix = as_of_prefix(index_id)
        with self._lock:
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
    jobs: JobManager
    versions: BuildVersions
    flags: FlagStore | None = None
    clock: Callable[[], dt.datetime] = utc_now
    """Aware UTC now (readiness judges data freshness with it; tests set a fake one)."""
    build_outcomes: BuildOutcomes = field(default_factory=BuildOutcomes)
    auth: ApiKeyAuth | None = None
    rate_limiter: RateLimiter | None = None
    exports: ExportFiles | None = None
    """The files of export jobs (set by ``build_services``)."""

    def invalidate_caches(self) -> None:
        """After builds made outside the API's routes (the daily cycle): forget the
        in-memory build versions and drop the local cache tier. Redis keys name a
        build version, so they can never answer for a newer build."""
        self.versions.forget_all()
        if self.cache.local is not None:
            self.cache.local.clear()

    def check_build(self, request: BuildRequest) -> int:
        """Validate a build request; returns how many trading days it will compute."""
        definition = self.builder.check_window(
            request.index, request.start_date, request.end_date, request.as_of
        )
        days = self.store.trading_days(request.as_of)
        plan = self.builder.plan(definition, days, request.end_date, as_of=request.as_of)
        if plan.up_to_date:
            return 0
        return sum(1 for d in days if plan.first_day < d <= plan.end) + 1

    def run_build(self, request: BuildRequest, progress: ProgressCallback) -> dict[str, Any]:
        """Build (incrementally, or in full as of a moment) and describe the window.

        A failed build raises its error (the job fails; a synchronous request
        answers its problem+json)."""
        key = result_key(request.index, request.as_of)
        started = time.perf_counter()
        try:
            (result,) = self.builder.build(
                [request.index], end=request.end_date, as_of=request.as_of, progress=progress
            )
        except Exception as exc:
            self._build_finished(request.index, request.as_of, time.perf_counter() - started, exc)
            raise
        finally:
            self.versions.forget(key)
        self._build_finished(
            request.index, request.as_of, time.perf_counter() - started, result.error
        )
        result.raise_for_failure()
        state = self.store.build_state(key)
        assert state is not None
        start = request.start_date or state.base_date
        end = min(request.end_date or state.built_through, state.built_through)
        levels = self.store.read_levels(key, start, end)
        _, changes = self.reader.changes(request.index, start, end, request.as_of)
        rebalances = levels.column("is_rebalance").to_pylist()
        return {
            "index": request.index,
            "outcome": result.outcome,
            "mode": result.mode,
            "start_date": start,
            "end_date": end,
            "trading_days": levels.num_rows,
            "rebalances": sum(1 for r in rebalances if r),
            "changes": len(changes),
            "duration_ms": result.duration_ms,
            "version": state.version,
            "warnings": list(result.warnings),
            "as_of": None if state.as_of is None else format_as_of(state.as_of),
        }

    def buildable(self, indices: list[str] | None) -> BuildsRequest:
        """Validate a request to build several indices (None: every definition).

        Named indices must exist and be allowed by the feature flags (404 / 409,
        like POST /build-index); of every definition, those a flag switches off
        are left out and reported as skipped. No market data at all is a 404.
        """
        if self.store.last_trading_day() is None:
            raise no_market_data(None)
        if indices is not None:
            ids = list(dict.fromkeys(indices))  # in order, once each
            for index in ids:
                self.builder.check_window(index, None, None)
            return BuildsRequest(tuple(ids))
        every = [d.id for d, _ in self.store.list_definitions()]
        off = self.builder.switched_off(every)
        return BuildsRequest(
            tuple(i for i in every if i not in off), skipped=tuple(sorted(off.items()))
        )

    def run_builds(self, request: BuildsRequest, progress: ProgressCallback) -> dict[str, Any]:
        """Build several indices from one market panel; one index's failure is its
        outcome, not the job's. Raises only for what concerns every index (no
        market data): then each index is recorded as failed."""
        started = time.perf_counter()

        def finished(result: BuildResult) -> None:
            self.versions.forget(result.index_id)  # published: forget it at once
            self.record_builds([result])

        try:
            results = self.builder.build(
                list(request.indices), on_index=finished, progress=progress
            )
        except Exception as exc:
            seconds = time.perf_counter() - started
            for index in request.indices:
                self.versions.forget(index)
                self._build_finished(index, None, seconds, exc)
            raise
        counts = {o: sum(1 for r in results if r.outcome == o) for o in OUTCOMES}
        return {
            "outcomes": [r.as_dict() for r in results],
            **counts,
            "skipped": [{"index": i, "reason": why} for i, why in request.skipped],
        }

    def record_builds(self, results: list[BuildResult]) -> None:
        """Count builds made outside the API's routes (the in-process daily cycle)
        in the metrics, and remember their outcomes for readiness."""
        for r in results:
            self._build_finished(r.index_id, r.as_of, r.duration_ms / 1000, r.error)

    def _build_finished(
        self,
        index: str,
        as_of: dt.datetime | None,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """Count the build in the metrics and remember the outcome of a current build."""
        BUILD_DURATION.labels(index=index).observe(seconds)
        if error is not None:
            BUILD_FAILURES.labels(index=index).inc()
        if as_of is None:  # as-of builds reproduce the past: not the index's health
            self.build_outcomes.record(
                index,
                BuildOutcome(
                    status="ok" if error is None else "failed",
                    finished_at=self.clock(),
                    duration_seconds=seconds,
                    error=None if error is None else str(error)[:500],
                ),
            )


async def get_services(request: Request) -> Services:
    """The app's services (async: a sync dependency would cost a thread hop per request)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
