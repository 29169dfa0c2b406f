"""Building indices: full, appended or restated, persisted as levels and spells.

Published history never changes (METHODOLOGY "Published history"): a build that
adds days writes those days only; a correction of an earlier day's data restates
the days from it on, as a new build version; nothing before is rewritten.

Either way the computation resumes at the last rebalance whose effective date is
before the first day to write: the panel starts at that selection's reference
date, its constituents are the stored ones (spells) and its levels the stored
ones, and the engine continues from them. Its arithmetic is the same whatever
day it starts from (:mod:`index_builder.engine.kernel`), so the recomputed days
before the cut equal the stored ones bit for bit (checked on every build) and
the new days are those a full rebuild computes.

A definition without a base date keeps the base date of its first build.

Point in time: a build ``as_of`` K is always full, reads the market data known
at K and stores its results under the key ``<index id>@<K>``, next to (never
over) the current results. A build ``as_of_version`` V is the same with the data
as they stood after version V (written by its data_run_id and the earlier runs),
stored under ``<index id>@v<V>``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from index_builder.calendar import SessionCalendar
from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.kernel import IndexComputation, Spell, StartState, compute_index
from index_builder.engine.panel import MarketPanel
from index_builder.engine.spells import changes_from_spells, splice
from index_builder.errors import (
    BuildError,
    ConflictError,
    IndexBuilderError,
    InvalidInputError,
    NoDataError,
    NotFoundError,
)
from index_builder.ops.flags import FlagStore, check_definition
from index_builder.point_in_time import check_as_of, check_point, format_as_of, result_key
from index_builder.storage.base import AnnouncedConstituent, BuildState, LevelRows, Storage

if TYPE_CHECKING:
    from index_builder.engine.spark.build import SparkJobReport
    from index_builder.engine.spark.session import SparkOptions

log = logging.getLogger("index_builder.builds")

Engine = Literal["numpy", "spark"]
ENGINES: tuple[Engine, ...] = ("numpy", "spark")
"""The engines a build can run on: NumPy in this process, or a Spark job."""


@dataclass(frozen=True)
class BuildPlan:
    """What a build will compute and write for one index."""

    definition: IndexDefinition
    base_date: dt.date
    end: dt.date
    up_to_date: bool
    write_from: dt.date | None = None  # first day written; None: every day (a full build)
    resume_from: dt.date | None = None  # effective date of the rebalance resumed at
    resume_reference: dt.date | None = None  # that rebalance's reference date
    restates: bool = False  # a correction: days already published are written again
    as_of: dt.datetime | None = None  # naive UTC; None: the current data and results
    as_of_version: int | None = None  # the data after that version (a full build)

    @property
    def first_day(self) -> dt.date:
        """The first trading day the computation needs."""
        return self.resume_reference or self.base_date

    @property
    def key(self) -> str:
        """Where the results are stored (see :func:`~index_builder.point_in_time.result_key`)."""
        return result_key(self.definition.id, self.as_of, self.as_of_version)

    @property
    def mode(self) -> str:
        """full | incremental (days appended) | restated (a correction rewrote days)."""
        if self.restates:
            return "restated"
        return "full" if self.resume_from is None else "incremental"


Outcome = Literal["built", "unchanged", "failed"]


@dataclass
class BuildResult:
    """Outcome of building one index.

    ``outcome``: ``built`` (days were written: a full build, days appended, or a
    correction restated), ``unchanged`` (nothing new to compute) or ``failed``
    (``error`` says why; the other indices of the same build go on).
    """

    index_id: str
    mode: str  # full | incremental | restated | up-to-date | failed
    base_date: dt.date | None
    start_date: dt.date | None  # first day written (None when nothing was)
    end_date: dt.date | None  # the last built day
    trading_days: int  # days written
    rebalances: int  # rebalances among the days written
    changes: int  # composition changes among the days written
    version: int | None
    duration_ms: float
    warnings: list[str] = field(default_factory=list)
    as_of: dt.datetime | None = None
    as_of_version: int | None = None  # a build as of a version: the data after it
    outcome: Outcome = "built"
    restated_from: dt.date | None = None  # a correction: the first published day that changed
    restated_days: int = 0  # published days whose values the correction changed
    error: IndexBuilderError | None = None  # set when the outcome is failed
    engine: str = "numpy"  # the engine of the build run: numpy | spark

    @property
    def failed(self) -> bool:
        """True when the index could not be built."""
        return self.outcome == "failed"

    @property
    def reason(self) -> str | None:
        """Why the build failed (one line), None otherwise."""
        return None if self.error is None else self.error.message

    def raise_for_failure(self) -> None:
        """Re-raise the error of a failed build (callers that build one index)."""
        if self.error is not None:
            raise self.error

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (CLI ``--format json``, API job results)."""
        return {
            "index": self.index_id,
            "outcome": self.outcome,
            "mode": self.mode,
            "base_date": self.base_date,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "trading_days": self.trading_days,
            "rebalances": self.rebalances,
            "changes": self.changes,
            "version": self.version,
            "duration_ms": round(self.duration_ms, 1),
            "restated_from": self.restated_from,
            "restated_days": self.restated_days,
            "warnings": list(self.warnings),
            "reason": self.reason,
            "error_code": None if self.error is None else self.error.code,
            "as_of": None if self.as_of is None else format_as_of(self.as_of),
            "as_of_version": self.as_of_version,
            "engine": self.engine,
        }


