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
    """Aggregate security keys (over ``candidates``) into company keys.

    Most companies have one class: their column is copied as is; only the few
    with several classes are summed and need volumes (read once for all of them).
    """
    labels = panel.securities.company_keys()[candidates].astype(str)
    companies, company_of = np.unique(labels, return_inverse=True)  # sorted: ties by key
    company_of = company_of.astype(np.int64)
    sizes = np.bincount(company_of, minlength=len(companies))
    single = sizes[company_of] == 1
    out = np.full((keys.shape[0], len(companies)), NOT_ELIGIBLE)
    out[:, company_of[single]] = keys[:, single]
    representative = np.full(out.shape, -1, dtype=np.int64)
    single_positions = np.flatnonzero(single)
    representative[:, company_of[single]] = np.where(
        keys[:, single] > NOT_ELIGIBLE, single_positions[None, :], -1
    )
    multi = np.flatnonzero(~single)  # candidate positions, by symbol
    if len(multi):
        order = multi[np.argsort(company_of[multi], kind="stable")]  # by company, then symbol
        owners = company_of[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        sub = keys[:, order]
        eligible = sub > NOT_ELIGIBLE
        totals = np.add.reduceat(np.where(eligible, sub, 0.0), starts, axis=1)
        any_eligible = np.logical_or.reduceat(eligible, starts, axis=1)
        out[:, owners[starts]] = np.where(any_eligible, totals, NOT_ELIGIBLE)
        volume = np.where(eligible, panel.volume_at(rows, candidates[order]), -np.inf)
        ends = np.r_[starts[1:], len(order)]
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            best = a + np.argmax(volume[:, a:b], axis=1)  # first maximum: lowest symbol
            representative[:, owners[a]] = np.where(any_eligible[:, i], order[best], -1)
    return CompanyKeys(out, representative, company_of)
