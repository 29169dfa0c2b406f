"""Jobs as the API shows them (GET /jobs/{id}); the jobs themselves live in services.

What a job is and how it runs is :mod:`index_builder.services.jobs` (requests,
:class:`Job`, :class:`JobRunner`); where it waits and runs is
:mod:`index_builder.services.queue` (the in-process :class:`JobManager`, or the
Redis queue of ``index-builder worker``). The API submits and reads only.
This module keeps the names the routes and tests import.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from index_builder.export.files import expires_at
from index_builder.services.jobs import (
    FINISHED,
    INTERRUPTED_STATUS,
    BuildRequest,
    BuildsRequest,
    ExportJobRequest,
    Job,
    JobCancelled,
    JobKind,
    JobRecords,
    JobRequest,
    JobStatus,
    ProgressCallback,
    job_kind,
)
from index_builder.services.queue import (
    BuildFunction,
    BuildsFunction,
    ExportFunction,
    JobManager,
    JobQueue,
    RedisQueue,
)

__all__ = [
    "FINISHED",
    "INTERRUPTED_STATUS",
    "BuildFunction",
    "BuildRequest",
    "BuildsFunction",
    "BuildsRequest",
    "ExportFunction",
    "ExportJobRequest",
    "Job",
    "JobCancelled",
    "JobKind",
    "JobManager",
    "JobQueue",
    "JobRecords",
    "JobRequest",
    "JobStatus",
    "ProgressCallback",
    "RedisQueue",
    "download_url",
    "job_kind",
    "job_payload",
]


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
        "attempt": job.attempt,
        "cancel_requested": job.cancel_requested and not job.done,
    }


def download_url(job: Job, now: dt.datetime | None = None) -> str | None:
    """The relative URL of a succeeded export job's file, until it expires."""
    if job.kind != "export" or job.status != "succeeded":
        return None
    expiry = expires_at(job.result)
    if expiry is None or expiry <= (now or dt.datetime.now(dt.UTC)):
        return None
    return f"/exports/{job.id}/file"
