"""The provider Protocol: every data source returns the same standard models.

Modelled on OpenBB's fetchers: a provider turns a query into its own request
(``transform_query``), gets the raw data (``extract``), and returns the standard
:class:`~index_builder.providers.schema.MarketData` (``transform``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from index_builder.providers.schema import MarketData


@dataclass(frozen=True)
class ProviderCapabilities:
    """What a provider can deliver and what it needs."""

    prices: bool = True
    adjusted_prices: bool = False
    dividends: bool = False
    splits: bool = False
    shares_outstanding_history: bool = False
    listings: bool = False
    needs_api_key: bool = False
    network: bool = False
    rate_limit_per_minute: float | None = None
    """The provider's published limit (the client-side default; settings override)."""
    auth: str = "none"
    """How the provider authenticates, e.g. ``API key (header)``."""


class MarketDataProvider(Protocol):
    """A source of securities and daily bars."""

    name: str
    capabilities: ProviderCapabilities

    def fetch(self, **query: Any) -> MarketData:
        """Fetch securities and bars for a query (provider-specific keywords)."""
        ...
