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
IntArray = NDArray[np.int64]

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
    companies: IntMatrix | None = None  # with rank_by company: the company of each member


class SelectionRule(Protocol):
    """Chooses constituents for a batch of rebalances from ranking keys."""

    def select(
        self, keys: FloatMatrix, definition: IndexDefinition, start: IntArray | None = None
    ) -> Selection:
        """``keys[k, i]``: market cap of security i at rebalance k, or ``NOT_ELIGIBLE``.

        ``start``: the constituents already in force at rebalance 0 (an incremental
        build resuming there); they replace that rebalance's selection.
        """
        ...


SELECTIONS: Registry[SelectionRule] = Registry("selection")


def selection_rule(definition: IndexDefinition) -> SelectionRule:
    """The rule a definition asks for: buffered when it has a buffer, else plain top N."""
    return SELECTIONS.get("buffered" if definition.buffer is not None else "top_n")


@SELECTIONS.register("top_n")
class TopN:
    """The first ``top_n`` eligible securities by rank (all of them if fewer)."""

    def select(
        self, keys: FloatMatrix, definition: IndexDefinition, start: IntArray | None = None
    ) -> Selection:
        chosen = top_k(keys, definition.top_n)
        return chosen if start is None else with_start_members(chosen, keys[0], start)


@SELECTIONS.register("buffered")
class BufferedTopN:
    """Top N with a selection buffer (METHODOLOGY part 2, "Selection buffer").

    On each rebalance after the first: members ranked within ``exit_rank`` stay,
    non-members ranked within ``entry_rank`` enter; then the worst-ranked are
    removed beyond ``top_n`` or the best-ranked others added below it. Ranks are
    among all eligible securities. Sequential by nature (each selection depends
    on the previous one), so this loops over rebalances, in memory.
    """

    def select(
        self, keys: FloatMatrix, definition: IndexDefinition, start: IntArray | None = None
    ) -> Selection:
        buffer = definition.buffer
        n = definition.top_n
        entry, exit_ = (buffer.entry_rank, buffer.exit_rank) if buffer else (n, n)
        ranked = top_k(keys, max(n, entry, exit_))  # ranks beyond exit_rank never matter
        rows = keys.shape[0]
        width = max(min(n, keys.shape[1]), 0 if start is None else len(start))
        members = np.full((rows, width), -1, dtype=np.int64)
        ranks = np.full((rows, width), -1, dtype=np.int64)
        counts = np.zeros(rows, dtype=np.int64)
        previous: set[int] | None = None
        first = 0
        if start is not None:
            head = with_start_members(Selection(members[:1], ranks[:1], counts[:1]), keys[0], start)
            members[0], ranks[0], counts[0] = head.members[0], head.ranks[0], head.counts[0]
            previous, first = {int(c) for c in start}, 1
        for k in range(first, rows):
            order = ranked.members[k, : ranked.counts[k]].tolist()  # columns by rank
            if not order:
                continue  # none eligible: no rebalance, the previous selection stays
            position = {c: i for i, c in enumerate(order)}  # 0-based rank
            if previous is None:
                chosen = order[:n]
            else:
                keep = [c for c in previous if position.get(c, exit_) < exit_]
                enter = [c for c in order[:entry] if c not in previous]
                chosen = sorted(set(keep) | set(enter), key=position.__getitem__)[:n]
                if len(chosen) < n:
                    taken = set(chosen)
                    extra = [c for c in order if c not in taken][: n - len(chosen)]
                    chosen = sorted(chosen + extra, key=position.__getitem__)
            members[k, : len(chosen)] = chosen
            ranks[k, : len(chosen)] = [position[c] + 1 for c in chosen]
            counts[k] = len(chosen)
            previous = set(chosen)
        return Selection(members, ranks, counts)


def with_start_members(selection: Selection, keys0: FloatMatrix, members: IntArray) -> Selection:
    """Replace the first rebalance's selection by the given constituents, ranked."""
    ranks = rank_within_row(keys0, members)
    order = np.argsort(ranks, kind="stable")
    width = max(selection.members.shape[1], len(members))
    new_members = np.full((selection.members.shape[0], width), -1, dtype=np.int64)
    new_ranks = np.full_like(new_members, -1)
    new_members[:, : selection.members.shape[1]] = selection.members
    new_ranks[:, : selection.ranks.shape[1]] = selection.ranks
    new_members[0] = -1
    new_ranks[0] = -1
    new_members[0, : len(members)] = members[order]
    new_ranks[0, : len(members)] = ranks[order]
    counts = selection.counts.copy()
    counts[0] = len(members)
    return Selection(new_members, new_ranks, counts)


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
