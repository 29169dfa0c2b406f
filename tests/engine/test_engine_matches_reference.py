"""The production engine must reproduce tests/reference_engine.py (METHODOLOGY.md Part 1).

API under test (in memory, no storage):

    res = build_in_memory(securities, prices, definition)
    res.levels       [date, level, daily_return, is_rebalance, turnover, n_constituents]
    res.snapshot(d)  [date, symbol, rank, weight, market_cap, price, units, sector], by rank
    res.spells       [symbol, valid_from, valid_to]  (valid_to null while still a member)
    res.changes      [date, entered, exited]  (sorted symbol lists)
    res.errors       dates of rebalances with no eligible security

Numbers must agree to rtol 1e-9 (atol 1e-12); symbols, ranks, flags, changes and errors
exactly. The module skips while the engine does not exist yet.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from test_effective_lag_reference import lag_scenarios

from engine_markets import Market, carried_prices, close_enough, markets
from engine_scenarios import Scenario, all_scenarios, scenario
from reference_engine import LEVEL_COLUMNS, ReferenceResult, reference_build

memory = pytest.importorskip("index_builder.engine.memory")
build_in_memory = memory.build_in_memory

# The reference raises ValueError when nothing is eligible at the base date; the engine may
# raise the project's own user-facing error instead.
BUILD_ERRORS: tuple[type[Exception], ...] = (ValueError,)
try:
    from index_builder.errors import IndexBuilderError

    BUILD_ERRORS = (ValueError, IndexBuilderError)
except ImportError:  # pragma: no cover - depends on the package layout
    pass

RTOL = 1e-9
ATOL = 1e-12
SNAPSHOT_COLUMNS = ["date", "symbol", "rank", "weight", "market_cap", "price", "units", "sector"]
FLOAT_LEVEL_COLUMNS = ["level", "daily_return"]
FLOAT_SNAPSHOT_COLUMNS = ["weight", "market_cap", "price", "units"]
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# "Incremental equals full" (build_in_memory(..., resume=...) continuing a stored build gives
# the same levels, compositions, spells and changes as one full build) is deliberately not
# tested here: the storage-level tests (tests/storage) cover resume/incremental builds.


# --------------------------------------------------------------------------- helpers


def as_date(value: Any) -> dt.date | None:
    """datetime.date, or None for a null (None / NaT / NaN)."""
    if value is None or (not isinstance(value, (list, np.ndarray)) and pd.isna(value)):
        return None
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, dt.datetime):  # includes pandas.Timestamp
        return value.date()
    assert isinstance(value, dt.date), f"not a date: {value!r}"
    return value


def run_engine(securities: pd.DataFrame, prices: pd.DataFrame, definition: dict[str, Any]) -> Any:
    return build_in_memory(securities.copy(), prices.copy(), copy.deepcopy(definition))


def run_both(
    securities: pd.DataFrame, prices: pd.DataFrame, definition: dict[str, Any]
) -> tuple[Any, ReferenceResult] | None:
    """(engine result, reference result); None when both raise ValueError."""
    try:
        ref = reference_build(securities, prices, definition)
    except ValueError:
        with pytest.raises(BUILD_ERRORS):
            run_engine(securities, prices, definition)
        return None
    return run_engine(securities, prices, definition), ref


def engine_dates(res: Any) -> list[dt.date]:
    return [as_date(x) for x in res.levels["date"]]  # type: ignore[misc]


def engine_changes(res: Any) -> list[tuple[dt.date | None, list[str], list[str]]]:
    return [
        (as_date(row["date"]), [str(s) for s in row["entered"]], [str(s) for s in row["exited"]])
        for row in res.changes.to_dict("records")
    ]


def spells_members(spells: pd.DataFrame, day: dt.date) -> set[str]:
    """The composition on ``day`` rebuilt from the spells."""
    members = set()
    for row in spells.to_dict("records"):
        start, end = as_date(row["valid_from"]), as_date(row["valid_to"])
        assert start is not None
        if start <= day and (end is None or day <= end):
            members.add(str(row["symbol"]))
    return members


def expected_spells(ref: ReferenceResult) -> list[tuple[str, dt.date, dt.date | None]]:
    """Maximal runs of membership in the reference compositions."""
    days = list(ref.compositions)
    open_since: dict[str, dt.date] = {}
    spells: list[tuple[str, dt.date, dt.date | None]] = []
    previous: set[str] = set()
    for i, day in enumerate(days):
        members = set(ref.compositions[day]["symbol"])
        for symbol in members - previous:
            open_since[symbol] = day
        for symbol in previous - members:
            spells.append((symbol, open_since.pop(symbol), days[i - 1]))
        previous = members
    spells += [(symbol, start, None) for symbol, start in open_since.items()]
    return sorted(spells, key=lambda s: (s[0], s[1]))


def assert_close(actual: Any, expected: Any, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float),
        np.asarray(expected, dtype=float),
        rtol=RTOL,
        atol=ATOL,
        err_msg=what,
    )


def assert_levels_match(res: Any, ref: ReferenceResult) -> None:
    levels = res.levels
    missing = set(LEVEL_COLUMNS) - set(levels.columns)
    assert not missing, f"levels lacks {missing}"
    assert engine_dates(res) == list(ref.levels["date"])
    for name in FLOAT_LEVEL_COLUMNS:
        assert_close(levels[name], ref.levels[name], f"levels.{name}")
    assert [bool(x) for x in levels["is_rebalance"]] == list(ref.levels["is_rebalance"])
    assert [int(x) for x in levels["n_constituents"]] == list(ref.levels["n_constituents"])


def assert_snapshot_matches(res: Any, ref: ReferenceResult, day: dt.date) -> None:
    snap = res.snapshot(day)
    missing = set(SNAPSHOT_COLUMNS) - set(snap.columns)
    assert not missing, f"snapshot lacks {missing}"
    expected = ref.compositions[day]
    assert [str(s) for s in snap["symbol"]] == list(expected["symbol"]), day
    assert [int(r) for r in snap["rank"]] == list(expected["rank"]), day
    assert all(as_date(x) == day for x in snap["date"]), day
    for name in FLOAT_SNAPSHOT_COLUMNS:
        assert_close(snap[name], expected[name], f"snapshot({day}).{name}")
    assert list(snap["sector"]) == list(expected["sector"]), day


def assert_engine_matches(res: Any, ref: ReferenceResult) -> None:
    assert_levels_match(res, ref)
    for day in ref.compositions:
        assert_snapshot_matches(res, ref, day)
    assert engine_changes(res) == ref.changes
    assert [as_date(x) for x in res.errors] == ref.errors
    for day in ref.compositions:
        assert spells_members(res.spells, day) == set(ref.compositions[day]["symbol"]), day
    assert_pending_matches(res, ref)
    # Turnover last, so that other differences are reported first. It is 0 (not NaN) on the
    # base date, on days that are not rebalances and on rebalances where nothing was eligible.
    assert_close(res.levels["turnover"], ref.levels["turnover"], "levels.turnover")


def assert_pending_matches(res: Any, ref: ReferenceResult) -> None:
    """Announced selections (effective_lag): dates, members, ranks, weights, caps and the
    expected turnover against the weights in force after the last close."""
    pending = res.computation.pending
    assert [p.reference_date for p in pending] == [p.reference_date for p in ref.pending]
    assert [p.sessions_ahead for p in pending] == [p.effective_offset for p in ref.pending]
    last = res.snapshot(engine_dates(res)[-1])
    now = dict(zip(last["symbol"], last["weight"], strict=True))
    for p, expected in zip(pending, ref.pending, strict=True):
        table = expected.constituents
        assert [str(s) for s in p.symbols] == list(table["symbol"])
        assert [int(r) for r in p.ranks] == list(table["rank"])
        assert_close(p.weights, table["weight"], "pending.weight")
        assert_close(p.market_caps, table["market_cap"], "pending.market_cap")
        target = dict(zip(p.symbols, p.weights, strict=True))
        turnover = 0.5 * sum(abs(target.get(s, 0) - now.get(s, 0)) for s in set(target) | set(now))
        assert_close(turnover, expected.expected_turnover(ref.current_weights), "pending.turnover")


# --------------------------------------------------------------------------- scenarios

ENGINE_SCENARIOS = [s for s in all_scenarios() if s.engine]


@pytest.mark.parametrize("s", ENGINE_SCENARIOS, ids=lambda s: s.name)
def test_scenario_engine_matches_reference(s: Scenario) -> None:
    both = run_both(s.securities, s.prices, s.definition)
    assert (both is None) == s.raises
    if both is not None:
        assert_engine_matches(*both)


@pytest.mark.parametrize("lag", [1, 2, 3])
@pytest.mark.parametrize("s", lag_scenarios(), ids=lambda s: s.name)
def test_lagged_scenario_engine_matches_reference(s: Scenario, lag: int) -> None:
    both = run_both(s.securities, s.prices, {**s.definition, "effective_lag": lag})
    assert both is not None
    assert_engine_matches(*both)


@pytest.mark.parametrize("s", [s for s in ENGINE_SCENARIOS if not s.raises], ids=lambda s: s.name)
def test_scenario_spells_are_maximal_runs(s: Scenario) -> None:
    both = run_both(s.securities, s.prices, s.definition)
    assert both is not None
    res, ref = both
    actual = sorted(
        (str(r["symbol"]), as_date(r["valid_from"]), as_date(r["valid_to"]))
        for r in res.spells.to_dict("records")
    )
    assert actual == expected_spells(ref)


def test_output_dates_are_python_dates() -> None:
    res = run_engine(*_inputs(scenario("ipo_and_delisting")))
    day = dt.date(2024, 1, 5)
    assert all(type(x) is dt.date for x in res.levels["date"])
    assert all(type(x) is dt.date for x in res.snapshot(day)["date"])
    assert all(type(x) is dt.date for x in res.changes["date"])
    assert all(type(x) is dt.date for x in res.spells["valid_from"])
    assert all(x is None or pd.isna(x) or type(x) is dt.date for x in res.spells["valid_to"])
    none_later = run_engine(*_inputs(scenario("none_eligible_later")))
    assert [type(x) for x in none_later.errors] == [dt.date]


def _inputs(s: Scenario) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    return s.securities, s.prices, s.definition


# --------------------------------------------------------------------------- properties


def engine_or_none(market: Market) -> Any:
    """The engine result, or None when the build legitimately fails (checked elsewhere)."""
    try:
        reference_build(market.securities, market.prices, market.definition)
    except ValueError:
        return None
    return run_engine(market.securities, market.prices, market.definition)


@PROPERTY_SETTINGS
@given(markets())
def test_property_engine_matches_reference(market: Market) -> None:
    both = run_both(market.securities, market.prices, market.definition)
    if both is not None:
        assert_engine_matches(*both)


@PROPERTY_SETTINGS
@given(markets())
def test_property_weights_sum_to_one(market: Market) -> None:
    res = engine_or_none(market)
    if res is None:
        return
    for day in engine_dates(res):
        total = float(res.snapshot(day)["weight"].sum())
        assert math.isclose(total, 1.0, abs_tol=1e-9), (day, total)


@PROPERTY_SETTINGS
@given(markets(weighting="equal", rebalance="daily", filters=False, lags=False))
def test_property_daily_equal_weight_return_is_mean(market: Market) -> None:
    res = engine_or_none(market)
    if res is None:
        return
    prices = carried_prices(market.prices)  # independent of both implementations
    dates = engine_dates(res)
    returns = list(res.levels["daily_return"])
    assert returns[0] == 0
    for prev, day, r in zip(dates, dates[1:], returns[1:], strict=False):
        held = [str(s) for s in res.snapshot(prev)["symbol"]]
        mean = sum(prices[day][s] / prices[prev][s] - 1 for s in held) / len(held)
        assert close_enough(float(r), mean), (day, r, mean)


@PROPERTY_SETTINGS
@given(markets(weighting="capped_market_cap"))
def test_property_capped_weights_respect_cap(market: Market) -> None:
    res = engine_or_none(market)
    if res is None:
        return
    cap = market.definition["cap"]
    for day, flag in zip(engine_dates(res), res.levels["is_rebalance"], strict=True):
        if not flag:
            continue  # weights drift between rebalances
        weights = [float(w) for w in res.snapshot(day)["weight"]]
        if len(weights) * cap >= 1:
            assert max(weights) <= cap + 1e-12, (day, max(weights), cap)
        else:  # the cap cannot be met: equal weights
            assert max(weights) - min(weights) <= 1e-12, (day, weights, cap)


@PROPERTY_SETTINGS
@given(markets())
def test_property_spells_reconstruct_snapshots(market: Market) -> None:
    res = engine_or_none(market)
    if res is None:
        return
    for day in engine_dates(res):
        snapshot_symbols = {str(s) for s in res.snapshot(day)["symbol"]}
        assert spells_members(res.spells, day) == snapshot_symbols, day
