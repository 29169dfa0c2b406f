"""The effective-lag example of docs/methodology.md (section 4.4), computed by the
engine and by the reference implementation; every bold number is in the document."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from test_worked_example import DAYS, _example

from index_builder.engine.memory import build_in_memory

DOC = Path(__file__).resolve().parents[2] / "docs" / "methodology.md"
DEFINITION = {"id": "example", "name": "example", "top_n": 2, "effective_lag": 1}


def test_effective_lag_example_numbers() -> None:
    securities, prices = _example()
    res = build_in_memory(securities, prices, DEFINITION)
    levels = list(res.levels["level"])
    assert levels == pytest.approx([1000, 1100, 1150, 1219.6969696969697], rel=1e-12)
    turnover = list(res.levels["turnover"])
    assert turnover[2] == pytest.approx(0.5 - 550 / 1150, rel=1e-12)  # 0.0217
    assert turnover[3] == pytest.approx(0.55, rel=1e-12)
    assert list(res.levels["is_rebalance"]) == [True, False, True, True]
    changes = [(c, list(e), list(x)) for c, e, x in res.changes.itertuples(index=False)]
    assert changes == [(DAYS[3], ["A"], ["C"])]  # dated by the effective date
    # the 01-04 composition ranks come from the 01-03 reference date (C was first)
    after_0104 = res.snapshot(DAYS[2])
    assert list(after_0104["symbol"]) == ["C", "B"] and list(after_0104["rank"]) == [1, 2]
    (announced,) = res.computation.pending
    assert announced.reference_date == DAYS[3] and announced.sessions_ahead == 1
    assert list(announced.symbols) == ["C", "B"]
    now = dict(zip(res.snapshot(DAYS[3])["symbol"], res.snapshot(DAYS[3])["weight"], strict=True))
    target = dict(zip(announced.symbols, announced.weights, strict=True))
    expected = 0.5 * sum(abs(target.get(s, 0) - now.get(s, 0)) for s in set(target) | set(now))
    assert expected == pytest.approx(0.5, rel=1e-12)
    text = " ".join(DOC.read_text().split())
    for number in ("**1100**", "**1150**", "**0.0217**", "**1219.697**", "**0.55**", "**0.5**"):
        assert number in text
    assert f"{levels[3]:.3f}" == "1219.697" and f"{turnover[2]:.4f}" == "0.0217"
    assert "effective 2024-01-08 (the next session)" in text
    from index_builder.calendar import get_calendar

    assert get_calendar().session_after(DAYS[3], 1) == dt.date(2024, 1, 8)


def test_effective_lag_example_engine_matches_reference() -> None:
    from test_engine_matches_reference import assert_engine_matches

    from reference_engine import reference_build

    securities, prices = _example()
    ref = reference_build(securities, prices, DEFINITION)
    assert_engine_matches(build_in_memory(securities, prices, DEFINITION), ref)
    assert ref.pending[0].expected_turnover(ref.current_weights) == 0.5
