"""Property: on dirty random markets the engine still reproduces the reference (1e-9).

The random markets of engine_markets.py, made dirty with what the amended contract
pins down (METHODOLOGY "Inputs", part 2): rows without a share count or a market
cap (shares in force, carried through split days), split ratios without an
adjusted close, dividend values that start part way through a security's history
(0 on ordinary days), and invalid rows: a split ratio of 0, a negative dividend, a
weekend date, two different rows for one (date, symbol). Levels of every return
variant, compositions, changes, skipped rebalances and group-cap warnings are
compared with tests/reference_engine.py.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_matches_reference import assert_engine_matches, run_both

from engine_markets import Market, markets
from reference_engine import RETURN_TYPES

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def dirty(market: Market, seed: int) -> Market:
    """The market with the amended rules' cases mixed in (see the module docstring)."""
    rng = np.random.default_rng(seed)
    prices = market.prices.copy()
    prices["dividend"] = math.nan
    prices["split_ratio"] = math.nan
    prices = prices.sort_values(["symbol", "date"]).reset_index(drop=True)
    for _symbol, rows in prices.groupby("symbol").groups.items():
        index = list(rows)
        if rng.random() < 0.5:  # counts given now and then: the others are in force
            for i in index[1:]:
                if rng.random() < 0.6:
                    prices.loc[i, ["shares_outstanding", "market_cap"]] = math.nan
        for i in index[1:]:
            if rng.random() < 0.08:  # a split ratio, adj_close left as it is
                prices.loc[i, "split_ratio"] = float(rng.choice([2.0, 3.0, 0.5]))
        if rng.random() < 0.6:  # dividend values from a random row on
            start = int(rng.integers(0, len(index)))
            for i in index[start:]:
                prices.loc[i, "dividend"] = 0.0 if rng.random() < 0.8 else rng.uniform(0.1, 2)
    extra = []
    for _ in range(int(rng.integers(1, 5))):
        row = prices.iloc[int(rng.integers(0, len(prices)))].to_dict()
        kind = int(rng.integers(0, 4))
        if kind == 0:
            row["split_ratio"] = 0.0  # invalid: replaces the valid row as a conflict
        elif kind == 1:
            row["dividend"] = -1.0
        elif kind == 2:
            day = row["date"]
            row["date"] = day + dt.timedelta(days=(5 - day.weekday()) % 7 or 7)  # a Saturday
        else:
            row["close"] = row["close"] * 1.01  # a conflicting duplicate
        extra.append(row)
    prices = pd.concat([prices, pd.DataFrame(extra)], ignore_index=True)
    definition = dict(market.definition)
    definition["return_type"] = str(rng.choice(list(RETURN_TYPES)))
    return Market(market.securities, prices, definition)


def check_variants(res: Any, ref: Any) -> None:
    for variant in RETURN_TYPES:
        got = res.levels[f"level_{variant}"].to_numpy()
        np.testing.assert_allclose(got, ref.variant_levels[variant], rtol=1e-9, atol=1e-12)


@PROPERTY_SETTINGS
@given(markets(), st.integers(0, 2**32 - 1))
def test_dirty_markets_match_the_reference(market: Market, seed: int) -> None:
    m = dirty(market, seed)
    both = run_both(m.securities, m.prices, m.definition)
    if both is not None:
        res, ref = both
        assert_engine_matches(res, ref)
        check_variants(res, ref)
        fallbacks = [w for w in res.warnings if "group cap" in w]
        assert [dt.date.fromisoformat(w[:10]) for w in fallbacks] == ref.group_cap_fallbacks


STORED_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for CSV files: NaN is an empty cell (not given), dates as ISO text."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


@STORED_SETTINGS
@given(markets(), st.integers(0, 2**32 - 1))
def test_dirty_markets_through_ingestion_and_a_build_match_the_reference(
    tmp_path_factory: Any, market: Market, seed: int
) -> None:
    # The same dirty markets as CSV files: ingestion (validity, quarantine, shares in force
    # in SQL), a stored build and the reads give the reference's levels and compositions.
    from index_builder.services.builds import IndexBuilder

    from crafted import ingest, open_store, stored_run
    from reference_engine import reference_build

    m = dirty(market, seed)
    tmp = tmp_path_factory.mktemp("dirty")
    definition = {**m.definition, "id": "dirty", "name": "dirty"}
    store = open_store(tmp, [definition])
    try:
        ingest(store, tmp, _records(m.securities), _records(m.prices))
        try:
            ref = reference_build(m.securities, m.prices, m.definition)
        except ValueError:
            (result,) = IndexBuilder(store, store.calendar).build(["dirty"])
            assert result.failed
            return
        (result,) = IndexBuilder(store, store.calendar).build(["dirty"])
        result.raise_for_failure()
        out = stored_run(store, "dirty")
        dates = [r["date"] for r in out.levels]
        assert dates == list(ref.levels["date"])
        for variant in RETURN_TYPES:
            got = [r[f"level_{variant}"] for r in out.levels]
            np.testing.assert_allclose(got, ref.variant_levels[variant], rtol=1e-9, atol=1e-12)
        assert [r["is_rebalance"] for r in out.levels] == list(ref.levels["is_rebalance"])
        assert out.changes == ref.changes
        for day in dates:
            got_weights = out.weights(day.isoformat())
            table = ref.compositions[day]
            expected = dict(zip(table["symbol"], table["weight"], strict=True))
            assert got_weights.keys() == expected.keys(), day
            for symbol, weight in expected.items():
                assert math.isclose(got_weights[symbol], weight, rel_tol=1e-9, abs_tol=1e-12)
    finally:
        store.close()