def no_market_data(as_of: dt.datetime | None, as_of_version: int | None = None) -> NoDataError:
    """The error for a store with no market data (known at ``as_of``, or after
    version ``as_of_version``)."""
    if as_of_version is not None:
        return NoDataError(
            f"no market data was stored after version {as_of_version} (check "
            "'index-builder versions' for when data was ingested)"
        )
    if as_of is None:
        return NoDataError("no market data: run 'index-builder ingest' first")
    return NoDataError(
        f"no market data was known at {format_as_of(as_of)} (check 'index-builder runs' "
        "for when data was ingested)"
    )


def data_waiting(store: Storage, states: Iterable[BuildState]) -> dict[str, dt.date]:
    """For each current build whose market data changed after it: the first trading
    day of the newer data (new days or corrections), which waits for the next build.

    Reads answer from the published build until then (a build as of a moment never
    waits: its data are those known then). One query per distinct ingestion run."""
    first_change: dict[int, dt.date | None] = {}
    waiting: dict[str, dt.date] = {}
    for state in states:
        if state.as_of is not None or state.as_of_version is not None:
            continue
        if state.data_run_id not in first_change:
            first_change[state.data_run_id] = store.first_changed_date(state.data_run_id)
        day = first_change[state.data_run_id]
        if day is not None:
            waiting[state.index_id] = day
    return waiting


def resolve_base_date(
    definition: IndexDefinition,
    trading_days: Sequence[dt.date],
    as_of: dt.datetime | None = None,
    pinned: dt.date | None = None,
) -> dt.date:
    """The base date: the definition's, else the one its first build fixed
    (``pinned``), else the first trading day; a date that is not a trading day
    rolls forward to the next one."""
    if not trading_days:
        raise no_market_data(as_of)
    wanted = definition.base_date or pinned
    if wanted is None:
        return trading_days[0]
    i = int(
        np.searchsorted(np.array(trading_days, dtype="datetime64[D]"), np.datetime64(wanted, "D"))
    )
    if i >= len(trading_days):
        raise BuildError(
            f"{definition.id}: base date {wanted} is after the last trading day {trading_days[-1]}",
            field="base_date",
        )
    return trading_days[i]


