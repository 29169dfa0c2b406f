"""Run the engine on in-memory data frames (notebooks, tests, small research).

The same computation as the stored builds (:func:`compute_index`), without a
database: ``build_in_memory(securities, prices, definition)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from index_builder.calendar import SessionCalendar, get_calendar
from index_builder.engine.definitions import IndexDefinition, parse_definition
from index_builder.engine.kernel import REBALANCE_SKIPPED, IndexComputation, compute_index
from index_builder.engine.panel import MarketPanel, SecurityMaster
from index_builder.engine.spells import changes_from_spells
from index_builder.errors import BuildError

SNAPSHOT_COLUMNS = ["date", "symbol", "rank", "weight", "market_cap", "price", "units", "sector"]


@dataclass
class InMemoryResult:
    """Levels, compositions, spells and changes of one in-memory build."""

    computation: IndexComputation
    levels: pd.DataFrame
    spells: pd.DataFrame
    changes: pd.DataFrame
    errors: list[dt.date]  # rebalances skipped: nothing eligible
    warnings: list[str] = field(default_factory=list)  # everything the build reported

    def snapshot(self, day: dt.date) -> pd.DataFrame:
        """Composition in force after the close of ``day`` (a trading day), by rank."""
        row = self.computation.panel.row_of(np.datetime64(day, "D"))
        snap = self.computation.snapshot(row)
        return pd.DataFrame(
            {
                "date": [day] * len(snap.symbols),
                "symbol": snap.symbols.astype(str),
                "rank": snap.ranks,
                "weight": snap.weights,
                "market_cap": snap.market_caps,
                "price": snap.prices,
                "units": snap.units,
                "sector": snap.sectors,
            },
            columns=SNAPSHOT_COLUMNS,
        )


def build_in_memory(
    securities: pd.DataFrame,
    prices: pd.DataFrame,
    definition: IndexDefinition | Mapping[str, Any],
    *,
    calendar: SessionCalendar | None = None,
) -> InMemoryResult:
    """Compute an index from a securities frame and a prices frame.

    Invalid rows are ignored, as ingestion would quarantine them (see
    :func:`valid_bars`); ``market_cap`` defaults to close x the shares given or in
    force.
    """
    definition = (
        definition
        if isinstance(definition, IndexDefinition)
        else parse_definition({"name": "in-memory", **dict(definition)})
    )
    calendar = calendar or get_calendar()
    panel = _panel(securities, prices, definition, calendar)
    base = _base_row(panel, definition)
    computation = compute_index(panel.rows_from(base), definition, calendar)
    days = [_date(d) for d in computation.days]
    levels = pd.DataFrame(
        {
            "date": days,
            "level": computation.level,
            "daily_return": computation.daily_return,
            "is_rebalance": computation.is_rebalance,
            "turnover": computation.turnover,
            "n_constituents": computation.n_constituents,
            **{f"level_{v}": lv for v, lv in computation.variant_levels.items()},
        }
    )
    spells = computation.spells()
    changes = changes_from_spells(spells, days, base_date=days[0])
    return InMemoryResult(
        computation=computation,
        levels=levels,
        spells=pd.DataFrame(
            {
                "symbol": [s.symbol for s in spells],
                "valid_from": [s.valid_from for s in spells],
                "valid_to": [s.valid_to for s in spells],
            }
        ),
        changes=pd.DataFrame(
            {
                "date": [c.date for c in changes],
                "entered": [list(c.entered) for c in changes],
                "exited": [list(c.exited) for c in changes],
            }
        ),
        errors=[w.day for w in computation.warnings if w.kind == REBALANCE_SKIPPED],
        warnings=[str(w) for w in computation.warnings],
    )


def _panel(
    securities: pd.DataFrame,
    prices: pd.DataFrame,
    definition: IndexDefinition,
    calendar: SessionCalendar,
) -> MarketPanel:
    sec = securities.sort_values("symbol").reset_index(drop=True)
    master = SecurityMaster(
        symbols=sec["symbol"].astype(object).to_numpy(),
        names=_column(sec, "name"),
        sectors=_column(sec, "sector"),
        exchanges=_column(sec, "exchange"),
        types=_column(sec, "type"),
        company_ids=_column(sec, "company_id"),
    )
    bars = valid_bars(prices, calendar)
    bars = bars[bars["symbol"].isin(set(master.symbols.tolist()))]
    dividend, split = bars["dividend"].to_numpy(), bars["split_ratio"].to_numpy()
    first_dividend = bars[np.isfinite(dividend)].groupby("symbol")["date"].min()
    master = SecurityMaster(
        **{**master.__dict__, "dividends_from": _dates_of(master, first_dividend)}
    )
    dates = bars["date"].to_numpy().astype("datetime64[D]")
    days = np.unique(dates)
    day_index: NDArray[np.int64] = np.searchsorted(days, dates).astype(np.int64)
    sec_index = master.column_of(bars["symbol"].to_numpy())
    cell = day_index * len(master) + sec_index
    acted = np.isfinite(dividend) | np.isfinite(split)
    shared = _shares_a_company(master)[sec_index]
    return MarketPanel.from_batches(
        days,
        master,
        [(cell, _values(bars, "close"), _values(bars, "adj_close"), _values(bars, "market_cap"))],
        actions=(cell[acted], dividend[acted], split[acted]),
        volumes=(cell[shared], bars["volume"].to_numpy()[shared]),
    )


def valid_bars(prices: pd.DataFrame, calendar: SessionCalendar) -> pd.DataFrame:
    """The valid rows of a prices frame with their market caps (METHODOLOGY "Inputs").

    A row is valid on an exchange session, with close finite and > 0, any split
    ratio finite and > 0, any dividend finite and >= 0, and a market cap finite and
    > 0: ``market_cap`` when given, else close x the shares: ``shares_outstanding``
    when given, else the shares in force (the symbol's latest earlier valid count
    times every split ratio since, this row's included). Copies of one (date,
    symbol) collapse when identical; differing copies are all invalid. Invalid rows
    give no count and their splits are not seen. As at ingestion, a copy invalid for a
    reason of its own is dropped for that reason and makes no conflict.
    """
    columns = ("close", "adj_close", "volume", "shares_outstanding", "market_cap")
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(prices["date"]).dt.normalize(),
            "symbol": prices["symbol"].astype(object),
            **{name: _floats(prices, name) for name in (*columns, "dividend", "split_ratio")},
        }
    ).drop_duplicates()  # exact copies collapse (NaN equals NaN here)
    close, split, dividend = frame["close"], frame["split_ratio"], frame["dividend"]
    given_cap = frame["market_cap"]
    sessions = np.isin(frame["date"].to_numpy().astype("datetime64[D]"), calendar.sessions)
    valid_alone = (
        sessions
        & np.isfinite(close)
        & (close > 0)
        & (given_cap.isna() | (np.isfinite(given_cap) & (given_cap > 0)))
        & (split.isna() | (np.isfinite(split) & (split > 0)))
        & (dividend.isna() | (np.isfinite(dividend) & (dividend >= 0)))
    )
    frame = frame[valid_alone]
    # copies of one (date, symbol) that differ, each valid on its own: all invalid
    conflicting = frame.duplicated(["date", "symbol"], keep=False)
    frame = frame[~conflicting].sort_values(["symbol", "date"]).reset_index(drop=True)
    while True:  # dropping a row without a market cap never invalidates another
        market_cap = _market_caps(frame)
        good = np.isfinite(market_cap) & (market_cap > 0)
        if good.all():
            frame["market_cap"] = market_cap
            frame["volume"] = frame["volume"].where(np.isfinite(frame["volume"]), 0.0)
            return cast(pd.DataFrame, frame)
        frame = frame[good].reset_index(drop=True)


def _market_caps(frame: pd.DataFrame) -> pd.Series:
    """Given market caps, else close x the shares given or in force (rows sorted by
    symbol and date)."""
    given = frame["shares_outstanding"]
    has_count = given.notna()
    anchor = has_count.groupby(frame["symbol"]).cumsum()  # counts given so far
    ratio = frame["split_ratio"].fillna(1.0).where(~has_count, 1.0)
    carried = ratio.groupby([frame["symbol"], anchor]).cumprod()
    last_count = given.groupby([frame["symbol"], anchor]).transform("first")
    shares = given.where(has_count, (last_count * carried).where(anchor > 0))
    return frame["market_cap"].where(frame["market_cap"].notna(), frame["close"] * shares)


def _dates_of(master: SecurityMaster, dates: pd.Series) -> NDArray[np.datetime64]:
    """A date per master column (NaT where ``dates``, indexed by symbol, has none)."""
    out = np.full(len(master), np.datetime64("NaT"), dtype="datetime64[D]")
    if len(dates):
        columns = master.column_of(dates.index.to_numpy(dtype=object))
        out[columns] = dates.to_numpy().astype("datetime64[D]")
    return out


def _values(frame: pd.DataFrame, column: str) -> NDArray[np.float64]:
    return np.asarray(frame[column].to_numpy(), dtype=np.float64)


def _shares_a_company(master: SecurityMaster) -> NDArray[np.bool_]:
    """Securities whose company has more than one class."""
    keys = master.company_keys().astype(str)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return np.asarray(counts[inverse] > 1, dtype=bool)


def _floats(frame: pd.DataFrame, name: str) -> NDArray[np.float64]:
    """A numeric column as float64 (all NaN when the column is absent)."""
    if name not in frame:
        return np.full(len(frame), np.nan)
    return np.asarray(frame[name].astype(float).to_numpy(), dtype=np.float64)


def _base_row(panel: MarketPanel, definition: IndexDefinition) -> int:
    if len(panel.days) == 0:
        raise BuildError(f"{definition.id}: no valid prices")
    if definition.base_date is None:
        return 0
    row = int(np.searchsorted(panel.days, np.datetime64(definition.base_date, "D")))
    if row >= len(panel.days):
        raise BuildError(f"{definition.id}: base date {definition.base_date} is after the data")
    return row


def _column(frame: pd.DataFrame, name: str) -> np.ndarray[Any, np.dtype[np.object_]]:
    if name not in frame:
        return np.full(len(frame), None, dtype=object)
    return np.array([v if isinstance(v, str) else None for v in frame[name]], dtype=object)


def _date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
