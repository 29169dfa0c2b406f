"""Hand-computed checks of aggregate capping (``group_cap``) in tests/reference_engine.py.

METHODOLOGY.md Part 2, "Aggregate capping": ``capped_market_cap`` with ``cap`` and
``group_cap: {threshold, limit}``; the sum of the weights above ``threshold`` must not exceed
``limit``. The contract pins the algorithm (``reference_engine.group_capped_weights``):
fill(bounds, total) gives w_i = min(bound_i, lam * mcap_i) summing to ``total``; w0 = the
single-name capped weights, kept when they meet the limit; else, m = the number of w0 weights
above the threshold, for m, m - 1, ..., 0: (a) fill with ``cap`` for the top m names and
``threshold`` for the others (skip m when the bounds sum to less than 1), done if the limit
holds; (b) else, if m * cap >= limit and (n - m) * threshold >= 1 - limit, the top m filled to
exactly ``limit`` and the others to 1 - limit, done if the smallest top weight is >= the
largest other one. No m works: w0, and the date is reported (``group_cap_fallbacks``).
"""

from __future__ import annotations

import copy
import math
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_scenarios import (
    JAN,
    Scenario,
    all_scenarios,
    bar,
    definition,
    prices_frame,
    scenario,
    securities_frame,
    security,
    series_bars,
)
from reference_engine import (
    ReferenceResult,
    fill_to_bounds,
    group_capped_weights,
    reference_build,
    target_weights,
    xnys_sessions,
)

approx = pytest.approx
TOL = 1e-12
UCITS = {"threshold": 0.05, "limit": 0.40}

# 20 names: A..F large, G..T small (market caps in billions).
UCITS_NAMES = list("ABCDEFGHIJKLMNOPQRST")
UCITS_CAPS = [400.0, 300.0, 200.0, 80.0, 70.0, 60.0] + [10.0] * 14  # total 1110


def build(s: Scenario) -> ReferenceResult:
    return reference_build(s.securities, s.prices, s.definition)


def ucits_scenario() -> Scenario:
    """UCITS 10/5/40 on 20 names; every price doubles for A and is flat for the rest."""
    rows = []
    for symbol, mc in zip(UCITS_NAMES, UCITS_CAPS, strict=True):
        closes = [10.0, 20.0] if symbol == "A" else [10.0, 10.0]
        rows += series_bars(JAN[:2], symbol, list(closes), mc * 1e9)
    return Scenario(
        "group_cap_ucits",
        securities_frame([security(s) for s in UCITS_NAMES]),
        prices_frame(rows),
        definition(top_n=20, weighting="capped_market_cap", cap=0.10, group_cap=dict(UCITS)),
    )


# --------------------------------------------------------------------------- UCITS 10/5/40


def test_ucits_single_cap_alone_breaks_the_group_limit() -> None:
    caps = dict(zip(UCITS_NAMES, UCITS_CAPS, strict=True))
    single = target_weights(UCITS_NAMES, caps, "capped_market_cap", 0.10)
    # Part 1 capping at 10%: mcap weights A .360, B .270, C .180 > .1 -> capped; the other .7
    # pro rata over D..T (350): D .16, E .14, F .12 > .1 -> capped; the other .4 over G..T
    # (140): 10/140 * .4 = 1/35 each.
    assert [single[s] for s in "ABCDEF"] == approx([0.1] * 6, rel=1e-12)
    assert single["G"] == approx(1 / 35, rel=1e-12)
    # Six names above 5% hold 60% > 40%: the group constraint binds.
    assert sum(w for w in single.values() if w > 0.05) == approx(0.6, rel=1e-12)


