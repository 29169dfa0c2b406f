"""POST /export-data (a file at once, or a job) and GET /exports/{job_id}/file.

A synchronous export is written to a temporary folder one table at a time, then
streamed and deleted. An export job (``async``, or a window longer than
INDEX_BUILDER_ASYNC_EXPORT_DAYS trading days) writes its file to the export
folder (:class:`~index_builder.export.files.ExportFiles`), where GET
/exports/{job_id}/file serves it until it expires. The job runs in this process, or
in ``index-builder worker`` with the Redis queue: then the export folder
(INDEX_BUILDER_EXPORT_DIR) must be one every API process and worker shares.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from index_builder.api.deps import Services
from index_builder.api.jobs import ExportJobRequest, Job
from index_builder.api.responses import json_response
from index_builder.api.routers.common import WRITE_PROBLEMS, problems
from index_builder.api.schemas import ExportRequest, JobAccepted
from index_builder.errors import ConflictError, NotFoundError
from index_builder.export import export_index
from index_builder.export.files import KEEP, ExportFiles, expires_at
from index_builder.ops.metrics import EXPORT_DURATION
from index_builder.ops.protection import ExportServices
from index_builder.ops.request_limits import check_window
from index_builder.services.jobs import count_export_failure

router = APIRouter(tags=["indices: export"])

FILE_CONTENT: dict[str, Any] = {
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
    "application/zip": {},
}


@router.post(
    "/export-data",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file (`Content-Disposition: attachment`).",
            "content": FILE_CONTENT,
        },
        202: {
            "model": JobAccepted,
            "description": "An export job (`async`, or a long window): poll `status_url` "
            "(also in `Location`) until `download_url` is set.",
        },
        **problems(400, 404, 422, *WRITE_PROBLEMS),
    },
    summary="Download summary, performance, compositions and changes (or export as a job)",
)
async def export_data(body: ExportRequest, services: ExportServices, request: Request) -> Response:
    """`xlsx`: sheets Summary (with a level chart), Performance, Compositions, Changes.
    `csv` / `parquet`: a zip of the same tables. Values equal the JSON endpoints'.
    With `as_of`: the build as of that moment (named in the file name and the
    summary); with `as_of_version`: the build as of that version (not both: 400).
    Compositions are reconstructed a quarter (63 trading days) at a time
    and the file is written one table at a time, so memory does not grow with the
    window.

    `200` with the file, unless `async` is true or the window has more than
    INDEX_BUILDER_ASYNC_EXPORT_DAYS trading days: then `202` with a job (joined
    when an identical export is in flight). GET /jobs/{job_id} reports its stage
    and progress and, once it succeeded, `download_url` (GET /exports/{job_id}/file)
    and `result` (file name, media type, size, rows per table, `expires_at`). The
    file is kept INDEX_BUILDER_EXPORT_RETENTION_HOURS hours."""
    check_window(body.start_date, body.end_date, services.settings.max_window_days)
    started = time.perf_counter()
    try:
        days = await run_in_threadpool(_trading_days, services, body)
    except BaseException as exc:  # an export refused: counted like one that fails later
        _count_failure(exc, body.format)
        EXPORT_DURATION.labels(format=body.format).observe(time.perf_counter() - started)
        raise
    if body.run_async or days > services.settings.async_export_days:
        job, joined = await run_in_threadpool(_submit, services, body)
        url = request.scope.get("root_path", "") + request.app.url_path_for(
            "get_job", job_id=job.id
        )
        payload = {"job_id": job.id, "status": job.status, "status_url": url, "joined": joined}
        return json_response(payload, status_code=202, Location=url)
    folder = FilePath(tempfile.mkdtemp(prefix="index-builder-export-"))
    try:
        exported = await run_in_threadpool(
            export_index,
            services.reader,
            body.index,
            body.start_date,
            body.end_date,
            body.format,
            folder,
            body.as_of,
            as_of_version=body.as_of_version,
        )
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        _count_failure(exc, body.format)
        raise
    finally:
        EXPORT_DURATION.labels(format=body.format).observe(time.perf_counter() - started)
    return FileResponse(
        exported.path,
        media_type=exported.media_type,
        filename=exported.filename,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


@router.get(
    "/exports/{job_id}/file",
    name="export_file",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file of a succeeded export job (`Content-Disposition: "
            "attachment`, the file name of a synchronous export).",
            "content": FILE_CONTENT,
        },
        **problems(401, 403, 429),
        404: problems(404)[404]
        | {
            "description": "No export job with this id, or it failed or was interrupted, or "
            "its file expired (INDEX_BUILDER_EXPORT_RETENTION_HOURS) or was dropped with "
            "older jobs: export again."
        },
        409: problems(409)[409]
        | {"description": "The export job has not finished: poll GET /jobs/{job_id}."},
    },
    summary="Download the file of an export job",
)
async def export_file(
    job_id: Annotated[
        str, Path(max_length=64, pattern=r"^[0-9a-f]+$", description="Export job id.")
    ],
    services: ExportServices,
) -> FileResponse:
    """The file an export job wrote (its `download_url`), streamed from disk."""
    job: Job | None = await run_in_threadpool(services.jobs.get, job_id)
    if job is None or job.kind != "export":
        raise NotFoundError(f"no export job {job_id!r}", field="job_id")
    if not job.done:
        raise ConflictError(
            f"export job {job_id} is {job.status}: poll /jobs/{job_id} until it succeeds",
            field="job_id",
        )
    if job.status != "succeeded" or job.result is None:
        raise NotFoundError(
            f"export job {job_id} {job.status}: it has no file; export again", field="job_id"
        )
    path = _files(services).path(job.id, job.result)
    if path is None:
        expiry = expires_at(job.result)
        raise NotFoundError(
            f"the file of export job {job_id} expired at {job.result.get('expires_at')}: "
            "export again"
            if expiry is not None and expiry <= dt.datetime.now(dt.UTC)
            else f"the file of export job {job_id} is gone: export again",
            field="job_id",
        )
    return FileResponse(path, media_type=job.result["media_type"], filename=job.result["filename"])


# ---------------------------------------------------------------------- helpers
def _files(services: Services) -> ExportFiles:
    assert services.exports is not None, "build_services sets the export files"
    return services.exports


def _trading_days(services: Services, body: ExportRequest) -> int:
    """Validate the window (unknown index, bad dates, unbuilt: raised here, before any
    job) and count its trading days."""
    window = services.reader.window(
        body.index, body.start_date, body.end_date, body.as_of, body.as_of_version
    )
    return sum(1 for d in services.store.built_days(window.key) if window.start <= d <= window.end)


def _submit(services: Services, body: ExportRequest) -> tuple[Job, bool]:
    """Delete expired files, then queue the export job (or join the identical one);
    the job runner writes the file and counts the export's metrics."""
    sweep_files(services)
    request = ExportJobRequest(
        body.index, body.start_date, body.end_date, body.format, body.as_of, body.as_of_version
    )
    return services.jobs.submit(request)


def sweep_files(services: Services) -> int:
    """Delete the export files of jobs no longer kept and expired ones (in-process
    jobs only: with the Redis queue the worker, which writes the files, sweeps)."""
    if services.jobs.mode != "process":
        return 0

    def kept() -> dict[str, dt.datetime | None]:
        files: dict[str, dt.datetime | None] = {}
        for job in services.jobs.jobs():
            if job.kind != "export":
                continue
            if not job.done:
                files[job.id] = KEEP
            elif job.status == "succeeded":
                files[job.id] = expires_at(job.result)
        return files

    return _files(services).sweep(kept)


def drop_file(services: Services, job: Job) -> None:
    """A dropped job's file goes with it."""
    if job.kind == "export" and services.exports is not None:
        services.exports.remove(job.id)


def _count_failure(exc: BaseException, fmt: str) -> None:
    # the client's errors (unknown index, unbuilt window) are not failed exports
    count_export_failure(exc, fmt)
