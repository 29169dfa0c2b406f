"""The index computation (METHODOLOGY part 1), expressed once, set-based.

Given a :class:`~index_builder.engine.panel.MarketPanel` whose first row is the
base date (or, for an incremental build, the last rebalance before new data),
:func:`compute_index` returns levels, rebalances, constituents, target weights,
units and turnover. There is no per-day loop: selection is a batched top-k over
all rebalance dates, and levels follow from the growth of each holding period::

    G(t) = sum_i w_i(r) * P_i(t) / P_i(r)      r = last rebalance before t
    L(t) = L(r) * G(t)                          (= sum_i q_i * P_i(t), q_i = L(r) w_i / P_i(r))

so levels at rebalance dates are a cumulative product and every other day is
one multiplication. Prices of halted or delisted constituents are carried
forward (zero return) until the next rebalance.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from index_builder.calendar import SessionCalendar
from index_builder.engine.companies import CompanyKeys, company_keys
from index_builder.engine.definitions import IndexDefinition, Universe
from index_builder.engine.panel import MarketPanel, SecurityMaster, forward_fill
from index_builder.engine.schedules import SCHEDULES
from index_builder.engine.selection import NOT_ELIGIBLE, Selection, selection_rule
from index_builder.engine.variants import VARIANTS, variant_prices
from index_builder.engine.weighting import WEIGHTINGS
from index_builder.errors import BuildError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class StartState:
    """Where an incremental computation resumes: a rebalance already computed.

    The panel's first row is that rebalance's reference date; its constituents are
    taken from the stored composition (not re-selected) and its level, at the
    effective date ``effective_row`` rows later, from the stored levels. Rows before
    the effective date get no level (they are already stored).
    """

    level: float  # the headline variant's level where that selection took effect
    members: IntArray  # panel columns of that selection's constituents
    variant_levels: dict[str, float] | None = None  # every variant's level there
    effective_row: int = 0  # panel row where that selection took effect (its lag)


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
    """Everything one computation produced (arrays over the panel's rows)."""

    panel: MarketPanel
    level: FloatArray
    daily_return: FloatArray
    is_rebalance: NDArray[np.bool_]
    turnover: FloatArray  # NaN on days that are not rebalances
    n_constituents: IntArray
    rebalance_rows: IntArray  # effective rows: where each selection takes effect
    reference_rows: IntArray  # where each of those selections was made
    selection: Selection
    weights: FloatArray  # (R, K) target weights at each rebalance
    units: FloatArray  # (R, K) notional units fixed until the next rebalance
    _price_filled: FloatArray = field(repr=False)  # (T, M) headline return prices X
    _real_price: FloatArray = field(repr=False)  # (T, M) part 1 prices P, carried
    _column_slot: IntArray = field(repr=False)  # panel column -> column of _price_filled
    warnings: list[str] = field(default_factory=list)
    variant_levels: dict[str, FloatArray] = field(default_factory=dict)  # level per variant
    first_row: int = 0  # rows before it carry no level (a resumed selection's lag)
    pending: list[PendingSelection] = field(default_factory=list)

    @property
    def days(self) -> NDArray[np.datetime64]:
        """Trading days, one per row."""
        return self.panel.days

    def period_of(self, row: int) -> int:
        """Index of the last rebalance on or before ``row``."""
        return int(np.searchsorted(self.rebalance_rows, row, side="right") - 1)

    def snapshot(self, row: int) -> Snapshot:
        """Composition in force after the close of ``row`` (METHODOLOGY "Outputs")."""
        k = self.period_of(row)
        present = self.selection.members[k] >= 0
        cols = self.selection.members[k][present]
        slots = self._column_slot[cols]
        first = int(self.rebalance_rows[k])
        reference = int(self.reference_rows[k])
        # the headline return price, expressed in the real price of the rebalance:
        # price(t) = P(r) * X(t) / X(r), so units are L(r) * w / P(r) as in part 1
        anchor = self._real_price[first, slots] / self._price_filled[first, slots]
        prices = self._price_filled[row, slots] * anchor
        units = self.units[k][present]
        caps = forward_fill(self.panel.market_cap[reference : row + 1, cols])[-1]
        sec = self.panel.securities
        return Snapshot(
            day=self.days[row],
            columns=cols,
            symbols=sec.symbols[cols],
            sectors=sec.sectors[cols],
            names=sec.names[cols],
            ranks=self.selection.ranks[k][present],
            weights=units * prices / self.level[row],
            market_caps=caps,
            prices=prices,
            units=units,
        )

    def spells(self) -> list[Spell]:
        """Constituent spells over the computed window (adjacent rebalances merge)."""
        members = self.selection.members
        n_slots = len(self._column_slot_inverse)
        rebalances = len(self.rebalance_rows)
        held = np.zeros((rebalances + 1, n_slots), dtype=bool)
        rows, _ = np.nonzero(members >= 0)
        held[rows, self._column_slot[members[members >= 0]]] = True
        before = np.vstack([np.zeros((1, n_slots), dtype=bool), held[:-1]])
        start_k, start_slot = np.nonzero(held & ~before)
        after = held[1:]
        end_k, end_slot = np.nonzero(held[:-1] & ~after)
        # pair starts and ends per slot: both are sorted by (k, slot); sort by slot
        s_order = np.lexsort((start_k, start_slot))
        e_order = np.lexsort((end_k, end_slot))
        spells: list[Spell] = []
        symbols = self.panel.securities.symbols[self._column_slot_inverse]
        days = self.days
        for sk, ek, slot in zip(start_k[s_order], end_k[e_order], start_slot[s_order], strict=True):
            last_row = int(self.rebalance_rows[ek + 1]) - 1 if ek + 1 < rebalances else None
            spells.append(
                Spell(
                    symbol=str(symbols[slot]),
                    valid_from=_as_date(days[self.rebalance_rows[sk]]),
                    valid_to=None if last_row is None else _as_date(days[last_row]),
                )
            )
        return spells

    @property
    def _column_slot_inverse(self) -> IntArray:
        return np.flatnonzero(self._column_slot >= 0)


def _as_date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))