def test_ucits_hand_computed() -> None:
    caps = dict(zip(UCITS_NAMES, UCITS_CAPS, strict=True))
    weights, fallback = group_capped_weights(UCITS_NAMES, caps, 0.10, 0.05, 0.40)
    # (The pinned algorithm; the weights are those of the project's earlier algorithm.)
    # 1. w0 = the single-cap weights above; above .05: A..F = .60 > .40. m = 6.
    # m = 6: (a) A..F bound .10, G..T bound .05: the fill is w0, .60 > .40: no.
    #   (b) 6 * .1 >= .4 and 14 * .05 >= .6: A..F pro rata to .40 (A, B -> .10; .2 over
    #   C..F (410): C .0976, D .0390, E .0341, F .0293); G..T .6 / 14 = .0429 each: the
    #   smallest top weight .0293 < .0429: no.
    # m = 5: (a) A..E bound .10; F..T bound .05. fill:
    #   round 1: mcap/1110: A .360, B .270, C .180 > .10 and F .054 > .05 -> fixed;
    #   round 2: 1 - .3 - .05 = .65 over D, E, G..T (290): D .179, E .157 > .10 -> fixed;
    #   round 3: 1 - .5 - .05 = .45 over G..T (140): .0321 each <= .05.
    #   Above .05: A..E = .50 > .40: no.
    #   (b) 5 * .1 >= .4 and 15 * .05 >= .6: A..E pro rata to .40 (A, B, C -> .10; D .0533,
    #   E .0467); F..T to .60 (F .18 -> .05; G..T .55 / 14 = .0393): .0467 < .05: no.
    # m = 4: (a) A..D bound .10; E..T bound .05. The fill ends with A..D at .10, E and F at
    #   .05, and 1 - .4 - .1 = .5 over G..T (140): 10/140 * .5 = 1/28 each.
    #   Above .05: A..D = .40 <= .40. Done.
    assert fallback is None
    assert [weights[s] for s in "ABCD"] == approx([0.1] * 4, rel=1e-12)
    assert [weights[s] for s in "EF"] == approx([0.05] * 2, rel=1e-12)
    assert [weights[s] for s in UCITS_NAMES[6:]] == approx([1 / 28] * 14, rel=1e-12)
    # The constraints, one by one:
    assert sum(weights.values()) == approx(1.0, abs=1e-12)
    assert max(weights.values()) <= 0.10 * (1 + TOL)
    group = [w for w in weights.values() if w > 0.05 * (1 + TOL)]
    assert len(group) == 4
    assert sum(group) <= 0.40 * (1 + TOL)
    ordered = [weights[s] for s in UCITS_NAMES]  # market caps descending
    assert all(a >= b - TOL for a, b in pairwise(ordered))


def test_ucits_through_the_build() -> None:
    res = build(ucits_scenario())
    day1, day2 = JAN[:2]
    first = res.compositions[day1]
    assert list(first["symbol"]) == UCITS_NAMES
    assert list(first["weight"]) == approx([0.1] * 4 + [0.05] * 2 + [1 / 28] * 14, rel=1e-12)
    # Day 2: A doubles, the rest flat. R = .10 * (20/10 - 1) = .10 -> L = 1100.
    assert list(res.levels["level"]) == approx([1000, 1100], rel=1e-12)
    # Daily rebalance: A (mcap unchanged at 400) is capped again; turnover =
    # 0.5 * sum |target - drifted|; drifted A = 200/1100, others w * 1000/1100.
    # |.1 - 2/11| = .9/11; each other name: w - w/1.1 = w * .1/1.1, summing to .9 * .1/1.1.
    # turnover = 0.5 * (.9/11 + .09/1.1) = 0.5 * (.9/11 + .9/11) = .9/11
    assert float(res.levels["turnover"].iloc[1]) == approx(0.9 / 11, rel=1e-12)
    assert list(res.compositions[day2]["weight"]) == approx(list(first["weight"]), rel=1e-12)


