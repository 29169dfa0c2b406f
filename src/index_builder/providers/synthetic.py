"""The ``synthetic`` provider: the embedded, offline, deterministic default market."""

from __future__ import annotations

import datetime as dt
from typing import Any

from index_builder.providers.base import ProviderCapabilities
from index_builder.providers.schema import MarketData
from index_builder.providers.synthetic_market import generate_market

DEFAULT_SEED = 42
DEFAULT_SYMBOLS = 3000
DEFAULT_DAYS = 504
DEFAULT_START = dt.date(2023, 1, 3)


class SyntheticProvider:
    """A realistic synthetic US market on XNYS sessions (see ``synthetic_market``)."""

    name = "synthetic"
    capabilities = ProviderCapabilities(
        adjusted_prices=True,
        dividends=True,
        splits=True,
        shares_outstanding_history=True,
        listings=True,
    )

    def fetch(self, **query: Any) -> MarketData:
        """``seed``, ``symbols``, ``days``, ``start`` (all optional)."""
        return generate_market(
            seed=int(query.get("seed", DEFAULT_SEED)),
            n_symbols=int(query.get("symbols", DEFAULT_SYMBOLS)),
            n_days=int(query.get("days", DEFAULT_DAYS)),
            start=query.get("start") or DEFAULT_START,
        )
