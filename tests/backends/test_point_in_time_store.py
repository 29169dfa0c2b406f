"""Point in time in the store: known_at, versions of corrected values, reads as of K
(on every backend; the migrations of a DuckDB file: tests/storage/test_duckdb_migrations.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.engine.panel import MarketPanel
from index_builder.engine.variants import VARIANTS
from index_builder.errors import ConflictError
from index_builder.ingest.job import run_ingestion
from index_builder.services.catalog import add_definition
from index_builder.storage.base import AnnouncedConstituent, BuildState, LevelRows
from index_builder.storage.duckdb.store import DuckDBStore

from backend_stores import StoreFactory
from market_files import PRICE_HEADER, SECURITY_HEADER, bar, security, write_csv

D1, D2, D3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)
T1 = dt.datetime(2024, 1, 5, 9, 0)
T2 = dt.datetime(2024, 2, 1, 12, 0)
T3 = dt.datetime(2024, 3, 1, 12, 0)


class Clock:
    """A settable clock for the store (naive UTC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T1)


@pytest.fixture
def pit_store(make_store: StoreFactory, clock: Clock) -> DuckDBStore:
    return make_store(clock=clock)


ORIGINAL = [
    bar(D1, "AAA", 10),
    bar(D1, "BBB", 20),
    bar(D2, "AAA", 11),
    bar(D2, "BBB", 21),
    bar(D3, "AAA", 12),
    bar(D3, "BBB", 22),
]


def _ingest(
    store: DuckDBStore,
    tmp_path: Path,
    rows: list[list[object]],
    *,
    name: str = "prices",
    header: list[str] = PRICE_HEADER,
    securities: list[list[object]] | None = None,
    securities_header: list[str] = SECURITY_HEADER,
) -> Any:
    sec = write_csv(
        tmp_path / f"{name}-securities.csv",
        securities_header,
        securities or [security("AAA"), security("BBB")],
    )
    px = write_csv(tmp_path / f"{name}.csv", header, rows)
    return run_ingestion(store, "file", {"securities": str(sec), "prices": str(px)})


