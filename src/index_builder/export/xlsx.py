"""The xlsx export: one workbook written row by row with xlsxwriter's constant memory mode.

Sheets, in order: ``Summary`` (facts, statistics and a line chart of the level),
``Performance``, ``Compositions`` (continued on ``Compositions (2)``, ... past
Excel's row limit) and ``Changes``. Numbers are written as numbers, unrounded;
dates as Excel dates; only the display format differs from the JSON values.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from xlsxwriter import Workbook
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from index_builder.errors import InvalidInputError
from index_builder.export.tables import (
    PERFORMANCE,
    SUMMARY_TITLE,
    Column,
    Field,
    Row,
    SummaryTable,
    TableSpec,
    finite,
)

MAX_ROWS = 1_048_576
"""Rows of an Excel worksheet, the header included."""

MAX_STRING = 32_767
"""Characters of an Excel cell."""

_CHART_ANCHOR = "E2"
_CHART_SIZE = {"x_scale": 1.6, "y_scale": 1.4}

CellWriter = Callable[[int, Any], None]

_CHUNK_ROWS = 5000
_RENDER_CACHE = 100_000  # distinct strings kept rendered per column
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


_EXCEL_EPOCH = dt.date(1899, 12, 30)
_EXCEL_LEAP_BUG_END = dt.date(1900, 3, 1)


def excel_serial(day: dt.date) -> int:
    """The Excel (1900 date system) serial number of ``day``, as ``write_datetime`` gives.

    Excel counts the non-existent 1900-02-29, so days before 1900-03-01 are one less.
    """
    serial = (day - _EXCEL_EPOCH).days
    return serial if day >= _EXCEL_LEAP_BUG_END else serial - 1


class ExactWorksheet(Worksheet):  # type: ignore[misc]  # xlsxwriter is untyped
    """A worksheet writing numbers with round-trip precision.

    xlsxwriter writes numbers with 16 significant digits, which does not always
    give back the same double; ``repr`` is the shortest text that does, so a value
    read back equals the value written (and the JSON API's) exactly. This overrides
    an internal method of xlsxwriter; ``tests/export`` checks the round trip.
    """

    def _xml_number_element(
        self, number: float, attributes: Sequence[tuple[str, Any]] = ()
    ) -> None:
        # the attributes of a number cell are its reference and style index: nothing to escape
        attr = ""
        for key, value in attributes:
            attr += f' {key}="{value}"'
        self.fh.write(f"<c{attr}><v>{number!r}</v></c>")

    def write_rendered_rows(self, first_row: int, xml: str, rows: int, columns: int) -> None:
        """Append ``rows`` pre-rendered ``<row>`` elements starting at ``first_row``.

        Constant-memory mode only: the pending row (the header) is flushed first,
        then the XML goes straight to the row buffer, bypassing the per-cell
        bookkeeping that dominates the time of large exports.
        """
        if rows == 0:
            return
        self._write_single_row(first_row)
        self.fh.write(xml)
        last_row = first_row + rows - 1
        dims: dict[str, Any] = self.__dict__  # xlsxwriter's untyped bookkeeping
        for name, value, pick in (
            ("dim_rowmin", first_row, min),
            ("dim_rowmax", last_row, max),
            ("dim_colmin", 0, min),
            ("dim_colmax", columns - 1, max),
        ):
            current = dims[name]
            dims[name] = value if current is None else pick(current, value)
        self.previous_row = last_row + 1


class XlsxExport:
    """Writes the tables of one export to an xlsx file, each table once, in sheet order."""

    def __init__(self, path: Path, scratch: Path) -> None:
        """Start a workbook at ``path``; xlsxwriter's row buffers go to ``scratch``."""
        self._book = Workbook(
            str(path),
            {
                "constant_memory": True,
                "tmpdir": str(scratch),
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
            },
        )
        self._formats: dict[str | None, Format] = {}
        self._bold = self._book.add_format({"bold": True})
        self.max_rows = MAX_ROWS

    # ------------------------------------------------------------------ tables
    def summary(self, table: SummaryTable, chart_title: str) -> None:
        """The ``Summary`` sheet: facts, statistics and a line chart of the level.

        The chart references the ``Performance`` sheet, written next.
        """
        sheet = self._book.add_worksheet(SUMMARY_TITLE, worksheet_class=ExactWorksheet)
        sheet.set_column(0, 0, 24)
        sheet.set_column(1, 1, 22)
        row = self._fields(sheet, 0, "field", table.facts)
        self._fields(sheet, row + 1, "statistic", table.statistics)
        if table.trading_days > 0:
            sheet.insert_chart(_CHART_ANCHOR, self._level_chart(chart_title, table), _CHART_SIZE)

    def table(self, spec: TableSpec, rows: Iterable[Row]) -> int:
        """Write one table as a data sheet (more sheets past the row limit); returns its rows.

        Rows are rendered to XML in chunks (see :meth:`ExactWorksheet.write_rendered_rows`).
        """
        renderers = [self._cell_renderer(c, _column_letter(i)) for i, c in enumerate(spec.columns)]
        part, written, total = 1, 0, 0
        sheet = self._data_sheet(spec, spec.title)
        per_sheet = self.max_rows - 1
        chunk: list[str] = []
        chunk_start = 1

        def flush() -> None:
            sheet.write_rendered_rows(chunk_start, "".join(chunk), len(chunk), len(renderers))
            chunk.clear()

        for values in rows:
            if written == per_sheet:
                flush()
                self._finish(sheet, spec, written)
                part += 1
                sheet = self._data_sheet(spec, f"{spec.title} ({part})")
                written, chunk_start = 0, 1
            written += 1
            ref = str(written + 1)
            cells = "".join(
                render(ref, value) for render, value in zip(renderers, values, strict=True)
            )
            chunk.append(f'<row r="{ref}">{cells}</row>')
            total += 1
            if len(chunk) == _CHUNK_ROWS:
                flush()
                chunk_start = written + 1
        flush()
        self._finish(sheet, spec, written)
        return total

    def close(self) -> None:
        """Assemble and write the workbook."""
        self._book.close()

    def abort(self) -> None:
        """Release the row buffers after a failure (the caller deletes the file)."""
        self._book.close()

    # ------------------------------------------------------------------ helpers
    def _format(self, number_format: str | None) -> Format:
        fmt = self._formats.get(number_format)
        if fmt is None:
            props = {} if number_format is None else {"num_format": number_format}
            fmt = self._formats[number_format] = self._book.add_format(props)
        return fmt

    def _fields(self, sheet: Worksheet, row: int, header: str, fields: Iterable[Field]) -> int:
        """Write a header and one ``name | value`` row per field; returns the next row."""
        sheet.write_string(row, 0, header, self._bold)
        sheet.write_string(row, 1, "value", self._bold)
        for f in fields:
            row += 1
            sheet.write_string(row, 0, f.name)
            self._cell_writer(sheet, Column(f.name, f.kind, f.number_format))(row, f.value)
        return row + 1

    def _level_chart(self, title: str, table: SummaryTable) -> Any:
        n = table.trading_days
        sheet = PERFORMANCE.title
        level = PERFORMANCE.names.index("level")
        chart = self._book.add_chart({"type": "line"})
        assert chart is not None
        chart.add_series(
            {
                "name": "level",
                "categories": [sheet, 1, 0, n, 0],
                "values": [sheet, 1, level, n, level],
                "line": {"width": 1.5},
            }
        )
        chart.set_title({"name": title})
        chart.set_x_axis(
            {"date_axis": True, "num_format": "yyyy-mm-dd", "num_font": {"rotation": -45}}
        )
        chart.set_y_axis(
            {"name": "level", "num_format": "#,##0", "major_gridlines": {"visible": True}}
        )
        chart.set_legend({"none": True})
        return chart

    def _data_sheet(self, spec: TableSpec, title: str) -> ExactWorksheet:
        sheet: ExactWorksheet = self._book.add_worksheet(title, worksheet_class=ExactWorksheet)
        for i, column in enumerate(spec.columns):
            sheet.set_column(i, i, column.width)
            sheet.write_string(0, i, column.name, self._bold)
        sheet.freeze_panes(1, 0)
        return sheet

    def _cell_renderer(self, column: Column, letter: str) -> Callable[[str, Any], str]:
        """A function rendering one value of ``column`` in row ``ref`` as a ``<c>`` element;
        missing and non-finite values render as nothing (an empty cell)."""
        xf = self._format(column.number_format)._get_xf_index()
        style = f' s="{xf}"' if xf else ""
        kind = column.kind
        if kind == "date":
            serials: dict[dt.date, int] = {}  # a day repeats on every row of its composition

            def date_cell(ref: str, value: dt.date | None) -> str:
                if value is None:
                    return ""
                serial = serials.get(value)
                if serial is None:
                    serial = serials[value] = excel_serial(value)
                return f'<c r="{letter}{ref}"{style}><v>{serial}</v></c>'

            return date_cell
        if kind in ("float", "int"):

            def number_cell(ref: str, value: float | None) -> str:
                if value is None or not math.isfinite(value):
                    return ""
                return f'<c r="{letter}{ref}"{style}><v>{value!r}</v></c>'

            return number_cell
        if kind == "datetime":
            raise ValueError("datetime columns are only written on the Summary sheet")
        name = column.name
        # symbols, names and sectors repeat on every day of a composition
        rendered: dict[str, tuple[str, str]] = {}

        def str_cell(ref: str, value: str | None) -> str:
            if not value:
                return ""
            parts = rendered.get(value)
            if parts is None:
                if len(value) > MAX_STRING:
                    raise InvalidInputError(
                        f"a {name!r} value has {len(value):,} characters, more than an Excel "
                        f"cell holds ({MAX_STRING:,}): export as csv or parquet",
                        field="format",
                    )
                text = _CONTROL.sub("", escape(value))
                space = ' xml:space="preserve"' if text != text.strip() else ""
                if len(rendered) < _RENDER_CACHE:
                    rendered[value] = (text, space)
                parts = (text, space)
            text, space = parts
            return f'<c r="{letter}{ref}"{style} t="inlineStr"><is><t{space}>{text}</t></is></c>'

        return str_cell

    @staticmethod
    def _finish(sheet: Worksheet, spec: TableSpec, rows: int) -> None:
        sheet.autofilter(0, 0, rows, len(spec.columns) - 1)

    def _cell_writer(self, sheet: Worksheet, column: Column, col: int = 1) -> CellWriter:
        """A function writing one value of ``column`` at ``(row, col)``; ``None`` stays empty."""
        fmt = self._format(column.number_format)
        kind = column.kind
        if kind == "datetime":
            write_datetime = sheet.write_datetime

            def datetime_cell(row: int, value: dt.datetime | None) -> None:
                if value is not None:
                    write_datetime(row, col, value, fmt)

            return datetime_cell
        if kind == "date":
            write_date = sheet.write_number
            serials: dict[dt.date, int] = {}  # a day repeats on every row of its composition

            def date_cell(row: int, value: dt.date | None) -> None:
                if value is not None:
                    serial = serials.get(value)
                    if serial is None:
                        serial = serials[value] = excel_serial(value)
                    write_date(row, col, serial, fmt)

            return date_cell
        if kind == "float":
            write_number = sheet.write_number

            def float_cell(row: int, value: float | None) -> None:
                number = finite(value)
                if number is not None:
                    write_number(row, col, number, fmt)

            return float_cell
        if kind == "int":
            write_int = sheet.write_number

            def int_cell(row: int, value: int | None) -> None:
                if value is not None:
                    write_int(row, col, value, fmt)

            return int_cell
        write_string = sheet.write_string
        name = column.name

        def str_cell(row: int, value: str | None) -> None:
            if not value:
                return
            if len(value) > MAX_STRING:
                raise InvalidInputError(
                    f"a {name!r} value has {len(value):,} characters, more than an Excel cell "
                    f"holds ({MAX_STRING:,}): export as csv or parquet",
                    field="format",
                )
            write_string(row, col, value)

        return str_cell
