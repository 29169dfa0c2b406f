"""POST /build-index, POST /builds, GET /jobs/{job_id} and a job's cancel and retry.

The routes validate a request, submit its job to the queue (``services.jobs``: this
process's threads, or the Redis queue that ``index-builder worker`` runs) and read
jobs back; running them is :class:`~index_builder.services.jobs.JobRunner`'s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.jobs import BuildRequest, BuildsRequest, Job, job_payload
from index_builder.api.responses import json_response
from index_builder.api.routers.common import READ_PROBLEMS, WRITE_PROBLEMS, problems
from index_builder.api.schemas import (
    BuildIndexRequest,
    BuildResponse,
    BuildsRequestBody,
    JobAccepted,
    JobStatusResponse,
)
from index_builder.errors import ConflictError, NotFoundError
from index_builder.ops.flags import require
from index_builder.ops.protection import OPTIONAL_API_KEY, BuildServices, ReadServices
from index_builder.services.jobs import RETRYABLE

router = APIRouter(tags=["indices: build"])


def _described(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """Problem responses with this route's own descriptions."""
    responses = problems(*descriptions)
    for status, text in descriptions.items():
        responses[status]["description"] = text
    return responses


@router.post(
    "/build-index",
    response_model=BuildResponse,
    responses={
        202: {"model": JobAccepted, "description": "Accepted: poll `status_url`."},
        **problems(400, 404, 409, *WRITE_PROBLEMS),
        **_described(
            {
                422: "Invalid input (a bad date or timestamp, end before start, a window "
                "before the base date, an `as_of` in the future, a malformed body; `field` "
                "names it), or `build-failed`: the index cannot be built from the data (e.g. "
                "no eligible security on its base date; the detail says why)."
            }
        ),
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
    current results (read it with `as_of` on the GET endpoints); with
    `as_of_version`: the same from the data as they stood right after that version
    (read it with `as_of_version`; not with `as_of`: 400). `outcome` says
    whether days were written (`built`) or nothing was new (`unchanged`); an index
    that cannot be built answers `422` `build-failed` with the reason (POST
    /builds builds several and reports each failure as an outcome instead)."""
    build = BuildRequest(body.index, body.start_date, body.end_date, body.as_of, body.as_of_version)
    if body.run_async:
        require(services.flags, "async_builds", "an asynchronous build ('async': true)")
    days = await run_in_threadpool(services.check_build, build)
    job, joined = await run_in_threadpool(services.jobs.submit, build)  # writes its record
    run_async = body.run_async or days > services.settings.async_build_days
    if run_async and (services.flags is None or services.flags.enabled("async_builds")):
        return _accepted(job, joined, request)
    # a failed build raises its IndexBuilderError here: the problem+json handler answers
    result = await services.jobs.wait(job)
    if result is None:  # queued for a worker and not done within the wait: poll it
        return _accepted(job, joined, request)
    if services.freshness is not None:  # built elsewhere: its result is read here at once
        await services.freshness.at_least(job.published)
    return json_response(result)


@router.post(
    "/builds",
    status_code=202,
    response_model=JobAccepted,
    responses={
        202: {
            "description": "Accepted: poll `status_url` (also in `Location`); the finished "
            "job's `result` is a BuildsResult."
        },
        **problems(409, *WRITE_PROBLEMS),
        **_described(
            {
                404: "An index in `indices` is unknown, or there is no market data at all.",
                422: "Malformed body: `indices` empty or not a list of ids, an unknown field.",
            }
        ),
    },
    summary="Build every index (or several) in one background job",
)
async def build_indices(
    services: BuildServices,
    request: Request,
    body: Annotated[BuildsRequestBody | None, Body()] = None,
) -> Response:
    """Build every definition, or the `indices` given, each incrementally through
    the last trading day, from one shared read of the market data. Always a job:
    `202` with `Location` (poll GET /jobs/{job_id}). One index that cannot be
    built does not stop the others: the job `succeeded` and its `result` gives
    every index's outcome (`built`, `unchanged` or `failed` with its `reason`)
    and the counts; the job fails only for what concerns every index. Needs the
    feature flag `async_builds` (409 when it is off). An index named in
    `indices` must exist (404) and not be switched off by a flag (409); a
    request identical to a job in flight joins it, and the job waits for any
    running build of its indices."""
    require(services.flags, "async_builds", "a multi-index build job (POST /builds)")
    indices = None if body is None else body.indices
    builds: BuildsRequest = await run_in_threadpool(services.buildable, indices)
    job, joined = await run_in_threadpool(services.jobs.submit, builds)
    return _accepted(job, joined, request)


def _accepted(job: Job, joined: bool, request: Request) -> Response:
    """202 with the job and its status URL (also in ``Location``): a path, never built
    from the request's Host header (which the client chooses)."""
    url = request.scope.get("root_path", "") + request.app.url_path_for("get_job", job_id=job.id)
    return json_response(
        {"job_id": job.id, "status": job.status, "status_url": url, "joined": joined},
        status_code=202,
        Location=url,
    )


JobId = Annotated[
    str,
    Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Job id (hexadecimal)."),
]


async def _job(services: Any, job_id: str) -> Job:
    job: Job | None = await run_in_threadpool(services.jobs.get, job_id)
    if job is None:
        raise NotFoundError(
            f"no job {job_id!r} (the newest {services.settings.jobs_keep} jobs are kept)",
            field="job_id",
        )
    return job


@router.get(
    "/jobs/{job_id}",
    name="get_job",
    response_model=JobStatusResponse,
    responses=problems(404, *READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="Status, progress and outcome of a build or export job",
)
async def get_job(job_id: JobId, services: ReadServices) -> Response:
    """`queued`, `running` (with `stage` and `progress`), `succeeded` (with `result`:
    a BuildResponse for POST /build-index, a BuildsResult for POST /builds, an
    ExportResult and `download_url` for an export), `failed` (with `error`),
    `cancelled`, or `interrupted` (the process running it stopped or died first:
    `error` says so; POST /jobs/{job_id}/retry runs it again). Jobs are stored
    (with the index data, or in Redis with INDEX_BUILDER_REDIS_URL over the iceberg
    store, where every API process sees every job): after a restart they answer as
    they ended (the newest INDEX_BUILDER_JOBS_KEEP are kept)."""
    job = await _job(services, job_id)
    if job.done and services.freshness is not None:  # seen finished: its result too
        await services.freshness.at_least(job.published)
    return json_response(job_payload(job))


@router.post(
    "/jobs/{job_id}/cancel",
    name="cancel_job",
    response_model=JobStatusResponse,
    responses={**problems(404, *WRITE_PROBLEMS), **_described({409: "The job already ended."})},
    summary="Cancel a queued or running job",
)
async def cancel_job(job_id: JobId, services: BuildServices) -> Response:
    """A queued job is `cancelled` at once and never runs; a running job stops at its
    next stage (`cancel_requested` is true until then; it may still succeed if it was
    past its last stage). What a build already stored stays: a POST /builds job keeps
    the indices it finished. Cancelling a cancelled job answers it again; a job that
    succeeded, failed or was interrupted is `409`. Also `DELETE /jobs/{job_id}`."""
    job = await _job(services, job_id)
    if job.done and job.status != "cancelled":
        raise ConflictError(f"job {job_id} is {job.status}: nothing to cancel", field="job_id")
    cancelled = await run_in_threadpool(services.jobs.cancel, job_id)
    return json_response(job_payload(cancelled or job))


router.add_api_route(
    "/jobs/{job_id}",
    cancel_job,
    methods=["DELETE"],
    name="cancel_job_delete",
    response_model=JobStatusResponse,
    responses={**problems(404, *WRITE_PROBLEMS), **_described({409: "The job already ended."})},
    summary="Cancel a queued or running job (as POST /jobs/{job_id}/cancel)",
)


@router.post(
    "/jobs/{job_id}/retry",
    name="retry_job",
    status_code=202,
    response_model=JobAccepted,
    responses={
        **problems(404, *WRITE_PROBLEMS),
        **_described({409: "The job is queued, running or succeeded: nothing to retry."}),
    },
    summary="Run a failed, cancelled or interrupted job again",
)
async def retry_job(job_id: JobId, services: BuildServices, request: Request) -> Response:
    """Queue the job again under the same id (its `attempt` goes up): a build
    interrupted by a killed worker or a stopped server completes, incrementally,
    from what was stored. `202` with `Location`, like the request that created it."""
    job = await _job(services, job_id)
    if job.status not in RETRYABLE:
        raise ConflictError(f"job {job_id} is {job.status}: nothing to retry", field="job_id")
    retried = await run_in_threadpool(services.jobs.retry, job_id)
    return _accepted(retried or job, False, request)
