"""Small hand-made markets shared by the reference tests and the engine-vs-reference tests.

Every scenario uses real XNYS sessions of 2024. The expected numbers are worked out by hand
in tests/engine/test_reference_engine.py; tests/engine/test_engine_matches_reference.py runs
the same scenarios through the production engine and the reference.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

NAN = math.nan
IT = "Information Technology"

PRICE_COLUMNS = [
    "date",
    "symbol",
    "close",
    "adj_close",
    "volume",
    "shares_outstanding",
    "market_cap",
]
SECURITY_COLUMNS = ["symbol", "name", "exchange", "sector", "industry", "currency", "type"]


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# XNYS sessions used below (2024-01-01 New Year, 2024-01-15 MLK day, 2024-03-29 Good Friday).
JAN = [d(x) for x in ("2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05")]
JAN_2ND_WEEK = [d(x) for x in ("2024-01-08", "2024-01-09", "2024-01-10", "2024-01-11")]
MONTH_END = [d(x) for x in ("2024-01-29", "2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02")]
GOOD_FRIDAY_WEEK = [
    d(x)
    for x in ("2024-03-25", "2024-03-26", "2024-03-27", "2024-03-28", "2024-04-01", "2024-04-02")
]


@dataclass
class Scenario:
    name: str
    securities: pd.DataFrame
    prices: pd.DataFrame
    definition: dict[str, Any]
    raises: bool = False  # the build must raise ValueError
    engine: bool = True  # False: reference only (input the engine is not required to accept)


def security(
    symbol: str,
    *,
    sector: str = IT,
    exchange: str = "NASDAQ",
    type_: str = "Common Stock",
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "name": f"{symbol} Inc.",
        "exchange": exchange,
        "sector": sector,
        "industry": "Software",
        "currency": "USD",
        "type": type_,
    }


def securities_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SECURITY_COLUMNS)


def bar(
    day: dt.date,
    symbol: str,
    close: float,
    *,
    mc: float = NAN,
    adj: float = NAN,
    shares: float = NAN,
) -> dict[str, Any]:
    """A daily bar. With ``mc`` given and no ``shares``, shares = mc / close (consistent)."""
    if math.isnan(shares) and not math.isnan(mc) and close > 0:
        shares = mc / close
    return {
        "date": day,
        "symbol": symbol,
        "close": close,
        "adj_close": adj,
        "volume": 1_000_000.0,
        "shares_outstanding": shares,
        "market_cap": mc,
    }


def prices_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=PRICE_COLUMNS)
    for column in PRICE_COLUMNS[2:]:
        frame[column] = frame[column].astype("float64")
    return frame


def definition(**overrides: Any) -> dict[str, Any]:
    universe = {
        "sectors": None,
        "exchanges": None,
        "types": None,
        "min_price": None,
        "min_market_cap": None,
    }
    universe.update(overrides.pop("universe", {}))
    base = {
        "id": "test",
        "top_n": 10,
        "weighting": "equal",
        "cap": None,
        "rebalance": "daily",
        "base_date": None,
        "base_value": 1000.0,
        "universe": universe,
    }
    base.update(overrides)
    return base


def series_bars(
    days: list[dt.date], symbol: str, closes: list[float | None], mc: float
) -> list[dict[str, Any]]:
    """Bars for ``symbol`` with a constant market cap; None = no row that day."""
    pairs = zip(days, closes, strict=True)
    return [bar(day, symbol, c, mc=mc) for day, c in pairs if c is not None]


# --------------------------------------------------------------------------- scenarios


def equal_weight_daily() -> Scenario:
    rows = (
        series_bars(JAN, "A", [10, 11, 12.1, 12.1], 3e9)
        + series_bars(JAN, "B", [20, 18, 18, 19.8], 2e9)
        + series_bars(JAN, "C", [50, 55, 49.5, 49.5], 1e9)
    )
    return Scenario(
        "equal_weight_daily",
        securities_frame([security(s) for s in "ABC"]),
        prices_frame(rows),
        definition(top_n=3),
    )


def ties_by_symbol() -> Scenario:
    days = JAN[:3]
    # ZZZ drops from 3e9 to 1e9 and BBB rises from 0.5e9 to 1e9 on the third day.
    rows = [
        *series_bars(days[:2], "ZZZ", [10, 10], 3e9),
        bar(days[2], "ZZZ", 10, mc=1e9),
        *series_bars(days, "MMM", [20, 20, 20], 1e9),
        *series_bars(days, "AAA", [30, 30, 30], 1e9),
        *series_bars(days[:2], "BBB", [40, 40], 0.5e9),
        bar(days[2], "BBB", 40, mc=1e9),
    ]
    return Scenario(
        "ties_by_symbol",
        securities_frame([security(s) for s in ("ZZZ", "MMM", "AAA", "BBB")]),
        prices_frame(rows),
        definition(top_n=2),
    )


def fewer_than_n() -> Scenario:
    days = JAN[:2]
    rows = (
        series_bars(days, "A", [10, 11], 5e9)
        + series_bars(days, "B", [10, 10], 3e9)
        + series_bars(days, "C", [10, 9], 2e9)
    )
    return Scenario(
        "fewer_than_n",
        securities_frame([security(s) for s in "ABC"]),
        prices_frame(rows),
        definition(top_n=5, weighting="market_cap"),
    )


def halt_carried_forward() -> Scenario:
    days = [*JAN, JAN_2ND_WEEK[0]]
    rows = series_bars(days, "A", [10, 11, 12, 12, 13.2], 2e9) + series_bars(
        days, "B", [20, None, None, 22, 22], 1e9
    )
    return Scenario(
        "halt_carried_forward",
        securities_frame([security(s) for s in "AB"]),
        prices_frame(rows),
        definition(top_n=2, rebalance="weekly"),
    )


def ipo_and_delisting() -> Scenario:
    days = JAN + JAN_2ND_WEEK[:2]
    rows = (
        series_bars(days, "A", [10, 10.5, 10.5, 11, 11, 11], 300e6)
        + series_bars(days, "B", [20, 20, 20, 20, 20, 20], 100e6)
        + series_bars(days, "C", [40, 44, None, None, None, None], 200e6)
        + series_bars(days, "D", [None, None, 5, 5.5, 6.05, 6.05], 250e6)
    )
    return Scenario(
        "ipo_and_delisting",
        securities_frame([security(s) for s in "ABCD"]),
        prices_frame(rows),
        definition(top_n=2, rebalance="weekly"),
    )


def split_day() -> Scenario:
    # A splits 2:1 on JAN[2]; adj_close is continuous; market_cap is missing so it is
    # close * shares_outstanding. B has no adj_close at all (P falls back to close).
    a = [(100, 50, 1e6), (100, 50, 1e6), (50, 50, 2e6), (55, 55, 2e6)]
    rows = [
        bar(day, "A", close, adj=adj, shares=shares)
        for day, (close, adj, shares) in zip(JAN, a, strict=True)
    ]
    rows += [bar(day, "B", 30, shares=1e6) for day in JAN]
    return Scenario(
        "split_day",
        securities_frame([security(s) for s in "AB"]),
        prices_frame(rows),
        definition(top_n=2, weighting="market_cap"),
    )


def dividend_day() -> Scenario:
    # A pays 1.00 going ex on JAN[2]: close 20 -> 19, adj_close (back-adjusted) flat at 19.
    a = [(20, 19), (20, 19), (19, 19), (20.9, 20.9)]
    rows = [bar(day, "A", close, adj=adj, mc=2e9) for day, (close, adj) in zip(JAN, a, strict=True)]
    rows += series_bars(JAN, "B", [10, 10, 11, 11], 1e9)
    return Scenario(
        "dividend_day",
        securities_frame([security(s) for s in "AB"]),
        prices_frame(rows),
        definition(top_n=2),
    )


def schedule(name: str, days: list[dt.date], rebalance: str) -> Scenario:
    """A rises 10% a day, B is flat: equal weights drift, so every rebalance moves units."""
    rows = [bar(day, "A", 10 * 1.1**i, mc=2e9) for i, day in enumerate(days)]
    rows += [bar(day, "B", 10, mc=1e9) for day in days]
    return Scenario(
        name,
        securities_frame([security(s) for s in "AB"]),
        prices_frame(rows),
        definition(top_n=2, rebalance=rebalance),
    )


def capped(name: str, cap: float, top_n: int = 10) -> Scenario:
    days = JAN[:2]
    rows = (
        series_bars(days, "A", [10, 11], 60e9)
        + series_bars(days, "B", [10, 10], 25e9)
        + series_bars(days, "C", [10, 10], 10e9)
        + series_bars(days, "D", [10, 12], 5e9)
    )
    return Scenario(
        name,
        securities_frame([security(s) for s in "ABCD"]),
        prices_frame(rows),
        definition(top_n=top_n, weighting="capped_market_cap", cap=cap),
    )


def market_cap_drift() -> Scenario:
    # shares: A 10 throughout; B 10 then 20 from 2024-01-31 (share issuance).
    days = MONTH_END[:4]
    rows = [
        bar(day, "A", close, shares=10) for day, close in zip(days, [30, 33, 33, 29.7], strict=True)
    ]
    rows += [
        bar(day, "B", close, shares=shares)
        for day, close, shares in zip(days, [10, 10, 11, 11], [10, 10, 20, 20], strict=True)
    ]
    return Scenario(
        "market_cap_drift",
        securities_frame([security(s) for s in "AB"]),
        prices_frame(rows),
        definition(top_n=2, weighting="market_cap", rebalance="monthly"),
    )


def universe_filters() -> Scenario:
    day1, day2 = JAN[:2]
    secs = [
        security("AAA"),
        security("BBB", sector="Health Care"),
        security("CCC", exchange="NYSE"),
        security("DDD", type_="ETF"),
        security("EEE"),
        security("FFF"),
        security("GGG"),
    ]
    rows = []
    for day in (day1, day2):
        rows += [
            bar(day, "AAA", 100, mc=5e9),
            bar(day, "BBB", 100, mc=5e9),
            bar(day, "CCC", 100, mc=5e9),
            bar(day, "DDD", 100, mc=5e9),
            bar(day, "EEE", 5.0, adj=4.0, mc=1e9),  # both exactly at the minimum
            bar(day, "GGG", 50, mc=0.99e9),
        ]
    rows.append(bar(day1, "FFF", 4.99, adj=6.0, mc=2e9))  # close below min_price
    rows.append(bar(day2, "FFF", 5.0, adj=6.0, mc=2e9))  # now passes
    universe = {
        "sectors": ["information technology"],
        "exchanges": ["nasdaq"],
        "types": ["COMMON STOCK"],
        "min_price": 5.0,
        "min_market_cap": 1e9,
    }
    return Scenario(
        "universe_filters",
        securities_frame(secs),
        prices_frame(rows),
        definition(top_n=10, universe=universe),
    )


def base_date_weekend() -> Scenario:
    days = JAN + JAN_2ND_WEEK[:2]
    rows = series_bars(days, "A", [10, 11, 12, 13, 20, 22], 2e9) + series_bars(
        days, "B", [10, 10, 10, 10, 10, 11], 1e9
    )
    return Scenario(
        "base_date_weekend",
        securities_frame([security(s) for s in "AB"]),
        prices_frame(rows),
        definition(top_n=2, base_date=d("2024-01-06"), base_value=100.0),
    )


def base_date_without_data() -> Scenario:
    # 2024-01-03 is an XNYS session but carries no data: the base date rolls to 2024-01-04.
    days = [JAN[0], JAN[2], JAN[3]]
    rows = series_bars(days, "A", [10, 12, 12.6], 2e9) + series_bars(days, "B", [10, 9, 9], 1e9)
    return Scenario(
        "base_date_without_data",
        securities_frame([security(s) for s in "AB"]),
        prices_frame(rows),
        definition(top_n=2, base_date=d("2024-01-03")),
    )


def none_eligible_at_base() -> Scenario:
    rows = series_bars(JAN[:2], "A", [10, 11], 2e9)
    return Scenario(
        "none_eligible_at_base",
        securities_frame([security("A")]),
        prices_frame(rows),
        definition(top_n=2, universe={"min_price": 1e6}),
        raises=True,
    )


def none_eligible_later() -> Scenario:
    # Only A and C are Information Technology; both have no row on JAN[2], which is still a
    # trading day because the Energy name B trades.
    rows = (
        series_bars(JAN, "A", [10, 11, None, 12.1], 2e9)
        + series_bars(JAN, "C", [20, 20, None, 22], 1e9)
        + series_bars(JAN, "B", [50, 50, 50, 50], 9e9)
    )
    secs = [security("A"), security("B", sector="Energy"), security("C")]
    return Scenario(
        "none_eligible_later",
        securities_frame(secs),
        prices_frame(rows),
        definition(top_n=5, universe={"sectors": [IT]}),
    )


def invalid_rows() -> Scenario:
    # Reference only: the engine receives validated rows.
    rows = series_bars(JAN[:3], "A", [10, 11, 12.1], 2e9) + series_bars(
        JAN[:3], "B", [10, 10, 10], 1e9
    )
    rows += [
        bar(JAN[1], "X", 0.0, mc=5e9),  # close not > 0
        bar(JAN[1], "Y", NAN, mc=5e9),  # close missing
        bar(JAN[1], "Z", 100.0),  # no market cap and no shares
        bar(JAN[2], "W", 100.0, mc=-1.0),  # negative market cap
        bar(JAN[3], "X", 0.0, mc=5e9),  # the only row on JAN[3]: not a trading day
    ]
    return Scenario(
        "invalid_rows",
        securities_frame([security(s) for s in "ABWXYZ"]),
        prices_frame(rows),
        definition(top_n=10),
        engine=False,
    )


SCENARIO_BUILDERS: list[Callable[[], Scenario]] = [
    equal_weight_daily,
    ties_by_symbol,
    fewer_than_n,
    halt_carried_forward,
    ipo_and_delisting,
    split_day,
    dividend_day,
    lambda: schedule("weekly_two_weeks", JAN + JAN_2ND_WEEK + [d("2024-01-12")], "weekly"),
    lambda: schedule("monthly_month_end", MONTH_END, "monthly"),
    lambda: schedule("monthly_missing_last_session", [*MONTH_END[:2], MONTH_END[3]], "monthly"),
    lambda: schedule("weekly_good_friday", GOOD_FRIDAY_WEEK, "weekly"),
    lambda: schedule("monthly_good_friday", GOOD_FRIDAY_WEEK, "monthly"),
    lambda: schedule("quarterly_good_friday", GOOD_FRIDAY_WEEK, "quarterly"),
    lambda: schedule("quarterly_january", JAN + JAN_2ND_WEEK, "quarterly"),
    lambda: capped("capped_one_round", 0.4),
    lambda: capped("capped_two_rounds", 0.3),
    lambda: capped("capped_infeasible", 0.2),
    lambda: capped("capped_infeasible_fewer_than_top_n", 0.22, top_n=5),
    market_cap_drift,
    universe_filters,
    base_date_weekend,
    base_date_without_data,
    none_eligible_at_base,
    none_eligible_later,
    invalid_rows,
]


def all_scenarios() -> list[Scenario]:
    return [build() for build in SCENARIO_BUILDERS]


def scenario(name: str) -> Scenario:
    for s in all_scenarios():
        if s.name == name:
            return s
    raise KeyError(name)
