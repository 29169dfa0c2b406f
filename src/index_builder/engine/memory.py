"""Run the engine on in-memory data frames (notebooks, tests, small research).

The same computation as the stored builds (:func:`compute_index`), without a
database: ``build_in_memory(securities, prices, definition)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from index_builder.calendar import SessionCalendar, get_calendar
from index_builder.engine.definitions import IndexDefinition, parse_definition
from index_builder.engine.kernel import IndexComputation, compute_index
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
    errors: list[dt.date]

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

    Rows whose close or market cap is not finite and > 0 are ignored (they would
    be quarantined by ingestion). ``market_cap`` defaults to
    ``close * shares_outstanding``.
    """
    definition = (
        definition
        if isinstance(definition, IndexDefinition)
        else parse_definition({"name": "in-memory", **dict(definition)})
    )
    calendar = calendar or get_calendar()
    panel = _panel(securities, prices, definition)
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
        errors=[dt.date.fromisoformat(w.split(":", 1)[0]) for w in computation.warnings],
    )


def _panel(
    securities: pd.DataFrame, prices: pd.DataFrame, definition: IndexDefinition
) -> MarketPanel:
    sec = securities.sort_values("symbol").reset_index(drop=True)
    px = prices.copy()
    dividend, split = _floats(px, "dividend"), _floats(px, "split_ratio")
    has_action = np.isfinite(dividend) | np.isfinite(split)
    with_actions = set(px["symbol"].astype(object).to_numpy()[has_action])
    master = SecurityMaster(
        symbols=sec["symbol"].astype(object).to_numpy(),
        names=_column(sec, "name"),
        sectors=_column(sec, "sector"),
        exchanges=_column(sec, "exchange"),
        types=_column(sec, "type"),
        has_actions=np.array([s in with_actions for s in sec["symbol"]], dtype=bool),
        company_ids=_column(sec, "company_id"),
    )
    close = _floats(px, "close")
    adj = _floats(px, "adj_close")
    given = _floats(px, "market_cap")
    shares = _floats(px, "shares_outstanding")
    mcap: NDArray[np.float64] = np.where(np.isnan(given), close * shares, given)
    valid = np.isfinite(close) & (close > 0) & np.isfinite(mcap) & (mcap > 0)
    dates = pd.to_datetime(px["date"]).to_numpy().astype("datetime64[D]")[valid]
    days = np.unique(dates)
    day_index: NDArray[np.int64] = np.searchsorted(days, dates).astype(np.int64)
    sec_index = master.column_of(px["symbol"].astype(object).to_numpy()[valid])
    cell = day_index * len(master) + sec_index
    acted = has_action[valid]
    shared = _shares_a_company(master)[sec_index]
    return MarketPanel.from_batches(
        days,
        master,
        [(cell, close[valid], adj[valid], mcap[valid])],
        actions=(cell[acted], dividend[valid][acted], split[valid][acted]),
        volumes=(cell[shared], _floats(px, "volume")[valid][shared]),
    )


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
