"""Building indices: full or incremental, persisted as levels and spells.

Incremental rule: after new or corrected data, computation restarts at the last
rebalance whose effective date is *before* the first changed trading day: the
panel starts at that selection's reference date, its constituents are read back
from the stored spells and its level (at the effective date) from the stored
levels, so an incremental build gives the same numbers as a full rebuild.

Point in time: a build ``as_of`` K is always full, reads the market data known
at K and stores its results under the key ``<index id>@<K>``, next to (never
over) the current results.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from index_builder.calendar import SessionCalendar
from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.kernel import IndexComputation, StartState, compute_index
from index_builder.engine.panel import MarketPanel
from index_builder.engine.spells import changes_from_spells, merge_resumed
from index_builder.errors import (
    BuildError,
    ConflictError,
    InvalidInputError,
    NoDataError,
    NotFoundError,
)
from index_builder.ops.flags import FlagStore, check_definition
from index_builder.point_in_time import check_as_of, format_as_of, result_key
from index_builder.storage.base import AnnouncedConstituent, BuildState, LevelRows, Storage


@dataclass(frozen=True)
class BuildPlan:
    """What a build will compute for one index."""

    definition: IndexDefinition
    base_date: dt.date
    end: dt.date
    resume_from: dt.date | None  # effective date of the resumed rebalance; None: full build
    up_to_date: bool
    resume_reference: dt.date | None = None  # the resumed rebalance's reference date
    as_of: dt.datetime | None = None  # naive UTC; None: the current data and results

    @property
    def first_day(self) -> dt.date:
        """The first trading day the computation needs."""
        return self.resume_reference or self.base_date

    @property
    def key(self) -> str:
        """Where the results are stored (see :func:`~index_builder.point_in_time.result_key`)."""
        return result_key(self.definition.id, self.as_of)


@dataclass
class BuildResult:
    """Outcome of building one index."""

    index_id: str
    mode: str  # full | incremental | up-to-date
    base_date: dt.date
    start_date: dt.date
    end_date: dt.date
    trading_days: int
    rebalances: int
    changes: int
    version: int
    duration_ms: float
    warnings: list[str] = field(default_factory=list)
    as_of: dt.datetime | None = None


def no_market_data(as_of: dt.datetime | None) -> NoDataError:
    """The error for a store with no market data (known at ``as_of``)."""
    if as_of is None:
        return NoDataError("no market data: run 'index-builder ingest' first")
    return NoDataError(
        f"no market data was known at {format_as_of(as_of)} (check 'index-builder runs' "
        "for when data was ingested)"
    )


def resolve_base_date(
    definition: IndexDefinition,
    trading_days: Sequence[dt.date],
    as_of: dt.datetime | None = None,
) -> dt.date:
    """The base date: the definition's (rolled forward to a trading day) or the first day."""
    if not trading_days:
        raise no_market_data(as_of)
    if definition.base_date is None:
        return trading_days[0]
    i = int(
        np.searchsorted(
            np.array(trading_days, dtype="datetime64[D]"), np.datetime64(definition.base_date, "D")
        )
    )
    if i >= len(trading_days):
        raise BuildError(
            f"{definition.id}: base date {definition.base_date} is after the last trading day "
            f"{trading_days[-1]}",
            field="base_date",
        )
    return trading_days[i]


