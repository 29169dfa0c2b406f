"""Reference implementation of METHODOLOGY.md, Part 1 (test-side oracle).

This module is deliberately naive: plain Python, one trading day at a time, dicts and loops,
no vectorisation. Every step is meant to be checked line by line against Part 1 of
/work/shared/METHODOLOGY.md. It is only used by the tests, never by the product.

Conventions fixed where Part 1 is silent (kept identical to the engine's brief):

* Trading days are the distinct dates carrying at least one valid row (any symbol, whether
  or not it passes the universe filters). Rows whose close or market cap is not finite and
  > 0 are ignored defensively (the engine's input is already valid).
* market cap = ``market_cap`` when finite, else ``close * shares_outstanding``.
* P = ``adj_close`` when finite and > 0 on that row, else ``close``.
* ``min_price`` compares to ``close`` (unadjusted) and ``min_market_cap`` to the market cap,
  both inclusive (>=). String filters (sectors, exchanges, types) are case-insensitive; a
  filter that is None (or an empty list) does not filter. A symbol that has bars but no row
  in the securities table is never eligible.
* Weekly (ISO week), monthly and quarterly rebalances happen on a trading day whose next
  exchange session (XNYS calendar, not the next day in the data) falls in a later period.
  The base date is always a rebalance.
* No eligible security at a scheduled rebalance: at the base date ``ValueError``; later the
  constituents, units and weights stay unchanged, the date goes to ``errors``, the day is
  not flagged ``is_rebalance``, its turnover is NaN and the ranks shown stay those of the last
  rebalance that happened.
* capped_market_cap: if n * cap < 1, with n the number of selected constituents, equal
  weights; otherwise iterative capping with tolerance 1e-12.
* ``n_constituents`` in the levels is the size of the composition in force after the close
  of that day (the same set as the day's composition).
* Turnover is NaN on days that are not rebalances; 0 on the base date; on a later rebalance
  0.5 * sum |w_target - w_drifted| over the union of old and new constituents.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

LEVEL_COLUMNS = ["date", "level", "daily_return", "is_rebalance", "turnover", "n_constituents"]
COMPOSITION_COLUMNS = ["symbol", "rank", "weight", "market_cap", "price", "units", "sector"]
WEIGHTINGS = ("equal", "market_cap", "capped_market_cap")
REBALANCES = ("daily", "weekly", "monthly", "quarterly")
CAP_TOLERANCE = 1e-12


@dataclass
class ReferenceResult:
    levels: pd.DataFrame
    compositions: dict[dt.date, pd.DataFrame]
    changes: list[tuple[dt.date, list[str], list[str]]]
    errors: list[dt.date] = field(default_factory=list)


@dataclass
class _Bar:
    close: float
    price: float  # P: adj_close if finite and > 0, else close
    market_cap: float


# --------------------------------------------------------------------------- calendar


@lru_cache(maxsize=1)
def xnys_sessions() -> tuple[dt.date, ...]:
    """All XNYS sessions 1990..2040 as ``datetime.date`` (sorted)."""
    import exchange_calendars as xc

    with warnings.catch_warnings():  # exchange_calendars vs pandas 3 deprecation noise
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        cal = xc.get_calendar("XNYS", start="1990-01-01", end="2040-12-31")
    return tuple(ts.date() for ts in cal.sessions)


def xnys_next_session(day: dt.date) -> dt.date:
    """The first XNYS session strictly after ``day`` (``day`` need not be a session)."""
    sessions = xnys_sessions()
    i = bisect.bisect_right(sessions, day)
    if i == len(sessions):
        raise ValueError(f"no XNYS session after {day}")
    return sessions[i]


def period_key(day: dt.date, rebalance: str) -> tuple[int, int]:
    if rebalance == "weekly":
        iso = day.isocalendar()
        return (iso.year, iso.week)
    if rebalance == "monthly":
        return (day.year, day.month)
    if rebalance == "quarterly":
        return (day.year, (day.month - 1) // 3 + 1)
    raise ValueError(f"no period for rebalance={rebalance!r}")


def is_scheduled_rebalance(
    day: dt.date, rebalance: str, next_session: Callable[[dt.date], dt.date]
) -> bool:
    """Daily: every trading day. Otherwise: the next exchange session is in a later period."""
    if rebalance == "daily":
        return True
    return period_key(next_session(day), rebalance) > period_key(day, rebalance)


# --------------------------------------------------------------------------- input helpers


def _as_date(value: Any) -> dt.date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return pd.Timestamp(value).date()


def _number(value: Any) -> float:
    """float(value), or NaN for None / NA / anything not numeric."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _read_bars(prices: pd.DataFrame) -> dict[dt.date, dict[str, _Bar]]:
    """{date: {symbol: bar}} keeping valid rows only."""
    bars: dict[dt.date, dict[str, _Bar]] = {}
    for row in prices.to_dict("records"):
        day = _as_date(row["date"])
        symbol = str(row["symbol"])
        close = _number(row.get("close"))
        market_cap = _number(row.get("market_cap"))
        if not math.isfinite(market_cap):
            market_cap = close * _number(row.get("shares_outstanding"))
        if not (_finite_positive(close) and _finite_positive(market_cap)):
            continue  # invalid row: ignored
        adj_close = _number(row.get("adj_close"))
        price = adj_close if _finite_positive(adj_close) else close
        day_bars = bars.setdefault(day, {})
        if symbol in day_bars:
            raise ValueError(f"duplicate bar for {symbol} on {day}")
        day_bars[symbol] = _Bar(close=close, price=price, market_cap=market_cap)
    return bars


