"""Where jobs wait and run: in the serving process, or on a Redis queue for any worker.

One small interface (:class:`JobQueue`), two backends:

* :class:`JobManager` (in-process, the default): small thread pools of the
  ``index-builder serve`` process run the jobs; every job lives in memory and
  each change of status is written through to the store's ``api_jobs`` table,
  so jobs outlive a restart (those a stopped process left unfinished become
  ``interrupted``). Two builds of one index never run at once: a job waits for
  the lock of every index it builds (in sorted order: no deadlock), then for the
  process's write gate (the in-process daily cycle holds it while it writes).
* :class:`RedisQueue` (``INDEX_BUILDER_REDIS_URL`` with the ``iceberg`` store):
  jobs are records in Redis and `rq <https://python-rq.org>`_ jobs;
  ``index-builder worker`` processes (:class:`QueueWorker`) run them, so every
  API process sees a job's state, progress and result, whichever process took
  the request. A job's transitions are Lua scripts: a job starts once (a second
  delivery, or a cancelled job, is skipped), and only its current attempt may
  report progress or finish it. A running job holds a lease its worker renews
  (INDEX_BUILDER_JOB_LEASE_SECONDS): a worker that dies leaves the job
  ``interrupted`` once the lease lapses, and ``retry`` queues it again.

In both, a request identical to a job queued or running joins that job; a
cancel stops a queued job at once and a running one at its next stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Literal, Protocol

import redis
from redis.exceptions import RedisError

from index_builder.errors import IndexBuilderError
from index_builder.services.jobs import (
    FINISHED,
    RETRYABLE,
    BuildRequest,
    BuildsRequest,
    ExportJobRequest,
    Job,
    JobCancelled,
    JobFailed,
    JobRecords,
    JobRequest,
    JobRunner,
    JobStatus,
    ProgressCallback,
    cancellable,
    cancelled_error,
    interrupted_error,
    job_from_record,
    job_record,
    problem,
    request_digest,
    request_from,
    request_json,
    store_head,
    to_json,
)
from index_builder.settings import Settings

log = logging.getLogger("index_builder.jobs")

BuildFunction = Callable[[BuildRequest, ProgressCallback], dict[str, Any]]
BuildsFunction = Callable[[BuildsRequest, ProgressCallback], dict[str, Any]]
ExportFunction = Callable[[Job, ProgressCallback], dict[str, Any]]
QueueMode = Literal["process", "redis"]


class QueueUnavailableError(IndexBuilderError):
    """The job queue (Redis) cannot be reached: 503 with Retry-After, CLI exit 1."""

    code = "queue-unavailable"
    exit_code = 1
    http_status = 503


class JobQueue(Protocol):
    """What the API asks of a job queue (both backends)."""

    mode: QueueMode
    write_gate: threading.RLock
    """Held by every build of this process and by the in-process daily cycle."""

    def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Queue a job, or join the identical one in flight: (job, joined)."""
        ...

    def get(self, job_id: str) -> Job | None:
        """A job by id (None: unknown or dropped)."""
        ...

    def jobs(self) -> list[Job]:
        """Every kept job, oldest first."""
        ...

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a queued one at once, a running one at its next stage."""
        ...

    def retry(self, job_id: str) -> Job | None:
        """Queue a failed, cancelled or interrupted job again (same id, next attempt)."""
        ...

    async def wait(self, job: Job) -> dict[str, Any] | None:
        """The job's result once it succeeded; raises its failure; None when it did not
        finish in the queue's wait bound (the caller answers 202)."""
        ...

    def shutdown(self) -> None:
        """Stop (the in-process queue waits for its running jobs)."""
        ...


def queue_mode(settings: Settings) -> QueueMode:
    """``redis`` when INDEX_BUILDER_JOB_QUEUE says so, or (``auto``) when Redis is
    configured over a store several processes share (iceberg); else ``process``."""
    choice = settings.job_queue
    if choice == "auto":
        shared = settings.storage == "iceberg" and settings.redis_url
        return "redis" if shared else "process"
    return choice


