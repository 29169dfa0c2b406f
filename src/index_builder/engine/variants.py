"""Return variants (METHODOLOGY part 2): price, total and net total return.

Each variant is given per security and trading day as a *growth factor*
f_v(t) = X_v(t) / X_v(t'), the ratio of the variant's return price over the
security's previous valid row t' (1 on a day without a valid row: a halt carries
the price, zero return). A holding's growth since a rebalance is the product of
its factors, multiplied day after day, so a build that continues from stored
results multiplies exactly what a full build multiplies.

With P the part 1 price (``adj_close`` where valid, else ``close``), s the split
ratio (1 when absent) and d the dividend (0 when absent), per valid row t:

* price: close(t) * s / close(t'), for every security;
* total: from the security's first row that gives a dividend value (0 included)
  on, (close(t) * s + d) / close(t'); before it, and for a security that never
  gives one, P(t) / P(t') (even with split ratios: ``adj_close`` carries them);
* net total: from that row on, (close(t) * s + (1 - tax) * d) / close(t');
  before it, 1 + r_p + (1 - tax) * (r_t - r_p) with r_p and r_t the price and
  total returns of the day.

The first dividend value switches the rule from that day on only: a value that
arrives later never changes the returns of earlier days.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from index_builder.engine.panel import MarketPanel, forward_fill

VARIANTS = ("price", "total", "net_total")

FloatMatrix = NDArray[np.float64]


def growth_factors(
    panel: MarketPanel, columns: NDArray[np.int64], tax: float
) -> dict[str, FloatMatrix]:
    """f_v over ``columns`` for every variant: (day x column), 1 where the security
    has no valid row or no earlier valid row in the panel."""
    if panel.close is None:
        raise ValueError("return variants need a panel with close prices")
    price = panel.price[:, columns]
    close = panel.close[:, columns]
    previous_price = _previous(forward_fill(price))
    previous_close = _previous(forward_fill(close))
    step = ~np.isnan(price) & ~np.isnan(previous_close)  # a valid row after a valid row
    dividend, split = panel.action_matrices(columns)
    regime = panel.securities.dividend_regime(panel.days, columns)
    with np.errstate(invalid="ignore", divide="ignore"):
        split_close = close * split
        price_growth = split_close / previous_close
        total_by_price = price / previous_price
        r_price = price_growth - 1.0
        r_total = total_by_price - 1.0
        inferred_net = 1.0 + (r_price + (1.0 - tax) * (r_total - r_price))
        total_by_dividend = (split_close + dividend) / previous_close
        net_by_dividend = (split_close + (1.0 - tax) * dividend) / previous_close
    return {
        "price": np.where(step, price_growth, 1.0),
        "total": np.where(step, np.where(regime, total_by_dividend, total_by_price), 1.0),
        "net_total": np.where(step, np.where(regime, net_by_dividend, inferred_net), 1.0),
    }


def real_prices(panel: MarketPanel, columns: NDArray[np.int64]) -> FloatMatrix:
    """The money price compositions are quoted in, carried through halts: ``close``
    where the security's dividend formulas are in force (its returns compound from
    close), else the part 1 price P."""
    price = forward_fill(panel.price[:, columns])
    regime = panel.securities.dividend_regime(panel.days, columns)
    if not regime.any():
        return price
    assert panel.close is not None
    return np.where(regime, forward_fill(panel.close[:, columns]), price)


def _previous(matrix: FloatMatrix) -> FloatMatrix:
    """Each row replaced by the row before it (NaN for the first)."""
    out = np.full_like(matrix, np.nan)
    out[1:] = matrix[:-1]
    return out
