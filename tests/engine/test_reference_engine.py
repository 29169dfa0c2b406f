"""Hand-computed checks of tests/reference_engine.py against METHODOLOGY.md Part 1 (and the
amended input, schedule, return-variant, aggregate-capping, filter and pro-forma rules).

Every expected number below is worked out by hand in the comments from the bars of the
scenario (tests/engine/engine_scenarios.py, or the small markets built in this module).
Notation: L = level, q = units, P = price used for returns, w = weight; "Jan 3" means
2024-01-03.
"""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from engine_markets import Market, carried_prices, close_enough, markets
from engine_scenarios import (
    GOOD_FRIDAY_WEEK,
    IT,
    JAN,
    JAN_2ND_WEEK,
    MONTH_END,
    NAN,
    PRICE_COLUMNS,
    Scenario,
    all_scenarios,
    d,
    definition,
    scenario,
    schedule,
    securities_frame,
    security,
)
from reference_engine import (
    COMPOSITION_COLUMNS,
    RETURN_TYPES,
    ReferenceResult,
    group_capped_weights,
    is_rebalance_day,
    is_scheduled_rebalance,
    period_end_sessions,
    reference_build,
    target_weights,
    xnys_next_session,
)

approx = pytest.approx
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def build(s: Scenario, **kwargs: object) -> ReferenceResult:
    return reference_build(s.securities, s.prices, s.definition, **kwargs)  # type: ignore[arg-type]


def column(res: ReferenceResult, name: str) -> list[object]:
    """A levels column; turnover (NaN on days without a rebalance) reads as 0 there."""
    if name == "turnover":
        rebalance = list(res.levels["is_rebalance"])
        values = list(res.levels["turnover"])
        assert all(math.isnan(v) != r for v, r in zip(values, rebalance, strict=True))
        return [v if r else 0.0 for v, r in zip(values, rebalance, strict=True)]
    return list(res.levels[name])


def comp(res: ReferenceResult, day: dt.date, name: str) -> list[object]:
    return list(res.compositions[day][name])


# --------------------------------------------------------------------------- basic mechanics


def test_equal_weight_daily_level_is_mean_of_returns() -> None:
    res = build(scenario("equal_weight_daily"))
    # base_date None -> first trading day (Jan 2).
    assert column(res, "date") == JAN
    # Returns (A, B, C):  Jan 3: +10%, -10%, +10%   mean 0.1/3 = 1/30
    #                     Jan 4: +10%,   0%, -10%   mean 0
    #                     Jan 5:   0%, +10%,   0%   mean 1/30
    assert column(res, "daily_return") == approx([0, 1 / 30, 0, 1 / 30], rel=1e-12, abs=1e-15)
    assert column(res, "level") == approx(
        [1000, 1000 * 31 / 30, 1000 * 31 / 30, 1000 * (31 / 30) ** 2], rel=1e-12
    )
    # Turnover Jan 3: drifted w = (1/3)(1.1, 0.9, 1.1) / (31/30) = (11/31, 9/31, 11/31);
    #   0.5 * (2 * |11/31 - 1/3| + |9/31 - 1/3|) = 0.5 * (2 * 2/93 + 4/93) = 4/93.
    # Jan 4: drifted (1.1, 1, 0.9)/3 (L unchanged): 0.5 * (0.1/3 + 0 + 0.1/3) = 1/30.
    # Jan 5: drifted (1, 1.1, 1)/3 / (31/30) = (10/31, 11/31, 10/31):
    #   0.5 * (2 * 1/93 + 2/93) = 2/93.
    assert column(res, "turnover") == approx([0, 4 / 93, 1 / 30, 2 / 93], rel=1e-12)
    assert column(res, "is_rebalance") == [True] * 4
    assert column(res, "n_constituents") == [3] * 4
    # Units at the base: q = L * w / P = 1000 * (1/3) / (10, 20, 50).
    assert comp(res, JAN[0], "units") == approx([1000 / 30, 1000 / 60, 1000 / 150], rel=1e-12)
    # After the Jan 5 rebalance: ranks by market cap (3e9, 2e9, 1e9), w = 1/3,
    # q = L(Jan 5) / 3 / P(Jan 5).
    last = res.compositions[JAN[3]]
    assert list(last["symbol"]) == ["A", "B", "C"]
    assert list(last["rank"]) == [1, 2, 3]
    assert list(last["weight"]) == approx([1 / 3] * 3, rel=1e-12)
    assert list(last["price"]) == approx([12.1, 19.8, 49.5])
    level = 1000 * (31 / 30) ** 2
    assert list(last["units"]) == approx([level / 3 / p for p in (12.1, 19.8, 49.5)], rel=1e-12)
    assert list(last["market_cap"]) == [3e9, 2e9, 1e9]
    assert list(last["sector"]) == ["Information Technology"] * 3
    assert res.changes == []
    assert res.errors == []


def test_ties_broken_by_symbol() -> None:
    res = build(scenario("ties_by_symbol"))
    # Jan 2, Jan 3: ZZZ 3e9; AAA and MMM tie at 1e9 -> AAA (symbol ascending); BBB 0.5e9.
    for day in JAN[:2]:
        assert comp(res, day, "symbol") == ["ZZZ", "AAA"]
        assert comp(res, day, "rank") == [1, 2]
    # Jan 4: all four tie at 1e9 -> AAA, BBB, MMM, ZZZ; top 2 = AAA, BBB.
    assert comp(res, JAN[2], "symbol") == ["AAA", "BBB"]
    assert comp(res, JAN[2], "rank") == [1, 2]
    assert res.changes == [(JAN[2], ["BBB"], ["ZZZ"])]
    # Flat prices: drifted (ZZZ 0.5, AAA 0.5) -> target (AAA 0.5, BBB 0.5):
    # 0.5 * (|0 - 0.5| + |0.5 - 0.5| + |0.5 - 0|) = 0.5.
    assert column(res, "turnover") == approx([0, 0, 0.5], abs=1e-12)
    assert column(res, "level") == approx([1000, 1000, 1000], rel=1e-12)


def test_fewer_than_n_eligible_takes_all() -> None:
    res = build(scenario("fewer_than_n"))
    # top_n 5, 3 eligible: all three, market-cap weights 5/10, 3/10, 2/10.
    assert column(res, "n_constituents") == [3, 3]
    assert comp(res, JAN[0], "symbol") == ["A", "B", "C"]
    assert comp(res, JAN[0], "weight") == approx([0.5, 0.3, 0.2], rel=1e-12)
    # Jan 3: L = 1000 * (0.5 * 1.1 + 0.3 * 1.0 + 0.2 * 0.9) = 1030.
    assert column(res, "level") == approx([1000, 1030], rel=1e-12)


