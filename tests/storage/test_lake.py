"""The Iceberg backend's own guarantees, on a local warehouse (real pyiceberg, a
SQLite catalog): whole versions for readers, a failed write leaves nothing behind,
one writer at a time, compaction and expiry keep every answer, nothing else on disk.
(Answers equal to the DuckDB backend's: tests/backends.)"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from index_builder.calendar import get_calendar
from index_builder.errors import StorageBusyError, StorageError
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import ensure_builtins
from index_builder.storage.iceberg import maintenance
from index_builder.storage.iceberg.location import LakeLocation
from index_builder.storage.iceberg.store import IcebergStore
from index_builder.storage.tables import PERSISTENT_TABLES

from crafted import ingest, px, sec
from integrity import fingerprint

CAL = get_calendar()
DAYS = CAL.sessions_between(dt.date(2023, 12, 29), dt.date(2024, 3, 28))
SYMBOLS = [f"S{i:02d}" for i in range(12)]


def _prices(days: list[dt.date], seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        px(day.isoformat(), s, round(10 + rng.random() * 90, 2), shares=1000.0 * (i + 1))
        for day in days
        for i, s in enumerate(SYMBOLS)
    ]


def _open(warehouse: Path, **kwargs: Any) -> IcebergStore:
    return IcebergStore(
        LakeLocation.resolve(str(warehouse), None), calendar=CAL, threads=2, **kwargs
    ).open()


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[IcebergStore]:
    store = _open(tmp_path / "lake")
    ensure_builtins(store)
    yield store
    store.close()


def _fill(store: IcebergStore, tmp_path: Path) -> None:
    """Two ingestions (the second corrects a month) and a build."""
    secs = [sec(s) for s in SYMBOLS]
    ingest(store, tmp_path, secs, _prices(DAYS[:40]), name="first")
    ingest(store, tmp_path, secs, _prices(DAYS[30:], seed=8), name="second")
    (result,) = IndexBuilder(store, CAL).build(["ew100"])
    result.raise_for_failure()


def _content(store: IcebergStore) -> dict[str, Any]:
    return fingerprint(store.cursor(), skip=frozenset({"calendar_sessions", "schema_migrations"}))


def test_the_lake_holds_iceberg_tables_and_no_duckdb_file(
    lake: IcebergStore, tmp_path: Path
) -> None:
    _fill(lake, tmp_path)
    warehouse = tmp_path / "lake"
    for table in PERSISTENT_TABLES:
        assert list((warehouse / "index_builder" / table / "metadata").glob("*.metadata.json"))
    assert list((warehouse / "index_builder" / "prices" / "data").glob("date_month=2024-0*"))
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".duckdb", ".wal")]
    assert lake.describe()["backend"] == "iceberg"


def test_another_process_sees_whole_versions_only(lake: IcebergStore, tmp_path: Path) -> None:
    _fill(lake, tmp_path)
    reader = _open(tmp_path / "lake", refresh_seconds=0)
    try:
        assert _content(reader) == _content(lake)
        pinned = reader.head
        ingest(lake, tmp_path, [sec(s) for s in SYMBOLS], _prices(DAYS[-5:], seed=9), name="third")
        # until it looks, the reader keeps the version it pinned: bars and runs agree
        assert reader.head == pinned
        assert reader.latest_run_id() == 2
        assert reader.cursor().execute("SELECT max(run_id) FROM prices").fetchone() == (2,)
        assert reader.refresh() is True
        assert reader.latest_run_id() == 3
        assert _content(reader) == _content(lake)
    finally:
        reader.close()


def test_a_write_that_fails_half_way_leaves_the_version_before(
    lake: IcebergStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(lake, tmp_path)
    before, head = _content(lake), lake.head
    assert head is not None
    real = lake.commit_log.append

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("the catalog went away")  # after the tables were written

    monkeypatch.setattr(lake.commit_log, "append", crash)
    with pytest.raises(StorageError):
        ingest(lake, tmp_path, [sec(s) for s in SYMBOLS], _prices(DAYS[-3:], seed=3), name="bad")
    assert _content(lake) == before  # memory rolled back
    fresh = _open(tmp_path / "lake")
    try:
        assert fresh.head == head and _content(fresh) == before  # readers never see it
    finally:
        fresh.close()
    monkeypatch.setattr(lake.commit_log, "append", real)
    # the next write puts the tables back to the recorded version before writing
    report = ingest(
        lake, tmp_path, [sec(s) for s in SYMBOLS], _prices(DAYS[-3:], seed=3), name="ok"
    )
    assert report.status == "succeeded"
    for name, table in ((n, lake.lake_table(n)) for n in PERSISTENT_TABLES):
        snap = table.current_snapshot()
        assert lake.head is not None
        assert (snap.snapshot_id if snap else None) == lake.head.snapshots.get(name), name


def test_one_writer_at_a_time(lake: IcebergStore, tmp_path: Path) -> None:
    other = _open(tmp_path / "lake", wait_seconds=0.3, lease_seconds=5)
    try:
        with lake.writing(), pytest.raises(StorageBusyError, match="being written by"):
            other.pin_base_date("ew100", dt.date(2024, 1, 2))
        other.pin_base_date("ew100", dt.date(2024, 1, 2))  # free again
        assert lake.refresh(force=True)
        assert lake.pinned_base_date("ew100") == dt.date(2024, 1, 2)
    finally:
        other.close()


def test_an_expired_lease_is_taken_over(lake: IcebergStore, tmp_path: Path) -> None:
    dead = _open(tmp_path / "lake", lease_seconds=1)
    assert dead._lease is not None
    dead._lease.acquire()
    dead._lease._stop.set()  # a writer that died: its lease is never renewed
    other = _open(tmp_path / "lake", wait_seconds=8, lease_seconds=1)
    try:
        other.pin_base_date("ew100", dt.date(2024, 1, 3))
        assert other.pinned_base_date("ew100") == dt.date(2024, 1, 3)
    finally:
        other.close()


def test_compaction_and_expiry_keep_every_answer(lake: IcebergStore, tmp_path: Path) -> None:
    _fill(lake, tmp_path)
    secs = [sec(s) for s in SYMBOLS]
    for seed in range(3):  # corrections: price_versions gets a file per run
        ingest(lake, tmp_path, secs, _prices(DAYS[35:45], seed=20 + seed), name=f"fix{seed}")
    before = _content(lake)
    crowded = len(lake.bar_files("price_versions"))
    assert crowded >= 3
    report = {t.table: t for t in maintenance.compact(lake)}
    assert report["price_versions"].partitions >= 1
    assert len(lake.bar_files("price_versions")) < crowded
    assert _content(lake) == before
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=1)
    expired = maintenance.expire(lake, dt.timedelta(0), now=later)
    assert expired.versions_kept == 1
    assert sum(t.snapshots_expired for t in expired.tables) > 0
    assert sum(t.files_deleted for t in expired.tables) > 0
    assert _content(lake) == before
    fresh = _open(tmp_path / "lake")
    try:
        assert _content(fresh) == before
        (result,) = IndexBuilder(fresh, CAL).build(["ew100"])  # still writable
        result.raise_for_failure()
    finally:
        fresh.close()


def test_age_parsing() -> None:
    assert maintenance.parse_age("30d") == dt.timedelta(days=30)
    assert maintenance.parse_age("12h") == dt.timedelta(hours=12)
    with pytest.raises(Exception, match="--older-than"):
        maintenance.parse_age("soon")
