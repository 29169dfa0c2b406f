"""The Iceberg backend: every persistent table is an Apache Iceberg table in a SQL
catalog (pyiceberg), on a local folder or object storage.

How it works, in one paragraph: the store keeps an in-memory DuckDB database with the
same schema and queries as the DuckDB backend. The small tables (``whole`` and
``results`` in :mod:`.layout`) are read into it from the lake at the version it pins;
the bar tables are views over the pinned snapshots' Parquet files, read where they
lie. A write runs in a DuckDB transaction on that database and, before it commits
there, writes every table it changed to the lake and appends one row to the commit log
(:mod:`.commits`) naming every table's snapshot: the version. Ingestion and rollback,
which change the bar tables, run in a scratch DuckDB database holding the rows they
need (:mod:`.scratch`) and write the changed month partitions back. Other processes
see a version when they next refresh (``INDEX_BUILDER_LAKE_REFRESH_SECONDS``), whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform, MonthTransform

from index_builder.calendar import SessionCalendar
from index_builder.errors import IndexBuilderError, StorageBusyError, StorageError
from index_builder.point_in_time import utc_now
from index_builder.storage.base import (
    IngestReport,
    ProgressCallback,
    RollbackReport,
    StorageCapabilities,
)
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.failures import brief, is_storage_failure
from index_builder.storage.iceberg.arrow import (
    DataFile,
    FileReplacement,
    conform,
    partition_value,
    snapshot_id,
)
from index_builder.storage.iceberg.commits import CommitLog, LakeCommit, WriterLease
from index_builder.storage.iceberg.layout import RESULT_KEY, TableKind, layout
from index_builder.storage.iceberg.location import LakeLocation
from index_builder.storage.iceberg.scratch import ScratchStore, run_in_scratch
from index_builder.storage.tables import COUNTERS, PERSISTENT_TABLES

log = logging.getLogger("index_builder.storage.lake")

CAPABILITIES = StorageCapabilities(
    name="iceberg", transactions=True, concurrent_writers=True, persistent=True
)

LOAD_CHUNK_ROWS = 500_000
"""Rows per chunk a load writes to a bar table (bounded memory)."""

Sums = dict[Any, tuple[int, int]]
"""A table's content fingerprint: per group (None: the whole table) (rows, sum of row hashes)."""

_TYPE = re.compile(r"^[A-Z][A-Z0-9_]*(\(\d+(, ?\d+)?\))?(\[\])?$")
_PATH = re.compile(r"^[A-Za-z0-9/_.:=%+@-]+$")


def tables_of(kind: TableKind) -> tuple[str, ...]:
    """The persistent tables of one kind, in PERSISTENT_TABLES order."""
    return tuple(t for t in PERSISTENT_TABLES if layout(t).kind == kind)


