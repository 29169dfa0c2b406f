"""Compositions stored as constituent spells, and what follows from them.

A spell ``(symbol, valid_from, valid_to)`` says the symbol is in the composition
in force after the close of every trading day from ``valid_from`` through
``valid_to`` (``None``: still in). Any day's constituent set, and every
composition change, is derived from spells alone.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from index_builder.engine.kernel import Spell


@dataclass(frozen=True)
class Change:
    """Constituents that entered and exited at one rebalance (each sorted by symbol)."""

    date: dt.date
    entered: tuple[str, ...]
    exited: tuple[str, ...]


def members_on(spells: Iterable[Spell], day: dt.date) -> list[str]:
    """Symbols in force after the close of ``day``, sorted."""
    return sorted(
        s.symbol
        for s in spells
        if s.valid_from <= day and (s.valid_to is None or s.valid_to >= day)
    )


def changes_from_spells(
    spells: Iterable[Spell],
    trading_days: Sequence[dt.date],
    *,
    base_date: dt.date,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> list[Change]:
    """Composition changes dated by rebalance, within ``[start, end]``.

    A spell that starts after the base date is an entry on ``valid_from``; a spell
    that ends is an exit on the next trading day after ``valid_to`` (the rebalance
    that removed it). The base date's formation is not a change.
    """
    entered: dict[dt.date, list[str]] = defaultdict(list)
    exited: dict[dt.date, list[str]] = defaultdict(list)
    for spell in spells:
        if spell.valid_from > base_date:
            entered[spell.valid_from].append(spell.symbol)
        if spell.valid_to is not None:
            i = bisect_right(trading_days, spell.valid_to)
            if i < len(trading_days):
                exited[trading_days[i]].append(spell.symbol)
    dates = sorted(set(entered) | set(exited))
    return [
        Change(d, tuple(sorted(entered.get(d, ()))), tuple(sorted(exited.get(d, ()))))
        for d in dates
        if (start is None or d >= start) and (end is None or d <= end)
    ]


def splice(
    stored: Iterable[Spell], computed: Iterable[Spell], cut: dt.date, kept_through: dt.date
) -> list[Spell]:
    """The spells of a build that keeps the stored days through ``kept_through`` and
    writes from ``cut`` (the next trading day) on.

    ``stored``: the stored spells still in force after the close of ``kept_through``
    (the ones the store replaces); ``computed``: the new computation's spells, which
    may also cover days before ``cut``. Membership up to ``kept_through`` is the
    stored one, never the recomputed one (published compositions never change);
    from ``cut`` on it is the computed one. A symbol held on both sides of the cut
    keeps one continuous spell.
    """
    spliced: list[Spell] = []
    held_at_cut: dict[str, dt.date] = {}  # stored spells reaching kept_through
    for spell in stored:
        if spell.valid_from <= kept_through:
            held_at_cut[spell.symbol] = spell.valid_from
    for spell in computed:
        if spell.valid_to is not None and spell.valid_to < cut:
            continue
        start = max(spell.valid_from, cut)
        origin = held_at_cut.pop(spell.symbol, None) if start == cut else None
        spliced.append(Spell(spell.symbol, origin or start, spell.valid_to))
    spliced.extend(Spell(symbol, origin, kept_through) for symbol, origin in held_at_cut.items())
    return sorted(spliced, key=lambda s: (s.symbol, s.valid_from))
