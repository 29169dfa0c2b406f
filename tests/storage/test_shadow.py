"""The shadow_storage flag (storage/shadow.py): a primary store and a shadow of the
other backend, both real, the shadow a verified copy (migrate-storage) of the
primary. Writes reach both with the same ids; reads are served by the primary and,
sampled, compared; a forced mismatch and a failing shadow are counted and logged and
never fail a request; a shadow that is not a copy at start is diverged; the primary
switched to the lake (one setting) serves the same answers, and switching back (the
rollback) finds the writes made while on the lake in DuckDB.

The stores of a test live in one folder per process, put back from a template before
each test (a lake names its files by absolute path: it cannot be copied elsewhere),
so that the market, the build and the migration are made once."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from index_builder.engine.definitions import parse_definition
from index_builder.errors import UnusableInputError
from index_builder.ingest.job import with_row_numbers
from index_builder.ops.logging import configure_logging, reset_logging
from index_builder.providers import get_provider
from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.settings import Settings
from index_builder.storage.base import BuildState, VersionInfo
from index_builder.storage.duckdb.jobs import DuckDBJobRecords
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.factory import make_backend, make_store, other_backend
from index_builder.storage.migrate import migrate_store, verify_copy
from index_builder.storage.shadow import (
    PRIMARY_ONLY,
    READS,
    WRITES,
    ShadowClock,
    ShadowStore,
    difference,
    shadow_component,
)
from index_builder.storage.tables import STAMPED_COLUMNS

from backend_stores import settings_for
from crafted import ingest, px, sec

TOP2 = {"id": "t2", "name": "Top 2", "top_n": 2}
SECURITIES = [sec("AAA"), sec("BBB"), sec("CCC")]
DAYS = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
LATER = ["2024-01-08", "2024-01-09"]
STAMPED_TABLES = set(STAMPED_COLUMNS)
"""Tables whose rows each backend stamps itself (built_at, lake snapshot ids,
definition times): equal in everything else, compared through the reads."""


def _prices(days: list[str], base: float) -> list[dict[str, Any]]:
    return [
        px(day, s["symbol"], base + i + j)
        for i, day in enumerate(days)
        for j, s in enumerate(SECURITIES)
    ]


def _metric(name: str, operation: str) -> float:
    return (
        REGISTRY.get_sample_value(f"index_builder_shadow_{name}_total", {"operation": operation})
        or 0.0
    )


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structured shadow events (structlog event dicts) named ``event``."""
    return [
        r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == event
    ]


def seed(folder: Path, primary: str) -> None:
    """A store of ``primary`` in ``folder`` holding a market and a built index, copied
    (and verified) to the other backend: the start of a shadow phase."""
    settings = settings_for(primary, folder)
    source = make_backend(settings, primary).open()
    target = make_backend(settings, other_backend(primary)).open()
    try:
        ensure_builtins(source)
        add_definition(source, parse_definition(TOP2))
        ingest(source, folder, SECURITIES, _prices(DAYS, 10.0))
        IndexBuilder(source, source.calendar).build(["t2"])[0].raise_for_failure()
        assert migrate_store(source, target).ok
    finally:
        source.close()
        target.close()


@pytest.fixture(scope="module")
def pair_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the folder of this process's stores, a copy of it seeded once)."""
    home = tmp_path_factory.mktemp("shadow-pair")
    seed(home, "duckdb")
    template = home.with_name(home.name + "-template")
    shutil.copytree(home, template)
    return home, template


@pytest.fixture
def pair(pair_template: tuple[Path, Path]) -> Path:
    """The folder of a DuckDB store and its verified copy in the lake, as seeded."""
    home, template = pair_template
    shutil.rmtree(home)
    shutil.copytree(template, home)
    return home


def shadow_of(settings: Settings) -> ShadowStore:
    store = make_store(settings, shadow=True).open()
    assert isinstance(store, ShadowStore)
    return store