class IndexBuilder:
    """Plans and runs builds against one store."""

    def __init__(
        self,
        store: Storage,
        calendar: SessionCalendar,
        flags: FlagStore | None = None,
        *,
        engine: Engine = "numpy",
        spark: SparkOptions | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise InvalidInputError(
                f"engine {engine!r} is not one of {', '.join(ENGINES)}", field="engine"
            )
        self.store = store
        self.calendar = calendar
        self.flags = flags  # None: every feature on
        self.engine: Engine = engine
        self.spark = spark  # the Spark engine's session options (None: the defaults)
        self.last_spark_job: SparkJobReport | None = None  # what the last Spark job did

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

    def version_run(self, as_of_version: int) -> int:
        """The ingestion run whose data are in force after version ``as_of_version``
        (:class:`NotFoundError` naming ``as_of_version`` for an unknown version)."""
        return version_run(self.store, as_of_version)

    def trading_days(
        self, as_of: dt.datetime | None = None, as_of_version: int | None = None
    ) -> list[dt.date]:
        """The trading days of the data a build uses: current, known at ``as_of``, or
        as they stood after version ``as_of_version``."""
        if as_of_version is not None:
            return self.store.trading_days(run=self.version_run(as_of_version))
        return self.store.trading_days(as_of)

    def check_window(
        self,
        index_id: str,
        start: dt.date | None,
        end: dt.date | None,
        as_of: dt.datetime | None = None,
        as_of_version: int | None = None,
    ) -> IndexDefinition:
        """The rules every build request follows (CLI and API): a known index, an
        as-of moment not in the future (or a known version, not both), end not before
        start, start not before the base date (of the data known at ``as_of``), no
        feature switched off by a flag. Returns the definition."""
        check_point(as_of, as_of_version)
        definition = self.definition(index_id)
        check_definition(self.flags, definition)
        as_of = check_as_of(as_of)
        if as_of_version is not None:
            self.version_run(as_of_version)
        if start is not None and end is not None and end < start:
            raise InvalidInputError(
                f"end_date {end} is before start_date {start}", field="end_date"
            )
        if start is not None or end is not None:
            days = self.trading_days(as_of, as_of_version)
            if not days:
                raise no_market_data(as_of, as_of_version)
            base = self.base_date(definition, days, as_of)
            data = f"trading days in the data: {days[0]}..{days[-1]}"
            if start is not None and start < base:
                raise InvalidInputError(
                    f"start_date {start} is before the base date {base} of {index_id} ({data})",
                    field="start_date",
                )
            if end is not None and end < base:
                raise InvalidInputError(
                    f"end_date {end} is before the base date {base} of {index_id} ({data})",
                    field="end_date",
                )
            if end is not None and end > days[-1]:
                raise InvalidInputError(
                    f"end_date {end} is after the last trading day of the data ({data}); "
                    "omit it to build through the last one",
                    field="end_date",
                )
        return definition

    def base_date(
        self,
        definition: IndexDefinition,
        trading_days: Sequence[dt.date],
        as_of: dt.datetime | None = None,
    ) -> dt.date:
        """The index's base date (see :func:`resolve_base_date`)."""
        pinned = self.store.pinned_base_date(definition.id)
        return resolve_base_date(definition, trading_days, as_of, pinned)

    def plan(
        self,
        definition: IndexDefinition,
        trading_days: Sequence[dt.date],
        end: dt.date | None,
        *,
        full: bool = False,
        as_of: dt.datetime | None = None,
        as_of_version: int | None = None,
    ) -> BuildPlan:
        """Decide what to compute and write: everything, the new days, the days from
        a corrected one on, or nothing.

        With ``as_of`` (``trading_days`` are then those known at it) or
        ``as_of_version`` (those after that version) the build is always full.

        A corrected day that is no longer a trading day (a rollback withdrew every
        bar of it) is written from the trading day before it, so that its stored
        level goes too.
        """
        base = self.base_date(definition, trading_days, as_of)
        last_day = trading_days[-1]
        target = min(end, last_day) if end is not None else last_day
        if target < base:
            raise BuildError(
                f"{definition.id}: end {target} is before the base date {base}", field="end_date"
            )
        if as_of is not None or as_of_version is not None:
            return BuildPlan(
                definition,
                base,
                target,
                up_to_date=False,
                as_of=as_of,
                as_of_version=as_of_version,
            )
        state = self.store.build_state(definition.id)
        if (
            full
            or state is None
            or state.definition_hash != definition.fingerprint()
            or state.base_date != base
        ):
            return BuildPlan(definition, base, target, up_to_date=False)
        # never leave stale levels behind: rebuild at least through what is stored
        target = max(target, state.built_through)
        changed = self.store.first_changed_date(state.data_run_id)
        corrected = changed if changed is not None and changed <= state.built_through else None
        if corrected is not None:
            i = bisect.bisect_left(trading_days, corrected)
            if i == len(trading_days) or trading_days[i] != corrected:  # a withdrawn day
                corrected = trading_days[i - 1] if i > 0 else base
        new_days = [d for d in trading_days if state.built_through < d <= target]
        if corrected is None and not new_days:
            return BuildPlan(definition, base, state.built_through, up_to_date=True)
        write_from = corrected or new_days[0]
        if write_from <= base:  # a correction of the base date or earlier: every day
            return BuildPlan(definition, base, target, up_to_date=False, restates=True)
        resume = self.store.last_rebalance(definition.id, write_from, inclusive=False)
        if resume is None:  # pragma: no cover - the base date is always a rebalance
            return BuildPlan(definition, base, target, up_to_date=False, restates=True)
        return BuildPlan(
            definition,
            base,
            target,
            up_to_date=False,
            write_from=write_from,
            resume_from=resume,
            resume_reference=self.store.reference_date_on(definition.id, resume),
            restates=corrected is not None,
        )

    def build(
        self,
        index_ids: Sequence[str],
        *,
        end: dt.date | None = None,
        full: bool = False,
        as_of: dt.datetime | None = None,
        as_of_version: int | None = None,
        on_index: Callable[[BuildResult], None] | None = None,
        progress: Callable[[str, float], None] | None = None,
    ) -> list[BuildResult]:
        """Build several indices from one shared market panel.

        ``as_of`` (a past moment; naive means UTC): a full build from the data
        known then, stored apart from the current results; ``as_of_version``: the
        same from the data as they stood after that version (not with ``as_of``).
        ``progress(stage, fraction)`` is told the stage as the build goes.
        """
        report = progress or (lambda _stage, _fraction: None)
        report("planning", 0.02)
        check_point(as_of, as_of_version)
        as_of = check_as_of(as_of)
        run = None if as_of_version is None else self.version_run(as_of_version)
        trading_days = self.trading_days(as_of, as_of_version)
        if not trading_days:
            raise no_market_data(as_of, as_of_version)
        data_run_id = self.store.latest_run_id() if run is None else run
        plans: dict[str, BuildPlan | BuildResult] = {}
        for index_id in index_ids:
            started = time.perf_counter()
            try:
                definition = self.definition(index_id)
                check_definition(self.flags, definition)
                plans[index_id] = self.plan(
                    definition,
                    trading_days,
                    end,
                    full=full,
                    as_of=as_of,
                    as_of_version=as_of_version,
                )
            except Exception as exc:  # one index's fault stays its own
                plans[index_id] = _failed(index_id, exc, started, as_of, as_of_version)
        todo = [p for p in plans.values() if isinstance(p, BuildPlan) and not p.up_to_date]
        panel = None
        computed: dict[str, IndexComputation | Exception] | None = None
        job_started = time.perf_counter()
        if todo and self.engine == "spark":
            report("running the Spark job", 0.05)
            computed = self._spark_compute(todo, trading_days, as_of, run)
        elif todo:
            first = min(p.first_day for p in todo)
            last = max(p.end for p in todo)
            report("loading market data", 0.05)
            panel = self.store.load_panel(first, last, as_of, run=run)
        results = []
        for i, (index_id, plan) in enumerate(plans.items()):
            report(f"computing {index_id}", 0.3 + 0.65 * i / len(plans))
            started = time.perf_counter()
            if isinstance(plan, BuildResult):
                result = plan
            else:
                try:
                    if plan.up_to_date or (panel is None and computed is None):
                        result = self._unchanged(plan, started)
                    elif computed is not None:  # computed by the Spark job (one for all)
                        got = computed[plan.definition.id]
                        if isinstance(got, Exception):
                            raise got
                        result = self._publish(plan, got, trading_days, data_run_id, job_started)
                    else:
                        assert panel is not None
                        result = self._run(plan, panel, trading_days, data_run_id, started)
                except Exception as exc:  # one index's fault stays its own
                    result = _failed(index_id, exc, started, as_of, as_of_version)
            result.engine = self.engine
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
            outcome="unchanged",
            base_date=plan.base_date,
            start_date=None,
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
        first_row = panel.row_of(np.datetime64(plan.first_day, "D"))
        last_row = int(np.searchsorted(panel.days, np.datetime64(plan.end, "D"), side="right"))
        window = panel.rows_from(first_row, last_row)
        start_state = None
        if plan.resume_from is not None:
            start_state = resume_state(self.store, plan.key, plan.resume_from, window)
        computation = compute_index(window, plan.definition, self.calendar, start=start_state)
        return self._publish(plan, computation, trading_days, data_run_id, started)

    def _spark_compute(
        self,
        plans: Sequence[BuildPlan],
        trading_days: Sequence[dt.date],
        as_of: dt.datetime | None,
        run: int | None,
    ) -> dict[str, IndexComputation | Exception]:
        """Every plan's computation from one Spark job (:mod:`index_builder.engine.spark`):
        the same kernel, run per index next to the data; each index's error stays its
        own. The stored state a build resumes from is read here, by the driver."""
        from index_builder.engine.spark.build import SparkTask, run_spark_job

        tasks: list[SparkTask] = []
        failed: dict[str, IndexComputation | Exception] = {}
        for plan in plans:
            try:
                start = None
                if plan.resume_from is not None:
                    start = stored_start(self.store, plan.key, plan.resume_from)
                tasks.append(SparkTask(plan.definition, plan.first_day, plan.end, start))
            except Exception as exc:  # one index's fault stays its own
                failed[plan.definition.id] = exc
        computed: dict[str, IndexComputation | Exception] = {}
        if tasks:
            job = run_spark_job(
                self.store,
                self.calendar,
                tasks,
                trading_days,
                as_of=as_of,
                run=run,
                options=self.spark,
            )
            self.last_spark_job = job.report
            computed.update(job.results)
        computed.update(failed)
        return computed

    def _publish(
        self,
        plan: BuildPlan,
        computation: IndexComputation,
        trading_days: Sequence[dt.date],
        data_run_id: int,
        started: float,
    ) -> BuildResult:
        """Check, store and report one index's computation (whichever engine made it):
        the days to write, the days kept (recomputed and compared with the stored
        ones), spliced spells, restated days, pro forma; one store transaction."""
        definition = plan.definition
        window = computation.panel
        write_row = 0
        kept_through = None
        previous = self.store.build_state(plan.key)
        warnings = [str(w) for w in computation.warnings]
        if plan.write_from is not None:
            write_row = window.row_of(np.datetime64(plan.write_from, "D"))
            kept_through = _as_date(window.days[write_row - 1])
            mismatch = self._check_reproduced(plan, computation, write_row)
            kept = [
                w for w in (previous.warnings if previous else []) if w[:10] < str(plan.write_from)
            ]
            warnings = kept + [w for w in warnings if w[:10] >= str(plan.write_from)]
            if mismatch:
                warnings.append(mismatch)
        levels = _level_rows(computation, write_row)
        spells = computation.spells()
        if kept_through is not None and plan.write_from is not None:
            stored = self.store.spells_from(plan.key, kept_through)
            spells = splice(stored, spells, plan.write_from, kept_through)
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
            as_of_version=plan.as_of_version,
            engine=self.engine,
        )
        announced = self._announcements(computation, state.built_through)
        restated: list[dt.date] = []
        if plan.restates and previous is not None:
            restated = self._restated_days(plan, previous, levels, spells, trading_days)
        self.store.save_results(
            state, levels, spells, announced, write_from=plan.write_from, kept_through=kept_through
        )
        if definition.base_date is None:
            self.store.pin_base_date(definition.id, plan.base_date)
        written_from = levels.dates[0] if levels.dates else None
        changes = changes_from_spells(
            spells, trading_days, base_date=plan.base_date, start=written_from
        )
        new_warnings = [w for w in warnings if written_from is None or w[:10] >= str(written_from)]
        appended = previous is None or state.built_through > previous.built_through
        mode = plan.mode
        if plan.restates and not restated:  # the correction changed no published value
            mode = "incremental" if appended else "up-to-date"
        return BuildResult(
            index_id=definition.id,
            mode=mode,
            base_date=plan.base_date,
            start_date=written_from,
            end_date=state.built_through,
            trading_days=len(levels.dates),
            rebalances=int(computation.is_rebalance[write_row:].sum()),
            changes=len(changes),
            version=state.version,
            duration_ms=(time.perf_counter() - started) * 1000,
            warnings=new_warnings,
            as_of=plan.as_of,
            as_of_version=plan.as_of_version,
            outcome="built" if mode != "up-to-date" else "unchanged",
            restated_from=restated[0] if restated else None,
            restated_days=len(restated),
        )

    def _restated_days(
        self,
        plan: BuildPlan,
        previous: BuildState,
        levels: LevelRows,
        spells: Sequence[Spell],
        trading_days: Sequence[dt.date],
    ) -> list[dt.date]:
        """The published days whose values a restatement changes: a level row that is
        not the same bit for bit, or a composition change that differs."""
        published = [d for d in levels.dates if d <= previous.built_through]
        if not published:
            return []
        # through the last published day: a day a rollback withdrew has no new row
        last = previous.built_through
        stored = self.store.read_levels(plan.key, published[0], last).to_pylist()
        new = _level_dicts(levels)
        changed = {
            row["date"] for row in stored if _row_bits(row) != _row_bits(new.get(row["date"], {}))
        }
        window = {"base_date": plan.base_date, "start": published[0], "end": published[-1]}
        before = self.store.spells_overlapping(plan.key, published[0], published[-1])
        old_changes = set(changes_from_spells(before, trading_days, **window))
        new_changes = set(changes_from_spells(spells, trading_days, **window))
        changed |= {c.date for c in old_changes ^ new_changes}
        return sorted(changed)

    def _check_reproduced(
        self, plan: BuildPlan, computation: IndexComputation, write_row: int
    ) -> str | None:
        """Compare the recomputed days before the cut with the stored ones. They are
        equal bit for bit unless the stored days came from another computation (an
        earlier release of the engine); the stored days are kept either way, and a
        difference is reported."""
        first = computation.first_row
        if write_row <= first:
            return None
        days = computation.days[first:write_row]
        stored = self.store.read_levels(plan.key, _as_date(days[0]), _as_date(days[-1]))
        recomputed = {v: lv[first:write_row] for v, lv in computation.variant_levels.items()}
        same, worst = True, 0.0
        for variant, values in recomputed.items():
            column = stored.column(f"level_{variant}").to_numpy(zero_copy_only=False)
            if len(column) != len(values):
                same, worst = False, np.inf
                break
            if not np.array_equal(values, column):  # bit for bit (levels are never NaN)
                same = False
                with np.errstate(invalid="ignore", divide="ignore"):
                    worst = max(worst, float(np.nanmax(np.abs(values / column - 1.0))))
        if same:
            return None
        log.warning(
            "%s: stored levels before %s differ from their recomputation (max relative "
            "difference %.3g); the published days are kept",
            plan.key,
            plan.write_from,
            worst,
        )
        return (
            f"{plan.write_from}: the stored levels of the days before differ from their "
            f"recomputation by up to {worst:.3g} (relative): they were computed by another "
            "release of the engine; published days are kept, run with --full to recompute them"
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


def _failed(
    index_id: str,
    exc: Exception,
    started: float,
    as_of: dt.datetime | None,
    as_of_version: int | None = None,
) -> BuildResult:
    """The result of an index that could not be built; unexpected errors are logged
    with their traceback and reported as an internal error."""
    if isinstance(exc, IndexBuilderError):
        error = exc
    else:
        log.exception("build of %s failed", index_id)
        error = BuildError(f"{index_id}: internal error: {type(exc).__name__}: {exc}"[:500])
        error.code = "internal-error"
    return BuildResult(
        index_id=index_id,
        mode="failed",
        base_date=None,
        start_date=None,
        end_date=None,
        trading_days=0,
        rebalances=0,
        changes=0,
        version=None,
        duration_ms=(time.perf_counter() - started) * 1000,
        as_of=as_of,
        as_of_version=as_of_version,
        outcome="failed",
        error=error,
    )


def version_run(store: Storage, as_of_version: int) -> int:
    """The data_run_id of a version: the newest ingestion run whose data were in force
    right after it (:class:`NotFoundError` naming ``as_of_version`` when unknown)."""
    found = store.version(as_of_version)
    if found is None:
        raise NotFoundError(
            f"as_of_version {as_of_version} is not a version of this store (list them with "
            "'index-builder versions' or GET /admin/versions)",
            field="as_of_version",
        )
    return found.data_run_id


@dataclass(frozen=True)
class StoredStart:
    """The stored state of a rebalance a build resumes at: every variant's level where
    it took effect, its constituents (symbols) and that effective date."""

    levels: dict[str, float]
    members: list[str]
    effective: dt.date

    def state_for(self, window: MarketPanel) -> StartState:
        """The kernel's :class:`StartState` over ``window`` (which starts at the
        rebalance's reference date)."""
        return StartState(
            levels=self.levels,
            members=window.securities.column_of(self.members),
            effective_row=window.row_of(np.datetime64(self.effective, "D")),
        )


def stored_start(store: Storage, index_id: str, effective: dt.date) -> StoredStart:
    """The stored state of the rebalance that took effect on ``effective``."""
    levels = store.variant_levels_on(index_id, effective)
    members = [s.symbol for s in store.spells_overlapping(index_id, effective, effective)]
    if levels is None or not members:
        raise BuildError(f"{index_id}: stored results are incomplete at {effective}; use --full")
    return StoredStart(levels, members, effective)


def resume_state(
    store: Storage, index_id: str, effective: dt.date, window: MarketPanel
) -> StartState:
    """The stored state of the rebalance that took effect on ``effective``; ``window``
    starts at its reference date. Used by builds that resume and by composition reads."""
    return stored_start(store, index_id, effective).state_for(window)


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


_LEVEL_FIELDS = (
    "level",
    "daily_return",
    "is_rebalance",
    "turnover",
    "n_constituents",
    "level_price",
    "level_total",
    "level_net_total",
)


def _level_dicts(levels: LevelRows) -> dict[dt.date, dict[str, Any]]:
    """Level rows by date, with the column names of ``read_levels``."""
    columns = {
        "level": levels.level,
        "daily_return": levels.daily_return,
        "is_rebalance": levels.is_rebalance,
        "turnover": levels.turnover,
        "n_constituents": levels.n_constituents,
        **{f"level_{v}": values for v, values in levels.variant_levels.items()},
    }
    return {
        day: {name: values[i] for name, values in columns.items()}
        for i, day in enumerate(levels.dates)
    }


def _row_bits(row: dict[str, Any]) -> tuple[Any, ...]:
    """A level row's values, floats by their exact bits (NaN equals NaN)."""
    return tuple(
        float(row[f]).hex() if isinstance(row.get(f), float) else row.get(f) for f in _LEVEL_FIELDS
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _as_date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
