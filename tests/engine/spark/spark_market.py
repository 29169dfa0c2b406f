"""A dirty market with corporate actions, the definitions the Spark engine is checked
on, and the comparison of two stores' published results (tests/engine/spark)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from index_builder.engine.definitions import parse_definition
from index_builder.engine.spark.session import SparkOptions
from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA
from index_builder.providers.synthetic_market import generate_market
from index_builder.services.queries import IndexReader
from index_builder.storage.base import Storage

START = dt.date(2023, 1, 3)
LOCAL = SparkOptions(master="local[2]", driver_memory="1g")
"""What the tests run Spark with (the CLI test sets the same master in the environment)."""

CUSTOM = [
    {"id": "c-monthly", "name": "monthly", "top_n": 30, "rebalance": "monthly"},
    {
        "id": "c-capped",
        "name": "capped",
        "top_n": 25,
        "weighting": "capped_market_cap",
        "cap": 0.08,
        "rebalance": "weekly",
    },
    {
        "id": "c-group-capped",
        "name": "group capped",
        "top_n": 20,
        "weighting": "capped_market_cap",
        "cap": 0.10,
        "group_cap": {"threshold": 0.05, "limit": 0.40},
        "rebalance": "monthly",
    },
    {
        "id": "c-buffered",
        "name": "buffered",
        "top_n": 20,
        "buffer": {"entry_rank": 15, "exit_rank": 30},
        "weighting": "market_cap",
    },
    {"id": "c-lagged", "name": "lagged", "top_n": 25, "rebalance": "monthly", "effective_lag": 12},
    {
        "id": "c-company",
        "name": "company ranked",
        "top_n": 15,
        "rank_by": "company",
        "weighting": "market_cap",
        "return_type": "net_total",
    },
    {
        "id": "c-filtered",
        "name": "filtered",
        "top_n": 10,
        "rebalance": "weekly",
        "return_type": "price",
        "universe": {"sectors": [" financials", "HEALTH CARE"], "min_price": 20.0},
    },
]
"""Monthly, capped, group-capped, buffered, lagged, company-ranked and filtered."""


def custom_definitions() -> list[Any]:
    """The custom definitions, validated."""
    return [parse_definition(d) for d in CUSTOM]


def dirty_market(
    n_symbols: int = 160, n_days: int = 70, seed: int = 7
) -> tuple[pa.Table, pa.Table]:
    """(securities, prices) of a synthetic market made dirty: share counts missing on
    many rows (shares in force), split ratios without an adjusted close, dividend values
    starting part way through a security's history, a company with three share classes,
    and invalid rows that ingestion quarantines (a split ratio of 0, a negative dividend,
    a weekend date, a conflicting duplicate)."""
    data = generate_market(seed=seed, n_symbols=n_symbols, n_days=n_days, start=START)
    securities = data.securities.to_pandas()
    prices = data.prices.to_pandas()
    rng = np.random.default_rng(seed)
    prices = prices.sort_values(["symbol", "date"]).reset_index(drop=True)
    for _symbol, rows in prices.groupby("symbol").groups.items():
        index = list(rows)
        if rng.random() < 0.4:  # counts given now and then: the others are in force
            for i in index[1:]:
                if rng.random() < 0.6:
                    prices.loc[i, ["shares_outstanding", "market_cap"]] = math.nan
        for i in index[1:]:
            if rng.random() < 0.03:  # a split ratio, adj_close left missing
                prices.loc[i, "split_ratio"] = float(rng.choice([2.0, 3.0, 0.5]))
                prices.loc[i, "adj_close"] = math.nan
        if rng.random() < 0.3:  # dividend values from a random row on
            start = int(rng.integers(0, len(index)))
            for i in index[start:]:
                prices.loc[i, "dividend"] = 0.0 if rng.random() < 0.85 else rng.uniform(0.1, 2)
    # three share classes of one company among the largest (company totals are summed)
    largest = prices[prices["date"] == prices["date"].min()].nlargest(8, "market_cap")["symbol"]
    trio = sorted(largest.tolist()[3:6])
    securities.loc[securities["symbol"].isin(trio), "company_id"] = "TRIO"
    extra = []
    for kind in range(4):
        row = prices.iloc[int(rng.integers(0, len(prices)))].to_dict()
        if kind == 0:
            row["split_ratio"] = 0.0
        elif kind == 1:
            row["dividend"] = -1.0
        elif kind == 2:
            day = row["date"]
            row["date"] = day + dt.timedelta(days=(5 - day.weekday()) % 7 or 7)
        else:
            row["close"] = row["close"] * 1.01
        extra.append(row)
    prices = pd.concat([prices, pd.DataFrame(extra)], ignore_index=True)
    return _table(securities, SECURITIES_SCHEMA), _table(prices, PRICES_SCHEMA)


def _table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


LEVEL_COLUMNS = (
    "level",
    "daily_return",
    "turnover",
    "level_price",
    "level_total",
    "level_net_total",
)


def published(
    store: Storage, key: str, index_id: str | None = None, *, as_of: dt.datetime | None = None
) -> dict[str, Any]:
    """What a build published under result ``key`` (``index_id`` as of ``as_of``; the
    current results by default): level rows, spells, changes, pro forma."""
    state = store.build_state(key)
    assert state is not None, key
    levels = store.read_levels(key, state.base_date, state.built_through).to_pylist()
    spells = sorted(
        (s.symbol, s.valid_from, s.valid_to)
        for s in store.spells_overlapping(key, state.base_date, state.built_through)
    )
    reader = IndexReader(store, store.calendar)
    _, changes = reader.changes(index_id or key, as_of=as_of)
    return {
        "state": state,
        "levels": levels,
        "spells": spells,
        "changes": [(c.date, sorted(c.entered), sorted(c.exited)) for c in changes],
        "announcements": [
            (a.reference_date, a.effective_date, a.symbol, a.rank, a.weight, a.market_cap)
            for a in store.announcements(key)
        ],
    }


def assert_same_publication(a: dict[str, Any], b: dict[str, Any], index_id: str) -> None:
    """Two publications of one index agree: dates, flags and members exactly, every
    number to 1e-9 (relative)."""
    assert len(a["levels"]) == len(b["levels"]) > 0, index_id
    for x, y in zip(a["levels"], b["levels"], strict=True):
        assert x["date"] == y["date"], index_id
        assert x["is_rebalance"] == y["is_rebalance"], (index_id, x["date"])
        assert x["n_constituents"] == y["n_constituents"], (index_id, x["date"])
        for column in LEVEL_COLUMNS:
            assert _close(x[column], y[column]), (index_id, x["date"], column, x[column], y[column])
    assert a["spells"] == b["spells"], index_id
    assert a["changes"] == b["changes"], index_id
    assert len(a["announcements"]) == len(b["announcements"]), index_id
    for x, y in zip(a["announcements"], b["announcements"], strict=True):
        assert x[:4] == y[:4], index_id
        assert _close(x[4], y[4]) and _close(x[5], y[5]), (index_id, x, y)
    assert a["state"].warnings == b["state"].warnings, index_id
    assert a["state"].built_through == b["state"].built_through, index_id


def _close(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is None and y is None
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
