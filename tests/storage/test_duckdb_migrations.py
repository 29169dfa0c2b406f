"""DuckDB only: migrations of a database file made by an older release keep its data
(each test takes a filled database back to before one migration, then reopens it).
What every backend does with the data: tests/backends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from index_builder.ingest.job import run_ingestion
from index_builder.storage.base import IngestReport
from index_builder.storage.duckdb.store import DuckDBStore, ordered_migrations

from market_files import PRICE_HEADER, SECURITY_HEADER, bar, security, write_csv

D1, D2, D3, D4 = dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4), dt.date(2024, 1, 5)
T1 = dt.datetime(2024, 1, 5, 9, 0)
T2 = dt.datetime(2024, 2, 1, 12, 0)

PROVENANCE_HEADER = ["date", "symbol", "close", "shares_outstanding", "market_cap", "source"]
SPLIT_HEADER = ["date", "symbol", "close", "shares_outstanding", "market_cap", "split_ratio"]


class Clock:
    """A settable clock for the store (naive UTC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _ingest(
    store: DuckDBStore,
    tmp_path: Path,
    name: str,
    header: Sequence[str],
    rows: list[list[Any]],
) -> IngestReport:
    sec = write_csv(
        tmp_path / "securities.csv", SECURITY_HEADER, [security("AAA"), security("BBB")]
    )
    px = write_csv(tmp_path / f"{name}.csv", header, rows)
    return run_ingestion(store, "file", {"securities": str(sec), "prices": str(px)})


def _rows(store: DuckDBStore, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return store.cursor().execute(sql, list(params)).fetchall()


def _history(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return _rows(
        store,
        "SELECT effective_date, shares_outstanding, source, basis FROM shares_history"
        " WHERE symbol = 'AAA' ORDER BY effective_date, known_at",
    )


def _bar(store: DuckDBStore, day: dt.date) -> tuple[Any, ...]:
    """(shares_outstanding, market_cap, source, basis, shares_inferred) of AAA on ``day``."""
    (row,) = _rows(
        store,
        "SELECT shares_outstanding, market_cap, source, basis, shares_inferred FROM prices"
        " WHERE symbol = 'AAA' AND date = ?",
        day,
    )
    return tuple(row)


def test_migration_versions_may_have_gaps_but_not_repeats() -> None:
    names = ["v1_core", "v3_more", "v5_point_in_time", "trading_days"]
    assert ordered_migrations(names) == [(1, "v1_core"), (3, "v3_more"), (5, "v5_point_in_time")]
    with pytest.raises(RuntimeError, match="unique"):
        ordered_migrations(["v1_core", "v4_a", "v4_b"])


def test_migration_v5_backfills_known_at_from_the_run_that_wrote_each_row(
    db_path: Path, tmp_path: Path
) -> None:
    original = [
        bar(day, symbol, close)
        for day, close in ((D1, 10), (D2, 11), (D3, 12))
        for symbol in ("AAA", "BBB")
    ]
    with DuckDBStore(db_path, clock=Clock(T1)) as store:
        _ingest(store, tmp_path, "prices", PRICE_HEADER, original)
        cur = store.cursor()  # back to a database from before v5, with started_at T1 - 1h
        cur.execute("UPDATE ingest_runs SET started_at = ?", [T1 - dt.timedelta(hours=1)])
        cur.execute("INSERT INTO prices SELECT * REPLACE (99 AS run_id) FROM prices LIMIT 1")
        cur.execute("DROP MACRO TABLE prices_as_of")
        cur.execute("DROP MACRO TABLE securities_as_of")
        for table in ("price_versions", "security_versions"):
            cur.execute(f"DROP TABLE {table}")
        for table in ("prices", "securities", "ingest_runs"):
            cur.execute(f"ALTER TABLE {table} DROP COLUMN known_at")
        cur.execute("ALTER TABLE index_builds DROP COLUMN as_of")
        cur.execute("DELETE FROM schema_migrations WHERE version = 5")
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with DuckDBStore(db_path) as store:
        assert 5 in store.applied_migrations()
        known = _rows(store, "SELECT run_id, known_at FROM prices ORDER BY run_id")
        assert known[:-1] == [(1, T1 - dt.timedelta(hours=1))] * 6
        assert known[-1][0] == 99 and known[-1][1] >= before  # no run: known from now on
        assert _rows(store, "SELECT DISTINCT known_at FROM securities") == [
            (T1 - dt.timedelta(hours=1),)
        ]
        assert _rows(store, "SELECT known_at FROM ingest_runs") == [(T1 - dt.timedelta(hours=1),)]


def test_migration_v6_keeps_a_filled_v5_database_and_backfills_provenance(
    db_path: Path, tmp_path: Path
) -> None:
    with DuckDBStore(db_path) as store:
        _ingest(
            store,
            tmp_path,
            "a",
            PROVENANCE_HEADER,
            [
                [D1, "AAA", 10, 100, None, None],
                [D2, "AAA", 11, 100, None, None],
                [D3, "AAA", 6, 200, None, None],
            ],
        )
        _ingest(store, tmp_path, "b", PROVENANCE_HEADER, [[D2, "AAA", 11.5, 100, None, None]])
        cur = store.cursor()
        bars_before = cur.execute(
            "SELECT date, close, shares_outstanding, market_cap FROM prices ORDER BY date"
        ).fetchall()
        started = dict(cur.execute("SELECT run_id, started_at FROM ingest_runs").fetchall())
        # back to a database from before v6 (v7 stays: it does not depend on v6)
        cur.execute("DROP TABLE shares_history")
        for table in ("prices", "price_versions"):
            for column in ("source", "fetched_at", "basis"):
                cur.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        cur.execute("ALTER TABLE ingest_runs DROP COLUMN rows_current_basis")
        cur.execute("DELETE FROM schema_migrations WHERE version = 6")

    with DuckDBStore(db_path) as store:
        assert 6 in store.applied_migrations()
        cur = store.cursor()
        bars = cur.execute(
            "SELECT date, close, shares_outstanding, market_cap FROM prices ORDER BY date"
        ).fetchall()
        assert bars == bars_before  # nothing lost or changed
        provenance = cur.execute(
            "SELECT run_id, source, fetched_at, basis FROM prices ORDER BY date"
        ).fetchall()
        assert all(src == "file" and basis == "point_in_time" for _, src, _, basis in provenance)
        assert all(fetched == started[run] for run, _, fetched, _ in provenance)
        (version,) = cur.execute("SELECT source, basis, close FROM price_versions").fetchall()
        assert version == ("file", "point_in_time", 11.0)
        assert _history(store) == [
            (D1, 100.0, "file", "point_in_time"),
            (D3, 200.0, "file", "point_in_time"),
        ]
        # and the store keeps working: a new bar is valued with the migrated history
        _ingest(store, tmp_path, "c", PROVENANCE_HEADER, [[D4, "AAA", 7, None, None, None]])
        assert _bar(store, D4)[:4] == (200.0, 1400.0, "file", "point_in_time")


def test_migration_v9_marks_stored_rows_as_given(db_path: Path, tmp_path: Path) -> None:
    with DuckDBStore(db_path, clock=Clock(T1)) as store:
        _ingest(
            store,
            tmp_path,
            "a",
            SPLIT_HEADER,
            [[D1, "AAA", 10, 100, None, None], [D2, "AAA", 11, None, None, None]],
        )
        cur = store.cursor()
        for table in ("prices", "price_versions"):
            cur.execute(f"ALTER TABLE {table} DROP COLUMN shares_inferred")
        cur.execute("DELETE FROM schema_migrations WHERE version = 9")
    with DuckDBStore(db_path, clock=Clock(T2)) as store:
        assert 9 in store.applied_migrations()
        assert [_bar(store, day)[4] for day in (D1, D2)] == [False, False]
        # D2's count now counts as given: a corrected count of D1 does not re-derive it
        report = _ingest(
            store,
            tmp_path,
            "b",
            SPLIT_HEADER,
            [[D1, "AAA", 10, 120, None, None], [D3, "AAA", 6, None, None, None]],
        )
        assert report.rows_updated == 1  # D1 itself
        shares, cap, _, _, inferred = _bar(store, D2)
        assert (shares, inferred) == (100, False) and cap == pytest.approx(1100, rel=1e-12)
        # in force on D3: the latest count of shares_history, where D2's was never recorded
        shares, cap, _, _, inferred = _bar(store, D3)
        assert (shares, inferred) == (120, True) and cap == pytest.approx(720, rel=1e-12)