def queue_problem(settings: Settings) -> str | None:
    """Why the job queue the settings ask for cannot work (one line), or None."""
    if settings.job_queue != "redis":
        return None
    if not settings.redis_url:
        return "INDEX_BUILDER_JOB_QUEUE=redis needs INDEX_BUILDER_REDIS_URL"
    if settings.storage != "iceberg":
        return (
            "INDEX_BUILDER_JOB_QUEUE=redis needs INDEX_BUILDER_STORAGE=iceberg: the duckdb "
            "file is opened by one process only, so its jobs run inside 'index-builder serve'"
        )
    return None


# ====================================================================== in-process
class JobManager:
    """The in-process queue: builds and exports on worker threads; keeps the last
    ``keep`` jobs (see the module docstring).

    ``build`` runs a POST /build-index job; ``builds`` a POST /builds job and
    ``export`` an export job (both optional: :meth:`submit_many` and
    :meth:`submit_export` take theirs). ``records`` keeps jobs across restarts;
    ``on_drop`` hears of every job dropped beyond ``keep``.
    """

    mode: QueueMode = "process"

    def __init__(
        self,
        build: BuildFunction,
        *,
        workers: int = 1,
        keep: int = 1000,
        records: JobRecords | None = None,
        export_workers: int = 1,
        on_drop: Callable[[Job], None] | None = None,
        builds: BuildsFunction | None = None,
        export: ExportFunction | None = None,
    ) -> None:
        self._build = build
        self._builds = builds
        self._export = export
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
    def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Queue any job (run by this queue's function for its kind), or join the
        identical one in flight. Returns (job, joined)."""
        return self._submit(request, self._function(request))

    def submit_many(self, request: BuildsRequest, build: BuildsFunction) -> tuple[Job, bool]:
        """Queue a build of several indices run by ``build``, or join the identical
        one in flight. Returns (job, joined)."""
        return self._submit(request, lambda job, progress: build(request, progress))

    def submit_export(self, request: ExportJobRequest, export: ExportFunction) -> tuple[Job, bool]:
        """Queue an export run by ``export(job, progress)`` on the export pool, or join
        the identical one in flight. Returns (job, joined)."""
        return self._submit(request, export)

    def _function(self, request: JobRequest) -> ExportFunction:
        if isinstance(request, BuildRequest):
            return lambda job, progress: self._build(request, progress)
        if isinstance(request, BuildsRequest):
            builds = self._builds
            if builds is None:
                raise RuntimeError("this queue has no function for POST /builds jobs")
            return lambda job, progress: builds(request, progress)
        if self._export is None:
            raise RuntimeError("this queue has no function for export jobs")
        return self._export

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
            self._start(job)
            dropped = self._trim()
        try:
            if self._records is not None:
                self._records.insert(job_record(job))
        except BaseException as exc:
            job.record_error = exc
            raise
        finally:
            job.recorded.set()
        self._dropped(dropped)
        return job, False

    def _start(self, job: Job) -> None:
        """Hand the job to its pool (under the manager's lock)."""
        for index in job.request.indices:
            self._index_locks.setdefault(index, threading.Lock())
        pool = self._export_pool if job.kind == "export" else self._pool
        job.future = pool.submit(self._run, job)

    # ------------------------------------------------------------------ read
    def get(self, job_id: str) -> Job | None:
        """A job by id (memory only: every kept job is there)."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every kept job, oldest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at)

    async def wait(self, job: Job) -> dict[str, Any] | None:
        """The job's result (its original error raised): no bound in-process."""
        assert job.future is not None
        try:
            result: dict[str, Any] = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            if not job.future.cancelled():
                raise  # the request itself was cancelled
            raise JobCancelled(f"job {job.id} {job.status}", field="job_id") from None
        return result

    # ------------------------------------------------------------------ cancel, retry
    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: queued, it never starts; running, it stops at its next stage
        (what a build stored already stays). A finished job is left as it is."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.done:
                return job
            job.cancel_requested = True
            queued = job.status == "queued" and job.future is not None and job.future.cancel()
        if queued:
            job.recorded.wait()
            self._finish(job, "cancelled", error=cancelled_error())
        return job

    def retry(self, job_id: str) -> Job | None:
        """Run a failed, cancelled or interrupted job again under its id (its next
        attempt); a job in flight or succeeded is left as it is."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status not in RETRYABLE:
                return job
            if job.run is None:  # a job of a previous process
                run = self._function(job.request)
                job.run = lambda progress: run(job, progress)
                job.recorded.set()
            job.attempt += 1
            job.status, job.stage, job.progress = "queued", "queued", 0.0
            job.started_at = job.finished_at = None
            job.result = job.error = None
            job.cancel_requested = False
            active = self._active.get(job.request)
            if active is None or active.done:
                self._active[job.request] = job
            self._start(job)
        self._write(job)
        return job

    def shutdown(self) -> None:
        """Stop accepting work; wait for running jobs to finish. Jobs still queued are
        cancelled and recorded ``interrupted``."""
        for pool in (self._pool, self._export_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            cancelled = [j for j in self._jobs.values() if j.status == "queued"]
        for job in cancelled:
            self._finish(
                job,
                "interrupted",
                error=interrupted_error("the server stopped before the job started"),
            )

    # ------------------------------------------------------------------ run
    def _run(self, job: Job) -> dict[str, Any]:
        def progress(stage: str, fraction: float) -> None:
            job.stage, job.progress = stage, max(job.progress, min(fraction, 1.0))

        assert job.run is not None
        job.recorded.wait()
        if job.record_error is not None:
            self._finish(job, "failed", error=problem(job.record_error), write=False)
            raise job.record_error
        with ExitStack() as held:
            if job.kind != "export":  # exports only read: no lock
                for index in sorted(set(job.request.indices)):  # one order: no deadlock
                    held.enter_context(self._index_locks[index])
                held.enter_context(self.write_gate)
            if job.cancel_requested:  # cancelled while it waited for its locks
                self._finish(job, "cancelled", error=cancelled_error())
                raise JobCancelled(f"job {job.id} cancelled before it started", field="job_id")
            job.status, job.stage = "running", "starting"
            job.started_at = dt.datetime.now(dt.UTC)
            self._write(job)
            try:
                result = job.run(cancellable(job, progress))
            except JobCancelled as exc:
                self._finish(job, "cancelled", error=cancelled_error(exc.message))
                raise
            except Exception as exc:
                self._finish(job, "failed", error=problem(exc))
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
            elif status in ("interrupted", "cancelled"):
                job.stage = status
            job.status = status
            if self._active.get(job.request) is job:
                del self._active[job.request]
        if write:
            self._write(job)

    def _write(self, job: Job) -> None:
        """Write the job's state through; a failure is logged (the job goes on)."""
        if self._records is None:
            return
        try:
            self._records.update(job_record(job))
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
                job = job_from_record(row)
            except (KeyError, TypeError, ValueError):
                log.exception("unreadable job record %s: ignored", row.get("job_id"))
                continue
            self._jobs[job.id] = job


InProcessQueue = JobManager
"""The in-process backend of :class:`JobQueue`."""


# ====================================================================== Redis
PREFIX = "ib:jobs"
RQ_QUEUES = ("index-builder-builds", "index-builder-exports")
"""The rq queues: builds (one and several indices), exports. A worker takes builds first."""
PERFORM = "index_builder.services.queue.perform"
"""What an rq job calls (in ``index-builder worker``)."""
POLL_SECONDS = 0.05
"""How often a synchronous request looks at its job."""
PROGRESS_WRITE_SECONDS = 0.2
"""Progress reaches Redis at most this often (and at every new stage)."""

_SUBMIT = """
local current = redis.call('GET', KEYS[1])
if current then
  local status = redis.call('HGET', ARGV[3] .. ':job:' .. current, 'status')
  if status == 'queued' or (status == 'running'
      and redis.call('EXISTS', ARGV[3] .. ':alive:' .. current) == 1) then
    return current
  end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
_START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued'
    or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'running', 'stage', 'starting', 'started_at', ARGV[2],
  'worker', ARGV[3])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
"""
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running'
    or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then
  return -1
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'stage', ARGV[2], 'progress', ARGV[3])
end
return tonumber(redis.call('HGET', KEYS[1], 'cancel') or '0')
"""
_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running'
    or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], 'stage', ARGV[4],
  'progress', ARGV[5], 'result', ARGV[6], 'error', ARGV[7], 'head', ARGV[9])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[8] then redis.call('DEL', KEYS[3]) end
return 1
"""
_INTERRUPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'interrupted', 'stage', 'interrupted', 'finished_at',
  ARGV[1], 'error', ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
return 1
"""
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'stage', 'cancelled', 'finished_at',
    ARGV[1], 'error', ARGV[2], 'cancel', '1')
  if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
  return 'cancelled'
end
if status == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return status
"""
_RETRY = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'failed' and status ~= 'interrupted' and status ~= 'cancelled' then return 0 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'stage', 'queued', 'progress', '0',
  'started_at', '', 'finished_at', '', 'result', '', 'error', '', 'cancel', '0', 'worker', '')
