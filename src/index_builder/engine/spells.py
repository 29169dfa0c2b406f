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


def merge_resumed(
    stored: Iterable[Spell], computed: Iterable[Spell], resume: dt.date
) -> list[Spell]:
    """Join stored spells that reach ``resume`` with the resumed computation's spells.

    ``stored`` are the spells that were in force on or after ``resume`` before the
    incremental build; ``computed`` start at ``resume``. A symbol held on both
    sides of the resume point keeps one continuous spell.
    """
    started_before = {
        s.symbol: s.valid_from
        for s in stored
        if s.valid_from < resume and (s.valid_to is None or s.valid_to >= resume)
    }
    merged: list[Spell] = []
    for spell in computed:
        origin = started_before.get(spell.symbol) if spell.valid_from == resume else None
        merged.append(Spell(spell.symbol, origin, spell.valid_to) if origin else spell)
    return merged
