"""Backup and restore of a whole store (storage/backup.py): a built store backed up,
destroyed and restored answers every table and every API read the same; a corrupted
or incomplete backup is refused before anything is written; retention; a backup taken
while a build writes is one snapshot; the daily cycle's backup step."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from index_builder.calendar import get_calendar
from index_builder.engine.definitions import parse_definition
from index_builder.ingest.job import run_ingestion
from index_builder.schedule import CycleConfig, run_daily_cycle
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.storage.backup import (
    BEFORE_RESTORE_SUFFIX,
    MANIFEST,
    STAGING_SUFFIX,
    BackupError,
    list_backups,
    prune_backups,
    restore_backup,
    verify_backup,
    write_backup,
)
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.tables import PERSISTENT_TABLES

from api_helpers import app_without_redis
from integrity import Fingerprint, file_fingerprint, fingerprint
from market_files import PRICE_HEADER, SECURITY_HEADER, bar, security, write_csv

if TYPE_CHECKING:
    from s3_server import S3Server

START = dt.date(2023, 1, 3)
DERIVED = frozenset({"schema_migrations", "calendar_sessions"})
"""Tables a store derives (the code's migrations, the calendar): not backed up."""
LAGGED = {
    "id": "t-lag2",
    "name": "Top 20, effective two sessions after selection",
    "top_n": 20,
    "effective_lag": 2,
}


def _open(path: Path) -> DuckDBStore:
    return DuckDBStore(path, calendar=get_calendar(), threads=2)


def _content(path: Path) -> Fingerprint:
    """Rows and checksum of every persistent table of a closed database file."""
    return file_fingerprint(path, skip=DERIVED)


def _dirty_files(folder: Path) -> tuple[Path, Path]:
    """A small input with rows the ingestion quarantines (bad price, unknown symbol)."""
    securities = write_csv(folder / "sec.csv", SECURITY_HEADER, [security("ZZZA")])
    prices = write_csv(
        folder / "px.csv",
        PRICE_HEADER,
        [
            bar(START, "ZZZA", 10.0),
            bar(START + dt.timedelta(days=1), "ZZZA", -5.0),  # negative close
            bar(START, "NOPE", 12.0),  # not in the securities file
        ],
    )
    return securities, prices


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed database: a synthetic market, quarantined rows, a user definition with an
    effective lag, three indices built and an as-of build."""
    folder = tmp_path_factory.mktemp("built")
    path = folder / "source.duckdb"
    with _open(path) as store:
        ensure_builtins(store)
        run_ingestion(store, "synthetic", {"symbols": 80, "days": 40, "start": START})
        as_of = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        time.sleep(0.01)
        securities, prices = _dirty_files(folder)
        report = run_ingestion(
            store, "file", {"securities": str(securities), "prices": str(prices)}
        )
        assert report.rows_rejected >= 2
        add_definition(store, parse_definition(LAGGED))
        builder = IndexBuilder(store, store.calendar)
        results = builder.build(["ew100", "mcap50-ucits", "t-lag2"])
        assert not [r for r in results if r.failed]
        assert not [r for r in builder.build(["ew100"], as_of=as_of) if r.failed]
        assert store.announcements("t-lag2")  # a selection announced, not yet in force
    return path


def _api_answers(path: Path) -> dict[str, Any]:
    """Every read of the API for the built indices, by request."""
    with _open(path) as store:
        as_of = store.as_of_builds("ew100")[0].as_of
        days = store.built_days("t-lag2")
    assert as_of is not None
    stamp = as_of.isoformat() + "Z"
    requests = ["/indices"]
    for index in ("ew100", "mcap50-ucits", "t-lag2"):
        requests += [
            f"/indices/{index}",
            f"/index-performance?index={index}",
            f"/index-composition?index={index}&date={days[len(days) // 2]}",
            f"/index-composition?index={index}",
            f"/composition-changes?index={index}",
        ]
    requests += [
        "/index-composition/next?index=t-lag2",  # pro forma: the announced selection
        f"/index-performance?index=ew100&as_of={stamp}",
        f"/index-composition?index=ew100&as_of={stamp}",
        f"/composition-changes?index=ew100&as_of={stamp}",
    ]
    answers: dict[str, Any] = {}
    with app_without_redis(path) as client:
        for request in requests:
            response = client.get(request)
            answers[request] = (response.status_code, response.json())
    assert {r: s for r, (s, _) in answers.items() if s != 200} == {}, answers
    return answers


def test_backup_destroy_restore_gives_every_table_and_every_answer_back(
    built: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source.duckdb"
    shutil.copy(built, source)
    answers = _api_answers(source)
    before = _content(source)
    with _open(source) as store:
        manifest = write_backup(store, tmp_path / "backups")
    assert set(manifest.tables) == set(PERSISTENT_TABLES)
    assert {t: manifest.tables[t].rows for t in PERSISTENT_TABLES} == {
        t: before[t][0] for t in PERSISTENT_TABLES
    }
    assert before["quarantine"][0] >= 2 and before["index_announcements"][0] > 0
    source.unlink()  # destroyed

    target = tmp_path / "restored" / "index_builder.duckdb"
    with _open(target) as store:
        ensure_builtins(store)  # what every command does to a new database
        restored = restore_backup(tmp_path / "backups", store)  # the newest backup in it
        assert restored == manifest
        run_id = run_ingestion(store, "synthetic", {"symbols": 5, "days": 2}).run_id
    assert run_id == max(r for r in _column(target, "ingest_runs", "run_id")) == 3
    assert not (tmp_path / "restored" / ("index_builder.duckdb" + STAGING_SUFFIX)).exists()

    # compare the restored store as it was restored (before the ingestion above)
    again = tmp_path / "again.duckdb"
    with _open(again) as store:
        restore_backup(manifest.location, store)
    after = _content(again)
    kept = [t for t in PERSISTENT_TABLES if t != "versions"]
    assert {t: after[t] for t in kept} == {t: before[t] for t in kept}
    assert after["versions"][0] == before["versions"][0] + 1  # the restore is a version
    assert _api_answers(again) == answers


def _column(path: Path, table: str, column: str) -> list[Any]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [r[0] for r in con.execute(f'SELECT "{column}" FROM "{table}"').fetchall()]
    finally:
        con.close()


def test_manifest_names_every_table_file_checksum_and_source_version(
    built: Path, tmp_path: Path
) -> None:
    with _open(built) as store:
        manifest = write_backup(store, tmp_path)
        run_id = store.latest_run_id()
        newest = store.versions(limit=1)[0].version_id
    counter = _column(built, "build_version_counter", "value")
    folder = Path(manifest.location)
    assert folder.parent == tmp_path
    assert folder.name.endswith(f"-run{run_id}-build{counter[0]}")
    data = json.loads((folder / MANIFEST).read_text())
    assert data["format_version"] == 1 and data["backend"] == "duckdb" and data["consistent"]
    assert data["source_version"] == {
        "label": f"run{run_id}-build{counter[0]}",
        "ingest_run_id": run_id,
        "build_version": counter[0],
        "version_id": newest,
    }
    assert list(data["tables"]) == list(PERSISTENT_TABLES)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MANIFEST, *(f"{t}.parquet" for t in PERSISTENT_TABLES)]
    )
    prices = data["tables"]["prices"]
    assert prices["file"] == "prices.parquet"
    assert prices["bytes"] == (folder / "prices.parquet").stat().st_size
    assert len(prices["sha256"]) == 64
    assert verify_backup(folder) == manifest


# ---------------------------------------------------------------------------- refusals
def _flip_byte(folder: Path) -> None:
    path = folder / "prices.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    path = folder / "index_levels.parquet"
    path.write_bytes(path.read_bytes()[:-100])


def _edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = json.loads((folder / MANIFEST).read_text())
        change(data)
        (folder / MANIFEST).write_text(json.dumps(data))

    return edit


def _wrong_rows(data: dict[str, Any]) -> None:
    data["tables"]["securities"]["rows"] += 1


def _future_format(data: dict[str, Any]) -> None:
    data["format_version"] = 2


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped byte": (_flip_byte, "table prices: checksum mismatch"),
    "truncated file": (_truncate, "table index_levels: index_levels.parquet is"),
    "deleted manifest": (lambda f: (f / MANIFEST).unlink(), f"no {MANIFEST}: the backup is"),
    "wrong row count": (
        _edit_manifest(_wrong_rows),
        "table securities: securities.parquet holds 81 rows, the manifest says 82",
    ),
    "missing file": (
        lambda f: (f / "index_spells.parquet").unlink(),
        "table index_spells: file index_spells.parquet is missing",
    ),
    "unknown format": (_edit_manifest(_future_format), "unknown format version 2"),
}


@pytest.fixture(scope="module")
def backup(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good backup folder of the built store."""
    with _open(built) as store:
        return Path(write_backup(store, tmp_path_factory.mktemp("good")).location)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupted_backup_is_refused_and_the_target_is_untouched(
    backup: Path, tmp_path: Path, corruption: str
) -> None:
    damage, message = CORRUPTIONS[corruption]
    folder = tmp_path / backup.name
    shutil.copytree(backup, folder)
    damage(folder)
    target = tmp_path / "target.duckdb"
    with _open(target) as store:
        ensure_builtins(store)
        run_ingestion(store, "synthetic", {"symbols": 5, "days": 3})
    before = _content(target)
    stat = target.stat()

    with pytest.raises(BackupError) as refused:
        verify_backup(folder)
    assert message in refused.value.message and "\n" not in refused.value.message
    with _open(target) as store, pytest.raises(BackupError) as refused:
        restore_backup(folder, store, force=True)
    assert message in refused.value.message
    assert _content(target) == before and target.stat().st_size == stat.st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, target.name])