def _read_securities(securities: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(row["symbol"]): row for row in securities.to_dict("records")}


# --------------------------------------------------------------------------- selection


def _matches(value: Any, allowed: list[str] | None) -> bool:
    if not allowed:  # None or empty: no filter
        return True
    if not isinstance(value, str):
        return False
    return value.lower() in {a.lower() for a in allowed}


def _is_eligible(security: dict[str, Any] | None, bar: _Bar, universe: dict[str, Any]) -> bool:
    if security is None:
        return False
    if not _matches(security.get("sector"), universe.get("sectors")):
        return False
    if not _matches(security.get("exchange"), universe.get("exchanges")):
        return False
    if not _matches(security.get("type"), universe.get("types")):
        return False
    min_price = universe.get("min_price")
    if min_price is not None and bar.close < min_price:
        return False
    min_market_cap = universe.get("min_market_cap")
    return min_market_cap is None or bar.market_cap >= min_market_cap


def _rank_eligible(
    day_bars: dict[str, _Bar], secs: dict[str, dict[str, Any]], universe: dict[str, Any]
) -> list[str]:
    """Eligible symbols on the day, by market cap descending, ties by symbol ascending."""
    eligible = [s for s, bar in day_bars.items() if _is_eligible(secs.get(s), bar, universe)]
    return sorted(eligible, key=lambda s: (-day_bars[s].market_cap, s))


# --------------------------------------------------------------------------- weights


def target_weights(
    selected: list[str], market_caps: dict[str, float], weighting: str, cap: float | None
) -> dict[str, float]:
    n = len(selected)
    equal = {s: 1.0 / n for s in selected}
    if weighting == "equal":
        return equal
    total = sum(market_caps[s] for s in selected)
    weights = {s: market_caps[s] / total for s in selected}
    if weighting == "market_cap":
        return weights
    if weighting != "capped_market_cap":
        raise ValueError(f"unknown weighting {weighting!r}")
    if cap is None or not cap > 0:
        raise ValueError("capped_market_cap needs a positive cap")
    if n * cap < 1:
        return equal  # the cap cannot be met: equal weights are the smallest maximum
    capped: set[str] = set()
    while True:
        over = [s for s in selected if s not in capped and weights[s] > cap + CAP_TOLERANCE]
        if not over:
            return weights
        capped.update(over)
        free = [s for s in selected if s not in capped]
        if not free:  # only possible when n * cap == 1
            return equal
        # Capped names sit at the cap; what is left (1 - cap * #capped) goes to the free names
        # pro rata to market cap. This equals "cut to the cap and hand the excess out pro rata
        # over the uncapped names", because the free names' weights were already pro rata.
        budget = 1.0 - cap * len(capped)
        free_cap = sum(market_caps[s] for s in free)
        weights = {s: cap if s in capped else budget * market_caps[s] / free_cap for s in selected}


# --------------------------------------------------------------------------- build


