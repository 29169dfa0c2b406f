"""Rollback of the market data to a version: row level, recorded, reversible, the
point-in-time history kept; the indices restate to exactly the earlier numbers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.errors import ConflictError, NotFoundError
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.services.queries import IndexReader
from index_builder.services.rollback import rollback
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.iceberg.location import LakeLocation
from index_builder.storage.iceberg.store import IcebergStore

from rollback_market import BOGUS, USER_INDEX, Clock, Market, ingest, make_market, published

T_GOOD = dt.datetime(2024, 6, 3, 21, 0)  # the good data arrive
T_BAD = dt.datetime(2024, 6, 10, 21, 0)  # the bad correction
BETWEEN = dt.datetime(2024, 6, 12, 12, 0)  # after the bad correction, before the rollback
T_ROLLBACK = dt.datetime(2024, 6, 14, 9, 0)
T_REDO = dt.datetime(2024, 6, 17, 9, 0)
INDICES = ["ew100", "mine"]


@pytest.fixture
def clock() -> Clock:
    return Clock(T_GOOD)


@pytest.fixture(params=["duckdb", "iceberg"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> Iterator[Callable[[str], DuckDBStore]]:
    """Opens stores of the backend under test (by name) with the built-in definitions
    and the user index; the one place stores are made."""
    opened: list[DuckDBStore] = []

    def make(name: str) -> DuckDBStore:
        store: DuckDBStore
        if request.param == "iceberg":
            location = LakeLocation.resolve(str(tmp_path / f"{name}-lake"), None)
            store = IcebergStore(location, threads=2, clock=clock).open()
        else:
            store = DuckDBStore(tmp_path / f"{name}.duckdb", threads=2, clock=clock).open()
        opened.append(store)
        ensure_builtins(store)
        add_definition(store, parse_definition(USER_INDEX))
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[str], DuckDBStore]) -> DuckDBStore:
    return open_store("x")


@pytest.fixture(scope="module")
def market() -> Market:
    return make_market()


def _build(store: DuckDBStore, **point: Any) -> None:
    results = IndexBuilder(store, store.calendar).build(INDICES, **point)
    assert not [r.reason for r in results if r.failed]


def _publications(store: DuckDBStore, **point: Any) -> dict[str, Any]:
    reader = IndexReader(store, store.calendar)
    return {index: published(reader, index, **point) for index in INDICES}


def _rows(store: DuckDBStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return store.cursor().execute(sql, list(params)).fetchall()


def _table(store: DuckDBStore, name: str) -> list[tuple[Any, ...]]:
    return _rows(store, f"SELECT * FROM {name} ORDER BY ALL")


def _current(store: DuckDBStore) -> list[tuple[Any, ...]]:
    """The current prices and securities, without who wrote them and when."""
    prices = _rows(
        store,
        "SELECT * EXCLUDE (run_id, known_at) FROM prices ORDER BY date, symbol",
    )
    securities = _rows(store, "SELECT * EXCLUDE (run_id, known_at) FROM securities ORDER BY ALL")
    return prices + securities


def test_rollback_restores_every_publication_exactly_and_keeps_the_bad_history(
    store: DuckDBStore, clock: Clock, market: Market
) -> None:
    """The issue's scenario: good data, a build, a bad correction, a build, a rollback
    to the version after the first build, then a rollback of the rollback."""
    ingest(store, market.securities, market.prices)
    _build(store)
    after_first_build = store.versions(limit=1)[0].version_id
    good = _publications(store)
    good_data = _current(store)
    good_shares = _table(store, "shares_history")

    clock.now = T_BAD
    bad_run = ingest(store, market.bad_securities, market.bad_prices)
    assert bad_run.rows_updated == 15 and bad_run.status == "succeeded"
    _build(store)
    before_rollback = store.versions(limit=1)[0].version_id
    bad = _publications(store)
    bad_data = _current(store)
    bad_shares = _table(store, "shares_history")
    for index in INDICES:
        assert bad[index]["levels"] != good[index]["levels"]
    assert bad["ew100"]["levels"][-1]["date"] == market.new_day
    versions_kept = store.table_counts()["price_versions"]

    clock.now = T_ROLLBACK
    outcome = rollback(store, store.calendar, after_first_build)
    report = outcome.report
    assert report is not None and not outcome.failed
    assert report.target_version == after_first_build and report.target_run == 1
    assert (report.run_id, report.version_id) == (3, store.versions(kind="rollback")[0].version_id)
    assert report.runs_undone == [bad_run.run_id] and report.runs_redone == []
    assert report.prices_restored == 15
    assert report.prices_withdrawn == bad_run.rows_accepted
    assert (report.securities_restored, report.securities_withdrawn) == (0, 1)
    assert report.shares_withdrawn > 0 and report.shares_restored == 0
    assert sorted(b.index_id for b in outcome.builds) == INDICES
    assert {b.mode for b in outcome.builds} == {"restated"}

    # the data and every publication are exactly those of before the bad correction
    assert _current(store) == good_data
    assert _table(store, "shares_history") == good_shares
    assert _publications(store) == good
    assert store.trading_days()[-1] == market.last_day  # the bogus day is gone
    # ...the earlier days as published: the first changed day is the first corrected one
    for result in outcome.builds:
        assert result.restated_from is not None
        assert result.restated_from >= market.corrected_days[0]

    # nothing is deleted: the bad values are history, superseded by the rollback
    assert store.table_counts()["price_versions"] == versions_kept + bad_run.rows_accepted
    symbol, day = market.corrected_symbols[0], market.corrected_days[1]
    history = store.price_versions(symbol, day)
    assert [v["run_id"] for v in history] == [1, bad_run.run_id, report.run_id]
    assert [v["superseded_by_run_id"] for v in history] == [bad_run.run_id, report.run_id, None]
    assert history[1]["close"] == pytest.approx(history[0]["close"] * 1.25)
    assert history[2]["close"] == history[0]["close"] and history[2]["known_at"] == T_ROLLBACK
    assert history[1]["superseded_at"] == T_ROLLBACK
    assert not _rows(store, "SELECT 1 FROM securities WHERE symbol = ?", BOGUS)
    assert _rows(store, "SELECT rolled_back_by FROM ingest_runs WHERE run_id = 2") == [(3,)]

    # point in time: a moment between the bad correction and the rollback sees the bad data
    (bars,) = _rows(
        store,
        "SELECT close FROM prices_at(?::TIMESTAMP, 9223372036854775807) "
        "WHERE symbol = ? AND date = ?",
        BETWEEN,
        symbol,
        day,
    )
    assert bars[0] == history[1]["close"]
    assert store.trading_days(BETWEEN)[-1] == market.new_day
    _build(store, as_of=BETWEEN)
    as_of_between = _publications(store, as_of=BETWEEN)
    assert as_of_between == bad  # the bad publication, reproduced from its data
    # and a version read of the bad state still reads the bad data
    _build(store, as_of_version=before_rollback)
    assert _publications(store, as_of_version=before_rollback) == bad

    # roll the rollback back: the bad data and the bad numbers come back exactly
    rollback_version = report.version_id
    clock.now = T_REDO
    redo = rollback(store, store.calendar, rollback_version - 1)
    assert redo.report is not None and not redo.failed
    assert redo.report.target_run == bad_run.run_id
    assert redo.report.runs_undone == [report.run_id]
    assert redo.report.runs_redone == [bad_run.run_id]
    assert (redo.report.securities_restored, redo.report.shares_withdrawn) == (1, 0)
    assert _current(store) == bad_data
    assert _table(store, "shares_history") == bad_shares
    assert _publications(store) == bad
    runs = dict(_rows(store, "SELECT run_id, rolled_back_by FROM ingest_runs"))
    assert runs == {1: None, 2: None, 3: redo.report.run_id, 4: None}


def test_touched_keys_are_those_superseded_by_or_written_by_the_rollback(
    store: DuckDBStore, clock: Clock, market: Market
) -> None:
    """What a lake backend relies on to rewrite only the affected rows."""
    ingest(store, market.securities, market.prices)
    target = store.versions(limit=1)[0].version_id
    clock.now = T_BAD
    ingest(store, market.bad_securities, market.bad_prices)
    bad_keys = set(_rows(store, "SELECT date, symbol FROM prices WHERE run_id = 2"))
    clock.now = T_ROLLBACK
    report = store.rollback_data(target)
    touched = set(
        _rows(store, "SELECT date, symbol FROM price_versions WHERE superseded_by_run_id = ?", 3)
    ) | set(_rows(store, "SELECT date, symbol FROM prices WHERE run_id = ?", 3))
    assert touched == bad_keys
    restored = set(_rows(store, "SELECT date, symbol FROM prices WHERE run_id = 3"))
    assert len(restored) == report.prices_restored == 15
    assert {s for _, s in restored} == set(market.corrected_symbols)
    versions = _rows(store, "SELECT count(*) FROM price_versions GROUP BY date, symbol")
    assert versions  # versions of a key never overlap: one in force per moment
    overlaps = _rows(
        store,
        "SELECT count(*) FROM (SELECT date, symbol, known_at, superseded_at FROM price_versions"
        " UNION ALL SELECT date, symbol, known_at, NULL FROM prices) a"
        " JOIN (SELECT date, symbol, known_at, superseded_at FROM price_versions"
        " UNION ALL SELECT date, symbol, known_at, NULL FROM prices) b USING (date, symbol)"
        " WHERE a.known_at < b.known_at AND coalesce(a.superseded_at, 'infinity') > b.known_at",
    )
    assert overlaps == [(0,)]


def test_a_withdrawn_last_day_is_written_again_from_the_day_before(
    store: DuckDBStore, clock: Clock, market: Market
) -> None:
    """A correction that only added a day: the rollback withdraws it, and the build
    writes from the trading day before it, so the bogus day's level goes too."""
    ingest(store, market.securities, market.prices)
    _build(store)
    target = store.versions(limit=1)[0].version_id
    good = _publications(store)
    clock.now = T_BAD
    new_bar = market.bad_prices.filter(
        [d == market.new_day for d in market.bad_prices.column("date").to_pylist()]
    )
    ingest(store, market.bad_securities.slice(0, 0), new_bar)
    _build(store)
    assert store.built_days("ew100")[-1] == market.new_day
    clock.now = T_ROLLBACK
    outcome = rollback(store, store.calendar, target)
    assert outcome.report is not None and outcome.report.prices_restored == 0
    assert outcome.report.prices_withdrawn == 1
    assert store.built_days("ew100")[-1] == market.last_day
    assert {b.start_date for b in outcome.builds} == {market.last_day}
    assert _publications(store) == good


