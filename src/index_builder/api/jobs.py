"""Builds and exports run by small worker pools, tracked as jobs that outlive the process.

A build job builds one index (:class:`BuildRequest`, POST /build-index) or several
(:class:`BuildsRequest`, POST /builds). Two builds of the same index never run
at once: a request identical to a job queued or running joins that job; any
other job waits in its worker for the lock of every index it builds (taken in
sorted order, so jobs over overlapping indices never deadlock), then for the
process's write gate.

An export job (:class:`ExportJobRequest`, POST /export-data with ``async``) writes
a file on a pool of its own; it only reads, so it takes no lock (an identical
export in flight is joined too).

Jobs are records (:class:`JobRecords`, the ``api_jobs`` table): every job lives in
memory, where GET /jobs/{id} reads it, and every change of status is written
through (progress stays in memory). When the manager starts, the jobs of the
previous process are loaded and those it left queued or running become
``interrupted``; so are the queued jobs a shutdown cancels. The newest ``keep``
jobs are kept, in memory and in the records; ``on_drop`` hears of every job
dropped (an export job's file is deleted with it).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from index_builder.errors import IndexBuilderError
from index_builder.export.files import expires_at

log = logging.getLogger("index_builder.jobs")

JobStatus = Literal["queued", "running", "succeeded", "failed", "interrupted"]
JobKind = Literal["build", "builds", "export"]
ProgressCallback = Callable[[str, float], None]
BuildFunction = Callable[["BuildRequest", ProgressCallback], dict[str, Any]]
BuildsFunction = Callable[["BuildsRequest", ProgressCallback], dict[str, Any]]
ExportFunction = Callable[["Job", ProgressCallback], dict[str, Any]]

FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "interrupted"})
INTERRUPTED_STATUS = 503
"""The ``status`` of an interrupted job's error: the service was unavailable."""


@dataclass(frozen=True)
class BuildRequest:
    """What to build: an index over [start, end] (levels always from its base date),
    from the current data or as of a moment (naive UTC)."""

    index: str
    start_date: dt.date | None
    end_date: dt.date | None
    as_of: dt.datetime | None = None

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


@dataclass
class Job:
    """One job's state, as ``GET /jobs/{id}`` reports it."""

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
    future: Future[dict[str, Any]] | None = field(default=None, repr=False)
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
        """Finished: succeeded, failed, or interrupted by a stop of the server."""
        return self.status in FINISHED


class JobRecords(Protocol):
    """Where jobs are kept across restarts (:class:`~index_builder.storage.duckdb.jobs.
    DuckDBJobRecords`). Records are dicts of the ``api_jobs`` columns."""

    def insert(self, record: dict[str, Any]) -> None: ...

    def update(self, record: dict[str, Any]) -> None: ...

    def delete(self, job_ids: Sequence[str]) -> None: ...

    def interrupt(self, at: dt.datetime) -> int: ...

    def recent(self, keep: int) -> list[dict[str, Any]]: ...