def test_halt_keeps_last_price_zero_return() -> None:
    res = build(scenario("halt_carried_forward"))
    jan8 = d("2024-01-08")
    # Weekly: base Jan 2 and Friday Jan 5 (next session Jan 8 is in the next ISO week).
    assert column(res, "is_rebalance") == [True, False, False, True, False]
    # Base: w = 0.5, q_A = 500 / 10 = 50, q_B = 500 / 20 = 25.
    # Jan 3: B halted, P_B stays 20: L = 50 * 11 + 25 * 20 = 1050.
    # Jan 4: B halted: L = 50 * 12 + 25 * 20 = 1100.
    # Jan 5: B back at 22: L = 50 * 12 + 25 * 22 = 1150.
    # Jan 5 rebalance: q_A = 575 / 12, q_B = 575 / 22; Jan 8: L = 575 * 1.1 + 575 = 1207.5.
    assert column(res, "level") == approx([1000, 1050, 1100, 1150, 1207.5], rel=1e-12)
    assert column(res, "daily_return") == approx([0, 0.05, 1 / 21, 1 / 22, 0.05], rel=1e-12)
    # Jan 5 turnover: drifted (600, 550) / 1150 = (12/23, 11/23) vs (1/2, 1/2): 1/46.
    assert column(res, "turnover") == approx([0, 0, 0, 1 / 46, 0], abs=1e-15)
    # The halted name stays in, with carried price and last valid market cap.
    jan3 = res.compositions[JAN[1]].set_index("symbol")
    assert jan3.loc["B", "price"] == 20
    assert jan3.loc["B", "market_cap"] == 1e9
    assert jan3.loc["B", "units"] == approx(25, rel=1e-12)
    assert jan3.loc["B", "weight"] == approx(500 / 1050, rel=1e-12)
    assert comp(res, JAN[2], "weight") == approx([600 / 1100, 500 / 1100], rel=1e-12)
    assert comp(res, JAN[3], "units") == approx([575 / 12, 575 / 22], rel=1e-12)
    assert comp(res, jan8, "units") == approx([575 / 12, 575 / 22], rel=1e-12)


def test_ipo_enters_and_delisting_leaves_at_next_rebalance() -> None:
    res = build(scenario("ipo_and_delisting"))
    # Weekly, top 2. Base Jan 2: A (300e6), C (200e6), B (100e6) -> {A, C};
    # q_A = 500 / 10 = 50, q_C = 500 / 40 = 12.5.
    # Jan 3: L = 50 * 10.5 + 12.5 * 44 = 525 + 550 = 1075.
    # Jan 4: C delisted (no more rows): keeps P = 44; D (IPO, 250e6) waits for the rebalance:
    #        L = 525 + 550 = 1075.
    # Jan 5 (Friday): L = 50 * 11 + 550 = 1100. Eligible A 300e6, D 250e6, B 100e6 -> {A, D};
    #        q_A = 550 / 11 = 50, q_D = 550 / 5.5 = 100.
    # Jan 8: L = 50 * 11 + 100 * 6.05 = 1155. Jan 9: unchanged prices, 1155.
    assert column(res, "level") == approx([1000, 1075, 1075, 1100, 1155, 1155], rel=1e-12)
    assert comp(res, JAN[2], "symbol") == ["A", "C"]
    assert comp(res, JAN[2], "price") == [10.5, 44]
    assert comp(res, JAN[2], "market_cap") == [300e6, 200e6]
    assert comp(res, JAN[3], "symbol") == ["A", "D"]
    assert comp(res, JAN[3], "rank") == [1, 2]
    assert comp(res, JAN[3], "units") == approx([50, 100], rel=1e-12)
    assert res.changes == [(JAN[3], ["D"], ["C"])]
    # Jan 5 turnover: drifted A 550/1100 = 0.5, C 0.5 -> A 0.5, D 0.5: 0.5 * (0 + 0.5 + 0.5).
    assert column(res, "turnover") == approx([0, 0, 0, 0.5, 0, 0], abs=1e-15)


def test_split_day_does_not_move_the_index() -> None:
    res = build(scenario("split_day"))
    # market_cap missing -> close * shares: A 100 * 1e6 = 1e8 (and 50 * 2e6 = 1e8 after the
    # split on Jan 4), B 30 * 1e6 = 3e7. w = (10/13, 3/13) every day (daily rebalance).
    # P_A = adj_close: 50, 50, 50, 55 (close 100, 100, 50, 55); P_B = close (no adj_close).
    # Jan 3, Jan 4: no adjusted move -> L = 1000 (with close it would drop by 0.5 * 10/13).
    # Jan 5: A +10% -> R = 10/13 * 0.1 = 1/13, L = 1000 * 14/13.
    assert column(res, "level") == approx([1000, 1000, 1000, 1000 * 14 / 13], rel=1e-12)
    assert column(res, "daily_return") == approx([0, 0, 0, 1 / 13], rel=1e-12, abs=1e-15)
    split = res.compositions[JAN[2]].set_index("symbol")
    assert split.loc["A", "price"] == 50
    assert split.loc["A", "market_cap"] == 1e8
    assert split.loc["B", "market_cap"] == 3e7
    assert split.loc["A", "weight"] == approx(10 / 13, rel=1e-12)
    # q_A = 1000 * (10/13) / 50 = 200/13, on both sides of the split.
    assert split.loc["A", "units"] == approx(200 / 13, rel=1e-12)
    assert comp(res, JAN[0], "units") == approx([200 / 13, 1000 * 3 / 13 / 30], rel=1e-12)


def test_dividend_day_uses_adj_close() -> None:
    res = build(scenario("dividend_day"))
    # A goes ex 1.00 on Jan 4: close 20 -> 19, adj_close 19 -> 19 (0% total return).
    # Jan 3: both flat -> 1000. Jan 4: (0% + 10%) / 2 = 5% -> 1050.
    # Jan 5: A 19 -> 20.9 (+10%), B flat -> 5% -> 1102.5.
    assert column(res, "level") == approx([1000, 1000, 1050, 1102.5], rel=1e-12)
    assert comp(res, JAN[2], "price") == [19, 11]


# --------------------------------------------------------------------------- schedules


def test_weekly_rebalances_on_fridays() -> None:
    res = build(scenario("weekly_two_weeks"))
    # Jan 5 and Jan 12 (next session Tue Jan 16 after MLK day) end their ISO weeks.
    flags = dict(zip(column(res, "date"), column(res, "is_rebalance"), strict=True))
    assert [day for day, flag in flags.items() if flag] == [JAN[0], JAN[3], d("2024-01-12")]
    # A: 10 * 1.1^i, B: 10. Base q_A = q_B = 50.
    # L: 1000, 50*11 + 500 = 1050, 50*12.1 + 500 = 1105, 50*13.31 + 500 = 1165.5.
    # Jan 5 turnover: drifted A = 665.5 / 1165.5 -> 0.5 * 2 * (665.5 - 582.75) / 1165.5.
    # New q: 582.75 / 13.31 and 582.75 / 10 -> Jan 8: L = 582.75 * 1.1 + 582.75 = 1223.775.
    assert column(res, "level")[:5] == approx([1000, 1050, 1105, 1165.5, 1223.775], rel=1e-12)
    assert column(res, "turnover")[3] == approx(82.75 / 1165.5, rel=1e-12)
    assert comp(res, JAN[3], "units") == approx([582.75 / 13.31, 58.275], rel=1e-12)
    assert comp(res, d("2024-01-11"), "units") == approx([582.75 / 13.31, 58.275], rel=1e-12)


