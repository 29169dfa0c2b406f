"""Return variants (METHODOLOGY part 2): price, total and net total return.

Each variant is a per-security *return price* X_v, defined up to a constant
factor: only ratios X_v(t) / X_v(r) within a holding period matter, so the
index of variant v is the part 1 computation with X_v in place of P. Halted days
carry X_v forward (zero return).

* Securities without any dividend or split data (``has_actions`` false): total
  return is the part 1 price P itself (``adj_close`` where valid, else ``close``),
  so the default variant reproduces part 1 exactly; price return uses ``close``;
  net total return compounds r_p + (1 - tax) * (r_t - r_p).
* Securities with dividend or split data: with s the split ratio (1 when absent)
  and d the dividend (0 when absent), per valid row against the previous valid
  close: price (P s) / P', total (P s + d) / P', net (P s + (1 - tax) d) / P',
  with P = ``close``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from index_builder.engine.panel import MarketPanel, forward_fill

VARIANTS = ("price", "total", "net_total")

FloatMatrix = NDArray[np.float64]


def variant_prices(
    panel: MarketPanel, columns: NDArray[np.int64], tax: float
) -> dict[str, FloatMatrix]:
    """X_v over ``columns`` for every variant, forward filled (NaN before the first bar)."""
    raw_price = panel.price[:, columns]
    valid = ~np.isnan(raw_price)
    price = forward_fill(raw_price)
    if panel.close is None:
        raise ValueError("return variants need a panel with close prices")
    raw_close = panel.close[:, columns]
    close = forward_fill(raw_close)
    previous_close = np.vstack([np.full((1, len(columns)), np.nan), close[:-1]])
    previous_price = np.vstack([np.full((1, len(columns)), np.nan), price[:-1]])
    step = valid & ~np.isnan(previous_close)  # a valid row with an earlier valid row
    acts = panel.securities.actions_mask()[columns][None, :]
    dividend, split = panel.action_matrices(columns)

    with np.errstate(invalid="ignore", divide="ignore"):
        r_price = raw_close / previous_close - 1.0
        r_total = raw_price / previous_price - 1.0
        gross = {
            "price": np.where(acts, raw_close * split / previous_close, 1.0 + r_price),
            "total": (raw_close * split + dividend) / previous_close,
            "net_total": np.where(
                acts,
                (raw_close * split + (1.0 - tax) * dividend) / previous_close,
                1.0 + r_price + (1.0 - tax) * (r_total - r_price),
            ),
        }
    compounded = {v: _compound(np.where(step, g, 1.0), valid) for v, g in gross.items()}
    return {
        "price": np.where(acts, compounded["price"], close),
        "total": np.where(acts, compounded["total"], price),
        "net_total": compounded["net_total"],
    }


def _compound(gross: FloatMatrix, valid: NDArray[np.bool_]) -> FloatMatrix:
    """Cumulative product down each column, NaN before the column's first bar."""
    out: FloatMatrix = np.cumprod(gross, axis=0, dtype=np.float64)
    started = np.maximum.accumulate(valid, axis=0)
    out[~started] = np.nan
    return out