class IcebergStore(DuckDBStore):
    """The lake backend (see the module docstring); the Storage interface of
    :class:`DuckDBStore`, whose queries it runs."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        location: LakeLocation,
        *,
        calendar: SessionCalendar | None = None,
        threads: int | None = None,
        memory_limit: str | None = None,
        ingest_memory_limit: str | None = "1GB",
        clock: Callable[[], dt.datetime] = utc_now,
        lease_seconds: float = 60.0,
        wait_seconds: float = 30.0,
        refresh_seconds: float = 1.0,
    ) -> None:
        super().__init__(
            ":memory:",
            calendar=calendar,
            threads=threads,
            memory_limit=memory_limit,
            ingest_memory_limit=ingest_memory_limit,
            clock=clock,
        )
        self.location = location
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.refresh_seconds = refresh_seconds
        self._catalog: SqlCatalog | None = None
        self._commits: CommitLog | None = None
        self._lease: WriterLease | None = None
        self._tables: dict[str, Table] = {}
        self._head: LakeCommit | None = None
        self._pinned: dict[str, int | None] = {}
        self._sums: dict[str, Sums] = {}
        self._bar_columns: dict[str, list[tuple[str, str]]] = {}
        self._bar_files: dict[str, list[DataFile]] = {}
        self._write_lock = threading.RLock()
        self._write_depth = 0
        self._dirty = True  # unknown until the lease says how the last writer left
        self._version_floor = 0
        self._checked_at = 0.0
        self._lake_open = False
        self._file_system: Any = None
        self.read_failure: str | None = None
        """Why the last refresh from the lake failed (readiness reports it)."""

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> IcebergStore:
        """Open the in-memory database, the catalog and the lake tables (created when
        missing), and read the newest version."""
        if self._lake_open:
            return self
        super().open()
        try:
            self._attach()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._lease is not None and self._lease.held:
            self._lease.release()
        self._lake_open = False
        super().close()

    def describe(self) -> dict[str, str]:
        """Backend, catalog (without password), warehouse and namespace."""
        return self.location.describe()

    @property
    def head(self) -> LakeCommit | None:
        """The version this process reads (None: the lake is empty)."""
        return self._head

    @property
    def catalog(self) -> SqlCatalog:
        if self._catalog is None:
            raise StorageError("the store is not open")
        return self._catalog

    @property
    def commit_log(self) -> CommitLog:
        if self._commits is None:
            raise StorageError("the store is not open")
        return self._commits

    def lake_table(self, name: str) -> Table:
        """The pyiceberg table of a persistent table."""
        return self._tables[name]

    def _attach(self) -> None:
        loc = self.location
        try:
            if loc.local:
                from pathlib import Path

                Path(loc.warehouse).mkdir(parents=True, exist_ok=True)
            if (sqlite := loc.sqlite_file) is not None:
                sqlite.parent.mkdir(parents=True, exist_ok=True)
            self._catalog = SqlCatalog("index_builder", **loc.catalog_properties())
            engine = sa.create_engine(
                loc.catalog_uri,
                **({"connect_args": {"timeout": 30}} if loc.sqlite_file else {}),
                pool_pre_ping=True,
            )
            if loc.sqlite_file is not None:
                _use_wal(engine)
            self._commits = CommitLog(engine, loc.namespace)
            self._commits.create()
            self._lease = WriterLease(
                self._commits,
                self.owner,
                lease_seconds=self.lease_seconds,
                wait_seconds=self.wait_seconds,
            )
            self._catalog.create_namespace_if_not_exists(loc.namespace)
            self._file_system = loc.file_system()
            if self._file_system is not None:
                assert self._con is not None
                self._con.register_filesystem(self._file_system)
            self._ensure_tables()
        except IndexBuilderError:
            raise
        except Exception as exc:
            raise StorageError(f"the lake cannot be opened ({_where(loc)}): {brief(exc)}") from exc
        self._make_bar_views()
        self._lake_open = True
        head = self.commit_log.head()
        if head is not None:
            self._load(head)
            return
        with self.writing():  # a new lake: its first version holds the migrations' seeds
            if self._head is None:
                with super().transaction() as tx:
                    self.persist(tx, operation="create")

    def _ensure_tables(self) -> None:
        """Create the lake tables missing from the catalog; add the columns a newer
        release's migrations added (the in-memory schema is the reference)."""
        cur = self.cursor()
        for name in PERSISTENT_TABLES:
            schema = _arrow_schema(cur, name)
            identifier = (self.location.namespace, name)
            if self.catalog.table_exists(identifier):
                table = self.catalog.load_table(identifier)
                missing = set(schema.names) - {f.name for f in table.schema().fields}
                if missing:
                    with table.update_schema() as update:
                        update.union_by_name(schema)
                    log.info("lake table %s: added columns %s", name, sorted(missing))
            else:
                table = self.catalog.create_table(identifier, schema=schema)
                self._lay_out(table, name)
            self._tables[name] = table

    @staticmethod
    def _lay_out(table: Table, name: str) -> None:
        """Partition spec and sort order of a new table (see :mod:`.layout`)."""
        shape = layout(name)
        with table.transaction() as tx:
            if shape.partition is not None:
                column, how = shape.partition
                with tx.update_spec() as spec:
                    if how == "month":
                        spec.add_field(column, MonthTransform(), f"{column}_month")
                    else:
                        spec.add_identity(column)
            if shape.sort:
                with tx.update_sort_order() as order:
                    for column in shape.sort:
                        order.asc(column, IdentityTransform())

    def _make_bar_views(self) -> None:
        """Replace the in-memory bar tables by views (empty until a version is read)."""
        cur = self.cursor()
        for name in tables_of("bars"):
            columns = [
                (str(row[0]), str(row[1]))
                for row in cur.execute(f'DESCRIBE "{_known(name)}"').fetchall()
            ]
            self._bar_columns[name] = columns
            cur.execute(f'DROP TABLE "{_known(name)}"')
            cur.execute(_bar_view_sql(name, columns, []))
            self._bar_files[name] = []

    def _interrupt_orphan_runs(self) -> None:
        """Nothing to do: an ingestion's run reaches the lake only with its data."""

    # ------------------------------------------------------------------ reading versions
    def refresh_due(self) -> bool:
        """Whether the refresh interval has passed since the last look."""
        return self._lake_open and time.monotonic() - self._checked_at >= self.refresh_seconds

    def refresh(self, *, force: bool = False) -> bool:
        """Read the newest version when another process wrote one (checked at most every
        ``refresh_seconds`` unless ``force``); True when it changed. A failure is
        logged and remembered for readiness; reads go on from the pinned version."""
        if not self._lake_open:
            return False
        now = time.monotonic()
        if not force and now - self._checked_at < self.refresh_seconds:
            return False
        self._checked_at = now
        try:
            head_id = self.commit_log.head_id()
            if head_id == (self._head.commit_id if self._head else 0):
                self.read_failure = None
                return False
            with self._write_lock:  # never swap tables under a write of this process
                self._load(self.commit_log.head())
        except Exception as exc:
            error = _as_storage_error(exc)
            self.read_failure = error.message
            log.error("cannot read the newest lake version: %s", error.message)
            if force:
                raise error from exc
            return False
        self.read_failure = None
        return True

    def _load(self, commit: LakeCommit | None) -> None:
        """Pin ``commit``: read the small tables that differ from the pinned ones into
        memory and point the bar views at its files, in one DuckDB transaction (other
        threads see the old version or the new one, never a mix)."""
        if commit is None:  # nothing written yet: the in-memory seeds are new
            self._sums = {name: {} for name in PERSISTENT_TABLES if layout(name).kind != "bars"}
            return
        snapshots = dict(commit.snapshots)
        changed = [
            name
            for name in PERSISTENT_TABLES
            if snapshots.get(name) != self._pinned.get(name)
            or (layout(name).kind != "bars" and name not in self._sums)
        ]
        incoming: dict[str, pa.Table] = {}
        files: dict[str, list[DataFile]] = {}
        for name in changed:
            sid = snapshots.get(name)
            table = self._tables[name]
            if sid is not None and table.snapshot_by_id(sid) is None:
                table.refresh()  # written by another process since this one read it
            if layout(name).kind == "bars":
                files[name] = self._data_files(name, sid)
            else:
                incoming[name] = self._read_lake_table(name, sid)
        cur = self.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            for name, table in incoming.items():
                cur.execute(f'DELETE FROM "{_known(name)}"')
                if table.num_rows:
                    cur.register("lake_incoming", table)
                    cur.execute(f'INSERT INTO "{_known(name)}" BY NAME SELECT * FROM lake_incoming')
                    cur.unregister("lake_incoming")
            for name, listing in files.items():
                cur.execute(_bar_view_sql(name, self._bar_columns[name], [f.path for f in listing]))
            _reset_sequences(cur)
            sums = {name: _fingerprint(cur, name) for name in incoming}
            cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise
        self._bar_files.update(files)
        self._sums.update(sums)
        self._pinned = snapshots
        self._head = commit
        self._version_floor = _newest_version(cur)
        with self._lock:
            self._master = None

    def _read_lake_table(self, name: str, snapshot_id: int | None) -> pa.Table:
        """A small table at a snapshot (empty when None)."""
        if snapshot_id is None:
            return pa.table({})
        return self._tables[name].scan(snapshot_id=snapshot_id).to_arrow()

    def _data_files(self, name: str, snapshot_id: int | None) -> list[DataFile]:
        """Every data file of a snapshot, by partition; a file with row-level deletes
        is refused (this store never writes them: another engine did)."""
        if snapshot_id is None:
            return []
        out: list[DataFile] = []
        for task in self._tables[name].scan(snapshot_id=snapshot_id).plan_files():
            if task.delete_files:
                raise StorageError(
                    f"lake table {name} has row-level delete files (written by another "
                    "engine), which this store does not read"
                )
            path = self.location.data_path(task.file.file_path)
            if not _PATH.match(path):
                raise StorageError(f"lake table {name}: unexpected data file name {path!r}")
            out.append(
                DataFile(path, partition_value(task.file.partition), int(task.file.record_count))
            )
        return sorted(out, key=lambda f: (f.partition is None, f.partition or 0, f.path))

    def bar_files(self, name: str) -> list[DataFile]:
        """The pinned data files of a bar table (what its view reads)."""
        return list(self._bar_files.get(name, []))

    def bar_partition_rows(self, name: str) -> dict[int, int]:
        """Rows per partition (months since 1970-01) of a bar table's pinned files."""
        rows: dict[int, int] = {}
        for f in self._bar_files.get(name, []):
            if f.partition is not None:
                rows[f.partition] = rows.get(f.partition, 0) + f.rows
        return rows

    def bar_view_sql(self, name: str, *, copy: bool = False) -> str:
        """The view over a bar table's pinned files (``copy``: named ``lake_<name>``, for
        a scratch store)."""
        files = [f.path for f in self._bar_files.get(name, [])]
        return _bar_view_sql(name, self._bar_columns[name], files, copy=copy)

    def bar_state(self, name: str) -> tuple[int | None, list[DataFile]]:
        """A bar table's current snapshot and files (after a scratch write committed)."""
        table = self._tables[name]
        table.refresh()
        sid = snapshot_id(table)
        return sid, self._data_files(name, sid)

    # ------------------------------------------------------------------ writing
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this process's write lock and the lake's writer lease, on the newest
        version (re-entrant: nested writes share one hold)."""
        with self._write_lock:
            if self._write_depth == 0 and self._lake_open:
                assert self._lease is not None
                self._lease.acquire()
                self._dirty = not self._lease.found_clean
                try:
                    self._catch_up()
                except BaseException:
                    self._lease.release(clean=False)
                    raise
            self._write_depth += 1
            try:
                yield
            finally:
                self._write_depth -= 1
                if self._write_depth == 0 and self._lease is not None and self._lease.held:
                    self._lease.release(clean=not self._dirty)

    def _catch_up(self) -> None:
        """Under the lease: read the newest version, and undo any table snapshot a
        failed write committed after it (it was never part of a version)."""
        try:
            head = self.commit_log.head()
            if (head.commit_id if head else 0) != (self._head.commit_id if self._head else 0):
                for name, table in self._tables.items():  # another process wrote these
                    if (head.snapshots if head else {}).get(name) != self._pinned.get(name):
                        table.refresh()  # writes start from the table's newest metadata
                self._load(head)
            if not self._dirty:
                return
            for name, table in self._tables.items():
                table.refresh()
                current = table.current_snapshot()
                pinned = self._pinned.get(name)
                if (current.snapshot_id if current else None) == pinned:
                    continue
                log.warning(
                    "lake table %s: snapshot %s was never recorded in a version; back to %s",
                    name,
                    current.snapshot_id if current else None,
                    pinned,
                )
                if pinned is None:
                    table.delete(AlwaysTrue())
                    self._pinned[name] = snapshot_id(table)
                else:
                    with table.manage_snapshots() as manage:
                        manage.set_current_snapshot(pinned)
            self._dirty = False
        except IndexBuilderError:
            raise
        except Exception as exc:
            raise _as_storage_error(exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write: a DuckDB transaction whose changed tables reach the lake, and are
        recorded as one version, before it commits in memory (a failure rolls back
        both: the lake keeps the previous version)."""
        if not self._lake_open or self.in_transaction():  # before the lake is read, or
            with super().transaction() as tx:  # inside a write (it persists at its end)
                yield tx
            return
        with self.writing(), super().transaction() as tx:
            yield tx
            self.persist(tx, operation="write")

    def persist(
        self,
        tx: duckdb.DuckDBPyConnection,
        *,
        operation: str,
        bar_snapshots: dict[str, int | None] | None = None,
        bar_files: dict[str, list[DataFile]] | None = None,
    ) -> LakeCommit | None:
        """Write the tables ``tx`` changed to the lake and record the version (with
        ``bar_snapshots``: the bar tables a scratch write committed already). Nothing
        changed: nothing is recorded."""
        changes = {
            name: self._changed_groups(tx, name)
            for name in PERSISTENT_TABLES
            if layout(name).kind != "bars"
        }
        changes = {name: groups for name, groups in changes.items() if groups}
        if not changes and not bar_snapshots:
            return None
        assert self._lease is not None
        if self._lease.lost:
            raise StorageBusyError(
                "the lake writer lease was taken over by another process during this "
                "write; nothing of it is visible: run it again"
            )
        snapshots = dict(self._pinned)
        snapshots.update(bar_snapshots or {})
        ordered = sorted(changes, key=lambda name: name == "versions")  # versions last
        new_sums: dict[str, Sums] = {}
        self._dirty = True  # until the commit is recorded
        try:
            for name in ordered:
                if name == "versions" and operation != "load":
                    _stamp_versions(tx, snapshots, self._version_floor)
                    changes[name] = self._changed_groups(tx, name)
                new_sums[name] = self._write_table(tx, name, changes[name])
                snapshots[name] = snapshot_id(self._tables[name])
            head = self._head.commit_id if self._head else 0
            commit = self.commit_log.append(head, self.owner, operation, snapshots)
        except CommitFailedException as exc:
            raise StorageBusyError(
                f"a lake table changed under this write ({brief(exc)}): another process "
                "wrote it; nothing of this write is visible: run it again"
            ) from exc
        except IndexBuilderError:
            raise
        except Exception as exc:
            raise _as_storage_error(exc) from exc
        self._dirty = False
        for name, sums in new_sums.items():
            self._sums[name] = sums
        if bar_files:
            for name, listing in bar_files.items():
                tx.execute(_bar_view_sql(name, self._bar_columns[name], [f.path for f in listing]))
            self._bar_files.update(bar_files)
        self._pinned = snapshots
        self._head = commit
        self._version_floor = _newest_version(tx)
        return commit

    def _changed_groups(self, tx: duckdb.DuckDBPyConnection, name: str) -> set[Any]:
        """The groups of a table whose content differs from the pinned version's
        ({None} for a whole table)."""
        now = _fingerprint(tx, name)
        before = self._sums.get(name, {})
        return {g for g in now.keys() | before.keys() if now.get(g) != before.get(g)}

    def _write_table(self, tx: duckdb.DuckDBPyConnection, name: str, groups: set[Any]) -> Sums:
        """Rewrite the changed groups of a small table in the lake (one snapshot); its
        new fingerprint."""
        table = self._tables[name]
        schema = table.schema().as_arrow()
        replacement = FileReplacement(table)
        if layout(name).partition is not None and layout(name).kind == "results":
            keys = sorted(g for g in groups if g is not None)
            replacement.drop(keep=lambda key: key not in groups)
            data = tx.sql(
                f'SELECT * FROM "{_known(name)}" WHERE list_contains($keys, "{RESULT_KEY}") '
                "ORDER BY ALL",
                params={"keys": keys},
            ).to_arrow_table()
        else:
            replacement.drop()
            data = tx.sql(f'SELECT * FROM "{_known(name)}" ORDER BY ALL').to_arrow_table()
        replacement.add(conform(data, schema))
        replacement.commit()
        return _fingerprint(tx, name)

    # ------------------------------------------------------------------ bar writes
    def ingest(
        self,
        securities: pa.Table,
        prices: pa.RecordBatchReader | pa.Table,
        *,
        provider: str,
        params: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Ingest in a scratch store holding the stored bars the input touches, then
        write the changed months back as one version (see :mod:`.scratch`)."""

        def work(store: ScratchStore) -> IngestReport:
            return store.ingest(
                securities, prices, provider=provider, params=params, progress=progress
            )

        report = run_in_scratch(self, "ingest", work, preload="ingest")
        with self._lock:
            self._master = None
        return report

    def quarantine_provider_rejects(
        self, run_id: int, rejects: Sequence[tuple[str, str, str, str, str | None]]
    ) -> None:
        """Quarantine provider failures (appended to the lake's quarantine table)."""
        if not rejects:
            return

        def work(store: ScratchStore) -> None:
            DuckDBStore.quarantine_provider_rejects(store, run_id, rejects)

        run_in_scratch(self, "quarantine", work)

    def mark_dirty(self) -> None:
        """A write is committing table snapshots no version records yet: if it fails,
        the next writer puts the tables back to the recorded version."""
        self._dirty = True

    def rollback_data(self, to_version: int) -> RollbackReport:
        """The DuckDB backend's row-level rollback, run in a scratch store holding the
        rows written after the target run; the changed months are written back as one
        version (a rollback is a new version: it can be rolled back in turn)."""
        target = self.version(to_version)

        def prepare(store: ScratchStore) -> None:
            if target is not None:
                store.preload_rollback(target.data_run_id)

        def work(store: ScratchStore) -> RollbackReport:
            return DuckDBStore.rollback_data(store, to_version)

        report = run_in_scratch(self, "rollback", work, prepare=prepare)
        with self._lock:
            self._master = None
        return report

    def commit_scratch(
        self,
        small: dict[str, pa.Table],
        operation: str,
        bar_snapshots: dict[str, int | None],
        bar_files: dict[str, list[DataFile]],
    ) -> None:
        """Under :meth:`writing`: replace the small tables in memory with a scratch
        write's, and record them with the bar tables it committed as one version."""
        with super().transaction() as tx:
            for name, data in small.items():
                tx.execute(f'DELETE FROM "{_known(name)}"')
                if data.num_rows:
                    tx.register("lake_incoming", data)
                    tx.execute(f'INSERT INTO "{_known(name)}" BY NAME SELECT * FROM lake_incoming')
                    tx.unregister("lake_incoming")
            _reset_sequences(tx)
            self.persist(tx, operation=operation, bar_snapshots=bar_snapshots, bar_files=bar_files)

    def load_tables(self, tables: dict[str, pa.RecordBatchReader | pa.Table]) -> None:
        """Fill an empty lake with the given tables (restore, change of backend), as
        one version: the bar tables are streamed into their partitions in chunks,
        the small ones loaded in memory; any row already stored (but the built-in
        definitions and the build counter of a new store) is an error."""
        unknown = set(tables) - set(PERSISTENT_TABLES)
        if unknown:
            raise ValueError(f"not tables of a store: {', '.join(sorted(unknown))}")
        with self.writing():
            cur = self.cursor()
            for name in tables:
                if name in ("index_definitions", "build_version_counter"):
                    continue
                if cur.execute(f'SELECT count(*) FROM "{_known(name)}"').fetchall()[0][0]:
                    raise StorageError(f"cannot load {name}: the store is not empty")
            snapshots: dict[str, int | None] = {}
            files: dict[str, list[DataFile]] = {}
            self._dirty = True
            try:
                for name in tables_of("bars"):
                    if name in tables:
                        self._stream_into(name, tables[name])
                        snapshots[name], files[name] = self.bar_state(name)
            except IndexBuilderError:
                raise
            except Exception as exc:
                raise _as_storage_error(exc) from exc
            with super().transaction() as tx:
                for name in PERSISTENT_TABLES:
                    if name not in tables or layout(name).kind == "bars":
                        continue
                    tx.execute(f'DELETE FROM "{_known(name)}"')
                    tx.register("lake_incoming", tables[name])
                    tx.execute(f'INSERT INTO "{_known(name)}" BY NAME SELECT * FROM lake_incoming')
                    tx.unregister("lake_incoming")
                _reset_sequences(tx)
                self.persist(tx, operation="load", bar_snapshots=snapshots, bar_files=files)
        with self._lock:
            self._master = None

    def _stream_into(self, name: str, data: pa.RecordBatchReader | pa.Table) -> None:
        """Append rows to an empty bar table in bounded chunks (one snapshot)."""
        table = self._tables[name]
        schema = table.schema().as_arrow()
        batches = data.to_batches() if isinstance(data, pa.Table) else data
        replacement = FileReplacement(table)
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in batches:
            pending.append(batch)
            count += batch.num_rows
            if count >= LOAD_CHUNK_ROWS:
                replacement.add(conform(pa.Table.from_batches(pending), schema))
                pending, count = [], 0
        if pending:
            replacement.add(conform(pa.Table.from_batches(pending), schema))
        replacement.commit()

    # ------------------------------------------------------------------ autocommit writes
    # DuckDBStore runs these as single statements; here each is a (small) version.
    def next_build_version(self) -> int:
        """From a counter in the catalog database, shared by every process (no version
        of the lake for it); the in-memory counter follows and reaches the lake with
        the next write."""
        with self._write_lock:
            cur = self.cursor()
            stored = int(
                cur.execute("SELECT max(value) FROM build_version_counter").fetchall()[0][0] or 0
            )
            value = self.commit_log.next_value("build_version", stored)
            cur.execute("UPDATE build_version_counter SET value = greatest(value, ?)", [value])
            return value

    def pin_base_date(self, index_id: str, base_date: dt.date) -> None:
        with self.transaction():
            super().pin_base_date(index_id, base_date)

    def record_schedule_step(self, step: Any) -> None:
        with self.transaction():
            super().record_schedule_step(step)

    def set_run_outcome(self, run_id: int, status: str, message: str | None) -> None:
        with self.transaction():
            super().set_run_outcome(run_id, status, message)

    def next_cycle_id(self) -> int:
        with self.writing():  # the sequence continues above the newest version's cycles
            return super().next_cycle_id()

    # ------------------------------------------------------------------ health
    def ping(self) -> int:
        """The schema version, after checking that the catalog answers and the pinned
        version's metadata can be read (StorageError otherwise)."""
        if self.write_failure is not None:
            raise StorageError(f"the last write to the lake failed: {self.write_failure}")
        try:
            self.commit_log.head_id()
            table = self._tables.get("ingest_runs")
            if table is not None and not table.io.new_input(table.metadata_location).exists():
                raise StorageError(f"lake metadata {table.metadata_location} is missing")
        except IndexBuilderError:
            raise
        except Exception as exc:
            raise _as_storage_error(exc) from exc
        return super().ping()

    def _storage_error(self, exc: BaseException) -> BaseException:
        """Lake failures (catalog, object store, I/O) are StorageErrors too."""
        if isinstance(exc, StorageBusyError):
            return exc
        if isinstance(exc, IndexBuilderError | duckdb.Error):
            mapped = super()._storage_error(exc)
            if mapped is exc and isinstance(exc, duckdb.Error) and is_storage_failure(exc):
                # reading the lake's files failed (the object store is down): this
                # write stopped before the lake, so nothing is remembered against it
                return _as_storage_error(exc)
            return mapped
        if isinstance(exc, Exception) and is_storage_failure(exc):
            error = _as_storage_error(exc)
            self.write_failure = error.message
            return error
        return exc


# ---------------------------------------------------------------------- helpers
def _use_wal(engine: sa.Engine) -> None:
    """A SQLite catalog in write-ahead-log mode (kept by the file): a commit syncs the
    log once, and readers in other processes never wait for a writer."""
    with engine.connect() as con:
        con.exec_driver_sql("PRAGMA journal_mode=WAL")


def _known(name: str) -> str:
    """A persistent table's name, checked before it is quoted into SQL (never user text)."""
    if name not in PERSISTENT_TABLES:
        raise ValueError(f"{name!r} is not a table of a store")
    return name


def _arrow_schema(cur: duckdb.DuckDBPyConnection, name: str) -> pa.Schema:
    return cur.sql(f'SELECT * FROM "{_known(name)}" LIMIT 0').to_arrow_table().schema


def _fingerprint(cur: duckdb.DuckDBPyConnection, name: str) -> Sums:
    """(rows, sum of row hashes) of a table, per result key for a results table."""
    if layout(name).kind == "results":
        rows = cur.execute(
            f'SELECT "{RESULT_KEY}", count(*), sum(hash(t)::HUGEINT) FROM "{_known(name)}" t '
            "GROUP BY ALL"
        ).fetchall()
        return {key: (int(n), int(h)) for key, n, h in rows}
    n, h = cur.execute(
        f'SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM "{_known(name)}" t'
    ).fetchall()[0]
    return {None: (int(n), int(h))} if n else {}


def _reset_sequences(cur: duckdb.DuckDBPyConnection) -> None:
    """Each counter continues above the largest value stored."""
    for sequence, (table, column) in COUNTERS.items():
        top = cur.execute(f'SELECT coalesce(max("{column}"), 0) FROM "{_known(table)}"').fetchall()
        cur.execute(f"CREATE OR REPLACE SEQUENCE {sequence} START {int(top[0][0]) + 1}")


def _stamp_versions(
    tx: duckdb.DuckDBPyConnection, snapshots: dict[str, int | None], floor: int
) -> None:
    """Record the tables' snapshot ids on the versions this write adds (ids above
    ``floor``, the newest of the version it started from)."""
    tx.execute(
        "UPDATE versions SET snapshots = ? WHERE version_id > ? AND snapshots IS NULL",
        [json.dumps({k: v for k, v in sorted(snapshots.items()) if k != "versions"}), floor],
    )


def _newest_version(cur: duckdb.DuckDBPyConnection) -> int:
    return int(cur.execute("SELECT coalesce(max(version_id), 0) FROM versions").fetchall()[0][0])


def _bar_view_sql(
    name: str, columns: list[tuple[str, str]], files: list[str], *, copy: bool = False
) -> str:
    """The view a bar table is read through: its files at the pinned snapshot, or an
    empty relation of the same columns. File names come from the catalog (checked
    against a strict pattern) and column types from the schema; neither is user text."""
    for column, kind in columns:
        if not _TYPE.match(kind) or not re.match(r"^[a-z_][a-z0-9_]*$", column):
            raise ValueError(f"unexpected column {column} {kind}")
    target = f"lake_{_known(name)}" if copy else _known(name)
    if not files:
        nulls = ", ".join(f'CAST(NULL AS {kind}) AS "{column}"' for column, kind in columns)
        return f'CREATE OR REPLACE VIEW "{target}" AS SELECT {nulls} WHERE false'
    for path in files:
        if not _PATH.match(path):
            raise ValueError(f"unexpected data file name {path!r}")
    listing = ", ".join(f"'{path}'" for path in files)
    cast = ", ".join(f'CAST("{column}" AS {kind}) AS "{column}"' for column, kind in columns)
    return (
        f'CREATE OR REPLACE VIEW "{target}" AS SELECT {cast} FROM read_parquet('
        f"[{listing}], union_by_name = true, hive_partitioning = false)"
    )


def _as_storage_error(exc: BaseException) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    return StorageError(f"the lake cannot be reached: {brief(exc)}")


def _where(location: LakeLocation) -> str:
    info = location.describe()
    return f"catalog {info['catalog']}, warehouse {info['warehouse']}"