def ucits_random_market(seed: int = 7, n_symbols: int = 30, n_days: int = 30) -> Scenario:
    """UCITS 10/5/40, daily, on 30 names with caps spread over two orders of magnitude."""
    rng = np.random.default_rng(seed)
    days = [day for day in xnys_sessions() if day >= JAN[0]][:n_days]
    symbols = [f"U{k:02d}" for k in range(n_symbols)]
    base_caps = np.exp(rng.uniform(np.log(1e9), np.log(2e11), size=n_symbols))
    rows = []
    for k, symbol in enumerate(symbols):
        price = 100.0
        for day in days:
            price *= math.exp(rng.normal(0.0, 0.02))
            rows.append(bar(day, symbol, price, mc=base_caps[k] * math.exp(rng.normal(0, 0.05))))
    return Scenario(
        "group_cap_ucits_random",
        securities_frame([security(s) for s in symbols]),
        prices_frame(rows),
        definition(top_n=n_symbols, weighting="capped_market_cap", cap=0.10, group_cap=UCITS),
    )


def test_ucits_random_market_meets_every_constraint() -> None:
    res = build(ucits_random_market())
    bound_days = 0
    for day, comp in res.compositions.items():
        weights = list(comp["weight"])
        caps = list(comp["market_cap"])
        assert math.isclose(sum(weights), 1.0, abs_tol=1e-9), day
        # 30 * .05 = 1.5 >= 1: never a fallback, so every constraint holds.
        assert max(weights) <= 0.10 + 1e-12, day
        assert sum(w for w in weights if w > 0.05 * (1 + TOL)) <= 0.40 * (1 + TOL), day
        for i in range(len(caps)):
            for j in range(len(caps)):
                if caps[i] > caps[j]:
                    assert weights[i] >= weights[j] - 1e-12, (day, i, j)
        single = target_weights(
            list(comp["symbol"]),
            dict(zip(comp["symbol"], caps, strict=True)),
            "capped_market_cap",
            0.10,
        )
        if sum(w for w in single.values() if w > 0.05) > 0.40:
            bound_days += 1
    assert bound_days == len(res.compositions)  # the group limit binds every day here


# --------------------------------------------------------------------------- other cases


def test_no_binding_constraint_returns_single_cap_weights() -> None:
    # capped_one_round (caps 60, 25, 10, 5; cap .4): single-cap weights .4, .375, .15, .075
    # (A capped, .6 spread over 40: B .375, C .15, D .075). With threshold .3 the group is
    # A + B = .775 <= limit .8: nothing more to do.
    s = scenario("capped_one_round")
    plain = build(s)
    s.definition["group_cap"] = {"threshold": 0.3, "limit": 0.8}
    grouped = build(s)
    expected = [0.4, 0.375, 0.15, 0.075]
    assert list(grouped.compositions[JAN[0]]["weight"]) == approx(expected, rel=1e-12)
    for day in plain.compositions:
        a, b = plain.compositions[day]["weight"], grouped.compositions[day]["weight"]
        assert list(b) == approx(list(a), abs=1e-15)
    pd.testing.assert_frame_equal(grouped.levels, plain.levels, check_exact=False, rtol=1e-15)


def test_neither_cap_binds_returns_market_cap_weights() -> None:
    caps = {"A": 3.0, "B": 3.0, "C": 2.0, "D": 2.0}  # mcap weights .3 .3 .2 .2
    weights, fallback = group_capped_weights(list(caps), caps, 0.3, 0.25, 0.6)
    # No weight above .3; group (> .25) = A + B = .6 <= .6.
    assert fallback is None
    assert [weights[s] for s in "ABCD"] == approx([0.3, 0.3, 0.2, 0.2], abs=1e-15)


def test_two_names_in_group_one_pushed_to_threshold() -> None:
    # caps 60, 25, 10, 5; cap .4, threshold .2, limit .5.
    # w0 = .4, .375, .15, .075; above .2: A + B = .775 > .5; m = 2.
    # m = 2: (a) bounds .4, .4, .2, .2: the fill is w0, .775 > .5: no. (b) 2 * .2 = .4 is
    #   less than 1 - .5: not tried.
    # m = 1: (a) bounds .4, .2, .2, .2. fill: round 1 (mcap/100): A .6 > .4, B .25 > .2
    #   fixed; round 2: .4 over C, D (15): C .2667 > .2 fixed; round 3: D = 1 - .8 = .2.
    #   Above .2: A = .4 <= .5. Done: .4, .2, .2, .2.
    caps = {"A": 60.0, "B": 25.0, "C": 10.0, "D": 5.0}
    weights, fallback = group_capped_weights(list(caps), caps, 0.4, 0.2, 0.5)
    assert fallback is None
    assert [weights[s] for s in "ABCD"] == approx([0.4, 0.2, 0.2, 0.2], rel=1e-12)


