"""Selection rules: which eligible securities become constituents at a rebalance.

Ranking (METHODOLOGY "Selection"): by market cap on the rebalance date,
descending; ties by symbol ascending. Securities (columns) are always sorted by
symbol, so "ties by symbol" is "ties by lower column index".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.registry import Registry

FloatMatrix = NDArray[np.float64]
IntMatrix = NDArray[np.int64]

NOT_ELIGIBLE = -np.inf
"""Ranking key of a security that is not eligible on a date."""


@dataclass(frozen=True)
class Selection:
    """Constituents per rebalance, in rank order.

    ``members[k, j]`` is the column (security) ranked ``ranks[k, j]`` among eligible
    securities at rebalance ``k``; padding is ``-1``. ``counts[k]`` real entries.
    """

    members: IntMatrix
    ranks: IntMatrix
    counts: NDArray[np.int64]


class SelectionRule(Protocol):
    """Chooses constituents for a batch of rebalances from ranking keys."""

    def select(self, keys: FloatMatrix, definition: IndexDefinition) -> Selection:
        """``keys[k, i]``: market cap of security i at rebalance k, or ``NOT_ELIGIBLE``."""
        ...


SELECTIONS: Registry[SelectionRule] = Registry("selection")


@SELECTIONS.register("top_n")
class TopN:
    """The first ``top_n`` eligible securities by rank (all of them if fewer)."""

    def select(self, keys: FloatMatrix, definition: IndexDefinition) -> Selection:
        return top_k(keys, definition.top_n)


def top_k(keys: FloatMatrix, k: int) -> Selection:
    """Vectorised top-k per row with ties broken by the lower column index."""
    rows, n = keys.shape
    k = min(k, n)
    if k == 0 or rows == 0:
        empty = np.full((rows, max(k, 0)), -1, dtype=np.int64)
        return Selection(empty, empty.copy(), np.zeros(rows, dtype=np.int64))
    eligible = keys > NOT_ELIGIBLE
    counts = np.minimum(eligible.sum(axis=1), k).astype(np.int64)
    # Everything at or above the k-th largest key is in, unless ties at that
    # threshold overfill the row; those (rare) rows keep the lowest columns.
    threshold = np.partition(keys, n - k, axis=1)[:, n - k : n - k + 1]
    chosen = (keys >= threshold) & eligible
    for r in np.flatnonzero(chosen.sum(axis=1) > counts):
        at = np.flatnonzero(keys[r] == threshold[r, 0])
        above = int(np.count_nonzero(keys[r] > threshold[r, 0]))
        chosen[r, at[counts[r] - above :]] = False
    cols = np.nonzero(chosen)[1]
    row_of = np.repeat(np.arange(rows), counts)
    slot = np.arange(len(cols)) - np.repeat(np.cumsum(counts) - counts, counts)
    members = np.full((rows, k), -1, dtype=np.int64)
    members[row_of, slot] = cols
    # order each row by key descending, then column ascending; padding last
    sort_keys = np.where(members >= 0, np.take_along_axis(keys, np.maximum(members, 0), 1), -np.inf)
    pad_last = np.where(members >= 0, members, n)
    order = np.lexsort((pad_last, -sort_keys), axis=1)
    members = np.take_along_axis(members, order, axis=1)
    ranks = np.where(members >= 0, np.arange(1, k + 1)[None, :], -1)
    return Selection(members, ranks.astype(np.int64), counts)


def rank_within_row(keys_row: NDArray[np.float64], columns: NDArray[np.int64]) -> IntMatrix:
    """1-based rank of ``columns`` among the eligible securities of one date."""
    n = len(keys_row)
    order = np.lexsort((np.arange(n), -keys_row))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    return rank[columns]
