"""Backup and restore of a whole store, through any backend's whole-store interface.

A backup is a folder ``DEST/<UTC timestamp>-<source version>/`` (a local folder, or
``s3://bucket/prefix`` through fsspec/s3fs) holding one Parquet file per table of
:data:`~index_builder.storage.tables.PERSISTENT_TABLES` and ``manifest.json``::

    {"format_version": 1, "created_at": "2025-01-02T21:30:00.123456+00:00",
     "backend": "duckdb", "source_version": {"label": "run12-build34",
     "ingest_run_id": 12, "build_version": 34, "version_id": 87}, "schema_version": 12,
     "index_builder_version": "1.0.0", "consistent": true,
     "tables": {"prices": {"rows": 1200, "file": "prices.parquet",
                           "sha256": "9f...", "bytes": 48213}, ...}}

Guarantees:

* **Consistent while serving**: every table is read inside one snapshot of the store
  (:meth:`DuckDBStore.snapshot`: one read transaction; other threads keep writing),
  streamed batch by batch into its Parquet file (never a whole table in memory).
* **Complete or visibly incomplete**: the manifest is written last (atomically on a
  local disk; one PUT on S3), so a folder without one is a backup whose writing never
  finished; retention (``keep``) and restore ignore it.
* **Verified before anything is touched**: a restore reads the manifest and checks
  every file's size, SHA-256 and row count first; a missing file, a checksum or row
  count mismatch or an unknown format version is refused (:class:`BackupError`, one
  line naming the table) and the target is not opened for writing.
* **A version**: the restored store records the restore as a version (kind
  ``restore``, after the check; a DuckDB target's is in the staging file before the
  switch). ``source_version.version_id`` is the newest version of the source (a
  manifest without it, written before versions existed, still reads).
* **Staging, then switch**: a DuckDB target is restored into ``<db>.restoring`` next
  to it, whose tables are then compared with the backup (row counts and content
  checksums), and renamed over the target only then (a target holding data only with
  ``force``; the old file is kept as ``<db>.before-restore``). A backend without
  files (the Iceberg lake) loads into its empty catalog namespace with
  ``load_tables``, which is all or nothing, and is compared the same way afterwards.

A DuckDB backup restores into an Iceberg store and back: the files hold the tables'
Arrow schemas, and ``load_tables`` inserts by column name.

S3 locations use the standard AWS configuration from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for MinIO or another endpoint);
nothing here prints or stores them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from index_builder import __version__
from index_builder.errors import IndexBuilderError, InvalidInputError, StorageError
from index_builder.storage.base import Storage
from index_builder.storage.tables import PERSISTENT_TABLES

log = logging.getLogger("index_builder.backup")

FORMAT_VERSION = 1
"""The manifest format this code writes and reads."""
MANIFEST = "manifest.json"
STAGING_SUFFIX = ".restoring"
BEFORE_RESTORE_SUFFIX = ".before-restore"
BATCH_ROWS = 1 << 16

_STAMP = "%Y%m%dT%H%M%S.%fZ"
_FOLDER = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[A-Za-z0-9._-]+$")
_FILE = re.compile(r"^[A-Za-z0-9_]+\.parquet$")
try:  # s3fs lets some of botocore's errors through (no endpoint, no credentials)
    from botocore.exceptions import BotoCoreError, ClientError

    _REMOTE_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
except ImportError:  # pragma: no cover - s3fs not installed: local folders only
    _REMOTE_ERRORS = ()

_SEED_TABLES = frozenset({"index_definitions", "build_version_counter"})
"""What a fresh store holds before anything is stored (the built-in definitions and
the build counter); ``load_tables`` replaces them, so they do not make a store
non-empty (a user definition does)."""


class BackupError(IndexBuilderError):
    """A backup that cannot be restored (incomplete, corrupted, of an unknown format)
    or a restore refused (the target holds data): nothing was written."""

    code = "backup-refused"
    http_status = 422


@dataclass(frozen=True)
class TableFile:
    """One table of a backup: its Parquet file, rows, size and SHA-256."""

    rows: int
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """What a backup holds (``manifest.json``); ``location`` (where it was written or
    read) and ``removed`` (older backups deleted by ``keep``) are not stored in it."""

    format_version: int
    created_at: dt.datetime
    backend: str
    source_version: dict[str, Any]
    tables: dict[str, TableFile]
    schema_version: int | None = None
    index_builder_version: str = __version__
    consistent: bool = True
    location: str = field(default="", compare=False)
    removed: tuple[str, ...] = field(default=(), compare=False)

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables.values())

    def to_json(self) -> str:
        payload = {
            "format_version": self.format_version,
            "created_at": self.created_at.isoformat(),
            "backend": self.backend,
            "source_version": self.source_version,
            "schema_version": self.schema_version,
            "index_builder_version": self.index_builder_version,
            "consistent": self.consistent,
            "tables": {
                name: {"rows": t.rows, "file": t.file, "sha256": t.sha256, "bytes": t.bytes}
                for name, t in self.tables.items()
            },
        }
        return json.dumps(payload, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, location: str = "") -> Manifest:
        """A manifest from its JSON, or a :class:`BackupError` saying what is wrong."""

        def refuse(why: str) -> BackupError:
            return BackupError(f"backup {location}: {MANIFEST} {why}")

        try:
            data = json.loads(text)
        except ValueError as exc:
            raise refuse(f"is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise refuse("is not a backup manifest (not a JSON object)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise refuse(f"has an unknown format version {version!r} (this version reads 1)")
        try:
            created = dt.datetime.fromisoformat(str(data["created_at"]))
            tables = {
                str(name): TableFile(
                    rows=_count(entry["rows"]),
                    file=str(entry["file"]),
                    sha256=str(entry["sha256"]).lower(),
                    bytes=_count(entry["bytes"]),
                )
                for name, entry in dict(data["tables"]).items()
            }
            source = data.get("source_version") or {}
            if not isinstance(source, dict):
                raise TypeError("source_version is not an object")
            manifest = cls(
                format_version=FORMAT_VERSION,
                created_at=created if created.tzinfo else created.replace(tzinfo=dt.UTC),
                backend=str(data["backend"]),
                source_version=source,
                tables=tables,
                schema_version=data.get("schema_version"),
                index_builder_version=str(data.get("index_builder_version", "")),
                consistent=bool(data.get("consistent", True)),
                location=location,
            )
        except (KeyError, TypeError, ValueError) as exc:
            what = f"field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise refuse(f"is not a backup manifest (missing or malformed {what})") from None
        for name, entry in manifest.tables.items():
            if name not in PERSISTENT_TABLES:
                raise refuse(f"names a table this version does not know: {name!r}")
            if not _FILE.match(entry.file):
                raise refuse(f"names an unsafe file for table {name}: {entry.file!r}")
        return manifest


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


# ---------------------------------------------------------------------------- locations
@dataclass(frozen=True)
class _Location:
    """A folder on a file system: fsspec's (local, s3://...) and its path there."""

    fs: fsspec.AbstractFileSystem
    path: str

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def child(self, *names: str) -> _Location:
        return _Location(self.fs, posixpath.join(self.path, *names))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def __str__(self) -> str:
        return self.path if self.local else str(self.fs.unstrip_protocol(self.path))


