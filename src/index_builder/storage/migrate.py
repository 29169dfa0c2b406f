"""Copy a whole store to the other backend and verify the copy (``index-builder
migrate-storage``): the first step of moving between DuckDB and the Iceberg lake, and
how a shadow store that diverged is brought back in step (docs/operations.md).

* **Refused unless empty**: the target must hold nothing but what a new store holds
  (the rule of a restore, :func:`~index_builder.storage.backup.held_tables`);
  :class:`MigrationRefused` (exit code 2) names its tables and nothing is written.
  ``force`` replaces a DuckDB target holding data: the copy is made and verified in
  ``<db>.migrating`` and only then renamed over it, the old file kept as
  ``<db>.before-migrate``. A lake target holding data is refused even with ``force``:
  use an empty catalog namespace (``INDEX_BUILDER_LAKE_NAMESPACE``) or warehouse.
* **A version first**: the migration is recorded in the source as a version (kind
  ``restore``, ``detail.migration`` naming both stores) before the copy is read, so
  the copy holds it too: both stores then hold exactly the same versions and hand
  out the same ids next (what a shadow store compares).
* **One snapshot, bounded memory**: every table is read inside one snapshot of the
  source (:meth:`DuckDBStore.snapshot`) and streamed batch by batch into a Parquet
  file of a temporary folder (``spool_dir``), then loaded from those files with the
  target's ``load_tables`` (all or nothing; one version of a lake).
* **Verified**: every table's row count and content checksum (the backup's: over the
  rows' text, so the same whatever each backend's column types) are computed on
  both stores, each inside its own snapshot; :attr:`MigrationReport.ok` is false on
  any difference, and the target is then not to be used.
* **Compared only** (:func:`verify_stores`, ``--verify-only``): the same comparison
  without a copy, leaving out the columns each backend stamps itself
  (:data:`~index_builder.storage.tables.STAMPED_COLUMNS`): two stores that took the
  same writes (a shadow) compare equal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from index_builder.errors import IndexBuilderError, StorageError
from index_builder.storage.backup import (
    _checksum,
    _first_line,
    _fsync,
    _remove_database,
    _storage_errors,
    _wal,
    held_tables,
)
from index_builder.storage.base import ProgressCallback
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.tables import PERSISTENT_TABLES, STAMPED_COLUMNS

log = logging.getLogger("index_builder.migrate")

STAGING_SUFFIX = ".migrating"
BEFORE_MIGRATE_SUFFIX = ".before-migrate"
BATCH_ROWS = 1 << 16


class MigrationRefused(IndexBuilderError):
    """A migration refused before anything was written (the target holds data, or the
    source and the target are the same store)."""

    code = "migration-refused"
    http_status = 422


@dataclass(frozen=True)
class TableCheck:
    """One table of a migration: rows and content checksum on both sides."""

    table: str
    source_rows: int
    target_rows: int | None
    source_checksum: str
    target_checksum: str | None
    problem: str | None = None
    """Why the target's side could not be read (a missing table or column)."""

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and self.source_rows == self.target_rows
            and self.source_checksum == self.target_checksum
        )

    def as_row(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "source_checksum": self.source_checksum,
            "target_checksum": self.target_checksum,
            "ok": self.ok,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class MigrationReport:
    """What a migration copied and how the copy compared with the source."""

    source: dict[str, str]
    target: dict[str, str]
    tables: tuple[TableCheck, ...]
    version_id: int | None
    """The version recording the migration (in both stores)."""
    seconds: float
    replaced: str | None = None
    """``force``: where the target's previous database file was kept."""
    copied: bool = True
    """False: only compared (:func:`verify_stores`), nothing copied."""

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.source_rows for t in self.tables)

    @property
    def mismatched(self) -> list[str]:
        return [t.table for t in self.tables if not t.ok]


def migrate_store(
    source: DuckDBStore,
    target: DuckDBStore,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    spool_dir: Path | None = None,
) -> MigrationReport:
    """Copy every table of ``source`` (open) into ``target`` (open, empty unless
    ``force`` on a DuckDB file), then verify it (see the module docstring)."""
    step = progress or (lambda _msg: None)
    started = time.perf_counter()
    source_info, target_info = source.describe(), target.describe()
    if source_info == target_info:
        raise MigrationRefused("the source and the target are the same store", field="to")
    replace = _check_target(target, force=force)
    version_id = source.record_restore(
        {
            "migration": {
                "from": dict(source_info),
                "to": dict(target_info),
                "tool": "index-builder migrate-storage",
            }
        }
    )
    log.info(
        "migrating %s to %s (version %d)", _label(source_info), _label(target_info), version_id
    )
    with tempfile.TemporaryDirectory(prefix="index-builder-migrate-", dir=spool_dir) as folder:
        files = _spool(source, Path(folder), step)
        log.info("writing the copy into %s", _label(target_info))
        if replace:
            assert isinstance(target.path, Path)
            checks, kept = _replace_duckdb(source, target, files, step)
        else:
            _load(target, files, step)
            checks, kept = verify_copy(source, target, progress=step), None
    return _report(
        MigrationReport(
            source=source_info,
            target=target_info,
            tables=tuple(checks),
            version_id=version_id,
            seconds=time.perf_counter() - started,
            replaced=kept,
        )
    )