def reference_build(
    securities: pd.DataFrame,
    prices: pd.DataFrame,
    definition: dict[str, Any],
    next_session: Callable[[dt.date], dt.date] | None = None,
) -> ReferenceResult:
    next_session = next_session or xnys_next_session
    weighting = definition.get("weighting", "equal")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}")
    rebalance = definition.get("rebalance", "daily")
    if rebalance not in REBALANCES:
        raise ValueError(f"unknown rebalance {rebalance!r}")
    top_n = int(definition["top_n"])
    if top_n < 1:
        raise ValueError("top_n must be >= 1")
    cap = definition.get("cap")
    base_value = definition.get("base_value")
    base_value = 1000.0 if base_value is None else float(base_value)
    universe = definition.get("universe") or {}

    secs = _read_securities(securities)
    bars = _read_bars(prices)
    days = sorted(bars)
    if not days:
        raise ValueError("no trading days in the data")

    # Base date: first trading day, or the requested date rolled forward to a trading day.
    requested = definition.get("base_date")
    if requested is None:
        base = days[0]
    else:
        later = [d for d in days if d >= _as_date(requested)]
        if not later:
            raise ValueError(f"no trading day on or after base date {requested}")
        base = later[0]

    last_price: dict[str, float] = {}  # P carried forward
    last_market_cap: dict[str, float] = {}  # last valid market cap
    units: dict[str, float] = {}  # q_i of the composition in force, in rank order
    ranks: dict[str, int] = {}  # rank among eligible at the last rebalance that happened
    previous_level = math.nan

    level_rows: list[dict[str, Any]] = []
    compositions: dict[dt.date, pd.DataFrame] = {}
    changes: list[tuple[dt.date, list[str], list[str]]] = []
    errors: list[dt.date] = []

    for day in days:
        for symbol, bar in bars[day].items():
            last_price[symbol] = bar.price
            last_market_cap[symbol] = bar.market_cap
        if day < base:
            continue

        # 1. Level with the units fixed at the last rebalance (prices carried forward).
        if day == base:
            level = base_value
            daily_return = 0.0
        else:
            level = 0.0
            for symbol, q in units.items():
                level += q * last_price[symbol]
            daily_return = level / previous_level - 1.0

        # 2. Rebalance at the close, if scheduled.
        is_rebalance = False
        turnover = math.nan  # only rebalances have a turnover
        if day == base or is_scheduled_rebalance(day, rebalance, next_session):
            ranked = _rank_eligible(bars[day], secs, universe)
            if not ranked:
                if day == base:
                    raise ValueError(f"no eligible security on the base date {day}")
                errors.append(day)  # keep constituents, units and weights unchanged
            else:
                selected = ranked[:top_n]
                caps = {s: bars[day][s].market_cap for s in selected}
                weights = target_weights(selected, caps, weighting, cap)
                turnover = 0.0  # the base date's formation is not turnover
                if day != base:
                    drifted = {s: q * last_price[s] / level for s, q in units.items()}
                    total_change = 0.0
                    for symbol in sorted(set(drifted) | set(weights)):
                        total_change += abs(weights.get(symbol, 0.0) - drifted.get(symbol, 0.0))
                    turnover = 0.5 * total_change
                    old_set, new_set = set(units), set(selected)
                    if old_set != new_set:
                        changes.append((day, sorted(new_set - old_set), sorted(old_set - new_set)))
                # selected symbols have a valid row today, so last_price is today's P
                units = {s: level * weights[s] / last_price[s] for s in selected}
                ranks = {s: i + 1 for i, s in enumerate(ranked)}
                is_rebalance = True

        # 3. Outputs for the day: composition in force after the close.
        level_rows.append(
            {
                "date": day,
                "level": level,
                "daily_return": daily_return,
                "is_rebalance": is_rebalance,
                "turnover": turnover,
                "n_constituents": len(units),
            }
        )
        comp_rows = []
        for symbol, q in units.items():
            sector = secs[symbol].get("sector")
            comp_rows.append(
                {
                    "symbol": symbol,
                    "rank": ranks[symbol],
                    "weight": q * last_price[symbol] / level,
                    "market_cap": last_market_cap[symbol],
                    "price": last_price[symbol],
                    "units": q,
                    "sector": sector,
                }
            )
        comp = pd.DataFrame(comp_rows, columns=COMPOSITION_COLUMNS)
        compositions[day] = comp.sort_values("rank", kind="stable").reset_index(drop=True)
        previous_level = level

    levels = pd.DataFrame(level_rows, columns=LEVEL_COLUMNS)
    levels["is_rebalance"] = levels["is_rebalance"].astype(bool)
    levels["n_constituents"] = levels["n_constituents"].astype("int64")
    return ReferenceResult(levels=levels, compositions=compositions, changes=changes, errors=errors)
