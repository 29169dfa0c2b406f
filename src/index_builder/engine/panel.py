"""The market panel: dense (trading day x security) matrices the engine works on.

Rows are trading days (sorted), columns are securities sorted by symbol, so the
methodology's "ties by symbol ascending" is "ties by lower column index".
A cell is NaN where the security has no valid row that day (not listed yet,
halted, delisted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatMatrix = NDArray[np.float64]
Days = NDArray[np.datetime64]
Strings = NDArray[np.object_]


@dataclass(frozen=True)
class SecurityMaster:
    """Static security attributes, one entry per panel column (sorted by symbol)."""

    symbols: Strings
    names: Strings
    sectors: Strings
    exchanges: Strings
    types: Strings

    def __len__(self) -> int:
        return len(self.symbols)

    def column_of(self, symbols: list[str] | Strings) -> NDArray[np.int64]:
        """Column indices of ``symbols`` (which must all be present)."""
        idx = np.searchsorted(self.symbols, np.asarray(symbols, dtype=object))
        idx = np.minimum(idx, len(self.symbols) - 1)
        found = self.symbols[idx] == np.asarray(symbols, dtype=object)
        if not np.all(found):
            missing = np.asarray(symbols, dtype=object)[~found]
            raise KeyError(f"symbols not in the security master: {', '.join(map(str, missing[:5]))}")
        return idx.astype(np.int64)


@dataclass(frozen=True)
class MarketPanel:
    """Prices and market caps of every security on every trading day of a window.

    ``price`` is the return price P of the methodology: ``adj_close`` where it is
    finite and > 0 on that row, else ``close``. ``close`` is kept only when a
    definition filters on the unadjusted price.
    """

    days: Days
    securities: SecurityMaster
    price: FloatMatrix
    market_cap: FloatMatrix
    close: FloatMatrix | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(trading days, securities)."""
        return (len(self.days), len(self.securities))

    def rows_from(self, first_row: int) -> MarketPanel:
        """A view of the panel from ``first_row`` on (no copy)."""
        return MarketPanel(
            days=self.days[first_row:],
            securities=self.securities,
            price=self.price[first_row:],
            market_cap=self.market_cap[first_row:],
            close=None if self.close is None else self.close[first_row:],
        )

    def row_of(self, day: np.datetime64) -> int:
        """Row index of a trading day in the panel (KeyError if absent)."""
        i = int(np.searchsorted(self.days, day))
        if i >= len(self.days) or self.days[i] != day:
            raise KeyError(f"{day} is not a trading day of the panel")
        return i

    @classmethod
    def from_long(
        cls,
        days: Days,
        securities: SecurityMaster,
        cell: NDArray[np.int64],
        close: NDArray[np.float64],
        adj_close: NDArray[np.float64],
        market_cap: NDArray[np.float64],
        *,
        keep_close: bool = False,
    ) -> MarketPanel:
        """Scatter long arrays (one entry per valid bar; ``cell = row * n_securities +
        column``) into dense matrices."""
        shape = (len(days), len(securities))
        use_adj = np.isfinite(adj_close) & (adj_close > 0)
        price = _scatter(shape, cell, np.where(use_adj, adj_close, close))
        mcap = _scatter(shape, cell, market_cap)
        closes = _scatter(shape, cell, close) if keep_close else None
        return cls(days=days, securities=securities, price=price, market_cap=mcap, close=closes)


def _scatter(shape: tuple[int, int], cell: NDArray[np.int64], values: NDArray[np.float64]) -> FloatMatrix:
    out = np.full(shape, np.nan, dtype=np.float64)
    out.reshape(-1)[cell] = values
    return out


def forward_fill(matrix: FloatMatrix) -> FloatMatrix:
    """Carry the last non-NaN value of each column down (NaN before the first one)."""
    rows = np.arange(matrix.shape[0])[:, None]
    last = np.where(np.isnan(matrix), 0, rows)
    np.maximum.accumulate(last, axis=0, out=last)
    return np.take_along_axis(matrix, last, axis=0)
