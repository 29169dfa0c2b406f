"""The life of a job, wherever it runs: what it asks for, how it runs, how it ends.

A job builds one index (:class:`BuildRequest`, POST /build-index), several
(:class:`BuildsRequest`, POST /builds) or exports one window to a file
(:class:`ExportJobRequest`, POST /export-data with ``async``). :class:`JobRunner`
runs any of them from the store it is given and does everything that follows
a build: the build metrics, the outcome readiness reads, and ``on_published``
(the API process forgets its cached build versions; another process sees the
new version when it refreshes). The same runner serves the in-process queue of
``index-builder serve`` and ``index-builder worker``
(:mod:`index_builder.services.queue`); the API only submits and reads.

A job is ``queued``, then ``running``, then ``succeeded``, ``failed``,
``cancelled`` (at the client's request: a queued job never starts, a running one
stops at its next stage; what a build already stored stays) or ``interrupted``
(its process stopped or died first: ``retry`` runs it again, under the same id).
Records (:func:`job_record`, :func:`job_from_record`) are the same dicts in the
store's ``api_jobs`` table and in Redis.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import orjson

from index_builder.calendar import SessionCalendar
from index_builder.errors import IndexBuilderError
from index_builder.export.files import ExportFiles
from index_builder.export.service import ExportFormat
from index_builder.ops.flags import FlagStore
from index_builder.ops.metrics import (
    BUILD_DURATION,
    BUILD_FAILURES,
    EXPORT_DURATION,
    EXPORT_FAILURES,
)
from index_builder.ops.state import BuildOutcome, BuildOutcomes, utc_now
from index_builder.point_in_time import format_as_of, result_key
from index_builder.services.builds import BuildResult, IndexBuilder, no_market_data
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

log = logging.getLogger("index_builder.jobs")

JobStatus = Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled"]
JobKind = Literal["build", "builds", "export"]
ProgressCallback = Callable[[str, float], None]

FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "interrupted", "cancelled"})
RETRYABLE: frozenset[str] = frozenset({"failed", "interrupted", "cancelled"})
INTERRUPTED_STATUS = 503
"""The ``status`` of an interrupted job's error: the service was unavailable."""
CANCELLED_STATUS = 409
"""The ``status`` of a cancelled job's error: it conflicts with the request to cancel."""
OUTCOMES = ("built", "unchanged", "failed")


# ---------------------------------------------------------------------- requests
@dataclass(frozen=True)
class BuildRequest:
    """What to build: an index over [start, end] (levels always from its base date),
    from the current data, as of a moment (naive UTC) or as of a version."""

    index: str
    start_date: dt.date | None
    end_date: dt.date | None
    as_of: dt.datetime | None = None
    as_of_version: int | None = None

    @property
    def indices(self) -> tuple[str, ...]:
        """The indices the job builds (their locks)."""
        return (self.index,)


@dataclass(frozen=True)
class BuildsRequest:
    """Build several indices in one job (each through the last trading day,
    incrementally); one index's failure is its own outcome, not the job's.

    ``skipped``: (index, reason) of the indices a feature flag switched off when
    the request was accepted (not built, reported with the result).
    """

    indices: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ExportJobRequest:
    """Export one index window to a file (``format``: xlsx, csv or parquet)."""

    index: str
    start_date: dt.date | None
    end_date: dt.date | None
    format: str
    as_of: dt.datetime | None = None
    as_of_version: int | None = None

    @property
    def indices(self) -> tuple[str, ...]:
        """The index exported."""
        return (self.index,)


JobRequest = BuildRequest | BuildsRequest | ExportJobRequest


def job_kind(request: JobRequest) -> JobKind:
    """``build`` (POST /build-index), ``builds`` (POST /builds) or ``export``."""
    if isinstance(request, BuildRequest):
        return "build"
    if isinstance(request, BuildsRequest):
        return "builds"
    return "export"


