"""Hand-computed checks of the return variants (METHODOLOGY.md Part 2) in tests/reference_engine.py.

Bars may carry ``dividend`` (cash per pre-split share going ex that day) and ``split_ratio``
(new shares per old share); the definition may carry ``return_type`` and ``tax``. Notation as in
test_reference_engine.py: L = level, q = units, RI = the per-security return price of a
variant (price / total / net), "J0".."J3" = JAN[0..3] = 2024-01-02 .. 2024-01-05.

The scenarios here are shared with test_return_variants_engine.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from typing import Any

import pandas as pd
import pytest

from engine_markets import carried_prices
from engine_scenarios import (
    JAN,
    JAN_2ND_WEEK,
    PRICE_COLUMNS,
    Scenario,
    all_scenarios,
    bar,
    definition,
    scenario,
    securities_frame,
    security,
)
from reference_engine import RETURN_TYPES, ReferenceResult, reference_build

approx = pytest.approx
VARIANT_PRICE_COLUMNS = [*PRICE_COLUMNS, "dividend", "split_ratio"]


# --------------------------------------------------------------------------- helpers


def action_bar(
    day: dt.date,
    symbol: str,
    close: float,
    *,
    mc: float,
    adj: float = math.nan,
    dividend: float = math.nan,
    split: float = math.nan,
) -> dict[str, Any]:
    row = bar(day, symbol, close, mc=mc, adj=adj)
    row["dividend"] = dividend
    row["split_ratio"] = split
    return row


def variant_prices(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=VARIANT_PRICE_COLUMNS)
    for column in VARIANT_PRICE_COLUMNS[2:]:
        frame[column] = frame[column].astype("float64")
    return frame


def flat(days: list[dt.date], symbol: str, closes: list[float], mc: float) -> list[dict[str, Any]]:
    """Bars without corporate actions (dividend / split_ratio null)."""
    return [action_bar(day, symbol, c, mc=mc) for day, c in zip(days, closes, strict=True)]


def build(s: Scenario) -> ReferenceResult:
    return reference_build(s.securities, s.prices, s.definition)


def with_definition(s: Scenario, **overrides: Any) -> Scenario:
    out = copy.deepcopy(s)
    out.definition.update(overrides)
    suffix = ",".join(f"{k}={v}" for k, v in overrides.items())
    out.name = f"{s.name}[{suffix}]"
    return out


def levels(res: ReferenceResult, variant: str) -> list[float]:
    return res.variant_levels[variant]


def comp_value(res: ReferenceResult, day: dt.date, symbol: str, name: str) -> Any:
    comp = res.compositions[day]
    return comp.loc[comp["symbol"] == symbol, name].item()


# --------------------------------------------------------------------------- scenarios


def dividend_ex_day() -> Scenario:
    # A pays 1.00 going ex on J2: close 20 -> 19. A's adj_close is used until J1 (before its
    # first dividend value the total return is the ratio of P); from J2 on the dividend
    # formulas use the close. B has no actions and no adj_close.
    a = [(20, 19), (20, 19), (19, 19), (20.9, 20.9)]
    rows = [
        action_bar(day, "A", c, adj=adj, mc=2e9, dividend=1.0 if i == 2 else math.nan)
        for i, (day, (c, adj)) in enumerate(zip(JAN, a, strict=True))
    ]
    rows += flat(JAN, "B", [10, 10, 11, 11], 1e9)
    return Scenario(
        "rv_dividend_ex_day",
        securities_frame([security(s) for s in "AB"]),
        variant_prices(rows),
        definition(top_n=2),
    )


def split_ex_day() -> Scenario:
    # A splits 2:1 on J2: close 100 -> 50; no adj_close anywhere.
    rows = [
        action_bar(day, "A", c, mc=2e9, split=2.0 if i == 2 else math.nan)
        for i, (day, c) in enumerate(zip(JAN, [100, 100, 50, 55], strict=True))
    ]
    rows += flat(JAN, "B", [30, 30, 30, 30], 1e9)
    return Scenario(
        "rv_split_ex_day",
        securities_frame([security(s) for s in "AB"]),
        variant_prices(rows),
        definition(top_n=2),
    )


def split_and_dividend() -> Scenario:
    # On J2, A splits 2:1 and pays 2.00 per pre-split share: close 100 -> 49.
    rows = [action_bar(day, "A", 100, mc=2e9) for day in JAN[:2]] + [
        action_bar(JAN[2], "A", 49, mc=2e9, dividend=2.0, split=2.0)
    ]
    rows += flat(JAN[:3], "B", [30, 30, 30], 1e9)
    return Scenario(
        "rv_split_and_dividend",
        securities_frame([security(s) for s in "AB"]),
        variant_prices(rows),
        definition(top_n=2),
    )


def halt_before_ex_date() -> Scenario:
    # A has no row on J1 (halted) and goes ex 1.00 on J2 with close 21. Weekly rebalance (the
    # week's last session is J3 = Jan 5), so A stays a constituent through the halt.
    rows = [
        action_bar(JAN[0], "A", 20, mc=2e9),
        action_bar(JAN[2], "A", 21, mc=2e9, dividend=1.0),
        action_bar(JAN[3], "A", 21, mc=2e9),
    ]
    rows += flat(JAN, "B", [10, 10, 10, 10], 1e9)
    return Scenario(
        "rv_halt_before_ex_date",
        securities_frame([security(s) for s in "AB"]),
        variant_prices(rows),
        definition(top_n=2, rebalance="weekly"),
    )


def dividend_stays_invested() -> Scenario:
    # Weekly rebalance: J0 (base), J3 (Fri Jan 5), Jan 8 is no rebalance (the week goes on).
    # A pays 2.00 going ex on J1 (close 20 -> 18), then rises 5% on J3. B is flat at 10 until
    # it rises 10% on Jan 8.
    days = [*JAN, JAN_2ND_WEEK[0]]
    a = [20, 18, 18, 18.9, 18.9]
    rows = [
        action_bar(day, "A", c, mc=2e9, dividend=2.0 if i == 1 else math.nan)
        for i, (day, c) in enumerate(zip(days, a, strict=True))
    ]
    rows += flat(days, "B", [10, 10, 10, 10, 11], 1e9)
    return Scenario(
        "rv_dividend_stays_invested",
        securities_frame([security(s) for s in "AB"]),
        variant_prices(rows),
        definition(top_n=2, rebalance="weekly"),
    )


def mixed_actions_market_cap() -> Scenario:
    # Market-cap weights, a security with actions next to one without (inferred net), a
    # security entering on J2 (first valid row on an ex-date: RI = close, the dividend of that
    # row earns nothing) and a monthly schedule (no rebalance after the base date in January).
    rows = [
        action_bar(JAN[0], "A", 50, mc=5e9),
        action_bar(JAN[1], "A", 24, mc=5e9, split=2.0, dividend=0.5),
        action_bar(JAN[2], "A", 25, mc=5e9),
        action_bar(JAN[3], "A", 24.5, mc=5e9, dividend=0.25),
        bar(JAN[0], "B", 10, adj=9.5, mc=3e9),
        bar(JAN[1], "B", 10.5, adj=10.0, mc=3e9),
        bar(JAN[2], "B", 10.0, adj=10.0, mc=3e9),
        bar(JAN[3], "B", 11.0, adj=11.0, mc=3e9),
        action_bar(JAN[2], "C", 40, mc=9e9, dividend=3.0),
        action_bar(JAN[3], "C", 38, mc=9e9, dividend=1.0),
    ]
    frame = pd.DataFrame(rows, columns=VARIANT_PRICE_COLUMNS)
    return Scenario(
        "rv_mixed_actions_market_cap",
        securities_frame([security(s) for s in "ABC"]),
        frame.astype({c: "float64" for c in VARIANT_PRICE_COLUMNS[2:]}),
        definition(top_n=3, weighting="market_cap", rebalance="daily", tax=0.15),
    )


def variant_scenarios() -> list[Scenario]:
    """The hand-made return-variant scenarios, each with every return_type as headline."""
    base = [
        dividend_ex_day(),
        split_ex_day(),
        split_and_dividend(),
        halt_before_ex_date(),
        dividend_stays_invested(),
        mixed_actions_market_cap(),
        scenario("dividend_day"),  # no dividend column: net inferred from adj_close
        scenario("split_day"),
    ]
    out = []
    for s in base:
        for return_type in RETURN_TYPES:
            out.append(with_definition(s, return_type=return_type))
    return out


# --------------------------------------------------------------------------- hand-computed cases


def test_dividend_day() -> None:
    res = build(dividend_ex_day())
    # J0: A and B at 1/2 (500 each). J1: close and adj_close both flat: L = 1000.
    # J2 (A's first dividend value: the formulas from here on): A's price return 19 / 20 - 1 =
    #     -5%, total (19 + 1) / 20 - 1 = 0, net (19 + 0.7 * 1) / 20 - 1 = -1.5%; B +10%.
    #     price L = 500 * 0.95 + 550 = 1025; total 500 + 550 = 1050; net 492.5 + 550 = 1042.5
    # J3 (daily equal weight): A +10% (20.9 / 19), B flat: L * 1.05.
    assert levels(res, "price") == approx([1000, 1000, 1025, 1076.25], rel=1e-12)
    assert levels(res, "total") == approx([1000, 1000, 1050, 1102.5], rel=1e-12)
    assert levels(res, "net_total") == approx([1000, 1000, 1042.5, 1094.625], rel=1e-12)
    # The headline is the default "total".
    assert list(res.levels["level"]) == levels(res, "total")
    assert list(res.levels["daily_return"]) == approx([0, 0, 0.05, 0.05], abs=1e-12)
    # Composition prices are money: real(r) * RI(t) / RI(r) with r the last rebalance, real =
    # P before A's first dividend value, the close from it on (amended contract: A used to
    # count as "with actions" from J0 and be quoted at its close 20 there). Daily rebalancing
    # makes the price real(t): P = adj_close 19 on J0, the close 19 on J2, 20.9 on J3.
    assert comp_value(res, JAN[0], "A", "price") == 19
    assert comp_value(res, JAN[0], "A", "units") == approx(500 / 19, rel=1e-12)
    assert comp_value(res, JAN[2], "A", "price") == approx(19, rel=1e-12)
    assert comp_value(res, JAN[3], "A", "price") == approx(20.9, rel=1e-12)
    # Turnover on J2 (daily): drifted A = 500 / 1050, B = 550 / 1050 -> 0.5 * 2 * 25 / 1050.
    assert res.levels["turnover"][2] == approx(25 / 1050, rel=1e-12)


def test_dividend_day_tax_is_a_definition_field() -> None:
    s = with_definition(dividend_ex_day(), tax=0.15)
    res = build(s)
    # J2: RI_A net = 20 * (19 + 0.85) / 20 = 19.85; L = 25 * 19.85 + 550 = 1046.25.
    assert levels(res, "net_total")[2] == approx(1046.25, rel=1e-12)
    assert levels(res, "total")[2] == approx(1050, rel=1e-12)  # tax only touches net


def test_split_day() -> None:
    res = build(split_ex_day())
    # Amended contract: A never gives a dividend value, so its total return is the ratio of P
    # (here the close: no adj_close) even with a split ratio; only the price return applies
    # s. (It used to be split-adjusted in every variant: 1000, 1000, 1000, 1050 for all.)
    # J2: close 100 -> 50 with split 2. Price return 50 * 2 / 100 - 1 = 0: L = 1000.
    #   Total return 50 / 100 - 1 = -50%: L = 500 * 0.5 + 500 = 750.
    #   Net r_p + 0.7 * (r_t - r_p) = 0 + 0.7 * -0.5 = -35%: L = 500 * 0.65 + 500 = 825.
    # J3 (daily, equal weights again): A 55 / 50 = +10% in every variant, B flat: L * 1.05.
    assert levels(res, "price") == approx([1000, 1000, 1000, 1050], rel=1e-12)
    assert levels(res, "total") == approx([1000, 1000, 750, 787.5], rel=1e-12)
    assert levels(res, "net_total") == approx([1000, 1000, 825, 866.25], rel=1e-12)
    # Composition: the money price on the J2 rebalance is P = the close 50 (no dividend
    # formulas in force), units 750 / 2 / 50 = 7.5.
    assert comp_value(res, JAN[2], "A", "price") == approx(50, rel=1e-12)
    assert comp_value(res, JAN[2], "A", "units") == approx(7.5, rel=1e-12)
    # With a continuous adj_close the total return sees no split: adj 50, 50, 50, 55.
    adjusted = split_ex_day()
    adjusted.prices.loc[adjusted.prices["symbol"] == "A", "adj_close"] = [50.0, 50.0, 50.0, 55.0]
    res = build(adjusted)
    for variant in RETURN_TYPES:
        assert levels(res, variant) == approx([1000, 1000, 1000, 1050], rel=1e-12), variant


def test_split_and_dividend_same_day() -> None:
    res = build(split_and_dividend())
    # J2: the dividend is per pre-split share. close * s = 49 * 2 = 98.
    #   RI_A price = 100 * 98 / 100 = 98: L = 500 * 0.98 + 500 = 990
    #   RI_A total = 100 * (98 + 2) / 100 = 100: L = 1000
    #   RI_A net = 100 * (98 + 0.7 * 2) / 100 = 99.4: L = 500 * 0.994 + 500 = 997
    assert levels(res, "price") == approx([1000, 1000, 990], rel=1e-12)
    assert levels(res, "total") == approx([1000, 1000, 1000], rel=1e-12)
    assert levels(res, "net_total") == approx([1000, 1000, 997], rel=1e-12)


def test_halt_before_ex_date() -> None:
    res = build(halt_before_ex_date())
    # J0: q_A = 25, q_B = 50. J1: A halted, carried at 20: L = 1000.
    # J2: the return is from the previous valid close (J0: 20):
    #   RI_A price = 20 * 21 / 20 = 21: L = 25 * 21 + 500 = 1025
    #   RI_A total = 20 * (21 + 1) / 20 = 22: L = 25 * 22 + 500 = 1050
    #   RI_A net = 20 * (21 + 0.7) / 20 = 21.7: L = 542.5 + 500 = 1042.5
    # J3: flat.
    assert levels(res, "price") == approx([1000, 1000, 1025, 1025], rel=1e-12)
    assert levels(res, "total") == approx([1000, 1000, 1050, 1050], rel=1e-12)
    assert levels(res, "net_total") == approx([1000, 1000, 1042.5, 1042.5], rel=1e-12)
    assert comp_value(res, JAN[1], "A", "price") == 20  # carried forward


def test_no_dividend_column_total_is_part_1_and_net_is_inferred() -> None:
    s = scenario("dividend_day")  # A: close 20, 20, 19, 20.9; adj 19, 19, 19, 20.9; no columns
    res = build(s)
    # total = Part 1 exactly (hand values in test_reference_engine.py): 1000, 1000, 1050, 1102.5.
    assert levels(res, "total") == list(res.levels["level"])
    assert list(res.levels["level"]) == approx([1000, 1000, 1050, 1102.5], rel=1e-12)
    # price: RI_A = close. J2: 500 * 19/20 + 500 * 1.1 = 1025; J3: 1025 * 1.05 = 1076.25.
    assert levels(res, "price") == approx([1000, 1000, 1025, 1076.25], rel=1e-12)
    # net: RI_A starts at P = 19. J2: r_p = -0.05, r_t = 0: r_net = -0.05 + 0.7 * 0.05 = -0.015,
    #   L = 500 * 0.985 + 550 = 1042.5. J3: r_p = r_t = 0.1: L = 1042.5 * 1.05 = 1094.625.
    # (The same numbers as the explicit 1.00 dividend of test_dividend_day.)
    assert levels(res, "net_total") == approx([1000, 1000, 1042.5, 1094.625], rel=1e-12)
    net = reference_build(s.securities, s.prices, {**s.definition, "return_type": "net_total"})
    # no actions: compositions are quoted in the Part 1 price P (daily rebalance): 19, 20.9
    assert comp_value(net, JAN[2], "A", "price") == approx(19, rel=1e-12)
    assert comp_value(net, JAN[3], "A", "price") == approx(20.9, rel=1e-12)


def test_dividend_stays_invested_until_next_rebalance() -> None:
    s = dividend_stays_invested()
    by_type = {v: build(with_definition(s, return_type=v)) for v in RETURN_TYPES}
    res = by_type["total"]
    j0, j1, j2, j3 = JAN
    jan8 = JAN_2ND_WEEK[0]
    # J0: q_A = 500 / 20 = 25, q_B = 50 in all variants; unchanged until the J3 rebalance.
    for v in RETURN_TYPES:
        for day in (j0, j1, j2):
            assert comp_value(by_type[v], day, "A", "units") == 25, (v, day)
            assert comp_value(by_type[v], day, "B", "units") == 50, (v, day)
    # J1: RI_A price 18, total 20 * (18 + 2) / 20 = 20, net 20 * (18 + 1.4) / 20 = 19.4.
    #   L: price 450 + 500 = 950, total 1000, net 485 + 500 = 985.
    # J3: A +5%: RI_A price 18.9, total 20 * 18.9 / 18 = 21, net 19.4 * 1.05 = 20.37.
    #   L: price 472.5 + 500 = 972.5; total 25 * 21 + 500 = 1025 (the dividend reinvested in A
    #   earned A's 5%: as cash it would be 25 * 18.9 + 50 + 500 = 1022.5); net 509.25 + 500.
    # Rebalance J3: q_A = L / 2 / RI_A, q_B = L / 2 / 10.
    # Jan 8: B +10%: L = L(J3) / 2 + L(J3) / 2 * 1.1 = L(J3) * 1.05.
    assert levels(res, "price") == approx([1000, 950, 950, 972.5, 1021.125], rel=1e-12)
    assert levels(res, "total") == approx([1000, 1000, 1000, 1025, 1076.25], rel=1e-12)
    assert levels(res, "net_total") == approx([1000, 985, 985, 1009.25, 1059.7125], rel=1e-12)
    # Units after the J3 rebalance, per variant.
    # (units are quoted against the money price, close(J3) = 18.9: L_v(J3) / 2 / 18.9)
    expected_a = {"price": 486.25 / 18.9, "total": 512.5 / 18.9, "net_total": 504.625 / 18.9}
    expected_b = {"price": 48.625, "total": 51.25, "net_total": 50.4625}
    for v in RETURN_TYPES:
        for day in (j3, jan8):
            assert comp_value(by_type[v], day, "A", "units") == approx(expected_a[v], rel=1e-12)
            assert comp_value(by_type[v], day, "B", "units") == approx(expected_b[v], rel=1e-12)
    # Drifted weights of A on J1: price 450 / 950; total 500 / 1000; net 485 / 985.
    assert comp_value(by_type["price"], j1, "A", "weight") == approx(450 / 950, rel=1e-12)
    assert comp_value(by_type["total"], j1, "A", "weight") == approx(0.5, rel=1e-12)
    assert comp_value(by_type["net_total"], j1, "A", "weight") == approx(485 / 985, rel=1e-12)
    # Turnover on J3 uses the headline's drifted weights: total A = 525 / 1025 -> 12.5 / 1025;
    # price A = 472.5 / 972.5 -> |0.5 - 472.5 / 972.5| = 13.75 / 972.5.
    assert res.levels["turnover"][3] == approx(12.5 / 1025, rel=1e-12)
    assert by_type["price"].levels["turnover"][3] == approx(13.75 / 972.5, rel=1e-12)
    # The variant levels do not depend on the headline.
    for v in RETURN_TYPES:
        assert by_type[v].variant_levels == res.variant_levels


def test_return_type_price_is_the_headline() -> None:
    res = build(with_definition(dividend_ex_day(), return_type="price"))
    assert list(res.levels["level"]) == levels(res, "price")
    assert list(res.levels["level"]) == approx([1000, 1000, 1025, 1076.25], rel=1e-12)
    assert list(res.levels["daily_return"]) == approx([0, 0, 0.025, 0.05], abs=1e-12)
    # Composition price = RI_price: 19 on J2; units on J2 = 512.5 / 19.
    assert comp_value(res, JAN[2], "A", "price") == approx(19, rel=1e-12)
    assert comp_value(res, JAN[2], "A", "units") == approx(512.5 / 19, rel=1e-12)
    # Turnover on J2 from the price variant's drift: A 475 / 1025 -> 37.5 / 1025.
    assert res.levels["turnover"][2] == approx(37.5 / 1025, rel=1e-12)
    # The other variants are computed all the same.
    assert levels(res, "total") == approx([1000, 1000, 1050, 1102.5], rel=1e-12)


def test_return_type_net_total_is_the_headline() -> None:
    res = build(with_definition(dividend_ex_day(), return_type="net_total"))
    assert list(res.levels["level"]) == levels(res, "net_total")
    assert comp_value(res, JAN[2], "A", "price") == approx(19, rel=1e-12)  # the close


def test_mixed_actions_market_cap() -> None:
    res = build(mixed_actions_market_cap())  # tax 0.15, market-cap weights, daily
    # J0: A 5e9, B 3e9: w 0.625 / 0.375. A (no dividend value yet, no adj_close): RI_A = P =
    #   50; B none: RI_B price 10, total 9.5, net 9.5. q_A = 625 / 50 = 12.5 in all variants.
    # J1: A's first dividend value, so the dividend formulas from here on: split 2 and 0.5
    #   per pre-split share, close 24: close * s = 48.
    #   RI_A price 48, total 48.5, net 48 + 0.85 * 0.5 = 48.425.
    #   B: r_p = 0.05, r_t = 10 / 9.5 - 1 = 1/19; net r = 0.05 + 0.85 * (1/19 - 0.05).
    #   price L = 625 * 0.96 + 375 * 1.05 = 600 + 393.75 = 993.75
    #   total L = 625 * 0.97 + 375 * 20 / 19
    r_b_net = 0.05 + 0.85 * (1 / 19 - 0.05)
    assert levels(res, "price")[1] == approx(993.75, rel=1e-12)
    assert levels(res, "total")[1] == approx(625 * 0.97 + 375 * 20 / 19, rel=1e-12)
    assert levels(res, "net_total")[1] == approx(625 * 0.9685 + 375 * (1 + r_b_net), rel=1e-12)
    # J2: C enters with its first valid row: RI_C = close 40, its 3.00 dividend earns nothing
    #   (C was not held). Market caps A 5e9, B 3e9, C 9e9: C ranks first.
    comp = res.compositions[JAN[2]]
    assert list(comp["symbol"]) == ["C", "A", "B"]
    assert comp_value(res, JAN[2], "C", "price") == 40
    # J3: C pays 1.00: RI_C total = 40 * (38 + 1) / 40 = 39 -> return -2.5%; net 38.85 / 40 - 1.
    #   A pays 0.25: total (24.5 + 0.25) / 25 - 1 = -0.01; B +10% (adj and close both).
    l2 = {v: levels(res, v)[2] for v in RETURN_TYPES}
    w = {"C": 9 / 17, "A": 5 / 17, "B": 3 / 17}
    r_total = {"C": 39 / 40 - 1, "A": 24.75 / 25 - 1, "B": 0.1}
    r_net = {"C": 38.85 / 40 - 1, "A": (24.5 + 0.85 * 0.25) / 25 - 1, "B": 0.1}
    r_price = {"C": 38 / 40 - 1, "A": 24.5 / 25 - 1, "B": 0.1}
    for v, r in (("price", r_price), ("total", r_total), ("net_total", r_net)):
        expected = l2[v] * (1 + sum(w[s] * r[s] for s in w))
        assert levels(res, v)[3] == approx(expected, rel=1e-12), v


def test_unknown_return_type_raises() -> None:
    s = with_definition(dividend_ex_day(), return_type="gross")
    with pytest.raises(ValueError, match="return_type"):
        build(s)


def test_null_columns_mean_no_actions() -> None:
    # dividend / split_ratio columns present but all null: the same as no columns.
    s = scenario("dividend_day")
    prices = s.prices.assign(dividend=math.nan, split_ratio=math.nan)
    res = reference_build(s.securities, prices, s.definition)
    plain = build(s)
    pd.testing.assert_frame_equal(res.levels, plain.levels, check_exact=True)
    assert res.variant_levels == plain.variant_levels


# --------------------------------------------------------------------------- Part 1 unchanged

PART_1_SCENARIOS = [s for s in all_scenarios() if not s.raises]


@pytest.mark.parametrize("s", PART_1_SCENARIOS, ids=lambda s: s.name)
def test_existing_scenarios_are_part_1(s: Scenario) -> None:
    res = build(s)
    # Without the new columns and keys the headline is total = P (adj_close or close):
    # composition prices are P carried forward, exactly, and the total variant is the level.
    assert levels(res, "total") == list(res.levels["level"])
    assert set(res.variant_levels) == set(RETURN_TYPES)
    assert all(len(v) == len(res.levels) for v in res.variant_levels.values())
    carried = carried_prices(s.prices)
    for day, comp in res.compositions.items():
        for symbol, price in zip(comp["symbol"], comp["price"], strict=True):
            assert price == carried[day][symbol], (day, symbol)
    # Explicit defaults (return_type total, tax 0.30, null action columns) change nothing.
    explicit = reference_build(
        s.securities,
        s.prices.assign(dividend=math.nan, split_ratio=math.nan),
        {**s.definition, "return_type": "total", "tax": 0.30},
    )
    pd.testing.assert_frame_equal(explicit.levels, res.levels, check_exact=True)
    for day in res.compositions:
        pd.testing.assert_frame_equal(
            explicit.compositions[day], res.compositions[day], check_exact=True
        )
    assert explicit.changes == res.changes
    assert explicit.errors == res.errors
    assert explicit.variant_levels == res.variant_levels


@pytest.mark.parametrize("s", variant_scenarios(), ids=lambda s: s.name)
def test_variant_scenarios_headline_is_consistent(s: Scenario) -> None:
    res = build(s)
    headline = s.definition["return_type"]
    assert list(res.levels["level"]) == levels(res, headline)
    for day, level in zip(res.levels["date"], res.levels["level"], strict=True):
        comp = res.compositions[day]
        assert float((comp["units"] * comp["price"]).sum()) == approx(level, rel=1e-12)
        assert float(comp["weight"].sum()) == approx(1.0, abs=1e-12)
