"""``warehouse publish``: an incremental merge on keys into DuckDB, PostgreSQL and
fakesnow. A rerun changes nothing (row counts and checksums before and after); a
changed warehouse is repaired row by row; a new build publishes only what changed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import ensure_builtins
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.warehouse.publish import connect, parse_target, table_checksums
from index_builder.warehouse.tables import TABLE_NAMES

from cli_runner import run
from postgres_server import PostgresServer
from warehouse_fixtures import ENGINES, INDICES, Warehouse, engine_url

Opened = Any


def checksums(wh: Warehouse) -> dict[str, str]:
    con = connect(wh.target)
    try:
        return table_checksums(con, wh.schema)
    finally:
        con.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rerun_changes_nothing(
    engine: str, published: Callable[[str], Warehouse], opened: Opened
) -> None:
    wh = published(engine)
    before = checksums(wh)
    again = wh.publish(opened)  # every build already held: skipped
    assert again.published == [] and sorted(again.skipped) == sorted(INDICES)
    full = wh.publish(opened, full=True, checksums=True)  # recomputed and merged
    assert sorted(full.published) == sorted(INDICES)
    assert [(t.inserted, t.updated, t.deleted) for t in full.tables] == [(0, 0, 0)] * len(
        TABLE_NAMES
    )
    assert full.changed == 0
    assert full.checksums == before == checksums(wh)
    assert {t.table: t.rows for t in full.tables} == {
        name: int(value.split(":")[0]) for name, value in before.items()
    }


def test_every_engine_holds_the_same_rows(published: Callable[[str], Warehouse]) -> None:
    """Doubles arrive bit for bit (PostgreSQL's COPY, Snowflake's Parquet bulk load)."""
    sums = [checksums(published(engine)) for engine in ENGINES]
    assert sums[0] == sums[1] == sums[2]
    assert all(not value.startswith("0:") for value in sums[0].values())


@pytest.mark.parametrize("engine", ENGINES)
def test_a_changed_warehouse_is_repaired_row_by_row(
    engine: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    opened: Opened,
) -> None:
    pg = request.getfixturevalue("postgres") if engine == "postgres" else None
    if engine == "snowflake":
        request.getfixturevalue("fakesnow_patch")
    wh = Warehouse(engine, engine_url(engine, tmp_path, pg, f"repair_{engine}"), "repair")
    first = wh.publish(opened, index_ids=["mcap50-ucits", "ew-tech50"])
    assert first.changed > 0
    published = checksums(wh)
    s = wh.schema
    wh.execute(
        f"DELETE FROM {s}.index_levels WHERE index_id = 'mcap50-ucits' AND date = "
        f"(SELECT MAX(date) FROM {s}.index_levels WHERE index_id = 'mcap50-ucits')"
    )
    wh.execute(
        f"UPDATE {s}.index_holdings SET units = units * 2 WHERE index_id = 'mcap50-ucits' "
        f"AND rank = 1 AND effective_date = (SELECT MIN(effective_date) "
        f"FROM {s}.index_holdings WHERE index_id = 'mcap50-ucits')"
    )
    for index_id in ("mcap50-ucits", "ew-tech50"):  # a spell the store does not have
        wh.execute(
            f"INSERT INTO {s}.index_spells (index_id, symbol, valid_from, valid_to) "
            f"VALUES ('{index_id}', 'NOT-A-MEMBER', DATE '2023-02-01', NULL)"
        )
    assert checksums(wh) != published

    skipped = wh.publish(opened, index_ids=["mcap50-ucits"])  # its build is held
    assert skipped.skipped == ["mcap50-ucits"] and skipped.changed == 0

    repaired = wh.publish(opened, index_ids=["mcap50-ucits"], full=True)
    counts = {t.table: (t.inserted, t.updated, t.deleted) for t in repaired.tables}
    assert counts["index_levels"] == (1, 0, 0)
    assert counts["index_holdings"] == (0, 1, 0)
    assert counts["index_spells"] == (0, 0, 1)
    assert repaired.changed == 3
    # ew-tech50 was not published this time: its stray spell is left alone
    stray = wh.query(f"SELECT index_id FROM {s}.index_spells WHERE symbol = ?", ["NOT-A-MEMBER"])
    assert stray == [("ew-tech50",)]
    wh.publish(opened, index_ids=["ew-tech50"], full=True)
    assert checksums(wh) == published


def test_a_new_build_publishes_what_changed(tmp_path: Path, postgres: PostgresServer) -> None:
    """Build through an earlier day, publish (CLI), build the rest, publish again: the
    new days are inserted, the build updated, nothing else rewritten; then a rerun is
    skipped. PostgreSQL and DuckDB targets end with the same rows."""
    db = tmp_path / "store.duckdb"
    with DuckDBStore(db, threads=2) as store:
        ensure_builtins(store)
        run_ingestion(store, "synthetic", {"symbols": 60, "days": 70, "start": dt.date(2023, 1, 3)})
        days = store.trading_days()
        IndexBuilder(store, store.calendar).build(["ew-tech50"], end=days[49])
    targets = [
        f"duckdb:///{tmp_path / 'wh.duckdb'}",
        postgres.create_database("incremental"),
    ]

    def publish(target: str) -> dict[str, Any]:
        code, out, err = run(db, "warehouse", "publish", "--target", target, "-f", "json")
        assert code == 0, err
        return {row["table"]: row for row in json.loads(out)}

    for target in targets:
        first = publish(target)
        assert first["index_levels"]["inserted"] == 50
    with DuckDBStore(db, threads=2) as store:
        IndexBuilder(store, store.calendar).build(["ew-tech50"])
    for target in targets:
        second = publish(target)
        assert (second["index_levels"]["inserted"], second["index_levels"]["updated"]) == (20, 0)
        assert second["index_levels"]["deleted"] == 0
        assert second["index_levels"]["rows"] == 70
        assert second["index_builds"]["updated"] == 1
        assert second["index_definitions"]["updated"] == 0
        assert second["securities"]["inserted"] == second["securities"]["updated"] == 0
        code, out, err = run(db, "warehouse", "publish", "--target", target, "-f", "json")
        assert code == 0
        assert all(r["inserted"] + r["updated"] + r["deleted"] == 0 for r in json.loads(out))
        assert "published 0 indices, skipped 1" in err
    sums = [
        checksums(Warehouse(e, t, "index_builder"))
        for e, t in zip(("duckdb", "postgres"), targets, strict=True)
    ]
    assert sums[0] == sums[1]


def test_targets_are_parsed_and_passwords_never_shown() -> None:
    pg = parse_target("postgresql+psycopg2://u:s3cret@127.0.0.1:5433/wh")
    assert pg.dialect == "postgres" and "s3cret" not in pg.display
    assert pg.params["dsn"] == "postgresql://u:s3cret@127.0.0.1:5433/wh"
    sf = parse_target("snowflake://me:pa%40ss@acct-1/DB?warehouse=WH&role=R")
    assert sf.params == {
        "account": "acct-1",
        "user": "me",
        "database": "DB",
        "password": "pa@ss",
        "warehouse": "WH",
        "role": "R",
    }
    assert parse_target("duckdb:////tmp/x.duckdb").params["path"] == Path("/tmp/x.duckdb")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "mysql://u:pw@h/db"], "--target must be a duckdb:///PATH"),
        (["--target", "duckdb://"], "name the DuckDB file"),
        (["--target", "duckdb:///"], "name the DuckDB file"),
        (["--target", "snowflake://acct"], "snowflake://USER"),
        (["--target", "duckdb:////no/such/folder/w.duckdb"], "does not exist"),
        (["--target", "duckdb:///{db}"], "the store's own database file"),
        (["--target", "duckdb:///{tmp}/w.duckdb", "-i", "nope"], "unknown index 'nope'"),
        (["--target", "duckdb:///{tmp}/w.duckdb", "-i", "ew100-buffer"], "not built yet"),
        (["--target", "duckdb:///{tmp}/w.duckdb", "--schema", "a;b"], "--schema must be"),
    ],
)
def test_bad_targets_exit_2(args: list[str], message: str, market: Path, tmp_path: Path) -> None:
    db = tmp_path / "market.duckdb"
    db.write_bytes(market.read_bytes())
    args = [a.format(db=db, tmp=tmp_path) for a in args]
    code, out, err = run(db, "warehouse", "publish", *args)
    assert code == 2, (out, err)
    assert message in err and "pw@" not in err


def test_an_unreachable_warehouse_exits_1(market: Path, tmp_path: Path) -> None:
    db = tmp_path / "market.duckdb"
    db.write_bytes(market.read_bytes())
    from redis_server import free_port

    url = f"postgresql://u:topsecret@127.0.0.1:{free_port()}/wh"
    code, _, err = run(db, "warehouse", "publish", "--target", url)
    assert code == 1
    assert "cannot connect to the warehouse postgresql://u:***@127.0.0.1" in err
    assert "topsecret" not in err
