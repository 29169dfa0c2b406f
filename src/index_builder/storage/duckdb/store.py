"""The embedded DuckDB backend: market data, ingestion runs and index results.

One :class:`DuckDBStore` per process owns the database connection. Threads get
their own cursor (``store.cursor()``); all are closed when the store closes.
Schema migrations run when the store opens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from index_builder.calendar import SessionCalendar, get_calendar
from index_builder.engine.definitions import IndexDefinition, parse_definition
from index_builder.engine.kernel import Spell
from index_builder.engine.panel import LongBars, MarketPanel, SecurityMaster
from index_builder.errors import (
    ConflictError,
    IndexBuilderError,
    NotFoundError,
    StorageError,
    UnusableInputError,
)
from index_builder.point_in_time import AS_OF_SEPARATOR, as_of_prefix, utc_now
from index_builder.storage.base import (
    AnnouncedConstituent,
    BuildState,
    IngestReport,
    LevelRows,
    ProgressCallback,
    RollbackReport,
    ScheduleStep,
    StorageCapabilities,
    VersionInfo,
)
from index_builder.storage.duckdb.sql import names, query, statements
from index_builder.storage.tables import COUNTERS, PERSISTENT_TABLES

log = logging.getLogger("index_builder.storage")

_PANEL_BATCH_ROWS = 1 << 20

CAPABILITIES = StorageCapabilities(
    name="duckdb", transactions=True, concurrent_writers=False, persistent=True
)


class DuckDBStore:
    """Embedded DuckDB storage (see :class:`index_builder.storage.base.Storage`)."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        path: Path | str,
        *,
        calendar: SessionCalendar | None = None,
        read_only: bool = False,
        threads: int | None = None,
        memory_limit: str | None = None,
        ingest_memory_limit: str | None = "1GB",
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.calendar = calendar or get_calendar()
        self._threads = threads
        self._memory_limit = memory_limit
        self._ingest_memory_limit = ingest_memory_limit
        self._con: duckdb.DuckDBPyConnection | None = None
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._master: SecurityMaster | None = None
        self._clock = clock  # naive UTC; an ingestion run's start is its default known_at
        self._reported_broken: set[str] = set()
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self.write_failure: str | None = None
        """Why the last write failed (disk full, read-only, removed file...), until a
        write succeeds: readiness reports it."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        """Who runs this process's ingestions (``ingest_runs.owner``)."""

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> DuckDBStore:
        """Open the database (creating it and its folder) and run migrations."""
        if self._con is not None:
            return self
        if str(self.path) != ":memory:":
            if self.read_only and not self.path.exists():
                raise StorageError(f"database not found: {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {}
        if self._threads:
            config["threads"] = self._threads
        if self._memory_limit:
            config["memory_limit"] = self._memory_limit
        try:
            self._con = duckdb.connect(str(self.path), read_only=self.read_only, config=config)
        except duckdb.Error as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        self._pin_utc()
        self._identity = _file_identity(self.path)
        if not self.read_only:
            self._migrate()
            self._sync_calendar()
            self._interrupt_orphan_runs()
        return self

    def _pin_utc(self) -> None:
        """Make timestamp casts UTC when DuckDB's ICU extension (time zones) is loaded.

        Without ICU, DuckDB converts TIMESTAMPTZ values at UTC already; with it, at
        the session's time zone. Stored timestamps are UTC either way.
        """
        assert self._con is not None
        loaded = self._con.execute(
            "SELECT count(*) FROM duckdb_extensions() WHERE extension_name = 'icu' AND loaded"
        ).fetchall()[0][0]
        if loaded:
            self._con.execute("SET GLOBAL TimeZone = 'UTC'")

    def close(self) -> None:
        """Close every cursor and the connection."""
        with self._lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
            if self._con is not None:
                self._con.close()
                self._con = None
            self._local = threading.local()

    def __enter__(self) -> DuckDBStore:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the shared connection."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            if self._con is None:
                raise StorageError("the store is not open")
            with self._lock:
                cur = self._con.cursor()
                self._cursors.append(cur)
            self._local.cursor = cur
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction on this thread's cursor; rolled back on error.

        A write the storage refuses (no space, file too large, read-only, permission,
        the file removed or replaced) is a :class:`StorageError` (503,
        ``storage-unavailable``), remembered in :attr:`write_failure` until a
        transaction commits: nothing of the transaction is kept.

        Re-entrant: a transaction opened inside another on the same thread joins it
        (several writes made atomic together: :meth:`put_definitions`).
        """
        if self.in_transaction():
            self._local.depth += 1
            try:
                yield self.cursor()
            finally:
                self._local.depth -= 1
            return
        self.check_file()
        cur = self.cursor()
        cur.execute("BEGIN TRANSACTION")
        self._local.depth = 1
        try:
            yield cur
        except BaseException as exc:
            self._local.depth = 0
            with contextlib.suppress(duckdb.Error):  # a failed commit has no transaction
                cur.execute("ROLLBACK")
            raise self._storage_error(exc) from exc
        self._local.depth = 0
        try:
            cur.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise self._storage_error(exc) from exc
        self.write_failure = None

    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        return bool(getattr(self._local, "depth", 0))

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read of this thread inside sees the store as it was on entry (one read
        transaction on this thread's cursor: snapshot isolation), while other threads
        keep writing (``read_table``, ``table_counts``: a consistent backup). Nothing
        may be written inside; the transaction is rolled back on exit."""
        cur = self.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            # DuckDB starts the snapshot at the first statement that reads the catalog
            cur.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
            yield
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")

    def _storage_error(self, exc: BaseException) -> BaseException:
        """The error to raise for ``exc``: a StorageError when the storage refused."""
        if isinstance(exc, StorageError):
            self.write_failure = exc.message
            return exc
        if isinstance(exc, duckdb.Error) and _storage_refused(exc):
            detail = _first_line(exc)
            self.write_failure = detail
            log.error("storage refused a write to %s: %s", self.path, detail)
            return StorageError(f"the database cannot be written: {detail}")
        return exc

    def check_file(self) -> None:
        """Raise :class:`StorageError` when the database file was removed or replaced
        since it was opened (writes would go to a file nobody will read again)."""
        if self._identity is None:
            return
        now = _file_identity(self.path)
        if now != self._identity:
            what = "removed" if now is None else "replaced by another file"
            message = (
                f"the database file {self.path} was {what} while this process had it open; "
                "nothing more is written to it: restore the file and restart the process"
            )
            self.write_failure = message
            raise StorageError(message)

    def _arrow(self, name: str, params: dict[str, Any] | None = None) -> pa.Table:
        """A single-statement named query's result as an Arrow table."""
        sql = query(name)
        return self.cursor().sql(sql, params=_used_params(sql, params)).to_arrow_table()

    def _exec(self, name: str, params: dict[str, Any] | None = None) -> None:
        """Run every statement of a named query, consuming any results."""
        cur = self.cursor()
        for statement in statements(name):
            cur.execute(statement, _used_params(statement, params)).fetchall()

    def _rows(self, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """All rows of a single-statement named query."""
        sql = query(name)
        return self.cursor().execute(sql, _used_params(sql, params)).fetchall()

    def _one(self, name: str, params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a single-statement named query (None when empty)."""
        rows = self._rows(name, params)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ schema
    def _migrate(self) -> None:
        """Apply every migration not applied yet, in version order, one transaction each.

        Applied versions are looked up one by one (not compared with the highest),
        so a migration merged from a parallel branch with a lower number than one
        already applied still runs.
        """
        cur = self.cursor()
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT now()::TIMESTAMP)"
        )
        applied = {
            row[0] for row in cur.execute("SELECT version FROM schema_migrations").fetchall()
        }
        for version, name in migrations():
            if version in applied:
                continue
            with self.transaction() as tx:
                for statement in statements(name):
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name]
                )

    def _interrupt_orphan_runs(self) -> None:
        """Mark ``interrupted`` the runs left ``running`` by a process that is gone.

        Only one process writes a DuckDB file, so a run still ``running`` that another
        process (or an earlier life of this one) started was killed: its transaction
        never committed and it stored nothing. Runs of this process are left alone.
        """
        rows = self._rows("interrupt_orphan_runs", {"owner": self.owner, "now": self._clock()})
        for run_id, owner in rows:
            log.warning(
                "ingestion run %s (process %s) was interrupted: it stored nothing",
                run_id,
                owner or "unknown",
            )

    def applied_migrations(self) -> list[int]:
        """The versions of every applied migration, ascending."""
        rows = self.cursor().execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        return [int(r[0]) for r in rows]

    def schema_version(self) -> int:
        """The newest applied migration."""
        row = self.cursor().execute("SELECT max(version) FROM schema_migrations").fetchall()[0]
        return int(row[0]) if row and row[0] is not None else 0

    def _sync_calendar(self) -> None:
        cur = self.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS calendar_sessions (date DATE PRIMARY KEY)")
        first, last, count = cur.execute(
            "SELECT min(date), max(date), count(*) FROM calendar_sessions"
        ).fetchall()[0]
        sessions = self.calendar.sessions
        if count == len(sessions) and first == self.calendar.first and last == self.calendar.last:
            return
        table = pa.table({"date": pa.array(sessions.astype("datetime64[D]"), pa.date32())})
        with self.transaction() as tx:
            tx.register("new_sessions", table)
            tx.execute("DELETE FROM calendar_sessions")
            tx.execute("INSERT INTO calendar_sessions SELECT date FROM new_sessions")
            tx.unregister("new_sessions")

    # ------------------------------------------------------------------ ingestion
    def ingest(
        self,
        securities: pa.Table,
        prices: pa.RecordBatchReader | pa.Table,
        *,
        provider: str,
        params: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Validate, de-duplicate and merge one input (see ``queries/ingest.sql``).

        The run's start (the store's clock, UTC) is the ``known_at`` of every row
        that does not give its own; a changed row's previous version moves to the
        history tables in the same transaction.
        """
        step = progress or (lambda _msg: None)
        cur = self.cursor()
        run_id = int(cur.execute("SELECT nextval('ingest_run_ids')").fetchall()[0][0])
        known_at = self._clock()
        cur.execute(
            "INSERT INTO ingest_runs (run_id, provider, params, status, started_at, known_at,"
            " owner) VALUES (?, ?, ?, 'running', ?, ?, ?)",
            [run_id, provider, json.dumps(params, default=str), known_at, known_at, self.owner],
        )
        report = IngestReport(run_id=run_id, provider=provider, status="running", known_at=known_at)
        try:
            with (
                self._memory_limited(self._ingest_memory_limit),
                self._staging_file(run_id) as staging,
                self.transaction() as tx,
            ):
                tx.register("raw_securities", securities)
                tx.register("raw_prices", prices)
                step("validating securities")
                self._exec("stage_securities", {"known_at": known_at})
                step("validating prices")
                self._exec(
                    "stage_prices",
                    {"known_at": known_at, "provider": provider, "staging": str(staging)},
                )
                pa.default_memory_pool().release_unused()  # the input stream is read
                self.load_stored_rows()
                self._exec("fill_shares", {"known_at": known_at})
                self._exec("stage_price_keys")
                tx.unregister("raw_prices")
                tx.unregister("raw_securities")
                step("comparing with stored data")
                first, last = self._one("price_window") or (None, None)
                self._exec("compare_prices", {"min_date": first, "max_date": last})
                self._exec("quarantine_rejections", {"run_id": run_id})
                self._fill_counts(report)
                step("merging")
                with self._lock:
                    self._master = None  # securities may change below
                self._exec("merge_securities", {"run_id": run_id})
                if report.rows_accepted:
                    self._merge_prices(
                        {"run_id": run_id, "min_date": report.min_date, "max_date": report.max_date}
                    )
                    self._exec("record_shares", {"run_id": run_id})
                self._exec("drop_staging")
            report.status = "succeeded"
        except Exception as exc:
            error = _ingest_error(exc)
            report.status = "failed"
            report.message = error.message[:500]
            self._finish_run(report)
            raise error from exc
        self._finish_run(report)
        return report

    def load_stored_rows(self) -> None:
        """Ingestion hook, after staging: nothing here (every stored row is at hand); a
        store that holds only part of them loads those the ingestion reads."""

    def _merge_prices(self, params: dict[str, Any]) -> None:
        """Ingestion step, in its transaction: move the replaced rows to the history,
        write the accepted rows, update the re-derived ones (``params``: run_id,
        min_date and max_date of the accepted rows). A store that keeps the new rows
        elsewhere (the lake's scratch store) writes them its own way."""
        self._exec("merge_prices", params)
        self._exec("insert_prices", params)
        self._exec("merge_rederived_shares", params)

    @contextmanager
    def _staging_file(self, run_id: int) -> Iterator[Path]:
        """The file an ingestion stages its checked rows in (``stage_prices``), removed
        afterwards: next to the database, like DuckDB's own spill files (in the
        temporary directory for an in-memory database). Files left by an ingestion
        that was killed (its run no longer running) are removed first."""
        if str(self.path) == ":memory:":
            fd, name = tempfile.mkstemp(prefix="index-builder-ingest-", suffix=".parquet")
            os.close(fd)
            path = Path(name)
        else:
            prefix = f".{self.path.name}.ingest-"
            self._remove_stale_staging(prefix)
            path = self.path.parent / f"{prefix}{run_id}.parquet"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _remove_stale_staging(self, prefix: str) -> None:
        found: dict[int, Path] = {}
        for entry in self.path.parent.glob(f"{prefix}*.parquet"):
            run = entry.name.removeprefix(prefix).removesuffix(".parquet")
            if run.isdigit():
                found[int(run)] = entry
        if not found:
            return
        rows = self.cursor().execute(
            "SELECT run_id FROM ingest_runs WHERE status = 'running' AND list_contains(?, run_id)",
            [sorted(found)],
        )
        running = {row[0] for row in rows.fetchall()}
        for run_id, entry in found.items():
            if run_id not in running:
                entry.unlink(missing_ok=True)

    @contextmanager
    def _memory_limited(self, limit: str | None) -> Iterator[None]:
        """Temporarily lower DuckDB's memory limit (it spills to disk beyond it), and
        let a bulk insert flush each row group as it is complete (DuckDB buffers five
        per thread by default: 400 MB more at the peak of a 15M-row ingestion, for no
        measurable speed)."""
        settings: dict[str, str | int] = {"write_buffer_row_group_count": 1}
        if limit is not None:
            settings["memory_limit"] = limit
        cur = self.cursor()
        previous = {
            name: cur.execute("SELECT current_setting(?)", [name]).fetchall()[0][0]
            for name in settings
        }
        for name, value in settings.items():
            cur.execute(f"SET {name} = ?", [value])  # names: the constants above
        try:
            yield
        finally:
            for name, value in previous.items():
                cur.execute(f"SET {name} = ?", [value])

    def _fill_counts(self, report: IngestReport) -> None:
        read, accepted, collapsed, min_date, max_date, current_basis = self._one(
            "price_stage_counts"
        ) or (0, 0, 0, None, None, 0)
        window = {"min_date": min_date, "max_date": max_date}
        inserted, updated, unchanged = self._one("price_action_counts", window) or (0, 0, 0)
        securities_changed = self._one("securities_changed")
        rejected = self._rows("rejection_counts", {"run_id": report.run_id})
        report.rows_read = int(read)
        report.rows_accepted = int(accepted)
        report.duplicates_collapsed = int(collapsed)
        report.rows_inserted, report.rows_updated = int(inserted), int(updated)
        report.rows_unchanged = int(unchanged)
        report.securities_changed = int(securities_changed[0]) if securities_changed else 0
        report.min_date, report.max_date = min_date, max_date
        report.rows_current_basis = int(current_basis)
        report.rejected_by_reason = {f"{src}:{reason}": int(n) for src, reason, n in rejected}
        report.rows_rejected = sum(
            n for key, n in report.rejected_by_reason.items() if key.startswith("prices:")
        )

    def _finish_run(self, report: IngestReport) -> None:
        """Record how a run ended; a run that ended succeeded or partial is a version,
        written in the same transaction (a failed run wrote nothing: no version)."""
        if report.status not in _DATA_STATUSES:
            self._update_run(report)
            return
        with self.transaction():
            self._update_run(report)
            self._record_run_version(report.run_id)

    def _update_run(self, report: IngestReport) -> None:
        self.cursor().execute(
            "UPDATE ingest_runs SET status = ?, finished_at = ?, rows_read = ?,"
            " rows_accepted = ?, rows_rejected = ?, duplicates_collapsed = ?, rows_inserted = ?,"
            " rows_updated = ?, rows_unchanged = ?, securities_changed = ?, min_date = ?,"
            " max_date = ?, message = ?, rows_current_basis = ? WHERE run_id = ?",
            [
                report.status,
                self._clock(),
                report.rows_read,
                report.rows_accepted,
                report.rows_rejected,
                report.duplicates_collapsed,
                report.rows_inserted,
                report.rows_updated,
                report.rows_unchanged,
                report.securities_changed,
                report.min_date,
                report.max_date,
                report.message,
                report.rows_current_basis,
                report.run_id,
            ],
        )

    def ingest_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent ingestion runs, newest first."""
        cur = self.cursor().execute(
            "SELECT * EXCLUDE (params), params FROM ingest_runs ORDER BY run_id DESC LIMIT ?",
            [limit],
        )
        return _dicts(cur)

    def quarantined(self, run_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Quarantined rows (of one run, or of all runs), newest first."""
        cur = self.cursor().execute(
            "SELECT * FROM quarantine WHERE $run_id IS NULL OR run_id = $run_id"
            " ORDER BY run_id DESC, row_number LIMIT $limit",
            {"run_id": run_id, "limit": limit},
        )
        return _dicts(cur)

    # ------------------------------------------------------------------ engine reads
    def stored_sessions(
        self, symbols: Sequence[str], start: dt.date, end: dt.date
    ) -> dict[str, set[dt.date]]:
        """The dates stored per symbol in [start, end] (what a re-run need not fetch)."""
        stored: dict[str, set[dt.date]] = {}
        params = {"symbols": list(symbols), "start": start, "end": end}
        for symbol, day in self._rows("stored_sessions", params):
            stored.setdefault(symbol, set()).add(day)
        return stored

    def quarantine_provider_rejects(
        self, run_id: int, rejects: Sequence[tuple[str, str, str, str, str | None]]
    ) -> None:
        """Quarantine provider failures ``(provider, symbol, reason, message, snippet)``."""
        for provider, symbol, reason, message, snippet in rejects:
            self._exec(
                "quarantine_provider_reject",
                {
                    "run_id": run_id,
                    "provider": provider,
                    "symbol": symbol,
                    "reason": reason,
                    "message": message[:500],
                    "snippet": None if snippet is None else snippet[:300],
                },
            )

    def set_run_outcome(self, run_id: int, status: str, message: str | None) -> None:
        """Record a provider run's status (``succeeded``, ``partial``, ``failed``) and
        summary; a run that ends succeeded or partial is a version (once per run: its
        ingestion recorded it already when it ended)."""
        outcome = {
            "run_id": run_id,
            "status": status,
            "message": None if message is None else message[:2000],
        }
        if status not in _DATA_STATUSES:
            self._exec("set_run_outcome", outcome)
            return
        with self.transaction():
            self._exec("set_run_outcome", outcome)
            self._record_run_version(run_id)

    # ------------------------------------------------------------------ versions
    def _record_run_version(self, run_id: int) -> None:
        """Inside a transaction: the ``ingest`` version of a run, unless recorded."""
        self._rows("record_run_version", {"run_id": run_id, "created_at": self._clock()})

    def _record_version(
        self,
        kind: str,
        *,
        run_id: int | None = None,
        index_id: str | None = None,
        build_version: int | None = None,
        rows: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Inside the transaction of the change it records: a new version; its id."""
        row = self._one(
            "record_version",
            {
                "kind": kind,
                "created_at": self._clock(),
                "run_id": run_id,
                "index_id": index_id,
                "build_version": build_version,
                "rows": rows,
                "detail": json.dumps(detail or {}, default=str, sort_keys=True),
            },
        )
        assert row is not None
        return int(row[0])

    def versions(self, limit: int = 50, kind: str | None = None) -> list[VersionInfo]:
        """The newest ``limit`` versions first (only those of ``kind`` when given)."""
        rows = self._rows("list_versions", {"limit": limit, "kind": kind})
        return [_version(row) for row in rows]

    def version(self, version_id: int) -> VersionInfo | None:
        """One version, or None."""
        row = self._one("version_by_id", {"version_id": version_id})
        return None if row is None else _version(row)

    def record_restore(self, detail: dict[str, Any]) -> int:
        """Record a restore of the whole store (``detail``: the backup) as a version."""
        with self.transaction():
            return self._record_version("restore", detail=detail)

    def rollback_data(self, to_version: int) -> RollbackReport:
        """Revert the market data to their state right after version ``to_version``
        (target run T: its data_run_id), row level, as one new ingestion run N
        (provider ``rollback``) recorded as a ``rollback`` version, in one transaction
        (``queries/rollback.sql`` says what moves where; nothing is deleted from the
        history). :class:`NotFoundError` for an unknown version, :class:`ConflictError`
        when T is not older than the data in force (nothing to undo; nothing written).
        """
        target = self.version(to_version)
        if target is None:
            raise NotFoundError(
                f"unknown version {to_version} (list them with 'index-builder versions')",
                field="to_version",
            )
        with self.transaction():
            latest = self.latest_run_id()
            t = target.data_run_id
            if t >= latest:
                raise ConflictError(
                    f"nothing to undo: the data in force (run {latest}) are those of version "
                    f"{to_version} (run {t}) or older than it",
                    field="to_version",
                )
            run_id = int(self._one("next_ingest_run_id")[0])  # type: ignore[index]
            now = self._clock()
            bound = {"target_run": t, "run_id": run_id, "now": now}
            params = json.dumps({"to_version": to_version, "to_run": t})
            self._exec("rollback_start_run", {**bound, "params": params, "owner": self.owner})
            prices = self._one("rollback_price_counts", bound)
            others = self._one("rollback_other_counts", bound)
            assert prices is not None and others is not None  # aggregates: one row each
            withdrawn, restored, first, last = prices
            sec_out, sec_in, shares_out, shares_in = others
            with self._lock:
                self._master = None  # securities change below
            self._exec("rollback_prices", bound)
            self._exec("rollback_securities", bound)
            self._exec("rollback_shares", bound)
            undone = sorted(int(r[0]) for r in self._rows("rollback_undo_runs", bound))
            redone = sorted(int(r[0]) for r in self._rows("rollback_redo_runs", bound))
            message = (
                f"rollback to version {to_version} (run {t}): {restored} price rows restored, "
                f"{withdrawn} withdrawn; runs undone: {', '.join(map(str, undone)) or 'none'}"
            )
            self._exec(
                "rollback_finish_run",
                {
                    **bound,
                    "restored": restored,
                    "securities_changed": sec_out + sec_in,
                    "min_date": first,
                    "max_date": last,
                    "message": message,
                },
            )
            report = RollbackReport(
                run_id=run_id,
                version_id=0,
                target_version=to_version,
                target_run=t,
                prices_restored=int(restored),
                prices_withdrawn=int(withdrawn),
                securities_restored=int(sec_in),
                securities_withdrawn=int(sec_out),
                shares_restored=int(shares_in),
                shares_withdrawn=int(shares_out),
                runs_undone=undone,
                runs_redone=redone,
                min_date=first,
                max_date=last,
            )
            detail = report.as_dict()
            for key in ("run_id", "version_id"):
                del detail[key]
            version_id = self._record_version(
                "rollback", run_id=run_id, rows=int(restored), detail=detail
            )
        with self._lock:
            self._master = None
        return dataclasses.replace(report, version_id=version_id)

    def trading_days(
        self, as_of: dt.datetime | None = None, *, run: int | None = None
    ) -> list[dt.date]:
        """All trading days (dates with at least one valid bar), ascending.

        ``as_of`` (naive UTC): the days with a bar known at that moment (of a
        security known then too); ``run``: as written by that ingestion run and the
        earlier ones (the data a build used).
        """
        rows = self._rows(_versioned("trading_days", as_of, run), _bounds(as_of, run))
        return [row[0] for row in rows]

    def latest_run_id(self) -> int:
        """The newest finished ingestion run id (0 when none): the data a build sees."""
        return int(self._one("latest_run_id")[0])  # type: ignore[index]

    def first_changed_date(self, since_run_id: int) -> dt.date | None:
        """Earliest trading day whose inputs changed after ``since_run_id``."""
        row = self._one("first_changed_date", {"run_id": since_run_id})
        return row[0] if row else None

    def security_master(
        self, as_of: dt.datetime | None = None, *, run: int | None = None
    ) -> SecurityMaster:
        """Securities sorted by symbol; with ``as_of`` (or ``run``), those known then
        (written by then), as they were.

        The current master is cached until an ingestion runs: this process is the
        only writer of the database file (DuckDB locks it), so the cache is dropped
        whenever :meth:`ingest` may change securities or their first dividends.
        """
        if as_of is not None or run is not None:
            return _master(self._arrow("panel_securities_as_of", _bounds(as_of, run)))
        with self._lock:
            if self._master is not None:
                return self._master
        master = _master(self._arrow("panel_securities"))
        with self._lock:
            self._master = master
        return master

    def last_built_day(self, index_id: str, day: dt.date) -> dt.date | None:
        """The last day with a stored level on or before ``day``."""
        row = self._one("last_built_day_on_or_before", {"index_id": index_id, "day": day})
        return row[0] if row else None

    def load_panel(
        self,
        start: dt.date,
        end: dt.date,
        as_of: dt.datetime | None = None,
        *,
        run: int | None = None,
    ) -> MarketPanel:
        """Every security's bars on every trading day in [start, end], as dense matrices.

        ``as_of`` (naive UTC): the values known at that moment; ``run``: the values
        as written by that ingestion run and the earlier ones (the current versions
        otherwise).
        """
        cur = self.cursor()
        master = self.security_master(as_of, run=run)
        window = {"start": start, "end": end, "n_columns": len(master), **_bounds(as_of, run)}
        days = np.array(
            [r[0] for r in self._rows(_versioned("trading_days_between", as_of, run), window)],
            dtype="datetime64[D]",
        )
        cur.register(
            "panel_days",
            pa.table(
                {
                    "date": pa.array(days, pa.date32()),
                    "row_index": pa.array(np.arange(len(days), dtype=np.int32)),
                }
            ),
        )
        cur.register(
            "panel_columns",
            pa.table(
                {
                    "symbol": pa.array(master.symbols.tolist(), pa.string()),
                    "column_index": pa.array(np.arange(len(master), dtype=np.int32)),
                }
            ),
        )
        try:
            sql = query(_versioned("panel_bars", as_of, run))
            actions = self._arrow(_versioned("panel_actions", as_of, run), window)
            volumes = self._arrow(_versioned("panel_volumes", as_of, run), window)
            reader = cur.sql(sql, params=_used_params(sql, window)).to_arrow_reader(
                batch_size=_PANEL_BATCH_ROWS
            )
            # scattered batch by batch: the long form is never held whole
            return MarketPanel.from_batches(
                days,
                master,
                _batches(reader),
                actions=(
                    np.asarray(actions.column("cell").to_numpy(), dtype=np.int64),
                    np.asarray(actions.column("dividend").to_numpy(), dtype=np.float64),
                    np.asarray(actions.column("split_ratio").to_numpy(), dtype=np.float64),
                ),
                volumes=(
                    np.asarray(volumes.column("cell").to_numpy(), dtype=np.int64),
                    np.asarray(volumes.column("volume").to_numpy(), dtype=np.float64),
                ),
            )
        finally:
            cur.unregister("panel_days")
            cur.unregister("panel_columns")

    def price_versions(self, symbol: str, day: dt.date) -> list[dict[str, Any]]:
        """Every version of one bar, oldest first: the superseded ones, then the current.

        Each has its values, ``known_at``, ``superseded_at`` (None for the current
        one) and the run ids that wrote and replaced it.
        """
        cur = self.cursor().execute(query("price_versions"), {"symbol": symbol, "day": day})
        return _dicts(cur)

    # ------------------------------------------------------------------ definitions
    def list_definitions(self) -> list[tuple[IndexDefinition, bool]]:
        """All definitions that validate, with their built-in flag (built-ins first).

        A stored definition that no longer validates (written by an older release,
        or by hand) is left out, so that every other index keeps being served; see
        :meth:`broken_definitions`.
        """
        out = []
        for index_id, text, builtin in self._rows("list_definitions"):
            try:
                out.append((_stored_definition(index_id, text), bool(builtin)))
            except IndexBuilderError:
                continue
        return out

    def broken_definitions(self) -> dict[str, str]:
        """Stored definitions that no longer validate: id -> why (logged once each)."""
        broken = {}
        for index_id, text, _ in self._rows("list_definitions"):
            try:
                _stored_definition(index_id, text)
            except IndexBuilderError as exc:
                broken[index_id] = exc.message
        for index_id in broken.keys() - self._reported_broken:
            log.warning("stored definition %s does not validate: %s", index_id, broken[index_id])
        self._reported_broken |= broken.keys()
        return broken

    def get_definition(self, index_id: str) -> tuple[IndexDefinition, bool] | None:
        """One definition with its built-in flag, or None (ConflictError when the
        stored definition no longer validates: it names what to do)."""
        row = self._one("get_definition", {"index_id": index_id})
        if row is None:
            return None
        return _stored_definition(index_id, row[0]), bool(row[1])

    def put_definition(self, definition: IndexDefinition, *, builtin: bool) -> None:
        """Create or replace a definition.

        Replacing its rules (any field but name and description), or a stored
        definition that no longer validates, deletes every result of the index, the
        current ones and those as of past moments, in the same transaction: they were
        computed with rules that no longer exist, and reads say the index is not
        built until it is built again. A build that was computing the old rules
        finds the change at its commit and is discarded.
        """
        with self.transaction():
            row = self._one("get_definition", {"index_id": definition.id})
            try:
                same = row is not None and (
                    _stored_definition(definition.id, row[0]).fingerprint()
                    == definition.fingerprint()
                )
            except ConflictError:
                same = False
            if row is not None and not same:
                self._exec("delete_results", {"index_id": definition.id})
                self._exec("delete_as_of_results", {"prefix": as_of_prefix(definition.id)})
            text = definition.to_json()
            self._exec(
                "upsert_definition",
                {"index_id": definition.id, "definition": text, "builtin": builtin},
            )
            # a version when the stored JSON changes; the built-ins a store is seeded with
            # are its starting point, not a change (a fresh store has no version)
            if (row is None and not builtin) or (row is not None and not _same_json(row[0], text)):
                self._record_version(
                    "definition",
                    index_id=definition.id,
                    detail={
                        "action": "add" if row is None else "replace",
                        "builtin": builtin,
                        "results_removed": row is not None and not same,
                    },
                )

    def put_definitions(self, items: Sequence[tuple[IndexDefinition, bool]]) -> None:
        """Create or replace several definitions (with their built-in flag) in one
        transaction (see :meth:`put_definition`)."""
        with self.transaction():
            for definition, builtin in items:
                self.put_definition(definition, builtin=builtin)

    def delete_definition(self, index_id: str) -> None:
        """Remove a definition, its results and its as-of results."""
        with self.transaction():
            row = self._one("get_definition", {"index_id": index_id})
            self._exec("delete_results", {"index_id": index_id})
            self._exec("delete_as_of_results", {"prefix": as_of_prefix(index_id)})
            self._exec("delete_definition", {"index_id": index_id})
            if row is not None:
                self._record_version(
                    "definition",
                    index_id=index_id,
                    detail={"action": "remove", "builtin": bool(row[1])},
                )

    # ------------------------------------------------------------------ results
    def pinned_base_date(self, index_id: str) -> dt.date | None:
        """The base date a definition without one was first built with (None: not yet)."""
        row = self._one("pinned_base_date", {"index_id": index_id})
        return row[0] if row else None

    def pin_base_date(self, index_id: str, base_date: dt.date) -> None:
        """Fix the base date of a definition without one, unless already fixed."""
        self._exec("pin_base_date", {"index_id": index_id, "base_date": base_date})

    def build_state(self, index_id: str) -> BuildState | None:
        """The last successful build stored under a result key, or None."""
        row = self._one("build_state", {"index_id": index_id})
        return None if row is None else _build_state(row)

    def as_of_builds(self, index_id: str) -> list[BuildState]:
        """The stored builds of an index as of a moment (by moment), then as of a
        version (by version)."""
        rows = self._rows("as_of_build_states", {"prefix": as_of_prefix(index_id)})
        return [_build_state(row) for row in rows]

    def next_build_version(self) -> int:
        """A build version never handed out before (cache keys include it)."""
        return int(self._one("next_build_version")[0])  # type: ignore[index]

    def last_rebalance(self, index_id: str, day: dt.date, *, inclusive: bool) -> dt.date | None:
        """The last rebalance before (or on, if inclusive) ``day``."""
        name = "last_rebalance_on_or_before" if inclusive else "last_rebalance_before"
        row = self._one(name, {"index_id": index_id, "day": day})
        return row[0] if row else None

    def variant_levels_on(self, index_id: str, day: dt.date) -> dict[str, float] | None:
        """Every return variant's stored level on ``day`` (None when any is missing)."""
        row = self._one("variant_levels_on", {"index_id": index_id, "day": day})
        if row is None or any(v is None for v in row):
            return None
        return dict(zip(("price", "total", "net_total"), map(float, row), strict=True))

    def reference_date_on(self, index_id: str, day: dt.date) -> dt.date | None:
        """The reference date of the selection that took effect on ``day`` (a rebalance)."""
        row = self._one("reference_date_on", {"index_id": index_id, "day": day})
        return row[0] if row else None

    def announcements(self, index_id: str) -> list[AnnouncedConstituent]:
        """Selections announced but not yet in force after the last built close."""
        rows = self._rows("announcements", {"index_id": index_id})
        return [AnnouncedConstituent(*r) for r in rows]

    def level_on(self, index_id: str, day: dt.date) -> float | None:
        """The stored level on ``day``."""
        row = self._one("level_on", {"index_id": index_id, "day": day})
        return float(row[0]) if row else None

    def spells_from(self, index_id: str, day: dt.date) -> list[Spell]:
        """Spells in force on or after ``day``."""
        rows = self._rows("spells_from", {"index_id": index_id, "day": day})
        return [Spell(*r) for r in rows]

    def spells_overlapping(self, index_id: str, start: dt.date, end: dt.date) -> list[Spell]:
        """Spells in force at some point of [start, end]."""
        rows = self._rows("spells_overlapping", {"index_id": index_id, "start": start, "end": end})
        return [Spell(*r) for r in rows]

    def count_spells(self, index_id: str) -> int:
        """Number of stored spells (composition storage rows)."""
        return int(self._one("count_spells", {"index_id": index_id})[0])  # type: ignore[index]

    def save_results(
        self,
        state: BuildState,
        levels: LevelRows,
        spells: Sequence[Spell],
        announcements: Sequence[AnnouncedConstituent],
        *,
        write_from: dt.date | None,
        kept_through: dt.date | None = None,
    ) -> None:
        """Atomically store a build and replace its announced selections.

        ``write_from`` None: the build replaces every stored result of the key. Else
        it writes the levels of ``write_from`` and later, and ``spells`` replace the
        stored spells still in force after the close of ``kept_through`` (the last
        day kept); every other stored row stays as it is."""
        new_levels = pa.table(
            {
                "date": pa.array(levels.dates, pa.date32()),
                "level": pa.array(levels.level, pa.float64()),
                "daily_return": pa.array(levels.daily_return, pa.float64()),
                "is_rebalance": pa.array(levels.is_rebalance, pa.bool_()),
                "turnover": pa.array(levels.turnover, pa.float64(), from_pandas=True),
                "n_constituents": pa.array(levels.n_constituents, pa.int32()),
                **{
                    f"level_{v}": pa.array(levels.variant_levels[v], pa.float64())
                    for v in ("price", "total", "net_total")
                },
                "reference_date": pa.array(levels.reference_date, pa.date32()),
            }
        )
        new_announcements = pa.Table.from_pylist(
            [a.__dict__ for a in announcements], schema=_ANNOUNCEMENT_SCHEMA
        )
        new_spells = pa.table(
            {
                "symbol": pa.array([s.symbol for s in spells], pa.string()),
                "valid_from": pa.array([s.valid_from for s in spells], pa.date32()),
                "valid_to": pa.array([s.valid_to for s in spells], pa.date32()),
            }
        )
        key = {"index_id": state.index_id}
        with self.transaction() as tx:
            self._claim_definition(state)
            if write_from is None:
                self._exec("delete_results", key)
            else:
                cut = {**key, "day": write_from, "kept_through": kept_through or write_from}
                self._exec("delete_results_from", cut)
            tx.register("new_levels", new_levels)
            tx.register("new_spells", new_spells)
            tx.register("new_announcements", new_announcements)
            self._exec("insert_levels", key)
            self._exec("insert_spells", key)
            self._exec("replace_announcements", key)
            for table in ("new_levels", "new_spells", "new_announcements"):
                tx.unregister(table)
            self._exec(
                "upsert_build_state",
                {
                    **key,
                    "version": state.version,
                    "definition_hash": state.definition_hash,
                    "base_date": state.base_date,
                    "built_through": state.built_through,
                    "data_run_id": state.data_run_id,
                    "duration_ms": state.duration_ms,
                    "warnings": json.dumps(state.warnings),
                    "as_of": state.as_of,
                    "as_of_version": state.as_of_version,
                    "engine": state.engine,
                },
            )
            detail: dict[str, Any] = {
                "write_from": write_from,
                "built_through": state.built_through,
                "data_run_id": state.data_run_id,
            }
            if state.engine != "numpy":  # a build by another engine (Spark) says so
                detail["engine"] = state.engine
            if state.as_of is not None:
                detail["as_of"] = state.as_of
            if state.as_of_version is not None:
                detail["as_of_version"] = state.as_of_version
            self._record_version(
                "build",
                index_id=state.index_id,
                build_version=state.version,
                rows=len(levels.dates),
                detail=detail,
            )

    def _claim_definition(self, state: BuildState) -> None:
        """Inside a build's transaction: the definition must still be the one the build
        computed (not removed, not replaced by other rules). Touching its row makes a
        concurrent change of it conflict with this transaction, so results never land
        under rules that replaced the ones they were computed with."""
        index_id = state.index_id.split(AS_OF_SEPARATOR, 1)[0]
        try:
            row = self._one("claim_definition", {"index_id": index_id})
        except duckdb.TransactionException as exc:
            raise ConflictError(
                f"{index_id}: its definition changed while it was being built; the build's "
                "results were discarded (build it again)",
                field="index",
            ) from exc
        if row is None:
            raise ConflictError(
                f"{index_id} was removed while it was being built; the build's results were "
                "discarded",
                field="index",
            )
        if _stored_definition(index_id, row[0]).fingerprint() != state.definition_hash:
            raise ConflictError(
                f"{index_id}: its rules were replaced while it was being built; the build's "
                "results were discarded (build it again for the new rules)",
                field="index",
            )

    def read_levels(self, index_id: str, start: dt.date, end: dt.date) -> pa.Table:
        """Stored levels in [start, end], ascending."""
        return self._arrow("read_levels", {"index_id": index_id, "start": start, "end": end})

    def built_days(self, index_id: str) -> list[dt.date]:
        """Days with a stored level, ascending."""
        return [r[0] for r in self._rows("built_days", {"index_id": index_id})]

    # ------------------------------------------------------------------ health and metrics
    def refresh_due(self) -> bool:
        """Whether :meth:`refresh` may find a version written by another process (never:
        this process is the file's only writer)."""
        return False

    def refresh(self, *, force: bool = False) -> bool:
        """Read the newest version another process wrote (nothing to do here)."""
        return False

    def describe(self) -> dict[str, str]:
        """Where the data lives (status, health and build output show it)."""
        return {"backend": "duckdb", "database": str(self.path)}

    def ping(self) -> int:
        """A trivial query (the schema version); raises :class:`StorageError` when the
        database cannot be used: a query fails, the file was removed or replaced, or
        the last write failed (until a write succeeds)."""
        self.check_file()
        if self.write_failure is not None:
            raise StorageError(f"the last write to the database failed: {self.write_failure}")
        try:
            row = self._one("health_ping")
        except duckdb.Error as exc:
            raise StorageError(f"database query failed: {exc}") from exc
        return int(row[0]) if row and row[0] is not None else 0

    def last_trading_day(self) -> dt.date | None:
        """The newest date with a stored bar (None: no market data)."""
        row = self._one("last_trading_day")
        return row[0] if row else None

    def last_ingest_run(self, *, finished: bool = False) -> dict[str, Any] | None:
        """The newest ingestion run (``finished``: the newest one not running)."""
        cur = self.cursor().execute(query("last_ingest_run"), {"finished": finished})
        rows = _dicts(cur)
        return rows[0] if rows else None

    def rejection_counts(self, run_id: int) -> dict[str, int]:
        """Quarantined rows of one run by ``<source>:<reason>`` (as in :class:`IngestReport`)."""
        rows = self._rows("rejection_counts", {"run_id": run_id})
        return {f"{source}:{reason}": int(n) for source, reason, n in rows}

    # ------------------------------------------------------------------ whole store
    def read_table(self, name: str, batch_rows: int = 1 << 17) -> pa.RecordBatchReader:
        """Every row of a persistent table (:data:`PERSISTENT_TABLES`), streamed in a
        stable order (the table's columns, ascending)."""
        _check_table(name)
        cur = self.cursor()
        # the name is one of PERSISTENT_TABLES (checked above), never user text
        return cur.sql(f'SELECT * FROM "{name}" ORDER BY ALL').to_arrow_reader(batch_rows)

    def table_counts(self) -> dict[str, int]:
        """Rows of every persistent table."""
        cur = self.cursor()
        return {
            name: int(cur.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0])
            for name in PERSISTENT_TABLES
        }

    def load_tables(self, tables: dict[str, pa.RecordBatchReader | pa.Table]) -> None:
        """Fill an empty store with the given tables (restore, change of backend), in
        one transaction: any row already stored (but the built-in definitions and the
        build counter a fresh store holds) is an error, and nothing is loaded then.
        Sequences continue above the largest id loaded."""
        unknown = set(tables) - set(PERSISTENT_TABLES)
        if unknown:
            raise ValueError(f"not tables of a store: {', '.join(sorted(unknown))}")
        with self.transaction() as tx:
            for name in PERSISTENT_TABLES:
                if name not in tables:
                    continue
                if name in ("index_definitions", "build_version_counter"):
                    tx.execute(f'DELETE FROM "{name}"')  # the fresh store's own seed
                elif tx.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]:
                    raise StorageError(f"cannot load {name}: the store is not empty")
                tx.register("incoming", tables[name])
                tx.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM incoming')
                tx.unregister("incoming")
            for sequence, (table, column) in COUNTERS.items():
                top = tx.execute(f'SELECT coalesce(max("{column}"), 0) FROM "{table}"').fetchall()
                tx.execute(f"DROP SEQUENCE IF EXISTS {sequence}")
                tx.execute(f"CREATE SEQUENCE {sequence} START {int(top[0][0]) + 1}")
        with self._lock:
            self._master = None

    def current_build_states(self) -> list[BuildState]:
        """The build state of every index's current results (no as-of builds)."""
        return [_build_state(row) for row in self._rows("current_build_states")]

    # ------------------------------------------------------------------ daily schedule
    def next_cycle_id(self) -> int:
        """A new id for one run of the daily cycle."""
        return int(self._one("next_cycle_id")[0])  # type: ignore[index]

    def record_schedule_step(self, step: ScheduleStep) -> None:
        """Record one step of a daily cycle (a row of ``schedule_runs``)."""
        self._exec("record_schedule_step", dict(step.__dict__))

    def schedule_runs(self, cycles: int = 10) -> list[dict[str, Any]]:
        """The steps of the last ``cycles`` daily cycles, newest cycle first."""
        cur = self.cursor().execute(query("schedule_runs"), {"cycles": cycles})
        return _dicts(cur)


_ANNOUNCEMENT_SCHEMA = pa.schema(
    [
        ("reference_date", pa.date32()),
        ("effective_date", pa.date32()),
        ("sessions_ahead", pa.int32()),
        ("symbol", pa.string()),
        ("name", pa.string()),
        ("sector", pa.string()),
        ("rank", pa.int32()),
        ("weight", pa.float64()),
        ("market_cap", pa.float64()),
    ]
)

_MIGRATION = re.compile(r"^v(\d+)_")


def migrations() -> list[tuple[int, str]]:
    """(version, query name) of every migration (``-- name: v<N>_...``), in order."""
    return ordered_migrations(names())


def ordered_migrations(query_names: Sequence[str]) -> list[tuple[int, str]]:
    """The migrations among ``query_names``, by version; a version given twice is an error.

    Versions may have gaps: branches developed side by side each take their own
    number, and the runner applies every version missing from a database, in
    order, whatever the highest applied one is.
    """
    found = sorted((int(m.group(1)), name) for name in query_names if (m := _MIGRATION.match(name)))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions) or any(v < 1 for v in versions):
        raise RuntimeError(f"migration versions must be unique and >= 1, got {versions}")
    return found


_STREAM_FAILURE = re.compile(r"reading the stream registered as '\w+' failed: (?:Unknown error: )?")


def _ingest_error(exc: Exception) -> IndexBuilderError:
    """The user-facing error for a failed ingestion (input problems stay exit code 2)."""
    if isinstance(exc, IndexBuilderError):
        return exc
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    match = _STREAM_FAILURE.search(first_line)
    if match:  # the provider's stream raised while DuckDB was reading it
        detail = first_line[match.end() :].split(". Detail: Python exception")[0]
        return UnusableInputError(detail)
    return StorageError(f"ingestion failed: {first_line}")


def _used_params(statement: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Only the named parameters a statement mentions (DuckDB rejects extras)."""
    if not params:
        return None
    used = {k: v for k, v in params.items() if f"${k}" in statement}
    return used or None


def _batches(reader: pa.RecordBatchReader) -> Iterator[LongBars]:
    """(cell, close, adj_close, market_cap) arrays of each batch of a panel query."""
    for batch in reader:
        yield (
            _numpy(batch, "cell", np.int64),
            _numpy(batch, "close", np.float64),
            _numpy(batch, "adj_close", np.float64),
            _numpy(batch, "market_cap", np.float64),
        )


def _numpy(batch: pa.RecordBatch, column: str, dtype: type[np.generic]) -> np.ndarray[Any, Any]:
    """A non-null column of a batch as a NumPy array (zero-copy when possible)."""
    return np.asarray(batch.column(column).to_numpy(zero_copy_only=False), dtype=dtype)


def _check_table(name: str) -> None:
    if name not in PERSISTENT_TABLES:
        raise ValueError(f"{name!r} is not a table of a store")


def _stored_definition(index_id: str, text: str) -> IndexDefinition:
    """A stored definition, or a ConflictError saying that it no longer validates."""
    try:
        return parse_definition(json.loads(text), source=index_id)
    except (IndexBuilderError, ValueError) as exc:
        why = exc.message if isinstance(exc, IndexBuilderError) else f"not JSON: {exc}"
        raise ConflictError(
            f"the stored definition of {index_id!r} no longer validates ({why}); replace it "
            f"with 'index-builder indices add FILE --replace' or remove it with "
            f"'index-builder indices remove {index_id}'",
            field="index",
        ) from None


def _same_json(stored: str, text: str) -> bool:
    """Whether a stored definition's JSON says what ``text`` says (text may differ)."""
    try:
        return bool(json.loads(stored) == json.loads(text))
    except ValueError:
        return False


def _build_state(row: tuple[Any, ...]) -> BuildState:
    """A build state from a ``build_state`` query row."""
    return BuildState(
        index_id=row[0],
        version=int(row[1]),
        definition_hash=row[2],
        base_date=row[3],
        built_through=row[4],
        data_run_id=int(row[5]),
        built_at=row[6],
        duration_ms=row[7],
        warnings=json.loads(row[8]) if row[8] else [],
        as_of=row[9],
        as_of_version=None if row[10] is None else int(row[10]),
        engine=row[11] if len(row) > 11 and row[11] else "numpy",
    )


_DATA_STATUSES = frozenset({"succeeded", "partial"})
"""Statuses of an ingestion run whose rows are data (a version records it)."""


def _version(row: tuple[Any, ...]) -> VersionInfo:
    """A version from a ``list_versions`` / ``version_by_id`` row."""
    detail = json.loads(row[8]) if row[8] else {}
    snapshots = json.loads(row[9]) if row[9] else None
    return VersionInfo(
        version_id=int(row[0]),
        kind=row[1],
        created_at=row[2],
        data_run_id=int(row[3]),
        run_id=None if row[4] is None else int(row[4]),
        index_id=row[5],
        build_version=None if row[6] is None else int(row[6]),
        rows=None if row[7] is None else int(row[7]),
        detail=detail if isinstance(detail, dict) else {"value": detail},
        snapshots=snapshots,
    )


_REFUSALS = (
    "no space left",
    "file too large",
    "read-only",
    "read only",
    "permission denied",
    "could not write",
    "disk quota",
    "no such file",
)


def _storage_refused(exc: duckdb.Error) -> bool:
    """True when DuckDB failed because the file system refused (not a query bug)."""
    if isinstance(exc, duckdb.IOException | duckdb.PermissionException):
        return True
    text = str(exc).lower()
    return any(word in text for word in _REFUSALS)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, None when it does not exist (or in memory)."""
    if str(path) == ":memory:":
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


_NO_BOUND_RUN = np.iinfo(np.int64).max


def _versioned(name: str, as_of: dt.datetime | None, run: int | None) -> str:
    """The named query that reads the current versions, or its twin that reads the
    versions within a moment and/or a run (``queries/point_in_time.sql``)."""
    return name if as_of is None and run is None else f"{name}_as_of"


def _bounds(as_of: dt.datetime | None, run: int | None) -> dict[str, Any]:
    """The ``$as_of`` and ``$run`` parameters of a versioned read (no bound: the largest)."""
    return {
        "as_of": dt.datetime.max if as_of is None else as_of,
        "run": _NO_BOUND_RUN if run is None else run,
    }


def _master(securities: pa.Table) -> SecurityMaster:
    """A security master from a ``panel_securities`` query result."""
    return SecurityMaster(
        symbols=_objects(securities, "symbol"),
        names=_objects(securities, "name"),
        sectors=_objects(securities, "sector"),
        exchanges=_objects(securities, "exchange"),
        types=_objects(securities, "type"),
        dividends_from=np.array(
            securities.column("dividends_from").to_pylist(), dtype="datetime64[D]"
        ),
        company_ids=_objects(securities, "company_id"),
    )


def _objects(table: pa.Table, column: str) -> np.ndarray[Any, np.dtype[np.object_]]:
    return np.array(table.column(column).to_pylist(), dtype=object)


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
