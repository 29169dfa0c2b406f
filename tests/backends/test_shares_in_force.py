"""Shares in force (METHODOLOGY "Inputs"): the latest earlier valid count, times the
split ratio of every later valid row of the symbol; inferred shares are re-derived
when counts or splits arrive later for earlier dates (on every backend; the migration of
a DuckDB file: tests/storage/test_duckdb_migrations.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from index_builder.ingest.job import run_ingestion
from index_builder.storage.base import IngestReport
from index_builder.storage.duckdb.store import DuckDBStore

from backend_stores import StoreFactory
from market_files import SECURITY_HEADER, security, write_csv

HEADER = ["date", "symbol", "close", "shares_outstanding", "market_cap", "split_ratio"]
# sessions of XNYS; 2024-01-06 is a Saturday
D1, D2, D3, D4, D5, D6 = (
    "2024-01-02",
    "2024-01-03",
    "2024-01-04",
    "2024-01-05",
    "2024-01-08",
    "2024-01-09",
)
T1 = dt.datetime(2024, 2, 1, 9, 0)
T2 = dt.datetime(2024, 2, 2, 9, 0)
T3 = dt.datetime(2024, 2, 3, 9, 0)


class Clock:
    """A settable clock for the store (naive UTC): each run's known_at."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T1)


@pytest.fixture
def pit_store(make_store: StoreFactory, clock: Clock) -> DuckDBStore:
    return make_store(clock=clock, builtins=False)


def _row(
    day: str,
    close: float,
    shares: float | None = None,
    market_cap: float | None = None,
    split: float | None = None,
    symbol: str = "AAA",
) -> list[Any]:
    return [day, symbol, close, shares, market_cap, split]


def _ingest(store: DuckDBStore, tmp_path: Path, name: str, rows: list[list[Any]]) -> IngestReport:
    sec = write_csv(
        tmp_path / "securities.csv", SECURITY_HEADER, [security("AAA"), security("BBB")]
    )
    px = write_csv(tmp_path / f"{name}.csv", HEADER, rows)
    return run_ingestion(store, "file", {"securities": str(sec), "prices": str(px)})


def _bars(store: DuckDBStore, symbol: str = "AAA") -> dict[str, tuple[Any, ...]]:
    """date -> (shares_outstanding, market_cap, shares_inferred) of the current rows."""
    rows = (
        store.cursor()
        .execute(
            "SELECT date, shares_outstanding, market_cap, shares_inferred FROM prices"
            " WHERE symbol = ? ORDER BY date",
            [symbol],
        )
        .fetchall()
    )
    return {d.isoformat(): (shares, cap, inferred) for d, shares, cap, inferred in rows}


def _assert_bar(
    bars: dict[str, tuple[Any, ...]],
    day: str,
    shares: float | None,
    market_cap: float,
    inferred: bool,
) -> None:
    got_shares, got_cap, got_inferred = bars[day]
    if shares is None:
        assert got_shares is None
    else:
        assert got_shares == pytest.approx(shares, rel=1e-12)
    assert got_cap == pytest.approx(market_cap, rel=1e-12)
    assert got_inferred is inferred