local current = redis.call('GET', KEYS[2])
local busy = false
if current and current ~= ARGV[1] then
  local other = redis.call('HGET', ARGV[2] .. ':job:' .. current, 'status')
  busy = other == 'queued' or other == 'running'
end
if not busy then redis.call('SET', KEYS[2], ARGV[1]) end
return attempt
"""


def _iso(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).isoformat()


def _moment(text: str) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisQueue:
    """Jobs in Redis, run by ``index-builder worker`` (see the module docstring).

    ``keep``: the newest jobs kept (older finished ones are deleted, ``on_drop``
    hears of each); ``lease_seconds``: how long a running job's worker may stay
    silent before the job counts as interrupted; ``wait_seconds``: how long a
    synchronous build waits for its job before the request answers 202.
    """

    mode: QueueMode = "redis"

    def __init__(
        self,
        url: str,
        *,
        keep: int = 1000,
        on_drop: Callable[[Job], None] | None = None,
        lease_seconds: float = 10.0,
        wait_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        prefix: str = PREFIX,
        client: redis.Redis | None = None,
    ) -> None:
        self.url = url
        self.keep = keep
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.prefix = prefix
        self._on_drop = on_drop
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self.write_gate = threading.RLock()
        self._submit = self.client.register_script(_SUBMIT)
        self._start = self.client.register_script(_START)
        self._progress = self.client.register_script(_PROGRESS)
        self._finish = self.client.register_script(_FINISH)
        self._interrupt = self.client.register_script(_INTERRUPT)
        self._cancel = self.client.register_script(_CANCEL)
        self._retry = self.client.register_script(_RETRY)

    # ------------------------------------------------------------------ keys
    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _alive_key(self, job_id: str) -> str:
        return f"{self.prefix}:alive:{job_id}"

    def _active_key(self, digest: str) -> str:
        return f"{self.prefix}:active:{digest}"

    @property
    def _all_key(self) -> str:
        return f"{self.prefix}:all"

    def rq_queues(self, connection: redis.Redis | None = None) -> list[Any]:
        """The rq queues (builds first)."""
        from rq import Queue

        return [Queue(name, connection=connection or self.client) for name in RQ_QUEUES]

    # ------------------------------------------------------------------ submit
    def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Record the job and put it on its rq queue, or join the identical one in
        flight. Returns (job, joined)."""
        job = Job(id=uuid.uuid4().hex, request=request)
        digest = request_digest(request)
        fields = {
            "kind": job.kind,
            "request": to_json(request_json(request)),
            "digest": digest,
            "status": "queued",
            "stage": "queued",
            "progress": "0",
            "created_at": _iso(job.created_at),
            "started_at": "",
            "finished_at": "",
            "result": "",
            "error": "",
            "attempt": "1",
            "cancel": "0",
            "worker": "",
        }
        flat = [str(x) for pair in fields.items() for x in pair]
        with self._available():
            chosen = self._submit(
                keys=[self._active_key(digest), self._job_key(job.id), self._all_key],
                args=[job.id, job.created_at.timestamp(), self.prefix, *flat],
            )
            chosen_id = chosen.decode() if isinstance(chosen, bytes) else str(chosen)
            if chosen_id != job.id:
                joined = self.get(chosen_id)
                if joined is not None:
                    return joined, True
            try:
                self._enqueue(job.id, 1, job.kind)
            except BaseException as exc:  # recorded but not queued: it must not be joined
                with contextlib.suppress(RedisError, OSError):
                    self.client.hset(self._job_key(job.id), "status", "failed")
                    self.client.hset(self._job_key(job.id), "error", to_json(problem(exc)))
                    self.client.delete(self._active_key(digest))
                raise
            self._trim()
        return job, False

    def _enqueue(self, job_id: str, attempt: int, kind: str) -> None:
        from rq import Queue

        name = RQ_QUEUES[1] if kind == "export" else RQ_QUEUES[0]
        Queue(name, connection=self.client).enqueue(
            PERFORM,
            job_id,
            attempt,
            job_id=f"{job_id}-{attempt}",
            job_timeout=-1,  # builds take as long as they take; cancel stops them
            result_ttl=0,  # the job's record holds the result
            failure_ttl=86400,
            description=f"index-builder {kind} job {job_id} (attempt {attempt})",
        )

    def _trim(self) -> None:
        """Delete the oldest finished jobs beyond ``keep``."""
        extra = int(self.client.zcard(self._all_key)) - self.keep
        if extra <= 0:
            return
        oldest = [_text(i) for i in self.client.zrange(self._all_key, 0, extra - 1)]
        for job_id in oldest:
            job = self._read(job_id)
            if job is not None and not job.done:
                continue
            pipe = self.client.pipeline()
            pipe.delete(self._job_key(job_id))
            pipe.zrem(self._all_key, job_id)
            pipe.execute()
            if job is not None and self._on_drop is not None:
                self._on_drop(job)

    # ------------------------------------------------------------------ read
    def get(self, job_id: str) -> Job | None:
        """A job by id; a running job whose worker went silent is ``interrupted``."""
        with self._available():
            job = self._read(job_id)
            if job is None or job.status != "running":
                return job
            if self.client.exists(self._alive_key(job_id)):
                return job
            self._mark_interrupted(job)
            return self._read(job_id)

    def _mark_interrupted(self, job: Job) -> None:
        error = interrupted_error("the worker running the job stopped or died: retry it")
        self._interrupt(
            keys=[
                self._job_key(job.id),
                self._alive_key(job.id),
                self._active_key(request_digest(job.request)),
            ],
            args=[_now(), to_json(error), job.id],
        )

    def _read(self, job_id: str) -> Job | None:
        raw = self.client.hgetall(self._job_key(job_id))
        if not raw:
            return None
        return _job_from_hash(job_id, {_text(k): _text(v) for k, v in raw.items()})

    def jobs(self) -> list[Job]:
        """Every kept job, oldest first."""
        with self._available():
            ids = [_text(i) for i in self.client.zrange(self._all_key, 0, -1)]
            found = (self.get(i) for i in ids)
            return [j for j in found if j is not None]

    async def wait(self, job: Job) -> dict[str, Any] | None:
        """Poll the job until it finished or ``wait_seconds`` passed."""
        from starlette.concurrency import run_in_threadpool

        deadline = time.monotonic() + self.wait_seconds
        current: Job | None = job
        while current is not None and not current.done:
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_SECONDS)
            current = await run_in_threadpool(self.get, job.id)
        if current is None:
            raise JobFailed(interrupted_error(f"job {job.id} was dropped"))
        job.status, job.published = current.status, current.published
        if current.status != "succeeded":
            raise JobFailed(current.error or interrupted_error(f"job {job.id} {current.status}"))
        return current.result

    # ------------------------------------------------------------------ cancel, retry
    def cancel(self, job_id: str) -> Job | None:
        """Cancel: a queued job never starts; a running one stops at its next stage."""
        with self._available():
            job = self.get(job_id)
            if job is None or job.done:
                return job
            self._cancel(
                keys=[self._job_key(job_id), self._active_key(request_digest(job.request))],
                args=[_now(), to_json(cancelled_error()), job_id],
            )
            return self.get(job_id)

    def retry(self, job_id: str) -> Job | None:
        """Queue a failed, cancelled or interrupted job again (its next attempt)."""
        with self._available():
            job = self.get(job_id)
            if job is None or job.status not in RETRYABLE:
                return job
            attempt = int(
                self._retry(
                    keys=[self._job_key(job_id), self._active_key(request_digest(job.request))],
                    args=[job_id, self.prefix],
                )
            )
            if attempt:
                self._enqueue(job_id, attempt, job.kind)
            return self.get(job_id)

    def shutdown(self) -> None:
        """Close the connections (the jobs go on in the workers)."""
        with contextlib.suppress(RedisError, OSError):
            self.client.close()

    @contextlib.contextmanager
    def _available(self) -> Any:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise QueueUnavailableError(
                f"the job queue (Redis) is unavailable: {type(exc).__name__}: {exc}"
            ) from exc

    # ------------------------------------------------------------------ the worker's side
    def start(self, job_id: str, attempt: int, worker: str) -> bool:
        """Take the job (queued, this attempt) for ``worker``; False: not this one's to run."""
        started = self._start(
            keys=[self._job_key(job_id), self._alive_key(job_id)],
            args=[str(attempt), _now(), worker, int(self.lease_seconds * 1000)],
        )
        return bool(started)

    def beat(self, job_id: str, worker: str) -> bool:
        """Renew the running job's lease; True when a cancel was requested."""
        pipe = self.client.pipeline()
        pipe.set(self._alive_key(job_id), worker, px=int(self.lease_seconds * 1000))
        pipe.hget(self._job_key(job_id), "cancel")
        _, cancel = pipe.execute()
        return bool(cancel == b"1")

    def report(self, job_id: str, attempt: int, stage: str, fraction: float) -> int:
        """Write progress (``stage`` empty: only look); 1 cancel requested, 0 go on,
        -1 the attempt is no longer running (taken away: stop)."""
        return int(
            self._progress(
                keys=[self._job_key(job_id)],
                args=[str(attempt), stage, repr(round(fraction, 4))],
            )
        )

    def finish(self, job: Job, attempt: int, status: JobStatus, **outcome: Any) -> bool:
        """Record how the attempt ended; False when it was no longer running."""
        result, error = outcome.get("result"), outcome.get("error")
        stage = {"succeeded": "done"}.get(status, status)
        progress = 1.0 if status == "succeeded" else job.progress
        done = self._finish(
            keys=[
                self._job_key(job.id),
                self._alive_key(job.id),
                self._active_key(request_digest(job.request)),
            ],
            args=[
                str(attempt),
                status,
                _now(),
                stage,
                repr(progress),
                "" if result is None else to_json(result),
                "" if error is None else to_json(error),
                job.id,
                str(outcome.get("published") or ""),
            ],
        )
        return bool(done)


