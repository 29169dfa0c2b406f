"""Builds and reads as of a version: the data as they stood right after it, whatever
came later, stored apart from the current results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.errors import (
    ConflictingOptionsError,
    InvalidInputError,
    NoDataError,
    NotFoundError,
)
from index_builder.services.builds import IndexBuilder, data_waiting
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

from rollback_market import USER_INDEX, Clock, Market, ingest, make_market, published

T_GOOD = dt.datetime(2024, 6, 3, 21, 0)
T_BAD = dt.datetime(2024, 6, 10, 21, 0)
INDICES = ["ew100", "mine"]


@pytest.fixture
def clock() -> Clock:
    return Clock(T_GOOD)


@pytest.fixture
def open_store(tmp_path: Path, clock: Clock) -> Iterator[Callable[[str], DuckDBStore]]:
    """Opens stores of the backend under test (by name) with the built-in definitions
    and the user index; the one place stores are made."""
    opened: list[DuckDBStore] = []

    def make(name: str) -> DuckDBStore:
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


def test_a_build_as_of_a_version_equals_a_fresh_build_of_that_versions_data(
    store: DuckDBStore,
    open_store: Callable[[str], DuckDBStore],
    clock: Clock,
    market: Market,
) -> None:
    ingest(store, market.securities, market.prices)
    builder = IndexBuilder(store, store.calendar)
    assert not [r for r in builder.build(INDICES) if r.failed]
    version = store.versions(limit=1)[0].version_id
    clock.now = T_BAD
    ingest(store, market.bad_securities, market.bad_prices)  # corrections and new days
    assert not [r for r in builder.build(INDICES) if r.failed]

    results = builder.build(INDICES, as_of_version=version)
    assert [(r.outcome, r.mode, r.as_of_version) for r in results] == [
        ("built", "full", version)
    ] * 2
    assert results[0].as_dict()["as_of_version"] == version
    assert results[0].end_date == market.last_day  # not the day the correction added

    fresh = open_store("fresh")  # only the data of that version
    ingest(fresh, market.securities, market.prices)
    assert not [r for r in IndexBuilder(fresh, fresh.calendar).build(INDICES) if r.failed]
    reader, fresh_reader = IndexReader(store, store.calendar), IndexReader(fresh, fresh.calendar)
    for index in INDICES:
        expected = published(fresh_reader, index)
        assert published(reader, index, as_of_version=version) == expected
        assert published(reader, index) != expected  # the current results are the new data

    state = store.build_state(f"ew100@v{version}")
    assert state is not None and state.as_of_version == version and state.data_run_id == 1
    assert state.as_of is None
    assert {s.index_id for s in store.current_build_states()} == set(INDICES)
    assert [s.as_of_version for s in store.as_of_builds("ew100")] == [version]
    assert data_waiting(store, [state]) == {}
    window = reader.window("ew100", None, None, as_of_version=version)
    assert (window.as_of_version, window.key) == (version, f"ew100@v{version}")
    composition = reader.composition("mine", market.last_day, as_of_version=version)
    assert composition.rows() == fresh_reader.composition("mine", market.last_day).rows()


def test_new_rules_remove_the_builds_as_of_a_version(store: DuckDBStore, market: Market) -> None:
    ingest(store, market.securities, market.prices)
    v = store.versions(limit=1)[0].version_id
    builder = IndexBuilder(store, store.calendar)
    builder.build(["mine"], as_of_version=v)
    assert store.build_state(f"mine@v{v}") is not None
    add_definition(store, parse_definition({**USER_INDEX, "top_n": 12}), replace=True)
    assert store.build_state(f"mine@v{v}") is None and store.as_of_builds("mine") == []


def test_reads_and_builds_as_of_a_version_refuse_what_cannot_be(
    store: DuckDBStore, clock: Clock, market: Market
) -> None:
    ingest(store, market.securities, market.prices)
    v = store.versions(limit=1)[0].version_id
    builder = IndexBuilder(store, store.calendar)
    builder.build(["ew100"])
    reader = IndexReader(store, store.calendar)
    with pytest.raises(NoDataError) as unbuilt:
        reader.performance("ew100", as_of_version=v)
    assert f"index-builder build --index ew100 --as-of-version {v}" in unbuilt.value.message
    with pytest.raises(NoDataError, match="no market data was stored after version 1"):
        builder.build(["ew100"], as_of_version=1)  # the user index's definition: no data
    for call in (
        lambda: reader.performance("ew100", as_of_version=99),
        lambda: reader.composition("ew100", as_of_version=99),
        lambda: reader.changes("ew100", as_of_version=99),
        lambda: builder.build(["ew100"], as_of_version=99),
        lambda: builder.check_window("ew100", None, None, as_of_version=99),
    ):
        with pytest.raises(NotFoundError) as unknown:
            call()
        assert unknown.value.field == "as_of_version" and unknown.value.http_status == 404
        assert "99" in unknown.value.message
    moment = dt.datetime(2024, 6, 5)
    for call in (
        lambda: reader.performance("ew100", as_of=moment, as_of_version=1),
        lambda: reader.composition("ew100", None, moment, 1),
        lambda: reader.changes("ew100", as_of=moment, as_of_version=1),
        lambda: builder.build(["ew100"], as_of=moment, as_of_version=1),
        lambda: builder.check_window("ew100", None, None, moment, 1),
    ):
        with pytest.raises(ConflictingOptionsError) as both:
            call()
        assert both.value.http_status == 400 and both.value.exit_code == 2
        assert "as_of and as_of_version" in both.value.message
    clock.now = T_BAD
    ingest(store, market.bad_securities, market.bad_prices)
    with pytest.raises(InvalidInputError, match="after the last trading day"):
        builder.check_window("ew100", None, market.new_day, as_of_version=v)
    builder.check_window("ew100", None, market.new_day)  # the current data have that day