@pytest.fixture
def shadowed(pair: Path) -> Iterator[ShadowStore]:
    """DuckDB primary, Iceberg shadow, every read compared."""
    store = shadow_of(settings_for("duckdb", pair, shadow_sample_rate=1.0))
    yield store
    store.close()


def test_writes_reach_both_stores_with_the_same_ids(pair: Path, tmp_path: Path) -> None:
    settings = settings_for("duckdb", pair, shadow_sample_rate=1.0)
    store = shadow_of(settings)
    try:
        assert store.active, store.diverged
        assert store.primary.capabilities.name == "duckdb"
        report = ingest(store, tmp_path, SECURITIES, _prices(LATER, 20.0), name="later")
        (result,) = IndexBuilder(store, store.calendar).build(["t2"])
        result.raise_for_failure()
        add_definition(store, parse_definition({**TOP2, "id": "t3", "top_n": 3}))
        assert store.active, store.diverged
        assert store.counts["mismatches"] == 0 and store.counts["write_failures"] == 0
        for side in (store.primary, store.shadow):
            assert side.latest_run_id() == report.run_id
            state = side.build_state("t2")
            assert state is not None and state.version == result.version
            assert side.get_definition("t3") is not None
        assert [v.version_id for v in store.primary.versions()] == [
            v.version_id for v in store.shadow.versions()
        ]
        assert difference(store.primary.versions(), store.shadow.versions()) is None
        # the same clock readings: runs and versions carry the same times
        assert store.primary.ingest_runs() == store.shadow.ingest_runs()
        checks = {c.table: c for c in verify_copy(store.primary, store.shadow)}
        assert {t for t, c in checks.items() if not c.ok} <= STAMPED_TABLES
        # what migrate-storage --verify-only compares: everything but the stamped columns
        assert [
            c.table for c in verify_copy(store.primary, store.shadow, skip_stamped=True) if not c.ok
        ] == []
        assert store.primary.next_build_version() == store.shadow.next_build_version()
    finally:
        store.close()
    again = shadow_of(settings)  # a new process finds the two in step
    try:
        assert again.active, again.diverged
    finally:
        again.close()


def _answers(store: DuckDBStore, index_id: str) -> dict[str, Any]:
    """What the product reads of an index and the market (compared with difference():
    a build's built_at is each backend's own)."""
    start, end = dt.date(2024, 1, 2), dt.date(2024, 1, 9)
    return {
        "levels": store.read_levels(index_id, start, end),
        "build": store.build_state(index_id),
        "spells": store.spells_overlapping(index_id, start, end),
        "panel": store.load_panel(start, end),
        "days": store.trading_days(),
        "runs": store.ingest_runs(),
        "versions": [(v.version_id, v.kind, v.data_run_id) for v in store.versions()],
        "definitions": sorted(d.id for d, _ in store.list_definitions()),
    }


LEVELS = ("levels", "build", "spells")


def test_switching_the_primary_to_the_lake_and_back(pair: Path, tmp_path: Path) -> None:
    on_duckdb = settings_for("duckdb", pair, shadow_sample_rate=1.0)
    on_lake = on_duckdb.model_copy(update={"storage": "iceberg"})  # the one setting
    store = shadow_of(on_duckdb)
    try:
        ingest(store, tmp_path, SECURITIES, _prices(LATER, 20.0), name="later")
        IndexBuilder(store, store.calendar).build(["t2"])[0].raise_for_failure()
        before = _answers(store, "t2")
        assert store.active, store.diverged
    finally:
        store.close()

    store = shadow_of(on_lake)  # a restart with INDEX_BUILDER_STORAGE=iceberg
    try:
        assert store.primary.capabilities.name == "iceberg"
        assert store.shadow.capabilities.name == "duckdb"
        assert store.active, store.diverged  # in step at start
        assert difference(_answers(store, "t2"), before) is None  # served by the lake
        # writes made while on the lake
        add_definition(store, parse_definition({**TOP2, "id": "t3", "top_n": 3}))
        IndexBuilder(store, store.calendar).build(["t3"])[0].raise_for_failure()
        on_the_lake = _answers(store, "t3")
        assert store.active and store.counts["mismatches"] == 0, store.diverged
        assert store.counts["comparisons"] > 0
    finally:
        store.close()

    store = shadow_of(on_duckdb)  # the rollback: the setting switched back
    try:
        assert store.primary.capabilities.name == "duckdb"
        assert store.active, store.diverged  # DuckDB took every write made on the lake
        assert difference(_answers(store, "t3"), on_the_lake) is None
        t2 = _answers(store, "t2")
        assert difference([t2[k] for k in LEVELS], [before[k] for k in LEVELS]) is None
    finally:
        store.close()
    with make_store(on_duckdb, shadow=False) as plain:  # and with the flag off
        assert difference(_answers(plain, "t3"), on_the_lake) is None


