"""Exports of an index window: xlsx workbook and csv/parquet zips equal the reads exactly."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import weakref
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
import pytest
import xlsxwriter
from openpyxl.chart import LineChart
from openpyxl.worksheet.worksheet import Worksheet

from index_builder.calendar import get_calendar
from index_builder.engine.spells import Change
from index_builder.errors import ConflictError, InvalidInputError, NotFoundError
from index_builder.export import (
    XLSX_MEDIA_TYPE,
    ZIP_MEDIA_TYPE,
    ExportFile,
    ExportFormat,
    export_index,
)
from index_builder.export import archive as archive_module
from index_builder.export import xlsx as xlsx_module
from index_builder.export.tables import CHANGES, COMPOSITIONS, PERFORMANCE
from index_builder.export.xlsx import ExactWorksheet, excel_serial
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import ensure_builtins
from index_builder.services.queries import (
    CHANGES_COLUMNS,
    COMPOSITION_COLUMNS,
    PERFORMANCE_COLUMNS,
    Composition,
    IndexReader,
)
from index_builder.storage.duckdb.store import DuckDBStore

START = dt.date(2023, 1, 3)
SHEETS = ["Summary", "Performance", "Compositions", "Changes"]
STATISTICS = [
    "total_return",
    "annualized_return",
    "annualized_volatility",
    "sharpe",
    "max_drawdown",
    "best_day",
    "worst_day",
    "turnover",
]
# (index, start, end): the whole built range and a window inside it
WINDOWS = [
    ("ew100", None, None),
    ("ew-tech50", dt.date(2023, 1, 20), dt.date(2023, 3, 10)),
]


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexReader]:
    """300 symbols x 60 days with ew100 and ew-tech50 built."""
    path = tmp_path_factory.mktemp("export-db") / "index_builder.duckdb"
    with DuckDBStore(path, calendar=get_calendar(), threads=2) as store:
        ensure_builtins(store)
        run_ingestion(store, "synthetic", {"symbols": 300, "days": 60, "start": START})
        IndexBuilder(store, store.calendar).build(["ew100", "ew-tech50"])
        yield IndexReader(store, store.calendar)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The caller's export directory."""
    directory = tmp_path / "exports"
    directory.mkdir()
    return directory


# ---------------------------------------------------------------------- helpers
def _records(ws: Worksheet) -> list[dict[str, Any]]:
    rows = ws.iter_rows(values_only=True)
    header = next(rows)
    return [dict(zip(header, row, strict=True)) for row in rows]


def _day(value: Any) -> dt.date:
    assert isinstance(value, dt.datetime)
    assert value.time() == dt.time(0)
    return value.date()


def _xlsx_rows(wb: openpyxl.Workbook, title: str) -> list[dict[str, Any]]:
    """Records of a data sheet and its continuation sheets, dates as ``date``."""
    records: list[dict[str, Any]] = []
    for ws in wb.worksheets:
        if ws.title == title or ws.title.startswith(f"{title} ("):
            records.extend(_records(ws))
    for r in records:
        r["date"] = _day(r["date"])
    return records


def _expected_compositions(reader: IndexReader, index_id: str, start: Any, end: Any) -> list[Any]:
    return [
        {c: row[c] for c in COMPOSITIONS.names}
        for composition in reader.compositions(index_id, start, end)
        for row in composition.rows()
    ]


def _expected_changes(changes: list[Change]) -> list[dict[str, Any]]:
    return [
        {
            "date": c.date,
            "entered": ";".join(c.entered) or None,
            "exited": ";".join(c.exited) or None,
        }
        for c in changes
    ]


def _assert_same_day(rows: list[dict[str, Any]], reader: IndexReader, index_id: str) -> None:
    """Rows of one day equal ``reader.composition(index_id, day)``.

    The export streams ``reader.compositions(window)`` (one engine run from the
    window's first rebalance); ``reader.composition(day)`` resumes at that day's
    last rebalance. Securities with dividend or split data compound their return
    price from the run's first row, so floats agree to the last bit or two;
    everything else is exact.
    """
    day = rows[0]["date"]
    expected = reader.composition(index_id, day).rows()
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-13, abs=0.0), key
            else:
                assert got[key] == value, key