def test_no_solution_falls_back_to_single_cap_weights() -> None:
    # Same caps, limit .3. Amended contract: with no solution the single-name capped weights
    # w0 are used and the date reported (the earlier algorithm gave equal weights).
    # w0 = .4, .375, .15, .075; above .2: .775 > .3; m = 2.
    # m = 2: (a) w0 again, no; (b) 2 * .2 = .4 < 1 - .3: not tried.
    # m = 1: (a) .4, .2, .2, .2 (as above): A = .4 > .3, no; (b) 3 * .2 = .6 < .7: not tried.
    # m = 0: (a) bounds 4 * .2 = .8 < 1: skipped; (b) 0 * .4 < .3: not tried. No m works.
    caps = {"A": 60.0, "B": 25.0, "C": 10.0, "D": 5.0}
    weights, fallback = group_capped_weights(list(caps), caps, 0.4, 0.2, 0.3)
    assert fallback == "no_solution"
    assert [weights[s] for s in "ABCD"] == approx([0.4, 0.375, 0.15, 0.075], rel=1e-12)
    s = scenario("capped_one_round")  # the same caps, cap .4, daily on Jan 2 and Jan 3
    s.definition["group_cap"] = {"threshold": 0.2, "limit": 0.3}
    res = build(s)
    assert list(res.compositions[JAN[0]]["weight"]) == approx([0.4, 0.375, 0.15, 0.075])
    assert res.group_cap_fallbacks == JAN[:2]  # one warning per rebalance date
    assert build(scenario("capped_one_round")).group_cap_fallbacks == []


def test_single_cap_infeasible_gives_equal_weights() -> None:
    # capped_infeasible: 4 names, cap .2: 4 * .2 < 1 -> w0 = equal weights (as Part 1).
    # With UCITS 10/5/40 all four .25 are above .05: 1 > .4; m = 4: (a) bounds 4 * .2 < 1:
    # skipped, and so is every smaller m ((b) needs (4 - m) * .05 >= .6). No solution: w0,
    # the equal weights, now reported as a fallback (amended contract).
    s = scenario("capped_infeasible")
    s.definition["group_cap"] = dict(UCITS)
    res = build(s)
    assert list(res.compositions[JAN[0]]["weight"]) == approx([0.25] * 4, rel=1e-12)
    assert res.group_cap_fallbacks == JAN[:2]
    caps = {"A": 60.0, "B": 25.0, "C": 10.0, "D": 5.0}
    weights, fallback = group_capped_weights(list(caps), caps, 0.2, 0.05, 0.4)
    assert fallback == "no_solution"
    assert list(weights.values()) == [0.25] * 4


def test_fill_to_bounds() -> None:
    # w = min(bound, lam * mcap): mcaps 6, 3, 1; bounds .5, .4, .4:
    # round 1: .6 > .5 fixed; round 2: .5 over 4: .375, .125.
    assert fill_to_bounds([6.0, 3.0, 1.0], [0.5, 0.4, 0.4]) == approx([0.5, 0.375, 0.125])
    assert fill_to_bounds([6.0, 3.0, 1.0], [0.3, 0.3, 0.3]) is None  # .9 < 1
    # To a total (step b): mcaps 6, 3, 1 to .6 with bounds .3: .36 > .3 fixed; .3 over 4:
    # .225, .075.
    assert fill_to_bounds([6.0, 3.0, 1.0], [0.3, 0.3, 0.3], 0.6) == approx([0.3, 0.225, 0.075])
    assert fill_to_bounds([6.0, 3.0, 1.0], [0.3, 0.3, 0.3], 0.95) is None  # .9 < .95


