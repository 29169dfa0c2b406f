"""The worked example of docs/methodology.md, computed by the engine.

The test also checks that every number it asserts is written in the document,
so the example and the code cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from index_builder.engine.memory import build_in_memory

DOC = Path(__file__).resolve().parents[2] / "docs" / "methodology.md"
DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4), dt.date(2024, 1, 5)]
CLOSES = {"A": [10, 11, 12, 12], "B": [20, 20, 22, 21], "C": [5, 6, None, 7]}
SHARES = {"A": 100, "B": 100, "C": 1000}


def _example() -> tuple[pd.DataFrame, pd.DataFrame]:
    securities = pd.DataFrame(
        {
            "symbol": list(CLOSES),
            "name": list(CLOSES),
            "exchange": "XNYS",
            "sector": "Energy",
            "industry": None,
            "currency": "USD",
            "type": "Common Stock",
        }
    )
    rows = [
        {
            "date": day,
            "symbol": s,
            "close": float(c),
            "adj_close": np.nan,
            "volume": 1.0,
            "shares_outstanding": float(SHARES[s]),
            "market_cap": np.nan,
        }
        for s, closes in CLOSES.items()
        for day, c in zip(DAYS, closes, strict=True)
        if c is not None
    ]
    return securities, pd.DataFrame(rows)


def test_worked_example_numbers() -> None:
    securities, prices = _example()
    res = build_in_memory(securities, prices, {"id": "example", "top_n": 2})
    assert list(res.levels["level"]) == pytest.approx([1000, 1100, 1155, 1128.75], rel=1e-12)
    assert res.levels["turnover"].iloc[2] == pytest.approx(0.5, rel=1e-12)
    base = res.snapshot(DAYS[0])
    assert dict(zip(base["symbol"], base["units"], strict=True)) == pytest.approx(
        {"C": 100, "B": 25}
    )
    changes = [(c, list(e), list(x)) for c, e, x in res.changes.itertuples(index=False)]
    assert changes == [(DAYS[2], ["A"], ["C"]), (DAYS[3], ["C"], ["A"])]
    text = DOC.read_text()
    for number in ("**1100**", "**1155**", "**1128.75**", "**0.5**", "= 100", "= 25"):
        assert number in text