class IndexBuilder:
    """Plans and runs builds against one store."""

    def __init__(
        self, store: Storage, calendar: SessionCalendar, flags: FlagStore | None = None
    ) -> None:
        self.store = store
        self.calendar = calendar
        self.flags = flags  # None: every feature on

    def switched_off(self, index_ids: Sequence[str]) -> dict[str, str]:
        """Indices a feature flag forbids building now, with the reason."""
        out = {}
        for index_id in index_ids:
            try:
                check_definition(self.flags, self.definition(index_id))
            except ConflictError as exc:
                out[index_id] = str(exc)
        return out

    def definition(self, index_id: str) -> IndexDefinition:
        """A stored definition or :class:`NotFoundError`."""
        found = self.store.get_definition(index_id)
        if found is None:
            known = ", ".join(d.id for d, _ in self.store.list_definitions())
            raise NotFoundError(f"unknown index {index_id!r} (known: {known})", field="index")
        return found[0]

    def check_window(
        self,
        index_id: str,
        start: dt.date | None,
        end: dt.date | None,
        as_of: dt.datetime | None = None,
    ) -> IndexDefinition:
        """The rules every build request follows (CLI and API): a known index, an
        as-of moment not in the future, end not before start, start not before the
        base date (of the data known at ``as_of``), no feature switched off by a
        flag. Returns the definition."""
        definition = self.definition(index_id)
        check_definition(self.flags, definition)
        as_of = check_as_of(as_of)
        if start is not None and end is not None and end < start:
            raise InvalidInputError(
                f"end_date {end} is before start_date {start}", field="end_date"
            )
        if start is not None:
            base = resolve_base_date(definition, self.store.trading_days(as_of), as_of)
            if start < base:
                raise InvalidInputError(
                    f"start_date {start} is before the base date {base} of {index_id}",
                    field="start_date",
                )
        return definition

    def plan(
        self,
        definition: IndexDefinition,
        trading_days: Sequence[dt.date],
        end: dt.date | None,
        *,
        full: bool = False,
        as_of: dt.datetime | None = None,
    ) -> BuildPlan:
        """Decide between a full build, an incremental one, or nothing to do.

        With ``as_of`` (``trading_days`` are then those known at it) the build is
        always full.
        """
        base = resolve_base_date(definition, trading_days, as_of)
        last_day = trading_days[-1]
        target = min(end, last_day) if end is not None else last_day
        if target < base:
            raise BuildError(
                f"{definition.id}: end {target} is before the base date {base}", field="end_date"
            )
        if as_of is not None:
            return BuildPlan(definition, base, target, None, up_to_date=False, as_of=as_of)
        state = self.store.build_state(definition.id)
        if (
            full
            or state is None
            or state.definition_hash != definition.fingerprint()
            or state.base_date != base
        ):
            return BuildPlan(definition, base, target, None, up_to_date=False)
        # never leave stale levels behind: rebuild at least through what is stored
        target = max(target, state.built_through)
        changed = self.store.first_changed_date(state.data_run_id)
        days_after = [d for d in trading_days if d > state.built_through]
        first_new = days_after[0] if days_after and days_after[0] <= target else None
        first_affected = min((d for d in (changed, first_new) if d is not None), default=None)
        if first_affected is None:
            return BuildPlan(definition, base, state.built_through, None, up_to_date=True)
        if first_affected <= base:
            return BuildPlan(definition, base, target, None, up_to_date=False)
        resume = self.store.last_rebalance(definition.id, first_affected, inclusive=False)
        reference = None if resume is None else self.store.reference_date_on(definition.id, resume)
        return BuildPlan(
            definition, base, target, resume, up_to_date=False, resume_reference=reference
        )

    def build(
        self,
        index_ids: Sequence[str],
        *,
        end: dt.date | None = None,
        full: bool = False,
        as_of: dt.datetime | None = None,
        on_index: Callable[[BuildResult], None] | None = None,
        progress: Callable[[str, float], None] | None = None,
    ) -> list[BuildResult]:
        """Build several indices from one shared market panel.

        ``as_of`` (a past moment; naive means UTC): a full build from the data
        known then, stored apart from the current results. ``progress(stage,
        fraction)`` is told the stage as the build goes.
        """
        report = progress or (lambda _stage, _fraction: None)
        report("planning", 0.02)
        as_of = check_as_of(as_of)
        trading_days = self.store.trading_days(as_of)
        if not trading_days:
            raise no_market_data(as_of)
        data_run_id = self.store.latest_run_id()
        for index_id in index_ids:
            check_definition(self.flags, self.definition(index_id))
        plans = [
            self.plan(self.definition(i), trading_days, end, full=full, as_of=as_of)
            for i in index_ids
        ]
        todo = [p for p in plans if not p.up_to_date]
        panel = None
        if todo:
            first = min(p.first_day for p in todo)
            last = max(p.end for p in todo)
            report("loading market data", 0.05)
            panel = self.store.load_panel(first, last, as_of)
        results = []
        for i, plan in enumerate(plans):
            report(f"computing {plan.definition.id}", 0.3 + 0.65 * i / len(plans))
            started = time.perf_counter()
            if plan.up_to_date or panel is None:
                result = self._unchanged(plan, started)
            else:
                result = self._run(plan, panel, trading_days, data_run_id, started)
            results.append(result)
            if on_index is not None:
                on_index(result)
        report("done", 1.0)
        return results

    def _unchanged(self, plan: BuildPlan, started: float) -> BuildResult:
        state = self.store.build_state(plan.key)
        assert state is not None
        return BuildResult(
            index_id=plan.definition.id,
            mode="up-to-date",
            base_date=plan.base_date,
            start_date=state.built_through,
            end_date=state.built_through,
            trading_days=0,
            rebalances=0,
            changes=0,
            version=state.version,
            duration_ms=(time.perf_counter() - started) * 1000,
            warnings=state.warnings,
        )

    def _run(
        self,
        plan: BuildPlan,
        panel: MarketPanel,
        trading_days: Sequence[dt.date],
        data_run_id: int,
        started: float,
    ) -> BuildResult:
        definition = plan.definition
        first_row = panel.row_of(np.datetime64(plan.first_day, "D"))
        last_row = int(np.searchsorted(panel.days, np.datetime64(plan.end, "D"), side="right"))
        window = panel.rows_from(first_row, last_row)
        start_state = None
        if plan.resume_from is not None:
            start_state = resume_state(self.store, plan.key, plan.resume_from, window)
        computation = compute_index(window, definition, self.calendar, start=start_state)
        previous = self.store.build_state(plan.key)
        keep_first = start_state is not None  # the resume row is already stored
        # a resumed computation's rows up to its effective row are already stored
        first_new = computation.first_row + 1 if keep_first else 0
        levels = _level_rows(computation, first_new)
        spells = computation.spells()
        if plan.resume_from is not None:
            stored = self.store.spells_from(plan.key, plan.resume_from)
            spells = merge_resumed(stored, spells, plan.resume_from)
        warnings = list(previous.warnings) if previous and keep_first else []
        warnings += computation.warnings
        state = BuildState(
            index_id=plan.key,
            version=self.store.next_build_version(),
            definition_hash=definition.fingerprint(),
            base_date=plan.base_date,
            built_through=_as_date(window.days[-1]),
            data_run_id=data_run_id,
            built_at=dt.datetime.now(dt.UTC),
            duration_ms=(time.perf_counter() - started) * 1000,
            warnings=warnings,
            as_of=plan.as_of,
        )
        announced = self._announcements(computation, state.built_through)
        self.store.save_results(state, levels, spells, announced, replace_after=plan.resume_from)
        rebalances = int(computation.is_rebalance[first_new:].sum())
        changes = changes_from_spells(
            spells,
            trading_days,
            base_date=plan.base_date,
            start=levels.dates[0] if levels.dates else None,
        )
        return BuildResult(
            index_id=definition.id,
            mode="incremental" if keep_first else "full",
            base_date=plan.base_date,
            start_date=plan.first_day,
            end_date=state.built_through,
            trading_days=len(levels.dates),
            rebalances=rebalances,
            changes=len(changes),
            version=state.version,
            duration_ms=(time.perf_counter() - started) * 1000,
            warnings=computation.warnings,
            as_of=plan.as_of,
        )

    def _announcements(
        self, computation: IndexComputation, last_close: dt.date
    ) -> list[AnnouncedConstituent]:
        """The selections not yet in force, dated on the exchange calendar."""
        return [
            AnnouncedConstituent(
                reference_date=p.reference_date,
                effective_date=self.calendar.session_after(last_close, p.sessions_ahead),
                sessions_ahead=p.sessions_ahead,
                symbol=str(symbol),
                name=_text(name),
                sector=_text(sector),
                rank=int(rank),
                weight=float(weight),
                market_cap=float(cap),
            )
            for p in computation.pending
            for symbol, name, sector, rank, weight, cap in zip(
                p.symbols, p.names, p.sectors, p.ranks, p.weights, p.market_caps, strict=True
            )
        ]


