"""The tables of a warehouse schema: their columns, types and merge keys.

``index-builder warehouse publish`` fills them (merging on the keys) and
``index-builder warehouse ddl`` creates them. Five of them mirror lake tables of the
same name (same column names and types, fewer columns), so the views read either a
published schema or the lake's tables registered in the warehouse:

* ``index_levels``, ``index_spells``, ``securities``, ``index_builds`` and
  ``index_definitions`` are lake tables (storage/iceberg/layout.py);
* ``index_changes`` (the API's composition changes), ``index_holdings`` (each
  rebalance's constituents: rank, target weight and units) and
  ``index_constituent_prices`` (each constituent's price and market cap on every day
  it is held) are computed by the engine at publish time: the lake keeps no target
  weights, and a weight on a day between rebalances needs each holding's growth since
  its rebalance, which only the engine computes (methodology, part 2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A column: name, portable SQL type (compiled per dialect) and nullability."""

    name: str
    type: str  # VARCHAR | DOUBLE | DATE | BOOLEAN | BIGINT | INTEGER | TIMESTAMP
    nullable: bool = True


@dataclass(frozen=True)
class WarehouseTable:
    """A warehouse table: ``keys`` identify a row (the merge matches on them);
    ``per_index``: its rows belong to one index each (``index_id``), so a publish
    replaces exactly the rows of the indices it publishes."""

    name: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...]
    per_index: bool = True
    in_lake: bool = False
    doc: str = ""

    @property
    def column_names(self) -> list[str]:
        """Column names in table order."""
        return [c.name for c in self.columns]

    @property
    def values(self) -> list[str]:
        """The columns that are not keys (the ones a merge may update)."""
        return [c.name for c in self.columns if c.name not in self.keys]


def _c(name: str, type_: str, nullable: bool = True) -> Column:
    return Column(name, type_, nullable)


TABLES: tuple[WarehouseTable, ...] = (
    WarehouseTable(
        "index_definitions",
        (
            _c("index_id", "VARCHAR", False),
            _c("name", "VARCHAR"),
            _c("return_type", "VARCHAR"),
            _c("weighting", "VARCHAR"),
            _c("rebalance", "VARCHAR"),
            _c("definition", "VARCHAR", False),
            _c("builtin", "BOOLEAN", False),
        ),
        ("index_id",),
        in_lake=True,
        doc="One row per published index: its definition (JSON) and headline fields.",
    ),
    WarehouseTable(
        "index_builds",
        (
            _c("index_id", "VARCHAR", False),
            _c("version", "BIGINT", False),
            _c("definition_hash", "VARCHAR", False),
            _c("base_date", "DATE", False),
            _c("built_through", "DATE", False),
            _c("data_run_id", "BIGINT", False),
            _c("built_at", "TIMESTAMP", False),
        ),
        ("index_id",),
        in_lake=True,
        doc="The build each published index's results come from.",
    ),
    WarehouseTable(
        "index_levels",
        (
            _c("index_id", "VARCHAR", False),
            _c("date", "DATE", False),
            _c("level", "DOUBLE", False),
            _c("daily_return", "DOUBLE", False),
            _c("is_rebalance", "BOOLEAN", False),
            _c("turnover", "DOUBLE"),
            _c("n_constituents", "INTEGER", False),
            _c("level_price", "DOUBLE"),
            _c("level_total", "DOUBLE"),
            _c("level_net_total", "DOUBLE"),
            _c("reference_date", "DATE"),
        ),
        ("index_id", "date"),
        in_lake=True,
        doc="Every built day: the headline level and every return variant's level.",
    ),
    WarehouseTable(
        "index_spells",
        (
            _c("index_id", "VARCHAR", False),
            _c("symbol", "VARCHAR", False),
            _c("valid_from", "DATE", False),
            _c("valid_to", "DATE"),
        ),
        ("index_id", "symbol", "valid_from"),
        in_lake=True,
        doc="Constituent spells: in force after the close of valid_from through valid_to.",
    ),
    WarehouseTable(
        "securities",
        (
            _c("symbol", "VARCHAR", False),
            _c("name", "VARCHAR"),
            _c("exchange", "VARCHAR"),
            _c("sector", "VARCHAR"),
            _c("industry", "VARCHAR"),
            _c("currency", "VARCHAR"),
            _c("company_id", "VARCHAR"),
        ),
        ("symbol",),
        per_index=False,
        in_lake=True,
        doc="The securities of the store (sector and name of the constituents).",
    ),
    WarehouseTable(
        "index_changes",
        (
            _c("index_id", "VARCHAR", False),
            _c("date", "DATE", False),
            _c("symbol", "VARCHAR", False),
            _c("change_type", "VARCHAR", False),
        ),
        ("index_id", "date", "symbol"),
        doc="Composition changes as the API answers them: entered or exited, by rebalance.",
    ),
    WarehouseTable(
        "index_holdings",
        (
            _c("index_id", "VARCHAR", False),
            _c("effective_date", "DATE", False),
            _c("symbol", "VARCHAR", False),
            _c("rank", "INTEGER", False),
            _c("weight", "DOUBLE", False),
            _c("units", "DOUBLE", False),
        ),
        ("index_id", "effective_date", "symbol"),
        doc="Each rebalance's constituents: rank, target weight and notional units.",
    ),
    WarehouseTable(
        "index_constituent_prices",
        (
            _c("index_id", "VARCHAR", False),
            _c("date", "DATE", False),
            _c("symbol", "VARCHAR", False),
            _c("price", "DOUBLE", False),
            _c("market_cap", "DOUBLE"),
        ),
        ("index_id", "date", "symbol"),
        doc="Each constituent's price (carried through halts, grown by the headline "
        "variant since its rebalance) and market cap on every day it is held.",
    ),
)

TABLE_NAMES = tuple(t.name for t in TABLES)
VIEW_SOURCES = (
    "index_levels",
    "index_spells",
    "securities",
    "index_holdings",
    "index_constituent_prices",
)
"""The tables the views read."""


def table(name: str) -> WarehouseTable:
    """The warehouse table called ``name``."""
    for t in TABLES:
        if t.name == name:
            return t
    raise KeyError(f"no warehouse table named {name!r}")
