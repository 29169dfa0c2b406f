"""The API's job records in DuckDB (table ``api_jobs``, queries in ``queries/jobs.sql``).

These are the records of the in-process queue (one API process runs the jobs, so
the records need no coordination between processes): the job manager keeps every
job in memory and writes each state change through (:mod:`index_builder.services.
queue`). With the Redis queue (several API processes and ``index-builder worker``)
jobs are records in Redis instead and this table is not written. Writes are
serialised by one lock: concurrent updates of one row would conflict in DuckDB.
Each write is one statement in its own transaction (a version of a lake store), on
the calling thread's cursor; the job manager never writes from inside another
transaction.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from typing import Any

import duckdb

from index_builder.errors import StorageError
from index_builder.storage.duckdb.sql import query
from index_builder.storage.duckdb.store import DuckDBStore

RECORD_FIELDS = (
    "job_id",
    "kind",
    "request",
    "status",
    "stage",
    "progress",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "error",
)
"""The columns of a record, in order; ``request``, ``result`` and ``error`` are JSON text,
timestamps naive UTC."""

JobRecord = dict[str, Any]


class DuckDBJobRecords:
    """Job records of one store (see :class:`index_builder.services.jobs.JobRecords`)."""

    def __init__(self, store: DuckDBStore) -> None:
        self._store = store
        self._lock = threading.Lock()

    def insert(self, record: JobRecord) -> None:
        """Store a new job."""
        self._write("insert_job", record)

    def update(self, record: JobRecord) -> None:
        """Store a job's new state (every field but its id, kind, request and creation)."""
        self._write("update_job", {k: v for k, v in record.items() if k not in _FIXED})

    def delete(self, job_ids: Sequence[str]) -> None:
        """Forget jobs."""
        for job_id in job_ids:
            self._write("delete_job", {"job_id": job_id})

    def interrupt(self, at: dt.datetime) -> int:
        """Mark every queued or running job ``interrupted`` (at start: their process is
        gone); returns how many."""
        with self._lock:
            try:
                before = (
                    self._store.cursor()
                    .execute("SELECT count(*) FROM api_jobs WHERE status IN ('queued', 'running')")
                    .fetchall()[0][0]
                )
                if before:
                    with self._store.transaction() as tx:
                        tx.execute(query("interrupt_jobs"), {"at": at}).fetchall()
            except duckdb.Error as exc:
                raise StorageError(f"cannot update the job records: {exc}") from exc
        return int(before)

    def recent(self, keep: int) -> list[JobRecord]:
        """The newest ``keep`` jobs, newest first, after deleting older ones."""
        with self._lock:
            try:
                with self._store.transaction() as tx:
                    tx.execute(query("trim_jobs"), {"keep": keep}).fetchall()
                rows = self._store.cursor().execute(query("recent_jobs"), {"keep": keep}).fetchall()
            except duckdb.Error as exc:
                raise StorageError(f"cannot read the job records: {exc}") from exc
        return [dict(zip(RECORD_FIELDS, row, strict=True)) for row in rows]

    def _write(self, name: str, params: dict[str, Any]) -> None:
        with self._lock:
            try:
                with self._store.transaction() as tx:
                    tx.execute(query(name), params).fetchall()
            except duckdb.Error as exc:
                raise StorageError(f"cannot write the job record: {exc}") from exc


_FIXED = frozenset({"kind", "request", "created_at"})