class JobManager:
    """Submits builds and exports to worker threads; keeps the last ``keep`` jobs."""

    def __init__(
        self,
        build: BuildFunction,
        *,
        workers: int = 1,
        keep: int = 1000,
        records: JobRecords | None = None,
        export_workers: int = 1,
        on_drop: Callable[[Job], None] | None = None,
    ) -> None:
        self._build = build
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="build")
        self._export_pool = ThreadPoolExecutor(
            max_workers=export_workers, thread_name_prefix="export"
        )
        self._lock = threading.Lock()
        self._index_locks: dict[str, threading.Lock] = {}
        self._jobs: dict[str, Job] = {}
        self._active: dict[JobRequest, Job] = {}
        self._keep = keep
        self._records = records
        self._on_drop = on_drop
        # held by every build of this process and by the in-process daily cycle, so a
        # build never runs while the cycle ingests and builds (and vice versa)
        self.write_gate = threading.RLock()
        if records is not None:
            self._restore(records)

    # ------------------------------------------------------------------ submit
    def submit(self, request: BuildRequest) -> tuple[Job, bool]:
        """Queue a build, or join the identical one in flight. Returns (job, joined)."""
        return self._submit(request, lambda job, progress: self._build(request, progress))

    def submit_many(self, request: BuildsRequest, build: BuildsFunction) -> tuple[Job, bool]:
        """Queue a build of several indices run by ``build``, or join the identical
        one in flight. Returns (job, joined)."""
        return self._submit(request, lambda job, progress: build(request, progress))

    def submit_export(self, request: ExportJobRequest, export: ExportFunction) -> tuple[Job, bool]:
        """Queue an export run by ``export(job, progress)`` on the export pool, or join
        the identical one in flight. Returns (job, joined)."""
        return self._submit(request, export)

    def _submit(self, request: JobRequest, run: ExportFunction) -> tuple[Job, bool]:
        """Queue the job and record it.

        The record is written outside the manager's lock (pollers never wait for the
        database); the worker starts only once it is written, so the job's writes
        come in order. A job that cannot be recorded fails (the caller gets the
        storage error; a request that joined it meanwhile, the job's failure).
        """
        with self._lock:
            active = self._active.get(request)
            if active is not None and not active.done:
                return active, True
            job = Job(id=uuid.uuid4().hex, request=request)
            job.run = lambda progress: run(job, progress)
            self._jobs[job.id] = job
            self._active[request] = job
            for index in request.indices:
                self._index_locks.setdefault(index, threading.Lock())
            pool = self._export_pool if job.kind == "export" else self._pool
            job.future = pool.submit(self._run, job)
            dropped = self._trim()
        try:
            if self._records is not None:
                self._records.insert(_record(job))
        except BaseException as exc:
            job.record_error = exc
            raise
        finally:
            job.recorded.set()
        self._dropped(dropped)
        return job, False

    # ------------------------------------------------------------------ read
    def get(self, job_id: str) -> Job | None:
        """A job by id (memory only: every kept job is there)."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every kept job, oldest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at)

    def shutdown(self) -> None:
        """Stop accepting work; wait for running jobs to finish. Jobs still queued are
        cancelled and recorded ``interrupted``."""
        for pool in (self._pool, self._export_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            cancelled = [j for j in self._jobs.values() if j.status == "queued"]
        for job in cancelled:
            self._interrupt(job, "the server stopped before the job started")

    # ------------------------------------------------------------------ run
    def _run(self, job: Job) -> dict[str, Any]:
        def progress(stage: str, fraction: float) -> None:
            job.stage, job.progress = stage, max(job.progress, min(fraction, 1.0))

        assert job.run is not None
        job.recorded.wait()
        if job.record_error is not None:
            self._finish(job, "failed", error=_problem(job.record_error), write=False)
            raise job.record_error
        with ExitStack() as held:
            if job.kind != "export":  # exports only read: no lock
                for index in sorted(set(job.request.indices)):  # one order: no deadlock
                    held.enter_context(self._index_locks[index])
                held.enter_context(self.write_gate)
            job.status, job.stage = "running", "starting"
            job.started_at = dt.datetime.now(dt.UTC)
            self._write(job)
            try:
                result = job.run(progress)
            except Exception as exc:
                self._finish(job, "failed", error=_problem(exc))
                raise
            self._finish(job, "succeeded", result=result)
            return result

    def _finish(self, job: Job, status: JobStatus, *, write: bool = True, **outcome: Any) -> None:
        with self._lock:
            # the outcome first: a poller that sees the status sees it too
            job.finished_at = dt.datetime.now(dt.UTC)
            job.result = outcome.get("result")
            job.error = outcome.get("error")
            if status == "succeeded":
                job.progress, job.stage = 1.0, "done"
            elif status == "interrupted":
                job.stage = "interrupted"
            job.status = status
            if self._active.get(job.request) is job:
                del self._active[job.request]
        if write:
            self._write(job)

    def _interrupt(self, job: Job, detail: str) -> None:
        self._finish(
            job,
            "interrupted",
            error={"type": "interrupted", "status": INTERRUPTED_STATUS, "detail": detail},
        )

    def _write(self, job: Job) -> None:
        """Write the job's state through; a failure is logged (the job goes on)."""
        if self._records is None:
            return
        try:
            self._records.update(_record(job))
        except Exception:
            log.exception("could not record the state of job %s", job.id)

    # ------------------------------------------------------------------ bounds
    def _trim(self) -> list[Job]:
        """Drop the oldest finished jobs beyond ``keep`` (under the lock); returns them."""
        if len(self._jobs) <= self._keep:
            return []
        finished = [j for j in self._jobs.values() if j.done]
        dropped = sorted(finished, key=lambda j: j.created_at)[: len(self._jobs) - self._keep]
        for old in dropped:
            del self._jobs[old.id]
        return dropped

    def _dropped(self, dropped: list[Job]) -> None:
        if not dropped:
            return
        if self._records is not None:
            self._records.delete([j.id for j in dropped])
        if self._on_drop is not None:
            for job in dropped:
                self._on_drop(job)

    def _restore(self, records: JobRecords) -> None:
        """Load the previous processes' jobs; those left unfinished are interrupted."""
        interrupted = records.interrupt(dt.datetime.now(dt.UTC).replace(tzinfo=None))
        if interrupted:
            log.warning("%d job(s) of the previous server process were interrupted", interrupted)
        for row in reversed(records.recent(self._keep)):
            try:
                job = _job(row)
            except (KeyError, TypeError, ValueError):
                log.exception("unreadable job record %s: ignored", row.get("job_id"))
                continue
            self._jobs[job.id] = job


