"""A small synthetic market, a bad correction of it, and what a publication shows: the
material of the versions, rollback and as-of-version tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from index_builder.calendar import get_calendar
from index_builder.ingest.job import with_row_numbers
from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA
from index_builder.providers.synthetic_market import generate_market
from index_builder.services.queries import IndexReader
from index_builder.storage.base import IngestReport, Storage

START = dt.date(2023, 1, 3)
USER_INDEX = {
    "id": "mine",
    "name": "Weekly market cap 15",
    "top_n": 15,
    "weighting": "market_cap",
    "rebalance": "weekly",
}
BOGUS = "ZZBAD"
"""A security the bad correction invents (larger than any other: it enters ew100)."""


class Clock:
    """A settable clock for a store (naive UTC): ingestion runs start, rollbacks happen
    and versions are recorded at ``now``."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass(frozen=True)
class Market:
    """The good data, and a bad correction of them."""

    securities: pa.Table
    prices: pa.Table
    bad_securities: pa.Table
    bad_prices: pa.Table
    corrected_days: list[dt.date]
    corrected_symbols: list[str]
    new_day: dt.date
    """The session after the last day: the bad correction gives it one bogus bar."""

    @property
    def last_day(self) -> dt.date:
        return max(self.prices.column("date").to_pylist())


def make_market(n_symbols: int = 150, n_days: int = 40, seed: int = 11) -> Market:
    """The good market, and a correction that changes the closes of the five largest
    securities on three past days, invents a security from the 21st day on and a bar
    on the session after the last day."""
    data = generate_market(seed=seed, n_symbols=n_symbols, n_days=n_days, start=START)
    prices = data.prices.to_pandas()
    days = sorted(prices["date"].unique())
    corrected_days = [days[15], days[16], days[17]]
    on_day = prices[prices["date"] == days[15]]
    largest = on_day.nlargest(5, "market_cap")["symbol"].tolist()
    changed = prices[prices["date"].isin(corrected_days) & prices["symbol"].isin(largest)].copy()
    for column in ("close", "adj_close", "market_cap"):
        changed[column] = changed[column] * 1.25
    template = prices[prices["symbol"] == largest[0]]
    bogus = template[template["date"] >= days[20]].copy()
    bogus["symbol"] = BOGUS
    bogus["market_cap"] = bogus["market_cap"] * 3.0
    bogus["shares_outstanding"] = bogus["shares_outstanding"] * 3.0
    new_day = get_calendar().session_after(days[-1], 1)
    assert new_day is not None
    extra = prices[(prices["date"] == days[-1]) & (prices["symbol"] == largest[1])].copy()
    extra["date"] = new_day
    extra["close"] = extra["close"] * 0.5
    extra["adj_close"] = extra["adj_close"] * 0.5
    extra["market_cap"] = extra["market_cap"] * 0.5
    bad = pd.concat([changed, bogus, extra], ignore_index=True)
    securities = data.securities.to_pandas()
    bogus_security = securities[securities["symbol"] == largest[0]].copy()
    bogus_security["symbol"] = BOGUS
    bogus_security["name"] = "Bogus Corp"
    return Market(
        securities=data.securities,
        prices=data.prices,
        bad_securities=_table(bogus_security, SECURITIES_SCHEMA),
        bad_prices=_table(bad, PRICES_SCHEMA),
        corrected_days=[pd.Timestamp(d).date() for d in corrected_days],
        corrected_symbols=sorted(largest),
        new_day=new_day,
    )


def _table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def ingest(store: Storage, securities: pa.Table, prices: pa.Table) -> IngestReport:
    """One ingestion run of the tables (provider ``test``)."""
    return store.ingest(
        with_row_numbers(securities, SECURITIES_SCHEMA),
        with_row_numbers(prices, PRICES_SCHEMA),
        provider="test",
        params={},
    )


def published(reader: IndexReader, index_id: str, **point: Any) -> dict[str, Any]:
    """Everything a publication of an index shows: levels and returns, the summary,
    the composition after every day and the composition changes (``point``: as_of or
    as_of_version)."""
    perf = reader.performance(index_id, **point)
    _, changes = reader.changes(index_id, **point)
    return {
        "levels": perf.rows,
        "summary": perf.summary.as_dict(),
        "compositions": [c.rows() for c in reader.compositions(index_id, **point)],
        "changes": [(c.date, list(c.entered), list(c.exited)) for c in changes],
    }
