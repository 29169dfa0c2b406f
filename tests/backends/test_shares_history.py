"""Shares outstanding as a point-in-time history, and the provenance of every bar (on
every backend; the migration of a DuckDB file: tests/storage/test_duckdb_migrations.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from index_builder.ingest.job import run_ingestion
from index_builder.storage.duckdb.store import DuckDBStore

from market_files import SECURITY_HEADER, security, write_csv

HEADER = ["date", "symbol", "close", "shares_outstanding", "market_cap", "source", "basis"]
D1, D2, D3, D4 = "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"


def _ingest(store: DuckDBStore, tmp_path: Path, name: str, rows: list[list[Any]]) -> Any:
    sec = write_csv(tmp_path / "securities.csv", SECURITY_HEADER, [security("AAA")])
    px = write_csv(tmp_path / f"{name}.csv", HEADER, rows)
    query = {"securities": str(sec), "prices": str(px), "column_map": {}}
    return run_ingestion(store, "file", query)


def _history(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return (
        store.cursor()
        .execute(
            "SELECT effective_date, shares_outstanding, source, basis FROM shares_history"
            " WHERE symbol = 'AAA' ORDER BY effective_date, known_at"
        )
        .fetchall()
    )


def _bar(store: DuckDBStore, day: str) -> tuple[Any, ...]:
    return tuple(
        store.cursor()
        .execute(
            "SELECT shares_outstanding, market_cap, source, basis FROM prices"
            " WHERE symbol = 'AAA' AND date = ?",
            [dt.date.fromisoformat(day)],
        )
        .fetchall()[0]
    )


def test_unchanged_counts_collapse_and_changes_are_recorded(
    store: DuckDBStore, tmp_path: Path
) -> None:
    _ingest(
        store,
        tmp_path,
        "a",
        [[D1, "AAA", 10, 100, None, None, None], [D2, "AAA", 11, 100, None, None, None]],
    )
    _ingest(store, tmp_path, "b", [[D3, "AAA", 6, 200, None, None, None]])  # a 2:1 split
    _ingest(store, tmp_path, "c", [[D4, "AAA", 6.5, 200, None, None, None]])  # unchanged
    assert _history(store) == [
        (dt.date(2024, 1, 2), 100.0, "file", "point_in_time"),
        (dt.date(2024, 1, 4), 200.0, "file", "point_in_time"),
    ]
    # re-ingesting the same rows adds nothing
    _ingest(store, tmp_path, "b", [[D3, "AAA", 6, 200, None, None, None]])
    assert len(_history(store)) == 2


def test_market_cap_uses_the_shares_in_force_on_the_bars_date(
    store: DuckDBStore, tmp_path: Path
) -> None:
    _ingest(
        store,
        tmp_path,
        "a",
        [[D1, "AAA", 10, 100, None, None, None], [D3, "AAA", 6, 200, None, None, None]],
    )
    # D2 arrives late, without shares or market cap: the count in force on D2 (100),
    # not the latest one (200); D4 gets 200
    report = _ingest(
        store,
        tmp_path,
        "b",
        [[D2, "AAA", 11, None, None, None, None], [D4, "AAA", 7, None, None, None, None]],
    )
    assert report.rows_accepted == 2 and report.rows_rejected == 0
    assert _bar(store, D2) == (100.0, 1100.0, "file", "point_in_time")
    assert _bar(store, D4) == (200.0, 1400.0, "file", "point_in_time")


def test_a_bar_before_any_known_count_is_quarantined(store: DuckDBStore, tmp_path: Path) -> None:
    _ingest(store, tmp_path, "a", [[D3, "AAA", 6, 200, None, None, None]])
    report = _ingest(store, tmp_path, "b", [[D2, "AAA", 11, None, None, None, None]])
    assert report.rejected_by_reason == {"prices:missing_market_cap": 1}


def test_current_counts_keep_their_basis_and_are_counted(
    store: DuckDBStore, tmp_path: Path
) -> None:
    report = _ingest(
        store,
        tmp_path,
        "a",
        [
            [D1, "AAA", 10, 300, None, "yahoo", "current"],
            [D2, "AAA", 11, 300, None, "yahoo", "CURRENT"],
        ],
    )
    assert report.rows_current_basis == 2
    assert _bar(store, D1) == (300.0, 3000.0, "yahoo", "current")
    assert _history(store) == [(dt.date(2024, 1, 2), 300.0, "yahoo", "current")]
    # a later bar without shares inherits the count with its basis, never silently
    later = _ingest(store, tmp_path, "b", [[D3, "AAA", 12, None, None, "yahoo", None]])
    assert later.rows_current_basis == 1
    assert _bar(store, D3) == (300.0, 3600.0, "yahoo", "current")
    runs = store.ingest_runs()
    assert [r["rows_current_basis"] for r in runs] == [1, 2]


def test_an_unknown_basis_is_quarantined(store: DuckDBStore, tmp_path: Path) -> None:
    report = _ingest(store, tmp_path, "a", [[D1, "AAA", 10, 300, None, None, "guess"]])
    assert report.rejected_by_reason == {"prices:invalid_basis": 1}


def test_provenance_of_a_corrected_bar_moves_to_its_version(
    store: DuckDBStore, tmp_path: Path
) -> None:
    _ingest(store, tmp_path, "a", [[D1, "AAA", 10, 100, None, "polygon", None]])
    _ingest(store, tmp_path, "b", [[D1, "AAA", 10.5, 100, None, "tiingo", None]])
    versions = store.price_versions("AAA", dt.date(2024, 1, 2))
    assert _bar(store, D1)[2] == "tiingo"
    old = store.cursor().execute("SELECT source, fetched_at FROM price_versions").fetchall()
    assert old[0][0] == "polygon" and old[0][1] is not None
    assert len(versions) == 2


def test_market_cap_given_without_shares_has_no_basis(store: DuckDBStore, tmp_path: Path) -> None:
    _ingest(store, tmp_path, "a", [[D1, "AAA", 10, None, 5000, None, None]])
    assert _bar(store, D1) == (None, 5000.0, "file", None)
    assert _history(store) == []