def resume_state(
    store: Storage, index_id: str, effective: dt.date, window: MarketPanel
) -> StartState:
    """The stored state of the rebalance that took effect on ``effective``; ``window``
    starts at its reference date. Used by incremental builds and composition reads."""
    level = store.level_on(index_id, effective)
    variants = store.variant_levels_on(index_id, effective)
    members = [s.symbol for s in store.spells_overlapping(index_id, effective, effective)]
    if level is None or variants is None or not members:
        raise BuildError(f"{index_id}: stored results are incomplete at {effective}; use --full")
    return StartState(
        level=level,
        members=window.securities.column_of(members),
        variant_levels=variants,
        effective_row=window.row_of(np.datetime64(effective, "D")),
    )


def _level_rows(computation: IndexComputation, first: int) -> LevelRows:
    """Level rows from panel row ``first`` on."""
    s = slice(first, None)
    turnover = computation.turnover[s]
    reference: list[dt.date | None] = [None] * len(computation.days)
    for effective, ref in zip(computation.rebalance_rows, computation.reference_rows, strict=True):
        reference[effective] = _as_date(computation.days[ref])
    return LevelRows(
        dates=[_as_date(d) for d in computation.days[s]],
        level=computation.level[s].tolist(),
        daily_return=computation.daily_return[s].tolist(),
        is_rebalance=computation.is_rebalance[s].tolist(),
        turnover=[None if np.isnan(x) else float(x) for x in turnover],
        n_constituents=computation.n_constituents[s].tolist(),
        variant_levels={v: lv[s].tolist() for v, lv in computation.variant_levels.items()},
        reference_date=reference[s],
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _as_date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
