"""One daily cycle: backfill missing sessions, ingest the latest, build, invalidate.

The cycle's target is the latest XNYS session whose close + the offset has
passed (early closes come from the calendar's session closes; holidays are no
sessions). Every step is retried with exponential backoff (injectable sleep) and
recorded in ``schedule_runs`` with its status, attempts, duration and message.
A step that still fails ends the cycle ``failed``; the steps after it are
recorded as ``skipped``, except ``invalidate`` after a build step that ran.

The build step builds every index; one index that cannot be built does not stop
the others (each is built and published), but it fails the step, so the cycle
ends ``failed``, ``index-builder daily`` exits 1 and the last-success metric is
not moved: the alerting that watches the cycle fires. The step's message counts
the indices built, unchanged and failed and names each failure with its reason
(:attr:`CycleResult.builds` has every outcome). A failure that the same data
would give again (an index with no eligible security, a bad definition) is not
retried; an unexpected or storage error of an index is, for those indices only.
Because the other indices were published, ``invalidate`` still runs after a
failed build step.

With ``INDEX_BUILDER_BACKUP_DIR`` set, a last step ``backup`` backs up the store
(:func:`index_builder.storage.backup.write_backup`, keeping
``INDEX_BUILDER_BACKUP_KEEP`` complete backups) whenever the build step ran. A
failed backup fails that step (and so the cycle, for the alerting) and nothing
else: the builds stay published.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from index_builder.ingest.job import run_ingestion
from index_builder.ingest.universe import read_universe_file
from index_builder.ops.flags import FlagStore
from index_builder.ops.metrics import SCHEDULE_LAST_SUCCESS, SCHEDULE_STEP_FAILURES
from index_builder.providers import get_provider
from index_builder.providers.synthetic import DEFAULT_SEED, SyntheticProvider
from index_builder.services.builds import BuildResult, IndexBuilder
from index_builder.settings import Settings
from index_builder.storage.backup import write_backup
from index_builder.storage.base import ScheduleStep
from index_builder.storage.duckdb.store import DuckDBStore

log = logging.getLogger("index_builder.schedule")

STEPS = ("backfill", "ingest", "build", "invalidate")
BACKUP_STEP = "backup"
"""The last step, when the cycle backs up (``CycleConfig.backup_dir``)."""


@dataclass(frozen=True)
class CycleConfig:
    """What a cycle ingests and how it retries (from the ``schedule_*`` settings)."""

    provider: str = "synthetic"
    offset: dt.timedelta = dt.timedelta(minutes=30)
    universe: list[str] | None = None
    synthetic_symbols: int = 3000
    backfill_sessions: int = 30
    retries: int = 3
    retry_seconds: float = 60.0
    backup_dir: str | None = None
    """Back up the store after the build step into this folder (or s3://...)."""
    backup_keep: int = 7

    def query(self, first: dt.date, last: dt.date) -> dict[str, Any]:
        """The provider query for the sessions ``first`` .. ``last``."""
        query: dict[str, Any] = {"start": first, "end": last}
        if all(isinstance(get_provider(p), SyntheticProvider) for p in self.provider.split(",")):
            query.update(seed=DEFAULT_SEED, symbols=self.synthetic_symbols)
        if self.universe is not None:
            query["universe"] = self.universe
        return query


def config_from_settings(settings: Settings) -> CycleConfig:
    """The cycle's configuration from the ``schedule_*`` settings."""
    return CycleConfig(
        provider=settings.schedule_provider,
        offset=dt.timedelta(minutes=settings.schedule_offset_minutes),
        universe=(
            read_universe_file(settings.schedule_universe) if settings.schedule_universe else None
        ),
        synthetic_symbols=settings.schedule_symbols,
        backfill_sessions=settings.schedule_backfill_sessions,
        retries=settings.schedule_retries,
        retry_seconds=settings.schedule_retry_seconds,
        backup_dir=settings.backup_dir or None,
        backup_keep=settings.backup_keep,
    )


@dataclass
class CycleResult:
    """The outcome of one cycle."""

    cycle_id: int | None
    session: dt.date | None
    status: str  # succeeded | failed | up-to-date | no-session
    steps: list[ScheduleStep] = field(default_factory=list)
    backfilled: list[dt.date] = field(default_factory=list)
    builds: list[BuildResult] = field(default_factory=list)
    """The build step's outcome of each index (the last attempt's, per index)."""

    @property
    def ok(self) -> bool:
        """True unless a step failed."""
        return self.status != "failed"


def run_daily_cycle(
    store: DuckDBStore,
    config: CycleConfig,
    *,
    now: dt.datetime,
    flags: FlagStore | None = None,
    invalidate: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    record_clock: Callable[[], dt.datetime] | None = None,
) -> CycleResult:
    """Run one cycle for the latest session closed (plus the offset) at ``now`` (aware).

    ``invalidate`` refreshes the caches of a server sharing this store (the API's
    in-memory build versions and local cache tier); standalone there is none.
    """
    calendar = store.calendar
    target = calendar.last_closed_session(now, config.offset)
    if target is None:
        return CycleResult(None, None, "no-session")
    last = store.last_trading_day()
    if last is not None and last >= target:
        log.info("daily cycle: data already through %s (latest session %s)", last, target)
        return CycleResult(None, target, "up-to-date")
    missing = calendar.sessions_between(last, target) if last is not None else [target]
    backfill = missing[:-1][-config.backfill_sessions :] if config.backfill_sessions else []
    clock = record_clock or (lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
    result = CycleResult(store.next_cycle_id(), target, "running", backfilled=backfill)
    log.info("daily cycle %s: session %s, backfill %s", result.cycle_id, target, backfill)

    def ingest(first: dt.date, last_day: dt.date) -> str:
        report = run_ingestion(store, config.provider, config.query(first, last_day))
        if report.rows_accepted == 0:
            raise RuntimeError(f"no valid bars for {first}..{last_day} from {config.provider}")
        return (
            f"run {report.run_id}: {report.rows_accepted} rows accepted, "
            f"{report.rows_rejected} rejected, {report.rows_current_basis} current-basis"
        )

    outcomes: dict[str, BuildResult] = {}  # across the build step's attempts

    def build() -> str:
        builder = IndexBuilder(store, calendar, flags)
        ids = [d.id for d, _ in store.list_definitions()]
        off = builder.switched_off(ids)
        todo = [i for i in ids if i not in off and _to_attempt(outcomes.get(i))]
        if todo or not outcomes:
            for r in builder.build(todo):
                outcomes[r.index_id] = r
        result.builds = [outcomes[i] for i in ids if i in outcomes]
        message = _build_message(result.builds, len(off))
        broken = [r for r in result.builds if r.failed]
        if broken:
            raise StepFailed(message, retry=any(_retryable(r) for r in broken))
        return message

    def clear() -> str:
        if invalidate is None:
            return "no server caches in this process (Redis keys name the build version)"
        invalidate()
        return "API build versions forgotten, local cache tier dropped"

    def back_up() -> str:
        assert config.backup_dir is not None
        manifest = write_backup(store, config.backup_dir, keep=config.backup_keep)
        text = (
            f"{manifest.location}: {len(manifest.tables)} tables, {manifest.total_rows} rows, "
            f"{manifest.total_bytes} bytes"
        )
        return text + (f"; {len(manifest.removed)} older removed" if manifest.removed else "")

    actions: dict[str, Callable[[], str] | None] = {
        "backfill": (lambda: ingest(backfill[0], backfill[-1])) if backfill else None,
        "ingest": lambda: ingest(target, target),
        "build": build,
        "invalidate": clear,
        BACKUP_STEP: back_up,
    }
    failed = False
    for name in (*STEPS, BACKUP_STEP) if config.backup_dir else STEPS:
        action = actions[name]
        # a failed build may have published other indices: their caches still go, and
        # the store is backed up
        built = any(s.step == "build" and s.status != "skipped" for s in result.steps)
        after_build = name in ("invalidate", BACKUP_STEP) and built
        if (failed and not after_build) or action is None:
            why = "an earlier step failed" if failed else "no missing session"
            result.steps.append(_record(store, result, name, "skipped", 0, clock, clock(), why))
            continue
        step = _run_step(store, result, name, action, config, sleep, clock)
        result.steps.append(step)
        failed = failed or step.status == "failed"
    result.status = "failed" if failed else "succeeded"
    if not failed:
        SCHEDULE_LAST_SUCCESS.set(now.timestamp())
    log.info("daily cycle %s %s", result.cycle_id, result.status)
    return result


class StepFailed(Exception):
    """A step that did its work but failed in part (the build step with a failed
    index); the message is recorded as it is, and retried only when ``retry``."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def _retryable(result: BuildResult) -> bool:
    """A failure the next attempt may not repeat: an unexpected (internal) or a
    storage error, not what the data or the definition make certain."""
    error = result.error
    return error is not None and (error.code == "internal-error" or error.exit_code != 2)


def _to_attempt(previous: BuildResult | None) -> bool:
    """Whether an index is built by this attempt of the build step."""
    return previous is None or (previous.failed and _retryable(previous))


MESSAGE_LIMIT = 2000


def _build_message(results: list[BuildResult], switched_off: int) -> str:
    """``31 indices: 2 built, 28 unchanged, 1 failed (id: reason); 0 switched off``."""
    counts = {o: sum(1 for r in results if r.outcome == o) for o in ("built", "unchanged")}
    failed = [r for r in results if r.failed]
    text = (
        f"{len(results)} indices: {counts['built']} built, {counts['unchanged']} unchanged, "
        f"{len(failed)} failed"
    )
    if failed:
        text += " (" + "; ".join(f"{r.index_id}: {r.reason}" for r in failed) + ")"
    text += f"; {switched_off} switched off"
    if len(text) > MESSAGE_LIMIT:  # the reasons are long: the ids are never cut
        names = ", ".join(r.index_id for r in failed)
        text = (
            f"{len(results)} indices: {counts['built']} built, {counts['unchanged']} "
            f"unchanged, {len(failed)} failed ({names}); {switched_off} switched off"
        )
    return text


def _run_step(
    store: DuckDBStore,
    result: CycleResult,
    name: str,
    action: Callable[[], str],
    config: CycleConfig,
    sleep: Callable[[float], None],
    clock: Callable[[], dt.datetime],
) -> ScheduleStep:
    """Run one step with retries and exponential backoff, and record it."""
    started = clock()
    attempts = 0
    while True:
        attempts += 1
        try:
            message = action()
        except Exception as exc:  # retried (unless it says otherwise): the next may succeed
            SCHEDULE_STEP_FAILURES.labels(step=name).inc()
            partial = exc if isinstance(exc, StepFailed) else None
            message = str(exc) if partial is not None else f"{type(exc).__name__}: {exc}"[:500]
            log.warning("daily cycle step %s failed (attempt %d): %s", name, attempts, message)
            if partial is not None and not partial.retry:
                return _record(store, result, name, "failed", attempts, clock, started, message)
            if attempts > config.retries:
                log.error("daily cycle step %s gave up after %d attempts", name, attempts)
                return _record(store, result, name, "failed", attempts, clock, started, message)
            sleep(config.retry_seconds * 2 ** (attempts - 1))
            continue
        return _record(store, result, name, "succeeded", attempts, clock, started, message)


def _record(
    store: DuckDBStore,
    result: CycleResult,
    name: str,
    status: str,
    attempts: int,
    clock: Callable[[], dt.datetime],
    started: dt.datetime,
    message: str | None,
) -> ScheduleStep:
    finished = clock()
    assert result.cycle_id is not None
    step = ScheduleStep(
        cycle_id=result.cycle_id,
        step=name,
        session=result.session,
        status=status,
        attempts=attempts,
        started_at=started,
        finished_at=finished,
        duration_ms=(finished - started).total_seconds() * 1000.0,
        message=message,
    )
    store.record_schedule_step(step)
    return step
