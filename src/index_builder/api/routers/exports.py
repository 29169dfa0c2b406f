"""POST /export-data: a workbook or a zip of tables, streamed from a temporary file."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from index_builder.api.routers.common import WRITE_PROBLEMS, problems
from index_builder.api.schemas import ExportRequest
from index_builder.errors import IndexBuilderError
from index_builder.export import export_index
from index_builder.ops.metrics import EXPORT_DURATION, EXPORT_FAILURES
from index_builder.ops.protection import ExportServices
from index_builder.ops.request_limits import check_window

router = APIRouter(tags=["indices: export"])


@router.post(
    "/export-data",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file (`Content-Disposition: attachment`).",
            "content": {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
                "application/zip": {},
            },
        },
        **problems(404, 422, *WRITE_PROBLEMS),
    },
    summary="Download summary, performance, compositions and changes",
)
async def export_data(body: ExportRequest, services: ExportServices) -> FileResponse:
    """`xlsx`: sheets Summary (with a level chart), Performance, Compositions, Changes.
    `csv` / `parquet`: a zip of the same tables. Values equal the JSON endpoints'.
    With `as_of`: the build as of that moment (named in the file name and the
    summary). The file is written to a temporary folder one table at a time, then
    streamed."""
    check_window(body.start_date, body.end_date, services.settings.max_window_days)
    folder = Path(tempfile.mkdtemp(prefix="index-builder-export-"))
    started = time.perf_counter()
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
        )
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        # the client's errors (unknown index, unbuilt window) are not failed exports
        if not isinstance(exc, IndexBuilderError) or exc.http_status >= 500:
            EXPORT_FAILURES.labels(format=body.format).inc()
        raise
    finally:
        EXPORT_DURATION.labels(format=body.format).observe(time.perf_counter() - started)
    return FileResponse(
        exported.path,
        media_type=exported.media_type,
        filename=exported.filename,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