def test_monthly_rebalance_is_calendar_month_end_not_last_data_day() -> None:
    res = build(scenario("monthly_month_end"))
    # Jan 29 (base), Jan 31 (next session Feb 1). Feb 2, the last day of data, is not a
    # rebalance: its next session (Feb 5) is in the same month.
    assert column(res, "date") == MONTH_END
    assert column(res, "is_rebalance") == [True, False, True, False, False]
    assert comp(res, MONTH_END[4], "units") == comp(res, MONTH_END[2], "units")
    assert comp(res, MONTH_END[1], "units") == comp(res, MONTH_END[0], "units")


def test_monthly_rule_uses_exchange_calendar_not_data_gaps() -> None:
    res = build(scenario("monthly_missing_last_session"))
    # Data on Jan 29, Jan 30, Feb 1 only. Jan 30 is not the month's last session (Jan 31 is,
    # per XNYS, even without data), so Jan 30 is no rebalance. Amended contract: the missed
    # Jan 31 rebalance is postponed to the next trading day of the data, Feb 1 (it used to be
    # dropped: [True, False, False]).
    assert column(res, "is_rebalance") == [True, False, True]
    # A 10, 11, 12.1 (+10% a day), B flat at 10; base q_A = q_B = 50.
    # Jan 30: L = 550 + 500 = 1050. Feb 1: L = 50 * 12.1 + 500 = 1105; drifted A 605 / 1105:
    # turnover 0.5 * 2 * (605 - 552.5) / 1105 = 52.5 / 1105.
    assert column(res, "level") == approx([1000, 1050, 1105], rel=1e-12)
    assert column(res, "turnover") == approx([0, 0, 52.5 / 1105], rel=1e-12)
    assert comp(res, MONTH_END[3], "units") == approx([552.5 / 12.1, 55.25], rel=1e-12)


@pytest.mark.parametrize("rebalance", ["weekly", "monthly", "quarterly"])
def test_good_friday_makes_thursday_the_last_session(rebalance: str) -> None:
    res = build(scenario(f"{rebalance}_good_friday"))
    # 2024-03-29 is Good Friday: Thu Mar 28's next session is Mon Apr 1, which is in a later
    # ISO week, month and quarter.
    assert column(res, "date") == GOOD_FRIDAY_WEEK
    assert column(res, "is_rebalance") == [True, False, False, True, False, False]
    # Same numbers as the weekly Jan case: L(Mar 28) = 1165.5, turnover 82.75 / 1165.5.
    assert column(res, "level")[3] == approx(1165.5, rel=1e-12)
    assert column(res, "turnover")[3] == approx(82.75 / 1165.5, rel=1e-12)


def test_next_session_is_injectable() -> None:
    # A calendar without holidays: Mar 28's "next session" is Fri Mar 29, same week/month, so
    # nothing but the base date rebalances in that window.
    def no_holidays(day: dt.date) -> dt.date:
        nxt = day + dt.timedelta(days=1)
        while nxt.weekday() >= 5:
            nxt += dt.timedelta(days=1)
        return nxt

    res = build(scenario("monthly_good_friday"), next_session=no_holidays)
    # The injected calendar's March ends on Fri Mar 29, which has no data: the rebalance is
    # postponed to Mon Apr 1, the next trading day (amended contract; it used to be dropped).
    # A = 10 * 1.1^4 = 14.641 on Apr 1: L = 50 * 14.641 + 500 = 1232.05; turnover
    # 0.5 * 2 * (732.05 - 616.025) / 1232.05 = 116.025 / 1232.05.
    assert column(res, "is_rebalance") == [True, False, False, False, True, False]
    assert column(res, "turnover")[4] == approx(116.025 / 1232.05, rel=1e-12)


def test_quarterly_does_not_rebalance_in_january() -> None:
    res = build(scenario("quarterly_january"))
    assert column(res, "is_rebalance") == [True] + [False] * 7


def test_schedule_helper() -> None:
    assert xnys_next_session(d("2024-03-28")) == d("2024-04-01")
    assert xnys_next_session(d("2024-03-30")) == d("2024-04-01")  # not a session itself
    assert is_scheduled_rebalance(d("2024-01-31"), "monthly", xnys_next_session)
    assert not is_scheduled_rebalance(d("2024-01-30"), "monthly", xnys_next_session)
    assert is_scheduled_rebalance(d("2024-06-28"), "quarterly", xnys_next_session)
    assert not is_scheduled_rebalance(d("2024-05-31"), "quarterly", xnys_next_session)
    # ISO week: Fri 2024-12-27 ends ISO week 52; Tue 2024-12-31 is in ISO week 1 of 2025,
    # like Thu 2025-01-02, so the year end is not a weekly rebalance...
    assert is_scheduled_rebalance(d("2024-12-27"), "weekly", xnys_next_session)
    assert not is_scheduled_rebalance(d("2024-12-31"), "weekly", xnys_next_session)
    # ...but it is a monthly one.
    assert is_scheduled_rebalance(d("2024-12-31"), "monthly", xnys_next_session)


# --------------------------------------------------------------------------- weights


def test_capped_weights_one_round() -> None:
    res = build(scenario("capped_one_round"))
    # Caps 60, 25, 10, 5 (bn) -> 0.6, 0.25, 0.10, 0.05; cap 0.4.
    # A -> 0.4, excess 0.2 spread over B, C, D by cap (25:10:5 of 40):
    # B 0.25 + 0.2 * 25/40 = 0.375, C 0.10 + 0.05 = 0.15, D 0.05 + 0.025 = 0.075.
    assert comp(res, JAN[0], "weight") == approx([0.4, 0.375, 0.15, 0.075], rel=1e-12)


def test_capped_weights_two_rounds() -> None:
    res = build(scenario("capped_two_rounds"))
    # cap 0.3. Round 1: A -> 0.3; 0.7 over B, C, D (40): B = 0.7 * 25/40 = 0.4375 > 0.3.
    # Round 2: B -> 0.3; 0.4 over C, D (15): C = 0.4 * 10/15, D = 0.4 * 5/15. None > 0.3.
    expected = [0.3, 0.3, 0.4 * 10 / 15, 0.4 * 5 / 15]
    assert comp(res, JAN[0], "weight") == approx(expected, rel=1e-12)
    # Jan 3: A +10%, D +20%: R = 0.3 * 0.1 + (0.4 * 5/15) * 0.2 = 0.03 + 0.08/3.
    assert column(res, "daily_return")[1] == approx(0.03 + 0.08 / 3, rel=1e-12)
    for day in JAN[:2]:
        assert max(comp(res, day, "weight")) <= 0.3 + 1e-12  # type: ignore[operator]