def test_restore_refuses_a_store_holding_data_unless_forced(backup: Path, tmp_path: Path) -> None:
    target = tmp_path / "busy.duckdb"
    with _open(target) as store:
        ensure_builtins(store)
        run_ingestion(store, "synthetic", {"symbols": 5, "days": 3})
        add_definition(store, parse_definition({"id": "mine", "name": "m", "top_n": 3}))
    busy = _content(target)
    with _open(target) as store:
        with pytest.raises(BackupError) as refused:
            restore_backup(backup, store)
        message = refused.value.message
        assert message.startswith("the target store is not empty: securities (5 rows), ")
        assert "index_definitions (1 rows)" in message and "--force" in message
        assert _content_of(store) == {t: busy[t] for t in PERSISTENT_TABLES}

        restore_backup(backup, store, force=True)  # the store is reopened on the new file
        assert store.get_definition("mine") is None and store.build_state("ew100") is not None
    kept = target.with_name(target.name + BEFORE_RESTORE_SUFFIX)
    assert _content(kept) == busy
    with _open(target) as store, pytest.raises(BackupError, match="move it away"):
        restore_backup(backup, store, force=True)  # never overwrites a kept database


def _content_of(store: DuckDBStore) -> Fingerprint:
    found = fingerprint(store.cursor(), skip=DERIVED)
    return {t: found[t] for t in PERSISTENT_TABLES}