def _problem(exc: BaseException) -> dict[str, Any]:
    """The ``error`` of a failed job (problem details fields)."""
    if isinstance(exc, IndexBuilderError):
        return {
            "type": exc.code,
            "status": exc.http_status,
            "detail": exc.message,
            "field": exc.field,
        }
    return {"type": "internal-error", "status": 500, "detail": str(exc)[:500]}


# ---------------------------------------------------------------------- GET /jobs/{id}
def job_payload(job: Job, now: dt.datetime | None = None) -> dict[str, Any]:
    """What GET /jobs/{id} answers (JobStatusResponse)."""
    request = job.request
    return {
        "job_id": job.id,
        "kind": job.kind,
        "index": None if isinstance(request, BuildsRequest) else request.index,
        "indices": list(request.indices),
        "status": job.status,
        "stage": job.stage,
        "progress": round(job.progress, 4),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "result": job.result,
        "error": job.error,
        "download_url": download_url(job, now),
    }


def download_url(job: Job, now: dt.datetime | None = None) -> str | None:
    """The relative URL of a succeeded export job's file, until it expires."""
    if job.kind != "export" or job.status != "succeeded":
        return None
    expiry = expires_at(job.result)
    if expiry is None or expiry <= (now or dt.datetime.now(dt.UTC)):
        return None
    return f"/exports/{job.id}/file"


# ---------------------------------------------------------------------- records
def _request_json(request: JobRequest) -> dict[str, Any]:
    if isinstance(request, BuildsRequest):
        return {"indices": list(request.indices), "skipped": [list(s) for s in request.skipped]}
    return {k: getattr(request, k) for k in request.__dataclass_fields__}


def _request_from(kind: str, data: dict[str, Any]) -> JobRequest:
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
    if kind == "build":
        return BuildRequest(data["index"], *dates, moment)
    if kind == "export":
        return ExportJobRequest(data["index"], *dates, data["format"], moment)
    raise ValueError(f"unknown job kind {kind!r}")


def _json(value: Any) -> str | None:
    # the API's encoding (orjson, numpy values as numbers): a reloaded result reads the same
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _naive(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(dt.UTC).replace(tzinfo=None)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.replace(tzinfo=dt.UTC)


def _record(job: Job) -> dict[str, Any]:
    """The record of a job (JSON text, naive UTC timestamps)."""
    return {
        "job_id": job.id,
        "kind": job.kind,
        "request": _json(_request_json(job.request)),
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "created_at": _naive(job.created_at),
        "started_at": _naive(job.started_at),
        "finished_at": _naive(job.finished_at),
        "result": _json(job.result),
        "error": _json(job.error),
    }


def _job(row: dict[str, Any]) -> Job:
    """A job of a previous process from its record."""
    created = _aware(row["created_at"])
    assert created is not None
    return Job(
        id=row["job_id"],
        request=_request_from(row["kind"], orjson.loads(row["request"])),
        status=row["status"],
        progress=float(row["progress"]),
        stage=row["stage"],
        created_at=created,
        started_at=_aware(row["started_at"]),
        finished_at=_aware(row["finished_at"]),
        result=None if row["result"] is None else orjson.loads(row["result"]),
        error=None if row["error"] is None else orjson.loads(row["error"]),
    )