def test_capped_infeasible_gives_equal_weights() -> None:
    # 4 names, cap 0.2: 4 * 0.2 = 0.8 < 1 -> equal weights.
    res = build(scenario("capped_infeasible"))
    assert comp(res, JAN[0], "weight") == approx([0.25] * 4, rel=1e-12)
    # top_n 5 but only 4 constituents, cap 0.22: top_n * cap = 1.1 >= 1, yet n * cap = 0.88 < 1
    # with n = number of constituents -> equal weights.
    res = build(scenario("capped_infeasible_fewer_than_top_n"))
    assert comp(res, JAN[0], "weight") == approx([0.25] * 4, rel=1e-12)


def test_target_weights_unit() -> None:
    caps = {"A": 60.0, "B": 25.0, "C": 10.0, "D": 5.0}
    names = list(caps)
    # Non-binding cap leaves market-cap weights untouched.
    assert target_weights(names, caps, "capped_market_cap", 0.7) == approx(
        {"A": 0.6, "B": 0.25, "C": 0.1, "D": 0.05}
    )
    # n * cap == 1 exactly: everything ends at the cap (= equal).
    assert target_weights(names, caps, "capped_market_cap", 0.25) == approx(
        {s: 0.25 for s in names}
    )
    # A larger example converges, sums to 1, respects the cap, keeps the cap order.
    big = {f"S{i:02d}": float(2**i) for i in range(12)}
    weights = target_weights(list(big), big, "capped_market_cap", 0.1)
    assert sum(weights.values()) == approx(1, abs=1e-12)
    assert max(weights.values()) <= 0.1 + 1e-12
    ordered = [weights[s] for s in sorted(big, key=big.__getitem__)]
    assert ordered == sorted(ordered)
    assert target_weights(["A", "B"], caps, "equal", None) == {"A": 0.5, "B": 0.5}
    with pytest.raises(ValueError):
        target_weights(names, caps, "capped_market_cap", None)


def test_market_cap_weights_drift_between_rebalances() -> None:
    res = build(scenario("market_cap_drift"))
    jan29, jan30, jan31, feb1 = MONTH_END[:4]
    # Monthly: base Jan 29 and Jan 31. Caps = close * shares (market_cap missing).
    # Base: A 300, B 100 -> w 0.75, 0.25; q_A = 750 / 30 = 25, q_B = 250 / 10 = 25.
    assert comp(res, jan29, "weight") == approx([0.75, 0.25], rel=1e-12)
    assert comp(res, jan29, "units") == approx([25, 25], rel=1e-12)
    # Jan 30: A 33: L = 25 * 33 + 25 * 10 = 1075; drifted w = (825, 250) / 1075 = (33, 10)/43.
    assert comp(res, jan30, "weight") == approx([33 / 43, 10 / 43], rel=1e-12)
    assert comp(res, jan30, "units") == approx([25, 25], rel=1e-12)
    assert comp(res, jan30, "market_cap") == approx([330, 100], rel=1e-12)
    # Jan 31: B 11: L = 825 + 275 = 1100; drifted (0.75, 0.25). B issued shares (20):
    # caps 330, 220 -> targets 0.6, 0.4; turnover 0.5 * (0.15 + 0.15) = 0.15.
    # q_A = 1100 * 0.6 / 33 = 20, q_B = 1100 * 0.4 / 11 = 40.
    assert comp(res, jan31, "weight") == approx([0.6, 0.4], rel=1e-12)
    assert comp(res, jan31, "units") == approx([20, 40], rel=1e-12)
    # Feb 1: A 29.7: L = 20 * 29.7 + 40 * 11 = 594 + 440 = 1034 (R = 0.6 * -10% = -6%).
    assert comp(res, feb1, "weight") == approx([594 / 1034, 440 / 1034], rel=1e-12)
    assert column(res, "level") == approx([1000, 1075, 1100, 1034], rel=1e-12)
    assert column(res, "daily_return") == approx([0, 0.075, 1 / 43, -0.06], rel=1e-12)
    assert column(res, "turnover") == approx([0, 0, 0.15, 0], abs=1e-12)
    assert column(res, "is_rebalance") == [True, False, True, False]


# --------------------------------------------------------------------------- universe, base


def test_universe_filters() -> None:
    res = build(scenario("universe_filters"))
    # Filters (given in other letter cases): sector IT, exchange NASDAQ, type common stock,
    # close >= 5, market cap >= 1e9. Out: BBB (sector), CCC (exchange), DDD (type),
    # FFF on Jan 2 (close 4.99 although adj_close is 6), GGG (0.99e9). EEE sits exactly on
    # both minimums (close 5.0, cap 1e9) and is in, although its adj_close is 4.
    assert comp(res, JAN[0], "symbol") == ["AAA", "EEE"]
    assert comp(res, JAN[0], "rank") == [1, 2]
    assert comp(res, JAN[0], "price") == [100, 4.0]
    # Jan 3: FFF closes at 5.0 and enters; ranks by cap AAA 5e9, FFF 2e9, EEE 1e9.
    assert comp(res, JAN[1], "symbol") == ["AAA", "FFF", "EEE"]
    assert comp(res, JAN[1], "rank") == [1, 2, 3]
    assert res.changes == [(JAN[1], ["FFF"], [])]
    # Turnover: (0.5, 0, 0.5) -> 1/3 each: 0.5 * (1/6 + 1/3 + 1/6) = 1/3.
    assert column(res, "turnover") == approx([0, 1 / 3], rel=1e-12)


def test_base_date_on_weekend_rolls_forward() -> None:
    res = build(scenario("base_date_weekend"))
    # Base Sat Jan 6 -> Mon Jan 8; nothing before it is reported. base_value 100.
    # Jan 9: A 20 -> 22, B 10 -> 11: +10% -> 110.
    assert column(res, "date") == [d("2024-01-08"), d("2024-01-09")]
    assert column(res, "level") == approx([100, 110], rel=1e-12)
    assert column(res, "is_rebalance") == [True, True]
    assert list(res.compositions) == [d("2024-01-08"), d("2024-01-09")]
    assert comp(res, d("2024-01-08"), "units") == approx([50 / 20, 50 / 10], rel=1e-12)


def test_base_date_without_data_rolls_forward() -> None:
    res = build(scenario("base_date_without_data"))
    # Jan 3 is an XNYS session but has no bars: base -> Jan 4.
    # Jan 5: A 12 -> 12.6 (+5%), B flat: (5% + 0%) / 2 -> 1025.
    assert column(res, "date") == [JAN[2], JAN[3]]
    assert column(res, "level") == approx([1000, 1025], rel=1e-12)