def test_a_failed_load_leaves_the_target_and_no_staging_file(backup: Path, tmp_path: Path) -> None:
    folder = tmp_path / backup.name
    shutil.copytree(backup, folder)
    # a backup whose files pass every check but whose rows the store refuses: a
    # security_versions row for a version the schema has no column for
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT *, 1 AS not_a_column FROM '{folder}/securities.parquet')"
        f" TO '{folder}/securities.parquet' (FORMAT parquet)"
    )
    con.close()
    data = json.loads((folder / MANIFEST).read_text())
    blob = (folder / "securities.parquet").read_bytes()
    data["tables"]["securities"].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    (folder / MANIFEST).write_text(json.dumps(data))
    target = tmp_path / "t.duckdb"
    with _open(target) as store:
        ensure_builtins(store)
    before = _content(target)
    with _open(target) as store, pytest.raises(Exception, match="not_a_column"):
        restore_backup(folder, store)
    assert _content(target) == before
    assert not target.with_name(target.name + STAGING_SUFFIX).exists()


# ---------------------------------------------------------------------------- retention
def test_keep_deletes_the_oldest_complete_backups_only(built: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    moments = [dt.datetime(2025, 1, d, 22, 0, tzinfo=dt.UTC) for d in (1, 2, 3)]
    with _open(built) as store:
        first = write_backup(store, dest, now=moments[0])
        second = write_backup(store, dest, now=moments[1])
        incomplete = dest / "20241231T220000.000000Z-run1-build1"  # its writing never ended
        shutil.copytree(Path(first.location), incomplete)
        (incomplete / MANIFEST).unlink()
        (dest / "notes").mkdir()  # not a backup: never touched
        third = write_backup(store, dest, keep=2, now=moments[2])
    assert third.removed == (first.location,)
    assert [m.location for m in list_backups(dest)] == [second.location, third.location]
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [incomplete.name, "notes", Path(second.location).name, Path(third.location).name]
    )
    # the new backup is kept even when its clock says it is older than the others
    with _open(built) as store:
        late = write_backup(store, dest, keep=1, now=moments[0] - dt.timedelta(days=9))
    assert [m.location for m in list_backups(dest)] == [late.location]
    assert prune_backups(dest, 1) == []