def test_reads_are_served_by_the_primary_and_a_mismatch_is_counted_and_logged(
    shadowed: ShadowStore, caplog: pytest.LogCaptureFixture
) -> None:
    day = dt.date(2024, 1, 4)
    primary_level = shadowed.primary.level_on("t2", day)
    assert shadowed.level_on("t2", day) == primary_level
    assert shadowed.counts["mismatches"] == 0
    shadowed.shadow.cursor().execute(
        "UPDATE index_levels SET level = level + 1 WHERE index_id = 't2' AND date = ?", [day]
    )
    mismatches = _metric("mismatches", "read_levels")
    stream = io.StringIO()  # the log lines as production writes them
    configure_logging(Settings(log_level="INFO"), stream=stream, log_format="json")
    try:
        with caplog.at_level(logging.ERROR, logger="index_builder.storage.shadow"):
            levels = shadowed.read_levels("t2", dt.date(2024, 1, 2), dt.date(2024, 1, 5))
    finally:
        reset_logging()
    assert levels.equals(
        shadowed.primary.read_levels("t2", dt.date(2024, 1, 2), day.replace(day=5))
    )
    assert _metric("mismatches", "read_levels") == mismatches + 1
    (event,) = _events(caplog, "shadow mismatch")
    assert event["operation"] == "read_levels"
    assert event["arguments"].startswith("index_id='t2', start=datetime.date(2024, 1, 2)")
    assert event["difference"].startswith("result.level[2]: ")  # where they differ
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (logged,) = [line for line in lines if line["event"] == "shadow mismatch"]
    assert logged["operation"] == "read_levels" and logged["level"] == "error"
    assert logged["logger"] == "index_builder.storage.shadow"
    assert shadowed.diverged is not None and not shadowed.active
    health = shadowed.health()
    assert health["status"] == "degraded" and health["mismatches"] == 1
    # diverged: no longer compared (nor written)
    comparisons = shadowed.counts["comparisons"]
    assert shadowed.level_on("t2", day) == primary_level
    add_definition(shadowed, parse_definition({**TOP2, "id": "t3"}))
    assert shadowed.counts["comparisons"] == comparisons
    assert shadowed.shadow.get_definition("t3") is None
    assert shadowed.primary.get_definition("t3") is not None


def test_every_read_is_compared_at_sample_rate_one_and_none_at_zero(
    shadowed: ShadowStore,
) -> None:
    day = dt.date(2024, 1, 5)
    reads = {
        "trading_days": lambda: shadowed.trading_days(),
        "security_master": lambda: shadowed.security_master(),
        "load_panel": lambda: shadowed.load_panel(dt.date(2024, 1, 2), day),
        "build_state": lambda: shadowed.build_state("t2"),
        "read_levels": lambda: shadowed.read_levels("t2", dt.date(2024, 1, 2), day),
        "spells_overlapping": lambda: shadowed.spells_overlapping("t2", dt.date(2024, 1, 2), day),
        "list_definitions": lambda: shadowed.list_definitions(),
        "versions": lambda: shadowed.versions(),
        "ingest_runs": lambda: shadowed.ingest_runs(),
        "get_definition": lambda: shadowed.get_definition("nope"),
        "table_counts": lambda: shadowed.table_counts(),
    }
    before = {name: _metric("comparisons", name) for name in reads}
    for read in reads.values():
        read()
    assert {name: _metric("comparisons", name) - before[name] for name in reads} == dict.fromkeys(
        reads, 1.0
    )
    assert shadowed.counts["mismatches"] == 0, shadowed.diverged
    shadowed.sample_rate = 0.0
    count = shadowed.counts["comparisons"]
    for read in reads.values():
        read()
    assert shadowed.counts["comparisons"] == count


