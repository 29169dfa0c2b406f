"""The index computation (METHODOLOGY), expressed once, set-based, and the same
whichever day it starts from.

:func:`compute_index` takes a :class:`~index_builder.engine.panel.MarketPanel`
whose first row is the base date (a full build) or the reference date of the
selection in force where a build resumes (:class:`StartState`), and returns
levels, rebalances, constituents, target weights, units and turnover:

1. the schedule's reference dates, the panel's first row always one of them;
2. the selection at every reference date at once (top N, buffer, companies);
3. target weights, each rebalance from its own row;
4. effective dates ``effective_lag`` trading days later; those past the panel
   are pending (announced, not in force);
5. levels, per return variant, from the growth of each holding period::

       G_i(t) = f_i(e+1) * ... * f_i(t)   growth of constituent i since its effective date e
       g(t)   = sum_i w_i(e) * G_i(t)     (= sum_i q_i X_i(t) / L(e))
       L(t)   = L(e) * g(t),  L(e_k) = L(e_k-1) * g(e_k)

Every product is taken day after day and every sum name after name in symbol
order (:mod:`index_builder.engine.ordered`), never in an order chosen by the
batch's shape. So a computation that resumes at a stored rebalance reproduces
the stored days bit for bit and continues with the very doubles a full build
computes: published history never moves (METHODOLOGY "Published history").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from index_builder.calendar import SessionCalendar
from index_builder.engine.companies import CompanyKeys, company_keys
from index_builder.engine.definitions import IndexDefinition, Universe
from index_builder.engine.ordered import ordered_sum, row_sums
from index_builder.engine.panel import MarketPanel, SecurityMaster, forward_fill
from index_builder.engine.schedules import SCHEDULES
from index_builder.engine.selection import NOT_ELIGIBLE, Selection, selection_rule
from index_builder.engine.variants import VARIANTS, growth_factors, real_prices
from index_builder.engine.weighting import WEIGHTINGS
from index_builder.errors import BuildError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

REBALANCE_SKIPPED = "rebalance_skipped"
GROUP_CAP_INFEASIBLE = "group_cap_infeasible"


@dataclass(frozen=True)
class StartState:
    """Where a computation resumes: a selection already in force.

    The panel's first row is that selection's reference date; its constituents are
    the stored ones (not selected again) and its levels, at the effective date
    ``effective_row`` rows later, the stored ones. Rows before the effective date
    get no level (they are already stored).
    """

    levels: Mapping[str, float]  # every variant's stored level where it took effect
    members: IntArray  # panel columns of its constituents
    effective_row: int = 0


@dataclass(frozen=True)
class BuildWarning:
    """Something a build reports without failing, dated by a reference date."""

    day: dt.date
    kind: str  # rebalance_skipped | group_cap_infeasible
    message: str

    def __str__(self) -> str:
        return f"{self.day}: {self.message}"


@dataclass(frozen=True)
class Snapshot:
    """The composition in force after the close of one day, in rank order."""

    day: np.datetime64
    columns: IntArray
    symbols: NDArray[np.object_]
    sectors: NDArray[np.object_]
    names: NDArray[np.object_]
    ranks: IntArray
    weights: FloatArray
    market_caps: FloatArray
    prices: FloatArray
    units: FloatArray


@dataclass(frozen=True)
class PendingSelection:
    """A selection whose effective date lies after the computed window (announced,
    not yet in force): constituents in rank order with their target weights."""

    reference_date: dt.date
    sessions_ahead: int  # exchange sessions after the window's last day until it takes effect
    columns: IntArray
    symbols: NDArray[np.object_]
    sectors: NDArray[np.object_]
    names: NDArray[np.object_]
    ranks: IntArray
    weights: FloatArray  # target weights
    market_caps: FloatArray  # each constituent's own, on the reference date


@dataclass(frozen=True)
class Spell:
    """A constituent's continuous membership: after the close of ``valid_from``
    through the close of ``valid_to`` (``None``: still in force)."""

    symbol: str
    valid_from: dt.date
    valid_to: dt.date | None


@dataclass
class IndexComputation:
    """Everything one computation produced (arrays over the panel's rows).

    Selections are in force from their effective row; ``selection``, ``weights``,
    ``units`` and ``real_prices`` have one row per selection in force, constituents
    in symbol (column) order, padding ``-1`` / 0.
    """

    panel: MarketPanel
    level: FloatArray  # headline level; NaN before ``first_row``
    daily_return: FloatArray
    is_rebalance: BoolArray
    turnover: FloatArray  # NaN on days that are not rebalances
    n_constituents: IntArray
    rebalance_rows: IntArray  # effective rows: where each selection takes effect
    reference_rows: IntArray  # where each of those selections was made
    selection: Selection
    weights: FloatArray  # (R, K) target weights
    units: FloatArray  # (R, K) notional units: L(e) * w / real price at e
    real_prices: FloatArray  # (R, K) the money price of each constituent at e
    growth: FloatArray  # (rows after first_row, K) headline G_i(t) of the period before t
    warnings: list[BuildWarning] = field(default_factory=list)
    variant_levels: dict[str, FloatArray] = field(default_factory=dict)
    first_row: int = 0  # rows before it carry no level (a resumed selection's lag)
    pending: list[PendingSelection] = field(default_factory=list)

    @property
    def days(self) -> NDArray[np.datetime64]:
        """Trading days, one per row."""
        return self.panel.days

    def period_of(self, row: int) -> int:
        """Index of the last selection in force on or before ``row``."""
        return int(np.searchsorted(self.rebalance_rows, row, side="right") - 1)

    def snapshot(self, row: int) -> Snapshot:
        """Composition in force after the close of ``row`` (METHODOLOGY "Outputs")."""
        k = self.period_of(row)
        present = self.selection.members[k] >= 0
        cols = self.selection.members[k][present]
        if row == int(self.rebalance_rows[k]):
            growth = np.ones(len(cols))
        else:  # the period in force during ``row``'s return is k
            growth = self.growth[row - self.first_row - 1][present]
        weighted = self.weights[k][present] * growth
        reference = int(self.reference_rows[k])
        caps = forward_fill(self.panel.market_cap[reference : row + 1, cols])[-1]
        order = np.argsort(self.selection.ranks[k][present], kind="stable")
        sec = self.panel.securities
        cols = cols[order]
        return Snapshot(
            day=self.days[row],
            columns=cols,
            symbols=sec.symbols[cols],
            sectors=sec.sectors[cols],
            names=sec.names[cols],
            ranks=self.selection.ranks[k][present][order],
            weights=(weighted / ordered_sum(weighted))[order],
            market_caps=caps[order],
            prices=(self.real_prices[k][present] * growth)[order],
            units=self.units[k][present][order],
        )

    def spells(self) -> list[Spell]:
        """Constituent spells over the computed window (adjacent rebalances merge)."""
        members = self.selection.members
        present = members >= 0
        used, slot_of_member = np.unique(members[present], return_inverse=True)
        rebalances = len(self.rebalance_rows)
        held = np.zeros((rebalances + 1, len(used)), dtype=bool)
        held[np.nonzero(present)[0], slot_of_member] = True
        before = np.vstack([np.zeros((1, len(used)), dtype=bool), held[:-1]])
        # (slot, rebalance) pairs where a spell starts and where one ends, both ordered
        # by slot then rebalance, so the n-th start and the n-th end pair up
        start_slot, start_k = np.nonzero((held & ~before).T)
        end_k = np.nonzero((held[:-1] & ~held[1:]).T)[1]
        symbols = self.panel.securities.symbols[used]
        days = self.days
        spells = []
        for slot, first_k, last_k in zip(start_slot, start_k, end_k, strict=True):
            last_row = int(self.rebalance_rows[last_k + 1]) - 1 if last_k + 1 < rebalances else None
            spells.append(
                Spell(
                    symbol=str(symbols[slot]),
                    valid_from=_as_date(days[self.rebalance_rows[first_k]]),
                    valid_to=None if last_row is None else _as_date(days[last_row]),
                )
            )
        return spells


def _as_date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))


def universe_columns(universe: Universe, securities: SecurityMaster) -> BoolArray:
    """Columns that pass the static universe filters (sectors, exchanges, types)."""
    mask = np.ones(len(securities), dtype=bool)
    for attribute, wanted in (
        ("sectors", universe.sectors),
        ("exchanges", universe.exchanges),
        ("types", universe.types),
    ):
        if wanted is not None:
            mask &= securities.matches(attribute, wanted)
    return mask


def eligibility_keys(
    panel: MarketPanel, rows: IntArray, definition: IndexDefinition
) -> tuple[FloatArray, IntArray]:
    """Ranking keys at ``rows`` over the securities that pass the static filters.

    Returns ``(keys, candidates)``: ``keys[k, j]`` is the market cap of panel column
    ``candidates[j]`` at rebalance ``k`` where eligible, ``NOT_ELIGIBLE`` elsewhere.
    ``candidates`` is ascending, so ties still break by symbol. ``min_price`` and
    ``min_market_cap`` are inclusive.
    """
    universe = definition.universe
    candidates = np.flatnonzero(universe_columns(universe, panel.securities)).astype(np.int64)
    keys = panel.market_cap[np.ix_(rows, candidates)]  # one copy, edited in place
    ineligible = np.isnan(keys)
    if universe.min_market_cap is not None:
        ineligible |= keys < universe.min_market_cap
    if universe.min_price is not None:
        if panel.close is None:
            raise ValueError("min_price needs a panel loaded with close prices")
        ineligible |= ~(panel.close[np.ix_(rows, candidates)] >= universe.min_price)
    keys[ineligible] = NOT_ELIGIBLE
    return keys, candidates


def compute_index(
    panel: MarketPanel,
    definition: IndexDefinition,
    calendar: SessionCalendar,
    *,
    start: StartState | None = None,
) -> IndexComputation:
    """Compute the index over the whole panel (row 0 = base date or resume point)."""
    n_days = len(panel.days)
    if n_days == 0:
        raise BuildError(f"{definition.id}: no trading days to compute")
    scheduled = SCHEDULES.get(definition.rebalance).mask(panel.days, calendar)
    scheduled[0] = True
    rows = np.flatnonzero(scheduled).astype(np.int64)
    keys, candidates = eligibility_keys(panel, rows, definition)
    positions = None
    if start is not None:
        positions = np.searchsorted(candidates, start.members)
        if np.any(positions >= len(candidates)) or np.any(
            candidates[np.minimum(positions, len(candidates) - 1)] != start.members
        ):
            raise BuildError(f"{definition.id}: stored constituents are outside the universe")
    companies = None
    if definition.rank_by == "company":
        companies = company_keys(keys, candidates, panel, rows)
        keys = companies.keys
        if positions is not None:
            positions = companies.company_of[positions]
    selection = selection_rule(definition).select(keys, definition, positions)
    if companies is not None:
        selection = _represented(selection, companies, start, candidates)
    if start is None and selection.counts[0] == 0:
        raise BuildError(
            f"{definition.id}: no eligible security on the base date "
            f"{_as_date(panel.days[0])}; check the universe filters and the data"
        )
    warnings: list[BuildWarning] = []
    empty = selection.counts == 0
    if empty.any():
        # None eligible: reported, and the composition in force carries on (no
        # rebalance happens that day).
        for r in rows[empty]:
            warnings.append(
                BuildWarning(
                    _as_date(panel.days[r]),
                    REBALANCE_SKIPPED,
                    "no eligible security; rebalance skipped",
                )
            )
        keep = ~empty
        rows = rows[keep]
        keys = keys[keep]
        selection = Selection(
            selection.members[keep],
            selection.ranks[keep],
            selection.counts[keep],
            None if selection.companies is None else selection.companies[keep],
        )
    present = selection.members >= 0
    key_columns = selection.members if selection.companies is None else selection.companies
    caps = np.where(present, np.take_along_axis(keys, np.maximum(key_columns, 0), 1), 0.0)
    del keys
    target = WEIGHTINGS.get(definition.weighting).weights(caps, present, definition)
    for row, why in sorted(target.infeasible.items()):
        warnings.append(BuildWarning(_as_date(panel.days[rows[row]]), GROUP_CAP_INFEASIBLE, why))
    if start is None:
        base_levels = dict.fromkeys(VARIANTS, definition.base_value)
    else:
        base_levels = {v: float(start.levels[v]) for v in VARIANTS}
    in_panel = Selection(
        np.where(present, candidates[np.maximum(selection.members, 0)], -1),
        selection.ranks,
        selection.counts,
    )
    effective = _effective_rows(rows, definition.effective_lag, start)
    live = effective < n_days  # a prefix: later selections are announced, not in force
    pending = _pending(
        panel, rows[~live], effective[~live] - (n_days - 1), in_panel, target.values, ~live
    )
    computation = _levels(
        panel,
        rows[live],
        effective[live],
        Selection(in_panel.members[live], in_panel.ranks[live], in_panel.counts[live]),
        target.values[live],
        base_levels,
        definition,
    )
    computation.warnings = sorted(warnings, key=lambda w: w.day)
    computation.pending = pending
    return computation


def _effective_rows(rows: IntArray, lag: int, start: StartState | None) -> IntArray:
    """Row where each selection takes effect: ``lag`` trading days (panel rows) after
    its reference row; the base date's at once, a resumed selection's where it did."""
    effective = rows + lag
    effective[0] = 0 if start is None else start.effective_row
    return effective


def _pending(
    panel: MarketPanel,
    rows: IntArray,
    sessions_ahead: IntArray,
    selection: Selection,
    weights: FloatArray,
    mask: BoolArray,
) -> list[PendingSelection]:
    """The selections made but not yet in force at the end of the panel; market caps
    are each constituent's own on the reference date (as compositions show them)."""
    out = []
    sec = panel.securities
    for row, ahead, members, ranks, w in zip(
        rows,
        sessions_ahead,
        selection.members[mask],
        selection.ranks[mask],
        weights[mask],
        strict=True,
    ):
        present = members >= 0
        cols = members[present]
        out.append(
            PendingSelection(
                reference_date=_as_date(panel.days[row]),
                sessions_ahead=int(ahead),
                columns=cols,
                symbols=sec.symbols[cols],
                sectors=sec.sectors[cols],
                names=sec.names[cols],
                ranks=ranks[present],
                weights=w[present],
                market_caps=panel.market_cap[row, cols],
            )
        )
    return out


def _by_column(selection: Selection, weights: FloatArray) -> tuple[Selection, FloatArray]:
    """Constituents of each selection in column (symbol) order, padding last: the
    order every sum over constituents follows."""
    members = selection.members
    order = np.argsort(np.where(members >= 0, members, np.iinfo(np.int64).max), axis=1)
    return (
        Selection(
            np.take_along_axis(members, order, 1),
            np.take_along_axis(selection.ranks, order, 1),
            selection.counts,
        ),
        np.take_along_axis(weights, order, 1),
    )


def _levels(
    panel: MarketPanel,
    reference_rows: IntArray,
    rows: IntArray,
    selection: Selection,
    weights: FloatArray,
    base_levels: dict[str, float],
    definition: IndexDefinition,
) -> IndexComputation:
    """Levels, units and turnover from selections taking effect at ``rows``.

    Rows before the first effective row carry no level (NaN): a resumed
    computation's lag, already stored.
    """
    n_days = len(panel.days)
    first = int(rows[0])
    selection, weights = _by_column(selection, weights)
    members = selection.members
    present = members >= 0
    used = np.unique(members[present])  # every security that is ever a constituent
    slot_of = np.full(len(panel.securities), -1, dtype=np.int64)
    slot_of[used] = np.arange(len(used))
    slots = np.where(present, slot_of[np.maximum(members, 0)], 0)
    factors = growth_factors(panel, used, definition.tax)
    periods = _Periods(rows, n_days)

    variant_levels: dict[str, FloatArray] = {}
    headline_growth = np.ones((0, members.shape[1]))
    headline_g = np.zeros(0)
    for variant, f in factors.items():
        growth = periods.growth(f, slots, present)
        g = row_sums(weights[periods.prev] * growth)
        variant_levels[variant] = periods.levels(g, base_levels[variant])
        if variant == definition.return_type:
            headline_growth, headline_g = growth, g
    level = variant_levels[definition.return_type]
    daily_return = np.zeros(n_days)
    daily_return[first + 1 :] = level[first + 1 :] / level[first:-1] - 1.0
    level_at_rebalance = level[rows]

    real = real_prices(panel, used)
    real_ref = np.where(present, real[rows[:, None], slots], 1.0)
    units = np.where(present, level_at_rebalance[:, None] * weights / real_ref, 0.0)
    turnover = np.full(n_days, np.nan)
    turnover[rows] = _turnover(periods, slots, present, weights, headline_growth, headline_g)
    is_rebalance = np.zeros(n_days, dtype=bool)
    is_rebalance[rows] = True
    current = np.maximum(np.searchsorted(rows, np.arange(n_days), side="right") - 1, 0)
    return IndexComputation(
        panel=panel,
        level=level,
        daily_return=daily_return,
        is_rebalance=is_rebalance,
        turnover=turnover,
        n_constituents=selection.counts[current],
        rebalance_rows=rows,
        reference_rows=reference_rows,
        selection=selection,
        weights=weights,
        units=units,
        real_prices=np.where(present, real_ref, 0.0),
        growth=headline_growth,
        variant_levels=variant_levels,
        first_row=first,
    )


class _Periods:
    """The holding periods of a computation: the days after the first effective row,
    each with the selection in force during its return (the last one that took
    effect before it) and its position in that period."""

    def __init__(self, rows: IntArray, n_days: int) -> None:
        self.rows = rows
        self.n_days = n_days
        self.first = int(rows[0])
        self.days = np.arange(self.first + 1, n_days)  # days with a return
        self.prev = np.searchsorted(rows, self.days, side="left") - 1
        self.offset = self.days - rows[self.prev]  # 1 on the day after an effective date

    def growth(self, factors: FloatArray, slots: IntArray, present: BoolArray) -> FloatArray:
        """G_i(t) for every day with a return: the product of the constituent's factors
        since its effective date, multiplied one day at a time (1 for padding)."""
        growth = np.ones((len(self.days), slots.shape[1]))
        if len(self.days) == 0:
            return growth
        for step in range(1, int(self.offset.max()) + 1):
            at = np.flatnonzero(self.offset == step)
            k = self.prev[at]
            today = np.where(present[k], factors[self.days[at][:, None], slots[k]], 1.0)
            growth[at] = today if step == 1 else growth[at - 1] * today
        return growth

    def levels(self, g: FloatArray, base_level: float) -> FloatArray:
        """L(t) = L(e) * g(t), with L at effective rows a cumulative product (multiplied
        in order, so resuming at a stored rebalance level reproduces later levels)."""
        level = np.full(self.n_days, np.nan)
        level[self.first] = base_level
        if len(self.days) == 0:
            return level
        position = self.rows[1:] - self.first - 1  # effective rows among the days
        at_rebalance = np.cumprod(np.concatenate([[base_level], g[position]]))
        level[self.days] = at_rebalance[self.prev] * g
        return level


def _turnover(
    periods: _Periods,
    slots: IntArray,
    present: BoolArray,
    weights: FloatArray,
    growth: FloatArray,
    g: FloatArray,
) -> FloatArray:
    """One-way turnover at each rebalance: half the sum over old and new constituents
    of |target weight - drifted weight| (summed in symbol order). The first
    rebalance (base date or resume point) is 0: forming the index is not turnover."""
    n_rebalances = len(periods.rows)
    out = np.zeros(n_rebalances)
    if n_rebalances < 2:
        return out
    position = periods.rows[1:] - periods.first - 1
    drifted = weights[:-1] * growth[position] / g[position][:, None]
    n_slots = int(slots.max()) + 1
    before = np.zeros((n_rebalances - 1, n_slots))
    after = np.zeros((n_rebalances - 1, n_slots))
    k = np.arange(n_rebalances - 1)[:, None]
    old, new = present[:-1], present[1:]
    before[np.broadcast_to(k, old.shape)[old], slots[:-1][old]] = drifted[old]
    after[np.broadcast_to(k, new.shape)[new], slots[1:][new]] = weights[1:][new]
    out[1:] = 0.5 * row_sums(np.abs(after - before))
    return out


def _represented(
    selection: Selection,
    companies: CompanyKeys,
    start: StartState | None,
    candidates: IntArray,
) -> Selection:
    """Company selection -> the representing classes (candidate positions).

    The stored constituents of a resumed rebalance keep their own class.
    """
    chosen = selection.members
    rows = np.arange(chosen.shape[0])[:, None]
    members = np.where(chosen >= 0, companies.representative[rows, np.maximum(chosen, 0)], -1)
    if start is not None:
        positions = np.searchsorted(candidates, start.members)
        by_company = dict(
            zip(companies.company_of[positions].tolist(), positions.tolist(), strict=True)
        )
        members[0] = [by_company.get(int(c), -1) if c >= 0 else -1 for c in chosen[0]]
    return Selection(members, selection.ranks, selection.counts, companies=chosen)
