"""Index builds run by a small worker pool, tracked as jobs.

A job builds one index (:class:`BuildRequest`, POST /build-index) or several
(:class:`BuildsRequest`, POST /builds). Two builds of the same index never run
at once: a request identical to a job queued or running joins that job; any
other job waits in its worker for the lock of every index it builds (taken in
sorted order, so jobs over overlapping indices never deadlock), then for the
process's write gate.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

from index_builder.errors import IndexBuilderError

JobStatus = Literal["queued", "running", "succeeded", "failed"]
ProgressCallback = Callable[[str, float], None]
BuildFunction = Callable[["BuildRequest", ProgressCallback], dict[str, Any]]
BuildsFunction = Callable[["BuildsRequest", ProgressCallback], dict[str, Any]]


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


JobRequest = BuildRequest | BuildsRequest


@dataclass
class Job:
    """One build's state, as ``GET /jobs/{id}`` reports it."""

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

    @property
    def done(self) -> bool:
        """Finished, successfully or not."""
        return self.status in ("succeeded", "failed")


class JobManager:
    """Submits builds to worker threads; keeps the last ``keep`` jobs."""

    def __init__(self, build: BuildFunction, *, workers: int = 1, keep: int = 1000) -> None:
        self._build = build
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="build")
        self._lock = threading.Lock()
        self._index_locks: dict[str, threading.Lock] = {}
        self._jobs: dict[str, Job] = {}
        self._active: dict[JobRequest, Job] = {}
        self._keep = keep
        # held by every build of this process and by the in-process daily cycle, so a
        # build never runs while the cycle ingests and builds (and vice versa)
        self.write_gate = threading.RLock()

    def submit(self, request: BuildRequest) -> tuple[Job, bool]:
        """Queue a build, or join the identical one in flight. Returns (job, joined)."""
        return self._submit(request, lambda progress: self._build(request, progress))

    def submit_many(self, request: BuildsRequest, build: BuildsFunction) -> tuple[Job, bool]:
        """Queue a build of several indices run by ``build``, or join the identical
        one in flight. Returns (job, joined)."""
        return self._submit(request, lambda progress: build(request, progress))

    def _submit(
        self, request: JobRequest, run: Callable[[ProgressCallback], dict[str, Any]]
    ) -> tuple[Job, bool]:
        with self._lock:
            active = self._active.get(request)
            if active is not None and not active.done:
                return active, True
            job = Job(id=uuid.uuid4().hex, request=request, run=run)
            self._jobs[job.id] = job
            self._active[request] = job
            for index in request.indices:
                self._index_locks.setdefault(index, threading.Lock())
            self._trim()
            job.future = self._pool.submit(self._run, job)
            return job, False

    def get(self, job_id: str) -> Job | None:
        """A job by id."""
        with self._lock:
            return self._jobs.get(job_id)

    def shutdown(self) -> None:
        """Stop accepting work; wait for running builds to finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job) -> dict[str, Any]:
        def progress(stage: str, fraction: float) -> None:
            job.stage, job.progress = stage, max(job.progress, min(fraction, 1.0))

        assert job.run is not None
        with ExitStack() as held:
            for index in sorted(set(job.request.indices)):  # one order: no deadlock
                held.enter_context(self._index_locks[index])
            held.enter_context(self.write_gate)
            job.status, job.stage = "running", "starting"
            job.started_at = dt.datetime.now(dt.UTC)
            try:
                result = job.run(progress)
            except IndexBuilderError as exc:
                self._finish(
                    job,
                    "failed",
                    error={
                        "type": exc.code,
                        "status": exc.http_status,
                        "detail": exc.message,
                        "field": exc.field,
                    },
                )
                raise
            except Exception as exc:
                self._finish(
                    job,
                    "failed",
                    error={
                        "type": "internal-error",
                        "status": 500,
                        "detail": str(exc)[:500],
                    },
                )
                raise
            self._finish(job, "succeeded", result=result)
            return result

    def _finish(self, job: Job, status: JobStatus, **outcome: Any) -> None:
        with self._lock:
            job.status = status
            job.finished_at = dt.datetime.now(dt.UTC)
            job.result = outcome.get("result")
            job.error = outcome.get("error")
            if status == "succeeded":
                job.progress, job.stage = 1.0, "done"
            if self._active.get(job.request) is job:
                del self._active[job.request]

    def _trim(self) -> None:
        if len(self._jobs) <= self._keep:
            return
        finished = [j for j in self._jobs.values() if j.done]
        for old in sorted(finished, key=lambda j: j.created_at)[: len(self._jobs) - self._keep]:
            del self._jobs[old.id]