def verify_stores(
    source: DuckDBStore, target: DuckDBStore, *, progress: ProgressCallback | None = None
) -> MigrationReport:
    """Compare two open stores table by table without copying anything
    (``migrate-storage --verify-only``): after a migration, or before switching the
    primary while both stores take the writes (shadow storage). The columns each
    backend stamps itself are left out (:data:`STAMPED_COLUMNS`)."""
    started = time.perf_counter()
    source_info, target_info = source.describe(), target.describe()
    if source_info == target_info:
        raise MigrationRefused("the source and the target are the same store", field="to")
    checks = verify_copy(source, target, progress=progress, skip_stamped=True)
    return _report(
        MigrationReport(
            source=source_info,
            target=target_info,
            tables=tuple(checks),
            version_id=None,
            seconds=time.perf_counter() - started,
            copied=False,
        )
    )


def _report(report: MigrationReport) -> MigrationReport:
    """``report``, logged: verified, or the tables that differ."""
    done = "migrated %s to %s" if report.copied else "compared %s with %s"
    source, target = _label(report.source), _label(report.target)
    if report.ok:
        log.info(
            f"{done}: %d tables, %d rows, verified", source, target, len(report.tables), report.rows
        )
    else:
        log.error(
            f"{done}: the target differs in %s and is not to be used",
            source,
            target,
            ", ".join(report.mismatched),
        )
    return report


def _check_target(target: DuckDBStore, *, force: bool) -> bool:
    """Whether the target is to be replaced (``force`` on a DuckDB file holding data);
    :class:`MigrationRefused` when it holds data otherwise."""
    held = held_tables(target)
    if not held:
        return False
    rows = ", ".join(f"{name} ({n} rows)" for name, n in held.items())
    is_file = target.capabilities.name == "duckdb" and str(target.path) != ":memory:"
    if force and is_file:
        before = _before(target.path)
        if before.exists():
            raise MigrationRefused(
                f"{before} exists (kept by an earlier migration): move it away before "
                "replacing a store holding data",
                field="force",
            )
        return True
    if is_file:
        hint = (
            f"; migrate into an empty database (move {target.path} away), or pass --force to "
            f"replace it (it is kept as {_before(target.path)})"
        )
    else:
        hint = (
            "; migrate into an empty lake: another catalog namespace "
            "(INDEX_BUILDER_LAKE_NAMESPACE) or an empty warehouse (--force replaces only a "
            "DuckDB target)"
        )
    raise MigrationRefused(f"the target store is not empty: {rows}{hint}", field="to")


def _spool(source: DuckDBStore, folder: Path, step: ProgressCallback) -> dict[str, Path]:
    """Every table of the source, read inside one snapshot, streamed into
    ``<folder>/<table>.parquet``."""
    files: dict[str, Path] = {}
    total = len(PERSISTENT_TABLES)
    with source.snapshot():
        for i, name in enumerate(PERSISTENT_TABLES, 1):
            path = folder / f"{name}.parquet"
            reader = source.read_table(name, BATCH_ROWS)
            rows = 0
            with (
                _storage_errors(f"cannot write {path}"),
                pq.ParquetWriter(path, reader.schema) as writer,
            ):
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    step(f"reading {name} ({i}/{total}): {rows:,} rows")
            log.info("read %s: %d rows", name, rows)
            files[name] = path
    return files


