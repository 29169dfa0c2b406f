"""The universe of an ingestion: a symbol list (file) or a provider's listings.

A universe file has one symbol per line; ``#`` starts a comment; blank lines are
ignored. A listing-based universe asks a provider with the ``listings``
capability for every listed security of the given types and exchanges
(:class:`ListingProvider`), e.g. all US common stocks on XNYS and XNAS.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from index_builder.errors import InvalidInputError, UnusableInputError
from index_builder.providers.schema import COMMON_STOCK, MarketData

US_EXCHANGES = ("XNYS", "XNAS", "XASE", "ARCX", "BATS")
"""Exchanges (MIC) of a US listing universe."""


@runtime_checkable
class ListingProvider(Protocol):
    """A provider that can list securities (capability ``listings``)."""

    name: str

    def list_securities(
        self, types: Sequence[str], exchanges: Sequence[str], **query: Any
    ) -> pa.Table:
        """Listed securities (``SECURITIES_SCHEMA``) of these types on these exchanges
        (empty sequence: any)."""
        ...


def read_universe_file(path: Path) -> list[str]:
    """The symbols of a universe file, upper case, in order, without repeats."""
    if not path.is_file():
        raise UnusableInputError(f"universe file not found: {path}", field="universe")
    symbols: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        symbol = line.split("#", 1)[0].strip().upper()
        if symbol and symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise UnusableInputError(f"universe file {path} names no symbol", field="universe")
    return symbols


def universe(
    provider: Any,
    types: Sequence[str] = (COMMON_STOCK,),
    exchanges: Sequence[str] = US_EXCHANGES,
    **query: Any,
) -> list[str]:
    """Every listed security of ``types`` on ``exchanges`` from ``provider``'s listings."""
    if not isinstance(provider, ListingProvider) or not provider_lists(provider):
        name = getattr(provider, "name", type(provider).__name__)
        raise InvalidInputError(
            f"provider {name!r} cannot list securities (no 'listings' capability)",
            field="provider",
        )
    table = provider.list_securities(types, exchanges, **query)
    return sorted(set(table.column("symbol").to_pylist()))


def provider_lists(provider: Any) -> bool:
    """True when a provider declares the ``listings`` capability."""
    capabilities = getattr(provider, "capabilities", None)
    return bool(getattr(capabilities, "listings", False))


def filter_listings(
    securities: pa.Table, types: Sequence[str], exchanges: Sequence[str]
) -> pa.Table:
    """Securities of ``types`` on ``exchanges`` (an empty sequence: any), case-insensitive."""
    mask = pa.array([True] * securities.num_rows, pa.bool_())
    for column, wanted in (("type", types), ("exchange", exchanges)):
        if wanted:
            values = pc.utf8_upper(securities.column(column).cast(pa.string()))
            allowed = pa.array([w.upper() for w in wanted], pa.string())
            mask = pc.and_(mask, pc.fill_null(pc.is_in(values, value_set=allowed), False))
    return securities.filter(mask)


def restrict(data: MarketData, symbols: Sequence[str]) -> MarketData:
    """Only the securities and bars of ``symbols`` (prices may be a stream)."""
    allowed = pa.array(sorted({s.upper() for s in symbols}), pa.string())
    securities = data.securities.filter(_in(data.securities.column("symbol"), allowed))
    prices = data.prices
    if isinstance(prices, pa.RecordBatchReader):
        prices = pa.RecordBatchReader.from_batches(prices.schema, _filtered(prices, allowed))
    else:
        prices = prices.filter(_in(prices.column("symbol"), allowed))
    return MarketData(securities=securities, prices=prices)


def _in(column: Any, allowed: pa.Array) -> Any:
    upper = pc.utf8_upper(pc.utf8_trim_whitespace(column.cast(pa.string())))
    return pc.fill_null(pc.is_in(upper, value_set=allowed), False)


def _filtered(reader: pa.RecordBatchReader, allowed: pa.Array) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        yield batch.filter(_in(batch.column("symbol"), allowed))
