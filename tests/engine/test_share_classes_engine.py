"""The production engine's ``rank_by: company`` must reproduce tests/reference_engine.py.

Same comparison as test_engine_matches_reference.py (levels, compositions with ranks,
weights and units, changes, errors, spells, turnover; rtol 1e-9) on the hand-made share-class
markets of test_share_classes_reference.py and on random markets with random company_id
groupings and volumes. The module skips while the engine's ``IndexDefinition`` does not
accept the ``rank_by`` key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_matches_reference import assert_engine_matches, run_both
from test_share_classes_reference import share_class_scenarios

from engine_markets import Market, markets
from engine_scenarios import Scenario

try:
    from index_builder.engine.definitions import IndexDefinition

    IndexDefinition.model_validate(
        {"id": "probe", "name": "probe", "top_n": 2, "rank_by": "company"}
    )
except Exception as exc:  # any failure: the engine does not support the key yet
    pytest.skip(
        f"the engine does not accept 'rank_by' yet: {type(exc).__name__}", allow_module_level=True
    )

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def check(s: Scenario) -> None:
    both = run_both(s.securities, s.prices, s.definition)
    assert (both is None) == s.raises
    if both is not None:
        assert_engine_matches(*both)


@pytest.mark.parametrize("s", share_class_scenarios(), ids=lambda s: s.name)
def test_hand_made_share_class_scenarios(s: Scenario) -> None:
    check(s)


def company_ids(rng: np.random.Generator, n: int) -> list[str | None]:
    """About 30% of the securities share a company with 1-2 others; some of the rest carry a
    company_id of their own (a key that differs from the symbol), the others a null."""
    ids: list[str | None] = [None] * n
    order = [int(i) for i in rng.permutation(n)]
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    k = 0
    i = 0
    while i < n:
        size = int(rng.integers(2, 4)) if rng.random() < 0.15 else 1
        size = min(size, n - i)
        if size > 1 or rng.random() < 0.3:
            # letter + digits: sorts among the (letters only) symbols, never equal to one
            key = f"{letters[int(rng.integers(0, 26))]}{k:02d}"
            k += 1
            for j in order[i : i + size]:
                ids[j] = key
        i += size
    return ids


def random_volumes(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = int(rng.integers(0, 3))
    if kind == 0:  # distinct-ish
        volumes = rng.integers(1_000, 1_000_000, size=n).astype(float)
    else:  # frequent ties
        volumes = rng.integers(0, 3, size=n).astype(float) * 1000.0
    if kind == 2:  # some NaN (= 0)
        volumes[rng.random(n) < 0.2] = np.nan
    return volumes


@st.composite
def company_markets(draw: st.DrawFn, **kwargs: Any) -> Market:
    market = draw(markets(**kwargs))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    securities = market.securities.copy()
    securities["company_id"] = company_ids(rng, len(securities))
    prices = market.prices.copy()
    prices["volume"] = random_volumes(rng, len(prices))
    definition = dict(market.definition)
    definition["rank_by"] = "company"
    if draw(st.booleans()):
        top_n = int(definition["top_n"])
        definition["buffer"] = {
            "entry_rank": draw(st.integers(1, top_n)),
            "exit_rank": draw(st.integers(top_n, top_n + 4)),
        }
    return Market(securities, prices, definition)


@PROPERTY_SETTINGS
@given(company_markets())
def test_property_engine_matches_reference_by_company(market: Market) -> None:
    both = run_both(market.securities, market.prices, market.definition)
    if both is not None:
        assert_engine_matches(*both)
