"""The bars as Spark DataFrames, from either backend, point in time.

* Iceberg backend: the data files of the snapshot the store has pinned (the version
  every other read of the build sees), planned by pyiceberg with the window's date
  range (month partitions and file statistics prune the rest), read by Spark as plain
  Parquet. No Iceberg runtime is needed in Spark; a file with row-level deletes
  (written by another engine) is refused, as the store refuses it.
* DuckDB backend: the window's rows exported by DuckDB to a Parquet file in a staging
  folder (named queries ``spark_*`` in ``queries/spark.sql``), streamed in batches.

Point in time (``as_of`` and/or ``run``): the versions in force then, as the store's
``prices_at(k, r)`` macro defines them: current versions known by ``k`` and written by
run ``r`` or earlier, and superseded versions within both bounds that were still in
force at them. Securities known then come with the security master (the driver
reads it from the store): bars of others are dropped when the panel is assembled.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from index_builder.errors import StorageError
from index_builder.storage.base import Storage
from index_builder.storage.duckdb.sql import query

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from index_builder.storage.iceberg.location import LakeLocation
    from index_builder.storage.iceberg.store import IcebergStore

BAR_COLUMNS = (
    "date",
    "symbol",
    "close",
    "adj_close",
    "volume",
    "market_cap",
    "dividend",
    "split_ratio",
)
"""What the engine reads of a bar."""

PRICES_SCHEMA = (
    "date DATE, symbol STRING, close DOUBLE, adj_close DOUBLE, volume DOUBLE, "
    "market_cap DOUBLE, dividend DOUBLE, split_ratio DOUBLE, known_at TIMESTAMP_NTZ, "
    "run_id BIGINT"
)
VERSIONS_SCHEMA = f"{PRICES_SCHEMA}, superseded_at TIMESTAMP_NTZ, superseded_by_run_id BIGINT"
NO_BOUND_RUN = 2**63 - 1
"""The ``run`` bound of a read as of a moment only (the store's largest value)."""
EXPORT_BATCH_ROWS = 1_000_000


@dataclass(frozen=True)
class BarSource:
    """The bars of a window as one DataFrame, and where they came from."""

    frame: DataFrame  # BAR_COLUMNS, the versions in force (point in time when asked)
    origin: str  # "iceberg snapshot <id>" | "duckdb export"
    files: int  # Parquet files Spark reads


def read_bars(
    spark: SparkSession,
    store: Storage,
    start: dt.date,
    end: dt.date,
    *,
    as_of: dt.datetime | None,
    run: int | None,
    staging: Path,
) -> BarSource:
    """The bars dated ``start``..``end`` (as of ``as_of`` / after ``run`` when given)."""
    from index_builder.storage.duckdb.store import DuckDBStore
    from index_builder.storage.iceberg.store import IcebergStore

    versioned = as_of is not None or run is not None
    if isinstance(store, IcebergStore):
        prices = lake_files(store, "prices", start, end)
        versions = lake_files(store, "price_versions", start, end) if versioned else []
        head = store.head
        origin = "iceberg snapshot " + (
            str(head.snapshots.get("prices")) if head is not None else "none"
        )
    elif isinstance(store, DuckDBStore):
        prices = export_window(store, "spark_prices_window", start, end, staging)
        versions = (
            export_window(store, "spark_price_versions_window", start, end, staging)
            if versioned
            else []
        )
        origin = "duckdb export"
    else:  # pragma: no cover - every backend is one of the two
        raise StorageError(f"the spark engine cannot read a {type(store).__name__}")
    current = _parquet(spark, prices, PRICES_SCHEMA)
    if not versioned:
        frame = current.select(*BAR_COLUMNS)
    else:
        frame = known_then(current, _parquet(spark, versions, VERSIONS_SCHEMA), as_of, run)
    return BarSource(frame, origin, len(prices) + len(versions))


def known_then(
    current: DataFrame, history: DataFrame, as_of: dt.datetime | None, run: int | None
) -> DataFrame:
    """The versions in force at moment ``as_of`` after run ``run`` (``prices_at``): a
    bound not given is the largest value, as in the store's reads."""
    from pyspark.sql import functions as F

    moment = F.lit((as_of or dt.datetime.max).isoformat(sep=" ")).cast("timestamp_ntz")
    last_run = F.lit(NO_BOUND_RUN if run is None else run).cast("bigint")

    def within(frame: DataFrame) -> Column:
        return (frame["known_at"] <= moment) & (frame["run_id"] <= last_run)

    in_force = current.where(within(current)).select(*BAR_COLUMNS)
    superseded = history.where(
        within(history)
        & ((history["superseded_at"] > moment) | (history["superseded_by_run_id"] > last_run))
    ).select(*BAR_COLUMNS)
    return in_force.unionByName(superseded)


def lake_files(store: IcebergStore, table: str, start: dt.date, end: dt.date) -> list[str]:
    """The data files of the pinned snapshot of a bar table that may hold rows dated
    ``start``..``end`` (pyiceberg's plan: partitions and column statistics)."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    head = store.head
    snapshot = None if head is None else head.snapshots.get(table)
    if snapshot is None:
        return []
    lake = store.lake_table(table)
    if lake.snapshot_by_id(snapshot) is None:
        lake.refresh()  # written by another process since this one loaded the table
    scan = lake.scan(
        snapshot_id=snapshot,
        row_filter=And(
            GreaterThanOrEqual("date", start.isoformat()),  # type: ignore[call-arg, arg-type]
            LessThanOrEqual("date", end.isoformat()),  # type: ignore[call-arg, arg-type]
        ),
    )
    paths = []
    for task in scan.plan_files():
        if task.delete_files:
            raise StorageError(
                f"lake table {table} has row-level delete files (written by another engine), "
                "which the spark engine does not read"
            )
        paths.append(spark_path(store.location, task.file.file_path))
    return sorted(paths)


def spark_path(location: LakeLocation, file_path: str) -> str:
    """A data file's location as Spark opens it: a plain path for a local file (its
    folder names keep pyiceberg's percent-encoding literally), ``s3a://`` for S3
    (Hadoop's S3A connector; it needs hadoop-aws on the cluster)."""
    if file_path.startswith("s3://"):
        return "s3a://" + file_path.removeprefix("s3://")
    return location.data_path(file_path)


def export_window(
    store: Storage, name: str, start: dt.date, end: dt.date, folder: Path
) -> list[str]:
    """Stream a named query's rows to ``folder/<name>.parquet`` (none: no file)."""
    from index_builder.storage.duckdb.store import DuckDBStore

    assert isinstance(store, DuckDBStore)
    reader = (
        store.cursor()
        .sql(query(name), params={"start": start, "end": end})
        .to_arrow_reader(batch_size=EXPORT_BATCH_ROWS)
    )
    path = folder / f"{name}.parquet"
    rows = 0
    with pq.ParquetWriter(path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    if rows == 0:
        path.unlink()
        return []
    return [str(path)]


def _parquet(spark: SparkSession, paths: list[str], schema: str) -> DataFrame:
    """Parquet files as a DataFrame of ``schema`` (columns a file lacks are null; no
    partition columns are inferred from the folder names)."""
    if not paths:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).option("recursiveFileLookup", "true").parquet(*paths)