def test_group_cap_needs_capped_weighting() -> None:
    s = scenario("equal_weight_daily")
    s.definition["group_cap"] = dict(UCITS)
    with pytest.raises(ValueError):
        build(s)


@pytest.mark.parametrize("s", [s for s in all_scenarios() if not s.raises], ids=lambda s: s.name)
def test_no_group_cap_key_is_part_one(s: Scenario) -> None:
    # group_cap None behaves like an absent key.
    with_none = copy.deepcopy(s.definition)
    with_none["group_cap"] = None
    a = build(s)
    b = reference_build(s.securities, s.prices, with_none)
    pd.testing.assert_frame_equal(a.levels, b.levels, check_exact=True)
    for day in a.compositions:
        pd.testing.assert_frame_equal(a.compositions[day], b.compositions[day], check_exact=True)


# --------------------------------------------------------------------------- property


@st.composite
def capping_problems(draw: st.DrawFn) -> tuple[dict[str, float], float, float, float]:
    n = draw(st.integers(1, 60))
    exponents = draw(st.lists(st.floats(0.0, 6.0), min_size=n, max_size=n))
    if draw(st.booleans()):  # frequent ties
        exponents = [round(x) / 2 for x in exponents]
    caps = {f"S{i:02d}": 1e6 * 10**x for i, x in enumerate(exponents)}
    cap = draw(st.floats(0.02, 0.5))
    threshold = draw(st.floats(0.01, cap))
    limit = draw(st.floats(threshold, 1.0))
    return caps, cap, threshold, limit


def group_total(weights: dict[str, float], threshold: float) -> float:
    return sum(w for w in weights.values() if w > threshold * (1 + TOL))


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(capping_problems())
def test_property_group_cap(problem: tuple[dict[str, float], float, float, float]) -> None:
    caps, cap, threshold, limit = problem
    names = list(caps)
    n = len(names)
    weights, fallback = group_capped_weights(names, caps, cap, threshold, limit)
    assert sorted(weights) == sorted(names)
    assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-9)
    # Via the definition path too.
    group_cap = {"threshold": threshold, "limit": limit}
    assert target_weights(names, caps, "capped_market_cap", cap, group_cap) == weights

    single = target_weights(names, caps, "capped_market_cap", cap)  # w0
    if fallback is not None:
        # No m works: the single-name capped weights w0, which break the group limit.
        assert fallback == "no_solution"
        assert weights == single
        assert group_total(single, threshold) > limit * (1 + TOL)
        return
    # The group within the limit.
    assert group_total(weights, threshold) <= limit * (1 + TOL) + 1e-15
    # Every single-name weight within the cap (unless the cap cannot be met: then w0 is the
    # equal weights, kept only when they meet the group limit).
    if n * cap >= 1:
        assert max(weights.values()) <= cap + 1e-12
    else:
        assert weights == single
    # Monotone: a larger market cap never gets a smaller weight.
    for a in names:
        for b in names:
            if caps[a] > caps[b]:
                assert weights[a] >= weights[b] - 1e-12, (a, b)
    # Untouched when no constraint binds.
    if group_total(single, threshold) <= limit * (1 + TOL):
        for s in names:
            assert weights[s] == approx(single[s], abs=1e-15)
        total = sum(caps.values())
        if max(caps.values()) / total <= cap:  # the single-name cap does not bind either
            for s in names:
                assert weights[s] == approx(caps[s] / total, abs=1e-15)


@settings(max_examples=100, deadline=None, database=None)
@given(capping_problems())
def test_property_feasible_bounds_never_fall_back(
    problem: tuple[dict[str, float], float, float, float],
) -> None:
    caps, cap, threshold, limit = problem
    n = len(caps)
    _, fallback = group_capped_weights(list(caps), caps, cap, threshold, limit)
    if n * cap >= 1 and n * threshold >= 1:
        # Every fill of step (a) is feasible (bounds sum >= n * threshold >= 1), so the loop
        # ends with the limit met at the latest at m = 0 (no weight above the threshold).
        assert fallback is None
