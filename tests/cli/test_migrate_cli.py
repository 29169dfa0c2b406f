"""``index-builder migrate-storage``: the whole store copied from DuckDB into the Iceberg
lake (and back), verified table by table; refusals are one line with exit code 2, a
copy that differs from its source is exit code 1 naming the table."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from index_builder.settings import get_settings
from index_builder.storage.factory import make_backend
from index_builder.storage.migrate import BEFORE_MIGRATE_SUFFIX
from index_builder.storage.tables import PERSISTENT_TABLES

from cli_runner import ok, run

READS = (["performance", "-i", "ew100", "-f", "csv"], ["changes", "-f", "json"])
"""Answers that must not depend on the backend serving them."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB store holding a market and a built index (made once, copied per test)."""
    path = tmp_path_factory.mktemp("migrate-template") / "index_builder.duckdb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INDEX_BUILDER_STORAGE", "duckdb")
        ok(path, "ingest", "--symbols", "30", "--days", "15", "--start", "2023-01-03")
        ok(path, "build", "-i", "ew100")
    return path


@pytest.fixture
def db(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the template, the lake in ``tmp_path/lake`` (empty), DuckDB primary."""
    path = tmp_path / "index_builder.duckdb"
    shutil.copy(template, path)
    for name in ("INDEX_BUILDER_CATALOG_URI", "INDEX_BUILDER_FLAGS", "INDEX_BUILDER_FLAGS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INDEX_BUILDER_WAREHOUSE", str(tmp_path / "lake"))
    monkeypatch.setenv("INDEX_BUILDER_LAKE_NAMESPACE", "index_builder")
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "duckdb")
    yield path
    get_settings.cache_clear()


def _counts(db: Path, backend: str) -> dict[str, int]:
    """Rows per table, read from the store itself (not from the command's output)."""
    get_settings.cache_clear()
    settings = get_settings().model_copy(update={"database": db})
    with make_backend(settings, backend) as store:
        return store.table_counts()


def test_migrate_to_the_lake_copies_and_verifies_every_table_and_serves_the_same_answers(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [ok(db, *command) for command in READS]
    out = ok(db, "migrate-storage", "--to", "iceberg")
    lines = out.splitlines()
    for table in PERSISTENT_TABLES:
        (row,) = [line for line in lines if line.split()[:2] == ["│", table]]
        assert row.rstrip(" │").endswith("ok"), row
    assert lines[-1].startswith(f"migrated duckdb {db.resolve()} to iceberg {tmp_path / 'lake'}")
    assert f"{len(PERSISTENT_TABLES)} tables" in lines[-1] and ", verified (version " in lines[-1]
    source = _counts(db, "duckdb")  # the migration's version included

    # compared again, without copying: every table's rows and checksums, as json
    code, out, err = run(db, "migrate-storage", "--to", "iceberg", "--verify-only", "-f", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["table"] for r in rows] == list(PERSISTENT_TABLES)
    assert {r["table"]: r["target_rows"] for r in rows} == {t: source[t] for t in PERSISTENT_TABLES}
    assert all(r["ok"] and r["source_checksum"] == r["target_checksum"] for r in rows)
    assert f"compared duckdb {db.resolve()} with iceberg" in err and "verified" in err
    assert _counts(db, "iceberg") == source

    # a second migration into the lake holding data is refused, nothing written
    code, out, err = run(db, "migrate-storage", "--to", "iceberg")
    assert code == 2 and out == ""
    assert "the target store is not empty: securities (30 rows)" in err
    assert "INDEX_BUILDER_LAKE_NAMESPACE" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(db, "migrate-storage", "--to", "duckdb")
    assert code == 2 and "--to duckdb: the store is on duckdb already" in err
    code, _, err = run(db, "migrate-storage", "--to", "iceberg", "--verify-only", "--force")
    assert code == 2 and "--force" in err

    # the primary switched to the lake (one setting): the same answers
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "iceberg")
    assert [ok(db, *command) for command in READS] == answers

    # and back into an empty DuckDB file: verified, the same answers again
    back = tmp_path / "back.duckdb"
    out = ok(back, "migrate-storage", "--to", "duckdb")
    assert ", verified (version " in out.splitlines()[-1]
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "duckdb")
    assert [ok(back, *command) for command in READS] == answers


def test_a_duckdb_target_holding_data_is_replaced_only_with_force(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(db, "migrate-storage", "--to", "iceberg")
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "iceberg")
    ok(db, "ingest", "--symbols", "30", "--days", "3", "--start", "2023-01-24")  # lake only
    code, out, err = run(db, "migrate-storage", "--to", "duckdb")
    assert code == 2 and out == ""
    assert "the target store is not empty" in err and "--force" in err
    before = _counts(db, "duckdb")
    out = ok(db, "migrate-storage", "--to", "duckdb", "--force")
    kept = db.with_name(db.name + BEFORE_MIGRATE_SUFFIX)
    assert f"the previous target is kept as {kept}" in out
    assert _counts(kept, "duckdb") == before
    assert _counts(db, "duckdb") == _counts(db, "iceberg")
    assert _counts(db, "duckdb")["ingest_runs"] == before["ingest_runs"] + 1


def test_a_table_that_differs_in_the_target_fails_verification_naming_it(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(db, "migrate-storage", "--to", "iceberg")
    get_settings.cache_clear()
    with make_backend(get_settings(), "iceberg") as lake, lake.transaction() as tx:
        tx.execute("UPDATE index_levels SET level = level * 1.0001 WHERE date = '2023-01-10'")
    code, out, err = run(db, "migrate-storage", "--to", "iceberg", "--verify-only")
    assert code == 1
    lines = out.splitlines()
    rows = {
        line.split()[1]: line
        for line in lines
        if line.split()[1:2] in ([t] for t in PERSISTENT_TABLES)
    }
    assert sorted(rows) == sorted(PERSISTENT_TABLES)
    assert [t for t, line in rows.items() if "MISMATCH" in line] == ["index_levels"]
    assert "MISMATCH: content checksum" in rows["index_levels"]
    assert "MISMATCH in index_levels" in lines[-1]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the copy in iceberg")
    assert "differs from the source in index_levels" in last