# ---------------------------------------------------------------------------- snapshot
def _consistent(folder: Path) -> dict[str, str]:
    """Levels and build states of a backup agree: every result key with levels has a
    build state whose built_through is its last level, and the build counter is at
    least every stored version. Returns {result key: built_through}."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT b.index_id, b.built_through, max(l.date), count(l.date)"
            f" FROM '{folder}/index_builds.parquet' b"
            f" FULL JOIN '{folder}/index_levels.parquet' l USING (index_id)"
            " GROUP BY ALL"
        ).fetchall()
        (top,) = con.execute(
            f"SELECT max(version) <= (SELECT max(value) FROM"
            f" '{folder}/build_version_counter.parquet')"
            f" FROM '{folder}/index_builds.parquet'"
        ).fetchall()[0]
    finally:
        con.close()
    for _key, built_through, last_level, _ in rows:
        assert built_through is not None and built_through == last_level, rows
    assert top in (True, None)
    return {r[0]: str(r[1]) for r in rows}


class _WritesBetweenTables:
    """A store whose ``read_table`` lets another thread build an index (and waits for
    it to commit) once ``index_builds`` was read, before ``index_levels`` is."""

    def __init__(self, store: DuckDBStore, index_id: str) -> None:
        self._store = store
        self._index_id = index_id
        self.built: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_table(self, name: str, batch_rows: int = 1 << 16) -> Any:
        if name == "index_levels":
            worker = threading.Thread(target=self._build)
            worker.start()
            worker.join()
        return self._store.read_table(name, batch_rows)

    def _build(self) -> None:
        for r in IndexBuilder(self._store, self._store.calendar).build([self._index_id]):
            self.built.append(r.outcome)


def test_a_backup_is_one_snapshot_while_a_build_commits(built: Path, tmp_path: Path) -> None:
    path = tmp_path / "live.duckdb"
    shutil.copy(built, path)
    with _open(path) as store:
        racing = _WritesBetweenTables(store, "ew-tech50")
        manifest = write_backup(racing, tmp_path / "b")
        assert racing.built == ["built"] and store.build_state("ew-tech50") is not None
    keys = _consistent(Path(manifest.location))
    assert "ew-tech50" not in keys and "ew100" in keys  # as it was when the backup began


def test_backups_taken_while_builds_run_are_each_consistent(built: Path, tmp_path: Path) -> None:
    path = tmp_path / "live.duckdb"
    shutil.copy(built, path)
    sectors = [
        r[0]
        for r in duckdb.connect(str(built), read_only=True)
        .execute("SELECT index_id FROM index_definitions WHERE index_id LIKE 'ew-sector-%'")
        .fetchall()
    ]
    seen: list[dict[str, str]] = []
    with _open(path) as store:
        worker = threading.Thread(
            target=lambda: IndexBuilder(store, store.calendar).build(["ew-tech50", *sectors])
        )
        worker.start()
        while worker.is_alive() or not seen:
            manifest = write_backup(store, tmp_path / "b")
            seen.append(_consistent(Path(manifest.location)))
        worker.join()
        final = write_backup(store, tmp_path / "b")
    assert {"ew-tech50", *sectors} <= set(_consistent(Path(final.location)))
    sizes = [len(keys) for keys in seen]
    assert sizes == sorted(sizes)  # every backup a moment of the build, in order


# ---------------------------------------------------------------------------- daily cycle
def test_the_daily_cycle_backs_up_after_its_build_step(tmp_path: Path) -> None:
    with _open(tmp_path / "s.duckdb") as store:
        add_definition(store, parse_definition({"id": "t-ew", "name": "t", "top_n": 10}))
        run_ingestion(
            store, "synthetic", {"symbols": 40, "days": 5, "start": dt.date(2024, 11, 20)}
        )
        config = CycleConfig(
            offset=dt.timedelta(minutes=30),
            synthetic_symbols=40,
            retries=0,
            backup_dir=str(tmp_path / "backups"),
            backup_keep=1,
        )
        now = dt.datetime(2024, 11, 27, 21, 30, tzinfo=dt.UTC)
        result = run_daily_cycle(store, config, now=now, sleep=lambda _s: None)
        assert [(s.step, s.status) for s in result.steps] == [
            ("backfill", "skipped"),
            ("ingest", "succeeded"),
            ("build", "succeeded"),
            ("invalidate", "succeeded"),
            ("backup", "succeeded"),
        ]
        (backed_up,) = list_backups(tmp_path / "backups")
        assert result.steps[-1].message is not None
        assert result.steps[-1].message.startswith(
            f"{backed_up.location}: {len(PERSISTENT_TABLES)} tables"
        )
        assert backed_up.tables["index_builds"].rows == 1

        # a backup that cannot be written fails its step (and the cycle) and nothing else
        (tmp_path / "blocked").write_text("a file, not a folder")
        failing = CycleConfig(**{**config.__dict__, "backup_dir": str(tmp_path / "blocked")})
        later = dt.datetime(2024, 11, 29, 18, 30, tzinfo=dt.UTC)
        result = run_daily_cycle(store, failing, now=later, sleep=lambda _s: None)
        assert [(s.step, s.status) for s in result.steps][1:] == [
            ("ingest", "succeeded"),
            ("build", "succeeded"),
            ("invalidate", "succeeded"),
            ("backup", "failed"),
        ]
        assert result.status == "failed" and "blocked" in (result.steps[-1].message or "")
        state = store.build_state("t-ew")
        assert state is not None and state.built_through == dt.date(2024, 11, 29)


# ---------------------------------------------------------------------------- S3
def test_backup_and_restore_through_s3(
    built: Path, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """A real S3 endpoint (moto's server, tests/s3_server.py): the backup's objects are
    the manifest and one Parquet file per table; keep removes the older backup's
    objects; the restore from s3:// gives every table back."""
    dest = f"s3://{s3_bucket}/backups/daily"
    with _open(built) as store:
        first = write_backup(store, dest)
        second = write_backup(store, dest, keep=1)
    assert second.removed == (first.location,)
    assert second.location.startswith(f"{dest}/") and second.location != first.location
    folder = second.location.removeprefix(f"s3://{s3_bucket}/")
    assert sorted(s3_server.keys(s3_bucket)) == sorted(
        [f"{folder}/{MANIFEST}", *(f"{folder}/{t}.parquet" for t in PERSISTENT_TABLES)]
    )
    stored = json.loads(
        s3_server.client().get_object(Bucket=s3_bucket, Key=f"{folder}/{MANIFEST}")["Body"].read()
    )
    assert stored["tables"]["prices"]["rows"] == second.tables["prices"].rows > 0
    assert verify_backup(dest) == second

    target = tmp_path / "from-s3.duckdb"
    with _open(target) as store:
        restore_backup(dest, store)
    before, after = _content(built), _content(target)
    assert after.pop("versions")[0] == before.pop("versions")[0] + 1  # the restore's version
    assert after == before
