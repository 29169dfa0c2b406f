"""Hand-computed checks of the selection buffer in tests/reference_engine.py.

METHODOLOGY.md Part 2, "Selection buffer": on a rebalance date with previous constituents
C(prev), keep = members of C(prev) that are eligible with rank <= exit_rank, enter = eligible
non-members with rank <= entry_rank, S = keep + enter trimmed (worst rank first) or filled up
(best rank first) to top_n. The base date is plain top N. Ranks are among all eligible
securities, so a kept member can show a rank > top_n.

The walk-through markets use constant prices and equal weights: the level stays 1000, every
weight is 1/top_n and one swap of constituents is a turnover of exactly 1/top_n. Market caps
below are in billions; "Jan 3" means 2024-01-03.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from typing import Any

import numpy as np
import pytest

from engine_scenarios import (
    JAN,
    JAN_2ND_WEEK,
    Scenario,
    all_scenarios,
    bar,
    definition,
    prices_frame,
    securities_frame,
    security,
)
from reference_engine import (
    ReferenceResult,
    assert_identical_results,
    buffered_selection,
    reference_build,
    xnys_sessions,
)

approx = pytest.approx


def build(s: Scenario) -> ReferenceResult:
    return reference_build(s.securities, s.prices, s.definition)


def comp(res: ReferenceResult, day: dt.date, name: str) -> list[Any]:
    return list(res.compositions[day][name])


def turnovers(res: ReferenceResult) -> list[float]:
    return list(res.levels["turnover"])


def caps_market(
    name: str, days: list[dt.date], caps: list[dict[str, float]], **overrides: Any
) -> Scenario:
    """Price 10 every day; ``caps[i]`` = {symbol: market cap in billions} on ``days[i]``."""
    symbols = sorted({s for day_caps in caps for s in day_caps})
    rows = [
        bar(day, symbol, 10.0, mc=mc * 1e9)
        for day, day_caps in zip(days, caps, strict=True)
        for symbol, mc in day_caps.items()
    ]
    return Scenario(
        name,
        securities_frame([security(s) for s in symbols]),
        prices_frame(rows),
        definition(**overrides),
    )


# --------------------------------------------------------------------------- walk-through

WALK_DAYS = [*JAN, JAN_2ND_WEEK[0]]  # Jan 2, 3, 4, 5, 8
WALK_CAPS = [
    # Jan 2 (base): ranks A1 B2 C3 D4 E5 F6 G7.
    {"A": 10, "B": 9, "C": 8, "D": 7, "E": 6, "F": 5, "G": 4},
    # Jan 3: C falls to 5.5 -> ranks A1 B2 D3 E4 C5 F6 G7.
    {"A": 10, "B": 9, "C": 5.5, "D": 7, "E": 6, "F": 5, "G": 4},
    # Jan 4: C falls to 3.5 -> ranks A1 B2 D3 E4 F5 G6 C7.
    {"A": 10, "B": 9, "C": 3.5, "D": 7, "E": 6, "F": 5, "G": 4},
    # Jan 5: G jumps to 20, F to 9.5 -> ranks G1 A2 F3 B4 D5 E6 C7.
    {"A": 10, "B": 9, "C": 3.5, "D": 7, "E": 6, "F": 9.5, "G": 20},
    # Jan 8: A has no row (halt) -> eligible ranks G1 F2 B3 D4 E5 C6.
    {"B": 9, "C": 3.5, "D": 7, "E": 6, "F": 9.5, "G": 20},
]


def buffer_walk() -> Scenario:
    """top 3, equal weight, daily; buffer entry_rank 2, exit_rank 5."""
    return caps_market(
        "buffer_walk",
        WALK_DAYS,
        WALK_CAPS,
        top_n=3,
        buffer={"entry_rank": 2, "exit_rank": 5},
    )


def buffer_scenarios() -> list[Scenario]:
    """The hand-made buffered markets of this module (also run through the engine)."""
    return [
        buffer_walk(),
        fill_up_when_few_eligible(),
        trim_keeps_best_ranked(),
        weekly_buffer(),
        buffered_noisy_market(),
    ]


def test_base_date_is_plain_top_n() -> None:
    res = build(buffer_walk())
    jan2 = JAN[0]
    # No C(prev) at the base date: top 3 = A, B, C (ranks 1, 2, 3), 1/3 each.
    assert comp(res, jan2, "symbol") == ["A", "B", "C"]
    assert comp(res, jan2, "rank") == [1, 2, 3]
    assert comp(res, jan2, "weight") == approx([1 / 3] * 3, rel=1e-12)
    # units = L * w / P = 1000 * (1/3) / 10 = 100/3
    assert comp(res, jan2, "units") == approx([100 / 3] * 3, rel=1e-12)
    assert turnovers(res)[0] == 0


def test_member_within_exit_rank_is_kept_and_non_member_does_not_enter() -> None:
    res = build(buffer_walk())
    jan3 = JAN[1]
    # Jan 3 ranks: A1 B2 D3 E4 C5 F6 G7.
    # keep = {A (1), B (2), C (5 <= exit 5)}; enter = non-members with rank <= 2: none
    # (D is rank 3 = top_n but > entry_rank 2: it does not enter while the buffer is full).
    # |S| = 3 = top_n: no trim, no fill.
    assert comp(res, jan3, "symbol") == ["A", "B", "C"]
    assert comp(res, jan3, "rank") == [1, 2, 5]  # rank among all eligible: C shows 5
    assert comp(res, jan3, "weight") == approx([1 / 3] * 3, rel=1e-12)
    # Prices constant: drifted weights are 1/3 and the targets 1/3 -> turnover 0.
    assert turnovers(res)[1] == approx(0, abs=1e-15)
    assert all(change[0] != jan3 for change in res.changes)


def test_member_beyond_exit_rank_leaves_and_buffer_fills_up() -> None:
    res = build(buffer_walk())
    jan4 = JAN[2]
    # Jan 4 ranks: A1 B2 D3 E4 F5 G6 C7.
    # keep = {A, B} (C is rank 7 > exit 5: it leaves); enter = rank <= 2 non-members: none.
    # |S| = 2 < 3: add the best-ranked eligible security not in S: D (rank 3).
    assert comp(res, jan4, "symbol") == ["A", "B", "D"]
    assert comp(res, jan4, "rank") == [1, 2, 3]
    # turnover = 0.5 * (|1/3 - 0| for D + |0 - 1/3| for C) = 1/3
    assert turnovers(res)[2] == approx(1 / 3, rel=1e-12)
    assert (jan4, ["D"], ["C"]) in res.changes


def test_trim_when_keep_plus_enter_exceeds_top_n() -> None:
    res = build(buffer_walk())
    jan5 = JAN[3]
    # Jan 5 ranks: G1 A2 F3 B4 D5 E6 C7.
    # keep = {A (2), B (4), D (5)}; enter = {G (1)} (F is rank 3 > entry 2: not entering).
    # S = {G, A, B, D}: 4 > 3, remove the worst-ranked in S: D (5) -> {G, A, B}.
    assert comp(res, jan5, "symbol") == ["G", "A", "B"]
    assert comp(res, jan5, "rank") == [1, 2, 4]
    assert turnovers(res)[3] == approx(1 / 3, rel=1e-12)  # G in, D out
    assert (jan5, ["G"], ["D"]) in res.changes


def test_halted_member_is_not_kept() -> None:
    res = build(buffer_walk())
    jan8 = JAN_2ND_WEEK[0]
    # Jan 8: A has no row, so it is not eligible (even though it would rank 2).
    # Eligible ranks G1 F2 B3 D4 E5 C6: keep = {G (1), B (3)}; enter = {F (2)}.
    # |S| = 3: no trim. A's last price (10) is carried, so the level stays 1000.
    assert comp(res, jan8, "symbol") == ["G", "F", "B"]
    assert comp(res, jan8, "rank") == [1, 2, 3]
    assert turnovers(res)[4] == approx(1 / 3, rel=1e-12)
    assert res.changes == [
        (JAN[2], ["D"], ["C"]),
        (JAN[3], ["G"], ["D"]),
        (jan8, ["F"], ["A"]),
    ]
    assert list(res.levels["level"]) == approx([1000.0] * 5, rel=1e-12)
    assert list(res.levels["n_constituents"]) == [3] * 5


def test_unbuffered_walk_for_contrast() -> None:
    s = buffer_walk()
    del s.definition["buffer"]
    res = build(s)
    # Plain top 3 each day: {A,B,C}, {A,B,D}, {A,B,D}, {G,A,F}, {G,F,B}.
    expected = [["A", "B", "C"], ["A", "B", "D"], ["A", "B", "D"], ["G", "A", "F"]]
    expected.append(["G", "F", "B"])
    assert [comp(res, day, "symbol") for day in WALK_DAYS] == expected


def fill_up_when_few_eligible() -> Scenario:
    """top 3, entry 1, exit 3; only two securities are eligible on Jan 4."""
    caps = [
        # Jan 2 (base): ranks A1 B2 C3 D4 E5 -> plain top 3 {A, B, C}.
        {"A": 5, "B": 4, "C": 3, "D": 2, "E": 1},
        # Jan 3: ranks E1 D2 C3 B4 A5.
        # keep = members with rank <= 3: {C}; enter = non-members with rank <= 1: {E}.
        # |S| = 2 < 3: fill up with the best-ranked outside S: D (2) -> {E, D, C}.
        {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5},
        # Jan 4: only A and C have rows; ranks A1 C2.
        # keep = {C (2)}; enter = {A (1)}; fill up: nobody is left, |S| = 2 < 3.
        {"A": 3, "C": 1},
    ]
    return caps_market(
        "buffer_fill_up_few_eligible",
        JAN[:3],
        caps,
        top_n=3,
        buffer={"entry_rank": 1, "exit_rank": 3},
    )


def test_fill_up_best_ranked_and_stops_when_none_left() -> None:
    res = build(fill_up_when_few_eligible())
    assert comp(res, JAN[0], "symbol") == ["A", "B", "C"]
    assert comp(res, JAN[1], "symbol") == ["E", "D", "C"]
    assert comp(res, JAN[1], "rank") == [1, 2, 3]
    assert comp(res, JAN[2], "symbol") == ["A", "C"]
    assert comp(res, JAN[2], "rank") == [1, 2]
    assert comp(res, JAN[2], "weight") == approx([1 / 2] * 2, rel=1e-12)
    # Jan 3: A, B out, D, E in: 0.5 * (4 * 1/3) = 2/3.
    # Jan 4: drifted 1/3 each for E, D, C (constant prices); targets A, C at 1/2:
    # 0.5 * (|1/2 - 0| A + |1/2 - 1/3| C + 1/3 D + 1/3 E) = 0.5 * (1/2 + 1/6 + 2/3) = 2/3.
    assert turnovers(res) == approx([0, 2 / 3, 2 / 3], rel=1e-12)
    assert res.changes == [(JAN[1], ["D", "E"], ["A", "B"]), (JAN[2], ["A"], ["D", "E"])]
    assert list(res.levels["n_constituents"]) == [3, 3, 2]


def trim_keeps_best_ranked() -> Scenario:
    """top 2, entry 2, exit 4: two entrants and two kept members compete for two places."""
    caps = [
        # Jan 2 (base): ranks A1 B2 C3 D4 -> {A, B}.
        {"A": 4, "B": 3, "C": 2, "D": 1},
        # Jan 3: ranks C1 D2 A3 B4. keep = {A (3), B (4)}; enter = {C (1), D (2)}.
        # S = {C, D, A, B}: 4 > 2, remove B (4) then A (3) -> {C, D}.
        {"A": 2, "B": 1, "C": 4, "D": 3},
    ]
    return caps_market(
        "buffer_trim_keeps_best_ranked",
        JAN[:2],
        caps,
        top_n=2,
        buffer={"entry_rank": 2, "exit_rank": 4},
    )


def test_trim_removes_worst_ranked_first() -> None:
    res = build(trim_keeps_best_ranked())
    assert comp(res, JAN[1], "symbol") == ["C", "D"]
    assert comp(res, JAN[1], "rank") == [1, 2]
    assert res.changes == [(JAN[1], ["C", "D"], ["A", "B"])]
    assert turnovers(res) == approx([0, 1], rel=1e-12)  # everything replaced


def test_buffered_selection_helper() -> None:
    ranked = ["G", "A", "F", "B", "D", "E", "C"]  # the Jan 5 ranking of the walk-through
    assert buffered_selection(ranked, {"A", "B", "D"}, 3, 2, 5) == ["G", "A", "B"]
    # entry = exit = top_n is plain top N whatever the previous members
    assert buffered_selection(ranked, {"A", "B", "D"}, 3, 3, 3) == ["G", "A", "F"]
    assert buffered_selection(ranked, set(), 3, 1, 5) == ["G", "A", "F"]  # fill-up only
    assert buffered_selection(["X"], {"Y"}, 3, 2, 5) == ["X"]


def weekly_buffer() -> Scenario:
    """top 2, weekly, entry 1, exit 3."""
    # Weekly: rebalances on the base date (Tue Jan 2) and Fri Jan 5 (Mon Jan 8 is not the
    # end of its ISO week). The caps move on Jan 3 and 4 without any effect.
    days = [*JAN, JAN_2ND_WEEK[0]]
    caps = [
        {"A": 3, "B": 2, "C": 1},  # base: {A, B}
        {"A": 1, "B": 2, "C": 3},  # not a rebalance
        {"A": 1, "B": 2, "C": 3},  # not a rebalance
        # Jan 5: ranks C1 B2 A3: keep = {B (2), A (3 <= exit 3)}; enter rank <= 1: {C};
        # S = {C, B, A}: 3 > 2, remove A (3) -> {C, B}.
        {"A": 1, "B": 2, "C": 3},
        {"A": 1, "B": 2, "C": 3},
    ]
    return caps_market(
        "buffer_weekly",
        days,
        caps,
        top_n=2,
        rebalance="weekly",
        buffer={"entry_rank": 1, "exit_rank": 3},
    )


def test_buffer_on_weekly_rebalance_uses_last_selection() -> None:
    res = build(weekly_buffer())
    assert list(res.levels["is_rebalance"]) == [True, False, False, True, False]
    assert comp(res, JAN[2], "symbol") == ["A", "B"]
    assert comp(res, JAN[2], "rank") == [1, 2]  # ranks of the last rebalance that happened
    assert comp(res, JAN[3], "symbol") == ["C", "B"]
    assert res.changes == [(JAN[3], ["C"], ["A"])]


# --------------------------------------------------------------------------- defaults = Part 1


def default_buffers(top_n: int) -> list[dict[str, int]]:
    return [{}, {"entry_rank": top_n, "exit_rank": top_n}]


@pytest.mark.parametrize("s", all_scenarios(), ids=lambda s: s.name)
def test_default_buffer_is_part_one(s: Scenario) -> None:
    for buffer in default_buffers(int(s.definition["top_n"])):
        buffered = copy.deepcopy(s.definition)
        buffered["buffer"] = buffer
        if s.raises:
            with pytest.raises(ValueError):
                reference_build(s.securities, s.prices, buffered)
            continue
        plain = reference_build(s.securities, s.prices, s.definition)
        assert_identical_results(reference_build(s.securities, s.prices, buffered), plain)


def test_buffer_none_is_part_one() -> None:
    s = buffer_walk()
    s.definition["buffer"] = None
    plain = copy.deepcopy(s)
    del plain.definition["buffer"]
    assert_identical_results(build(s), build(plain))


# --------------------------------------------------------------------------- turnover


def noisy_market(seed: int = 20240607, n_symbols: int = 40) -> Scenario:
    """40 symbols x 60 sessions; market caps jitter +-10% a day around fixed levels."""
    rng = np.random.default_rng(seed)
    days = [day for day in xnys_sessions() if day >= JAN[0]][:60]
    symbols = [f"S{k:02d}" for k in range(n_symbols)]
    base_caps = np.exp(rng.uniform(np.log(1e9), np.log(3e9), size=n_symbols))
    rows = []
    for k, symbol in enumerate(symbols):
        price = 50.0
        for day in days:
            price *= math.exp(rng.normal(0.0, 0.02))
            mc = base_caps[k] * math.exp(rng.normal(0.0, 0.1))
            rows.append(bar(day, symbol, price, mc=mc))
    return Scenario(
        "noisy",
        securities_frame([security(s) for s in symbols]),
        prices_frame(rows),
        definition(top_n=10),
    )


def mean_turnover(res: ReferenceResult) -> float:
    values = [t for t in res.levels["turnover"][1:] if not math.isnan(t)]
    return sum(values) / len(values)


def buffered_noisy_market() -> Scenario:
    s = noisy_market()
    s.name = "buffer_noisy_market"
    s.definition["buffer"] = {"entry_rank": 7, "exit_rank": 14}
    return s


def test_buffer_lowers_turnover_on_noisy_market() -> None:
    plain = build(noisy_market())
    buffered = build(buffered_noisy_market())
    assert list(buffered.levels["n_constituents"]) == [10] * 60
    plain_turnover, buffered_turnover = mean_turnover(plain), mean_turnover(buffered)
    changes_plain = sum(len(entered) for _, entered, _ in plain.changes)
    changes_buffered = sum(len(entered) for _, entered, _ in buffered.changes)
    assert changes_buffered < changes_plain
    assert buffered_turnover < 0.7 * plain_turnover, (buffered_turnover, plain_turnover)
