"""The Spark engine publishes what the NumPy engine publishes (to 1e-9): levels of every
return variant, turnover, spells, composition changes and pro forma, for every built-in
index and for monthly, capped, group-capped, buffered, lagged, company-ranked and
filtered custom definitions, on a dirty market with corporate actions; full builds,
an incremental build that restates a correction, a build as of a past moment; from a
DuckDB store and from an Iceberg lake (through ``index-builder build --all --engine
spark``). Every index of a build is computed by one Spark job reading the bars once."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from index_builder.calendar import get_calendar
from index_builder.point_in_time import result_key
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.storage.base import Storage
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.iceberg.store import IcebergStore

from backend_stores import open_store, warehouse_path
from cli_runner import run
from rollback_market import Clock, ingest
from spark_market import (
    LOCAL,
    assert_same_publication,
    custom_definitions,
    dirty_market,
    published,
)

T0 = dt.datetime(2024, 6, 1, 12, 0)
"""When the market is ingested (the store's clock); the correction comes a day later."""


def _prepare(store: Storage, securities: pa.Table, prices: pa.Table) -> None:
    for definition in custom_definitions():
        add_definition(store, definition)
    report = ingest(store, securities, prices)
    assert report.rows_rejected == 5  # four invalid rows; a conflict quarantines both copies


@pytest.fixture(scope="module")
def market() -> tuple[pa.Table, pa.Table]:
    return dirty_market()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, market: tuple[pa.Table, pa.Table]) -> Path:
    """A DuckDB store with the definitions and the ingested market, not built."""
    path = tmp_path_factory.mktemp("template") / "store.duckdb"
    clock = Clock(T0)
    with DuckDBStore(path, calendar=get_calendar(), threads=2, clock=clock) as store:
        ensure_builtins(store)
        _prepare(store, *market)
    return path


