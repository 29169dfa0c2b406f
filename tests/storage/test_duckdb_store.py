"""The DuckDB store only (its file, its cursors, its migrations): migrations on open, one
connection with a cursor per thread. What every backend does: tests/backends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from index_builder.errors import StorageError
from index_builder.storage.duckdb.store import DuckDBStore, migrations


def test_open_creates_the_schema_and_migrations_run_once(db_path: Path) -> None:
    with DuckDBStore(db_path) as store:
        assert db_path.exists()
        versions = [v for v, _ in migrations()]
        assert store.schema_version() == max(versions) >= 5
        assert store.applied_migrations() == versions
        tables = {r[0] for r in store.cursor().execute("SHOW TABLES").fetchall()}
        assert {
            "prices",
            "securities",
            "ingest_runs",
            "quarantine",
            "index_levels",
            "index_spells",
            "index_builds",
            "index_definitions",
        } <= tables
    with DuckDBStore(db_path) as store:  # reopening applies nothing twice
        rows = store.cursor().execute("SELECT count(*) FROM schema_migrations").fetchall()
        assert rows[0][0] == len(migrations())


def test_each_thread_gets_its_own_cursor_and_close_closes_them(db_path: Path) -> None:
    store = DuckDBStore(db_path).open()
    seen: list[object] = []

    def work() -> None:
        cur = store.cursor()
        assert cur is store.cursor()  # stable within the thread
        seen.append(cur)
        cur.execute("SELECT count(*) FROM prices").fetchall()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    main = store.cursor()
    assert len({id(c) for c in [*seen, main]}) == 4
    store.close()
    with pytest.raises(StorageError, match="not open"):
        store.cursor()


def test_read_only_open_of_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="database not found"):
        DuckDBStore(tmp_path / "missing.duckdb", read_only=True).open()


def test_build_versions_continue_above_those_of_a_database_from_before_v2(
    db_path: Path,
) -> None:
    with DuckDBStore(db_path) as store:  # simulate a v1 database with builds up to 7
        cur = store.cursor()
        cur.execute("DROP TABLE build_version_counter")
        cur.execute("DELETE FROM schema_migrations WHERE version = 2")
        cur.execute(
            "INSERT INTO index_builds (index_id, version, definition_hash, base_date,"
            " built_through, data_run_id, built_at, duration_ms, warnings)"
            " VALUES ('old', 7, 'h', DATE '2024-01-02', DATE '2024-01-03', 1,"
            " now()::TIMESTAMP, 1.0, '[]')"
        )
    with DuckDBStore(db_path) as store:  # reopening applies v2 again (below the newest)
        assert store.applied_migrations() == [v for v, _ in migrations()]
        assert store.next_build_version() == 8
        assert store.next_build_version() == 9