def test_none_eligible_at_base_raises() -> None:
    with pytest.raises(ValueError):
        build(scenario("none_eligible_at_base"))


def test_none_eligible_later_keeps_composition() -> None:
    res = build(scenario("none_eligible_later"))
    # Sector filter IT: A and C. Both missing on Jan 4 (B, Energy, trades -> trading day).
    # Base: q_A = 500 / 10 = 50, q_C = 500 / 20 = 25.
    # Jan 3: L = 50 * 11 + 25 * 20 = 1050; turnover 0.5 * 2 * (11/21 - 1/2) = 1/42;
    #        q_A = 525 / 11, q_C = 525 / 20 = 26.25.
    # Jan 4: carried prices, L = 1050; none eligible: error, no rebalance, turnover 0.
    # Jan 5: L = 525/11 * 12.1 + 26.25 * 22 = 577.5 + 577.5 = 1155.
    assert res.errors == [JAN[2]]
    assert column(res, "level") == approx([1000, 1050, 1050, 1155], rel=1e-12)
    assert column(res, "is_rebalance") == [True, True, False, True]
    assert column(res, "turnover") == approx([0, 1 / 42, 0, 0], abs=1e-12)
    assert comp(res, JAN[2], "symbol") == ["A", "C"]
    assert comp(res, JAN[2], "rank") == [1, 2]
    assert comp(res, JAN[2], "units") == comp(res, JAN[1], "units")
    assert comp(res, JAN[2], "price") == [11, 20]
    assert comp(res, JAN[2], "weight") == approx([0.5, 0.5], rel=1e-12)
    assert res.changes == []


def test_invalid_rows_are_ignored() -> None:
    res = build(scenario("invalid_rows"))
    # X (close 0), Y (close NaN), Z (no cap, no shares), W (cap < 0) never count; Jan 5 has
    # only an invalid row, so it is not a trading day.
    assert column(res, "date") == JAN[:3]
    assert all(comp(res, day, "symbol") == ["A", "B"] for day in JAN[:3])
    # A +10% twice, B flat: 1000 * 1.05 * 1.05.
    assert column(res, "level") == approx([1000, 1050, 1102.5], rel=1e-12)


# --------------------------------------------------------------------------- amended contract
#
# Small markets built here, one per amended rule; the expected numbers are worked out by hand
# in the comments. Prices and market caps are in plain units; J0..J3 = JAN = Jan 2..5 2024.

ACTION_COLUMNS = [*PRICE_COLUMNS, "dividend", "split_ratio"]


def row(
    day: dt.date,
    symbol: str,
    close: float,
    *,
    mc: float = NAN,
    adj: float = NAN,
    shares: float = NAN,
    dividend: float = NAN,
    split: float = NAN,
) -> dict[str, object]:
    """One bar, every column explicit (no share count is derived from ``mc``)."""
    return {
        "date": day,
        "symbol": symbol,
        "close": close,
        "adj_close": adj,
        "volume": 1e6,
        "shares_outstanding": shares,
        "market_cap": mc,
        "dividend": dividend,
        "split_ratio": split,
    }


def market(
    rows: list[dict[str, object]], symbols: str | list[str], **overrides: object
) -> Scenario:
    frame = pd.DataFrame(rows, columns=ACTION_COLUMNS)
    for name in ACTION_COLUMNS[2:]:
        frame[name] = frame[name].astype("float64")
    return Scenario(
        "amended",
        securities_frame([security(s) for s in symbols]),
        frame,
        definition(**overrides),
    )


def test_valid_rows_sessions_duplicates_splits_and_dividends() -> None:
    j0, j1, j2, j3 = JAN
    rows = [
        row(j0, "A", 10, mc=3e9),
        row(j1, "A", 11, mc=3e9),
        row(j1, "A", 11, mc=3e9),  # an exact copy (NaN == NaN): one row
        row(j2, "A", 11, mc=3e9),
        row(j3, "A", 12.1, mc=3e9),
        row(j0, "B", 20, mc=2e9),
        row(j1, "B", 20, mc=2e9),
        row(j2, "B", 22, mc=2e9),
        row(j2, "B", 30, mc=2e9),  # copies that differ: both invalid, B has no row on J2
        row(j3, "B", 22, mc=2e9),
        row(j0, "C", 50, mc=1e9),
        row(j1, "C", 50, mc=1e9, split=0.0),  # split_ratio not > 0: invalid
        row(j2, "C", 50, mc=1e9, dividend=-1.0),  # dividend < 0: invalid
        row(j3, "C", 55, mc=1e9),
        row(d("2024-01-06"), "C", 60, mc=1e9),  # a Saturday: not an XNYS session
        row(j1, "E", 10, mc=9e9, dividend=math.inf),  # dividend not finite: invalid
        row(j1, "F", 10, mc=8e9, split=-2.0),  # split_ratio < 0: invalid
        row(d("2024-01-15"), "F", 10, mc=8e9),  # MLK day: not a session
    ]
    res = build(market(rows, "ABCEF", top_n=3))
    # Trading days: J0..J3 only (Jan 6 and Jan 15 carry no valid row).
    assert column(res, "date") == JAN
    # J0: A, B, C at 1/3: q = 1000 / 3 / (10, 20, 50).
    # J1: A +10%, B flat, C (invalid row) carried at 50: R = 0.1 / 3 = 1/30, L = 1000 * 31/30.
    #     Eligible: A, B (C, E, F invalid): {A, B}. Drifted A 11/31, B 10/31, C 10/31 ->
    #     turnover 0.5 * (9/62 + 11/62 + 20/62) = 10/31.
    # J2: A flat, B (conflicting copies) carried at 20: R = 0. Eligible: A only (C's row is
    #     invalid): {A}; drifted A 1/2, B 1/2 -> turnover 1/2.
    # J3: A +10%: L = 1000 * 31/30 * 1.1. Eligible A, B, C -> all three again.
    assert column(res, "level") == approx(
        [1000, 1000 * 31 / 30, 1000 * 31 / 30, 1100 * 31 / 30], rel=1e-12
    )
    assert column(res, "turnover")[:3] == approx([0, 10 / 31, 0.5], rel=1e-12)
    assert [comp(res, day, "symbol") for day in JAN] == [
        ["A", "B", "C"],
        ["A", "B"],
        ["A"],
        ["A", "B", "C"],
    ]
    assert res.changes == [(j1, [], ["C"]), (j2, [], ["B"]), (j3, ["B", "C"], [])]