def _location(url: str | Path) -> _Location:
    """The folder at ``url``: a local path, or ``s3://bucket/prefix`` (credentials and
    region from the standard AWS environment variables; the endpoint from
    INDEX_BUILDER_S3_ENDPOINT, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; each request
    bounded by INDEX_BUILDER_S3_TIMEOUT_SECONDS, as the lake's)."""
    text = str(url)
    if text.startswith(("s3://", "s3a://")):
        from index_builder.settings import get_settings
        from index_builder.storage.iceberg.location import ObjectStoreOptions, s3_file_system

        settings = get_settings()
        s3 = s3_file_system(
            ObjectStoreOptions.from_environment(settings.s3_endpoint, settings.s3_timeout_seconds)
        )
        return _Location(s3, str(s3._strip_protocol(text)).rstrip("/") or "/")
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as exc:
        raise InvalidInputError(f"cannot use backup location {text!r}: {exc}") from None
    return _Location(fs, str(path).rstrip("/") or "/")


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """File system failures (permission, no space, network, credentials) as a
    :class:`StorageError` (exit code 1) naming what was being done."""
    try:
        yield
    except IndexBuilderError:
        raise
    except (OSError, duckdb.IOException, pa.ArrowException, *_REMOTE_ERRORS) as exc:
        raise StorageError(f"{what}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


class _HashingSink:
    """A write-only file wrapper that hashes and counts what goes through it."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self._target.write(view)
        self.bytes += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:  # the target is closed by its owner
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _fsync(path: str) -> None:
    """Flush a local file (or folder) to the disk: the manifest comes after its files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- backup
def source_version(store: Storage) -> dict[str, Any]:
    """The version of the store's content: the newest ingestion run, the build counter
    and the newest version id (0: none yet), read inside the backup's snapshot.
    ``label`` names the backup folder."""
    run_id = int(store.latest_run_id())
    counter = store.read_table("build_version_counter").read_all().column(0).to_pylist()
    build = max((int(v) for v in counter if v is not None), default=0)
    newest = store.versions(limit=1)
    return {
        "label": f"run{run_id}-build{build}",
        "ingest_run_id": run_id,
        "build_version": build,
        "version_id": newest[0].version_id if newest else 0,
    }


def write_backup(
    store: Storage,
    dest: str | Path,
    *,
    keep: int | None = None,
    batch_rows: int = BATCH_ROWS,
    now: dt.datetime | None = None,
) -> Manifest:
    """Back up every persistent table of ``store`` into a new folder of ``dest``
    (created if missing), from one snapshot, the manifest last; then, with ``keep``,
    delete the complete backups of ``dest`` beyond the ``keep`` newest (never this
    one, never a folder without a manifest)."""
    if keep is not None and keep < 1:
        raise InvalidInputError(f"--keep must be at least 1, got {keep}", field="keep")
    root = _location(dest)
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    snapshot = getattr(store, "snapshot", None)
    if snapshot is None:
        log.warning(
            "the %s backend offers no snapshot: the backup's tables may be read at different "
            "moments",
            store.capabilities.name,
        )
    with snapshot() if snapshot is not None else contextlib.nullcontext():
        version = source_version(store)
        folder = root.child(f"{created.strftime(_STAMP)}-{version['label']}")
        with _storage_errors(f"cannot write backup {folder}"):
            if folder.fs.exists(folder.path):
                raise StorageError(f"backup {folder} exists already")
            if folder.local:  # object stores have no folders (s3fs would create a bucket)
                folder.fs.makedirs(folder.path, exist_ok=True)
        try:
            tables = {
                name: _write_table(folder, name, store.read_table(name, batch_rows))
                for name in PERSISTENT_TABLES
            }
            schema_version = getattr(store, "schema_version", None)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                created_at=created,
                backend=store.capabilities.name,
                source_version=version,
                tables=tables,
                schema_version=int(schema_version()) if callable(schema_version) else None,
                consistent=snapshot is not None,
                location=str(folder),
            )
            _write_manifest(folder, manifest)
        except BaseException:
            _remove_quietly(folder)
            raise
    log.info(
        "backup %s written: %d tables, %d rows, %d bytes",
        folder,
        len(tables),
        manifest.total_rows,
        manifest.total_bytes,
    )
    removed = prune_backups(root, keep, protect=(folder.name,)) if keep else []
    return replace(manifest, removed=tuple(removed))


