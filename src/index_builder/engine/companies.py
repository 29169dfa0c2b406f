"""Ranking by company (METHODOLOGY part 2, "Companies and share classes").

With ``rank_by: company`` the selection runs on companies instead of securities:
a company's ranking key is the sum of its eligible share classes' market caps,
companies tie by company key (``company_id``, or the symbol of a security that
has none), and each selected company is represented by its eligible class with
the highest volume on the reference date (ties by symbol). Market-cap weights
use the company total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from index_builder.engine.panel import MarketPanel
from index_builder.engine.selection import NOT_ELIGIBLE

FloatMatrix = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class CompanyKeys:
    """Ranking keys per company, and the class that represents it on each rebalance."""

    keys: FloatMatrix  # (R, K) company market cap where eligible, else NOT_ELIGIBLE
    representative: NDArray[np.int64]  # (R, K) candidate position of the class, -1 if none
    company_of: IntArray  # candidate position -> company index


def company_keys(
    keys: FloatMatrix, candidates: IntArray, panel: MarketPanel, rows: IntArray
) -> CompanyKeys:
    """Aggregate security keys (over ``candidates``) into company keys."""
    labels = panel.securities.company_keys()[candidates].astype(str)
    companies, company_of = np.unique(labels, return_inverse=True)  # sorted: ties by key
    company_of = company_of.astype(np.int64)
    order = np.argsort(company_of, kind="stable")  # classes of a company, by symbol
    starts = np.searchsorted(company_of[order], np.arange(len(companies)))
    eligible = keys > NOT_ELIGIBLE
    caps = np.where(eligible, keys, 0.0)[:, order]
    totals = np.add.reduceat(caps, starts, axis=1)
    any_eligible = np.logical_or.reduceat(eligible[:, order], starts, axis=1)
    company_keys_ = np.where(any_eligible, totals, NOT_ELIGIBLE)

    sizes = np.diff(np.append(starts, len(order)))
    representative = np.where(any_eligible, order[starts][None, :], -1)
    for company in np.flatnonzero(sizes > 1):
        classes = order[starts[company] : starts[company] + sizes[company]]
        volume = panel.volume_at(rows, candidates[classes])
        volume = np.where(eligible[:, classes], volume, -np.inf)
        best = np.argmax(volume, axis=1)  # first maximum: the lowest symbol on ties
        representative[:, company] = np.where(any_eligible[:, company], classes[best], -1)
    return CompanyKeys(company_keys_, representative.astype(np.int64), company_of)
