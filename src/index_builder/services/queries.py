"""Reading built indices: performance, composition and composition changes.

Every read validates its window the same way for the CLI and the API: unknown
index, end before start, a window before the base date and a window with no
built data are errors with a one-line message.

Every read takes ``as_of``: it then reads the results of the build as of that
moment (``index-builder build --as-of``), never the current ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from index_builder.calendar import SessionCalendar
from index_builder.engine.analytics import Summary, summarize
from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.kernel import Snapshot, compute_index
from index_builder.engine.spells import Change, changes_from_spells
from index_builder.engine.variants import VARIANTS
from index_builder.errors import InvalidInputError, NoDataError
from index_builder.point_in_time import build_command, check_as_of, format_as_of, result_key
from index_builder.services.builds import IndexBuilder, resume_state
from index_builder.storage.base import BuildState, Storage

PERFORMANCE_COLUMNS = ["date", "level", "daily_return", "cumulative_return"]
COMPOSITION_COLUMNS = ["date", "symbol", "rank", "weight", "market_cap", "price", "units", "sector"]
CHANGES_COLUMNS = ["date", "entered", "exited"]
PROFORMA_COLUMNS = ["rank", "symbol", "weight", "current_weight", "market_cap", "sector"]


@dataclass(frozen=True)
class Window:
    """A validated, built window of one index."""

    definition: IndexDefinition
    state: BuildState
    start: dt.date
    end: dt.date

    @property
    def as_of(self) -> dt.datetime | None:
        """The as-of moment of the build read (None: the current results)."""
        return self.state.as_of

    @property
    def key(self) -> str:
        """The result key of the build read."""
        return self.state.index_id


@dataclass(frozen=True)
class Performance:
    """Levels and returns over a window, with summary statistics."""

    window: Window
    rows: list[dict[str, Any]]
    summary: Summary
    return_type: str = "total"


@dataclass(frozen=True)
class Composition:
    """The composition in force after the close of ``effective_date``."""

    index_id: str
    requested_date: dt.date
    effective_date: dt.date
    snapshot: Snapshot

    def rows(self) -> list[dict[str, Any]]:
        """One dict per constituent, in rank order, with methodology column names."""
        s = self.snapshot
        return [
            {
                "date": self.effective_date,
                "symbol": str(s.symbols[i]),
                "rank": int(s.ranks[i]),
                "weight": float(s.weights[i]),
                "market_cap": float(s.market_caps[i]),
                "price": float(s.prices[i]),
                "units": float(s.units[i]),
                "sector": s.sectors[i],
                "name": s.names[i],
            }
            for i in range(len(s.symbols))
        ]


@dataclass(frozen=True)
class Announcement:
    """The next composition, announced but not yet in force (pro-forma).

    ``constituents`` are in rank order with their target weight and the weight
    they have in the composition in force after ``last_close`` (0 when entering);
    ``expected_turnover`` is half the sum of the absolute differences over both
    sets (METHODOLOGY part 2).
    """

    index_id: str
    reference_date: dt.date
    effective_date: dt.date | None
    sessions_ahead: int
    last_close: dt.date
    constituents: list[dict[str, Any]]
    entered: list[str]
    exited: list[str]
    expected_turnover: float
    pending_selections: int  # selections made, not yet in force, this one included


class IndexReader:
    """Read-side use cases over one store."""

    def __init__(self, store: Storage, calendar: SessionCalendar) -> None:
        self.store = store
        self.calendar = calendar
        self._builder = IndexBuilder(store, calendar)

    def window(
        self,
        index_id: str,
        start: dt.date | None,
        end: dt.date | None,
        as_of: dt.datetime | None = None,
    ) -> Window:
        """Validate ``[start, end]`` against the index's base date and built range."""
        definition = self._builder.definition(index_id)
        state = self._state(index_id, as_of)
        if start is not None and end is not None and end < start:
            raise InvalidInputError(
                f"end date {end} is before start date {start}", field="end_date"
            )
        built = f"{state.base_date}..{state.built_through}"
        if start is not None and start < state.base_date:
            raise InvalidInputError(
                f"start date {start} is before the base date {state.base_date} of {index_id} "
                f"(built range {built})",
                field="start_date",
            )
        if end is not None and end < state.base_date:
            raise InvalidInputError(
                f"end date {end} is before the base date {state.base_date} of {index_id} "
                f"(built range {built})",
                field="end_date",
            )
        if end is not None and end > state.built_through:
            raise InvalidInputError(
                f"end date {end} is after the last built day {state.built_through} of "
                f"{index_id} (built range {built}); omit it to read through the last built day",
                field="end_date",
            )
        lo = start or state.base_date
        hi = end or state.built_through
        if lo > state.built_through:
            raise NoDataError(_nothing_after(index_id, state, lo))
        return Window(definition, state, lo, min(hi, state.built_through))

    def performance(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        return_type: str | None = None,
        as_of: dt.datetime | None = None,
    ) -> Performance:
        """Levels, daily and cumulative returns and the summary over a window.

        ``return_type`` (price | total | net_total) picks a return variant; by
        default the definition's headline. Rows also carry every variant's level.
        """
        window = self.window(index_id, start, end, as_of)
        key = window.key
        variant = return_type or window.definition.return_type
        if variant not in VARIANTS:
            raise InvalidInputError(
                f"return_type must be one of {', '.join(VARIANTS)}, got {variant!r}",
                field="return_type",
            )
        table = self.store.read_levels(key, window.start, window.end)
        if table.num_rows == 0:
            raise NoDataError(
                f"no trading day of {index_id} in {window.start}..{window.end}; built range is "
                f"{window.state.base_date}..{window.state.built_through}"
            )
        dates = table.column("date").to_pylist()
        headline = variant == window.definition.return_type
        levels = table.column("level" if headline else f"level_{variant}").to_numpy()
        if headline:
            daily = table.column("daily_return").to_numpy()
        else:  # the variant's own daily returns; the window's first needs the day before
            before = self.store.last_built_day(key, window.start - dt.timedelta(days=1))
            previous = self.store.variant_levels_on(key, before) if before else None
            first = levels[0] / previous[variant] - 1.0 if previous else 0.0
            daily = np.concatenate([[first], levels[1:] / levels[:-1] - 1.0])
        cumulative = levels / levels[0] - 1.0
        variants = {v: table.column(f"level_{v}").to_numpy() for v in VARIANTS}
        rows = [
            {
                "date": d,
                "level": float(levels[i]),
                "daily_return": float(daily[i]),
                "cumulative_return": float(cumulative[i]),
                **{f"level_{v}": float(variants[v][i]) for v in VARIANTS},
            }
            for i, d in enumerate(dates)
        ]
        summary = summarize(
            levels,
            table.column("turnover").to_numpy(zero_copy_only=False).astype(float),
            table.column("is_rebalance").to_numpy(zero_copy_only=False).astype(bool),
            first_is_base=dates[0] == window.state.base_date,
        )
        return Performance(window, rows, summary, variant)

    def composition(
        self, index_id: str, day: dt.date | None = None, as_of: dt.datetime | None = None
    ) -> Composition:
        """Constituents after the close of ``day`` (default: the last built day).

        A day that is not a trading day resolves to the previous trading day
        (``effective_date``); a day after the built range is :class:`NoDataError`.
        """
        definition = self._builder.definition(index_id)  # unknown index first
        state = self._state(index_id, as_of)
        requested = day or state.built_through
        if requested < state.base_date:
            raise InvalidInputError(
                f"date {requested} is before the base date {state.base_date} of {index_id}",
                field="date",
            )
        following = self.calendar.next_sessions(np.array([state.built_through], "datetime64[D]"))
        if not np.isnat(following[0]) and np.datetime64(requested, "D") >= following[0]:
            raise NoDataError(_nothing_after(index_id, state, requested))
        effective = self.store.last_built_day(state.index_id, requested)
        assert effective is not None  # requested >= base date, which is built
        (found,) = self._reconstruct(Window(definition, state, effective, effective))
        return Composition(index_id, requested, effective, found.snapshot)

    def compositions(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        as_of: dt.datetime | None = None,
    ) -> Iterator[Composition]:
        """The composition after the close of every trading day in a window, in order.

        Reconstructed from the stored results with one engine run: constituents of
        the last rebalance on or before ``start`` from the spells, its level from the
        levels, then the same engine over [that rebalance, end] (the rebalances in
        between select exactly what the build selected). As of a moment, the market
        data are those known then, as the build used them.
        """
        return self._reconstruct(self.window(index_id, start, end, as_of))

    def _reconstruct(self, window: Window) -> Iterator[Composition]:
        """Compositions of every trading day of an already validated window.

        They come from the published build only: its stored constituents and levels,
        and the market data as that build saw them (as of its moment, or as written
        by its last ingestion run when newer data has arrived since), so a read never
        mixes data that waits for the next build into a published composition.
        """
        index_id, key = window.definition.id, window.key
        first = self.store.last_rebalance(key, window.start, inclusive=True)
        if first is None:  # pragma: no cover - the base date is always a rebalance
            raise NoDataError(f"{index_id}: no rebalance on or before {window.start}")
        reference = self.store.reference_date_on(key, first) or first
        definition = window.definition
        run = self._data_run(window.state, window.end)
        panel = self.store.load_panel(reference, window.end, window.as_of, run=run)
        state = resume_state(self.store, key, first, panel)
        computation = compute_index(panel, definition, self.calendar, start=state)
        lo = np.datetime64(window.start, "D")
        for row, day in enumerate(panel.days):
            if day >= lo and row >= computation.first_row:
                effective = dt.date.fromisoformat(str(day))
                yield Composition(index_id, effective, effective, computation.snapshot(row))

    def _data_run(self, state: BuildState, end: dt.date) -> int | None:
        """The ingestion run whose data a read of a current build must use: None (the
        current data) unless data on or before ``end`` changed after the build."""
        if state.as_of is not None:
            return None  # an as-of build's data are those known at its moment
        changed = self.store.first_changed_date(state.data_run_id)
        return None if changed is None or changed > end else state.data_run_id

    def announcement(self, index_id: str) -> Announcement:
        """The next composition to take effect (an index with an ``effective_lag``)."""
        definition = self._builder.definition(index_id)
        state = self._state(index_id, None)
        announced = self.store.announcements(index_id)
        if not announced:
            lag = definition.effective_lag
            why = (
                "with effective_lag 0 every selection takes effect on its reference date"
                if lag == 0
                else f"the last selection is in force; the next one is made at the next "
                f"{definition.rebalance} rebalance and takes effect {lag} sessions later"
            )
            raise NoDataError(
                f"{index_id} has no announced composition after {state.built_through}: {why}"
            )
        # the latest selection made: the index once every announced change is in force
        latest = max(a.reference_date for a in announced)
        upcoming = [a for a in announced if a.reference_date == latest]
        current = self.composition(index_id, state.built_through).rows()
        in_force = {r["symbol"]: r["weight"] for r in current}
        target = {a.symbol: a.weight for a in upcoming}
        turnover = 0.5 * sum(
            abs(target.get(s, 0.0) - in_force.get(s, 0.0)) for s in sorted(target | in_force)
        )
        return Announcement(
            index_id=index_id,
            reference_date=latest,
            effective_date=upcoming[0].effective_date,
            sessions_ahead=upcoming[0].sessions_ahead,
            last_close=state.built_through,
            constituents=[
                {
                    "symbol": a.symbol,
                    "rank": a.rank,
                    "weight": a.weight,
                    "current_weight": in_force.get(a.symbol, 0.0),
                    "market_cap": a.market_cap,
                    "sector": a.sector,
                    "name": a.name,
                }
                for a in upcoming
            ],
            entered=sorted(target.keys() - in_force.keys()),
            exited=sorted(in_force.keys() - target.keys()),
            expected_turnover=turnover,
            pending_selections=len({a.reference_date for a in announced}),
        )

    def changes(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        as_of: dt.datetime | None = None,
    ) -> tuple[Window, list[Change]]:
        """Entered/exited constituents per rebalance within a window."""
        window = self.window(index_id, start, end, as_of)
        days = self.store.built_days(window.key)
        # an exit on the window's first day ends a spell on the trading day before
        i = int(
            np.searchsorted(np.array(days, dtype="datetime64[D]"), np.datetime64(window.start, "D"))
        )
        spells = self.store.spells_overlapping(window.key, days[max(i - 1, 0)], window.end)
        changes = changes_from_spells(
            spells, days, base_date=window.state.base_date, start=window.start, end=window.end
        )
        return window, changes

    def _state(self, index_id: str, as_of: dt.datetime | None) -> BuildState:
        """The build read: the current one, or the one as of ``as_of`` (not in the future)."""
        as_of = check_as_of(as_of)
        state = self.store.build_state(result_key(index_id, as_of))
        if state is None:
            if as_of is None:
                raise NoDataError(
                    f"{index_id} is not built yet: run '{build_command(index_id, None)}'"
                )
            raise NoDataError(
                f"{index_id} has no build as of {format_as_of(as_of)}: run "
                f"'{build_command(index_id, as_of)}'"
            )
        return state


def _nothing_after(index_id: str, state: BuildState, day: dt.date) -> str:
    """Why nothing is built on or after ``day``, and what to do about it."""
    if state.as_of is None:
        built = f"{index_id} is built"
        hint = f"ingest newer data and run '{build_command(index_id, None)}'"
    else:
        built = f"{index_id} as of {format_as_of(state.as_of)} is built"
        hint = (
            f"no later data was known then ('{build_command(index_id, state.as_of)}' builds "
            "through the last day known)"
        )
    return (
        f"{built} from {state.base_date} through {state.built_through}; "
        f"nothing on or after {day}: {hint}"
    )
