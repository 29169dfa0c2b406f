"""How each persistent table is kept in the lake: partitioning, sort order, and how a
write reaches it.

* ``bars`` tables (prices, their history, quarantine) grow with the market data: they
  are partitioned by month and sorted by (date, symbol), so a date range reads only the
  files it needs; queries read them where they lie (DuckDB over the snapshot's Parquet
  files, pruned by the files' statistics). Only ingestion and rollback write them, one
  month partition at a time.
* ``results`` tables (levels, compositions, pro forma, build states) are partitioned by
  index: a build rewrites its own index's partition only.
* ``whole`` tables (securities, runs, definitions, jobs, versions...) are small: they are
  read whole into memory and rewritten whole when they change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TableKind = Literal["bars", "results", "whole"]


@dataclass(frozen=True)
class TableLayout:
    kind: TableKind
    partition: tuple[str, Literal["month", "identity"]] | None = None
    sort: tuple[str, ...] = ()


_LAYOUTS: dict[str, TableLayout] = {
    "prices": TableLayout("bars", ("date", "month"), ("date", "symbol")),
    "price_versions": TableLayout("bars", ("date", "month"), ("date", "symbol")),
    "quarantine": TableLayout("bars", None, ("run_id", "row_number")),
    "index_levels": TableLayout("results", ("index_id", "identity"), ("index_id", "date")),
    "index_spells": TableLayout("results", ("index_id", "identity"), ("index_id", "symbol")),
    "index_announcements": TableLayout("results", ("index_id", "identity"), ("index_id",)),
    "index_builds": TableLayout("results", None, ("index_id",)),
}

RESULT_KEY = "index_id"
"""The column a ``results`` table is grouped (and partitioned) by."""


def layout(table: str) -> TableLayout:
    """The layout of a persistent table (a new table is ``whole`` until listed here)."""
    return _LAYOUTS.get(table, TableLayout("whole"))