def test_refusals_change_nothing(store: DuckDBStore, clock: Clock, market: Market) -> None:
    ingest(store, market.securities, market.prices)
    _build(store)
    newest = store.versions(limit=1)[0].version_id
    before = store.table_counts()
    with pytest.raises(NotFoundError) as unknown:
        store.rollback_data(newest + 1)
    assert unknown.value.field == "to_version"
    with pytest.raises(ConflictError, match="nothing to undo"):
        store.rollback_data(newest)  # the data in force are those of the newest version
    outcome = rollback(store, store.calendar, newest)
    assert outcome.report is None and "nothing to undo" in outcome.message
    with pytest.raises(NotFoundError, match="--to: unknown version"):
        rollback(store, store.calendar, newest + 5, label="--to")
    assert store.table_counts() == before


def test_a_failed_rollback_writes_nothing(store: DuckDBStore, clock: Clock, market: Market) -> None:
    """All or nothing: a rollback that fails half way leaves every table as it was."""
    ingest(store, market.securities, market.prices)
    target = store.versions(limit=1)[0].version_id
    clock.now = T_BAD
    ingest(store, market.bad_securities, market.bad_prices)
    before = {name: _table(store, name) for name in ("prices", "price_versions", "ingest_runs")}
    counts = store.table_counts()
    # the prices move first; then moving the securities fails (a column it writes is gone)
    store.cursor().execute("ALTER TABLE security_versions RENAME COLUMN company_id TO gone")
    clock.now = T_ROLLBACK
    with pytest.raises(Exception, match="company_id"):
        store.rollback_data(target)
    assert {name: _table(store, name) for name in before} == before
    assert store.table_counts() == counts