@contextlib.contextmanager
def _readers(files: dict[str, Path], step: ProgressCallback) -> Iterator[dict[str, Any]]:
    """Each spooled table as a stream of batches (reporting progress as it is read)."""
    total = len(files)

    def stream(i: int, name: str, parquet: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            rows += batch.num_rows
            step(f"writing {name} ({i}/{total}): {rows:,} rows")
            yield batch

    with contextlib.ExitStack() as stack:
        readers: dict[str, Any] = {}
        for i, (name, path) in enumerate(files.items(), 1):
            parquet = stack.enter_context(pq.ParquetFile(path))
            readers[name] = pa.RecordBatchReader.from_batches(
                parquet.schema_arrow, stream(i, name, parquet)
            )
        yield readers


def _load(target: DuckDBStore, files: dict[str, Path], step: ProgressCallback) -> None:
    try:
        with _readers(files, step) as readers:
            target.load_tables(readers)
    except IndexBuilderError:
        raise
    except Exception as exc:  # a backend's own error (schema, types): nothing was loaded
        raise StorageError(f"loading the copy failed: {_first_line(exc)}") from exc


def verify_copy(
    source: DuckDBStore,
    target: DuckDBStore,
    *,
    progress: ProgressCallback | None = None,
    skip_stamped: bool = False,
) -> list[TableCheck]:
    """Every persistent table's row count and content checksum in ``source`` and
    ``target``, each store read inside its own snapshot (the checksum covers the
    source's columns; a column or table the target lacks is a mismatch).
    ``skip_stamped``: the columns each backend stamps itself (:data:`STAMPED_COLUMNS`)
    are left out, to compare two stores that took the same writes (a shadow)."""
    step = progress or (lambda _msg: None)
    log.info("verifying %s against %s", _label(target.describe()), _label(source.describe()))
    con = duckdb.connect(":memory:")
    try:
        mine = _sums(source, con, None, step, "source", skip_stamped=skip_stamped)
        columns = {name: cols for name, (_, _, cols, _) in mine.items()}
        theirs = _sums(target, con, columns, step, "target")
    finally:
        con.close()
    checks = []
    for name in PERSISTENT_TABLES:
        rows, total, _, source_problem = mine[name]
        t_rows, t_total, _, target_problem = theirs[name]
        problem = (
            f"source: {source_problem}"
            if source_problem
            else f"target: {target_problem}"
            if target_problem
            else None
        )
        checks.append(
            TableCheck(
                table=name,
                source_rows=rows or 0,
                target_rows=t_rows,
                source_checksum=_hex(total),
                target_checksum=None if t_total is None else _hex(t_total),
                problem=problem,
            )
        )
    return checks


Sums = dict[str, tuple[int | None, int | None, list[str], str | None]]


def _sums(
    store: DuckDBStore,
    con: duckdb.DuckDBPyConnection,
    columns: dict[str, list[str]] | None,
    step: ProgressCallback,
    side: str,
    *,
    skip_stamped: bool = False,
) -> Sums:
    """(rows, checksum, columns, problem) per table of one store, from one snapshot."""
    out: Sums = {}
    with store.snapshot():
        for i, name in enumerate(PERSISTENT_TABLES, 1):
            step(f"verifying {name} in the {side} ({i}/{len(PERSISTENT_TABLES)})")
            try:
                reader = store.read_table(name, BATCH_ROWS)
            except Exception as exc:
                out[name] = (None, None, [], f"cannot read {name}: {_first_line(exc)}")
                continue
            if columns is not None:
                wanted = columns[name]
            else:
                skipped = STAMPED_COLUMNS.get(name, frozenset()) if skip_stamped else frozenset()
                wanted = [c for c in reader.schema.names if c not in skipped]
            missing = sorted(set(wanted) - set(reader.schema.names))
            if missing:
                reader.close()
                out[name] = (None, None, wanted, f"columns missing: {', '.join(missing)}")
                continue
            rows, total = _checksum(con, reader, wanted)
            out[name] = (rows, total, wanted, None)
    return out


def _replace_duckdb(
    source: DuckDBStore, target: DuckDBStore, files: dict[str, Path], step: ProgressCallback
) -> tuple[list[TableCheck], str | None]:
    """``force`` on a DuckDB target holding data: load into ``<db>.migrating``, verify
    it, and only when it matches rename it over the target (kept as
    ``<db>.before-migrate``); the target is reopened either way."""
    path = Path(target.path)
    staging = path.with_name(path.name + STAGING_SUFFIX)
    before = _before(path)
    _remove_database(staging)
    try:
        with DuckDBStore(staging, calendar=target.calendar) as stage:
            _load(stage, files, step)
            checks = verify_copy(source, stage, progress=step)
    except BaseException:
        _remove_database(staging)
        raise
    if not all(c.ok for c in checks):
        _remove_database(staging)  # the target is left as it was
        return checks, None
    target.close()
    try:
        with _storage_errors(f"cannot replace {path}"):
            os.replace(path, before)
            if _wal(path).exists():
                os.replace(_wal(path), _wal(before))
            os.replace(staging, path)
            if _wal(staging).exists():
                os.replace(_wal(staging), _wal(path))
            _fsync(str(path.parent))
    finally:
        target.open()
    log.warning("migration replaced %s; its previous content is kept as %s", path, before)
    return checks, str(before)


def _before(path: Path) -> Path:
    return path.with_name(path.name + BEFORE_MIGRATE_SUFFIX)


def _hex(total: int | None) -> str:
    """A content checksum as 32 hex digits (the 128-bit sum, two's complement)."""
    return "" if total is None else f"{total & ((1 << 128) - 1):032x}"


def _label(info: dict[str, str]) -> str:
    from index_builder.storage.factory import storage_label

    return storage_label(info)