# ---------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One job's state, as ``GET /jobs/{id}`` reports it (plus what runs it in-process)."""

    id: str
    request: JobRequest
    status: JobStatus = "queued"
    progress: float = 0.0
    stage: str = "queued"
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempt: int = 1
    """1, then one more for every retry."""
    cancel_requested: bool = False
    published: int | None = None
    """The store version (the lake's commit id) its worker had when it ended: a process
    that reports the job ended first reads at least that version."""
    future: Any = field(default=None, repr=False)
    """The in-process queue's ``Future`` of the running attempt (None elsewhere)."""
    run: Callable[[ProgressCallback], dict[str, Any]] | None = field(default=None, repr=False)
    recorded: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set once the job's record is written (or could not be): its worker waits for it."""
    record_error: BaseException | None = field(default=None, repr=False)

    @property
    def kind(self) -> JobKind:
        """What the job does: ``build``, ``builds`` or ``export``."""
        return job_kind(self.request)

    @property
    def done(self) -> bool:
        """Finished: succeeded, failed, cancelled or interrupted."""
        return self.status in FINISHED


class JobCancelled(IndexBuilderError):
    """The job was cancelled at the client's request (raised at its next stage)."""

    code = "cancelled"
    http_status = CANCELLED_STATUS


class JobFailed(IndexBuilderError):
    """The failure of a job that ran in another process, as its problem fields say
    (a synchronous build answers it like the error the job met)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("detail") or "the job failed"), field=error.get("field"))
        self.code = str(error.get("type") or "internal-error")
        self.http_status = int(error.get("status") or 500)


def store_head(store: Any) -> int:
    """The version of the store a process reads: the lake's newest commit id it loaded
    (0: none, or a DuckDB file, which has no other writer)."""
    head = getattr(store, "head", None)
    commit_id = getattr(head, "commit_id", 0)
    return commit_id if isinstance(commit_id, int) else 0


def problem(exc: BaseException) -> dict[str, Any]:
    """The ``error`` of a failed job (problem details fields)."""
    if isinstance(exc, IndexBuilderError):
        return {
            "type": exc.code,
            "status": exc.http_status,
            "detail": exc.message,
            "field": exc.field,
        }
    return {"type": "internal-error", "status": 500, "detail": str(exc)[:500]}


def interrupted_error(detail: str) -> dict[str, Any]:
    """The ``error`` of an interrupted job."""
    return {"type": "interrupted", "status": INTERRUPTED_STATUS, "detail": detail}


def cancelled_error(detail: str = "cancelled at the client's request") -> dict[str, Any]:
    """The ``error`` of a cancelled job."""
    return {"type": "cancelled", "status": CANCELLED_STATUS, "detail": detail}


def cancellable(job: Job, progress: ProgressCallback) -> ProgressCallback:
    """``progress`` that stops a job whose cancel was requested, at its next stage
    short of the end (a stage at 1.0 is reported after the results are stored)."""

    def report(stage: str, fraction: float) -> None:
        if job.cancel_requested and fraction < 1.0:
            raise JobCancelled(f"job {job.id} cancelled during '{stage}'", field="job_id")
        progress(stage, fraction)

    return report


# ---------------------------------------------------------------------- records
class JobRecords(Protocol):
    """Where jobs are kept across restarts (:class:`~index_builder.storage.duckdb.jobs.
    DuckDBJobRecords`). Records are dicts of the ``api_jobs`` columns."""

    def insert(self, record: dict[str, Any]) -> None: ...

    def update(self, record: dict[str, Any]) -> None: ...

    def delete(self, job_ids: Sequence[str]) -> None: ...

    def interrupt(self, at: dt.datetime) -> int: ...

    def recent(self, keep: int) -> list[dict[str, Any]]: ...


def request_json(request: JobRequest) -> dict[str, Any]:
    """A request as JSON-ready values (dates as dates: :func:`to_json` encodes them)."""
    if isinstance(request, BuildsRequest):
        return {"indices": list(request.indices), "skipped": [list(s) for s in request.skipped]}
    return {k: getattr(request, k) for k in request.__dataclass_fields__}


def request_from(kind: str, data: dict[str, Any]) -> JobRequest:
    """The request of a record (``kind``, and ``request`` decoded)."""
    if kind == "builds":
        return BuildsRequest(
            tuple(data["indices"]), tuple((i, why) for i, why in data.get("skipped", ()))
        )
    start, end, as_of = data.get("start_date"), data.get("end_date"), data.get("as_of")
    dates = (
        dt.date.fromisoformat(start) if start else None,
        dt.date.fromisoformat(end) if end else None,
    )
    moment = dt.datetime.fromisoformat(as_of) if as_of else None
    version = data.get("as_of_version")
    if kind == "build":
        return BuildRequest(data["index"], *dates, moment, version)
    if kind == "export":
        return ExportJobRequest(data["index"], *dates, data["format"], moment, version)
    raise ValueError(f"unknown job kind {kind!r}")


def request_digest(request: JobRequest) -> str:
    """A stable name of a request: identical requests (which join one job) share it."""
    text = job_kind(request).encode() + b":" + to_json(request_json(request)).encode()
    return hashlib.sha256(text).hexdigest()[:32]


def to_json(value: Any) -> str:
    """The API's encoding (orjson, numpy values as numbers): a reloaded result reads
    the same."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _json(value: Any) -> str | None:
    return None if value is None else to_json(value)