def _versions(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return (
        store.cursor()
        .execute(
            "SELECT date, symbol, shares_outstanding, market_cap, shares_inferred, run_id,"
            " known_at, superseded_at, superseded_by_run_id FROM price_versions"
            " ORDER BY symbol, date, known_at"
        )
        .fetchall()
    )


# ---------------------------------------------------------------------- the rule
def test_a_split_on_a_day_without_a_count_doubles_the_count_carried_into_it(
    pit_store: DuckDBStore, tmp_path: Path
) -> None:
    report = _ingest(
        pit_store,
        tmp_path,
        "a",
        [
            _row(D1, 10, shares=100),
            _row(D2, 5, split=2),  # 2:1 split, no count: 100 x 2
            _row(D3, 5.5),  # carried: 200
            _row(D1, 20, shares=50, symbol="BBB"),  # another symbol is not affected
            _row(D2, 21, symbol="BBB"),
        ],
    )
    assert report.rows_accepted == 5 and report.rows_rejected == 0
    bars = _bars(pit_store)
    _assert_bar(bars, D1, 100, 1000, False)
    _assert_bar(bars, D2, 200, 1000, True)
    _assert_bar(bars, D3, 200, 1100, True)
    _assert_bar(_bars(pit_store, "BBB"), D2, 50, 1050, True)


def test_a_split_then_a_reverse_split(pit_store: DuckDBStore, tmp_path: Path) -> None:
    _ingest(
        pit_store,
        tmp_path,
        "a",
        [
            _row(D1, 30, shares=90),
            _row(D2, 10, split=3),  # 90 x 3 = 270
            _row(D3, 11),  # 270
            _row(D4, 22, split=0.5),  # 1:2 reverse split: 90 x 3 x 0.5
            _row(D5, 23),  # 135
        ],
    )
    bars = _bars(pit_store)
    _assert_bar(bars, D2, 270, 2700, True)
    _assert_bar(bars, D3, 270, 2970, True)
    _assert_bar(bars, D4, 135, 2970, True)
    _assert_bar(bars, D5, 135, 3105, True)


def test_splits_stored_by_earlier_runs_adjust_a_later_row(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(pit_store, tmp_path, "a", [_row(D1, 10, shares=100)])
    clock.now = T2
    _ingest(pit_store, tmp_path, "b", [_row(D2, 5, market_cap=990, split=2)])
    clock.now = T3
    report = _ingest(pit_store, tmp_path, "c", [_row(D3, 4, split=1.5)])
    assert report.rows_inserted == 1
    _assert_bar(_bars(pit_store), D3, 300, 1200, True)  # 100 x 2 x 1.5


@pytest.mark.parametrize(
    ("on_split_day", "carried"),
    [(150, 150), (100, 100)],  # the new count; a count not yet adjusted by the provider
)
def test_a_count_given_on_the_split_day_is_used_as_is(
    pit_store: DuckDBStore, tmp_path: Path, on_split_day: float, carried: float
) -> None:
    _ingest(
        pit_store,
        tmp_path,
        "a",
        [
            _row(D1, 10, shares=100),
            _row(D2, 5, shares=on_split_day, split=2),
            _row(D3, 6),
        ],
    )
    bars = _bars(pit_store)
    _assert_bar(bars, D2, on_split_day, 5 * on_split_day, False)
    _assert_bar(bars, D3, carried, 6 * carried, True)


def test_a_split_on_a_row_with_a_given_market_cap_adjusts_the_count_carried(
    pit_store: DuckDBStore, tmp_path: Path
) -> None:
    _ingest(
        pit_store,
        tmp_path,
        "a",
        [
            _row(D1, 10, shares=100),
            _row(D2, 5, market_cap=999, split=2),  # its market cap wins; no shares
            _row(D3, 5),
        ],
    )
    bars = _bars(pit_store)
    _assert_bar(bars, D2, None, 999, False)
    _assert_bar(bars, D3, 200, 1000, True)


@pytest.mark.parametrize(
    ("invalid", "reason"),
    [
        (_row(D2, 5, split=0), "invalid_split_ratio"),
        (_row(D2, 5, shares=400, split=-2), "invalid_split_ratio"),
        (_row(D2, 0, shares=400, split=2), "invalid_close"),
        (_row(D2, -1, split=2), "invalid_close"),
        (_row(D2, 5, shares=0, split=2), "invalid_shares_outstanding"),
        (_row("2024-01-06", 5, shares=400, split=2), "not_a_session"),
        (_row("2024-01-15", 5, split=2), "not_a_session"),
    ],
)
def test_an_invalid_row_gives_no_count_and_its_split_is_not_seen(
    pit_store: DuckDBStore, tmp_path: Path, invalid: list[Any], reason: str
) -> None:
    report = _ingest(
        pit_store, tmp_path, "a", [_row(D1, 10, shares=100), invalid, _row("2024-01-16", 6)]
    )
    assert report.rejected_by_reason == {f"prices:{reason}": 1}
    _assert_bar(_bars(pit_store), "2024-01-16", 100, 600, True)


def test_rows_before_any_count_without_market_cap_are_quarantined(
    pit_store: DuckDBStore, tmp_path: Path
) -> None:
    report = _ingest(
        pit_store,
        tmp_path,
        "a",
        [
            _row(D1, 10, split=2),  # the symbol's first row: no count in force
            _row(D2, 10),
            _row(D3, 10, market_cap=800),  # valid, but gives no count
            _row(D4, 10),
            _row(D5, 10, shares=100),
            _row(D6, 11),
        ],
    )
    assert report.rejected_by_reason == {"prices:missing_market_cap": 3}
    assert sorted(_bars(pit_store)) == [D3, D5, D6]
    _assert_bar(_bars(pit_store), D6, 100, 1100, True)
    rejected = pit_store.quarantined(report.run_id)
    assert sorted(r["date"] for r in rejected) == [D1, D2, D4]


def test_a_row_delivered_again_without_its_count_keeps_the_count_known_for_its_date(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(pit_store, tmp_path, "a", [_row(D1, 10, shares=100), _row(D2, 10, shares=200)])
    clock.now = T2
    # D2 again without a count: its count in force is the one recorded for D2
    # (shares_history), so nothing changes; D3 is valued with it
    report = _ingest(pit_store, tmp_path, "b", [_row(D2, 10), _row(D3, 12)])
    assert report.rejected_by_reason == {}
    assert (report.rows_inserted, report.rows_updated, report.rows_unchanged) == (1, 0, 1)
    bars = _bars(pit_store)
    _assert_bar(bars, D2, 200, 2000, False)
    _assert_bar(bars, D3, 200, 2400, True)


def test_the_split_of_a_conflicting_duplicate_is_not_seen(
    pit_store: DuckDBStore, tmp_path: Path
) -> None:
    report = _ingest(
        pit_store,
        tmp_path,
        "a",
        [
            _row(D1, 10, shares=100),
            _row(D2, 5, split=2),
            _row(D2, 5, split=3),
            _row(D3, 5),
        ],
    )
    assert report.rejected_by_reason == {"prices:conflicting_duplicate": 2}
    _assert_bar(_bars(pit_store), D3, 100, 500, True)


def test_the_split_of_a_stale_version_is_not_seen(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(pit_store, tmp_path, "a", [_row(D1, 10, shares=100), _row(D2, 10)])
    clock.now = T2
    sec = write_csv(tmp_path / "securities.csv", SECURITY_HEADER, [security("AAA")])
    px = write_csv(
        tmp_path / "b.csv",
        [*HEADER, "known_at"],
        [  # published before the stored D2 became known (T1): stale
            [*_row(D2, 5, split=2), "2024-01-31T00:00:00"],
            [*_row(D3, 5), None],
        ],
    )
    report = run_ingestion(pit_store, "file", {"securities": str(sec), "prices": str(px)})
    assert report.rejected_by_reason == {"prices:stale_version": 1}
    bars = _bars(pit_store)
    _assert_bar(bars, D2, 100, 1000, True)
    _assert_bar(bars, D3, 100, 500, True)


# ---------------------------------------------------------------------- re-derivation
FIRST = [
    _row(D1, 10, shares=100),
    _row(D2, 10),
    _row(D3, 11),
    _row(D4, 4, shares=300),  # a given count: never re-derived
    _row(D5, 4.5),
    _row(D1, 20, shares=50, symbol="BBB"),
    _row(D3, 21, symbol="BBB"),
]


def test_a_late_split_re_derives_the_later_inferred_rows_as_new_versions(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    first = _ingest(pit_store, tmp_path, "a", FIRST)
    assert first.rows_accepted == 7
    before, before_bbb = _bars(pit_store), _bars(pit_store, "BBB")
    _assert_bar(before, D3, 100, 1100, True)

    clock.now = T2
    # the split of D2 arrives late, as a correction of D2
    late = [_row(D2, 5, split=2)]
    report = _ingest(pit_store, tmp_path, "b", late)
    assert report.rows_accepted == 1
    assert (report.rows_inserted, report.rows_updated, report.rows_unchanged) == (0, 2, 0)
    bars = _bars(pit_store)
    _assert_bar(bars, D2, 200, 1000, True)
    _assert_bar(bars, D3, 200, 2200, True)  # re-derived
    assert bars[D1] == before[D1] and bars[D4] == before[D4]  # given counts: untouched
    assert bars[D5] == before[D5]  # after D4's count: unchanged, no new version
    assert _bars(pit_store, "BBB") == before_bbb
    runs = dict(
        pit_store.cursor()
        .execute("SELECT date, run_id FROM prices WHERE symbol = 'AAA'")
        .fetchall()
    )
    assert {d.isoformat(): r for d, r in runs.items()} == {
        D1: first.run_id,
        D2: report.run_id,
        D3: report.run_id,
        D4: first.run_id,
        D5: first.run_id,
    }
    d2, d3 = dt.date.fromisoformat(D2), dt.date.fromisoformat(D3)
    assert _versions(pit_store) == [
        (d2, "AAA", 100, 1000, True, first.run_id, T1, T2, report.run_id),
        (d3, "AAA", 100, 1100, True, first.run_id, T1, T2, report.run_id),
    ]
    current = pit_store.price_versions("AAA", d3)[-1]
    assert current["known_at"] == T2 and current["market_cap"] == pytest.approx(2200, rel=1e-12)
    # the run's report as stored
    stored = pit_store.ingest_runs(1)[0]
    assert stored["run_id"] == report.run_id and stored["rows_updated"] == 2

    # the same input again changes nothing
    clock.now = T3
    again = _ingest(pit_store, tmp_path, "c", late)
    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, 1)
    assert len(_versions(pit_store)) == 2
    assert _bars(pit_store) == bars


def test_a_backfilled_count_re_derives_the_later_inferred_rows(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(
        pit_store,
        tmp_path,
        "a",
        [_row(D1, 10, shares=100), _row(D3, 11), _row(D4, 12, split=3), _row(D5, 4)],
    )
    clock.now = T2
    report = _ingest(pit_store, tmp_path, "b", [_row(D2, 10, shares=120)])  # a new date
    assert (report.rows_inserted, report.rows_updated) == (1, 3)
    bars = _bars(pit_store)
    _assert_bar(bars, D2, 120, 1200, False)
    _assert_bar(bars, D3, 120, 1320, True)
    _assert_bar(bars, D4, 360, 4320, True)
    _assert_bar(bars, D5, 360, 1440, True)
    assert [v[0].isoformat() for v in _versions(pit_store)] == [D3, D4, D5]

    # a correction removing the split re-derives again; re-ingesting it changes nothing
    clock.now = T3
    fix = [_row(D4, 12)]
    report = _ingest(pit_store, tmp_path, "c", fix)
    assert report.rows_updated == 2
    _assert_bar(_bars(pit_store), D5, 120, 480, True)
    clock.now = T3 + dt.timedelta(days=1)
    assert _ingest(pit_store, tmp_path, "d", fix).rows_updated == 0
    assert len(_versions(pit_store)) == 5


def test_a_count_given_later_on_a_split_day_resets_the_splits_before_it(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(
        pit_store,
        tmp_path,
        "a",
        [
            _row(D1, 10, shares=100),
            _row(D2, 5, market_cap=1000, split=2),
            _row(D3, 5),  # 100 x 2
            _row(D4, 5, split=1.5),  # 100 x 2 x 1.5
        ],
    )
    _assert_bar(_bars(pit_store), D4, 300, 1500, True)
    clock.now = T2
    # D2 again, now with the provider's count (not yet adjusted): used as is, and the
    # split of D2 is no longer applied to the rows after it
    report = _ingest(pit_store, tmp_path, "b", [_row(D2, 5, shares=100, split=2)])
    assert report.rows_updated == 3
    bars = _bars(pit_store)
    _assert_bar(bars, D3, 100, 500, True)
    _assert_bar(bars, D4, 150, 750, True)
    clock.now = T3
    # and a later row is valued the same way from the stored rows
    _ingest(pit_store, tmp_path, "c", [_row(D5, 6)])
    _assert_bar(_bars(pit_store), D5, 150, 900, True)


def test_reingesting_an_input_with_splits_and_inferred_rows_changes_nothing(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    rows = [
        _row(D1, 30, shares=90),
        _row(D2, 10, split=3),
        _row(D3, 11),
        _row(D4, 22, split=0.5),
        _row(D5, 23),
        _row(D6, 24, split=1.1),
    ]
    _ingest(pit_store, tmp_path, "a", rows)
    bars = _bars(pit_store)
    clock.now = T2
    report = _ingest(pit_store, tmp_path, "a", rows)
    assert (report.rows_inserted, report.rows_updated, report.rows_unchanged) == (0, 0, 6)
    assert _versions(pit_store) == []
    assert _bars(pit_store) == bars
    _assert_bar(bars, D6, 135 * 1.1, 24 * 135 * 1.1, True)
