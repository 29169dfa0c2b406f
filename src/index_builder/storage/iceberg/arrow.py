"""Small helpers shared by the lake store and its scratch writes."""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, In, LessThan
from pyiceberg.io.pyarrow import _dataframe_to_data_files  # the writer of Table.append
from pyiceberg.table import Table


@dataclass(frozen=True)
class DataFile:
    """One Parquet data file of a bar table at a snapshot."""

    path: str
    """As DuckDB opens it (a plain path for a local file)."""
    partition: int | None
    """Its partition value (months since 1970-01), None for an unpartitioned table."""
    rows: int


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Rows from DuckDB in a lake table's column order and types (a column the rows
    lack, added by a newer release, is null)."""
    columns = [
        data.column(f.name).cast(f.type)
        if f.name in data.column_names
        else pa.nulls(len(data), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


@contextmanager
def quiet() -> Iterator[None]:
    """pyiceberg warns when an overwrite's delete matches nothing (a new partition)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Delete operation did not match any records")
        yield


def snapshot_id(table: Table) -> int | None:
    """The table's current snapshot id (None: never written)."""
    snap = table.current_snapshot()
    return snap.snapshot_id if snap else None


def partition_value(record: Any) -> Any:
    """The first field of a partition record: months since 1970-01 for a month
    partition, the value for an identity one (None when unpartitioned)."""
    if record is None or not len(record):
        return None
    return record[0]


def date_window(first: dt.date, last: dt.date) -> BooleanExpression:
    """Rows dated in [first, last)."""
    # pyiceberg's predicates are pydantic models whose synthesized signature mypy
    # reads instead of their own __init__(term, literal)
    return And(
        GreaterThanOrEqual("date", first.isoformat()),  # type: ignore[call-arg, arg-type]
        LessThan("date", last.isoformat()),  # type: ignore[call-arg, arg-type]
    )


def key_in(column: str, keys: list[Any]) -> BooleanExpression:
    """Rows whose ``column`` is one of ``keys``."""
    return In(column, keys)  # type: ignore[call-arg, arg-type]


class FileReplacement:
    """One overwrite snapshot of a table: drop some data files, add new ones.

    pyiceberg's ``overwrite`` commits a delete snapshot and an append snapshot, and
    re-applies every staged change to a copy of the table metadata at each step;
    rewriting a small table on every write that way costs more than the write. Here
    the files to drop are chosen from the table's current files, the rows written
    with pyiceberg's own writer, and both recorded in one overwrite snapshot.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self._tx = table.transaction()
        self._producer = self._tx.update_snapshot().overwrite()
        self._counter = itertools.count(0)
        self.changed = False

    def drop(self, keep: Callable[[Any], bool] | None = None) -> None:
        """Drop every current data file (``keep``: but those it returns True for, given
        the file's partition value)."""
        if self.table.current_snapshot() is None:
            return
        for task in self.table.scan().plan_files():
            if keep is None or not keep(partition_value(task.file.partition)):
                self._producer.delete_data_file(task.file)
                self.changed = True

    def add(self, data: pa.Table) -> None:
        """Write rows (partitioned by the table's spec) as new data files."""
        if data.num_rows == 0:
            return
        files = _dataframe_to_data_files(
            table_metadata=self._tx.table_metadata,
            df=data,
            io=self.table.io,
            write_uuid=self._producer.commit_uuid,
            counter=self._counter,
        )
        for file in files:
            self._producer.append_data_file(file)
            self.changed = True

    def commit(self) -> None:
        """Commit the snapshot (nothing when nothing changed)."""
        if not self.changed:
            return
        self._producer.commit()
        self._tx.commit_transaction()
