"""Export one index window to a downloadable file (xlsx, or a zip of csv/parquet tables).

The reader validates the request (unknown index, bad window) before any file is
written. The tables are then written one at a time so that at most one is in
memory: the performance rows, then the compositions streamed day by day as the
reader reconstructs them, then the changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from index_builder.errors import InvalidInputError
from index_builder.export.archive import ArchiveExport
from index_builder.export.tables import (
    CHANGES,
    COMPOSITIONS,
    PERFORMANCE,
    Row,
    SummaryTable,
    TableSpec,
    change_rows,
    composition_rows,
    performance_rows,
    summary_table,
)
from index_builder.export.xlsx import XlsxExport
from index_builder.services.queries import IndexReader

ExportFormat = Literal["xlsx", "csv", "parquet"]
"""Export file formats: a workbook, or a zip of CSV or Parquet tables."""

EXPORT_FORMATS: tuple[ExportFormat, ...] = ("xlsx", "csv", "parquet")

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZIP_MEDIA_TYPE = "application/zip"


@dataclass(frozen=True)
class ExportFile:
    """A finished export: the caller streams ``path`` and then deletes it."""

    path: Path
    filename: str
    media_type: str


class _Writer(Protocol):
    def summary(self, table: SummaryTable, chart_title: str) -> None: ...

    def table(self, spec: TableSpec, rows: Iterable[Row]) -> int: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def export_index(
    reader: IndexReader,
    index_id: str,
    start: dt.date | None,
    end: dt.date | None,
    fmt: ExportFormat,
    directory: Path,
    as_of: dt.datetime | None = None,
) -> ExportFile:
    """Write the summary, performance, compositions and changes of one index window.

    ``start``/``end`` default to the built range, as for the other reads; errors of
    the reader (unknown index, end before start, no data...) propagate before any
    file is created. ``as_of``: the build as of that moment (its name is in the
    file name and the summary). The file gets a unique name in ``directory``, which
    must exist; on failure nothing is left there.
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidInputError(
            f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})", field="format"
        )
    performance = reader.performance(index_id, start, end, as_of=as_of)
    window = performance.window
    generated_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    summary = summary_table(window, performance.summary, len(performance.rows), generated_at)
    label = window.definition.id
    if window.as_of is not None:
        label += f"_asof-{window.as_of:%Y%m%dT%H%M%SZ}"
    stem = f"{label}_{window.start.isoformat()}_{window.end.isoformat()}"
    if fmt == "xlsx":
        suffix, filename, media_type = ".xlsx", f"{stem}.xlsx", XLSX_MEDIA_TYPE
    else:
        suffix, filename, media_type = ".zip", f"{stem}_{fmt}.zip", ZIP_MEDIA_TYPE

    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
    path: Path | None = None
    writer: _Writer | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f"{stem}_", suffix=suffix, dir=directory)
        os.close(fd)
        path = Path(name)
        writer = XlsxExport(path, scratch) if fmt == "xlsx" else ArchiveExport(path, scratch, fmt)
        writer.summary(summary, f"{window.definition.name} ({window.definition.id})")
        writer.table(PERFORMANCE, performance_rows(performance.rows))
        del performance  # the performance rows are not needed any more
        compositions = reader.compositions(index_id, window.start, window.end, window.as_of)
        writer.table(COMPOSITIONS, composition_rows(compositions))
        del compositions
        _, changes = reader.changes(index_id, window.start, window.end, window.as_of)
        writer.table(CHANGES, change_rows(changes))
        del changes
        writer.close()
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):  # the original error wins
                writer.abort()
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportFile(path=path, filename=filename, media_type=media_type)
