"""``index-builder export``: the API's export file, written atomically, with one-line errors."""

from __future__ import annotations

import datetime as dt
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
import pytest

import index_builder.cli.main as cli_main
from index_builder.calendar import get_calendar
from index_builder.export import export_index
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

from cli_runner import ok, run

TABLES = ["summary", "performance", "compositions", "changes"]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "e.duckdb"
    ok(path, "ingest", "--symbols", "150", "--days", "30", "--start", "2023-01-03")
    ok(path, "build", "-i", "ew100")
    return path


def _written(out: str, path: Path) -> None:
    assert out == f"wrote {path.absolute()} ({path.stat().st_size:,} bytes)\n"


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_xlsx_opens_with_the_api_sheets(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "ew100.xlsx"
    out = ok(db, "export", "--index", "ew100", "--format", "xlsx", "--out", str(target))
    _written(out, target)
    book = openpyxl.load_workbook(target, read_only=True)
    assert book.sheetnames == ["Summary", "Performance", "Compositions", "Changes"]
    rows = list(book["Performance"].iter_rows(values_only=True))
    assert rows[0][:2] == ("date", "level") and len(rows) == 31  # header + 30 sessions
    assert _leftovers(tmp_path, {"ew100.xlsx"}) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_zip_holds_the_tables_of_the_api_export(db: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"window.{fmt}.zip"
    args = ["--start", "2023-01-10", "--end", "2023-02-01", "-f", fmt, "-o", str(target)]
    _written(ok(db, "export", *args), target)
    with DuckDBStore(db, calendar=get_calendar("XNYS", "1990-01-01")) as store:
        reader = IndexReader(store, store.calendar)
        window = (dt.date(2023, 1, 10), dt.date(2023, 2, 1))
        direct = export_index(reader, "ew100", *window, fmt, tmp_path)  # type: ignore[arg-type]
    mine, api = zipfile.ZipFile(target), zipfile.ZipFile(direct.path)
    assert mine.namelist() == api.namelist() == [f"{t}.{fmt}" for t in TABLES]
    for name in mine.namelist()[1:]:  # the summary differs only in its generated_at
        assert mine.read(name) == api.read(name), name
    if fmt == "parquet":
        perf = pq.read_table(io.BytesIO(mine.read("performance.parquet")))
        assert perf.column("date").to_pylist()[0] == dt.date(2023, 1, 10)


def test_replaces_an_existing_file_and_keeps_its_mode(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    target.write_text("old")
    target.chmod(0o640)
    ok(db, "export", "-o", str(target))
    assert target.stat().st_mode & 0o777 == 0o640
    assert openpyxl.load_workbook(target, read_only=True).sheetnames[0] == "Summary"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-i", "nope"], "unknown index 'nope'"),
        (["-i", "ew-tech50"], "not built yet"),
        (["--end", "2030-01-02"], "after the last built day"),
        (["--start", "2023-02-30"], "is not a date"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(
    db: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = run(db, "export", *args, "-o", str(tmp_path / "x.xlsx"))
    assert code == 2 and out == ""
    assert message in err and err.strip().count("\n") == 0
    assert _leftovers(tmp_path, set()) == []


def test_unwritable_targets_are_user_errors(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(db, "export", "-o", str(tmp_path / "missing" / "x.xlsx"))
    assert code == 2 and "does not exist" in err
    code, _, err = run(db, "export", "-o", str(tmp_path))
    assert code == 2 and "is a directory" in err
    (tmp_path / "file").write_text("")
    code, _, err = run(db, "export", "-o", str(tmp_path / "file" / "x.xlsx"))
    assert code == 2 and "is not a folder" in err

    def denied(*_: Any, **__: Any) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli_main.tempfile, "mkdtemp", denied)
    code, _, err = run(db, "export", "-o", str(tmp_path / "x.xlsx"))
    assert code == 2 and f"cannot write to {tmp_path}: Permission denied" in err
    assert err.strip().count("\n") == 0


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.xlsx"
    target.write_bytes(b"the previous export")

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        folder: Path = args[5]
        (folder / "partial.xlsx").write_bytes(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_main, "export_index", disk_full)
    code, out, err = run(db, "export", "-o", str(target))
    assert code == 1 and out == ""
    assert err.strip() == f"error: cannot write {target}: No space left on device"
    assert target.read_bytes() == b"the previous export"
    assert _leftovers(tmp_path, {"out.xlsx"}) == []


def test_a_suffix_that_does_not_match_the_format_is_a_warning(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "tables.xlsx"
    code, _, err = run(db, "export", "-f", "csv", "-o", str(target))
    assert code == 0 and "does not end in .zip" in err
    assert zipfile.is_zipfile(target)
