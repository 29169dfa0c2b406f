"""The csv and parquet exports: one zip with a file per table.

Members: ``summary``, ``performance``, ``compositions`` and ``changes`` (``.csv``
or ``.parquet``). Each table is written to a scratch file, added to the zip
(deflated) and deleted, so only one table is ever on disk outside the zip.

CSV: UTF-8, a header row, dates ISO 8601, floats with ``repr`` precision,
missing values empty. Parquet: typed columns (``date32``, ``float64``,
``int64``, ``string``), missing values null, written in batches of
:data:`PARQUET_BATCH_ROWS` rows. ``summary.csv`` holds ``statistic,value`` rows:
the export's facts, then the statistics; ``summary.parquet`` holds the
statistics as ``statistic: string, value: float64`` and the facts as file
key-value metadata.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from index_builder.export.tables import (
    SUMMARY_STEM,
    CellKind,
    Field,
    Row,
    SummaryTable,
    TableSpec,
    finite,
)

TableFormat = Literal["csv", "parquet"]

PARQUET_BATCH_ROWS = 50_000
"""Rows buffered before a Parquet record batch is written."""

SUMMARY_COLUMNS = ("statistic", "value")

_ARROW_TYPES: dict[CellKind, pa.DataType] = {
    "date": pa.date32(),
    "datetime": pa.timestamp("us"),
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
}


def _text(kind: CellKind) -> Callable[[Any], str]:
    """CSV text of one value of ``kind`` (empty when missing)."""
    if kind in ("date", "datetime"):
        return lambda v: "" if v is None else v.isoformat()
    if kind == "float":

        def number(v: float | None) -> str:
            f = finite(v)
            return "" if f is None else repr(f)

        return number
    if kind == "int":
        return lambda v: "" if v is None else str(int(v))
    return lambda v: "" if v is None else str(v)


def _field_text(f: Field) -> str:
    return _text(f.kind)(f.value)


class ArchiveExport:
    """Writes the tables of one export as members of a zip file."""

    def __init__(self, path: Path, scratch: Path, fmt: TableFormat) -> None:
        """Start a zip at ``path``; tables are staged in ``scratch``."""
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self._scratch = scratch
        self._fmt: TableFormat = fmt
        self.batch_rows = PARQUET_BATCH_ROWS

    def summary(self, table: SummaryTable, chart_title: str) -> None:
        """``summary.<ext>``: ``statistic,value`` rows (``chart_title`` is unused here)."""
        path = self._stage(SUMMARY_STEM)
        if self._fmt == "csv":
            with path.open("w", encoding="utf-8", newline="") as f:
                out = csv.writer(f, lineterminator="\n")
                out.writerow(SUMMARY_COLUMNS)
                for field in (*table.facts, *table.statistics):
                    out.writerow((field.name, _field_text(field)))
        else:
            metadata = {f.name: _field_text(f) for f in table.facts}
            schema = pa.schema(
                [("statistic", pa.string()), ("value", pa.float64())], metadata=metadata
            )
            data = pa.table(
                [
                    [s.name for s in table.statistics],
                    [finite(s.value) for s in table.statistics],
                ],
                schema=schema,
            )
            pq.write_table(data, path)
        self._add(path, SUMMARY_STEM)

    def table(self, spec: TableSpec, rows: Iterable[Row]) -> int:
        """``<stem>.<ext>`` with the rows of ``spec``; returns the number of rows."""
        path = self._stage(spec.stem)
        if self._fmt == "csv":
            count = self._csv(path, spec, rows)
        else:
            count = self._parquet(path, spec, rows)
        self._add(path, spec.stem)
        return count

    def close(self) -> None:
        """Finish the zip."""
        self._zip.close()

    def abort(self) -> None:
        """Close the zip after a failure (the caller deletes the file)."""
        self._zip.close()

    # ------------------------------------------------------------------ helpers
    def _stage(self, stem: str) -> Path:
        return self._scratch / f"{stem}.{self._fmt}"

    def _add(self, path: Path, stem: str) -> None:
        self._zip.write(path, f"{stem}.{self._fmt}")
        path.unlink()

    @staticmethod
    def _csv(path: Path, spec: TableSpec, rows: Iterable[Row]) -> int:
        texts = [_text(c.kind) for c in spec.columns]
        count = 0
        with path.open("w", encoding="utf-8", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(spec.names)
            for values in rows:
                out.writerow([t(v) for t, v in zip(texts, values, strict=True)])
                count += 1
        return count

    def _parquet(self, path: Path, spec: TableSpec, rows: Iterable[Row]) -> int:
        schema = pa.schema([(c.name, _ARROW_TYPES[c.kind]) for c in spec.columns])
        floats = [c.kind == "float" for c in spec.columns]
        width = len(spec.columns)
        count = 0
        with pq.ParquetWriter(path, schema) as writer:
            buffer: list[list[Any]] = [[] for _ in range(width)]

            def flush() -> None:
                arrays = [
                    pa.array([finite(v) for v in values] if is_float else values, type=t)
                    for values, is_float, t in zip(buffer, floats, schema.types, strict=True)
                ]
                writer.write_batch(pa.record_batch(arrays, schema=schema))
                for values in buffer:
                    values.clear()

            for values in rows:
                for column, value in zip(buffer, values, strict=True):
                    column.append(value)
                count += 1
                if count % self.batch_rows == 0:
                    flush()
            if count == 0 or count % self.batch_rows:
                flush()
        return count
