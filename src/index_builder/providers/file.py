"""The ``file`` provider: securities and prices from CSV or Parquet files.

Column names are matched case-insensitively and renamed before matching by a
column map per file: ``column_map`` (``--map old=new``) applies to both files,
``securities_column_map`` / ``prices_column_map`` (``--securities-map``,
``--prices-map``) to one, and win over ``column_map`` for the same column (so
two files whose columns share a name can map it differently). Values are passed
on raw (text for CSV) so that ingestion can quarantine a row whose field does
not parse instead of failing the file. Parquet files are streamed in record
batches.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from index_builder.errors import UnusableInputError
from index_builder.providers.base import ProviderCapabilities
from index_builder.providers.schema import KNOWN_AT, PRICES_SCHEMA, SECURITIES_SCHEMA, MarketData

PRICE_COLUMNS = (*PRICES_SCHEMA.names, KNOWN_AT)
SECURITY_COLUMNS = (*SECURITIES_SCHEMA.names, KNOWN_AT)
REQUIRED_PRICE_COLUMNS = ("date", "symbol", "close")
REQUIRED_SECURITY_COLUMNS = ("symbol",)
ROW_COLUMN = "_row"
_BATCH_ROWS = 1 << 17  # 131,072 rows: DuckDB converts each batch on its own thread


class FileProvider:
    """Reads the interchange format of ``METHODOLOGY.md`` from local files."""

    name = "file"
    capabilities = ProviderCapabilities(
        adjusted_prices=True, dividends=True, splits=True, listings=True
    )

    def list_securities(
        self, types: Sequence[str], exchanges: Sequence[str], **query: Any
    ) -> pa.Table:
        """The securities file's rows of these types on these exchanges."""
        from index_builder.ingest.universe import filter_listings

        path = Path(query["securities"])
        table = open_table(
            path,
            file_column_map(query, "securities"),
            SECURITY_COLUMNS,
            REQUIRED_SECURITY_COLUMNS,
            map_option="--securities-map",
        )
        return filter_listings(table.read_all(), types, exchanges)

    def fetch(self, **query: Any) -> MarketData:
        """``securities``/``prices`` paths (CSV or Parquet); optional ``column_map``
        (both files), ``securities_column_map`` and ``prices_column_map``."""
        securities = Path(query["securities"])
        prices = Path(query["prices"])
        sec_reader = open_table(
            securities,
            file_column_map(query, "securities"),
            SECURITY_COLUMNS,
            REQUIRED_SECURITY_COLUMNS,
            map_option="--securities-map",
        )
        return MarketData(
            securities=sec_reader.read_all(),
            prices=open_table(
                prices,
                file_column_map(query, "prices"),
                PRICE_COLUMNS,
                REQUIRED_PRICE_COLUMNS,
                map_option="--prices-map",
            ),
        )


def file_column_map(query: Mapping[str, Any], file: str) -> dict[str, str]:
    """The column map of one file (``securities`` or ``prices``): ``column_map``
    (both files) overridden by ``<file>_column_map`` for the same source column."""
    shared: Mapping[str, str] = query.get("column_map") or {}
    own: Mapping[str, str] = query.get(f"{file}_column_map") or {}
    return {**shared, **own}


def parse_column_map(pairs: list[str], *, option: str = "--map") -> dict[str, str]:
    """``["Ticker=symbol", ...]`` -> ``{"ticker": "symbol"}`` (keys case-insensitive).

    ``option`` names the command-line option in the error of a malformed pair.
    """
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UnusableInputError(
                f"{option} expects old=new, got {pair!r}", field=option.removeprefix("--")
            )
        mapping[old.strip().lower()] = new.strip().lower()
    return mapping


