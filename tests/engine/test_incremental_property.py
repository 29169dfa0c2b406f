"""Property: resuming from any stored rebalance gives the numbers of a full build.

This is the engine half of "incremental equals full rebuild": the kernel resumes
from a rebalance with the stored levels and constituents (as the storage-level
builds do, see tests/services/test_builds.py), and the resumed spells spliced
with the stored ones at any later cut are exactly the full build's spells. Two
computation paths are compared, so numbers are compared with a relative
tolerance of 1e-12, never with == (METHODOLOGY "Published history").
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from index_builder.calendar import get_calendar
from index_builder.engine.definitions import parse_definition
from index_builder.engine.kernel import StartState, compute_index
from index_builder.engine.memory import build_in_memory
from index_builder.engine.spells import splice
from index_builder.errors import IndexBuilderError

from engine_markets import Market, markets


def _full(market: Market) -> Any:
    try:
        return build_in_memory(market.securities, market.prices, market.definition)
    except (IndexBuilderError, ValueError):
        return None


@settings(max_examples=60, deadline=None, database=None)
@given(markets(), st.floats(0.0, 1.0))
def test_resuming_from_a_rebalance_equals_the_full_build(market: Market, where: float) -> None:
    full = _full(market)
    if full is None or len(full.levels) < 2:
        return
    comp = full.computation
    cut = 1 + int(where * (len(comp.days) - 2))  # first "new" row
    # resume at the last selection in force before the cut: from its reference row, with
    # its stored level at its effective row (effective_lag rows later, or the base date)
    k = int(np.flatnonzero(comp.rebalance_rows < cut).max())
    resume_row, reference_row = int(comp.rebalance_rows[k]), int(comp.reference_rows[k])
    snapshot = comp.snapshot(resume_row)
    window = comp.panel.rows_from(reference_row)
    definition = full_definition(market)
    lag = resume_row - reference_row
    resumed = compute_index(
        window,
        definition,
        get_calendar(),
        start=StartState(
            levels={v: float(lv[resume_row]) for v, lv in comp.variant_levels.items()},
            members=snapshot.columns,
            effective_row=lag,
        ),
    )
    assert resumed.first_row == lag
    np.testing.assert_allclose(resumed.level[lag:], comp.level[resume_row:], rtol=1e-12)
    for variant, levels in comp.variant_levels.items():
        np.testing.assert_allclose(
            resumed.variant_levels[variant][lag:], levels[resume_row:], rtol=1e-12
        )
    np.testing.assert_array_equal(resumed.is_rebalance[lag:], comp.is_rebalance[resume_row:])
    np.testing.assert_array_equal(resumed.n_constituents[lag:], comp.n_constituents[resume_row:])
    np.testing.assert_allclose(
        resumed.turnover[lag + 1 :], comp.turnover[resume_row + 1 :], rtol=1e-9, atol=1e-12
    )
    for row in range(lag, len(window.days)):
        a, b = resumed.snapshot(row), comp.snapshot(reference_row + row)
        assert list(a.symbols) == list(b.symbols)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-9)
    assert [p.reference_date for p in resumed.pending] == [p.reference_date for p in comp.pending]
    # the spells a build keeps through the day before the cut, spliced with the resumed ones
    cut_day = dt.date.fromisoformat(str(comp.days[cut]))
    kept_through = dt.date.fromisoformat(str(comp.days[cut - 1]))
    spells = comp.spells()
    stored = [s for s in spells if s.valid_to is None or s.valid_to >= kept_through]
    kept = [s for s in spells if s.valid_to is not None and s.valid_to < kept_through]
    merged = kept + splice(stored, resumed.spells(), cut_day, kept_through)
    assert sorted(merged, key=_key) == sorted(spells, key=_key)


def full_definition(market: Market) -> Any:
    return parse_definition({"name": "property", **market.definition})


def _key(spell: Any) -> tuple[str, dt.date]:
    return (spell.symbol, spell.valid_from)
