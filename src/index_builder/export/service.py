"""Export one index window to a downloadable file (xlsx, or a zip of csv/parquet tables).

The reader validates the request (unknown index, bad window) before any file is
written. The tables are then written one at a time so that at most one is in
memory: the performance rows, then the compositions streamed day by day as the
reader reconstructs them, then the changes.

Compositions are reconstructed in chunks of at most :data:`COMPOSITION_CHUNK_DAYS`
trading days (one ``reader.compositions`` call, i.e. one engine run over one
panel, each): the memory of an export no longer grows with its window (a
10-year panel of 6000 securities is 1.2 GiB), and the engine gives the same
doubles whatever day a reconstruction starts from, so the values are those of
one run over the whole window. The reads of one export must come from one
build: when the index was rebuilt while the file was written, it is written
again (at most :data:`ATTEMPTS` times).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from index_builder.errors import ConflictError, InvalidInputError
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
from index_builder.services.queries import Composition, IndexReader, Window

ExportFormat = Literal["xlsx", "csv", "parquet"]
"""Export file formats: a workbook, or a zip of CSV or Parquet tables."""

EXPORT_FORMATS: tuple[ExportFormat, ...] = ("xlsx", "csv", "parquet")

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZIP_MEDIA_TYPE = "application/zip"

COMPOSITION_CHUNK_DAYS = 63
"""Most trading days of compositions reconstructed by one engine run (about a quarter)."""

ATTEMPTS = 3
"""Times an export is written when the index keeps being rebuilt meanwhile."""

ExportProgress = Callable[[str, float], None]
"""``progress(stage, fraction done)``."""


@dataclass(frozen=True)
class ExportFile:
    """A finished export: the caller streams ``path`` and then deletes it.

    ``start``/``end``: the window exported; ``build_version``: the build read;
    ``rows``: rows per table (performance, compositions, changes).
    """

    path: Path
    filename: str
    media_type: str
    start: dt.date | None = None
    end: dt.date | None = None
    build_version: int | None = None
    rows: dict[str, int] = field(default_factory=dict)


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
    *,
    as_of_version: int | None = None,
    progress: ExportProgress | None = None,
    chunk_days: int = COMPOSITION_CHUNK_DAYS,
) -> ExportFile:
    """Write the summary, performance, compositions and changes of one index window.

    ``start``/``end`` default to the built range, as for the other reads; errors of
    the reader (unknown index, end before start, no data...) propagate before any
    file is created. ``as_of``: the build as of that moment (its name is in the
    file name and the summary); ``as_of_version``: the build as of that version. The
    file gets a unique name in ``directory``, which must exist; on failure nothing is
    left there. ``progress`` hears the stage and the fraction done; compositions are
    reconstructed ``chunk_days`` trading days at a time.
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidInputError(
            f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})", field="format"
        )
    if chunk_days < 1:
        raise ValueError(f"chunk_days must be at least 1, got {chunk_days}")
    step = progress or (lambda _stage, _fraction: None)
    for _ in range(ATTEMPTS):
        exported, window = _export(
            reader, index_id, start, end, fmt, directory, (as_of, as_of_version), step, chunk_days
        )
        state = reader.store.build_state(window.key)
        if state is not None and state.version == window.state.version:
            return exported
        exported.path.unlink(missing_ok=True)  # rebuilt meanwhile: the tables may mix builds
    raise ConflictError(
        f"{index_id} was rebuilt while it was being exported, {ATTEMPTS} times: export again"
    )


def _export(
    reader: IndexReader,
    index_id: str,
    start: dt.date | None,
    end: dt.date | None,
    fmt: ExportFormat,
    directory: Path,
    point: tuple[dt.datetime | None, int | None],
    step: ExportProgress,
    chunk_days: int,
) -> tuple[ExportFile, Window]:
    """One attempt of :func:`export_index`; also returns the window read first
    (``point``: the as-of moment and the as-of version read, at most one of them)."""
    step("reading the performance", 0.0)
    as_of, as_of_version = point
    performance = reader.performance(index_id, start, end, as_of=as_of, as_of_version=as_of_version)
    window = performance.window
    days = [row["date"] for row in performance.rows]
    generated_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    summary = summary_table(window, performance.summary, len(performance.rows), generated_at)
    label = window.definition.id
    if window.as_of is not None:
        label += f"_asof-{window.as_of:%Y%m%dT%H%M%SZ}"
    if window.as_of_version is not None:
        label += f"_asof-v{window.as_of_version}"
    stem = f"{label}_{window.start.isoformat()}_{window.end.isoformat()}"
    if fmt == "xlsx":
        suffix, filename, media_type = ".xlsx", f"{stem}.xlsx", XLSX_MEDIA_TYPE
    else:
        suffix, filename, media_type = ".zip", f"{stem}_{fmt}.zip", ZIP_MEDIA_TYPE

    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
    path: Path | None = None
    writer: _Writer | None = None
    rows: dict[str, int] = {}
    try:
        fd, name = tempfile.mkstemp(prefix=f"{stem}_", suffix=suffix, dir=directory)
        os.close(fd)
        path = Path(name)
        writer = XlsxExport(path, scratch) if fmt == "xlsx" else ArchiveExport(path, scratch, fmt)
        writer.summary(summary, f"{window.definition.name} ({window.definition.id})")
        rows[PERFORMANCE.stem] = writer.table(PERFORMANCE, performance_rows(performance.rows))
        del performance  # the performance rows are not needed any more
        compositions = _compositions(reader, window, days, chunk_days, step)
        rows[COMPOSITIONS.stem] = writer.table(COMPOSITIONS, composition_rows(compositions))
        del compositions
        step("reading the changes", 0.92)
        _, changes = reader.changes(
            index_id, window.start, window.end, window.as_of, window.as_of_version
        )
        rows[CHANGES.stem] = writer.table(CHANGES, change_rows(changes))
        del changes
        step("writing the file", 0.95)
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
    exported = ExportFile(
        path=path,
        filename=filename,
        media_type=media_type,
        start=window.start,
        end=window.end,
        build_version=window.state.version,
        rows=rows,
    )
    return exported, window


def _compositions(
    reader: IndexReader,
    window: Window,
    days: list[dt.date],
    chunk_days: int,
    step: ExportProgress,
) -> Iterator[Composition]:
    """The composition of every day of the window, reconstructed ``chunk_days`` trading
    days at a time (one engine run each), in order."""
    index_id = window.definition.id
    # only when set: a reader's compositions() may predate builds as of a version
    version = {} if window.as_of_version is None else {"as_of_version": window.as_of_version}
    for first in range(0, len(days), chunk_days):
        chunk = days[first : first + chunk_days]
        step("reconstructing the compositions", 0.05 + 0.85 * first / len(days))
        yield from reader.compositions(index_id, chunk[0], chunk[-1], window.as_of, **version)
