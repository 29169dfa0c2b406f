"""Summary analytics of an index level series (METHODOLOGY "Outputs").

Conventions (also in ``docs/methodology.md``): returns are fractions; a year has
252 trading days; Sharpe uses a zero risk-free rate and is the annualised mean
daily return over the annualised volatility; maximum drawdown is the largest
peak-to-trough fall, a negative fraction; turnover is the average one-way
turnover per rebalance in the window, the base date's formation excluded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True)
class Summary:
    """Window statistics; ``None`` where the window is too short to define them."""

    total_return: float
    annualized_return: float | None
    annualized_volatility: float | None
    sharpe: float | None
    max_drawdown: float
    best_day: float | None
    worst_day: float | None
    turnover: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and tables."""
        return asdict(self)


def summarize(
    levels: NDArray[np.float64],
    turnover: NDArray[np.float64],
    is_rebalance: NDArray[np.bool_],
    *,
    first_is_base: bool,
) -> Summary:
    """Statistics of ``levels`` (the window's levels, ascending).

    ``turnover``/``is_rebalance`` are aligned with ``levels``; the window's first
    day contributes no return, and its turnover only counts when it is not the
    base date.
    """
    if len(levels) == 0:
        raise ValueError("no levels to summarize")
    returns = levels[1:] / levels[:-1] - 1.0
    total = float(levels[-1] / levels[0] - 1.0)
    n = len(returns)
    ann_return = (1.0 + total) ** (TRADING_DAYS_PER_YEAR / n) - 1.0 if n > 0 else None
    vol = float(np.std(returns, ddof=1) * math.sqrt(TRADING_DAYS_PER_YEAR)) if n > 1 else None
    mean = float(np.mean(returns)) * TRADING_DAYS_PER_YEAR if n > 0 else None
    sharpe = mean / vol if (mean is not None and vol) else None
    peaks = np.maximum.accumulate(levels)
    drawdown = float(np.min(levels / peaks - 1.0))
    rebalance = is_rebalance.copy()
    if first_is_base:
        rebalance[0] = False
    turns = turnover[rebalance]
    turns = turns[~np.isnan(turns)]
    return Summary(
        total_return=total,
        annualized_return=ann_return,
        annualized_volatility=vol,
        sharpe=sharpe,
        max_drawdown=drawdown,
        best_day=float(returns.max()) if n > 0 else None,
        worst_day=float(returns.min()) if n > 0 else None,
        turnover=float(turns.mean()) if len(turns) else None,
    )