def open_table(
    path: Path,
    column_map: Mapping[str, str],
    columns: tuple[str, ...],
    required: tuple[str, ...],
    *,
    map_option: str = "--map",
) -> pa.RecordBatchReader:
    """A stream of batches with exactly ``columns`` (+ a 1-based ``_row``), raw values.

    ``map_option`` is the option the error of a missing column suggests.
    """
    if not path.is_file():
        raise UnusableInputError(f"file not found: {path}", field=str(path))
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header = _csv_header(path)
        reader = _csv_batches(path, header)
        source_names = header
        source_types = [pa.string()] * len(header)
    elif suffix in {".parquet", ".pq"}:
        try:
            # pre_buffer (pyarrow's default) reads ahead whole row groups: for a
            # local file it only costs memory (400 MB more for a 15M-row file)
            pfile = pq.ParquetFile(path, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UnusableInputError(f"{path}: not a readable Parquet file: {exc}") from None
        source_names = list(pfile.schema_arrow.names)
        source_types = list(pfile.schema_arrow.types)
        reader = pfile.iter_batches(batch_size=_BATCH_ROWS)
    else:
        raise UnusableInputError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    renamed = [_canonical(n, column_map) for n in source_names]
    missing = [c for c in required if c not in renamed]
    if "market_cap" in columns and not {"market_cap", "shares_outstanding"} & set(renamed):
        missing.append("market_cap or shares_outstanding")
    if missing:
        raise UnusableInputError(
            f"{path}: missing required column(s): {', '.join(missing)} "
            f"(found: {', '.join(source_names)}; rename with {map_option} old=new)",
            field=missing[0],
        )
    duplicated = sorted({n for n in renamed if renamed.count(n) > 1 and n in columns})
    if duplicated:
        raise UnusableInputError(
            f"{path}: column(s) given twice: {', '.join(duplicated)} (after renaming; "
            f"use {map_option} to rename this file's columns only)"
        )
    types = {name: _raw_type(name, t) for name, t in zip(renamed, source_types, strict=True)}
    schema = pa.schema(
        [pa.field(ROW_COLUMN, pa.int64())]
        + [pa.field(c, types.get(c, pa.string())) for c in columns]
    )
    return pa.RecordBatchReader.from_batches(schema, _conform(reader, renamed, columns, schema))


def _canonical(name: str, column_map: Mapping[str, str]) -> str:
    key = name.strip().lower()
    return column_map.get(key, key)


def _raw_type(name: str, source: pa.DataType) -> pa.DataType:
    """Keep Parquet's numeric and date types (validation casts them); text otherwise.

    A ``known_at`` or ``fetched_at`` timestamp keeps its time, as naive UTC.
    """
    if name in (KNOWN_AT, "fetched_at") and pa.types.is_timestamp(source):
        return pa.timestamp("us")
    if pa.types.is_floating(source) or pa.types.is_integer(source):
        return pa.float64()
    if pa.types.is_date(source) or pa.types.is_timestamp(source):
        return pa.date32()
    return pa.string()


def _conform(
    batches: Iterator[pa.RecordBatch],
    renamed: list[str],
    columns: tuple[str, ...],
    schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    offset = 0
    for batch in batches:
        n = batch.num_rows
        arrays: list[pa.Array] = [pa.array(np.arange(offset + 1, offset + n + 1, dtype=np.int64))]
        for column in columns:
            if column in renamed:
                arr = batch.column(renamed.index(column))
                target = schema.field(column).type
                arrays.append(arr if arr.type == target else _convert(arr, target))
            else:
                arrays.append(pa.nulls(n, schema.field(column).type))
        offset += n
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _convert(arr: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(arr.type) and target == pa.date32():
        return arr.cast(pa.timestamp("s")).cast(pa.date32())
    # a time-zone aware timestamp becomes naive UTC (Arrow keeps the UTC instant)
    return arr.cast(target)


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        try:
            header = next(csv.reader(fh))
        except StopIteration:
            raise UnusableInputError(f"{path}: empty file (no header row)") from None
    if not any(h.strip() for h in header):
        raise UnusableInputError(f"{path}: empty header row")
    return header


def _csv_batches(path: Path, header: list[str]) -> Iterator[pa.RecordBatch]:
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=False,
    )
    read = pacsv.ReadOptions(block_size=16 << 20)
    try:
        reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
        yield from reader
    except pa.ArrowInvalid as exc:
        raise UnusableInputError(f"{path}: cannot read CSV: {exc}") from None
