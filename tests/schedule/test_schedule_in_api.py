"""The daily schedule inside the API process, and 'index-builder daily' standalone."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from index_builder.api.app import create_app
from index_builder.cli.main import app as cli
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import ensure_builtins
from index_builder.settings import get_settings
from index_builder.storage.duckdb.store import DuckDBStore

from api_helpers import make_settings

START = dt.date(2024, 10, 1)
WEDNESDAY_EVENING = dt.datetime(2024, 11, 27, 22, 0, tzinfo=dt.UTC)


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "db.duckdb"
    with DuckDBStore(path) as store:
        ensure_builtins(store)
        run_ingestion(
            store, "synthetic", {"symbols": 300, "start": START, "end": dt.date(2024, 11, 26)}
        )
        IndexBuilder(store, store.calendar).build(["ew100"])
    return path


def test_the_scheduler_in_the_api_builds_and_refreshes_the_served_results(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        _database(tmp_path),
        None,
        scheduler_enabled=True,
        schedule_symbols=300,
        local_cache_entries=16,
    )
    app = create_app(settings, scheduler_clock=lambda: WEDNESDAY_EVENING)
    with TestClient(app) as client:
        schedule = app.state.schedule
        deadline = time.monotonic() + 60
        while not schedule.results and time.monotonic() < deadline:
            time.sleep(0.05)
        (result,) = schedule.results
        assert result.status == "succeeded" and result.session == dt.date(2024, 11, 27)
        body = client.get("/index-performance", params={"index": "ew100"}).json()
        assert body["end_date"] == "2024-11-27"
        runs = app.state.services.store.schedule_runs()
        assert [r["step"] for r in runs] == ["backfill", "ingest", "build", "invalidate"]
        assert {r["status"] for r in runs} == {"succeeded", "skipped"}
        # the cycle's outcomes are the API's too (readiness and the metrics)
        outcomes = app.state.services.build_outcomes.snapshot()
        assert {o.status for o in outcomes.values()} == {"ok"} and "ew100" in outcomes
    assert not schedule._thread.is_alive()  # the lifespan stopped it


def test_daily_runs_one_cycle_and_exits_1_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = _database(tmp_path)
    monkeypatch.setenv("INDEX_BUILDER_SCHEDULE_SYMBOLS", "300")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        ok = runner.invoke(cli, ["--db", str(database), "daily", "--at", "2024-11-27T22:00"])
        assert ok.exit_code == 0, ok.output
        assert "succeeded" in ok.output
        again = runner.invoke(cli, ["--db", str(database), "daily", "--at", "2024-11-27T22:00"])
        assert again.exit_code == 0 and "up-to-date" in again.output
        monkeypatch.setenv("INDEX_BUILDER_SCHEDULE_PROVIDER", "no-such-provider")
        monkeypatch.setenv("INDEX_BUILDER_SCHEDULE_RETRIES", "0")
        get_settings.cache_clear()
        bad = runner.invoke(cli, ["--db", str(database), "daily", "--at", "2024-11-29T19:00"])
        assert bad.exit_code == 1, bad.output
        assert "failed" in bad.output
    finally:
        get_settings.cache_clear()
