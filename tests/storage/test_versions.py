"""Every change of a store's content is a version, written in the transaction of the
change: ingestion runs, builds, definition changes, restores (rollbacks:
test_rollback.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.errors import ConflictError, IndexBuilderError
from index_builder.ingest.job import with_row_numbers
from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins, remove_definition
from index_builder.storage.backup import restore_backup, write_backup
from index_builder.storage.base import BuildState, LevelRows, VersionInfo
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.tables import COUNTERS, PERSISTENT_TABLES

from rollback_market import USER_INDEX, Clock, Market, ingest, make_market

T0 = dt.datetime(2024, 6, 3, 21, 0)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def open_store(tmp_path: Path, clock: Clock) -> Iterator[Callable[[str], DuckDBStore]]:
    """Opens stores of the backend under test (by name) with the built-in definitions;
    the one place stores are made."""
    opened: list[DuckDBStore] = []

    def make(name: str) -> DuckDBStore:
        store = DuckDBStore(tmp_path / f"{name}.duckdb", threads=2, clock=clock).open()
        opened.append(store)
        ensure_builtins(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[str], DuckDBStore]) -> DuckDBStore:
    return open_store("x")


@pytest.fixture(scope="module")
def market() -> Market:
    return make_market(n_symbols=120, n_days=25)


def _kinds(store: DuckDBStore) -> list[str]:
    return [v.kind for v in reversed(store.versions(limit=1000))]


def test_a_fresh_store_has_no_version_and_the_tables_are_persistent(store: DuckDBStore) -> None:
    assert store.versions() == [] and store.version(1) is None
    assert {"versions", "shares_withdrawn"} <= set(PERSISTENT_TABLES)
    assert COUNTERS["version_ids"] == ("versions", "version_id")
    assert store.table_counts()["versions"] == 0  # the built-ins it was seeded with


def test_an_ingestion_run_is_a_version(store: DuckDBStore, clock: Clock, market: Market) -> None:
    report = ingest(store, market.securities, market.prices)
    (version,) = store.versions()
    assert version == VersionInfo(
        version_id=1,
        kind="ingest",
        created_at=T0,
        data_run_id=report.run_id,
        run_id=report.run_id,
        index_id=None,
        build_version=None,
        rows=report.rows_accepted,
        detail={
            "provider": "test",
            "status": "succeeded",
            "inserted": report.rows_inserted,
            "updated": 0,
            "unchanged": 0,
            "rejected": 0,
            "min_date": str(report.min_date),
            "max_date": str(report.max_date),
        },
        snapshots=None,
    )
    assert store.version(1) == version
    # a provider run's outcome set afterwards: recorded once; a failed outcome: never
    store.set_run_outcome(report.run_id, "partial", "2 symbols failed")
    assert len(store.versions()) == 1
    clock.now = T0 + dt.timedelta(hours=1)
    again = ingest(store, market.securities, market.prices)  # nothing new: still a version
    newest = store.versions(limit=1)[0]
    assert (newest.run_id, newest.rows, newest.detail["unchanged"]) == (
        again.run_id,
        again.rows_accepted,
        again.rows_accepted,
    )
    assert newest.created_at == clock.now
    store.set_run_outcome(again.run_id, "failed", "the provider failed")
    assert len(store.versions()) == 2


def test_a_failed_ingestion_is_no_version(store: DuckDBStore, market: Market) -> None:
    prices = with_row_numbers(market.prices, PRICES_SCHEMA)

    def batches() -> Iterator[pa.RecordBatch]:
        yield prices.to_batches(max_chunksize=100)[0]
        raise OSError("the connection dropped")

    with pytest.raises(IndexBuilderError, match="the connection dropped"):
        store.ingest(
            with_row_numbers(market.securities, SECURITIES_SCHEMA),
            pa.RecordBatchReader.from_batches(prices.schema, batches()),
            provider="test",
            params={},
        )
    assert [r["status"] for r in store.ingest_runs()] == ["failed"]
    assert store.versions() == []


def test_every_build_stored_is_a_version(store: DuckDBStore, market: Market) -> None:
    first_days = market.prices.filter(
        [d < market.last_day for d in market.prices.column("date").to_pylist()]
    )
    run = ingest(store, market.securities, first_days).run_id
    builder = IndexBuilder(store, store.calendar)
    (full,) = builder.build(["ew100"])
    build = store.versions(limit=1)[0]
    assert (build.kind, build.index_id, build.build_version, build.rows) == (
        "build",
        "ew100",
        full.version,
        full.trading_days,
    )
    assert build.data_run_id == run
    assert build.detail == {
        "write_from": None,
        "built_through": str(full.end_date),
        "data_run_id": run,
    }
    (unchanged,) = builder.build(["ew100"])
    assert unchanged.outcome == "unchanged" and store.versions(limit=1)[0] == build

    last = ingest(store, market.securities, market.prices).run_id  # one day more
    (appended,) = builder.build(["ew100"])
    newest = store.versions(limit=1)[0]
    assert newest.rows == appended.trading_days == 1
    assert newest.detail["write_from"] == str(market.last_day)
    assert newest.data_run_id == newest.detail["data_run_id"] == last
    as_of = dt.datetime(2024, 6, 4)
    builder.build(["ew100"], as_of=as_of)
    as_of_build = store.versions(limit=1)[0]
    assert as_of_build.index_id == "ew100@2024-06-04T00:00:00Z"
    assert as_of_build.detail["as_of"] == str(as_of)
    assert _kinds(store) == ["ingest", "build", "ingest", "build", "build"]


def test_a_build_discarded_at_its_commit_is_no_version(store: DuckDBStore, market: Market) -> None:
    """The version is written in the build's own transaction: no results, no version."""
    ingest(store, market.securities, market.prices)
    before = store.versions()
    state = BuildState(
        index_id="ew100",
        version=store.next_build_version(),
        definition_hash="rules that were replaced",
        base_date=market.last_day,
        built_through=market.last_day,
        data_run_id=1,
        built_at=dt.datetime(2024, 6, 3),
        duration_ms=1.0,
        warnings=[],
    )
    empty = LevelRows([], [], [], [], [], [], {"price": [], "total": [], "net_total": []}, [])
    with pytest.raises(ConflictError, match="rules were replaced"):
        store.save_results(state, empty, [], [], write_from=None)
    assert store.versions() == before and store.build_state("ew100") is None


