"""Conventions a user expects of the command line: --version, help texts with
brackets, --format table|csv|json on every command that prints rows, --db and -q
after the command, one-line errors for bad settings, per-file column maps."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import index_builder.cli.main as cli_main
from index_builder import __version__
from index_builder.cli.main import app
from index_builder.settings import get_settings
from index_builder.storage.duckdb.store import DuckDBStore

from cli_runner import ok, run
from market_files import write_csv


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Settings read from this test's environment (not cached by an earlier test)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small market with one bad price row (quarantined), ew100 built."""
    folder = tmp_path_factory.mktemp("conventions")
    path = folder / "c.duckdb"
    ok(path, "ingest", "--symbols", "150", "--days", "30", "--start", "2023-01-03")
    secs = write_csv(folder / "s.csv", ["symbol", "name"], [["ZZZ", "Zed"]])
    long_name = "a very long symbol name " * 12  # wider than any table column
    prices = write_csv(
        folder / "p.csv",
        ["date", "symbol", "close", "market_cap"],
        [["2023-01-03", "ZZZ", "not-a-number", "1e9"], ["2023-01-03", long_name, "1", "1"]],
    )
    ok(path, "ingest", "--provider", "file", "--securities", str(secs), "--prices", str(prices))
    ok(path, "build", "-i", "ew100")
    return path


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _flat(text: str) -> str:
    """Help text with its line wrapping undone."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------- version, help
def test_version_prints_the_name_and_version_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"index-builder {__version__}\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], "[env INDEX_BUILDER_DATABASE]"),
        (["serve", "--help"], "[env INDEX_BUILDER_API_HOST]"),
        (["serve", "--help"], "[env INDEX_BUILDER_API_PORT]"),
        (["ingest", "--help"], "[default: end on 2024-12-31]"),
        (["daily", "--help"], "[default: now]"),
        (["build", "--help"], "[env INDEX_BUILDER_DATABASE]"),  # --db after the command
    ],
)
def test_help_shows_square_brackets(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert expected in _flat(result.stdout)


# ---------------------------------------------------------------------------- --format
def _formats(db: Path, *args: str) -> tuple[str, list[dict[str, str]], list[dict[str, Any]]]:
    """The table, csv rows and json records of one command."""
    table = ok(db, *args)
    rows = _csv(ok(db, *args, "--format", "csv"))
    records = json.loads(ok(db, *args, "-f", "json"))
    assert isinstance(records, list)
    return table, rows, records


@pytest.mark.parametrize(
    ("args", "columns"),
    [
        (["runs"], ["run_id", "provider", "status", "started_at", "known_at", "message"]),
        (["indices", "list"], ["id", "name", "top_n", "built_through", "data_waiting_from"]),
        (["quarantine"], ["run_id", "source", "row_number", "symbol", "reason", "record"]),
        (["providers"], ["name", "capabilities", "rate_limit_per_minute", "auth", "configured"]),
    ],
)
def test_listing_commands_take_table_csv_and_json(
    db: Path, args: list[str], columns: list[str]
) -> None:
    table, rows, records = _formats(db, *args)
    assert rows and len(rows) == len(records)
    assert set(columns) <= set(rows[0]) and list(rows[0]) == list(records[0])
    assert all(c in table for c in columns[:2])


def test_csv_and_json_never_cut_values_but_the_table_may(db: Path) -> None:
    table, rows, records = _formats(db, "quarantine")
    with DuckDBStore(db) as store:
        stored = {(r["run_id"], r["row_number"]): r["record"] for r in store.quarantined()}
    long_record = max(stored.values(), key=len)
    assert len(long_record) > 160
    assert "…" in table  # a terminal-wide table cuts the long record
    for text in (json.dumps(records), "\n".join(",".join(r.values()) for r in rows)):
        assert "…" not in text
    assert {(int(r["run_id"]), int(r["row_number"])): r["record"] for r in rows} == stored
    assert {(r["run_id"], r["row_number"]): r["record"] for r in records} == stored
    assert {r["reason"] for r in records} == {"unparseable_close", "unknown_symbol"}
    runs = json.loads(ok(db, "runs", "-f", "json"))
    assert dt.datetime.fromisoformat(runs[0]["started_at"])  # timestamps as ISO 8601


def test_indices_list_json_has_dates_and_nulls(db: Path) -> None:
    records = {r["id"]: r for r in json.loads(ok(db, "indices", "list", "-f", "json"))}
    assert records["ew100"]["built_through"] == "2023-02-14"
    assert records["ew-tech50"]["built_through"] is None
    assert records["ew100"]["builtin"] == "yes"


def test_build_summary_in_each_format(db: Path) -> None:
    lines = ok(db, "build", "-i", "ew100")
    assert lines.startswith("unchanged  ew100")
    (row,) = _csv(ok(db, "build", "-i", "ew100", "-f", "csv"))
    (record,) = json.loads(ok(db, "build", "-i", "ew100", "-f", "json"))
    assert row["outcome"] == record["outcome"] == "unchanged"
    assert list(row) == list(record)


def test_ingest_report_in_each_format(tmp_path: Path) -> None:
    path = tmp_path / "i.duckdb"
    table = ok(path, "ingest", "--symbols", "20", "--days", "3")
    assert "Ingestion run 1" in table and "rejected (quarantined)" in table
    record = json.loads(ok(path, "ingest", "--symbols", "20", "--days", "3", "-f", "json"))
    assert record["run_id"] == 2 and record["status"] == "succeeded"
    assert record["rows_unchanged"] == record["rows_read"] > 0
    assert record["rejected_by_reason"] == {} and record["run_ids"] == [2]
    (row,) = _csv(ok(path, "ingest", "--symbols", "20", "--days", "3", "-f", "csv"))
    assert row["run_id"] == "3" and list(row) == list(record)


def test_quickstart_summary_in_each_format(tmp_path: Path) -> None:
    path = tmp_path / "q.duckdb"
    code, out, err = run(path, "quickstart", "--symbols", "120", "--days", "5", "-f", "json")
    records = {r["index"]: r for r in json.loads(out)}
    failed = [r for r in records.values() if r["build"] == "failed"]
    assert code == (1 if failed else 0), err  # a failed index: exit 1, its record says why
    assert all(r["reason"] for r in failed) and len(records) == 15
    assert records["ew100"]["build"] == "full" and records["ew100"]["reason"] is None
    assert "data lives in" in err and "ingested run 1" in err
    rows = _csv(run(path, "quickstart", "-f", "csv")[1])
    assert {r["index"] for r in rows} == set(records)
    assert {r["build"] for r in rows} <= {"up-to-date", "failed"}


@pytest.fixture
def schedule_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("INDEX_BUILDER_SCHEDULE_SYMBOLS", "150")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("schedule_env")
def test_daily_cycle_in_each_format(tmp_path: Path) -> None:
    path = tmp_path / "d.duckdb"
    at = ["daily", "--at", "2024-11-27T22:00"]
    record = json.loads(ok(path, *at, "-f", "json"))
    assert record["status"] == "succeeded" and record["session"] == "2024-11-27"
    assert [s["step"] for s in record["steps"]] == ["backfill", "ingest", "build", "invalidate"]
    assert {b["index"] for b in record["builds"]} >= {"ew100"}
    (row,) = _csv(ok(path, *at, "-f", "csv"))  # nothing to do: one row says so
    assert row["cycle_status"] == "up-to-date" and row["step"] == ""
    assert "up-to-date" in ok(path, *at)


@pytest.mark.usefixtures("schedule_env")
def test_scheduler_streams_json_lines_and_csv_with_one_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def two_cycles(cycle: Callable[[dt.datetime], object], *_: object) -> None:
        cycle(dt.datetime(2024, 11, 27, 22, tzinfo=dt.UTC))
        cycle(dt.datetime(2024, 11, 27, 23, tzinfo=dt.UTC))

    monkeypatch.setattr(cli_main, "run_scheduler", two_cycles)
    path = tmp_path / "s.duckdb"
    lines = ok(path, "scheduler", "-f", "json").splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["succeeded", "up-to-date"]
    text = ok(path, "scheduler", "-f", "csv")
    assert text.count("cycle_id,") == 1
    assert [r["cycle_status"] for r in _csv(text)] == ["up-to-date", "up-to-date"]


# ---------------------------------------------------------------------------- --db, -q
def test_db_and_quiet_go_before_or_after_the_command(db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    get_settings.cache_clear()
    after = runner.invoke(app, ["build", "-q", "--db", str(db), "-i", "ew100", "-f", "json"])
    before = runner.invoke(app, ["-q", "--db", str(db), "build", "-i", "ew100", "-f", "json"])
    assert after.exit_code == before.exit_code == 0, (after.output, before.output)
    assert json.loads(after.stdout)[0]["outcome"] == "unchanged"
    assert [r["index"] for r in json.loads(after.stdout)] == ["ew100"]
    nested = runner.invoke(app, ["indices", "list", "--db", str(db), "--quiet", "-f", "csv"])
    assert nested.exit_code == 0 and "ew100" in nested.stdout
    # given twice: the one after the command wins
    empty = tmp_path / "empty.duckdb"
    both = runner.invoke(app, ["--db", str(empty), "runs", "--db", str(db), "-f", "json"])
    assert both.exit_code == 0 and json.loads(both.stdout)
    assert not empty.exists()


# ---------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("INDEX_BUILDER_API_PORT", "abc", "valid integer"),
        ("INDEX_BUILDER_LOG_LEVEL", "loud", "DEBUG, INFO, WARNING, ERROR"),
        ("INDEX_BUILDER_FLAGS", "{not json", "INDEX_BUILDER_FLAGS"),
        ("INDEX_BUILDER_FLAGS", '{"no_such_flag": true}', "no_such_flag"),
        ("INDEX_BUILDER_RATE_LIMIT_READS", "lots", "not a rate limit"),
        ("INDEX_BUILDER_LOG_FORMAT", "[bold]x", "'[bold]x': input should be 'auto'"),  # no markup
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable_and_exit_2(
    db: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    try:
        code, out, err = run(db, "runs")
    finally:
        monkeypatch.delenv(variable)
        get_settings.cache_clear()
    assert code == 2 and out == ""
    assert err.startswith("error: ") and variable in err and says in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err


def test_a_bad_setting_in_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "INDEX_BUILDER_API_PORT": "abc", "INDEX_BUILDER_DATABASE": "x.duckdb"}
    done = subprocess.run(
        [sys.executable, "-m", "index_builder.cli.main", "runs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: bad setting INDEX_BUILDER_API_PORT='abc': input should be a valid integer, "
        "unable to parse string as an integer (environment or .env)"
    ]
    assert not (tmp_path / "x.duckdb").exists()