@pytest.fixture(scope="module")
def numpy_published(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every index built by the NumPy engine from the template: its publications."""
    path = tmp_path_factory.mktemp("numpy") / "store.duckdb"
    shutil.copy(template, path)
    with DuckDBStore(path, calendar=get_calendar(), threads=2) as store:
        ids = [d.id for d, _ in store.list_definitions()]
        results = IndexBuilder(store, store.calendar).build(ids)
        assert not [r.reason for r in results if r.failed]
        return {i: published(store, i) for i in ids}


def _correction(prices: pa.Table) -> tuple[pa.Table, dt.date]:
    """A correction of the closes of three large securities on a past day, and one
    more session for every security."""
    frame = prices.to_pandas()
    days = sorted(frame["date"].unique())
    fixed_day = days[-12]
    on_day = frame[frame["date"] == fixed_day].nlargest(3, "market_cap")
    fixed = on_day.copy()
    for column in ("close", "adj_close"):
        fixed[column] = fixed[column] * 1.03
    fixed["market_cap"] = fixed["market_cap"] * 1.03
    new_day = get_calendar().session_after(days[-1], 1)
    assert new_day is not None
    last = frame[frame["date"] == days[-1]].drop_duplicates("symbol").copy()
    last["date"] = new_day
    last["close"] = last["close"] * 1.01
    last["adj_close"] = last["adj_close"] * 1.01
    last["market_cap"] = last["market_cap"] * 1.01
    last["split_ratio"] = None
    last["dividend"] = last["dividend"].where(last["dividend"].isna(), 0.0)
    both = pd.concat([fixed, last], ignore_index=True)
    return pa.Table.from_pandas(both, schema=prices.schema, preserve_index=False), fixed_day


def test_duckdb_full_incremental_and_as_of_builds_equal_numpy(
    spark: Any, template: Path, market: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    ids: list[str] = []
    stores = {}
    clock = Clock(T0)
    for engine in ("numpy", "spark"):
        path = tmp_path / engine / "store.duckdb"
        path.parent.mkdir()
        shutil.copy(template, path)
        stores[engine] = DuckDBStore(path, calendar=get_calendar(), threads=2, clock=clock).open()
    try:
        numpy_store, spark_store = stores["numpy"], stores["spark"]
        ids = [d.id for d, _ in spark_store.list_definitions()]
        assert len(ids) == 22 and "c-company" in ids and "ew100-buffer" in ids
        numpy_builder = IndexBuilder(numpy_store, numpy_store.calendar)
        spark_builder = IndexBuilder(spark_store, spark_store.calendar, engine="spark", spark=LOCAL)

        # full builds: every index in one job, one scan of the bars
        numpy_results = numpy_builder.build(ids)
        spark_results = spark_builder.build(ids)
        job = spark_builder.last_spark_job
        assert job is not None
        assert (job.indices, job.scans, job.later_scans, job.files) == (22, 1, 0, 1)
        assert job.origin == "duckdb export"
        assert job.bars == spark_store.cursor().execute("SELECT count(*) FROM prices").fetchone()[0]
        assert job.panel_rows < job.bars * len(ids)  # each index gets its own securities only
        for a, b in zip(numpy_results, spark_results, strict=True):
            assert (a.outcome, a.mode, b.engine) == ("built", "full", "spark"), b.reason
            assert (a.trading_days, a.rebalances, a.changes) == (
                b.trading_days,
                b.rebalances,
                b.changes,
            )
        for index_id in ids:
            assert_same_publication(
                published(numpy_store, index_id), published(spark_store, index_id), index_id
            )
            assert spark_store.build_state(index_id).engine == "spark"  # type: ignore[union-attr]
            assert numpy_store.build_state(index_id).engine == "numpy"  # type: ignore[union-attr]
        build_version = spark_store.versions(limit=1)[0]
        assert build_version.kind == "build" and build_version.detail["engine"] == "spark"
        assert published(spark_store, "c-lagged")["announcements"]  # a pending selection

        # a correction of a past day and one more session: restated from the corrected day
        before_correction = T0 + dt.timedelta(hours=1)
        clock.now = T0 + dt.timedelta(days=1)
        correction, fixed_day = _correction(market[1])
        for store in (numpy_store, spark_store):
            ingest(store, market[0].slice(0, 0), correction)
        numpy_results = numpy_builder.build(ids)
        spark_results = spark_builder.build(ids)
        modes = {r.mode for r in spark_results}
        assert "restated" in modes, modes
        for a, b in zip(numpy_results, spark_results, strict=True):
            assert (a.mode, a.start_date, a.restated_from, a.restated_days) == (
                b.mode,
                b.start_date,
                b.restated_from,
                b.restated_days,
            ), a.index_id
            assert not b.failed, b.reason
        for index_id in ids:
            assert_same_publication(
                published(numpy_store, index_id), published(spark_store, index_id), index_id
            )
        assert min(r.start_date for r in spark_results if r.start_date) >= fixed_day

        # as of a moment before the correction: the superseded versions, point in time
        point = ["c-company", "c-buffered", "ew100", "mcap50-ucits"]
        numpy_builder.build(point, as_of=before_correction)
        spark_builder.build(point, as_of=before_correction)
        job = spark_builder.last_spark_job
        assert job is not None and job.files == 2  # the current versions and the history
        for index_id in point:
            key = result_key(index_id, before_correction, None)
            a = published(numpy_store, key, index_id, as_of=before_correction)
            b = published(spark_store, key, index_id, as_of=before_correction)
            assert_same_publication(a, b, key)
    finally:
        for store in stores.values():
            store.close()


def test_build_all_on_the_lake_through_the_cli_equals_numpy(
    spark: Any,
    market: tuple[pa.Table, pa.Table],
    numpy_published: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "lake-store"
    store = open_store("iceberg", folder, clock=Clock(T0))
    try:
        _prepare(store, *market)
    finally:
        store.close()
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "iceberg")
    monkeypatch.setenv("INDEX_BUILDER_WAREHOUSE", str(warehouse_path(folder)))
    monkeypatch.setenv("INDEX_BUILDER_SPARK_MASTER", LOCAL.master)
    code, out, err = run(tmp_path / "unused.duckdb", "build", "--all", "--engine", "spark")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(numpy_published)
    assert all(line.startswith("built") and "  engine spark  " in line for line in lines), out
    assert "engine: spark" in err.splitlines()
    job_line = next(line for line in err.splitlines() if line.startswith("spark local[2]: "))
    assert "22 indices in one job" in job_line and "(iceberg snapshot " in job_line
    assert ", 1 scan)" in job_line
    assert not (tmp_path / "unused.duckdb").exists()  # the lake backend: no DuckDB file

    lake = open_store("iceberg", folder, builtins=False)
    try:
        assert isinstance(lake, IcebergStore)
        for index_id, expected in numpy_published.items():
            got = published(lake, index_id)
            assert got["state"].engine == "spark"
            assert_same_publication(expected, got, index_id)
        rows = lake.lake_table("index_builds").scan().to_arrow()
        assert set(pc.unique(rows.column("engine")).to_pylist()) == {"spark"}
    finally:
        lake.close()

    # the same command again: nothing to build; JSON records name the engine
    code, out, err = run(
        tmp_path / "unused.duckdb", "build", "--all", "--engine", "spark", "--format", "json"
    )
    assert code == 0, err
    records = json.loads(out)
    assert {r["outcome"] for r in records} == {"unchanged"}
    assert {r["engine"] for r in records} == {"spark"}
