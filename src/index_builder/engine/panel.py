"""The market panel: dense (trading day x security) matrices the engine works on.

Rows are trading days (sorted), columns are securities sorted by symbol, so the
methodology's "ties by symbol ascending" is "ties by lower column index".
A cell is NaN where the security has no valid row that day (not listed yet,
halted, delisted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
from numpy.typing import NDArray

FloatMatrix = NDArray[np.float64]
Days = NDArray[np.datetime64]
Strings = NDArray[np.object_]
LongBars = tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
Actions = tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]
"""One batch of valid bars: (cell, close, adj_close, market_cap)."""


def filter_key(value: str) -> str:
    """How a universe filter compares text: case-insensitive, surrounding spaces ignored
    (METHODOLOGY "Index definition")."""
    return value.strip().casefold()


@dataclass(frozen=True)
class SecurityMaster:
    """Static security attributes, one entry per panel column (sorted by symbol)."""

    symbols: Strings
    names: Strings
    sectors: Strings
    exchanges: Strings
    types: Strings
    dividends_from: Days | None = None
    """The date of each security's first valid row that gives a dividend value (0
    included), NaT for one that never gives any: from that day on its total return
    comes from dividends (METHODOLOGY part 2, "Return variants"). None: none known."""
    company_ids: Strings | None = None
    """``company_id`` per security (None where absent)."""

    def company_keys(self) -> Strings:
        """The company each security belongs to: its company_id, else its own symbol."""
        if self.company_ids is None:
            return self.symbols
        return np.array(
            [
                c if isinstance(c, str) else s
                for c, s in zip(self.company_ids, self.symbols, strict=True)
            ],
            dtype=object,
        )

    def dividend_regime(self, days: Days, columns: NDArray[np.int64]) -> NDArray[np.bool_]:
        """(day x column) True where the security's dividend formulas are in force:
        on and after its first dividend value (point in time: never before it)."""
        if self.dividends_from is None:
            return np.zeros((len(days), len(columns)), dtype=bool)
        start = self.dividends_from[columns].astype("datetime64[D]")
        never = np.datetime64("9999-12-31", "D")
        first = np.where(np.isnat(start), never, start)
        regime: NDArray[np.bool_] = days.astype("datetime64[D]")[:, None] >= first[None, :]
        return regime

    def __len__(self) -> int:
        return len(self.symbols)

    def matches(self, attribute: str, allowed: tuple[str, ...]) -> NDArray[np.bool_]:
        """Columns whose ``attribute`` (sectors, exchanges or types) is in ``allowed``,
        ignoring case and surrounding spaces on both sides (memoised: the master is
        immutable)."""
        key = (attribute, tuple(sorted(filter_key(a) for a in allowed)))
        cache: dict[tuple[str, tuple[str, ...]], NDArray[np.bool_]] = self.__dict__.setdefault(
            "_match_cache", {}
        )
        if key not in cache:
            wanted = set(key[1])
            values = getattr(self, attribute)
            cache[key] = np.fromiter(
                (isinstance(v, str) and filter_key(v) in wanted for v in values),
                dtype=bool,
                count=len(values),
            )
        return cache[key]

    def column_of(self, symbols: list[str] | Strings) -> NDArray[np.int64]:
        """Column indices of ``symbols`` (which must all be present)."""
        idx = np.searchsorted(self.symbols, np.asarray(symbols, dtype=object))
        idx = np.minimum(idx, len(self.symbols) - 1)
        found = self.symbols[idx] == np.asarray(symbols, dtype=object)
        if not np.all(found):
            missing = np.asarray(symbols, dtype=object)[~found]
            raise KeyError(
                f"symbols not in the security master: {', '.join(map(str, missing[:5]))}"
            )
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
    actions: Actions | None = None
    """Sparse corporate actions: (cell, dividend, split_ratio), NaN where absent."""
    volumes: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None
    """Sparse (cell, volume) of the securities that share a company with another."""

    @property
    def shape(self) -> tuple[int, int]:
        """(trading days, securities)."""
        return (len(self.days), len(self.securities))

    def rows_from(self, first_row: int, stop: int | None = None) -> MarketPanel:
        """A view of rows ``first_row`` up to ``stop`` (default: the end); no dense copy."""
        stop = len(self.days) if stop is None else min(stop, len(self.days))
        n = len(self.securities)
        rows = slice(first_row, stop)
        return MarketPanel(
            days=self.days[rows],
            securities=self.securities,
            price=self.price[rows],
            market_cap=self.market_cap[rows],
            close=None if self.close is None else self.close[rows],
            actions=None
            if self.actions is None
            else _cells_between(self.actions, first_row * n, stop * n),
            volumes=None
            if self.volumes is None
            else _cells_between(self.volumes, first_row * n, stop * n),
        )

    def volume_at(self, rows: NDArray[np.int64], columns: NDArray[np.int64]) -> FloatMatrix:
        """Dense volume at ``rows`` x ``columns`` (0 where unknown)."""
        out = np.zeros((len(rows), len(columns)))
        if self.volumes is None or len(columns) == 0 or len(rows) == 0:
            return out
        n = len(self.securities)
        cells, values = self.volumes
        r, c = np.divmod(cells, n)
        row_pos = np.full(len(self.days), -1, dtype=np.int64)
        row_pos[rows] = np.arange(len(rows))
        col_pos = np.full(n, -1, dtype=np.int64)
        col_pos[columns] = np.arange(len(columns))
        keep = (row_pos[r] >= 0) & (col_pos[c] >= 0)
        out[row_pos[r[keep]], col_pos[c[keep]]] = np.nan_to_num(values[keep])
        return out

    def action_matrices(self, columns: NDArray[np.int64]) -> tuple[FloatMatrix, FloatMatrix]:
        """Dense (dividend, split ratio) over ``columns``: 0 and 1 where absent."""
        shape = (len(self.days), len(columns))
        dividend, split = np.zeros(shape), np.ones(shape)
        if self.actions is None or len(columns) == 0:
            return dividend, split
        cells, dividends, splits = self.actions
        n = len(self.securities)
        slot = np.full(n, -1, dtype=np.int64)
        slot[columns] = np.arange(len(columns))
        rows, cols = np.divmod(cells, n)
        keep = slot[cols] >= 0
        rows, slots = rows[keep], slot[cols[keep]]
        d, s = dividends[keep], splits[keep]
        dividend[rows, slots] = np.where(np.isfinite(d), d, 0.0)
        split[rows, slots] = np.where(np.isfinite(s), s, 1.0)
        return dividend, split

    def row_of(self, day: np.datetime64) -> int:
        """Row index of a trading day in the panel (KeyError if absent)."""
        i = int(np.searchsorted(self.days, day))
        if i >= len(self.days) or self.days[i] != day:
            raise KeyError(f"{day} is not a trading day of the panel")
        return i

    @classmethod
    def from_batches(
        cls,
        days: Days,
        securities: SecurityMaster,
        batches: Iterable[LongBars],
        *,
        actions: Actions | None = None,
        volumes: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None,
    ) -> MarketPanel:
        """Scatter long arrays into dense matrices, one batch at a time.

        Each batch is ``(cell, close, adj_close, market_cap)`` with one entry per
        valid bar and ``cell = row * n_securities + column``.
        """
        shape = (len(days), len(securities))
        price = np.full(shape, np.nan)
        mcap = np.full(shape, np.nan)
        closes = np.full(shape, np.nan)
        for cell, close, adj_close, market_cap in batches:
            use_adj = np.isfinite(adj_close) & (adj_close > 0)
            price.reshape(-1)[cell] = np.where(use_adj, adj_close, close)
            mcap.reshape(-1)[cell] = market_cap
            closes.reshape(-1)[cell] = close
        return cls(
            days=days,
            securities=securities,
            price=price,
            market_cap=mcap,
            close=closes,
            actions=actions,
            volumes=volumes,
        )


SparseT = TypeVar("SparseT", Actions, tuple[NDArray[np.int64], NDArray[np.float64]])


def _cells_between(sparse: SparseT, lo: int, hi: int) -> SparseT:
    """Entries of a sparse (cell, values...) tuple with lo <= cell < hi, cells rebased to lo."""
    cells = sparse[0]
    keep: NDArray[np.bool_] = (cells >= lo) & (cells < hi)
    return cast(SparseT, (cells[keep] - lo, *(values[keep] for values in sparse[1:])))


def forward_fill(matrix: FloatMatrix) -> FloatMatrix:
    """Carry the last non-NaN value of each column down (NaN before the first one)."""
    rows = np.arange(matrix.shape[0])[:, None]
    last = np.where(np.isnan(matrix), 0, rows)
    np.maximum.accumulate(last, axis=0, out=last)
    return np.take_along_axis(matrix, last, axis=0)
