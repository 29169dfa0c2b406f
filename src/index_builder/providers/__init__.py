"""Data providers behind one Protocol, looked up by name."""

from __future__ import annotations

from index_builder.errors import InvalidInputError
from index_builder.providers.base import MarketDataProvider, ProviderCapabilities
from index_builder.providers.file import FileProvider
from index_builder.providers.schema import MarketData
from index_builder.providers.synthetic import SyntheticProvider

PROVIDERS: dict[str, type[MarketDataProvider]] = {
    "synthetic": SyntheticProvider,
    "file": FileProvider,
}


def get_provider(name: str) -> MarketDataProvider:
    """A provider instance by name."""
    try:
        return PROVIDERS[name]()
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise InvalidInputError(
            f"unknown provider {name!r} (known: {known})", field="provider"
        ) from None


__all__ = [
    "PROVIDERS",
    "MarketData",
    "MarketDataProvider",
    "ProviderCapabilities",
    "get_provider",
]