def _rows(store: DuckDBStore, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return store.cursor().execute(sql, list(params)).fetchall()


def _assert_same_panel(a: MarketPanel, b: MarketPanel) -> None:
    assert np.array_equal(a.days, b.days)
    assert list(a.securities.symbols) == list(b.securities.symbols)
    assert list(a.securities.sectors) == list(b.securities.sectors)
    for name in ("price", "market_cap", "close"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None)
        if left is not None:
            assert np.array_equal(left, right, equal_nan=True), name


# ---------------------------------------------------------------------- versions
def test_every_row_records_when_it_became_known(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    report = _ingest(pit_store, tmp_path, ORIGINAL)
    assert report.known_at == T1
    assert _rows(pit_store, "SELECT DISTINCT known_at FROM prices") == [(T1,)]
    assert _rows(pit_store, "SELECT DISTINCT known_at FROM securities") == [(T1,)]
    (run,) = pit_store.ingest_runs()
    assert run["known_at"] == run["started_at"] == T1


def test_a_correction_moves_the_replaced_version_to_the_history(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    first = _ingest(pit_store, tmp_path, ORIGINAL)
    clock.now = T2
    second = _ingest(pit_store, tmp_path, [bar(D2, "AAA", 11.5), bar(D3, "BBB", 22)], name="fix")
    assert (second.rows_inserted, second.rows_updated, second.rows_unchanged) == (0, 1, 1)
    assert _rows(
        pit_store,
        "SELECT close, known_at, run_id FROM prices WHERE symbol = 'AAA' AND date = ?",
        D2,
    ) == [(11.5, T2, second.run_id)]
    assert _rows(
        pit_store,
        "SELECT date, symbol, close, known_at, superseded_at, run_id, superseded_by_run_id"
        " FROM price_versions",
    ) == [(D2, "AAA", 11.0, T1, T2, first.run_id, second.run_id)]
    # the unchanged row keeps the version (and run) that first made it known
    assert _rows(
        pit_store, "SELECT known_at, run_id FROM prices WHERE symbol = 'BBB' AND date = ?", D3
    ) == [(T1, first.run_id)]
    versions = pit_store.price_versions("AAA", D2)
    assert [(v["close"], v["known_at"], v["superseded_at"]) for v in versions] == [
        (11.0, T1, T2),
        (11.5, T2, None),
    ]


def test_reingesting_the_same_input_adds_no_version(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(pit_store, tmp_path, ORIGINAL)
    before = _rows(pit_store, "SELECT * FROM prices ORDER BY date, symbol")
    clock.now = T2
    again = _ingest(pit_store, tmp_path, ORIGINAL)
    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, 6)
    assert _rows(pit_store, "SELECT * FROM prices ORDER BY date, symbol") == before
    assert _rows(pit_store, "SELECT count(*) FROM price_versions") == [(0,)]
    assert _rows(pit_store, "SELECT count(*) FROM security_versions") == [(0,)]


def test_successive_corrections_chain_their_validity(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(pit_store, tmp_path, ORIGINAL)
    for now, close in ((T2, 11.5), (T3, 11.7)):
        clock.now = now
        _ingest(pit_store, tmp_path, [bar(D2, "AAA", close)], name=f"fix-{close}")
    versions = pit_store.price_versions("AAA", D2)
    assert [(v["close"], v["known_at"], v["superseded_at"]) for v in versions] == [
        (11.0, T1, T2),
        (11.5, T2, T3),
        (11.7, T3, None),
    ]
    for moment, close in (
        (T1, 11.0),  # known_at <= K: known exactly at its known_at
        (T2 - dt.timedelta(microseconds=1), 11.0),
        (T2, 11.5),
        (T3 - dt.timedelta(microseconds=1), 11.5),
        (T3, 11.7),
        (None, 11.7),
    ):
        panel = pit_store.load_panel(D1, D3, as_of=moment)
        column = int(pit_store.security_master(moment).column_of(["AAA"])[0])
        assert panel.close is not None
        assert panel.close[1, column] == close, moment


@pytest.mark.parametrize("offset", [dt.timedelta(0), -dt.timedelta(hours=1)])
def test_a_version_not_newer_than_the_stored_one_is_quarantined_as_stale(
    pit_store: DuckDBStore, tmp_path: Path, offset: dt.timedelta
) -> None:
    _ingest(pit_store, tmp_path, ORIGINAL)
    stamp = (T1 + offset).isoformat() + "Z"
    header = [*PRICE_HEADER, "known_at"]
    report = _ingest(
        pit_store,
        tmp_path,
        [
            [*bar(D2, "AAA", 99), stamp],  # different value, not known later: refused
            [*bar(D3, "AAA", 12), stamp],  # same value: unchanged, keeps its known_at
        ],
        name="old",
        header=header,
    )
    assert report.rejected_by_reason == {"prices:stale_version": 1}
    assert (report.rows_accepted, report.rows_updated, report.rows_unchanged) == (1, 0, 1)
    assert _rows(
        pit_store, "SELECT close, known_at FROM prices WHERE symbol = 'AAA' ORDER BY date"
    ) == [
        (10.0, T1),
        (11.0, T1),
        (12.0, T1),
    ]
    assert _rows(pit_store, "SELECT count(*) FROM price_versions") == [(0,)]
    (stale,) = pit_store.quarantined(report.run_id)
    assert stale["reason"] == "stale_version" and stale["row_number"] == 1
    assert '"stored_known_at"' in stale["record"]


# ---------------------------------------------------------------------- known_at from files
def test_files_may_give_publication_times(pit_store: DuckDBStore, tmp_path: Path) -> None:
    header = [*PRICE_HEADER, "Known_At"]  # case-insensitive, like every column
    report = _ingest(
        pit_store,
        tmp_path,
        [
            [*bar(D1, "AAA", 10), "2024-01-02T22:00:00Z"],
            [*bar(D1, "BBB", 20), "2024-01-02T17:00:00-05:00"],  # the same moment
            [*bar(D2, "AAA", 11), "2024-01-03 22:30"],  # naive: UTC
            [*bar(D2, "BBB", 21), "2024-01-03"],  # a date: midnight UTC
            [*bar(D3, "AAA", 12), ""],  # empty: the run's start
            [*bar(D3, "BBB", 22), "yesterday"],
            [*bar(D3, "BBB", 22), "2024-01-05T09:00:00.000001Z"],  # after the run started
        ],
        header=header,
        securities_header=[*SECURITY_HEADER, "known_at"],
        securities=[
            [*security("AAA"), "2024-01-01T00:00:00+01:00"],
            [*security("BBB"), ""],
            [*security("CCC"), "2024-02-30"],
        ],
    )
    assert report.rejected_by_reason == {
        "prices:unparseable_known_at": 1,
        "prices:future_known_at": 1,
        "securities:unparseable_known_at": 1,
    }
    assert _rows(pit_store, "SELECT date, symbol, known_at FROM prices ORDER BY ALL") == [
        (D1, "AAA", dt.datetime(2024, 1, 2, 22)),
        (D1, "BBB", dt.datetime(2024, 1, 2, 22)),
        (D2, "AAA", dt.datetime(2024, 1, 3, 22, 30)),
        (D2, "BBB", dt.datetime(2024, 1, 3)),
        (D3, "AAA", T1),
    ]
    assert _rows(pit_store, "SELECT symbol, known_at FROM securities ORDER BY 1") == [
        ("AAA", dt.datetime(2023, 12, 31, 23)),
        ("BBB", T1),
    ]
    bad = {q["reason"]: q for q in pit_store.quarantined(report.run_id)}
    assert '"known_at":"yesterday"' in bad["unparseable_known_at"]["record"]


def test_parquet_timestamps_keep_their_time_in_utc(pit_store: DuckDBStore, tmp_path: Path) -> None:
    paris = pa.array(
        [dt.datetime(2024, 1, 2, 22, tzinfo=dt.UTC), dt.datetime(2024, 1, 3, 8, tzinfo=dt.UTC)],
        pa.timestamp("us", tz="Europe/Paris"),
    )
    prices = pa.table(
        {
            "date": pa.array([D1, D2], pa.date32()),
            "symbol": ["AAA", "AAA"],
            "close": [10.0, 11.0],
            "shares_outstanding": [1e6, 1e6],
            "known_at": paris,
        }
    )
    pq.write_table(prices, tmp_path / "p.parquet")
    sec = write_csv(tmp_path / "s.csv", SECURITY_HEADER, [security("AAA")])
    run_ingestion(
        pit_store, "file", {"securities": str(sec), "prices": str(tmp_path / "p.parquet")}
    )
    assert _rows(pit_store, "SELECT known_at FROM prices ORDER BY date") == [
        (dt.datetime(2024, 1, 2, 22),),
        (dt.datetime(2024, 1, 3, 8),),
    ]


# ---------------------------------------------------------------------- reads as of K
def test_the_panel_as_of_a_moment_is_exactly_the_data_known_then(
    pit_store: DuckDBStore, clock: Clock, tmp_path: Path
) -> None:
    _ingest(pit_store, tmp_path, ORIGINAL)
    original = pit_store.load_panel(D1, D3)
    clock.now = T2
    _ingest(
        pit_store,
        tmp_path,
        [bar(D2, "AAA", 30), bar(D2, "CCC", 5), bar(dt.date(2024, 1, 5), "BBB", 23)],
        name="later",
        securities=[security("AAA"), security("BBB", sector="Energy"), security("CCC")],
    )
    assert pit_store.trading_days()[-1] == dt.date(2024, 1, 5)
    corrected = pit_store.load_panel(D1, dt.date(2024, 1, 5))
    assert list(corrected.securities.symbols) == ["AAA", "BBB", "CCC"]
    for moment in (T1, T1 + dt.timedelta(days=3), T2 - dt.timedelta(microseconds=1)):
        assert pit_store.trading_days(moment) == [D1, D2, D3]
        _assert_same_panel(pit_store.load_panel(D1, dt.date(2024, 1, 5), moment), original)
        master = pit_store.security_master(moment)
        assert list(master.sectors) == ["Information Technology"] * 2  # BBB's old sector
    _assert_same_panel(pit_store.load_panel(D1, dt.date(2024, 1, 5), T2), corrected)
    assert pit_store.trading_days(T1 - dt.timedelta(microseconds=1)) == []
    assert len(pit_store.security_master(T1 - dt.timedelta(microseconds=1))) == 0
    assert _rows(
        pit_store, "SELECT symbol, sector, known_at, superseded_at FROM security_versions"
    ) == [("BBB", "Information Technology", T1, T2)]


def test_bars_of_a_security_not_known_yet_do_not_count(
    pit_store: DuckDBStore, tmp_path: Path
) -> None:
    header = [*PRICE_HEADER, "known_at"]
    _ingest(
        pit_store,
        tmp_path,
        [[*bar(D1, "AAA", 10), "2024-01-02T22:00:00Z"], [*bar(D2, "AAA", 11), "2024-01-03T22:00Z"]],
        header=header,
        securities_header=[*SECURITY_HEADER, "known_at"],
        securities=[[*security("AAA"), "2024-01-03T12:00:00Z"]],
    )
    assert pit_store.trading_days(dt.datetime(2024, 1, 3)) == []  # its bar, not its security
    assert pit_store.trading_days(dt.datetime(2024, 1, 3, 12)) == [D1]
    assert pit_store.trading_days(dt.datetime(2024, 1, 4)) == [D1, D2]


# ---------------------------------------------------------------------- as-of results
def _save(store: DuckDBStore, key: str, as_of: dt.datetime | None) -> None:
    found = store.get_definition(key.split("@")[0])
    assert found is not None
    state = BuildState(
        key, store.next_build_version(), found[0].fingerprint(), D1, D1, 1, T1, 1.0, [], as_of
    )
    levels = LevelRows(
        [D1],
        [1000.0],
        [0.0],
        [True],
        [0.0],
        [1],
        {v: [1000.0] for v in ("price", "total", "net_total")},
        [D1],
    )
    announced = AnnouncedConstituent(D2, None, 1, "AAA", "A", "Energy", 1, 1.0, 1e9)
    store.save_results(state, levels, [], [announced], write_from=None)


def test_as_of_results_go_with_their_definition(pit_store: DuckDBStore) -> None:
    mine = parse_definition({"id": "mine", "name": "Mine", "top_n": 5})
    other = parse_definition({"id": "mine-2", "name": "Other", "top_n": 5})
    add_definition(pit_store, mine)
    add_definition(pit_store, other)
    _save(pit_store, "mine", None)
    _save(pit_store, "mine@2024-01-05T09:00:00Z", T1)
    _save(pit_store, "mine-2@2024-01-05T09:00:00Z", T1)
    (state,) = pit_store.as_of_builds("mine")
    assert (state.index_id, state.as_of) == ("mine@2024-01-05T09:00:00Z", T1)
    renamed = parse_definition({"id": "mine", "name": "Renamed", "top_n": 5})
    add_definition(pit_store, renamed, replace=True)  # same rules: kept
    assert len(pit_store.as_of_builds("mine")) == 1
    add_definition(
        pit_store, parse_definition({"id": "mine", "name": "x", "top_n": 6}), replace=True
    )
    # new rules: every result of the old ones goes, current and as of, in one transaction
    assert pit_store.as_of_builds("mine") == []
    assert pit_store.build_state("mine") is None
    _save(pit_store, "mine@2024-01-05T09:00:00Z", T1)
    pit_store.delete_definition("mine")
    assert pit_store.build_state("mine") is None and pit_store.as_of_builds("mine") == []
    assert len(pit_store.as_of_builds("mine-2")) == 1  # another index's keys are untouched
    left = pit_store.cursor().execute("SELECT DISTINCT index_id FROM index_announcements")
    assert left.fetchall() == [("mine-2@2024-01-05T09:00:00Z",)]


def test_results_of_replaced_or_removed_rules_are_discarded_at_commit(
    pit_store: DuckDBStore,
) -> None:
    add_definition(pit_store, parse_definition({"id": "mine", "name": "Mine", "top_n": 5}))
    old = pit_store.get_definition("mine")
    assert old is not None
    # the rules change while a build of the old ones runs: its results never land
    add_definition(
        pit_store, parse_definition({"id": "mine", "name": "x", "top_n": 6}), replace=True
    )
    stale = BuildState(
        "mine", pit_store.next_build_version(), old[0].fingerprint(), D1, D1, 1, T1, 1.0, []
    )
    levels = LevelRows(
        [D1], [1000.0], [0.0], [True], [0.0], [1], {v: [1000.0] for v in VARIANTS}, [D1]
    )
    with pytest.raises(ConflictError, match="rules were replaced while it was being built"):
        pit_store.save_results(stale, levels, [], [], write_from=None)
    assert pit_store.build_state("mine") is None
    assert _rows(pit_store, "SELECT count(*) FROM index_levels") == [(0,)]
    # removed while building: discarded too
    _save(pit_store, "mine", None)
    current = pit_store.build_state("mine")
    assert current is not None
    pit_store.delete_definition("mine")
    with pytest.raises(ConflictError, match="was removed while it was being built"):
        pit_store.save_results(current, levels, [], [], write_from=None)
    assert _rows(pit_store, "SELECT count(*) FROM index_levels") == [(0,)]
