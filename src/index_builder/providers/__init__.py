"""Data providers behind one Protocol, looked up by name."""

from __future__ import annotations

from typing import Any

from index_builder.errors import InvalidInputError
from index_builder.providers.base import MarketDataProvider, ProviderCapabilities
from index_builder.providers.file import FileProvider
from index_builder.providers.http import HttpProvider
from index_builder.providers.polygon import PolygonProvider
from index_builder.providers.schema import MarketData
from index_builder.providers.synthetic import SyntheticProvider
from index_builder.providers.tiingo import TiingoProvider
from index_builder.providers.yahoo import YahooProvider

PROVIDERS: dict[str, type[MarketDataProvider]] = {
    "synthetic": SyntheticProvider,
    "file": FileProvider,
    "yahoo": YahooProvider,
    "polygon": PolygonProvider,
    "tiingo": TiingoProvider,
}

HTTP_PROVIDERS: dict[str, type[HttpProvider]] = {
    "yahoo": YahooProvider,
    "polygon": PolygonProvider,
    "tiingo": TiingoProvider,
}
"""Providers that fetch one symbol at a time over HTTP (they can form a chain)."""

ALIASES = {"yfinance": "yahoo"}


def _known() -> str:
    return ", ".join(sorted(PROVIDERS))


def get_provider(name: str) -> MarketDataProvider:
    """A provider instance by name."""
    try:
        return PROVIDERS[ALIASES.get(name, name)]()
    except KeyError:
        raise InvalidInputError(
            f"unknown provider {name!r} (known: {_known()})", field="provider"
        ) from None


def chain_names(spec: str) -> list[str] | None:
    """``"polygon,yfinance"`` -> ``["polygon", "yahoo"]``; None when ``spec`` is not
    a chain of HTTP providers (``synthetic``, ``file``). Unknown names are refused."""
    names = [ALIASES.get(n.strip(), n.strip()) for n in spec.split(",") if n.strip()]
    if len(names) == 1 and names[0] not in HTTP_PROVIDERS:
        return None
    for n in names:
        if n not in HTTP_PROVIDERS:
            chainable = ", ".join(sorted(HTTP_PROVIDERS))
            raise InvalidInputError(
                f"provider {n!r} cannot be in a chain (chainable: {chainable})",
                field="provider",
            )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"provider named twice in {spec!r}", field="provider")
    return names


def make_http_provider(name: str, **kwargs: Any) -> HttpProvider:
    """An HTTP provider instance (``kwargs``: transport, settings, sleep, clock, ...)."""
    return HTTP_PROVIDERS[ALIASES.get(name, name)](**kwargs)


__all__ = [
    "HTTP_PROVIDERS",
    "PROVIDERS",
    "MarketData",
    "MarketDataProvider",
    "ProviderCapabilities",
    "chain_names",
    "get_provider",
    "make_http_provider",
]