def _job_from_hash(job_id: str, h: dict[str, str]) -> Job:
    import orjson

    created = _moment(h["created_at"])
    assert created is not None
    status = h["status"]
    assert status in FINISHED | {"queued", "running"}
    return Job(
        id=job_id,
        request=request_from(h["kind"], orjson.loads(h["request"])),
        status=status,  # type: ignore[arg-type]
        progress=float(h.get("progress") or 0),
        stage=h.get("stage", ""),
        created_at=created,
        started_at=_moment(h.get("started_at", "")),
        finished_at=_moment(h.get("finished_at", "")),
        result=orjson.loads(h["result"]) if h.get("result") else None,
        error=orjson.loads(h["error"]) if h.get("error") else None,
        attempt=int(h.get("attempt") or 1),
        cancel_requested=h.get("cancel") == "1",
        published=int(h["head"]) if h.get("head") else None,
    )


# ====================================================================== the worker
_WORKER: QueueWorker | None = None


def perform(job_id: str, attempt: int) -> str:
    """The rq job: run attempt ``attempt`` of job ``job_id`` in this worker process."""
    if _WORKER is None:
        raise RuntimeError("perform runs in 'index-builder worker' only")
    return _WORKER.perform(job_id, attempt)


class QueueWorker:
    """``index-builder worker``: takes jobs from the rq queues and runs them with
    ``runner``, one at a time, writing their state to ``queue``'s records."""

    def __init__(self, queue: RedisQueue, runner: JobRunner, *, name: str | None = None) -> None:
        self.queue = queue
        self.runner = runner
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.beat_seconds = max(0.2, min(1.0, queue.lease_seconds / 4))

    def perform(self, job_id: str, attempt: int) -> str:
        """Run one attempt; returns how it ended (``skipped``: not this worker's to run:
        cancelled while queued, already run, or a newer attempt exists)."""
        queue = self.queue
        job = queue._read(job_id)
        if job is None or not queue.start(job_id, attempt, self.name):
            log.info("job %s attempt %s skipped (not queued)", job_id, attempt)
            return "skipped"
        job.status, job.attempt = "running", attempt
        log.info("job %s (%s) attempt %s started", job_id, job.kind, attempt)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(job, stop), name=f"job-lease-{job_id[:8]}", daemon=True
        )
        beat.start()
        try:
            return self._run(job, attempt)
        finally:
            stop.set()
            beat.join(5)

    def _run(self, job: Job, attempt: int) -> str:
        queue = self.queue
        if job.kind == "export" and self.runner.exports is not None:
            self.sweep_exports()
        last_write: dict[str, Any] = {"at": 0.0, "stage": ""}

        def progress(stage: str, fraction: float) -> None:
            job.stage, job.progress = stage, max(job.progress, min(fraction, 1.0))
            now = time.monotonic()
            if stage != last_write["stage"] or now - last_write["at"] >= PROGRESS_WRITE_SECONDS:
                last_write.update(at=now, stage=stage)
                state = queue.report(job.id, attempt, stage, job.progress)
                if state < 0:
                    raise JobCancelled(f"job {job.id} attempt {attempt} was taken away")
                job.cancel_requested = job.cancel_requested or state == 1

        store = self.runner.store
        try:
            # the newest version first: definitions and data other processes wrote since
            store.refresh(force=True)
            result = self.runner.run(job, cancellable(job, progress))
        except JobCancelled as exc:
            error = cancelled_error(exc.message)
            queue.finish(job, attempt, "cancelled", error=error, published=store_head(store))
            log.info("job %s cancelled", job.id)
            return "cancelled"
        except Exception as exc:
            queue.finish(job, attempt, "failed", error=problem(exc), published=store_head(store))
            log.warning("job %s failed: %s", job.id, exc)
            return "failed"
        except BaseException:  # the worker is stopping (a cold shutdown): not the job's fault
            queue.finish(
                job, attempt, "interrupted", error=interrupted_error("the worker stopped: retry it")
            )
            raise
        queue.finish(job, attempt, "succeeded", result=result, published=store_head(store))
        log.info("job %s succeeded", job.id)
        return "succeeded"

    def _beat(self, job: Job, stop: threading.Event) -> None:
        """Renew the job's lease until it ends; pick up a cancel meanwhile."""
        while not stop.wait(self.beat_seconds):
            try:
                if self.queue.beat(job.id, self.name):
                    job.cancel_requested = True
            except (RedisError, OSError) as exc:  # the lease lapses if Redis stays away
                log.warning("job %s: cannot renew its lease: %s", job.id, exc)

    def sweep_exports(self) -> int:
        """Delete the export files of jobs no longer kept, and expired ones (this
        worker writes them: no other process creates one meanwhile)."""
        from index_builder.export.files import KEEP, expires_at

        exports = self.runner.exports
        if exports is None:
            return 0

        def kept() -> dict[str, dt.datetime | None]:
            files: dict[str, dt.datetime | None] = {}
            for job in self.queue.jobs():
                if job.kind != "export":
                    continue
                if not job.done:
                    files[job.id] = KEEP
                elif job.status == "succeeded":
                    files[job.id] = expires_at(job.result)
            return files

        return exports.sweep(kept)

    def work(self, *, burst: bool = False, connection: redis.Redis | None = None) -> bool:
        """Run jobs until stopped (Ctrl-C or SIGTERM: the running job finishes first;
        twice: it is interrupted), or until the queues are empty with ``burst``."""
        from rq import SimpleWorker

        global _WORKER
        # rq blocks on the queues: a connection without a read timeout
        conn = connection or redis.Redis.from_url(self.queue.url)
        self.queue.jobs()  # every running job whose worker died is interrupted now
        if self.runner.exports is not None:
            self.sweep_exports()
        _WORKER = self
        try:
            worker = SimpleWorker(self.queue.rq_queues(conn), connection=conn, name=self.name)
            return bool(worker.work(burst=burst, logging_level="WARNING", with_scheduler=False))
        finally:
            _WORKER = None
            conn.close()