def test_shares_in_force_carry_through_splits() -> None:
    j0, j1, j2, j3 = JAN
    rows = [
        # A: 100 shares on J0; a 2:1 split on J1 without a count doubles it to 200 (J1, J2);
        # its own count 150 on J3. adj_close is continuous: P = 5, 5, 5, 6.
        row(j0, "A", 10, adj=5, shares=100),
        row(j1, "A", 5, adj=5, split=2.0),
        row(j2, "A", 5, adj=5),
        row(j3, "A", 6, adj=6, shares=150),
        # B: market_cap only on J0 (no count); J1 has no count, none in force, no
        # market_cap: no market cap, invalid; 80 shares from J2 on.
        row(j0, "B", 10, mc=1500),
        row(j1, "B", 10),
        row(j2, "B", 10, shares=80),
        row(j3, "B", 10),
        # C: 40 shares on J0; the J1 row is invalid (close 0), so its split is not seen:
        # 40 shares are still in force on J2 and J3.
        row(j0, "C", 20, shares=40),
        row(j1, "C", 0.0, split=2.0),
        row(j2, "C", 10),
        row(j3, "C", 10),
    ]
    res = build(market(rows, "ABC", top_n=3, weighting="market_cap"))
    # Market caps: J0 A 10 * 100 = 1000, B 1500, C 20 * 40 = 800 (total 3300);
    # J1 A 5 * 200 = 1000 (B, C invalid); J2 A 5 * 200 = 1000, B 10 * 80 = 800, C 10 * 40 =
    # 400 (total 2200); J3 A 6 * 150 = 900, B 800, C 400 (total 2100).
    assert comp(res, j0, "symbol") == ["B", "A", "C"]
    assert comp(res, j0, "market_cap") == approx([1500, 1000, 800], rel=1e-12)
    assert comp(res, j0, "weight") == approx([15 / 33, 10 / 33, 8 / 33], rel=1e-12)
    assert comp(res, j1, "symbol") == ["A"]
    assert comp(res, j1, "market_cap") == approx([1000], rel=1e-12)
    assert comp(res, j2, "market_cap") == approx([1000, 800, 400], rel=1e-12)
    assert comp(res, j2, "weight") == approx([5 / 11, 4 / 11, 2 / 11], rel=1e-12)
    assert comp(res, j3, "market_cap") == approx([900, 800, 400], rel=1e-12)
    assert comp(res, j3, "weight") == approx([9 / 21, 8 / 21, 4 / 21], rel=1e-12)
    # Levels: J1 nothing moves (A's P flat, B and C carried); J2 A flat; J3 A +20% at
    # weight 5/11: R = 1/11, L = 12000/11.
    assert column(res, "level") == approx([1000, 1000, 1000, 12000 / 11], rel=1e-12)


def test_missed_period_ends_are_postponed_to_the_next_trading_day() -> None:
    # Weekly; data on Tue Jan 2, Wed Jan 3, then Tue Jan 16, Wed Jan 17 (Jan 15 is MLK day).
    # The period ends Fri Jan 5 and Fri Jan 12 both fall in the gap: one postponed rebalance
    # on Jan 16. Jan 3 is not one (its week ends on Jan 5: never moved back).
    days = [JAN[0], JAN[1], d("2024-01-16"), d("2024-01-17")]
    res = build(schedule("postponed", days, "weekly"))
    assert column(res, "is_rebalance") == [True, False, True, False]
    # A 10, 11, 12.1, 13.31; B 10. Base q_A = q_B = 50. Jan 3: L = 1050. Jan 16: L = 1105,
    # turnover 52.5 / 1105; q_A = 552.5 / 12.1, q_B = 55.25. Jan 17: L = 552.5 * 2.1.
    assert column(res, "level") == approx([1000, 1050, 1105, 1160.25], rel=1e-12)
    assert column(res, "turnover")[2] == approx(52.5 / 1105, rel=1e-12)
    assert comp(res, days[3], "units") == approx([552.5 / 12.1, 55.25], rel=1e-12)


def test_period_end_helpers() -> None:
    nxt = xnys_next_session
    assert period_end_sessions(JAN[1], d("2024-01-16"), "weekly", nxt) == [JAN[3], d("2024-01-12")]
    assert period_end_sessions(d("2024-01-30"), d("2024-02-01"), "monthly", nxt) == [
        d("2024-01-31")
    ]
    # (after, upto]: the end itself counts on its own day, not on the next one.
    assert period_end_sessions(d("2024-01-31"), d("2024-02-01"), "monthly", nxt) == []
    assert is_rebalance_day(d("2024-02-01"), d("2024-01-30"), "monthly", nxt)
    assert is_rebalance_day(d("2024-01-31"), d("2024-01-30"), "monthly", nxt)
    assert not is_rebalance_day(d("2024-02-02"), d("2024-02-01"), "monthly", nxt)
    # Good Friday: Thu Mar 28 ends the week; Mon Apr 1 after it is no rebalance.
    assert is_rebalance_day(d("2024-03-28"), d("2024-03-27"), "weekly", nxt)
    assert not is_rebalance_day(d("2024-04-01"), d("2024-03-28"), "weekly", nxt)
    # Quarterly: a gap over Jun 28 (the quarter's last session) rebalances on Jul 1.
    assert is_rebalance_day(d("2024-07-01"), d("2024-06-26"), "quarterly", nxt)
    assert is_rebalance_day(d("2024-01-03"), d("2024-01-02"), "daily", nxt)


def test_dividend_formulas_from_the_first_dividend_value_on() -> None:
    j0, j1, j2, j3 = JAN
    j4 = JAN_2ND_WEEK[0]
    rows = [
        row(j0, "A", 100, adj=50, mc=1e9),
        row(j1, "A", 50, adj=55, mc=1e9, split=2.0),  # a split, no dividend value yet
        row(j2, "A", 48, adj=60, mc=1e9, dividend=0.0),  # the first dividend value (0)
        row(j3, "A", 45, adj=70, mc=1e9, dividend=3.0),
        row(j4, "A", 49.5, mc=1e9),  # dividend missing: 0 from now on
    ]
    s = market(rows, "A", top_n=1, tax=0.30)
    res = build(s)
    # One constituent, so each level is 1000 times A's chained returns.
    # J1 (before the first dividend value): price (50 * 2) / 100 - 1 = 0; total = ratio of
    #   P (adj_close) 55 / 50 - 1 = 10%, although A has a split; net 0 + 0.7 * (0.1 - 0) = 7%.
    # J2 (the dividend formulas from here on; adj_close is no longer used):
    #   price = total = net = 48 / 50 - 1 = -4%.
    # J3: price 45 / 48 - 1; total (45 + 3) / 48 - 1 = 0; net (45 + 0.7 * 3) / 48 = 47.1 / 48.
    # J4: +10% in every variant (the missing dividend counts as 0).
    assert res.variant_levels["price"] == approx([1000, 1000, 960, 900, 990], rel=1e-12)
    assert res.variant_levels["total"] == approx([1000, 1100, 1056, 1056, 1161.6], rel=1e-12)
    assert res.variant_levels["net_total"] == approx(
        [1000, 1070, 1027.2, 1007.94, 1108.734], rel=1e-12
    )
    # Composition (total headline, daily): real = P before the first dividend value, the
    # close from it on. J0: P 50, units 1000 / 50 = 20; J1: P 55, units 1100 / 55 = 20;
    # J2: close 48, units 1056 / 48 = 22; J3: close 45, units 1056 / 45.
    assert comp(res, j0, "price") == approx([50], rel=1e-12)
    assert comp(res, j1, "price") == approx([55], rel=1e-12)
    assert comp(res, j2, "price") == approx([48], rel=1e-12)
    assert comp(res, j3, "price") == approx([45], rel=1e-12)
    assert comp(res, j1, "units") == approx([20], rel=1e-12)
    assert comp(res, j2, "units") == approx([22], rel=1e-12)
    assert comp(res, j3, "units") == approx([1056 / 45], rel=1e-12)
    # Point in time: a first dividend value that arrives later never changes earlier days.
    early = reference_build(s.securities, s.prices.iloc[:2], s.definition)
    for variant in RETURN_TYPES:
        assert early.variant_levels[variant] == res.variant_levels[variant][:2]


