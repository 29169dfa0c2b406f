"""The aggregate-capping example of docs/methodology.md (section 4.2), computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.engine.weighting import WEIGHTINGS, capped_weights, group_capped_weights

DOC = Path(__file__).resolve().parents[2] / "docs" / "methodology.md"
CAPS = [500, 400, 300, 200, 150, 120, 100, 90, 80, 70, 60, 50, 40, 30, 25, 20, 15, 10, 8, 5]


def test_ucits_example_from_the_methodology() -> None:
    caps = np.array(CAPS, dtype=float)
    single = capped_weights(caps[None, :], np.ones((1, len(CAPS)), dtype=bool), 0.10)[0]
    w = group_capped_weights(caps, single, 0.10, 0.05, 0.40)
    assert w is not None
    assert w[:4] == pytest.approx([0.10] * 4, abs=1e-15)
    assert w[4:13] == pytest.approx([0.05] * 9, abs=1e-15)
    assert w[13:].sum() == pytest.approx(0.15, abs=1e-12)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(w) <= 1e-15)  # larger caps never get smaller weights
    text = " ".join(DOC.read_text().split())  # ignore line wrapping
    assert ", ".join(str(c) for c in CAPS) in text
    assert "the four largest get 10%, the next nine 5%, the rest market-cap weights" in text
    assert "summing to 15%" in text


def test_group_cap_through_the_weighting_registry_leaves_unbound_rows_alone() -> None:
    definition = parse_definition(
        {
            "id": "g",
            "name": "g",
            "top_n": 20,
            "weighting": "capped_market_cap",
            "cap": 0.10,
            "group_cap": {"threshold": 0.05, "limit": 0.40},
        }
    )
    flat = np.full(20, 7.0)  # equal caps: every weight 5%, nothing binds
    caps = np.vstack([np.array(CAPS, dtype=float), flat])
    present = np.ones_like(caps, dtype=bool)
    target = WEIGHTINGS.get("capped_market_cap").weights(caps, present, definition)
    weights = target.values
    assert target.infeasible == {}
    np.testing.assert_allclose(
        weights[1], capped_weights(caps[1:], present[1:], 0.10)[0], rtol=1e-12
    )
    assert weights[0][weights[0] > 0.05 + 1e-12].sum() <= 0.40 + 1e-12


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"buffer": {"entry_rank": 12, "exit_rank": 30}}, "entry_rank <= top_n <= exit_rank"),
        (
            {"weighting": "equal", "group_cap": {"threshold": 0.05, "limit": 0.4}},
            "only allowed with weighting",
        ),
        ({"group_cap": {"threshold": 0.2, "limit": 0.4}}, "threshold must not exceed cap"),
        ({"group_cap": {"threshold": 0.05, "limit": 0.01}}, "limit must be at least threshold"),
    ],
)
def test_invalid_buffer_and_group_cap_are_refused_naming_the_field(
    fields: dict[str, object], message: str
) -> None:
    from index_builder.errors import InvalidInputError

    base: dict[str, object] = {
        "id": "x",
        "name": "x",
        "top_n": 10,
        "weighting": "capped_market_cap",
        "cap": 0.1,
    }
    with pytest.raises(InvalidInputError, match=message):
        parse_definition({**base, **fields})
