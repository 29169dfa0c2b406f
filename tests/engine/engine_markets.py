"""Hypothesis strategy for random small markets, plus independent helpers for property tests.

A market is 3-15 symbols over 5-40 consecutive real XNYS sessions (2023-2025) with random
whole-day gaps, halts, IPOs, delistings, splits (close jumps, adj_close continuous), missing
adj_close, missing market_cap (-> close * shares_outstanding), frequent market-cap ties,
random universe filters, top_n, weighting, cap, rebalance schedule and base date. The
structure is drawn by hypothesis; the bulk numbers come from a numpy generator seeded by a
drawn integer, which keeps generation fast. Every row produced is valid.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from engine_scenarios import PRICE_COLUMNS, SECURITY_COLUMNS
from reference_engine import REBALANCES, WEIGHTINGS, xnys_sessions

SESSION_POOL = [s for s in xnys_sessions() if dt.date(2023, 1, 1) <= s <= dt.date(2025, 12, 31)]
SECTORS = ["Information Technology", "Health Care", "Financials", "Energy"]
EXCHANGES = ["NASDAQ", "NYSE", "NYSE ARCA"]
TYPES = ["Common Stock", "ETF"]
CAPS = [0.05, 0.1, 0.15, 0.2, 0.25, 1 / 3, 0.5, 1.0]
LETTERS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class Market:
    securities: pd.DataFrame
    prices: pd.DataFrame
    definition: dict[str, Any]

    def __repr__(self) -> str:  # compact falsifying examples
        return (
            f"Market(definition={self.definition!r}, "
            f"symbols={list(self.securities['symbol'])}, "
            f"days={sorted(set(self.prices['date']))[:1]}..{len(set(self.prices['date']))}, "
            f"rows={len(self.prices)})"
        )


def _symbols(rng: np.random.Generator, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        length = int(rng.integers(1, 5))
        symbol = "".join(rng.choice(LETTERS, size=length))
        if symbol not in out:
            out.append(symbol)
    return out


def _random_case(rng: np.random.Generator, text: str) -> str:
    return [text, text.lower(), text.upper()][int(rng.integers(0, 3))]


@st.composite
def markets(
    draw: st.DrawFn,
    *,
    weighting: str | None = None,
    rebalance: str | None = None,
    filters: bool = True,
    lags: bool = True,
) -> Market:
    n_symbols = draw(st.integers(3, 15))
    n_days = draw(st.integers(5, 40))
    start = draw(st.integers(0, len(SESSION_POOL) - n_days))
    seed = draw(st.integers(0, 2**32 - 1))
    top_n = draw(st.integers(1, n_symbols + 2))
    weighting = weighting or draw(st.sampled_from(WEIGHTINGS))
    cap = draw(st.sampled_from(CAPS)) if weighting == "capped_market_cap" else None
    rebalance = rebalance or draw(st.sampled_from(REBALANCES))
    tie_caps = draw(st.booleans())
    use_filters = filters and draw(st.integers(0, 2)) == 0
    base_kind = draw(st.sampled_from(["none", "session", "weekend"]))
    base_offset = draw(st.integers(0, n_days // 2))
    base_value = draw(st.sampled_from([1000.0, 100.0, 1.0]))
    effective_lag = draw(st.sampled_from([0, 0, 1, 2, 5])) if lags else 0

    rng = np.random.default_rng(seed)
    sessions = SESSION_POOL[start : start + n_days]
    # Whole-day gaps: a session without any data (never the first one).
    days = [s for i, s in enumerate(sessions) if i == 0 or rng.random() > 0.05]

    symbols = _symbols(rng, n_symbols)
    securities = pd.DataFrame(
        [
            {
                "symbol": s,
                "name": f"{s} Corp",
                "exchange": EXCHANGES[int(rng.integers(0, len(EXCHANGES)))],
                "sector": SECTORS[int(rng.integers(0, len(SECTORS)))],
                "industry": "Industry",
                "currency": "USD",
                "type": "ETF" if rng.random() < 0.2 else "Common Stock",
            }
            for s in symbols
        ],
        columns=SECURITY_COLUMNS,
    )

    rows: list[dict[str, Any]] = []
    for k, symbol in enumerate(symbols):
        n = len(days)
        first = 0 if k == 0 or rng.random() < 0.6 else int(rng.integers(1, n))  # IPO
        last = n - 1 if rng.random() < 0.7 else int(rng.integers(first, n))  # delisting
        halt_prob = [0.0, 0.05, 0.2, 0.6][int(rng.integers(0, 4))]
        adj_nan_prob = [0.0, 0.1, 1.0][int(rng.integers(0, 3))]
        mc_given = rng.random() < 0.5
        adj = float(rng.uniform(5, 200))
        factor = float(rng.uniform(1.0, 1.3))  # close / adj_close before any split
        shares = float(rng.uniform(1e6, 1e8))
        for i in range(first, last + 1):
            if i > 0:
                adj *= math.exp(rng.normal(0.0, 0.03))
                if rng.random() < 0.03:
                    factor /= 2.0  # 2:1 split: close halves, adj_close continuous
                if rng.random() < 0.03:
                    shares *= float(rng.uniform(0.9, 1.2))
            halted = not (k == 0 and i == 0) and rng.random() < halt_prob
            if halted:
                continue
            close = adj * factor
            if tie_caps:
                market_cap = float(rng.integers(1, 4)) * 1e9
                row_shares = market_cap / close
            else:
                row_shares = shares
                market_cap = close * shares if mc_given else math.nan
            rows.append(
                {
                    "date": days[i],
                    "symbol": symbol,
                    "close": close,
                    "adj_close": math.nan if rng.random() < adj_nan_prob else adj,
                    "volume": float(rng.integers(1_000, 1_000_000)),
                    "shares_outstanding": row_shares,
                    "market_cap": market_cap,
                }
            )
    prices = pd.DataFrame(rows, columns=PRICE_COLUMNS)

    universe: dict[str, Any] = {
        "sectors": None,
        "exchanges": None,
        "types": None,
        "min_price": None,
        "min_market_cap": None,
    }
    if use_filters:
        if rng.random() < 0.5:
            k = int(rng.integers(1, len(SECTORS) + 1))
            picked = rng.choice(SECTORS, size=k, replace=False)
            universe["sectors"] = [_random_case(rng, str(s)) for s in picked]
        if rng.random() < 0.3:
            universe["exchanges"] = [_random_case(rng, EXCHANGES[int(rng.integers(0, 3))])]
        if rng.random() < 0.5:
            universe["types"] = [_random_case(rng, "Common Stock")]
        if rng.random() < 0.3:
            universe["min_price"] = float(np.quantile(prices["close"], rng.uniform(0, 0.5)))
        if rng.random() < 0.3:
            caps = prices["market_cap"].fillna(prices["close"] * prices["shares_outstanding"])
            universe["min_market_cap"] = float(np.quantile(caps, rng.uniform(0, 0.5)))

    base_date: dt.date | None = None
    if base_kind != "none":
        base_date = sessions[min(base_offset, len(sessions) - 1)]
        if base_kind == "weekend":  # the Saturday on or after that session
            base_date += dt.timedelta(days=(5 - base_date.weekday()) % 7)

    definition = {
        "id": "random",
        "top_n": top_n,
        "weighting": weighting,
        "cap": cap,
        "rebalance": rebalance,
        "base_date": base_date,
        "base_value": base_value,
        "universe": universe,
    }
    if effective_lag:
        definition["effective_lag"] = effective_lag
    return Market(securities, prices, definition)


def carried_prices(prices: pd.DataFrame) -> dict[dt.date, dict[str, float]]:
    """P (adj_close if finite and > 0, else close) per trading day, carried forward."""
    by_day: dict[dt.date, dict[str, float]] = {}
    for row in prices.to_dict("records"):
        adj = row["adj_close"]
        price = adj if math.isfinite(adj) and adj > 0 else row["close"]
        by_day.setdefault(row["date"], {})[row["symbol"]] = price
    out: dict[dt.date, dict[str, float]] = {}
    current: dict[str, float] = {}
    for day in sorted(by_day):
        current = {**current, **by_day[day]}
        out[day] = current
    return out


def close_enough(a: float, b: float, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    return abs(a - b) <= atol + rtol * abs(b)
