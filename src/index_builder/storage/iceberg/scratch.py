"""Writes of the bar tables in the lake: ingestion, provider rejects and rollback.

Such a write runs the DuckDB backend's own code in a scratch DuckDB database (a
temporary file: it spills to disk under the ingestion memory limit) holding the small
tables and only the stored bars it reads (``queries/lake.sql``), then writes back, every
data file written by DuckDB (``COPY``: in parallel, within its memory limit, the Iceberg
field ids set) and added to the table with the statistics of its footer:

* ``prices``: an ingestion's rows of keys the lake does not hold (all of them in a
  first ingestion) never enter the scratch database: they are written once, from the
  staged input, to one folder per month. A month the lake does not hold yet takes those
  files as its data files (in input order); a month holding a changed bar is rewritten
  whole, sorted by (date, symbol): the lake's rows of the month but the changed ones,
  plus the changed and new ones; all in one table commit;
* ``price_versions`` and ``quarantine``: the rows the write added, appended;
* the small tables: copied back into memory and written like any other write's.

All of it is one version: the bar tables' new snapshots are recorded together with the
small tables' in one commit-log row, so readers see the write whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import parquet_file_to_data_file
from pyiceberg.manifest import DataFile as IcebergDataFile
from pyiceberg.table import Table

from index_builder.errors import StorageError
from index_builder.storage.base import IngestReport, ProgressCallback
from index_builder.storage.duckdb.sql import query, statements
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.iceberg.arrow import DataFile, FileReplacement, conform
from index_builder.storage.iceberg.layout import layout
from index_builder.storage.tables import COUNTERS, PERSISTENT_TABLES

if TYPE_CHECKING:
    from index_builder.storage.iceberg.store import IcebergStore

T = TypeVar("T")

_FOOTER_THREADS = 4
"""Data files whose footers are read at once (statistics of the files written)."""

_MONTH_SPAN = 12
"""An ingestion's new rows are streamed into per-month files when the staged input's
row groups span at most this many months each on average (an input laid out by date,
even roughly: DuckDB's threads interleave its row groups a little); else (e.g. symbol
by symbol: every row group spans every month) DuckDB writes them in one partitioned
pass (more CPU, but the stream would hold every month's rows at once)."""

_STREAM_ROWS = 1 << 17
"""Rows per Arrow batch of that stream."""

_ROW_GROUP_ROWS = 1 << 17
"""Rows per row group of a month file written from the stream (all but its last)."""

_PENDING_ROWS = 1 << 20
"""Rows held for month files before they are written, at most (a stream that goes back
and forth between months gets smaller row groups, never more memory)."""

_STRING_DICTIONARY = ("symbol", "source", "basis")
"""Columns of the month files that are dictionary encoded (few distinct values)."""

_PARTITIONED_MEMORY = "400MB"
"""DuckDB's memory limit during that pass: its buffers of every month's file would
take the whole ingestion limit; within this one it flushes them sooner (more CPU,
about the same time on two cores, half the memory)."""


def whole_tables() -> tuple[str, ...]:
    """The small tables a scratch write reads and may change."""
    return tuple(t for t in PERSISTENT_TABLES if layout(t).kind == "whole")


class ScratchStore(DuckDBStore):
    """A throwaway DuckDB database for one bar write of an :class:`IcebergStore`."""

    def __init__(self, lake: IcebergStore, folder: Path, preload: str | None = None) -> None:
        super().__init__(
            folder / "scratch.duckdb",
            calendar=lake.calendar,
            threads=lake._threads,
            memory_limit=lake._ingest_memory_limit,
            ingest_memory_limit=lake._ingest_memory_limit,
            clock=lake._clock,
        )
        self.owner = lake.owner
        self._lake = lake
        self._preload = preload
        self._folder = folder
        self._staged: list[str] = []
        self.new_price_files: list[str] = []
        """Files of new price rows of the last ingestion that succeeded here
        (``lake_stage_new_prices``), for :func:`write_back`."""

    def open(self) -> ScratchStore:
        """The scratch database with the lake's small tables and views of its bars."""
        super().open()
        lake = self._lake
        if lake._file_system is not None:
            assert self._con is not None
            self._con.register_filesystem(lake._file_system)
        cur = self.cursor()
        for name in ("prices", "price_versions"):
            cur.execute(lake.bar_view_sql(name, copy=True))
        source = lake.cursor()
        for name in whole_tables():
            data = source.sql(f'SELECT * FROM "{name}"').to_arrow_table()
            cur.execute(f'DELETE FROM "{name}"')
            if data.num_rows:
                cur.register("lake_incoming", data)
                cur.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM lake_incoming')
                cur.unregister("lake_incoming")
        for sequence, (table, column) in COUNTERS.items():
            top = cur.execute(f'SELECT coalesce(max("{column}"), 0) FROM "{table}"').fetchall()
            cur.execute(f"CREATE OR REPLACE SEQUENCE {sequence} START {int(top[0][0]) + 1}")
        return self

    def _interrupt_orphan_runs(self) -> None:
        """Nothing to do (as in the lake store): a run reaches the lake only with its
        data, so the lake holds none still running. Not reading the clock here also
        keeps an ingestion's clock readings those of the DuckDB backend, one for one
        (a shadow store replays the primary's: storage/shadow.py)."""

    def ingest(
        self,
        securities: pa.Table,
        prices: pa.RecordBatchReader | pa.Table,
        *,
        provider: str,
        params: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """The DuckDB backend's ingestion; the new rows it staged in files count only
        when it succeeded (its transaction committed)."""
        self._staged, self.new_price_files = [], []
        report = super().ingest(
            securities, prices, provider=provider, params=params, progress=progress
        )
        self.new_price_files = self._staged
        return report

    def _merge_prices(self, params: dict[str, Any]) -> None:
        """As the DuckDB backend's, but rows of new keys go to data files of the prices
        table (``lake_stage_new_prices``), not into the scratch database."""
        self._exec("merge_prices", params)
        self._exec("lake_insert_replacements", params)
        table = self._lake.lake_table("prices")
        ids = field_ids(self.cursor(), table, "prices")
        self._exec("lake_new_rows", params)
        row_groups, spans = self._one("lake_staged_row_groups") or (0, 0)
        if spans <= _MONTH_SPAN * row_groups:  # laid out by date: month after month
            reader = self.cursor().sql(query("lake_new_rows_stream")).to_arrow_reader(_STREAM_ROWS)
            with _MonthFiles(self, table) as files:
                for batch in reader:
                    files.add(batch)
        else:
            folder = _write_folder(self._lake, table, self._folder / "new-prices")
            with self._memory_limited(_PARTITIONED_MEMORY):
                written = self._rows(
                    "lake_stage_new_prices_partitioned",
                    {"folder": folder, "pattern": "new-{uuid}", "field_ids": ids},
                )
            self._staged += sorted(written[0][1]) if written else []
        self._exec("lake_drop_new_rows")
        self._exec("merge_rederived_shares", params)

    def close(self) -> None:
        """Close the database; new-row files written into a local warehouse that no
        commit took (a failed ingestion, or a month rewritten whole) are removed."""
        try:
            super().close()
        finally:
            for path in self._staged:
                Path(path).unlink(missing_ok=True)
            self._staged = []

    @property
    def folder(self) -> Path:
        """The scratch store's temporary folder (removed with it)."""
        return self._folder

    def committed(self, paths: list[str]) -> None:
        """New-row files a table commit took: kept when the store closes."""
        taken = set(paths)
        self._staged = [p for p in self._staged if p not in taken]

    def load_stored_rows(self) -> None:
        """Ingestion hook (after staging): the stored bars the ingestion reads."""
        if self._preload != "ingest":
            return
        row = self._one("lake_ingest_window")
        first = row[0] if row else None
        if first is not None:
            self._exec("lake_preload_ingest", {"first": first})

    def preload_rollback(self, target_run: int) -> None:
        """The stored bars a rollback to ``target_run`` reads."""
        self._exec("lake_preload_rollback", {"target": target_run})


@contextmanager
def scratch(lake: IcebergStore, preload: str | None = None) -> Iterator[ScratchStore]:
    """An open scratch store in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="index-builder-lake-") as folder:
        store = ScratchStore(lake, Path(folder), preload).open()
        try:
            yield store
        finally:
            store.close()


def run_in_scratch(
    lake: IcebergStore,
    operation: str,
    work: Callable[[ScratchStore], T],
    *,
    preload: str | None = None,
    prepare: Callable[[ScratchStore], None] | None = None,
) -> T:
    """Run ``work`` in a scratch store and write back what it changed as one version,
    also when ``work`` fails after recording something (a failed ingestion's run)."""
    with lake.writing(), scratch(lake, preload) as store:
        if prepare is not None:
            prepare(store)
        before = _newest_run(store.cursor())
        try:
            result = work(store)
        except BaseException:
            write_back(lake, store, operation, before)
            raise
        write_back(lake, store, operation, before)
        return result


def _newest_run(cur: duckdb.DuckDBPyConnection) -> int:
    return int(cur.execute("SELECT coalesce(max(run_id), 0) FROM ingest_runs").fetchall()[0][0])


def write_back(lake: IcebergStore, store: ScratchStore, operation: str, before: int) -> None:
    """Write the scratch store's changes to the lake and memory as one version: the
    bars of the run the work added (none when it added no run above ``before``), the
    quarantined rows (a scratch store starts without any), the small tables."""
    cur = store.cursor()
    run_id = _newest_run(cur)
    snapshots: dict[str, int | None] = {}
    files: dict[str, list[DataFile]] = {}
    lake.mark_dirty()  # until the version is recorded
    if run_id > before and _write_prices(lake, store, run_id):
        snapshots["prices"], files["prices"] = lake.bar_state("prices")
    if run_id > before and _append_versions(lake, store, run_id):
        snapshots["price_versions"], files["price_versions"] = lake.bar_state("price_versions")
    if _append_quarantine(lake, store):
        snapshots["quarantine"], files["quarantine"] = lake.bar_state("quarantine")
    small = {name: cur.sql(f'SELECT * FROM "{name}"').to_arrow_table() for name in whole_tables()}
    lake.commit_scratch(small, operation, snapshots, files)


def field_ids(cur: duckdb.DuckDBPyConnection, table: Table, name: str) -> dict[str, int]:
    """The Iceberg field id of every column of a bar table (as the scratch database
    has it): what a data file written by DuckDB must carry."""
    ids = {field.name: field.field_id for field in table.schema().fields}
    columns = [str(row[0]) for row in cur.execute(f'DESCRIBE "{_bar(name)}"').fetchall()]
    missing = [c for c in columns if c not in ids]
    if missing:
        raise StorageError(f"lake table {name} has no column(s) {', '.join(missing)}")
    return {c: ids[c] for c in columns}


class _FileSwap(FileReplacement):
    """One overwrite snapshot adding data files written elsewhere (by DuckDB)."""

    def add_files(self, files: list[IcebergDataFile]) -> None:
        for file in files:
            self._producer.append_data_file(file)
            self.changed = True


def _write_prices(lake: IcebergStore, store: ScratchStore, run_id: int) -> bool:
    """Add the new-row files of months the lake does not hold, and rewrite the months
    holding a changed bar or a new row; False when nothing changed."""
    cur = store.cursor()
    for statement in statements("lake_touched_keys"):
        cur.execute(statement, {"run_id": run_id} if "$run_id" in statement else None)
    touched = {_month_ordinal(m) for m, _ in cur.execute(query("lake_touched_months")).fetchall()}
    new_files = list(store.new_price_files)
    if not touched and not new_files:
        return False
    table = lake.lake_table("prices")
    stored = lake.bar_partition_rows("prices")
    by_month: dict[int, list[str]] = {}
    for path in new_files:
        by_month.setdefault(_folder_month(path), []).append(path)
    rewrite = touched | {m for m in by_month if m in stored}
    for statement in statements("lake_new_prices_files" if new_files else "lake_new_prices_none"):
        cur.execute(statement, {"files": new_files} if "$files" in statement else None)
    ids = field_ids(cur, table, "prices")
    written: list[tuple[str, str]] = []  # (DuckDB's path, the table's location)
    for month in sorted(rewrite):
        first = _month_start(month)
        location = _data_location(table, _month_folder(month), f"{uuid.uuid4()}.parquet")
        path = _write_path(lake, store, location)
        cur.execute(
            query("lake_copy_month_prices"),
            {
                "first": first,
                "last": _month_start(month + 1),
                "run_id": run_id,
                "path": path,
                "field_ids": ids,
            },
        ).fetchall()
        written.append((path, location))
    taken = [p for m, paths in by_month.items() if m not in rewrite for p in paths]
    written += [(p, _location_of(table, p)) for p in taken]
    swap = _FileSwap(table)
    swap.add_files(_data_files(lake, table, written))
    swap.drop(keep=lambda month: month not in rewrite)
    swap.commit()
    store.committed(taken)
    return True


def _append_versions(lake: IcebergStore, store: ScratchStore, run_id: int) -> bool:
    """Append the versions run ``run_id`` moved to the history; False when none."""
    cur = store.cursor()
    count = cur.execute(query("lake_count_new_price_versions"), {"run_id": run_id}).fetchall()
    if not count[0][0]:
        return False
    table = lake.lake_table("price_versions")
    folder = _write_folder(lake, table, store.folder / "new-versions")
    rows = cur.execute(
        query("lake_copy_new_price_versions"),
        {
            "run_id": run_id,
            "folder": folder,
            "pattern": "{uuid}",
            "field_ids": field_ids(cur, table, "price_versions"),
        },
    ).fetchall()
    paths = sorted(rows[0][1])
    _fast_append(table, _data_files(lake, table, [(p, _location_of(table, p)) for p in paths]))
    return True


def _append_quarantine(lake: IcebergStore, store: ScratchStore) -> bool:
    """Append the rows the write quarantined; False when none."""
    cur = store.cursor()
    if not cur.execute(query("lake_count_new_quarantine")).fetchall()[0][0]:
        return False
    table = lake.lake_table("quarantine")
    location = _data_location(table, None, f"{uuid.uuid4()}.parquet")
    path = _write_path(lake, store, location)
    cur.execute(
        query("lake_copy_new_quarantine"),
        {"path": path, "field_ids": field_ids(cur, table, "quarantine")},
    ).fetchall()
    _fast_append(table, _data_files(lake, table, [(path, location)]))
    return True


class _MonthFiles:
    """The new price rows of an ingestion, as they stream from DuckDB, into one Parquet
    data file per month (pyarrow's writer, in a thread of its own: it encodes while
    DuckDB reads the next rows). Rows are held per month until a row group is full
    (``_ROW_GROUP_ROWS``), or until the held rows reach ``_PENDING_ROWS``. The files
    carry the table's Iceberg schema (its field ids, types and column order)."""

    def __init__(self, store: ScratchStore, table: Table) -> None:
        self._store = store
        self._table = table
        self._schema = table.schema().as_arrow()
        self._pending: dict[int, list[pa.Table]] = {}
        self._held = 0
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._queue: queue.Queue[tuple[int, pa.Table] | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name="lake-month-files")

    def __enter__(self) -> _MonthFiles:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                for month in sorted(self._pending):
                    self._send(month)
        finally:
            self._queue.put(None)
            self._thread.join()
        if self._error is not None and kind is None:
            raise self._error

    def add(self, batch: pa.RecordBatch) -> None:
        """Rows of the stream (any months, in any order)."""
        if self._error is not None:
            raise self._error
        months = batch.column("month_ordinal")
        data = pa.Table.from_batches([batch])
        bounds = pc.min_max(months)
        if bounds["min"] == bounds["max"]:
            parts = [(int(bounds["min"].as_py()), data)]
        else:
            parts = [(int(m.as_py()), data.filter(pc.equal(months, m))) for m in pc.unique(months)]
        for month, part in parts:
            self._pending.setdefault(month, []).append(part)
            self._held += part.num_rows
            if sum(t.num_rows for t in self._pending[month]) >= _ROW_GROUP_ROWS:
                self._send(month)
        if self._held >= _PENDING_ROWS:
            for month in sorted(self._pending):
                self._send(month)

    def _send(self, month: int) -> None:
        parts = self._pending.pop(month, [])
        rows = sum(t.num_rows for t in parts)
        if rows:
            self._held -= rows
            self._queue.put((month, conform(pa.concat_tables(parts), self._schema)))

    def _write(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                month, rows = item
                writer = self._writers.get(month)
                if writer is None:
                    writer = self._writers[month] = self._open(month)
                writer.write_table(rows, row_group_size=_ROW_GROUP_ROWS)
        except BaseException as exc:  # reported to the producer, which stops
            self._error = exc
            while self._queue.get() is not None:  # until it has said it stopped
                pass
        finally:
            for writer in self._writers.values():
                writer.close()

    def _open(self, month: int) -> pq.ParquetWriter:
        location = _data_location(self._table, _month_folder(month), f"new-{uuid.uuid4()}.parquet")
        path = _write_path(self._store._lake, self._store, location)
        self._store._staged.append(path)  # removed unless a commit takes it
        return pq.ParquetWriter(
            path,
            self._schema,
            compression="zstd",
            compression_level=1,
            use_dictionary=[c for c in _STRING_DICTIONARY if c in self._schema.names],
        )


def _fast_append(table: Table, files: list[IcebergDataFile]) -> None:
    with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
        for file in files:
            append.append_data_file(file)


def _data_files(
    lake: IcebergStore, table: Table, written: list[tuple[str, str]]
) -> list[IcebergDataFile]:
    """The files DuckDB wrote, at their place in the table (uploaded from the scratch
    folder for an object store), with the statistics of their footers."""

    def one(item: tuple[str, str]) -> IcebergDataFile:
        path, location = item
        if not lake.location.local:
            with (
                open(path, "rb") as source,
                table.io.new_output(location).create(overwrite=True) as target,
            ):
                shutil.copyfileobj(source, target, 8 << 20)
        return parquet_file_to_data_file(table.io, table.metadata, location)

    with ThreadPoolExecutor(_FOOTER_THREADS) as pool:
        return list(pool.map(one, written))


def _data_root(table: Table) -> str:
    """The folder of a table's data files (its location + ``/data``, as pyiceberg)."""
    return f"{table.location().rstrip('/')}/data"


def _data_location(table: Table, folder: str | None, name: str) -> str:
    """Where a new data file of ``table`` goes (pyiceberg's layout: data/PARTITION/)."""
    base = _data_root(table)
    return f"{base}/{folder}/{name}" if folder else f"{base}/{name}"


def _write_folder(lake: IcebergStore, table: Table, scratch: Path) -> str:
    """The folder DuckDB writes a table's month folders to: the table's data folder
    of a local warehouse, else a scratch folder (uploaded afterwards)."""
    if lake.location.local:
        return lake.location.data_path(_data_root(table))
    scratch.mkdir(parents=True, exist_ok=True)
    return str(scratch)


def _write_path(lake: IcebergStore, store: ScratchStore, location: str) -> str:
    """Where DuckDB writes the data file of ``location`` (its folder created)."""
    if lake.location.local:
        path = Path(lake.location.data_path(location))
    else:
        path = store.folder / "files" / location.rsplit("/", 2)[-2] / location.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def _location_of(table: Table, path: str) -> str:
    """The table location of a file DuckDB wrote in a month folder under
    :func:`_write_folder` (``date_month=YYYY-MM/NAME``)."""
    return _data_location(table, Path(path).parent.name, Path(path).name)


def _folder_month(path: str) -> int:
    """The month (since 1970-01) of a file in a ``date_month=YYYY-MM`` folder."""
    folder = Path(path).parent.name
    year, month = folder.removeprefix("date_month=").split("-")
    return (int(year) - 1970) * 12 + int(month) - 1


def _month_folder(month: dt.date | int) -> str:
    """The folder of a month partition (pyiceberg's: ``date_month=YYYY-MM``)."""
    start = _month_start(month) if isinstance(month, int) else month
    return f"date_month={start.year:04d}-{start.month:02d}"


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _month_start(month: int) -> dt.date:
    return dt.date(1970 + month // 12, month % 12 + 1, 1)


def _month_ordinal(day: dt.date) -> int:
    """Months since 1970-01 (Iceberg's month partition value)."""
    return (day.year - 1970) * 12 + day.month - 1


def _bar(name: str) -> str:
    if name not in PERSISTENT_TABLES or layout(name).kind != "bars":
        raise ValueError(f"{name!r} is not a bar table")
    return name
