"""Hand-computed checks of ``effective_lag`` in tests/reference_engine.py.

METHODOLOGY.md Part 2, "Reference date and effective date": the composition is selected with
the data of the reference date t and takes effect at the close of the session ``lag`` trading
days later, with units computed at the prices of the effective date e; changes and turnover
are dated by e; the base date's composition takes effect at once; selections not yet in
effect at the end of the data are published as pending, with their expected one-way turnover
against the weights in force at the last close. The project's detailed rules are in the
module docstring of tests/reference_engine.py.

Every market below uses the XNYS sessions D0..D5 = Jan 2, 3, 4, 5 (a Friday: the weekly
rebalance), 8, 9 of 2024; market caps are in billions; L = level, q = units, w = weight,
S_k = the selection made at the close of D_k.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_ENGINE_TESTS = Path(__file__).resolve().parent / "engine"
if str(_ENGINE_TESTS) not in sys.path:  # engine_scenarios / engine_markets live there
    sys.path.insert(0, str(_ENGINE_TESTS))

from engine_markets import Market, carried_prices, close_enough, markets  # noqa: E402
from engine_scenarios import (  # noqa: E402
    JAN,
    JAN_2ND_WEEK,
    SECURITY_COLUMNS,
    Scenario,
    all_scenarios,
    bar,
    definition,
    prices_frame,
    securities_frame,
    security,
)
from reference_engine import (  # noqa: E402
    PENDING_COLUMNS,
    PendingSelection,
    ReferenceResult,
    assert_identical_results,
    expected_turnover,
    reference_build,
)

approx = pytest.approx
NAN = math.nan
DAYS = [*JAN, *JAN_2ND_WEEK[:2]]
D0, D1, D2, D3, D4, D5 = DAYS
IT = "Information Technology"


# --------------------------------------------------------------------------- helpers


def market(
    name: str,
    days: list[dt.date],
    closes: dict[str, list[float | None]],
    caps: list[dict[str, float]],
    **overrides: Any,
) -> Scenario:
    """``closes[symbol][i]``: close on ``days[i]`` (None: no row); ``caps[i]``: {symbol: bn}."""
    rows = []
    for i, day in enumerate(days):
        for symbol, series in closes.items():
            close = series[i]
            if close is not None:
                rows.append(bar(day, symbol, close, mc=caps[i][symbol] * 1e9))
    return Scenario(
        name,
        securities_frame([security(s) for s in closes]),
        prices_frame(rows),
        definition(**overrides),
    )


def with_lag(s: Scenario, lag: int | None) -> Scenario:
    overrides = dict(s.definition)
    if lag is None:
        overrides.pop("effective_lag", None)
    else:
        overrides["effective_lag"] = lag
    return Scenario(s.name, s.securities, s.prices, overrides)


def build(s: Scenario, lag: int | None = None) -> ReferenceResult:
    s = with_lag(s, lag)
    return reference_build(s.securities, s.prices, s.definition)


def column(res: ReferenceResult, name: str) -> list[Any]:
    return list(res.levels[name])


def turnovers(res: ReferenceResult) -> list[float]:
    """Turnover per day, None where it is NaN (days that are not effective dates)."""
    return [None if math.isnan(v) else v for v in res.levels["turnover"]]


def comp(res: ReferenceResult, day: dt.date, name: str) -> list[Any]:
    return list(res.compositions[day][name])


def pending_view(p: PendingSelection) -> tuple[dt.date, int, list[str], list[int]]:
    return (
        p.reference_date,
        p.effective_offset,
        list(p.constituents["symbol"]),
        [int(r) for r in p.constituents["rank"]],
    )


# --------------------------------------------------------------------------- markets


def daily_market() -> Scenario:
    """4 securities, top 2, equal weight, daily.

    Ranks (caps):  D0 A4 B3 C2 D1 -> S0 {A, B}     D1 B4 A3 C2 D1 -> S1 {B, A}
                   D2 C4 A3 B2 D1 -> S2 {C, A}     D3 C4 D3 A2 B1 -> S3 {C, D}
                   D4 D4 C3 A2 B1 -> S4 {D, C}     D5 A4 B3 C2 D1 -> S5 {A, B}
    Closes: A +10% on D1; B +20% on D2; C +50% on D4; D -20% on D5; flat otherwise.
    """
    caps = [
        {"A": 4, "B": 3, "C": 2, "D": 1},
        {"A": 3, "B": 4, "C": 2, "D": 1},
        {"A": 3, "B": 2, "C": 4, "D": 1},
        {"A": 2, "B": 1, "C": 4, "D": 3},
        {"A": 2, "B": 1, "C": 3, "D": 4},
        {"A": 4, "B": 3, "C": 2, "D": 1},
    ]
    closes: dict[str, list[float | None]] = {
        "A": [10, 11, 11, 11, 11, 11],
        "B": [10, 10, 12, 12, 12, 12],
        "C": [10, 10, 10, 10, 15, 15],
        "D": [10, 10, 10, 10, 10, 8],
    }
    return market("lag_daily", DAYS, closes, caps, top_n=2)


def weekly_market() -> Scenario:
    """3 securities, top 2, equal weight, weekly: reference dates D0 (base) and D3 (Friday).

    Ranks (caps): D0-D2 A3 B2 C1 -> S0 {A, B};  D3 B3 C2 A1 -> S3 {B, C};  D4-D5 C3 B2 A1.
    Closes: A 10 12 12 12 12 15;  B 10 10 10 10 8 8;  C 10 10 10 10 11 13.2.
    """
    first = {"A": 3, "B": 2, "C": 1}
    caps = [first, first, first, {"A": 1, "B": 3, "C": 2}, *[{"A": 1, "B": 2, "C": 3}] * 2]
    closes: dict[str, list[float | None]] = {
        "A": [10, 12, 12, 12, 12, 15],
        "B": [10, 10, 10, 10, 8, 8],
        "C": [10, 10, 10, 10, 11, 13.2],
    }
    return market("lag_weekly", DAYS, closes, caps, top_n=2, rebalance="weekly")


def buffer_market() -> Scenario:
    """Constant price 10; top 2, daily, buffer entry_rank 1, exit_rank 3; D0..D4.

    Ranks: D0 A1 B2 C3 D4;  D1 C1 A2 D3 B4;  D2-D4 A1 B2 C3 D4.
    """
    usual = {"A": 4, "B": 3, "C": 2, "D": 1}
    caps = [usual, {"A": 3, "B": 1, "C": 4, "D": 2}, usual, usual, usual]
    closes: dict[str, list[float | None]] = {s: [10.0] * 5 for s in "ABCD"}
    return market(
        "lag_buffer", DAYS[:5], closes, caps, top_n=2, buffer={"entry_rank": 1, "exit_rank": 3}
    )


def halted_market() -> Scenario:
    """Top 2, daily: C is selected on D1 and has no row on D2, its effective date with lag 1.

    Ranks: D0 A3 B2 C1 -> S0 {A, B};  D1 C3 A2 B1 -> S1 {C, A};  D2 (C halted) A3 B2 ->
    S2 {A, B};  D3 A3 B2 C1 -> S3 {A, B}.
    Closes: A 10 11 11 11;  B 10 10 12 12;  C 10 10 - 12.
    """
    first = {"A": 3, "B": 2, "C": 1}
    caps = [first, {"A": 2, "B": 1, "C": 3}, {"A": 3, "B": 2}, first]
    closes: dict[str, list[float | None]] = {
        "A": [10, 11, 11, 11],
        "B": [10, 10, 12, 12],
        "C": [10, 10, None, 12],
    }
    return market("lag_halted", DAYS[:4], closes, caps, top_n=2)


def delisted_market() -> Scenario:
    """Top 1, daily: B is selected on D1 (its last row) and delisted before D2.

    Ranks: D0 A2 B1 -> {A};  D1 B2 A1 -> {B};  D2..D4 only A.  Closes: A 10 10 12 12 15;
    B 10 20.
    """
    caps = [{"A": 2, "B": 1}, {"A": 1, "B": 2}, *[{"A": 2}] * 3]
    closes: dict[str, list[float | None]] = {
        "A": [10, 10, 12, 12, 15],
        "B": [10, 20, None, None, None],
    }
    return market("lag_delisted", DAYS[:5], closes, caps, top_n=1)


def lag_scenarios() -> list[Scenario]:
    return [daily_market(), weekly_market(), buffer_market(), halted_market(), delisted_market()]


# --------------------------------------------------------------------------- lag 0


@pytest.mark.parametrize(
    "s", [s for s in [*all_scenarios(), *lag_scenarios()] if not s.raises], ids=lambda s: s.name
)
def test_lag_zero_is_no_key(s: Scenario) -> None:
    plain = build(s, None)
    assert_identical_results(plain, build(s, 0))
    assert plain.pending == []
    # current_weights: the weights of the last composition
    last = plain.compositions[column(plain, "date")[-1]]
    assert plain.current_weights == dict(zip(last["symbol"], last["weight"], strict=True))


@pytest.mark.parametrize("value", [-1, 1.5, True, "1"])
def test_invalid_lag_raises(value: Any) -> None:
    with pytest.raises(ValueError, match="effective_lag"):
        build(daily_market(), value)


# --------------------------------------------------------------------------- daily


def test_daily_lag_1() -> None:
    res = build(daily_market(), 1)
    # S0 at once (base), S_k (k >= 1) at the close of D_{k+1}; S5 is pending.
    # D0: q_A = q_B = 500 / 10 = 50.
    # D1: L = 50 * 11 + 50 * 10 = 1050 (S1 is selected, not in effect: no flag, no turnover).
    # D2: L = 50 * 11 + 50 * 12 = 1150; S1 {B, A} takes effect: drifted A 550/1150 = 11/23,
    #     B 12/23 vs 1/2, 1/2: turnover 0.5 * (1/46 + 1/46) = 1/46; same set, no change.
    #     q_A = 575 / 11, q_B = 575 / 12.
    # D3: flat: L = 1150; S2 {C, A}: drifted 1/2, 1/2 -> turnover 0.5 * (0 + 1/2 + 1/2) = 1/2;
    #     change C in, B out. q_C = 575 / 10, q_A = 575 / 11.
    # D4: C 10 -> 15: L = 57.5 * 15 + 575 = 1437.5 (R = 1/4); S3 {C, D}: drifted C 0.6, A 0.4
    #     -> 0.5 * (0.1 + 0.4 + 0.5) = 1/2; change D in, A out. q_C = 718.75 / 15,
    #     q_D = 718.75 / 10.
    # D5: D 10 -> 8: L = 718.75 + 575 = 1293.75 (R = -0.1); S4 {D, C}: drifted C 5/9, D 4/9
    #     -> 0.5 * (1/18 + 1/18) = 1/18.
    assert column(res, "level") == approx([1000, 1050, 1150, 1150, 1437.5, 1293.75], rel=1e-12)
    assert column(res, "daily_return") == approx([0, 0.05, 2 / 21, 0, 0.25, -0.1], abs=1e-12)
    assert column(res, "is_rebalance") == [True, False, True, True, True, True]
    assert turnovers(res) == [0, None, approx(1 / 46), approx(1 / 2), approx(1 / 2), approx(1 / 18)]
    assert column(res, "n_constituents") == [2] * 6
    assert res.changes == [(D3, ["C"], ["B"]), (D4, ["D"], ["A"])]
    # Ranks are those of the reference date: in force after D2 is S1 (B1 A2 on D1), although
    # on D2 itself C ranks first and B third.
    symbols = [comp(res, day, "symbol") for day in DAYS]
    assert symbols == [["A", "B"], ["A", "B"], ["B", "A"], ["C", "A"], ["C", "D"], ["D", "C"]]
    assert all(comp(res, day, "rank") == [1, 2] for day in DAYS)
    assert comp(res, D1, "weight") == approx([11 / 21, 10 / 21], rel=1e-12)  # drifted S0
    assert comp(res, D2, "weight") == approx([0.5, 0.5], rel=1e-12)
    assert comp(res, D2, "units") == approx([575 / 12, 575 / 11], rel=1e-12)
    assert comp(res, D4, "units") == approx([718.75 / 15, 71.875], rel=1e-12)
    assert comp(res, D4, "price") == approx([15, 10], rel=1e-12)
    assert comp(res, D4, "market_cap") == [3e9, 4e9]  # last market caps (D4)
    assert comp(res, D5, "weight") == approx([0.5, 0.5], rel=1e-12)
    # Pending: S5 {A, B} (A1 B2 on D5), in effect at the next session after the data.
    assert [pending_view(p) for p in res.pending] == [(D5, 1, ["A", "B"], [1, 2])]
    pending = res.pending[0].constituents
    assert list(pending.columns) == PENDING_COLUMNS
    assert list(pending["weight"]) == approx([0.5, 0.5], rel=1e-12)
    assert list(pending["market_cap"]) == [4e9, 3e9]
    assert list(pending["sector"]) == [IT, IT]
    # In force after D5: S4 just reset, D 1/2 and C 1/2 -> A, B replace both: turnover 1.
    assert res.current_weights == approx({"D": 0.5, "C": 0.5}, rel=1e-12)
    assert expected_turnover(res.pending[0], res.current_weights) == approx(1.0, rel=1e-12)
    assert res.pending[0].expected_turnover(res.current_weights) == approx(1.0, rel=1e-12)
    assert res.errors == []


def test_daily_lag_2_two_selections_in_flight() -> None:
    res = build(daily_market(), 2)
    # S_k takes effect at the close of D_{k+2}: S1 on D3, S2 on D4, S3 on D5; S4, S5 pending.
    # D0-D2 hold S0 (q = 50, 50): L = 1000, 1050, 1150.
    # D3: flat, L = 1150; S1 {B, A}: drifted 11/23, 12/23 -> 1/46; q_A = 575/11, q_B = 575/12.
    # D4: A, B flat: L = 1150 (C's +50% is missed); S2 {C, A}: drifted 1/2, 1/2 -> 1/2;
    #     C enters at 15: q_C = 575 / 15, q_A = 575 / 11.
    # D5: C, A flat: L = 1150 (D's -20% is missed); S3 {C, D}: drifted 1/2, 1/2 -> 1/2;
    #     q_C = 575 / 15, q_D = 575 / 8.
    assert column(res, "level") == approx([1000, 1050, 1150, 1150, 1150, 1150], rel=1e-12)
    assert column(res, "daily_return") == approx([0, 0.05, 2 / 21, 0, 0, 0], abs=1e-12)
    assert column(res, "is_rebalance") == [True, False, False, True, True, True]
    assert turnovers(res) == [0, None, None, approx(1 / 46), approx(1 / 2), approx(1 / 2)]
    assert res.changes == [(D4, ["C"], ["B"]), (D5, ["D"], ["A"])]
    symbols = [comp(res, day, "symbol") for day in DAYS]
    assert symbols == [["A", "B"]] * 3 + [["B", "A"], ["C", "A"], ["C", "D"]]
    assert all(comp(res, day, "rank") == [1, 2] for day in DAYS)
    assert comp(res, D2, "weight") == approx([11 / 23, 12 / 23], rel=1e-12)
    assert comp(res, D4, "units") == approx([575 / 15, 575 / 11], rel=1e-12)
    assert comp(res, D5, "units") == approx([575 / 15, 575 / 8], rel=1e-12)
    assert comp(res, D5, "price") == approx([15, 8], rel=1e-12)
    assert comp(res, D5, "market_cap") == [2e9, 1e9]
    # Two pending selections, in reference-date order: S4 {D, C} (D1 C2 on D4) at the first
    # session after the data, S5 {A, B} at the second.
    assert [pending_view(p) for p in res.pending] == [
        (D4, 1, ["D", "C"], [1, 2]),
        (D5, 2, ["A", "B"], [1, 2]),
    ]
    assert list(res.pending[0].constituents["market_cap"]) == [4e9, 3e9]  # caps on D4
    assert list(res.pending[1].constituents["market_cap"]) == [4e9, 3e9]  # caps on D5
    # Both against the weights in force after D5 (S3 just reset: C 1/2, D 1/2).
    assert res.current_weights == approx({"C": 0.5, "D": 0.5}, rel=1e-12)
    assert [expected_turnover(p, res.current_weights) for p in res.pending] == approx(
        [0.0, 1.0], abs=1e-12
    )


def test_daily_selections_do_not_depend_on_the_lag() -> None:
    # The same selections (sets, ranks, target weights) at the same reference dates: only
    # their effective dates move. The lag 0 changes (one per reference date) shift by lag.
    plain = build(daily_market())
    assert plain.changes == [(D2, ["C"], ["B"]), (D3, ["D"], ["A"]), (D5, ["A", "B"], ["C", "D"])]
    assert build(daily_market(), 1).changes == [(D3, ["C"], ["B"]), (D4, ["D"], ["A"])]
    assert build(daily_market(), 6).changes == []
    far = build(daily_market(), 6)
    assert [pending_view(p)[:2] for p in far.pending] == [
        (day, k + 2) for k, day in enumerate(DAYS[1:])
    ]


# --------------------------------------------------------------------------- weekly


def test_weekly_lag_1() -> None:
    res = build(weekly_market(), 1)
    # D0: q_A = q_B = 50. D1: L = 50 * 12 + 50 * 10 = 1100; D2, D3 flat.
    # D3 (Friday) selects S3 {B, C} (B1 C2): nothing changes on D3 (no flag, no turnover).
    # D4 = effective date: L = 50 * 12 + 50 * 8 = 1000; drifted A 0.6, B 0.4 vs B 1/2, C 1/2:
    #     0.5 * (0.6 + 0.1 + 0.5) = 0.6; change C in, A out; q_B = 500 / 8, q_C = 500 / 11.
    # D5: L = 62.5 * 8 + (500 / 11) * 13.2 = 500 + 600 = 1100.
    assert column(res, "level") == approx([1000, 1100, 1100, 1100, 1000, 1100], rel=1e-12)
    assert column(res, "is_rebalance") == [True, False, False, False, True, False]
    assert turnovers(res) == [0, None, None, None, approx(0.6), None]
    assert res.changes == [(D4, ["C"], ["A"])]
    # After D3 the base composition (ranks of D0) is still in force, drifted: 6/11, 5/11.
    assert comp(res, D3, "symbol") == ["A", "B"]
    assert comp(res, D3, "rank") == [1, 2]
    assert comp(res, D3, "weight") == approx([6 / 11, 5 / 11], rel=1e-12)
    # From D4: S3 with its D3 ranks (B1 C2), although C ranks first on D4 and D5.
    for day in (D4, D5):
        assert comp(res, day, "symbol") == ["B", "C"]
        assert comp(res, day, "rank") == [1, 2]
        assert comp(res, day, "market_cap") == [2e9, 3e9]
    assert comp(res, D4, "units") == approx([62.5, 500 / 11], rel=1e-12)
    assert comp(res, D5, "weight") == approx([5 / 11, 6 / 11], rel=1e-12)
    assert res.pending == []
    assert res.current_weights == approx({"B": 5 / 11, "C": 6 / 11}, rel=1e-12)


def test_weekly_lag_2() -> None:
    res = build(weekly_market(), 2)
    # S0 holds through D4 (L = 1000 there). D5: L = 50 * 15 + 50 * 8 = 1150; S3 takes effect:
    # drifted A 15/23, B 8/23 vs B 1/2, C 1/2: 0.5 * (15/23 + 7/46 + 1/2) = 15/23.
    # C enters at 13.2: q_B = 575 / 8, q_C = 575 / 13.2.
    assert column(res, "level") == approx([1000, 1100, 1100, 1100, 1000, 1150], rel=1e-12)
    assert column(res, "is_rebalance") == [True, False, False, False, False, True]
    assert turnovers(res) == [0, None, None, None, None, approx(15 / 23)]
    assert res.changes == [(D5, ["C"], ["A"])]
    assert comp(res, D4, "symbol") == ["A", "B"]
    assert comp(res, D5, "symbol") == ["B", "C"]
    assert comp(res, D5, "rank") == [1, 2]
    assert comp(res, D5, "units") == approx([575 / 8, 575 / 13.2], rel=1e-12)
    assert comp(res, D5, "price") == approx([8, 13.2], rel=1e-12)
    assert res.pending == []


@pytest.mark.parametrize(("lag", "offset"), [(3, 1), (5, 3)])
def test_weekly_selection_pending_at_the_end(lag: int, offset: int) -> None:
    res = build(weekly_market(), lag)
    # D3 + 3 sessions is the first session after D5: the D3 selection is pending throughout.
    assert column(res, "level") == approx([1000, 1100, 1100, 1100, 1000, 1150], rel=1e-12)
    assert column(res, "is_rebalance") == [True] + [False] * 5
    assert turnovers(res) == [0] + [None] * 5
    assert res.changes == []
    assert all(comp(res, day, "symbol") == ["A", "B"] for day in DAYS)
    assert [pending_view(p) for p in res.pending] == [(D3, offset, ["B", "C"], [1, 2])]
    pending = res.pending[0].constituents
    assert list(pending["weight"]) == approx([0.5, 0.5], rel=1e-12)
    assert list(pending["market_cap"]) == [3e9, 2e9]  # caps on the reference date D3
    # In force after D5: A 750/1150 = 15/23, B 400/1150 = 8/23. Target B 1/2, C 1/2:
    # 0.5 * (|0 - 15/23| + |1/2 - 8/23| + |1/2 - 0|) = 0.5 * (30 + 7 + 23) / 46 = 15/23.
    assert res.current_weights == approx({"A": 15 / 23, "B": 8 / 23}, rel=1e-12)
    assert expected_turnover(res.pending[0], res.current_weights) == approx(15 / 23, rel=1e-12)


def test_base_date_takes_effect_at_once() -> None:
    # base_date D1 with lag 2: the base composition is formed at the close of D1 at once;
    # the next selection (D2, daily) takes effect on D4.
    s = daily_market()
    s.definition["base_date"] = D1
    res = build(s, 2)
    assert column(res, "date") == DAYS[1:]
    assert column(res, "is_rebalance") == [True, False, False, True, True]
    assert comp(res, D1, "symbol") == ["B", "A"]  # S1, ranks of D1
    assert comp(res, D3, "symbol") == ["B", "A"]
    assert comp(res, D4, "symbol") == ["C", "A"]  # S2


# --------------------------------------------------------------------------- buffer


def test_buffer_previous_is_the_latest_selection_not_yet_in_effect() -> None:
    res = build(buffer_market(), 2)
    # D0 (base): plain top 2 = S0 {A, B}, in effect at once.
    # D1 (ranks C1 A2 D3 B4): C(prev) = S0: keep A (2 <= 3), B (4) leaves; enter C (1 <= 1)
    #     -> S1 {C, A}, in effect on D3.
    # D2 (ranks A1 B2 C3 D4): C(prev) = S1 {C, A}, the latest selection, although S0 {A, B} is
    #     still in force: keep A (1) and C (3 <= exit 3); enter = non-members with rank <= 1:
    #     none -> S2 {A, C}, ranks 1 and 3, in effect on D4. (Taking C(prev) = the
    #     constituents in force would keep A and B instead.)
    # D3, D4: same ranks, C(prev) {A, C} -> {A, C}, pending.
    symbols = [comp(res, day, "symbol") for day in DAYS[:5]]
    assert symbols == [["A", "B"]] * 3 + [["C", "A"], ["A", "C"]]
    assert comp(res, D3, "rank") == [1, 2]  # ranks of D1
    assert comp(res, D4, "rank") == [1, 3]  # ranks of D2: C kept by the buffer at rank 3
    assert res.changes == [(D3, ["C"], ["B"])]
    # Constant prices: drifted weights are the targets; one swap of two is 1/2.
    assert turnovers(res) == [0, None, None, approx(0.5), approx(0.0, abs=1e-15)]
    assert column(res, "level") == approx([1000] * 5, rel=1e-12)
    assert [pending_view(p) for p in res.pending] == [
        (D3, 1, ["A", "C"], [1, 3]),
        (D4, 2, ["A", "C"], [1, 3]),
    ]
    assert [expected_turnover(p, res.current_weights) for p in res.pending] == approx(
        [0.0, 0.0], abs=1e-12
    )


# --------------------------------------------------------------------------- halts and delistings


def test_selected_security_halted_on_its_effective_date_enters_at_its_last_price() -> None:
    res = build(halted_market(), 1)
    # D0: q_A = q_B = 50. D1: L = 550 + 500 = 1050.
    # D2: L = 550 + 600 = 1150. S1 {C, A} takes effect; C has no row on D2: it enters at its
    #     last price 10 (D1). Drifted A 11/23, B 12/23 vs C 1/2, A 1/2:
    #     0.5 * (1/2 + 1/46 + 12/23) = 12/23. q_C = 575 / 10 = 57.5, q_A = 575 / 11.
    # D3: C back at 12: L = 57.5 * 12 + 575 = 1265. S2 {A, B} (selected on D2, where C was not
    #     eligible) takes effect: drifted C 690/1265 = 6/11, A 5/11 vs A 1/2, B 1/2:
    #     0.5 * (6/11 + 1/22 + 1/2) = 6/11.
    assert column(res, "level") == approx([1000, 1050, 1150, 1265], rel=1e-12)
    assert column(res, "daily_return") == approx([0, 0.05, 2 / 21, 0.1], rel=1e-12)
    assert column(res, "is_rebalance") == [True, False, True, True]
    assert turnovers(res) == [0, None, approx(12 / 23), approx(6 / 11)]
    assert res.changes == [(D2, ["C"], ["B"]), (D3, ["B"], ["C"])]
    assert comp(res, D2, "symbol") == ["C", "A"]
    assert comp(res, D2, "rank") == [1, 2]  # ranks of D1
    assert comp(res, D2, "price") == approx([10, 11], rel=1e-12)
    assert comp(res, D2, "units") == approx([57.5, 575 / 11], rel=1e-12)
    assert comp(res, D2, "weight") == approx([0.5, 0.5], rel=1e-12)
    assert comp(res, D2, "market_cap") == [3e9, 3e9]  # C: its last market cap (D1)
    assert [pending_view(p) for p in res.pending] == [(D3, 1, ["A", "B"], [1, 2])]


def test_selected_security_delisted_before_its_effective_date_enters_and_leaves_later() -> None:
    res = build(delisted_market(), 1)
    # D0: {A}, q_A = 100. D1: L = 1000; S1 {B}. D2: A 12: L = 1200; S1 takes effect although
    # B has no row any more: q_B = 1200 / 20 = 60 at its last price; S2 {A}.
    # D3: B earns nothing: L = 60 * 20 = 1200; S2 {A} takes effect: q_A = 1200 / 12 = 100.
    # D4: L = 100 * 15 = 1500; S3 {A}: turnover 0.
    assert column(res, "level") == approx([1000, 1000, 1200, 1200, 1500], rel=1e-12)
    assert column(res, "daily_return") == approx([0, 0, 0.2, 0, 0.25], abs=1e-12)
    assert column(res, "is_rebalance") == [True, False, True, True, True]
    assert turnovers(res) == [0, None, approx(1.0), approx(1.0), approx(0.0, abs=1e-15)]
    assert res.changes == [(D2, ["B"], ["A"]), (D3, ["A"], ["B"])]
    assert comp(res, D2, "symbol") == ["B"]
    assert comp(res, D2, "price") == [20]
    assert comp(res, D2, "units") == approx([60], rel=1e-12)
    assert comp(res, D2, "market_cap") == [2e9]
    assert comp(res, D3, "symbol") == ["A"]
    assert comp(res, D3, "units") == approx([100], rel=1e-12)
    assert [pending_view(p) for p in res.pending] == [(D4, 1, ["A"], [1])]


def test_halted_entrant_with_actions_is_anchored_on_its_last_bar() -> None:
    # Top 1, daily, lag 1, a dividend column. C: close 10 on D0 and D1 (dividend 1 on D1),
    # no row on D2, 10.5 on D3. A (no actions): 10 throughout.
    # Ranks: D0 A2 C1 -> {A}; D1 C2 A1 -> {C}, in effect on D2 (C halted); D2 only A -> {A}.
    s = market(
        "lag_halted_actions",
        DAYS[:4],
        {"A": [10, 10, 10, 10], "C": [10, 10, None, 10.5]},
        [{"A": 2, "C": 1}, {"A": 1, "C": 2}, {"A": 2}, {"A": 2, "C": 1}],
        top_n=1,
    )
    s.prices["dividend"] = [
        1.0 if (row.symbol, row.date) == ("C", D1) else NAN for row in s.prices.itertuples()
    ]
    res = build(s, 1)
    # C's total return price: RI(D0) = P = close 10 (no dividend value yet), RI(D1) =
    # 10 * (10 + 1) / 10 = 11 (D1 gives C's first dividend value: the formulas from there on).
    # D2: L = 1000 (A flat); C enters at RI 11: q_total = 1000 / 11. The composition shows
    # real money from C's last bar (D1, dividend formulas in force): price = close 10,
    # units = q * 11 / 10 = 100.
    # D3: L = (1000 / 11) * 11 * 10.5 / 10 = 1050 (the dividend was before C entered).
    assert column(res, "level") == approx([1000, 1000, 1000, 1050], rel=1e-12)
    for v in ("price", "total", "net_total"):
        assert res.variant_levels[v] == approx([1000, 1000, 1000, 1050], rel=1e-12)
    assert comp(res, D2, "symbol") == ["C"]
    assert comp(res, D2, "price") == approx([10], rel=1e-12)
    assert comp(res, D2, "units") == approx([100], rel=1e-12)
    assert res.changes == [(D2, ["C"], ["A"]), (D3, ["A"], ["C"])]


# --------------------------------------------------------------------------- errors


def test_reference_date_without_eligible_security_schedules_nothing() -> None:
    # Top 1, daily, lag 1, min market cap 0.5bn. Ranks: D0 A2 B1 -> {A}; D1 B2 A1 -> {B};
    # D2 both 0.1bn: no eligible security (error, nothing scheduled); D3, D4 A2 B1 -> {A}.
    # Closes: A 10 11 11 11 11; B 10 10 12 13.2 13.2.
    s = market(
        "lag_error",
        DAYS[:5],
        {"A": [10, 11, 11, 11, 11], "B": [10, 10, 12, 13.2, 13.2]},
        [{"A": 2, "B": 1}, {"A": 1, "B": 2}, {"A": 0.1, "B": 0.1}, *[{"A": 2, "B": 1}] * 2],
        top_n=1,
        universe={"min_market_cap": 0.5e9},
    )
    res = build(s, 1)
    # D1: L = 1100 (A +10%). D2: L = 1100; S1 {B} takes effect on the error date: q_B = 1100/12.
    # D3: L = 1100 * 1.1 = 1210; nothing takes effect (D2 selected nothing); S3 {A}.
    # D4: L = 1210; S3 takes effect: {A}.
    assert res.errors == [D2]
    assert column(res, "level") == approx([1000, 1100, 1100, 1210, 1210], rel=1e-12)
    assert column(res, "is_rebalance") == [True, False, True, False, True]
    assert turnovers(res) == [0, None, approx(1.0), None, approx(1.0)]
    assert res.changes == [(D2, ["B"], ["A"]), (D4, ["A"], ["B"])]
    assert comp(res, D3, "symbol") == ["B"]
    assert comp(res, D3, "rank") == [1]  # rank of D1
    assert comp(res, D2, "market_cap") == [0.1e9]  # the last market cap: B is ineligible on
    assert comp(res, D3, "market_cap") == [1e9]  # D2 but in force (it entered on D2)
    assert [pending_view(p) for p in res.pending] == [(D4, 1, ["A"], [1])]


# --------------------------------------------------------------------------- properties

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def lag_markets(draw: st.DrawFn) -> tuple[Market, int]:
    """Random Part 1 markets, sometimes with a buffer or company ranking, and a lag 1-4."""
    m = draw(markets())
    defn = dict(m.definition)
    top_n = int(defn["top_n"])
    if draw(st.booleans()):
        defn["buffer"] = {
            "entry_rank": draw(st.integers(1, top_n)),
            "exit_rank": draw(st.integers(top_n, top_n + 4)),
        }
    securities, prices = m.securities, m.prices
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        securities = securities.copy()
        # about a third of the securities share a company keyed by their first letter
        securities["company_id"] = [
            f"{s[0]}0" if rng.random() < 0.35 else None for s in securities["symbol"]
        ]
        securities = securities[[*SECURITY_COLUMNS, "company_id"]]
        prices = prices.copy()
        prices["volume"] = rng.integers(0, 3, size=len(prices)).astype(float) * 1000.0
        defn["rank_by"] = "company"
    return Market(securities, prices, defn), draw(st.integers(1, 4))


def build_market(m: Market, lag: int) -> ReferenceResult | None:
    try:
        return reference_build(m.securities, m.prices, {**m.definition, "effective_lag": lag})
    except ValueError:
        return None  # no eligible security on the base date (or base after the data)


@PROPERTY_SETTINGS
@given(lag_markets())
def test_property_lag_moves_effective_dates_only(case: tuple[Market, int]) -> None:
    m, lag = case
    plain = build_market(m, 0)
    res = build_market(m, lag)
    assert (plain is None) == (res is None)
    if plain is None or res is None:
        return
    dates = column(res, "date")
    n = len(dates)
    assert column(plain, "date") == dates
    assert res.errors == plain.errors
    # The selections (sets, ranks, target weights, market caps) are those of lag 0, taking
    # effect ``lag`` sessions later (the base at once) or pending after the data.
    flags = column(res, "is_rebalance")
    expected_flags = [False] * n
    pending = iter(res.pending)
    for j, (day, flag) in enumerate(zip(dates, column(plain, "is_rebalance"), strict=True)):
        if not flag:
            continue
        target = plain.compositions[day]
        k = 0 if j == 0 else j + lag
        if k < n:
            expected_flags[k] = True
            got = res.compositions[dates[k]]
        else:
            p = next(pending)
            assert (p.reference_date, p.effective_offset) == (day, k - (n - 1))
            got = p.constituents
            assert list(got["market_cap"]) == list(target["market_cap"])
        assert list(got["symbol"]) == list(target["symbol"])
        assert list(got["rank"]) == list(target["rank"])
        assert list(got["weight"]) == approx(list(target["weight"]), rel=1e-9, abs=1e-12)
    assert next(pending, None) is None
    assert flags == expected_flags
    row = {day: i for i, day in enumerate(dates)}
    shifted = [(dates[row[c[0]] + lag], c[1], c[2]) for c in plain.changes if row[c[0]] + lag < n]
    assert res.changes == shifted
    # Levels: R(d) = sum of the weights in force after d-1 times the returns (carried prices;
    # these markets have no actions, so the total return price is P). Turnover on effective
    # dates: against the weights drifted to the close of d.
    prices = carried_prices(m.prices)
    returns = column(res, "daily_return")
    turnover = column(res, "turnover")
    for i in range(1, n):
        prev, day = res.compositions[dates[i - 1]], dates[i]
        growth = {s: prices[day][s] / prices[dates[i - 1]][s] for s in prev["symbol"]}
        r = sum(w * (growth[s] - 1) for s, w in zip(prev["symbol"], prev["weight"], strict=True))
        assert close_enough(returns[i], r), (day, returns[i], r)
        if flags[i]:
            drifted = {
                s: w * growth[s] / (1 + r)
                for s, w in zip(prev["symbol"], prev["weight"], strict=True)
            }
            now = res.compositions[day]
            weights = dict(zip(now["symbol"], now["weight"], strict=True))
            expected = 0.5 * sum(
                abs(weights.get(s, 0.0) - drifted.get(s, 0.0)) for s in set(weights) | set(drifted)
            )
            assert close_enough(turnover[i], expected), (day, turnover[i], expected)
        else:
            assert math.isnan(turnover[i])
    last = res.compositions[dates[-1]]
    assert res.current_weights == dict(zip(last["symbol"], last["weight"], strict=True))