def test_group_cap_step_b_fills_the_top_names_to_the_limit() -> None:
    caps = {"A": 40.0, "B": 30.0, "C": 20.0, "D": 10.0}
    weights, fallback = group_capped_weights(list(caps), caps, 0.45, 0.25, 0.60)
    # w0 = market-cap weights .4, .3, .2, .1 (none above .45); above .25: A + B = .7 > .6.
    # m = 2. (a) bounds .45, .45, .25, .25: the fill is w0 again, .7 > .6: no.
    # (b) 2 * .45 >= .6 and 2 * .25 >= .4: A, B pro rata to .6: 40/70 * .6 = 12/35 and
    #     30/70 * .6 = 9/35; C, D pro rata to .4: C 20/30 * .4 = .267 > .25 -> .25, D .15.
    #     Smallest of the top (9/35 = .257) >= largest of the others (.25): done.
    assert fallback is None
    assert [weights[s] for s in "ABCD"] == approx([12 / 35, 9 / 35, 0.25, 0.15], rel=1e-12)
    # Through the build: the same target weights, no fallback reported.
    rows = [row(day, s, 10, mc=mc) for day in JAN[:2] for s, mc in caps.items()]
    group_cap = {"threshold": 0.25, "limit": 0.60}
    res = build(
        market(rows, "ABCD", top_n=4, weighting="capped_market_cap", cap=0.45, group_cap=group_cap)
    )
    assert comp(res, JAN[0], "weight") == approx([12 / 35, 9 / 35, 0.25, 0.15], rel=1e-12)
    assert res.group_cap_fallbacks == []


def test_group_cap_step_b_out_of_order_goes_to_the_next_m() -> None:
    caps = {"A": 50.0, "B": 35.0, "C": 10.0, "D": 5.0}
    weights, fallback = group_capped_weights(list(caps), caps, 0.5, 0.3, 0.6)
    # w0 = .5, .35, .1, .05 (A at the cap, not above); above .3: A + B = .85 > .6; m = 2.
    # m = 2: (a) bounds .5, .5, .3, .3: the fill is w0, .85 > .6: no. (b) 2 * .5 >= .6 and
    #   2 * .3 >= .4: A 50/85 * .6 = .353, B 35/85 * .6 = .247; C 10/15 * .4 = .267,
    #   D .133: the smallest top weight .247 < .267: no.
    # m = 1: (a) bounds .5, .3, .3, .3: B .35 -> .3; .7 over A, C, D (65): A .538 -> .5;
    #   .2 over C, D (15): C 2/15, D 1/15. Above .3: A = .5 <= .6: done.
    assert fallback is None
    assert [weights[s] for s in "ABCD"] == approx([0.5, 0.3, 2 / 15, 1 / 15], rel=1e-12)


def test_group_cap_without_solution_uses_w0_and_reports_the_date() -> None:
    # UCITS 10/5/40 on 10 names (caps 10, 9, ..., 1): w0 = every name capped at .1 (10 * .1
    # = 1), all above .05: 1 > .4. m = 10: (a) bounds all .1: w0 again, no; (b) needs
    # (10 - 10) * .05 >= .6: no. m < 10: (a) bounds m * .1 + (10 - m) * .05 < 1: skipped;
    # (b) (10 - m) * .05 >= .6 needs m <= -2: no. No m works: w0, reported.
    names = [f"S{k}" for k in range(10)]
    caps = {s: float(10 - k) for k, s in enumerate(names)}
    weights, fallback = group_capped_weights(names, caps, 0.10, 0.05, 0.40)
    assert fallback == "no_solution"
    assert [weights[s] for s in names] == approx([0.1] * 10, rel=1e-12)
    rows = [row(day, s, 10, mc=mc) for day in JAN[:2] for s, mc in caps.items()]
    group_cap = {"threshold": 0.05, "limit": 0.40}
    res = build(
        market(rows, names, top_n=10, weighting="capped_market_cap", cap=0.1, group_cap=group_cap)
    )
    assert comp(res, JAN[0], "weight") == approx([0.1] * 10, rel=1e-12)
    assert res.group_cap_fallbacks == JAN[:2]  # both daily rebalances
    assert res.errors == []


def test_string_filters_ignore_case_and_surrounding_spaces() -> None:
    secs = securities_frame(
        [
            security("A", sector=" information technology ", exchange="NASDAQ\t"),
            security("B", sector="Information  Technology"),  # inner spaces still count
            security("C", exchange=" nyse"),
            security("D", type_="  common STOCK"),
        ]
    )
    rows = [row(JAN[0], s, 10, mc=mc) for s, mc in zip("ABCD", [4e9, 3e9, 2e9, 1e9], strict=True)]
    s = market(
        rows,
        "",
        top_n=10,
        universe={
            "sectors": ["  INFORMATION TECHNOLOGY"],
            "exchanges": ["Nasdaq "],
            "types": [" Common Stock "],
            "min_price": 10.0,  # inclusive: close 10 passes
            "min_market_cap": 1e9,  # inclusive: D's 1e9 passes
        },
    )
    res = reference_build(secs, s.prices, s.definition)
    # A: every field matches after trimming and case folding; B: "information  technology"
    # is another sector; C: exchange NYSE; D: type matches, the rest are the defaults.
    assert comp(res, JAN[0], "symbol") == ["A", "D"]


def test_announced_is_the_latest_pending_selection() -> None:
    s = scenario("equal_weight_daily")  # A 3e9, B 2e9, C 1e9 every day; top 3, daily
    assert build(s).announced is None  # lag 0: nothing pending
    s.definition["effective_lag"] = 2
    res = build(s)
    # Selections on J2 and J3 take effect 2 trading days later: after the data (offsets 1, 2).
    assert [(p.reference_date, p.effective_offset) for p in res.pending] == [
        (JAN[2], 1),
        (JAN[3], 2),
    ]
    announced = res.announced
    assert announced is res.pending[-1]
    assert announced.reference_date == JAN[3]
    assert list(announced.constituents["symbol"]) == ["A", "B", "C"]
    assert list(announced.constituents["weight"]) == approx([1 / 3] * 3, rel=1e-12)


