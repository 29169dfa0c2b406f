"""The tables of an export: their columns, cell kinds and row conversion.

Every format writes the same four tables with the same columns: ``summary``,
``performance``, ``compositions`` and ``changes``. Values are passed through
unrounded; only the xlsx writer adds display formats.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from index_builder.engine.analytics import Summary
from index_builder.engine.spells import Change
from index_builder.services.queries import Composition, Window

CellKind = Literal["date", "datetime", "str", "int", "float"]
"""How a cell is written: dates and numbers stay typed in every format."""

Row = tuple[Any, ...]

SYMBOL_SEPARATOR = ";"
"""Separator of the symbols in the ``entered``/``exited`` columns of ``changes``."""


@dataclass(frozen=True)
class Column:
    """One column of a table."""

    name: str
    kind: CellKind
    number_format: str | None = None  # xlsx display format (values are never rounded)
    width: float = 12.0  # xlsx column width in characters


@dataclass(frozen=True)
class TableSpec:
    """A table's name (sheet title / file stem) and columns."""

    title: str
    stem: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]


DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
RETURN_FORMAT = "0.00%"
WEIGHT_FORMAT = "0.0000%"
LEVEL_FORMAT = "#,##0.0000"
MARKET_CAP_FORMAT = "#,##0"
PRICE_FORMAT = "#,##0.00"
UNITS_FORMAT = "#,##0.000000"
RATIO_FORMAT = "0.00"

PERFORMANCE = TableSpec(
    "Performance",
    "performance",
    (
        Column("date", "date", DATE_FORMAT, 12),
        Column("level", "float", LEVEL_FORMAT, 14),
        Column("daily_return", "float", RETURN_FORMAT, 14),
        Column("cumulative_return", "float", RETURN_FORMAT, 18),
        Column("level_price", "float", LEVEL_FORMAT, 14),
        Column("level_total", "float", LEVEL_FORMAT, 14),
        Column("level_net_total", "float", LEVEL_FORMAT, 16),
    ),
)

COMPOSITIONS = TableSpec(
    "Compositions",
    "compositions",
    (
        Column("date", "date", DATE_FORMAT, 12),
        Column("symbol", "str", None, 10),
        Column("name", "str", None, 36),
        Column("sector", "str", None, 24),
        Column("rank", "int", "0", 7),
        Column("weight", "float", WEIGHT_FORMAT, 11),
        Column("market_cap", "float", MARKET_CAP_FORMAT, 20),
        Column("price", "float", PRICE_FORMAT, 12),
        Column("units", "float", UNITS_FORMAT, 16),
    ),
)

CHANGES = TableSpec(
    "Changes",
    "changes",
    (
        Column("date", "date", DATE_FORMAT, 12),
        Column("entered", "str", None, 60),
        Column("exited", "str", None, 60),
    ),
)

SUMMARY_STEM = "summary"
SUMMARY_TITLE = "Summary"

# statistics that are fractions (percent-formatted) and ratios
PERCENT_STATISTICS = frozenset(
    {
        "total_return",
        "annualized_return",
        "annualized_volatility",
        "max_drawdown",
        "best_day",
        "worst_day",
        "turnover",
    }
)


@dataclass(frozen=True)
class Field:
    """One labelled value of the summary (index facts or a statistic)."""

    name: str
    value: Any
    kind: CellKind
    number_format: str | None = None


@dataclass(frozen=True)
class SummaryTable:
    """Facts about the export and the window's statistics."""

    facts: tuple[Field, ...]
    statistics: tuple[Field, ...]
    trading_days: int


def summary_table(
    window: Window, summary: Summary, trading_days: int, generated_at: dt.datetime
) -> SummaryTable:
    """The summary of one export; ``generated_at`` is naive UTC."""
    state = window.state
    facts: tuple[Field, ...] = (
        Field("index_id", window.definition.id, "str"),
        Field("name", window.definition.name, "str"),
        Field("window_start", window.start, "date", DATE_FORMAT),
        Field("window_end", window.end, "date", DATE_FORMAT),
        Field("trading_days", trading_days, "int", "0"),
        Field("base_date", state.base_date, "date", DATE_FORMAT),
        Field("build_version", state.version, "int", "0"),
        Field("built_at_utc", state.built_at, "datetime", DATETIME_FORMAT),
        Field("generated_at_utc", generated_at, "datetime", DATETIME_FORMAT),
    )
    if state.as_of is not None:  # a build as of a moment: the data known then
        facts += (Field("as_of_utc", state.as_of, "datetime", DATETIME_FORMAT),)
    if state.as_of_version is not None:  # a build as of a version: the data after it
        facts += (Field("as_of_version", state.as_of_version, "int", "0"),)
    statistics = tuple(
        Field(
            name,
            value,
            "float",
            RETURN_FORMAT if name in PERCENT_STATISTICS else RATIO_FORMAT,
        )
        for name, value in summary.as_dict().items()
    )
    return SummaryTable(facts, statistics, trading_days)


def finite(value: float | None) -> float | None:
    """``value``, or ``None`` when it is missing or not finite (written as an empty cell)."""
    if value is None or not math.isfinite(value):
        return None
    return value


def performance_rows(rows: Iterable[dict[str, Any]]) -> Iterator[Row]:
    """Rows of :data:`PERFORMANCE` from ``Performance.rows``."""
    for r in rows:
        yield (
            r["date"],
            r["level"],
            r["daily_return"],
            r["cumulative_return"],
            r["level_price"],
            r["level_total"],
            r["level_net_total"],
        )


def composition_rows(compositions: Iterable[Composition]) -> Iterator[Row]:
    """Rows of :data:`COMPOSITIONS`, one composition at a time (never all at once)."""
    for composition in compositions:
        for r in composition.rows():
            yield (
                r["date"],
                r["symbol"],
                r["name"],
                r["sector"],
                r["rank"],
                r["weight"],
                r["market_cap"],
                r["price"],
                r["units"],
            )


def change_rows(changes: Iterable[Change]) -> Iterator[Row]:
    """Rows of :data:`CHANGES`: symbols joined with :data:`SYMBOL_SEPARATOR`, none: missing."""
    for c in changes:
        yield (
            c.date,
            SYMBOL_SEPARATOR.join(c.entered) or None,
            SYMBOL_SEPARATOR.join(c.exited) or None,
        )
