"""Reading built indices: performance, composition and composition changes.

Every read validates its window the same way for the CLI and the API: unknown
index, end before start, a window before the base date and a window with no
built data are errors with a one-line message.

Every read takes ``as_of``: it then reads the results of the build as of that
moment (``index-builder build --as-of``), never the current ones; or
``as_of_version``: the results of the build as of that version
(``index-builder build --as-of-version``). Not both.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from index_builder.calendar import SessionCalendar
from index_builder.engine.analytics import Summary, summarize
from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.kernel import Snapshot, compute_index
from index_builder.engine.spells import Change, changes_from_spells
from index_builder.engine.variants import VARIANTS
from index_builder.errors import InvalidInputError, NoDataError
from index_builder.point_in_time import (
    build_command,
    check_as_of,
    check_point,
    format_as_of,
    result_key,
)
from index_builder.services.builds import IndexBuilder, resume_state, version_run
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
    def as_of_version(self) -> int | None:
        """The version whose data the build read used (None: not a build as of a version)."""
        return self.state.as_of_version

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
        day = self.effective_date
        return [  # column lists, not numpy scalars: the same values, a quarter of the time
            {
                "date": day,
                "symbol": str(symbol),
                "rank": rank,
                "weight": weight,
                "market_cap": cap,
                "price": price,
                "units": units,
                "sector": sector,
                "name": name,
            }
            for symbol, rank, weight, cap, price, units, sector, name in zip(
                s.symbols.tolist(),
                s.ranks.tolist(),
                s.weights.tolist(),
                s.market_caps.tolist(),
                s.prices.tolist(),
                s.units.tolist(),
                s.sectors.tolist(),
                s.names.tolist(),
                strict=True,
            )
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


V = TypeVar("V")

_KNOWN: ContextVar[tuple[str, int] | None] = ContextVar("index_builder_known_build", default=None)
_MEMORY_ONLY: ContextVar[bool] = ContextVar("index_builder_memory_only", default=False)


class NotInMemory(Exception):
    """A read asked to answer from memory only (:func:`known_build`) needs the store."""


@contextmanager
def known_build(key: str, version: int, *, memory_only: bool = False) -> Iterator[None]:
    """Within: reads of result key ``key`` take ``version`` as its current build, which
    the caller knows (the API's in-memory build versions, kept right by every build
    and store refresh), so a state read before for that version needs no query. With
    ``memory_only``, a read that would need the store raises :class:`NotInMemory`
    (before reading anything): the API then runs it in a worker thread, and answers
    the others on the event loop without a thread hop."""
    known = _KNOWN.set((key, version))
    only = _MEMORY_ONLY.set(memory_only)
    try:
        yield
    finally:
        _MEMORY_ONLY.reset(only)
        _KNOWN.reset(known)


def _needs_store() -> None:
    """Raise :class:`NotInMemory` when reads must answer from memory only."""
    if _MEMORY_ONLY.get():
        raise NotInMemory


MAX_LEVEL_FRAMES = 64
"""Builds whose levels a reader keeps in memory (a 10-year index: about 200 KB each)."""
MAX_COMPOSITION_BYTES = 64 << 20
"""Memory for reconstructed compositions per reader (every day of 10 years of a
100-stock index: about 20 MB)."""
BLOCK_DAYS = 63
"""Stored days whose compositions one engine run reconstructs together (a quarter: on
6000 x 2520, about 3 ms a day instead of 25 ms for a day alone)."""


class Memo(Generic[V]):
    """A thread-safe LRU of values that never go stale (their keys name a build
    version), bounded by entries and by bytes, loading each key once at a time:
    threads asking for a key being loaded wait for it instead of loading it too."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Event] = {}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        """The sizes of the kept values, as their loaders estimated them."""
        return self._bytes

    def get(self, key: Hashable, load: Callable[[], tuple[V, int | None]]) -> V:
        """The value of ``key``, loading it when absent. ``load`` returns the value and
        its size in bytes, or None as the size when the value must not be kept (it
        is returned all the same)."""
        while True:
            with self._lock:
                found = self._items.get(key)
                if found is not None:
                    self._items.move_to_end(key)
                    return found[0]
                waiting = self._loading.get(key)
                if waiting is None:
                    loading = self._loading[key] = threading.Event()
            if waiting is not None:
                waiting.wait()
                continue  # kept by the loader, or not: then load it here
            try:
                value, size = load()
                if size is not None:
                    self._keep(key, value, size)
                return value
            finally:
                with self._lock:
                    del self._loading[key]
                loading.set()

    def peek(self, key: Hashable) -> V | None:
        """The value of ``key`` when it is kept (no loading)."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def _keep(self, key: Hashable, value: V, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        """Drop every value."""
        with self._lock:
            self._items.clear()
            self._bytes = 0


@dataclass(frozen=True)
class Levels:
    """Every stored level of one build (result key and version), as arrays."""

    dates: list[dt.date]
    level: NDArray[np.float64]
    daily_return: NDArray[np.float64]
    variants: dict[str, NDArray[np.float64]]
    turnover: NDArray[np.float64]
    is_rebalance: NDArray[np.bool_]
    rebalance_rows: list[int]

    @property
    def nbytes(self) -> int:
        """About the memory it holds."""
        return len(self.dates) * (8 * (4 + len(self.variants)) + 60)


class IndexReader:
    """Read-side use cases over one store.

    Reads of published results keep what they read in memory, keyed by the build
    version (never reused, so never stale; an older version is simply no longer
    asked for): each build's definition, its levels as arrays (performance windows
    are slices, no query) and the compositions of every day, reconstructed by one
    engine run per block of :data:`BLOCK_DAYS` stored days the first time a day of
    the block is read. A read then costs one query (the build's state: which version
    is current) and the work on its own rows. Anything loaded is kept only when the
    build's version did not change while it was loaded.
    """

    def __init__(self, store: Storage, calendar: SessionCalendar) -> None:
        self.store = store
        self.calendar = calendar
        self._builder = IndexBuilder(store, calendar)
        self._definitions: dict[tuple[str, str], IndexDefinition] = {}
        self._definitions_lock = threading.Lock()
        self._states: dict[tuple[str, int], BuildState] = {}
        self._engine_runs = threading.Lock()
        """Held by a block's engine run: several at once would take the process's GIL
        (and cores) from every other request while they last."""
        self.levels_memory: Memo[Levels] = Memo(MAX_LEVEL_FRAMES, 1 << 40)
        self.composition_memory: Memo[dict[dt.date, Snapshot]] = Memo(
            1 << 20, MAX_COMPOSITION_BYTES
        )

    def window(
        self,
        index_id: str,
        start: dt.date | None,
        end: dt.date | None,
        as_of: dt.datetime | None = None,
        as_of_version: int | None = None,
    ) -> Window:
        """Validate ``[start, end]`` against the index's base date and built range."""
        definition, state = self._resolve(index_id, as_of, as_of_version)
        return self._checked(index_id, definition, state, start, end)

    def _resolve(
        self, index_id: str, as_of: dt.datetime | None, as_of_version: int | None
    ) -> tuple[IndexDefinition, BuildState]:
        """The definition and the build read (errors in the order: conflicting options,
        unknown index, a bad moment or version, not built). Within :func:`known_build`
        naming this build's result key and a version read before, no query."""
        check_point(as_of, as_of_version)
        known = _KNOWN.get()
        if known is not None:
            key, version = known
            try:
                moment = check_as_of(as_of)
            except InvalidInputError:
                moment = None  # answered below, in the usual order
            else:
                if key == result_key(index_id, moment, as_of_version):
                    state = self._states.get((key, version))
                    if state is not None:
                        return self._definition(index_id, state), state
        _needs_store()
        if as_of_version is None:
            try:
                moment = check_as_of(as_of)
            except InvalidInputError:
                self._builder.definition(index_id)  # an unknown index first
                raise
            state = self.store.build_state(result_key(index_id, moment))
            if state is not None:
                self._remember(state)
                return self._definition(index_id, state), state
        definition = self._builder.definition(index_id)  # unknown index first
        state = self._state(index_id, as_of, as_of_version)
        self._remember(state)
        return definition, state

    def _remember(self, state: BuildState) -> None:
        """Keep a build's state read from the store, by result key and version."""
        if len(self._states) >= 4096:
            self._states.clear()
        self._states[(state.index_id, state.version)] = state

    def _definition(self, index_id: str, state: BuildState) -> IndexDefinition:
        """The definition a build was made with (kept in memory by its fingerprint: a
        change of its rules deletes the build's results)."""
        key = (index_id, state.definition_hash)
        with self._definitions_lock:
            found = self._definitions.get(key)
        if found is None:
            _needs_store()
            found = self._builder.definition(index_id)
            if found.fingerprint() == state.definition_hash:
                with self._definitions_lock:
                    if len(self._definitions) >= 1024:
                        self._definitions.clear()
                    self._definitions[key] = found
        return found

    def _checked(
        self,
        index_id: str,
        definition: IndexDefinition,
        state: BuildState,
        start: dt.date | None,
        end: dt.date | None,
    ) -> Window:
        """The window ``[start, end]`` of a build, validated."""
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

    def levels(self, state: BuildState) -> Levels:
        """Every stored level of a build, from memory after the first read."""

        def load() -> tuple[Levels, int | None]:
            table = self.store.read_levels(state.index_id, state.base_date, state.built_through)
            is_rebalance = table.column("is_rebalance").to_numpy(zero_copy_only=False).astype(bool)
            levels = Levels(
                dates=table.column("date").to_pylist(),
                level=table.column("level").to_numpy(),
                daily_return=table.column("daily_return").to_numpy(),
                variants={v: table.column(f"level_{v}").to_numpy() for v in VARIANTS},
                turnover=table.column("turnover").to_numpy(zero_copy_only=False).astype(float),
                is_rebalance=is_rebalance,
                rebalance_rows=np.flatnonzero(is_rebalance).tolist(),
            )
            return levels, levels.nbytes if self._still_current(state) else None

        key = (state.index_id, state.version)
        found = self.levels_memory.peek(key)
        if found is not None:
            return found
        _needs_store()
        return self.levels_memory.get(key, load)

    def _still_current(self, state: BuildState) -> bool:
        """True when the build read is still the one stored under its key."""
        now = self.store.build_state(state.index_id)
        return now is not None and now.version == state.version

    def performance(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        return_type: str | None = None,
        as_of: dt.datetime | None = None,
        as_of_version: int | None = None,
    ) -> Performance:
        """Levels, daily and cumulative returns and the summary over a window.

        ``return_type`` (price | total | net_total) picks a return variant; by
        default the definition's headline. Rows also carry every variant's level.
        """
        window = self.window(index_id, start, end, as_of, as_of_version)
        variant = return_type or window.definition.return_type
        if variant not in VARIANTS:
            raise InvalidInputError(
                f"return_type must be one of {', '.join(VARIANTS)}, got {variant!r}",
                field="return_type",
            )
        stored = self.levels(window.state)
        i = bisect_left(stored.dates, window.start)
        j = bisect_right(stored.dates, window.end)
        if i >= j:
            raise NoDataError(
                f"no trading day of {index_id} in {window.start}..{window.end}; built range is "
                f"{window.state.base_date}..{window.state.built_through}"
            )
        dates = stored.dates[i:j]
        headline = variant == window.definition.return_type
        levels = (stored.level if headline else stored.variants[variant])[i:j]
        if headline:
            daily = stored.daily_return[i:j]
        else:  # the variant's own daily returns; the window's first needs the day before
            previous = None
            if i > 0:  # every variant's level on the last built day before the window
                before = {v: float(stored.variants[v][i - 1]) for v in VARIANTS}
                previous = None if any(math.isnan(x) for x in before.values()) else before
            first = levels[0] / previous[variant] - 1.0 if previous else 0.0
            daily = np.concatenate([[first], levels[1:] / levels[:-1] - 1.0])
        cumulative = levels / levels[0] - 1.0
        variants = {v: stored.variants[v][i:j] for v in VARIANTS}
        price, total, net_total = (f"level_{v}" for v in VARIANTS)
        rows = [  # column lists, not numpy scalars: the same floats, a quarter of the time
            {
                "date": d,
                "level": a,
                "daily_return": b,
                "cumulative_return": c,
                price: p,
                total: t,
                net_total: n,
            }
            for d, a, b, c, p, t, n in zip(
                dates,
                levels.tolist(),
                daily.tolist(),
                cumulative.tolist(),
                *(variants[v].tolist() for v in VARIANTS),
                strict=True,
            )
        ]
        summary = summarize(
            levels,
            stored.turnover[i:j],
            stored.is_rebalance[i:j],
            first_is_base=dates[0] == window.state.base_date,
        )
        return Performance(window, rows, summary, variant)

    def composition(
        self,
        index_id: str,
        day: dt.date | None = None,
        as_of: dt.datetime | None = None,
        as_of_version: int | None = None,
    ) -> Composition:
        """Constituents after the close of ``day`` (default: the last built day).

        A day that is not a trading day resolves to the previous trading day
        (``effective_date``); a day after the built range is :class:`NoDataError`.
        """
        definition, state = self._resolve(index_id, as_of, as_of_version)
        requested = day or state.built_through
        if requested < state.base_date:
            raise InvalidInputError(
                f"date {requested} is before the base date {state.base_date} of {index_id}",
                field="date",
            )
        following = self.calendar.next_sessions(np.array([state.built_through], "datetime64[D]"))
        if not np.isnat(following[0]) and np.datetime64(requested, "D") >= following[0]:
            raise NoDataError(_nothing_after(index_id, state, requested))
        levels = self.levels(state)
        row = bisect_right(levels.dates, requested) - 1
        assert row >= 0  # requested >= base date, which is built
        effective = levels.dates[row]
        return Composition(
            index_id, requested, effective, self._snapshot(definition, state, levels, row)
        )

    def _snapshot(
        self, definition: IndexDefinition, state: BuildState, levels: Levels, row: int
    ) -> Snapshot:
        """The composition after the close of stored day ``row``: from the memory of its
        block of :data:`BLOCK_DAYS` stored days, which one engine run reconstructs
        (from the last rebalance on or before the block's first day) the first time a
        day of the block is read."""
        block = row // BLOCK_DAYS
        lo = block * BLOCK_DAYS
        hi = min(lo + BLOCK_DAYS, len(levels.dates)) - 1

        def load() -> tuple[dict[dt.date, Snapshot], int | None]:
            days = Window(definition, state, levels.dates[lo], levels.dates[hi])
            with self._engine_runs:  # one at a time: the others' reads keep the GIL's share
                found = {c.effective_date: c.snapshot for c in self._reconstruct(days)}
            size = sum(80 * len(s.columns) + 400 for s in found.values())
            return found, size if self._still_current(state) else None

        key = (state.index_id, state.version, block)
        snapshots = self.composition_memory.peek(key)
        if snapshots is None:
            _needs_store()
            snapshots = self.composition_memory.get(key, load)
        snapshot = snapshots.get(levels.dates[row])
        if snapshot is None:  # pragma: no cover - every stored day is a panel day
            effective = levels.dates[row]
            (found,) = self._reconstruct(Window(definition, state, effective, effective))
            snapshot = found.snapshot
        return snapshot

    def compositions(
        self,
        index_id: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        as_of: dt.datetime | None = None,
        as_of_version: int | None = None,
    ) -> Iterator[Composition]:
        """The composition after the close of every trading day in a window, in order.

        Reconstructed from the stored results with one engine run: constituents of
        the last rebalance on or before ``start`` from the spells, its level from the
        levels, then the same engine over [that rebalance, end] (the rebalances in
        between select exactly what the build selected). As of a moment, the market
        data are those known then, as the build used them (as of a version: the data
        after it).
        """
        return self._reconstruct(self.window(index_id, start, end, as_of, as_of_version))

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
        if state.as_of_version is not None:
            return state.data_run_id  # the data as they stood after the version
        if state.as_of is not None:
            return None  # an as-of build's data are those known at its moment
        changed = self.store.first_changed_date(state.data_run_id)
        return None if changed is None or changed > end else state.data_run_id

    def announcement(self, index_id: str) -> Announcement:
        """The next composition to take effect (an index with an ``effective_lag``)."""
        _needs_store()
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
        as_of_version: int | None = None,
    ) -> tuple[Window, list[Change]]:
        """Entered/exited constituents per rebalance within a window."""
        window = self.window(index_id, start, end, as_of, as_of_version)
        days = self.levels(window.state).dates
        _needs_store()  # the spells
        # an exit on the window's first day ends a spell on the trading day before
        i = int(
            np.searchsorted(np.array(days, dtype="datetime64[D]"), np.datetime64(window.start, "D"))
        )
        spells = self.store.spells_overlapping(window.key, days[max(i - 1, 0)], window.end)
        changes = changes_from_spells(
            spells, days, base_date=window.state.base_date, start=window.start, end=window.end
        )
        return window, changes

    def _state(
        self, index_id: str, as_of: dt.datetime | None, as_of_version: int | None = None
    ) -> BuildState:
        """The build read: the current one, the one as of ``as_of`` (not in the future)
        or the one as of version ``as_of_version`` (a version of the store)."""
        as_of = check_as_of(as_of)
        if as_of_version is not None:
            version_run(self.store, as_of_version)  # an unknown version: NotFoundError
        state = self.store.build_state(result_key(index_id, as_of, as_of_version))
        if state is None:
            if as_of_version is not None:
                raise NoDataError(
                    f"{index_id} has no build as of version {as_of_version}: run "
                    f"'{build_command(index_id, None, as_of_version)}'"
                )
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
    if state.as_of_version is not None:
        v = state.as_of_version
        built = f"{index_id} as of version {v} is built"
        hint = f"no later data were stored then ('{build_command(index_id, None, v)}' builds "
        hint += "through the last day of that version)"
    elif state.as_of is None:
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
