"""The files of export jobs: one folder per job under the export folder, kept for a while.

``<folder>/<job id>/export.xlsx`` (or ``export.zip``) is written by
:meth:`ExportFiles.write` and served until its ``expires_at`` (the retention
after it was written). :meth:`ExportFiles.sweep` deletes every folder that is
not the file of a kept, unexpired job: at start (a job interrupted mid-export,
jobs dropped beyond the bound while the server was down) and whenever an export
is asked for; :meth:`ExportFiles.remove` deletes one when its job is dropped.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from index_builder.export.service import ExportFormat, ExportProgress, export_index
from index_builder.point_in_time import format_as_of
from index_builder.services.queries import IndexReader

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")

KEEP = dt.datetime.max.replace(tzinfo=dt.UTC)
"""The expiry of the folder of an export job that has not finished."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_utc(moment: dt.datetime) -> str:
    """``2024-06-28T16:00:00.123456Z`` (aware or naive UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"


def expires_at(result: Mapping[str, Any] | None) -> dt.datetime | None:
    """When the file of an export job's ``result`` expires (aware UTC; None: no file)."""
    if not result or not result.get("expires_at"):
        return None
    return dt.datetime.fromisoformat(str(result["expires_at"]))


class ExportFiles:
    """The export jobs' folder (created when needed) and the retention of its files."""

    def __init__(
        self,
        folder: Path,
        retention: dt.timedelta,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.folder = folder
        self.retention = retention
        self._clock = clock  # aware UTC
        self._lock = threading.Lock()  # a sweep never deletes a folder being created

    def path(self, job_id: str, result: Mapping[str, Any]) -> Path | None:
        """The file of a succeeded export job, unless it expired or is gone."""
        expiry = expires_at(result)
        if not _JOB_ID.match(job_id) or expiry is None or expiry <= self._clock():
            return None
        path = self.folder / job_id / _stored_name(str(result.get("format", "")))
        return path if path.is_file() else None

    def write(
        self,
        reader: IndexReader,
        job_id: str,
        index_id: str,
        start: dt.date | None,
        end: dt.date | None,
        fmt: ExportFormat,
        as_of: dt.datetime | None,
        progress: ExportProgress | None = None,
        as_of_version: int | None = None,
    ) -> dict[str, Any]:
        """Export into the job's folder; returns the job's result (what GET /jobs shows)."""
        folder = self.folder / job_id
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
        try:
            exported = export_index(
                reader,
                index_id,
                start,
                end,
                fmt,
                folder,
                as_of,
                as_of_version=as_of_version,
                progress=progress,
            )
            path = exported.path.rename(folder / _stored_name(fmt))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        written = self._clock()
        return {
            "index": index_id,
            "format": fmt,
            "start_date": exported.start,
            "end_date": exported.end,
            "as_of": None if as_of is None else format_as_of(as_of),
            "as_of_version": as_of_version,
            "build_version": exported.build_version,
            "rows": exported.rows,
            "filename": exported.filename,
            "media_type": exported.media_type,
            "bytes": path.stat().st_size,
            "expires_at": format_utc(written + self.retention),
        }

    def remove(self, job_id: str) -> None:
        """Delete a job's file (its job was dropped)."""
        if _JOB_ID.match(job_id):
            shutil.rmtree(self.folder / job_id, ignore_errors=True)

    def sweep(self, kept: Callable[[], Mapping[str, dt.datetime | None]]) -> int:
        """Delete every job folder but those of ``kept()`` (job id -> the file's expiry;
        jobs not finished: :data:`KEEP`) that have not expired; returns how many
        were deleted. Only entries named like a job id are touched. ``kept`` is
        asked while no :meth:`write` can create a folder, so a job it does not
        know cannot have one yet."""
        with self._lock:
            return self._sweep(kept())

    def _sweep(self, kept: Mapping[str, dt.datetime | None]) -> int:
        if not self.folder.is_dir():
            return 0
        now = self._clock()
        removed = 0
        for entry in self.folder.iterdir():
            if not _JOB_ID.match(entry.name):
                continue
            expiry = kept.get(entry.name)
            if expiry is not None and expiry > now:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed


def _stored_name(fmt: str) -> str:
    return "export.xlsx" if fmt == "xlsx" else "export.zip"