def _write_table(folder: _Location, name: str, reader: pa.RecordBatchReader) -> TableFile:
    """Stream one table into ``<name>.parquet``, hashing the bytes as they are written."""
    file = f"{name}.parquet"
    target = folder.child(file)
    rows = 0
    with _storage_errors(f"cannot write {target}"):
        with folder.fs.open(target.path, "wb") as raw:
            sink = _HashingSink(raw)
            with pq.ParquetWriter(sink, reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        if folder.local:
            _fsync(target.path)
    return TableFile(rows=rows, file=file, sha256=sink.sha256.hexdigest(), bytes=sink.bytes)


def _write_manifest(folder: _Location, manifest: Manifest) -> None:
    """The manifest, last: on a local disk written aside and renamed (atomic); on an
    object store one PUT (an object appears whole or not at all)."""
    target = folder.child(MANIFEST)
    data = manifest.to_json().encode()
    with _storage_errors(f"cannot write {target}"):
        if folder.local:
            _fsync(folder.path)  # the Parquet files' entries before the manifest's
            partial = folder.child(MANIFEST + ".partial")
            with open(partial.path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial.path, target.path)
            _fsync(folder.path)
        else:
            folder.fs.pipe_file(target.path, data)


def _remove_quietly(folder: _Location) -> None:
    """Remove a backup folder whose writing failed (best effort: without a manifest it
    is incomplete anyway)."""
    try:
        folder.fs.rm(folder.path, recursive=True)
    except Exception as exc:  # best effort: the original error is the one to report
        log.warning("could not remove the incomplete backup %s: %s", folder, _first_line(exc))


def list_backups(dest: str | Path) -> list[Manifest]:
    """The complete backups of ``dest`` (folders named like a backup that hold a
    readable manifest), oldest first."""
    return [m for _, m in _complete_backups(_location(dest))]


def _complete_backups(root: _Location) -> list[tuple[_Location, Manifest]]:
    found: list[tuple[_Location, Manifest]] = []
    with _storage_errors(f"cannot list backups in {root}"):
        root.fs.invalidate_cache(root.path)
        if not root.fs.isdir(root.path):
            return []
        entries = root.fs.ls(root.path, detail=True)
    for entry in entries:
        folder = _Location(root.fs, str(entry["name"]).rstrip("/"))
        if entry.get("type") != "directory" or not _FOLDER.match(folder.name):
            continue
        try:
            text = folder.fs.cat_file(folder.child(MANIFEST).path).decode()
            manifest = Manifest.from_json(text, location=str(folder))
        except (OSError, BackupError, UnicodeDecodeError):
            continue  # incomplete (being written, or its writing failed) or not ours
        found.append((folder, manifest))
    found.sort(key=lambda item: (item[1].created_at, item[0].name))
    return found


def prune_backups(
    dest: str | Path | _Location, keep: int, *, protect: tuple[str, ...] = ()
) -> list[str]:
    """Delete the complete backups of ``dest`` beyond the ``keep`` newest (the folders
    named in ``protect`` are kept and count); returns the folders deleted."""
    if keep < 1:
        raise InvalidInputError(f"--keep must be at least 1, got {keep}", field="keep")
    root = dest if isinstance(dest, _Location) else _location(dest)
    backups = _complete_backups(root)
    kept = [f for f, _ in backups if f.name in protect]
    others = [f for f, _ in backups if f.name not in protect]
    room = max(keep - len(kept), 0)
    doomed = others[: max(len(others) - room, 0)]
    removed = []
    for folder in doomed:
        with _storage_errors(f"cannot remove old backup {folder}"):
            # the manifest first: an interrupted removal leaves an incomplete backup
            folder.fs.rm_file(folder.child(MANIFEST).path)
            folder.fs.rm(folder.path, recursive=True)
        log.info("old backup %s removed (keep %d)", folder, keep)
        removed.append(str(folder))
    return removed


# ---------------------------------------------------------------------------- verify
def verify_backup(src: str | Path) -> Manifest:
    """Read and check a backup without touching any store: the manifest (of ``src``, or
    of the newest complete backup in the folder ``src``), then every table's file:
    present, of the size, SHA-256 and row count the manifest gives. A
    :class:`BackupError` names the first problem (one line)."""
    folder = _backup_folder(_location(src))
    manifest = _read_manifest(folder)
    for name, entry in manifest.tables.items():
        _verify_file(folder, name, entry)
    return manifest


def _backup_folder(src: _Location) -> _Location:
    """``src`` when it holds a manifest; else the newest complete backup in it."""
    with _storage_errors(f"cannot read backup {src}"):
        src.fs.invalidate_cache(src.path)
        if src.fs.exists(src.child(MANIFEST).path):
            return src
        if not src.fs.exists(src.path):
            raise BackupError(f"backup {src}: no such folder")
    backups = _complete_backups(src)
    if backups:
        return backups[-1][0]
    raise BackupError(
        f"backup {src}: no {MANIFEST}: the backup is incomplete (its writing never finished) "
        "or this is not a backup folder"
    )


def _read_manifest(folder: _Location) -> Manifest:
    with _storage_errors(f"cannot read backup {folder}"):
        data = folder.fs.cat_file(folder.child(MANIFEST).path)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BackupError(f"backup {folder}: {MANIFEST} is not text") from None
    return Manifest.from_json(text, location=str(folder))


def _verify_file(folder: _Location, name: str, entry: TableFile) -> None:
    path = folder.child(entry.file)

    def refuse(why: str) -> BackupError:
        return BackupError(f"backup {folder} refused: table {name}: {why}")

    with _storage_errors(f"cannot read backup {folder}"):
        if not folder.fs.exists(path.path):
            raise refuse(f"file {entry.file} is missing")
        size = int(folder.fs.size(path.path))
        if size != entry.bytes:
            raise refuse(
                f"{entry.file} is {size} bytes, the manifest says {entry.bytes} "
                "(truncated or replaced)"
            )
        digest = hashlib.sha256()
        with folder.fs.open(path.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != entry.sha256:
            raise refuse(
                f"checksum mismatch: {entry.file} has SHA-256 {digest.hexdigest()[:16]}..., "
                f"the manifest says {entry.sha256[:16]}... (the file is corrupted)"
            )
        with folder.fs.open(path.path, "rb") as fh:
            try:
                rows = pq.ParquetFile(fh).metadata.num_rows
            except (pa.ArrowException, OSError) as exc:
                raise refuse(
                    f"{entry.file} cannot be read as Parquet: {_first_line(exc)}"
                ) from None
    if rows != entry.rows:
        raise refuse(f"{entry.file} holds {rows} rows, the manifest says {entry.rows}")


# ---------------------------------------------------------------------------- restore
def held_tables(store: Storage) -> dict[str, int]:
    """The tables of ``store`` holding rows a restore would lose (not the built-in
    definitions and the build counter of a fresh store), with their row counts."""
    counts = store.table_counts()
    held = {name: n for name, n in counts.items() if n and name not in _SEED_TABLES}
    if counts.get("index_definitions"):
        builtin = store.read_table("index_definitions").read_all().column("builtin")
        user = sum(1 for flag in builtin.to_pylist() if not flag)
        if user:
            held["index_definitions"] = user
    return {name: held[name] for name in PERSISTENT_TABLES if name in held}


def restore_backup(
    src: str | Path,
    store: Storage,
    *,
    force: bool = False,
    verified: Manifest | None = None,
) -> Manifest:
    """Restore a backup into ``store``, which must be empty (``force``, DuckDB only:
    replace a store holding data, keeping its file as ``<db>.before-restore``).

    The backup is verified first (unless ``verified``, the manifest
    :func:`verify_backup` returned for ``src``); nothing is written when it or the
    target is refused. DuckDB: loaded into ``<db>.restoring``, compared with the
    backup, then renamed over the target (``store`` is reopened on it). Other
    backends: ``load_tables`` into the empty store (all or nothing), then compared.
    """
    manifest = verified if verified is not None else verify_backup(src)
    folder = _location(manifest.location)  # the backup verified (src may be a folder of them)
    held = held_tables(store)
    is_duckdb = store.capabilities.name == "duckdb"
    if held and not (force and is_duckdb):
        rows = ", ".join(f"{name} ({n} rows)" for name, n in held.items())
        hint = (
            "; restore into an empty store, or pass --force to replace it (the old database "
            f"is kept as {getattr(store, 'path', '<db>')}{BEFORE_RESTORE_SUFFIX})"
            if is_duckdb
            else "; restore into an empty catalog namespace"
        )
        raise BackupError(f"the target store is not empty: {rows}{hint}")
    if is_duckdb and str(getattr(store, "path", ":memory:")) != ":memory:":
        _restore_duckdb(folder, manifest, store, replace=bool(held))
    else:
        _load(folder, manifest, store)
        _check_restored(folder, manifest, store)
        _record_restore(store, manifest)
    log.info(
        "backup %s restored: %d tables, %d rows", folder, len(manifest.tables), manifest.total_rows
    )
    return manifest


def _record_restore(store: Storage, manifest: Manifest) -> None:
    """The restore is a version of the restored store (after its check: the store
    holds exactly the backup plus this version)."""
    store.record_restore(
        {
            "backup": manifest.location,
            "backend": manifest.backend,
            "backup_created_at": manifest.created_at.isoformat(),
            "source_version": manifest.source_version,
            "rows": manifest.total_rows,
        }
    )


def _restore_duckdb(
    folder: _Location, manifest: Manifest, store: Storage, *, replace: bool
) -> None:
    """Load into ``<db>.restoring``, compare it with the backup, then rename it over
    the target (keeping a target holding data as ``<db>.before-restore``)."""
    from index_builder.storage.duckdb.store import DuckDBStore

    target = cast(DuckDBStore, store)
    path = target.path
    staging = path.with_name(path.name + STAGING_SUFFIX)
    before = path.with_name(path.name + BEFORE_RESTORE_SUFFIX)
    if replace and before.exists():
        raise BackupError(
            f"{before} exists (kept by an earlier restore): move it away before restoring "
            "over a store holding data"
        )
    _remove_database(staging)
    try:
        with DuckDBStore(staging, calendar=target.calendar) as stage:
            _load(folder, manifest, stage)
            _check_restored(folder, manifest, stage)
            _record_restore(stage, manifest)  # in the file before it replaces the target
    except BaseException:
        _remove_database(staging)
        raise
    target.close()
    try:
        with _storage_errors(f"cannot replace {path}"):
            wal = _wal(path)
            if replace:
                os.replace(path, before)
                if wal.exists():
                    os.replace(wal, _wal(before))
            elif wal.exists():  # an empty store's log: nothing in it is kept
                wal.unlink()
            os.replace(staging, path)
            if _wal(staging).exists():
                os.replace(_wal(staging), _wal(path))
            _fsync(str(path.parent))
    finally:
        target.open()
    if replace:
        log.warning("restore replaced %s; its previous content is kept as %s", path, before)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _remove_database(path: Path) -> None:
    for file in (path, _wal(path)):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


@contextmanager
def _readers(folder: _Location, manifest: Manifest) -> Iterator[dict[str, pa.RecordBatchReader]]:
    """Each table's Parquet file as a stream of batches (open until the block ends)."""
    with ExitStack() as stack, _storage_errors(f"cannot read backup {folder}"):
        readers: dict[str, pa.RecordBatchReader] = {}
        for name, entry in manifest.tables.items():
            fh = stack.enter_context(folder.fs.open(folder.child(entry.file).path, "rb"))
            parquet = pq.ParquetFile(fh)
            readers[name] = pa.RecordBatchReader.from_batches(
                parquet.schema_arrow, parquet.iter_batches(batch_size=BATCH_ROWS)
            )
        yield readers


def _load(folder: _Location, manifest: Manifest, store: Storage) -> None:
    try:
        with _readers(folder, manifest) as readers:
            store.load_tables(dict(readers))
    except IndexBuilderError:
        raise
    except Exception as exc:  # a backend's own error (schema, types): nothing was loaded
        raise StorageError(f"restore of {folder} failed: {_first_line(exc)}") from exc


def _check_restored(folder: _Location, manifest: Manifest, store: Storage) -> None:
    """The restored store holds exactly the backup: every table's row count is the
    manifest's and its content checksum (over the backup's columns) the file's."""
    counts = store.table_counts()
    for name, entry in manifest.tables.items():
        if counts.get(name) != entry.rows:
            raise StorageError(
                f"restore of {folder} failed: table {name} holds {counts.get(name)} rows "
                f"after loading, the backup {entry.rows}"
            )
    con = duckdb.connect(":memory:")
    try:
        with _readers(folder, manifest) as readers:
            for name, reader in readers.items():
                columns = reader.schema.names
                expected = _checksum(con, reader, columns)
                actual = _checksum(con, store.read_table(name), columns)
                if actual != expected:
                    raise StorageError(
                        f"restore of {folder} failed: table {name} differs from the backup "
                        "after loading (content checksum)"
                    )
    finally:
        con.close()


def _checksum(
    con: duckdb.DuckDBPyConnection, reader: pa.RecordBatchReader, columns: list[str]
) -> tuple[int, int]:
    """(rows, order-independent checksum of the rows' text) of ``columns`` of a stream:
    the same for the same values whatever the backend's column types."""
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in sorted(columns))
    texts = ", ".join('CAST("' + c.replace('"', '""') + '" AS VARCHAR)' for c in sorted(columns))
    con.register("checked", reader)
    try:
        rows, total = con.execute(
            f"SELECT count(*), coalesce(sum(hash({texts})::HUGEINT), 0)"
            f" FROM (SELECT {quoted} FROM checked)"
        ).fetchall()[0]
    finally:
        con.unregister("checked")
    return int(rows), int(total)