def test_a_failing_shadow_never_fails_the_write_and_is_counted(
    shadowed: ShadowStore, caplog: pytest.LogCaptureFixture
) -> None:
    shadowed.shadow.close()  # the shadow store goes away under the process
    failures = _metric("write_failures", "put_definition")
    with caplog.at_level(logging.ERROR, logger="index_builder.storage.shadow"):
        add_definition(shadowed, parse_definition({**TOP2, "id": "t3"}))
    assert shadowed.primary.get_definition("t3") is not None
    assert _metric("write_failures", "put_definition") == failures + 1
    (event,) = _events(caplog, "shadow write failed")
    assert event["operation"] == "put_definition"
    assert event["arguments"] == "definition=<definition t3>, builtin=False"
    assert shadowed.diverged is not None and "failed on the shadow" in shadowed.diverged
    # later writes go to the primary alone, without another failure
    add_definition(shadowed, parse_definition({**TOP2, "id": "t4"}))
    assert shadowed.primary.get_definition("t4") is not None
    assert _metric("write_failures", "put_definition") == failures + 1
    component = shadow_component(shadowed, None)
    assert component is not None and component["status"] == "degraded"


def test_a_failed_stream_is_the_same_failed_run_in_both_stores(shadowed: ShadowStore) -> None:
    data = get_provider("synthetic").fetch(symbols=5, days=3, start=dt.date(2024, 1, 8), seed=3)
    prices = data.prices if isinstance(data.prices, pa.Table) else data.prices.read_all()
    batch = with_row_numbers(prices, PRICES_SCHEMA).to_batches(max_chunksize=4)

    def broken() -> Iterator[pa.RecordBatch]:
        yield batch[0]
        raise ValueError("the provider's connection was lost")

    reader = pa.RecordBatchReader.from_batches(batch[0].schema, broken())
    securities = with_row_numbers(data.securities, SECURITIES_SCHEMA)
    with pytest.raises(UnusableInputError, match="connection was lost"):
        shadowed.ingest(securities, reader, provider="synthetic", params={})
    assert shadowed.active, shadowed.diverged
    runs = shadowed.primary.ingest_runs(1)
    assert runs[0]["status"] == "failed"
    assert runs == shadowed.shadow.ingest_runs(1)


def test_job_records_are_replayed_on_the_shadow(shadowed: ShadowStore) -> None:
    records = DuckDBJobRecords(shadowed)
    now = dt.datetime(2024, 1, 9, 12, 0)
    record = {
        "job_id": "j1",
        "kind": "build",
        "request": "{}",
        "status": "queued",
        "stage": "queued",
        "progress": 0.0,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "error": None,
    }
    records.insert(record)
    records.update({**record, "status": "succeeded", "finished_at": now})
    query = "SELECT job_id, status, finished_at FROM api_jobs"
    assert shadowed.primary.cursor().execute(query).fetchall() == [("j1", "succeeded", now)]
    assert shadowed.shadow.cursor().execute(query).fetchall() == [("j1", "succeeded", now)]
    assert shadowed.active


