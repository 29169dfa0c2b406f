"""``index-builder migrate [--check]``: forward-only schema migrations and the rollout
gate that says, writing nothing, what a release would change (both backends)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from index_builder.storage.duckdb.store import migrations

from cli_runner import run

NEWEST = max(version for version, _ in migrations())


def _check(db: Path) -> tuple[int, dict[str, object], str]:
    code, out, err = run(db, "migrate", "--check", "-f", "json")
    return code, json.loads(out), err


def test_check_writes_nothing_and_migrate_brings_the_store_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    code, record, _ = _check(db)
    assert code == 1 and record["store_version"] is None
    assert len(record["pending"]) == len(migrations())  # type: ignore[arg-type]
    assert not db.exists()  # the check created nothing

    code, out, err = run(db, "migrate", "-f", "json")
    assert code == 0, err
    done = json.loads(out)
    assert done["up_to_date"] and done["store_version"] == NEWEST
    assert done["applied"] == record["pending"]
    assert "up to date" in err

    code, record, _ = _check(db)
    assert code == 0 and record["pending"] == [] and record["store_version"] == NEWEST


def test_a_store_newer_than_the_release_is_refused_with_the_way_back(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    assert run(db, "migrate")[0] == 0
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'v9999_x')")
    code, record, err = _check(db)
    assert code == 1 and record["newer"] == ["v9999"]
    assert "newer than this release" in err and "restore the backup" in err
    code, out, err = run(db, "migrate")
    assert code == 1 and "newer than this release" in out + err  # nothing opened for writing


def test_a_lake_is_checked_against_the_release_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "iceberg")
    monkeypatch.setenv("INDEX_BUILDER_WAREHOUSE", str(tmp_path / "lake"))
    db = tmp_path / "unused.duckdb"
    code, record, _ = _check(db)
    assert code == 1 and "create table prices" in record["pending"]  # type: ignore[operator]
    assert run(db, "migrate")[0] == 0
    code, record, _ = _check(db)
    assert code == 0 and record["backend"] == "iceberg" and record["pending"] == []
    assert not db.exists()  # the lake backend creates no DuckDB file