def _naive(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(dt.UTC).replace(tzinfo=None)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.replace(tzinfo=dt.UTC)


def job_record(job: Job) -> dict[str, Any]:
    """The record of a job (the ``api_jobs`` columns: JSON text, naive UTC timestamps)."""
    return {
        "job_id": job.id,
        "kind": job.kind,
        "request": _json(request_json(job.request)),
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "created_at": _naive(job.created_at),
        "started_at": _naive(job.started_at),
        "finished_at": _naive(job.finished_at),
        "result": _json(job.result),
        "error": _json(job.error),
    }


def job_from_record(row: dict[str, Any]) -> Job:
    """A job from its record."""
    created = _aware(row["created_at"])
    assert created is not None
    return Job(
        id=row["job_id"],
        request=request_from(row["kind"], orjson.loads(row["request"])),
        status=row["status"],
        progress=float(row["progress"]),
        stage=row["stage"],
        created_at=created,
        started_at=_aware(row["started_at"]),
        finished_at=_aware(row["finished_at"]),
        result=None if row["result"] is None else orjson.loads(row["result"]),
        error=None if row["error"] is None else orjson.loads(row["error"]),
    )


# ---------------------------------------------------------------------- running
class JobRunner:
    """Runs jobs over one store, and does what follows each build.

    ``on_published(keys)`` hears of the result keys a build wrote or tried to (the
    API process forgets their cached build versions); ``outcomes`` remembers each
    current build's outcome for readiness; the build and export metrics are counted
    here. ``exports``: the folder export jobs write to (None: no export jobs).
    """

    def __init__(
        self,
        store: DuckDBStore,
        calendar: SessionCalendar,
        *,
        flags: FlagStore | None = None,
        builder: IndexBuilder | None = None,
        reader: IndexReader | None = None,
        exports: ExportFiles | None = None,
        outcomes: BuildOutcomes | None = None,
        on_published: Callable[[Sequence[str]], None] | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.store = store
        self.builder = builder or IndexBuilder(store, calendar, flags)
        self.reader = reader or IndexReader(store, calendar)
        self.exports = exports
        self.outcomes = outcomes if outcomes is not None else BuildOutcomes()
        self.on_published = on_published or (lambda _keys: None)
        self.clock = clock

    # ------------------------------------------------------------------ checks (before a job)
    def check_build(self, request: BuildRequest) -> int:
        """Validate a build request; returns how many trading days it will compute."""
        point = (request.as_of, request.as_of_version)
        definition = self.builder.check_window(
            request.index, request.start_date, request.end_date, *point
        )
        days = self.builder.trading_days(*point)
        plan = self.builder.plan(
            definition,
            days,
            request.end_date,
            as_of=request.as_of,
            as_of_version=request.as_of_version,
        )
        if plan.up_to_date:
            return 0
        return sum(1 for d in days if plan.first_day < d <= plan.end) + 1

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

    # ------------------------------------------------------------------ run
    def run(self, job: Job, progress: ProgressCallback) -> dict[str, Any]:
        """Run ``job`` (any kind); returns its result, raises its failure."""
        request = job.request
        if isinstance(request, BuildRequest):
            return self.run_build(request, progress)
        if isinstance(request, BuildsRequest):
            return self.run_builds(request, progress)
        return self.run_export(job.id, request, progress)

    def run_build(self, request: BuildRequest, progress: ProgressCallback) -> dict[str, Any]:
        """Build (incrementally, or in full as of a moment) and describe the window.

        A failed build raises its error (the job fails; a synchronous request
        answers its problem+json)."""
        key = result_key(request.index, request.as_of, request.as_of_version)
        past = request.as_of is not None or request.as_of_version is not None
        started = time.perf_counter()
        try:
            (result,) = self.builder.build(
                [request.index],
                end=request.end_date,
                as_of=request.as_of,
                as_of_version=request.as_of_version,
                progress=progress,
            )
        except JobCancelled:
            raise  # not a failure of the index
        except Exception as exc:
            seconds = time.perf_counter() - started
            self.build_finished(request.index, request.as_of, seconds, exc, past=past)
            raise
        finally:
            self.on_published([key])
        seconds = time.perf_counter() - started
        self.build_finished(request.index, request.as_of, seconds, result.error, past=past)
        result.raise_for_failure()
        state = self.store.build_state(key)
        assert state is not None
        start = request.start_date or state.base_date
        end = min(request.end_date or state.built_through, state.built_through)
        levels = self.store.read_levels(key, start, end)
        _, changes = self.reader.changes(
            request.index, start, end, request.as_of, request.as_of_version
        )
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
            "as_of_version": state.as_of_version,
        }

    def run_builds(self, request: BuildsRequest, progress: ProgressCallback) -> dict[str, Any]:
        """Build several indices from one market panel; one index's failure is its
        outcome, not the job's. Raises only for what concerns every index (no
        market data): then each index is recorded as failed."""
        started = time.perf_counter()

        def finished(result: BuildResult) -> None:
            self.on_published([result.index_id])  # published: forget it at once
            self.record_builds([result])

        try:
            results = self.builder.build(
                list(request.indices), on_index=finished, progress=progress
            )
        except JobCancelled:
            self.on_published(list(request.indices))
            raise
        except Exception as exc:
            seconds = time.perf_counter() - started
            self.on_published(list(request.indices))
            for index in request.indices:
                self.build_finished(index, None, seconds, exc)
            raise
        counts = {o: sum(1 for r in results if r.outcome == o) for o in OUTCOMES}
        return {
            "outcomes": [r.as_dict() for r in results],
            **counts,
            "skipped": [{"index": i, "reason": why} for i, why in request.skipped],
        }

    def run_export(
        self, job_id: str, request: ExportJobRequest, progress: ProgressCallback
    ) -> dict[str, Any]:
        """Write the export job's file to the export folder; returns its result."""
        if self.exports is None:
            raise RuntimeError("this runner has no export folder")
        fmt = cast(ExportFormat, request.format)
        started = time.perf_counter()
        try:
            return self.exports.write(
                self.reader,
                job_id,
                request.index,
                request.start_date,
                request.end_date,
                fmt,
                request.as_of,
                progress,
                request.as_of_version,
            )
        except BaseException as exc:
            count_export_failure(exc, fmt)
            raise
        finally:
            EXPORT_DURATION.labels(format=fmt).observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ outcomes
    def record_builds(self, results: Sequence[BuildResult]) -> None:
        """Count builds in the metrics and remember their outcomes for readiness (also
        for builds made outside jobs: the daily cycle, a rollback)."""
        for r in results:
            past = r.as_of_version is not None
            self.build_finished(r.index_id, r.as_of, r.duration_ms / 1000, r.error, past=past)

    def build_finished(
        self,
        index: str,
        as_of: dt.datetime | None,
        seconds: float,
        error: BaseException | None,
        *,
        past: bool = False,
    ) -> None:
        """Count the build in the metrics and remember the outcome of a current build
        (``past``: a build as of a moment or a version, not the current one)."""
        BUILD_DURATION.labels(index=index).observe(seconds)
        if error is not None:
            BUILD_FAILURES.labels(index=index).inc()
        # as-of builds reproduce the past: not the index's health
        if as_of is None and not past:
            self.outcomes.record(
                index,
                BuildOutcome(
                    status="ok" if error is None else "failed",
                    finished_at=self.clock(),
                    duration_seconds=seconds,
                    error=None if error is None else str(error)[:500],
                ),
            )


def count_export_failure(exc: BaseException, fmt: str) -> None:
    """Count a failed export (the client's errors, unknown index or unbuilt window, are
    not failures)."""
    if not isinstance(exc, IndexBuilderError) or exc.http_status >= 500:
        EXPORT_FAILURES.labels(format=fmt).inc()