def universe_columns(universe: Universe, securities: SecurityMaster) -> NDArray[np.bool_]:
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
    ``candidates`` is ascending, so ties still break by symbol.
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
    warnings: list[str] = []
    empty = selection.counts == 0
    if empty.any():
        # None eligible: an error for that date, reported; the composition in
        # force carries on (no rebalance happens that day).
        for r in rows[empty]:
            warnings.append(f"{_as_date(panel.days[r])}: no eligible security; rebalance skipped")
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
    weights = WEIGHTINGS.get(definition.weighting).weights(caps, present, definition)
    if start is None:
        base_levels = dict.fromkeys(VARIANTS, definition.base_value)
    else:
        base_levels = dict.fromkeys(VARIANTS, start.level)
        base_levels.update(start.variant_levels or {})
        base_levels[definition.return_type] = start.level
    in_panel = Selection(
        np.where(present, candidates[np.maximum(selection.members, 0)], -1),
        selection.ranks,
        selection.counts,
    )
    effective = _effective_rows(rows, definition.effective_lag, start)
    live = effective < n_days  # a prefix: later selections are announced, not in force
    pending = _pending(
        panel, rows[~live], effective[~live] - (n_days - 1), in_panel, weights, ~live
    )
    computation = _levels(
        panel,
        rows[live],
        effective[live],
        Selection(in_panel.members[live], in_panel.ranks[live], in_panel.counts[live]),
        weights[live],
        base_levels,
        warnings,
        definition,
    )
    computation.pending = pending
    return computation


def _effective_rows(rows: IntArray, lag: int, start: StartState | None) -> IntArray:
    """Row where each selection takes effect: ``lag`` trading days after its reference
    row; the base date's at once, a resumed selection's where it did."""
    effective = rows + lag
    effective[0] = 0 if start is None else start.effective_row
    return effective