def test_a_shadow_that_is_not_a_copy_is_diverged_at_start(tmp_path: Path) -> None:
    settings = settings_for("duckdb", tmp_path, shadow_sample_rate=1.0)
    with make_backend(settings, "duckdb") as primary:  # data the lake never got
        ensure_builtins(primary)
        ingest(primary, tmp_path, SECURITIES, _prices(DAYS, 10.0))
    mismatches = _metric("mismatches", "open")
    store = shadow_of(settings)
    try:
        assert not store.active
        assert store.diverged is not None and "not a copy of the primary" in store.diverged
        assert "rows.securities: 3 != 0" in store.diverged
        assert _metric("mismatches", "open") == mismatches + 1
        add_definition(store, parse_definition(TOP2))  # the primary alone
        assert store.shadow.get_definition("t2") is None
    finally:
        store.close()


def test_the_flag_makes_the_factory_shadow(tmp_path: Path) -> None:
    plain = settings_for("duckdb", tmp_path)
    assert not isinstance(make_store(plain), ShadowStore)
    flagged = settings_for("duckdb", tmp_path, flags='{"shadow_storage": true}')
    store = make_store(flagged)
    assert isinstance(store, ShadowStore)
    assert store.primary.capabilities.name == "duckdb"
    assert store.shadow.capabilities.name == "iceberg"
    assert store.sample_rate == 0.05
    with pytest.raises(ValueError, match="less than or equal to 1"):
        Settings(shadow_sample_rate=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ShadowStore(store.primary, store.shadow, sample_rate=-0.1)


def test_every_store_operation_is_shadowed() -> None:
    """A store operation added to DuckDBStore must say in storage/shadow.py how it is
    shadowed: a read, a write, the primary's alone, or a method of its own (until then
    it runs on the primary alone and diverges the shadow)."""
    public = {
        name
        for name in dir(DuckDBStore)
        if not name.startswith("_") and callable(getattr(DuckDBStore, name))
    }
    missing = sorted(
        name for name in public if getattr(ShadowStore, name).__qualname__.startswith("_unshadowed")
    )
    assert missing == []
    assert READS.isdisjoint(WRITES) and PRIMARY_ONLY.isdisjoint(READS | WRITES)
    assert ShadowStore.read_levels.__qualname__ == "ShadowStore.read_levels"


def test_shadow_clock_replays_the_primarys_readings() -> None:
    ticks = iter(dt.datetime(2024, 1, 1, 0, 0, s) for s in range(60))
    clock = ShadowClock(lambda: next(ticks))
    with clock.recording() as readings:
        first, second = clock.primary(), clock.primary()
    assert readings == [first, second]
    with clock.replaying(readings):
        assert [clock.shadow(), clock.shadow()] == [first, second]
        assert clock.shadow() > second  # readings spent: the base clock
    assert clock.primary() > second  # not recording: nothing noted


def test_comparison_is_exact_but_for_what_each_backend_stamps() -> None:
    nan = float("nan")
    assert difference([1.0, nan], [1.0, nan]) is None
    assert difference({"a": 1}, {"a": 1.0}) == "a: int 1 != float 1.0"
    assert difference(np.array([1.0, nan]), np.array([1.0, nan])) is None
    assert "[1]" in str(difference(np.array([1.0, 2.0]), np.array([1.0, 3.0])))
    a = pa.table({"level": [1.0, 2.0]})
    assert difference(a, pa.table({"level": [1.0, 2.5]})) == "result.level[1]: 2.0 != 2.5"
    when = dt.datetime(2024, 1, 1)
    state = BuildState("t2", 1, "h", dt.date(2024, 1, 2), dt.date(2024, 1, 5), 1, when, 1.0, [])
    later = BuildState(
        "t2", 1, "h", dt.date(2024, 1, 2), dt.date(2024, 1, 5), 1, when.replace(hour=1), 1.0, []
    )
    assert difference(state, later) is None  # built_at: the database's clock
    version = VersionInfo(1, "ingest", when, 1, 1, None, None, 3, {}, None)
    stamped = VersionInfo(1, "ingest", when, 1, 1, None, None, 3, {}, {"prices": 7})
    assert difference(version, stamped) is None  # snapshots: the lake's own
