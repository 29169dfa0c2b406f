"""Lake upkeep: compaction of the files daily writes leave, expiry of old snapshots.

* :func:`compact` rewrites every partition of a bar table that holds several data
  files (daily appends to ``price_versions`` and ``quarantine``) into one file per
  partition, sorted, as one version; the rows are checked to be the same before the
  version is recorded.
* :func:`expire` removes the snapshots that no version kept needs: a version is kept
  when it is newer than the cutoff, and the newest one always is. Data files no
  remaining snapshot references are deleted, and the commit-log rows of the expired
  versions too. Rollback and reads as of a version do not need old snapshots: they
  work row by row on the run ids every row carries (``index-builder rollback``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from index_builder.errors import InvalidInputError, StorageError
from index_builder.storage.iceberg.arrow import DataFile, FileReplacement, conform
from index_builder.storage.iceberg.commits import COMMITS
from index_builder.storage.iceberg.layout import layout
from index_builder.storage.tables import PERSISTENT_TABLES

if TYPE_CHECKING:
    from index_builder.storage.iceberg.store import IcebergStore

log = logging.getLogger("index_builder.storage.lake")

CHUNK_ROWS = 500_000
_AGE = re.compile(r"^\s*(\d{1,5})\s*([dhwm])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass
class CompactedTable:
    table: str
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0


@dataclass
class ExpiredTable:
    table: str
    snapshots_before: int = 0
    snapshots_expired: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0


@dataclass
class ExpiryReport:
    cutoff: dt.datetime
    versions_kept: int
    commits_removed: int
    tables: list[ExpiredTable] = field(default_factory=list)


def parse_age(text: str, option: str = "--older-than") -> dt.timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``: an age (InvalidInputError naming ``option``)."""
    match = _AGE.match(text)
    if match is None:
        raise InvalidInputError(
            f"{option}: {text!r} is not an age (use e.g. 30d, 12h, 2w or 90m)", field="older_than"
        )
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def compact(store: IcebergStore, min_files: int = 2) -> list[CompactedTable]:
    """Rewrite each bar-table partition holding at least ``min_files`` data files as
    one sorted file per partition (one version, only if anything was rewritten)."""
    report: list[CompactedTable] = []
    with store.writing():
        snapshots: dict[str, int | None] = {}
        files: dict[str, list[DataFile]] = {}
        for name in (t for t in PERSISTENT_TABLES if layout(t).kind == "bars"):
            done = _compact_table(store, name, min_files)
            report.append(done)
            if done.partitions:
                snapshots[name], files[name] = store.bar_state(name)
        if snapshots:
            store.commit_scratch({}, "compact", snapshots, files)
    return report


def _compact_table(store: IcebergStore, name: str, min_files: int) -> CompactedTable:
    groups: dict[Any, list[DataFile]] = defaultdict(list)
    for f in store.bar_files(name):
        groups[f.partition].append(f)
    crowded = {p: fs for p, fs in groups.items() if len(fs) >= min_files}
    result = CompactedTable(name, files_before=sum(len(fs) for fs in groups.values()))
    if not crowded:
        result.files_after = result.files_before
        return result
    table = store.lake_table(name)
    schema = table.schema().as_arrow()
    order = ", ".join(f'"{c}"' for c in layout(name).sort) or "ALL"
    replacement = FileReplacement(table)
    store.mark_dirty()
    cur = store.cursor()
    for partition, group in sorted(crowded.items(), key=lambda item: str(item[0])):
        expected = sum(f.rows for f in group)
        reader = cur.sql(
            f"SELECT * FROM read_parquet($files, union_by_name = true, hive_partitioning = false) "
            f"ORDER BY {order}",  # column names from the layout, never user text
            params={"files": [f.path for f in group]},
        ).to_arrow_reader(CHUNK_ROWS)
        written = 0
        for batch in reader:
            chunk = conform(pa.Table.from_batches([batch]), schema)
            replacement.add(chunk)
            written += chunk.num_rows
        if written != expected:
            raise StorageError(
                f"compaction of {name} partition {partition} read {written} rows, its files "
                f"hold {expected}: nothing was changed"
            )
        result.partitions += 1
        result.rows += written
    replacement.drop(keep=lambda partition: partition not in crowded)
    replacement.commit()
    after = store.bar_state(name)[1]
    result.files_after = len(after)
    return result


def expire(
    store: IcebergStore, older_than: dt.timedelta, *, now: dt.datetime | None = None
) -> ExpiryReport:
    """Expire the snapshots that no version newer than ``now - older_than`` (nor the
    newest version) needs, delete the data files only they referenced, and forget
    the commit-log rows of the versions dropped."""
    moment = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    cutoff = moment - older_than
    with store.writing():
        commits = store.commit_log.all()
        if not commits:
            return ExpiryReport(cutoff, 0, 0)
        kept = [c for c in commits if c.created_at >= cutoff] or [commits[-1]]
        if commits[-1] not in kept:
            kept.append(commits[-1])
        needed: dict[str, set[int]] = defaultdict(set)
        for commit in kept:
            for name, sid in commit.snapshots.items():
                if sid is not None:
                    needed[name].add(sid)
        report = ExpiryReport(cutoff, len(kept), 0)
        cutoff_ms = int(cutoff.replace(tzinfo=dt.UTC).timestamp() * 1000)
        for name in PERSISTENT_TABLES:
            report.tables.append(_expire_table(store, name, needed[name], cutoff_ms))
        first_kept = min(c.commit_id for c in kept)
        with store.commit_log.engine.begin() as con:
            removed = con.execute(
                COMMITS.delete().where(
                    COMMITS.c.namespace == store.commit_log.namespace,
                    COMMITS.c.commit_id < first_kept,
                )
            )
        report.commits_removed = int(removed.rowcount or 0)
    return report


def _expire_table(store: IcebergStore, name: str, needed: set[int], cutoff_ms: int) -> ExpiredTable:
    table = store.lake_table(name)
    table.refresh()
    snapshots = list(table.metadata.snapshots)
    current = table.current_snapshot()
    keep = set(needed) | ({current.snapshot_id} if current else set())
    doomed = [s for s in snapshots if s.snapshot_id not in keep and s.timestamp_ms < cutoff_ms]
    result = ExpiredTable(name, snapshots_before=len(snapshots))
    if not doomed:
        return result
    io = table.io
    before = _data_files(table, snapshots)
    table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in doomed]).commit()
    table.refresh()
    after = _data_files(table, list(table.metadata.snapshots))
    for path, size in before.items():
        if path in after:
            continue
        try:
            io.delete(path)
        except FileNotFoundError:
            continue
        except Exception as exc:  # the next expiry tries again
            log.warning("lake expire: cannot delete %s: %s", path, exc)
            continue
        result.files_deleted += 1
        result.bytes_deleted += size
    for snap in doomed:
        try:
            io.delete(snap.manifest_list)
        except Exception:  # a manifest list already gone, or shared: left alone
            log.debug("lake expire: manifest list %s left", snap.manifest_list)
    result.snapshots_expired = len(doomed)
    return result


def _data_files(table: Any, snapshots: list[Any]) -> dict[str, int]:
    """Every live data file of the given snapshots: path -> size in bytes."""
    files: dict[str, int] = {}
    for snap in snapshots:
        for manifest in snap.manifests(table.io):
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                files[entry.data_file.file_path] = int(entry.data_file.file_size_in_bytes)
    return files