def test_a_definition_change_is_a_version_when_the_stored_json_changes(
    store: DuckDBStore, market: Market
) -> None:
    definition = parse_definition(USER_INDEX)
    add_definition(store, definition)
    added = store.versions(limit=1)[0]
    assert (added.kind, added.index_id, added.detail) == (
        "definition",
        "mine",
        {"action": "add", "builtin": False, "results_removed": False},
    )
    add_definition(store, definition, replace=True)  # the same JSON: nothing changed
    ensure_builtins(store)  # the built-ins as stored: nothing changed
    assert store.versions() == [added]

    ingest(store, market.securities, market.prices)
    IndexBuilder(store, store.calendar).build(["mine"])
    renamed = parse_definition({**USER_INDEX, "name": "Renamed"})
    add_definition(store, renamed, replace=True)  # a new name keeps the results
    assert store.versions(limit=1)[0].detail == {
        "action": "replace",
        "builtin": False,
        "results_removed": False,
    }
    assert store.build_state("mine") is not None
    add_definition(store, parse_definition({**USER_INDEX, "top_n": 10}), replace=True)
    assert store.versions(limit=1)[0].detail["results_removed"] is True
    remove_definition(store, "mine")
    removed = store.versions(limit=1)[0]
    assert (removed.kind, removed.index_id, removed.detail) == (
        "definition",
        "mine",
        {"action": "remove", "builtin": False},
    )
    assert _kinds(store) == [
        "definition",
        "ingest",
        "build",
        "definition",
        "definition",
        "definition",
    ]


def test_versions_newest_first_by_kind_and_limit(store: DuckDBStore, market: Market) -> None:
    ingest(store, market.securities, market.prices)
    IndexBuilder(store, store.calendar).build(["ew100", "ew-tech50"])
    add_definition(store, parse_definition(USER_INDEX))
    every = store.versions()
    assert [v.version_id for v in every] == [4, 3, 2, 1]
    assert [v.kind for v in every] == ["definition", "build", "build", "ingest"]
    assert [v.version_id for v in store.versions(limit=2)] == [4, 3]
    assert [v.index_id for v in store.versions(kind="build")] == ["ew-tech50", "ew100"]
    assert store.versions(kind="rollback") == []
    assert all(v.data_run_id == 1 and v.snapshots is None for v in every)


def test_a_restore_is_a_version_and_names_the_source_version(
    open_store: Callable[[str], DuckDBStore], tmp_path: Path, market: Market
) -> None:
    source = open_store("source")
    ingest(source, market.securities, market.prices)
    IndexBuilder(source, source.calendar).build(["ew100"])
    manifest = write_backup(source, tmp_path / "backups")
    assert manifest.source_version["version_id"] == 2
    assert manifest.source_version["label"] == "run1-build1"  # unchanged: format 1

    target = open_store("target")
    restore_backup(manifest.location, target)
    versions = target.versions()
    assert [v.kind for v in versions] == ["restore", "build", "ingest"]
    restore = versions[0]
    assert restore.version_id == 3 and restore.data_run_id == 1
    detail: dict[str, Any] = restore.detail
    assert detail["backup"] == manifest.location
    assert detail["source_version"] == manifest.source_version
    assert versions[1:] == source.versions()
    # the version counter goes on above the versions restored
    add_definition(target, parse_definition(USER_INDEX))
    assert target.versions(limit=1)[0].version_id == 4