def test_postponed_rebalance_without_eligible_security_is_skipped() -> None:
    # Weekly, IT only: A (IT) and B (Energy). Data Jan 2, 3, 8, 9: Fri Jan 5 is missing, so the
    # week's rebalance is postponed to Mon Jan 8, where only B trades: none eligible.
    days = [JAN[0], JAN[1], *JAN_2ND_WEEK[:2]]
    a_closes = {days[0]: 10, days[1]: 11, days[3]: 12.1}  # no A row on Jan 8
    rows = [row(day, "A", c, mc=2e9) for day, c in a_closes.items()]
    rows += [row(day, "B", 50, mc=9e9) for day in days]
    secs = securities_frame([security("A"), security("B", sector="Energy")])
    s = market(rows, "", top_n=5, rebalance="weekly", universe={"sectors": [IT]})
    res = reference_build(secs, s.prices, s.definition)
    # q_A = 100. Jan 3: L = 1100; Jan 8: A carried, L = 1100; skipped rebalance: the
    # composition carries on, the date goes to errors. Jan 9: L = 1210 (not a rebalance:
    # the second week ends on Jan 12).
    assert res.errors == [days[2]]
    assert column(res, "level") == approx([1000, 1100, 1100, 1210], rel=1e-12)
    assert column(res, "is_rebalance") == [True, False, False, False]
    assert [comp(res, day, "symbol") for day in days] == [["A"]] * 4
    assert comp(res, days[2], "units") == approx([100], rel=1e-12)


def test_effective_lag_counts_trading_days_of_the_data() -> None:
    # Top 1, daily, lag 1; data on Jan 2, 3, 5, 8 (the session Jan 4 has no data).
    # Ranks: Jan 2 A > B -> {A} (base: at once); Jan 3 B > A -> {B}, in effect on Jan 5 (the
    # next trading day of the data, not the session Jan 4); Jan 5 A > B -> {A} on Jan 8;
    # Jan 8 A > B -> pending, offset 1.
    days = [JAN[0], JAN[1], JAN[3], JAN_2ND_WEEK[0]]
    caps = {"A": [2, 1, 2, 2], "B": [1, 2, 1, 1]}
    closes = {"A": [10, 11, 12, 12], "B": [10, 10, 15, 15]}
    rows = [
        row(day, s, closes[s][i], mc=caps[s][i] * 1e9) for i, day in enumerate(days) for s in "AB"
    ]
    res = build(market(rows, "AB", top_n=1, effective_lag=1))
    # Jan 2: q_A = 100. Jan 3: L = 1100. Jan 5: L = 1200; {B} at 15: q_B = 80, turnover 1.
    # Jan 8: B flat, L = 1200; {A} at 12: q_A = 100, turnover 1.
    assert column(res, "level") == approx([1000, 1100, 1200, 1200], rel=1e-12)
    assert column(res, "is_rebalance") == [True, False, True, True]
    assert res.changes == [(days[2], ["B"], ["A"]), (days[3], ["A"], ["B"])]
    assert comp(res, days[2], "units") == approx([80], rel=1e-12)
    assert [(p.reference_date, p.effective_offset) for p in res.pending] == [(days[3], 1)]
    assert res.announced is res.pending[0]


# --------------------------------------------------------------------------- generic checks


def check_invariants(res: ReferenceResult, definition: dict[str, object]) -> None:
    """Structural identities that hold for every build."""
    dates = column(res, "date")
    assert list(res.compositions) == dates
    assert dates == sorted(dates)
    assert res.levels["is_rebalance"].iloc[0]
    assert res.levels["turnover"].iloc[0] == 0
    previous: set[str] | None = None
    changes = []
    for day, level, n, turnover in zip(
        dates,
        column(res, "level"),
        column(res, "n_constituents"),
        column(res, "turnover"),
        strict=True,
    ):
        frame = res.compositions[day]
        assert list(frame.columns) == COMPOSITION_COLUMNS
        assert len(frame) == n
        assert 1 <= n <= definition["top_n"]  # type: ignore[operator]
        assert list(frame["rank"]) == list(range(1, n + 1))
        assert math.isclose(frame["weight"].sum(), 1.0, abs_tol=1e-9)
        # L(d) = sum q_i * P_i(d) for the composition in force after the close of d.
        assert close_enough(float((frame["units"] * frame["price"]).sum()), level)
        assert -1e-12 <= turnover <= 1 + 1e-12  # type: ignore[operator]
        symbols = set(frame["symbol"])
        if previous is not None and symbols != previous:
            changes.append((day, sorted(symbols - previous), sorted(previous - symbols)))
        previous = symbols
    assert res.changes == changes
    flags = dict(zip(dates, column(res, "is_rebalance"), strict=True))
    if not definition.get("effective_lag"):  # with a lag it can be an effective date
        assert all(not flags[day] for day in res.errors)


@pytest.mark.parametrize("s", [s for s in all_scenarios() if not s.raises], ids=lambda s: s.name)
def test_scenario_invariants(s: Scenario) -> None:
    check_invariants(build(s), s.definition)


# --------------------------------------------------------------------------- properties


def build_market(market: Market) -> ReferenceResult | None:
    try:
        return reference_build(market.securities, market.prices, market.definition)
    except ValueError:
        return None  # no eligible security at the base date (or base after the data)


@PROPERTY_SETTINGS
@given(markets())
def test_property_reference_invariants(market: Market) -> None:
    res = build_market(market)
    if res is not None:
        check_invariants(res, market.definition)


@PROPERTY_SETTINGS
@given(markets(weighting="equal", rebalance="daily", filters=False, lags=False))
def test_property_daily_equal_weight_return_is_mean(market: Market) -> None:
    res = build_market(market)
    if res is None:
        return
    prices = carried_prices(market.prices)
    dates = column(res, "date")
    returns = column(res, "daily_return")
    for prev, day, r in zip(dates, dates[1:], returns[1:], strict=False):
        held = list(res.compositions[prev]["symbol"])
        mean = sum(prices[day][s] / prices[prev][s] - 1 for s in held) / len(held)
        assert close_enough(r, mean), (day, r, mean)  # type: ignore[arg-type]


@PROPERTY_SETTINGS
@given(markets(weighting="capped_market_cap"))
def test_property_capped_weights_respect_cap(market: Market) -> None:
    res = build_market(market)
    if res is None:
        return
    cap = market.definition["cap"]
    for day, flag in zip(column(res, "date"), column(res, "is_rebalance"), strict=True):
        if not flag:
            continue  # weights drift between rebalances
        weights = list(res.compositions[day]["weight"])
        if len(weights) * cap >= 1:
            assert max(weights) <= cap + 1e-12
        else:
            assert max(weights) - min(weights) <= 1e-12