def _load_member(zf: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    """Rows of one zip member, typed like the reads (CSV converted by column kind)."""
    data = zf.read(name)
    if name.endswith(".parquet"):
        return list(pq.read_table(io.BytesIO(data)).to_pylist())
    stem = name.removesuffix(".csv")
    spec = {s.stem: s for s in (PERFORMANCE, COMPOSITIONS, CHANGES)}[stem]
    convert: dict[str, Callable[[str], Any]] = {
        "date": dt.date.fromisoformat,
        "float": float,
        "int": int,
        "str": str,
    }
    kinds = {c.name: c.kind for c in spec.columns}
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    assert reader.fieldnames == spec.names
    return [
        {k: (convert[kinds[k]](v) if v != "" else None) for k, v in row.items()} for row in reader
    ]


# ---------------------------------------------------------------------- xlsx
def test_xlsx_sheets_formats_and_chart(reader: IndexReader, out: Path) -> None:
    export = export_index(reader, "ew100", None, None, "xlsx", out)
    window = reader.performance("ew100").window
    assert export.path.parent == out
    assert export.filename == f"ew100_{window.start}_{window.end}.xlsx"
    assert export.media_type == XLSX_MEDIA_TYPE
    assert sorted(out.iterdir()) == [export.path]  # no scratch files left behind

    wb = openpyxl.load_workbook(export.path)
    assert wb.sheetnames == SHEETS
    sizes = {
        "Performance": len(reader.performance("ew100").rows),
        "Compositions": len(_expected_compositions(reader, "ew100", None, None)),
        "Changes": len(reader.changes("ew100")[1]),
    }
    for spec in (PERFORMANCE, COMPOSITIONS, CHANGES):
        ws = wb[spec.title]
        header = ws[1]
        assert [c.value for c in header] == spec.names
        assert all(c.font.b for c in header)
        assert ws.freeze_panes == "A2"
        last = openpyxl.utils.get_column_letter(len(spec.names))
        assert ws.auto_filter.ref == f"A1:{last}{sizes[spec.title] + 1}"
        assert ws.max_row == sizes[spec.title] + 1
        for i, column in enumerate(spec.columns, start=1):
            letter = openpyxl.utils.get_column_letter(i)
            assert ws.column_dimensions[letter].width > 5
            cell = ws.cell(row=2, column=i)
            if column.kind == "date":
                assert isinstance(cell.value, dt.datetime)
                assert cell.is_date
                assert cell.number_format == "yyyy-mm-dd"
            elif column.kind in ("float", "int"):
                assert isinstance(cell.value, int | float)
                assert not isinstance(cell.value, bool)
            else:
                assert isinstance(cell.value, str)

    perf = wb["Performance"]
    for letter in ("C", "D"):  # daily_return, cumulative_return
        assert "%" in perf[f"{letter}2"].number_format
    assert perf["B2"].number_format == "#,##0.0000"
    comp = wb["Compositions"]
    assert comp["F2"].number_format == "0.0000%"  # weight
    assert "#,##0" in comp["G2"].number_format  # market_cap

    summary = wb["Summary"]
    assert len(summary._charts) == 1
    chart = summary._charts[0]
    assert isinstance(chart, LineChart)
    (series,) = chart.series
    n = sizes["Performance"] + 1
    assert series.val.numRef.f == f"Performance!$B$2:$B${n}"
    assert series.cat.numRef.f == f"Performance!$A$2:$A${n}"


def test_xlsx_summary_sheet(reader: IndexReader, out: Path) -> None:
    start, end = dt.date(2023, 1, 20), dt.date(2023, 3, 10)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    export = export_index(reader, "ew-tech50", start, end, "xlsx", out)
    performance = reader.performance("ew-tech50", start, end)
    window = performance.window
    ws = openpyxl.load_workbook(export.path)["Summary"]
    values = {row[0].value: row[1] for row in ws.iter_rows(max_col=2) if row[0].value}
    assert values["field"].value == "value" and values["field"].font.b
    assert values["statistic"].value == "value" and values["statistic"].font.b
    assert values["index_id"].value == "ew-tech50"
    assert values["name"].value == window.definition.name
    assert _day(values["window_start"].value) == window.start == dt.date(2023, 1, 20)
    assert _day(values["window_end"].value) == window.end == dt.date(2023, 3, 10)
    assert _day(values["base_date"].value) == window.state.base_date
    assert values["build_version"].value == window.state.version
    assert values["trading_days"].value == len(performance.rows)
    generated = values["generated_at_utc"].value
    assert isinstance(generated, dt.datetime)
    assert before <= generated <= dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for key in ("window_start", "window_end", "base_date"):
        assert values[key].number_format == "yyyy-mm-dd"
    stats = performance.summary.as_dict()
    assert list(stats) == STATISTICS
    for name, value in stats.items():
        assert values[name].value == value  # exact, unrounded
        if name == "sharpe":
            assert values[name].number_format == "0.00"
        else:
            assert values[name].number_format == "0.00%"


@pytest.mark.parametrize(("index_id", "start", "end"), WINDOWS)
def test_xlsx_values_equal_the_reads(
    reader: IndexReader, out: Path, index_id: str, start: Any, end: Any
) -> None:
    export = export_index(reader, index_id, start, end, "xlsx", out)
    wb = openpyxl.load_workbook(export.path)

    assert _xlsx_rows(wb, "Performance") == reader.performance(index_id, start, end).rows

    compositions = _xlsx_rows(wb, "Compositions")
    assert compositions == _expected_compositions(reader, index_id, start, end)
    days = sorted({r["date"] for r in compositions})
    for day in (days[0], days[len(days) // 2], days[-1]):
        _assert_same_day([r for r in compositions if r["date"] == day], reader, index_id)

    _, changes = reader.changes(index_id, start, end)
    assert changes
    assert _xlsx_rows(wb, "Changes") == _expected_changes(changes)


def test_xlsx_continues_compositions_past_the_row_limit(
    reader: IndexReader, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xlsx_module, "MAX_ROWS", 1_001)  # 1,000 data rows per sheet
    export = export_index(reader, "ew100", None, None, "xlsx", out)
    wb = openpyxl.load_workbook(export.path)
    expected = _expected_compositions(reader, "ew100", None, None)
    parts = -(-len(expected) // 1_000)
    assert parts > 1
    more = [f"Compositions ({i})" for i in range(2, parts + 1)]
    assert wb.sheetnames == ["Summary", "Performance", "Compositions", *more, "Changes"]
    for title in ["Compositions", *more]:
        ws = wb[title]
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref == f"A1:I{ws.max_row}"
        assert ws.max_row <= 1_001
    assert _xlsx_rows(wb, "Compositions") == expected


def test_xlsx_numbers_round_trip_exactly(tmp_path: Path) -> None:
    values = [0.1 + 0.2, 1 / 3, 2 / 3 * 1e-9, 5e-324, 1.7976931348623157e308, -0.0, 123456789.1]
    path = tmp_path / "numbers.xlsx"
    with xlsxwriter.Workbook(str(path), {"constant_memory": True}) as wb:
        ws = wb.add_worksheet("n", worksheet_class=ExactWorksheet)
        for i, v in enumerate(values):
            ws.write_number(i, 0, v)
    read = [row[0] for row in openpyxl.load_workbook(path)["n"].iter_rows(values_only=True)]
    assert read == values
    assert all(float(a).hex() == float(b).hex() for a, b in zip(read, values, strict=True))


@pytest.mark.parametrize(
    ("day", "serial"),
    [
        (dt.date(1900, 1, 1), 1),
        (dt.date(1900, 2, 28), 59),
        (dt.date(1900, 3, 1), 61),  # Excel's fictitious 1900-02-29 is 60
        (dt.date(2023, 1, 3), 44929),
        (dt.date(9999, 12, 31), 2958465),
    ],
)
def test_excel_serial(day: dt.date, serial: int) -> None:
    assert excel_serial(day) == serial


# ---------------------------------------------------------------------- csv / parquet
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("index_id", "start", "end"), WINDOWS)
def test_zip_members_equal_the_reads(
    reader: IndexReader, out: Path, fmt: ExportFormat, index_id: str, start: Any, end: Any
) -> None:
    export = export_index(reader, index_id, start, end, fmt, out)
    performance = reader.performance(index_id, start, end)
    window = performance.window
    assert export.filename == f"{index_id}_{window.start}_{window.end}_{fmt}.zip"
    assert export.media_type == ZIP_MEDIA_TYPE
    assert sorted(out.iterdir()) == [export.path]

    with zipfile.ZipFile(export.path) as zf:
        names = [f"{stem}.{fmt}" for stem in ("summary", "performance", "compositions", "changes")]
        assert zf.namelist() == names
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())

        assert _load_member(zf, f"performance.{fmt}") == performance.rows
        compositions = _load_member(zf, f"compositions.{fmt}")
        assert compositions == _expected_compositions(reader, index_id, start, end)
        assert list(compositions[0]) == COMPOSITIONS.names
        day = compositions[len(compositions) // 2]["date"]
        _assert_same_day([r for r in compositions if r["date"] == day], reader, index_id)
        _, changes = reader.changes(index_id, start, end)
        assert _load_member(zf, f"changes.{fmt}") == _expected_changes(changes)

        stats = performance.summary.as_dict()
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(zf.read("summary.csv").decode("utf-8"))))
            assert rows[0] == ["statistic", "value"]
            facts = dict(rows[1 : -len(STATISTICS)])
            assert facts["index_id"] == index_id
            assert facts["window_start"] == window.start.isoformat()
            assert facts["window_end"] == window.end.isoformat()
            assert facts["base_date"] == window.state.base_date.isoformat()
            assert facts["build_version"] == str(window.state.version)
            assert "generated_at_utc" in facts
            read = {k: (float(v) if v else None) for k, v in rows[-len(STATISTICS) :]}
        else:
            table = pq.read_table(io.BytesIO(zf.read("summary.parquet")))
            assert table.column_names == ["statistic", "value"]
            meta = table.schema.metadata
            assert meta[b"index_id"] == index_id.encode()
            assert meta[b"window_start"] == window.start.isoformat().encode()
            read = dict(zip(*table.to_pydict().values(), strict=True))
        assert read == stats


def test_parquet_compositions_are_written_in_batches(
    reader: IndexReader, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "PARQUET_BATCH_ROWS", 700)
    export = export_index(reader, "ew100", None, None, "parquet", out)
    with zipfile.ZipFile(export.path) as zf:
        member = pq.ParquetFile(io.BytesIO(zf.read("compositions.parquet")))
        expected = _expected_compositions(reader, "ew100", None, None)
        assert member.metadata.num_row_groups == -(-len(expected) // 700)
        assert member.read().to_pylist() == expected
        schema = member.schema_arrow
        assert str(schema.field("date").type) == "date32[day]"
        assert str(schema.field("rank").type) == "int64"
        assert str(schema.field("weight").type) == "double"


def test_table_columns_match_the_reads() -> None:
    variants = ["level_price", "level_total", "level_net_total"]
    assert PERFORMANCE.names == PERFORMANCE_COLUMNS + variants
    assert CHANGES.names == CHANGES_COLUMNS
    assert set(COMPOSITIONS.names) == {*COMPOSITION_COLUMNS, "name"}


# ---------------------------------------------------------------------- errors and laziness
@pytest.mark.parametrize("fmt", ["xlsx", "csv", "parquet"])
def test_invalid_window_raises_and_writes_nothing(
    reader: IndexReader, out: Path, fmt: ExportFormat
) -> None:
    with pytest.raises(InvalidInputError, match="before start date"):
        export_index(reader, "ew100", dt.date(2023, 2, 1), dt.date(2023, 1, 20), fmt, out)
    with pytest.raises(NotFoundError, match="unknown index"):
        export_index(reader, "nope", None, None, fmt, out)
    assert list(out.iterdir()) == []


class _FailingReader(IndexReader):
    """Fails after a few compositions, i.e. with files half written."""

    def compositions(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        as_of: dt.datetime | None = None,
    ) -> Iterator[Composition]:
        for i, composition in enumerate(super().compositions(index_id, start, end, as_of)):
            if i == 5:
                raise RuntimeError("disk on fire")
            yield composition


@pytest.mark.parametrize("fmt", ["xlsx", "csv", "parquet"])
def test_failure_while_writing_leaves_nothing(
    reader: IndexReader, out: Path, fmt: ExportFormat
) -> None:
    failing = _FailingReader(reader.store, reader.calendar)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_index(failing, "ew100", None, None, fmt, out)
    assert list(out.iterdir()) == []


class _ProbeReader(IndexReader):
    """Records how many yielded compositions are still alive at each step."""

    def __init__(self, inner: IndexReader) -> None:
        super().__init__(inner.store, inner.calendar)
        self.yielded = 0
        self.max_alive = 0
        self.exhausted = False

    def compositions(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        as_of: dt.datetime | None = None,
    ) -> Iterator[Composition]:
        alive: list[weakref.ref[Composition]] = []
        for composition in super().compositions(index_id, start, end, as_of):
            alive = [r for r in alive if r() is not None]
            self.max_alive = max(self.max_alive, len(alive) + 1)
            alive.append(weakref.ref(composition))
            self.yielded += 1
            yield composition
            del composition
        self.exhausted = True


@pytest.mark.parametrize("fmt", ["xlsx", "csv", "parquet"])
def test_compositions_are_streamed_not_collected(
    reader: IndexReader, out: Path, fmt: ExportFormat
) -> None:
    probe = _ProbeReader(reader)
    export = export_index(probe, "ew100", None, None, fmt, out)
    assert isinstance(export, ExportFile)
    assert probe.exhausted
    assert probe.yielded == len(reader.performance("ew100").rows)
    # while day k is written, at most day k-1 is still referenced: never a list of them
    assert probe.max_alive <= 2


def test_exports_get_unique_names(reader: IndexReader, out: Path) -> None:
    first = export_index(reader, "ew100", None, None, "csv", out)
    second = export_index(reader, "ew100", None, None, "csv", out)
    assert first.path != second.path
    assert first.filename == second.filename
    assert sorted(out.iterdir()) == sorted([first.path, second.path])


# ---------------------------------------------------------------------- chunks, progress, one build
class _RecordingReader(IndexReader):
    """Records the window of every ``compositions`` call."""

    def __init__(self, inner: IndexReader) -> None:
        super().__init__(inner.store, inner.calendar)
        self.calls: list[tuple[Any, Any]] = []

    def compositions(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        as_of: dt.datetime | None = None,
    ) -> Iterator[Composition]:
        self.calls.append((start, end))
        return super().compositions(index_id, start, end, as_of)


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
@pytest.mark.parametrize(("index_id", "start", "end"), WINDOWS)
def test_compositions_read_in_chunks_equal_one_run_over_the_window(
    reader: IndexReader, out: Path, fmt: ExportFormat, index_id: str, start: Any, end: Any
) -> None:
    recording = _RecordingReader(reader)
    export = export_index(recording, index_id, start, end, fmt, out, chunk_days=7)
    days = [r["date"] for r in reader.performance(index_id, start, end).rows]
    # consecutive chunks of at most 7 trading days covering the window, in order
    assert recording.calls == [
        (days[i], days[min(i + 7, len(days)) - 1]) for i in range(0, len(days), 7)
    ]
    assert export.rows["compositions"] == len(_expected_compositions(reader, index_id, start, end))
    if fmt == "xlsx":
        got = _xlsx_rows(openpyxl.load_workbook(export.path), "Compositions")
    else:
        with zipfile.ZipFile(export.path) as zf:
            got = _load_member(zf, "compositions.parquet")
    # bit for bit what one engine run over the whole window gives
    assert got == _expected_compositions(reader, index_id, start, end)


def test_the_workbook_is_written_in_constant_memory_mode(tmp_path: Path) -> None:
    writer = xlsx_module.XlsxExport(tmp_path / "x.xlsx", tmp_path)
    assert writer._book.constant_memory is True
    writer.close()


def test_progress_goes_forward_to_the_file(reader: IndexReader, out: Path) -> None:
    seen: list[tuple[str, float]] = []
    export_index(
        reader,
        "ew100",
        None,
        None,
        "csv",
        out,
        progress=lambda stage, f: seen.append((stage, f)),
        chunk_days=10,
    )
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] < 1
    stages = list(dict.fromkeys(s for s, _ in seen))
    assert stages == [
        "reading the performance",
        "reconstructing the compositions",
        "reading the changes",
        "writing the file",
    ]
    assert sum(1 for s, _ in seen if s == "reconstructing the compositions") == 6  # 60 days


class _RebuildingStore:
    """The real store, whose index appears rebuilt (a new version) on the first
    ``rebuilds`` reads of its build state after the first one."""

    def __init__(self, store: DuckDBStore, rebuilds: int) -> None:
        self._store = store
        self.reads = 0
        self.rebuilds = rebuilds

    def build_state(self, key: str) -> Any:
        state = self._store.build_state(key)
        self.reads += 1
        bump = min(self.reads - 1, self.rebuilds)
        return None if state is None else dataclasses.replace(state, version=state.version + bump)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize(("rebuilds", "written"), [(1, True), (99, False)])
def test_an_index_rebuilt_during_the_export_is_exported_again(
    reader: IndexReader, out: Path, rebuilds: int, written: bool
) -> None:
    store = _RebuildingStore(reader.store, rebuilds)  # type: ignore[arg-type]
    rebuilt = IndexReader(store, reader.calendar)  # type: ignore[arg-type]
    if written:
        export = export_index(rebuilt, "ew100", None, None, "csv", out)
        assert sorted(out.iterdir()) == [export.path]  # the first attempt's file is gone
    else:
        with pytest.raises(ConflictError, match="rebuilt while it was being exported"):
            export_index(rebuilt, "ew100", None, None, "csv", out)
        assert list(out.iterdir()) == []
