"""POST /build-index and GET /jobs/{job_id}."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.jobs import BuildRequest, Job
from index_builder.api.responses import json_response
from index_builder.api.routers.common import READ_PROBLEMS, WRITE_PROBLEMS, problems
from index_builder.api.schemas import (
    BuildIndexRequest,
    BuildResponse,
    JobAccepted,
    JobStatusResponse,
)
from index_builder.errors import NotFoundError
from index_builder.ops.flags import require
from index_builder.ops.protection import OPTIONAL_API_KEY, BuildServices, ReadServices

router = APIRouter(tags=["indices: build"])


@router.post(
    "/build-index",
    response_model=BuildResponse,
    responses={
        202: {"model": JobAccepted, "description": "Accepted: poll `status_url`."},
        **problems(404, 409, 422, *WRITE_PROBLEMS),
    },
    summary="Build an index (incrementally) at request time",
)
async def build_index(
    body: BuildIndexRequest, services: BuildServices, request: Request
) -> Response:
    """Make sure levels exist over the window, computed from the definition's base
    date (incrementally: only what new data requires). Synchronous (`200`) unless
    `async` is true or the build is large (`202` with a job). A build of an index
    that is already building joins (identical window) or waits for it. With
    `as_of`: a full build from the data known at that moment, stored next to the
    current results (read it with `as_of` on the GET endpoints)."""
    build = BuildRequest(body.index, body.start_date, body.end_date, body.as_of)
    if body.run_async:
        require(services.flags, "async_builds", "an asynchronous build ('async': true)")
    days = await run_in_threadpool(services.check_build, build)
    job, joined = services.jobs.submit(build)
    run_async = body.run_async or days > services.settings.async_build_days
    if run_async and (services.flags is None or services.flags.enabled("async_builds")):
        return json_response(
            {
                "job_id": job.id,
                "status": job.status,
                "status_url": str(request.url_for("get_job", job_id=job.id)),
                "joined": joined,
            },
            status_code=202,
            Location=str(request.url_for("get_job", job_id=job.id)),
        )
    assert job.future is not None
    # a failed build re-raises its IndexBuilderError here: the problem+json handler answers
    return json_response(await asyncio.wrap_future(job.future))


@router.get(
    "/jobs/{job_id}",
    name="get_job",
    response_model=JobStatusResponse,
    responses=problems(404, *READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="Status, progress and outcome of a build job",
)
async def get_job(job_id: str, services: ReadServices) -> Response:
    """`queued`, `running` (with `stage` and `progress`), `succeeded` (with `result`)
    or `failed` (with `error`)."""
    job = services.jobs.get(job_id)
    if job is None:
        raise NotFoundError(
            f"no job {job_id!r} (jobs are kept while the server runs)", field="job_id"
        )
    return json_response(_job_payload(job))


def _job_payload(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "index": job.request.index,
        "status": job.status,
        "stage": job.stage,
        "progress": round(job.progress, 4),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "result": job.result,
        "error": job.error,
    }