def _pending(
    panel: MarketPanel,
    rows: IntArray,
    sessions_ahead: IntArray,
    selection: Selection,
    weights: FloatArray,
    mask: NDArray[np.bool_],
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


def _levels(
    panel: MarketPanel,
    reference_rows: IntArray,
    rows: IntArray,
    selection: Selection,
    weights: FloatArray,
    base_levels: dict[str, float],
    warnings: list[str],
    definition: IndexDefinition,
) -> IndexComputation:
    """Levels, units and turnover from selections taking effect at ``rows``.

    Rows before the first effective row carry no level (NaN): a resumed
    computation's lag, already stored.
    """
    n_days = len(panel.days)
    first = int(rows[0])
    members = selection.members
    present = members >= 0
    # return prices of every security that is ever a constituent, per variant
    used = np.unique(members[present])
    slot_of = np.full(len(panel.securities), -1, dtype=np.int64)
    slot_of[used] = np.arange(len(used))
    prices = variant_prices(panel, used, definition.tax)
    # the money price compositions are quoted in: close for securities with dividend or
    # split data (their return prices compound from close), else the part 1 price P
    acts = panel.securities.actions_mask()[used][None, :]
    real = forward_fill(panel.price[:, used])
    if acts.any():
        assert panel.close is not None
        real = np.where(acts, forward_fill(panel.close[:, used]), real)
    slots = np.where(present, slot_of[np.maximum(members, 0)], 0)
    local = rows - first  # the level computation starts where the first selection is in force
    variant_levels = {
        v: _pad(_variant_level(local, slots, present, weights, x[first:], base_levels[v])[0], first)
        for v, x in prices.items()
    }
    headline = prices[definition.return_type]
    level, level_at_rebalance, growth, ref_price = _variant_level(
        local, slots, present, weights, headline[first:], base_levels[definition.return_type]
    )
    level = _pad(level, first)
    daily_return = np.zeros(n_days)
    daily_return[1:] = level[1:] / level[:-1] - 1.0
    daily_return[: first + 1] = 0.0
    real_ref = np.where(present, real[rows[:, None], slots], 1.0)  # P_i(r)
    units = np.where(present, level_at_rebalance[:, None] * weights / real_ref, 0.0)

    turnover = np.full(n_days, np.nan)
    turnover[rows] = _turnover(local, slots, present, weights, ref_price, headline[first:], growth)
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
        _price_filled=headline,
        _real_price=real,
        _column_slot=slot_of,
        warnings=warnings,
        variant_levels=variant_levels,
        first_row=first,
    )


def _pad(values: FloatArray, first: int) -> FloatArray:
    """``values`` over rows ``first..``, preceded by NaN for the rows before."""
    if first == 0:
        return values
    return np.concatenate([np.full(first, np.nan), values])


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


def _variant_level(
    rows: IntArray,
    slots: IntArray,
    present: NDArray[np.bool_],
    weights: FloatArray,
    filled: FloatArray,
    base_level: float,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(level, level at each rebalance, growth G(t) for t >= 1, X_i(r)) of one variant;
    ``rows`` are the rows of ``filled`` where selections take effect (``rows[0] == 0``)."""
    n_days = filled.shape[0]
    ref_price = np.where(present, filled[rows[:, None], slots], 1.0)  # X_i(r)
    # growth G(t) of the holding period that ends at t (t >= 1)
    t = np.arange(1, n_days)
    prev = np.searchsorted(rows, t, side="left") - 1  # last rebalance before t
    ratio = filled[t[:, None], slots[prev]] / ref_price[prev]
    growth = np.where(present[prev], weights[prev] * ratio, 0.0).sum(axis=1)
    # L(r_k) = L(r_k-1) * G(r_k), multiplied in this order (cumprod is sequential), so
    # resuming at any stored rebalance level reproduces the later levels bit for bit.
    level_at_rebalance = np.cumprod(np.concatenate([[base_level], growth[rows[1:] - 1]]))
    level = np.empty(n_days)
    level[0] = base_level
    level[1:] = level_at_rebalance[prev] * growth
    return level, level_at_rebalance, growth, ref_price


def _turnover(
    rows: IntArray,
    slots: IntArray,
    present: NDArray[np.bool_],
    weights: FloatArray,
    ref_price: FloatArray,
    filled: FloatArray,
    growth: FloatArray,
) -> FloatArray:
    """One-way turnover at each rebalance: half the sum of |target - drifted| weights.

    The first rebalance (base date or resume point) is 0: forming the index is
    not turnover.
    """
    n_rebalances = slots.shape[0]
    out = np.zeros(n_rebalances)
    if n_rebalances < 2:
        return out
    k = np.arange(1, n_rebalances)
    old_slots, old_present = slots[:-1], present[:-1]
    price_now = filled[rows[1:, None], old_slots]
    drifted = np.where(
        old_present, weights[:-1] * price_now / ref_price[:-1] / growth[rows[1:] - 1, None], 0.0
    )
    n_slots = int(slots.max()) + 1
    key_old = (k[:, None] * n_slots + old_slots)[old_present]
    key_new = (k[:, None] * n_slots + slots[1:])[present[1:]]
    keys = np.concatenate([key_old, key_new])
    values = np.concatenate([-drifted[old_present], weights[1:][present[1:]]])
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    net = np.bincount(inverse, weights=values, minlength=len(unique_keys))
    per_rebalance = np.bincount(unique_keys // n_slots, weights=np.abs(net), minlength=n_rebalances)
    out[1:] = 0.5 * per_rebalance[1:]
    return out
