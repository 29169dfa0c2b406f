"""``index-builder backup`` and ``restore``: what they print, retention, and one-line
refusals (exit code 2) that leave the database as it was; to and from S3 (moto's
server on a loopback port), into DuckDB and into a lake on S3; an unreachable S3
destination fails in bounded time."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from index_builder.settings import Settings, get_settings
from index_builder.storage.backup import BEFORE_RESTORE_SUFFIX, MANIFEST
from index_builder.storage.factory import make_store
from index_builder.storage.tables import PERSISTENT_TABLES

from cli_runner import ok, run
from integrity import file_fingerprint

if TYPE_CHECKING:
    from s3_server import S3Server

DERIVED = frozenset({"schema_migrations", "calendar_sessions"})


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backup-cli") / "source.duckdb"
    ok(path, "ingest", "--symbols", "60", "--days", "25", "--start", "2023-01-03")
    ok(path, "build", "-i", "ew100")
    return path


def _folders(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())


def test_backup_prints_each_table_and_a_summary(db: Path, tmp_path: Path) -> None:
    out = ok(db, "backup", str(tmp_path))
    (folder,) = _folders(tmp_path)
    assert folder.endswith("-run1-build1")
    lines = out.splitlines()
    assert lines[-1].startswith(
        f"backup written to {tmp_path / folder}: {len(PERSISTENT_TABLES)} tables, "
    )
    assert "(source run1-build1, taken " in lines[-1]
    assert all(any(f" {t} " in line for line in lines) for t in PERSISTENT_TABLES)


def test_backup_json_and_csv_list_every_table_and_nothing_else(db: Path, tmp_path: Path) -> None:
    code, out, err = run(db, "backup", str(tmp_path / "j"), "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["table"] for r in rows] == list(PERSISTENT_TABLES)
    assert set(rows[0]) == {"backup", "table", "rows", "bytes", "file", "sha256"}
    assert "backup written to" in err
    out = ok(db, "backup", str(tmp_path / "c"), "-f", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["table"] for r in table] == list(PERSISTENT_TABLES)
    manifest = json.loads((Path(table[0]["backup"]) / MANIFEST).read_text())
    assert {r["table"]: int(r["rows"]) for r in table} == {
        t: v["rows"] for t, v in manifest["tables"].items()
    }


def test_keep_removes_the_oldest_backups(db: Path, tmp_path: Path) -> None:
    first = ok(db, "backup", str(tmp_path), "-f", "json")
    ok(db, "backup", str(tmp_path), "-f", "json")
    code, _, err = run(db, "backup", str(tmp_path), "--keep", "2", "-f", "json")
    assert code == 0, err
    oldest = json.loads(first)[0]["backup"]
    assert f"removed old backup {oldest}" in err
    assert len(_folders(tmp_path)) == 2 and Path(oldest).name not in _folders(tmp_path)
    code, _, err = run(db, "backup", str(tmp_path), "--keep", "0")
    assert code == 2 and "--keep" in err


def test_restore_into_a_new_database_serves_the_same_answers(db: Path, tmp_path: Path) -> None:
    ok(db, "backup", str(tmp_path / "b"))
    target = tmp_path / "restored.duckdb"
    out = ok(target, "restore", str(tmp_path / "b"))
    assert (
        out.splitlines()[-1].startswith("restored ")
        and f"into duckdb {target}: {len(PERSISTENT_TABLES)} tables" in out
    )
    for command in (["performance", "-i", "ew100", "-f", "csv"], ["changes", "-f", "json"]):
        assert ok(target, *command) == ok(db, *command)
    before = file_fingerprint(db, skip=DERIVED)
    after = file_fingerprint(target, skip=DERIVED)
    assert after.pop("versions")[0] == before.pop("versions")[0] + 1  # the restore's version
    assert after == before


def test_a_corrupted_backup_is_refused_with_one_line_and_no_database(
    db: Path, tmp_path: Path
) -> None:
    ok(db, "backup", str(tmp_path / "b"))
    (folder,) = (tmp_path / "b").iterdir()
    prices = folder / "prices.parquet"
    data = bytearray(prices.read_bytes())
    data[100] ^= 0x01
    prices.write_bytes(bytes(data))
    target = tmp_path / "never.duckdb"
    code, out, err = run(target, "restore", str(folder))
    assert code == 2 and out == ""
    assert err.startswith(f"error: backup {folder} refused: table prices: checksum mismatch")
    assert len(err.strip().splitlines()) == 1
    assert not target.exists() and not target.with_name("never.duckdb.restoring").exists()
    code, _, err = run(target, "restore", str(tmp_path / "nowhere"))
    assert code == 2 and "no such folder" in err and not target.exists()


def test_restore_refuses_a_database_holding_data_unless_forced(db: Path, tmp_path: Path) -> None:
    ok(db, "backup", str(tmp_path / "b"))
    target = tmp_path / "busy.duckdb"
    shutil.copy(db, target)
    code, out, err = run(target, "restore", str(tmp_path / "b"))
    assert code == 2 and out == ""
    assert "the target store is not empty: securities (60 rows)" in err and "--force" in err
    before = file_fingerprint(target)
    ok(target, "restore", str(tmp_path / "b"), "--force")
    kept = target.with_name(target.name + BEFORE_RESTORE_SUFFIX)
    assert file_fingerprint(kept) == before


def test_a_destination_that_cannot_be_written_is_a_storage_error(db: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    code, out, err = run(db, "backup", str(blocked))
    assert code == 1 and out == "" and err.startswith("error: cannot write backup")


# ---------------------------------------------------------------------------- S3
def _table_sums(cur: Any) -> dict[str, tuple[int, int]]:
    """(rows, checksum) of every persistent table but the derived ones and ``versions``
    (a restore adds its own version; a lake fills its snapshot ids), through a cursor."""
    out: dict[str, tuple[int, int]] = {}
    for table in PERSISTENT_TABLES:  # names from the code, never user text
        if table in DERIVED or table == "versions":
            continue
        rows, checksum = cur.execute(
            f'SELECT count(*), coalesce(bit_xor(hash(t)), 0) FROM "{table}" t'
        ).fetchall()[0]
        out[table] = (int(rows), int(checksum))
    return out


def test_backup_to_s3_and_restore_into_duckdb_and_into_a_lake_on_s3(
    db: Path,
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``backup s3://...`` and ``restore s3://...`` against a real S3 endpoint (moto's
    server), reached through INDEX_BUILDER_S3_ENDPOINT alone."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("INDEX_BUILDER_S3_ENDPOINT", s3_server.url)
    reads = [["performance", "-i", "ew100", "-f", "csv"], ["changes", "-f", "json"]]
    expected = [ok(db, *command) for command in reads]
    dest = f"s3://{s3_bucket}/backups/nightly"

    rows = json.loads(ok(db, "backup", dest, "-f", "json"))
    location = rows[0]["backup"]
    assert location.startswith(f"{dest}/") and location.endswith("-run1-build1")
    folder = location.removeprefix(f"s3://{s3_bucket}/")
    assert sorted(s3_server.keys(s3_bucket)) == sorted(
        [f"{folder}/{MANIFEST}", *(f"{folder}/{t}.parquet" for t in PERSISTENT_TABLES)]
    )
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=f"{folder}/{MANIFEST}")["Body"]
    manifest = json.loads(body.read())
    assert {r["table"]: r["rows"] for r in rows} == {
        t: v["rows"] for t, v in manifest["tables"].items()
    }
    assert manifest["tables"]["prices"]["rows"] > 0

    # into a new DuckDB file
    target = tmp_path / "restored.duckdb"
    out = ok(target, "restore", dest)
    assert f"restored {location} into duckdb {target}: {len(PERSISTENT_TABLES)} tables" in out
    assert [ok(target, *command) for command in reads] == expected
    source = duckdb.connect(str(db), read_only=True)
    restored = duckdb.connect(str(target), read_only=True)
    try:
        assert _table_sums(restored) == _table_sums(source)
    finally:
        source.close()
        restored.close()

    # into a new Iceberg lake in the same bucket (no DuckDB file anywhere)
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "iceberg")
    monkeypatch.setenv("INDEX_BUILDER_WAREHOUSE", f"s3://{s3_bucket}/lake")
    monkeypatch.setenv("INDEX_BUILDER_CATALOG_URI", f"sqlite:///{tmp_path / 'catalog.db'}")
    unused = tmp_path / "lake-store" / "index_builder.duckdb"
    out = ok(unused, "restore", dest)
    assert f"restored {location} into iceberg s3://{s3_bucket}/lake " in out
    assert [ok(unused, *command) for command in reads] == expected
    assert not unused.parent.exists()
    data = [k for k in s3_server.keys(s3_bucket, "lake/") if k.endswith(".parquet")]
    assert any(k.startswith("lake/index_builder/prices/data/") for k in data)
    get_settings.cache_clear()  # the commands' settings (of this lake) are not kept
    with make_store(Settings()) as lake:  # the lake's tables, read by a new store
        source = duckdb.connect(str(db), read_only=True)
        try:
            assert _table_sums(lake.cursor()) == _table_sums(source)
        finally:
            source.close()


@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_an_unreachable_s3_destination_fails_in_bounded_time(
    db: Path,
    s3_server: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    outage: str,
) -> None:
    """Each request waits INDEX_BUILDER_S3_TIMEOUT_SECONDS at most, twice: a hung
    endpoint fails the backup in seconds (exit 1, one line), not after minutes of
    retries."""
    timeout = 1.0
    monkeypatch.setenv("INDEX_BUILDER_S3_TIMEOUT_SECONDS", str(timeout))
    if outage == "refused":
        s3_server.stop()
    else:
        s3_server.hang()
    try:
        started = time.monotonic()
        code, out, err = run(db, "backup", f"s3://{s3_bucket}/backups", "-f", "json")
        seconds = time.monotonic() - started
    finally:
        s3_server.start()
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith(f"error: cannot write backup s3://{s3_bucket}/backups/")
    # the failed write and the removal of what it left: a few requests of two attempts
    assert seconds < 6 * timeout + 3, seconds
    assert s3_server.keys(s3_bucket) == []
