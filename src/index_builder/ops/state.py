"""What the database says about the service's data: freshness, ingestion, builds.

Ingestion runs in the CLI process, so its outcome can only be learnt from the
database: readiness and the scrape-time metrics both read one
:class:`StoreState`, taken with a handful of cheap queries.

Freshness is judged on the exchange calendar: the data is stale when its last
trading day is older than the latest session whose close (early closes
included) plus a grace period has passed. Weekends and holidays have no
session, so they never make data stale.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

from index_builder.calendar import SessionCalendar
from index_builder.services.builds import data_waiting
from index_builder.storage.base import BuildState
from index_builder.storage.duckdb.store import DuckDBStore


def utc_now() -> dt.datetime:
    """The current moment, aware UTC (the default clock of readiness)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Freshness:
    """The last trading day stored against the session that should be in by now."""

    last_trading_day: dt.date | None
    expected_session: dt.date | None
    stale: bool
    age_seconds: float | None
    """Seconds since the close of the last trading day stored (None: no data)."""

    def as_dict(self) -> dict[str, object]:
        """The readiness component."""
        if self.last_trading_day is None:
            detail = "no market data: run 'index-builder ingest'"
        elif self.stale:
            detail = (
                f"the last trading day stored is {self.last_trading_day}; the session of "
                f"{self.expected_session} has closed and should be ingested"
            )
        else:
            detail = "up to date with the exchange calendar"
        return {
            "status": "degraded" if self.stale else "ok",
            "last_trading_day": self.last_trading_day,
            "expected_session": self.expected_session,
            "data_age_seconds": None if self.age_seconds is None else round(self.age_seconds, 1),
            "stale": self.stale,
            "detail": detail,
        }


def evaluate_freshness(
    last_day: dt.date | None,
    calendar: SessionCalendar,
    now: dt.datetime,
    grace: dt.timedelta,
) -> Freshness:
    """Compare ``last_day`` with the latest session closed more than ``grace`` before ``now``."""
    expected = calendar.last_closed_session(now, grace)
    if last_day is None:
        return Freshness(None, expected, True, None)
    close = calendar.close_of(last_day)
    if close is None:  # not a session of this calendar: count from the end of that day
        close = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), dt.UTC)
    age = max((now - close).total_seconds(), 0.0)
    stale = expected is not None and last_day < expected
    return Freshness(last_day, expected, stale, age)


@dataclass
class BuildOutcome:
    """How the last build of an index in this process ended."""

    status: str  # ok | failed
    finished_at: dt.datetime
    duration_seconds: float
    error: str | None = None


class BuildOutcomes:
    """The last build outcome of each index in this process (thread-safe).

    Successful builds are also in the database (build state); failed ones are
    not, so the API process remembers them for readiness and the metrics.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[str, BuildOutcome] = {}

    def record(self, index_id: str, outcome: BuildOutcome) -> None:
        """Remember the outcome of a build of ``index_id``."""
        with self._lock:
            self._outcomes[index_id] = outcome

    def forget(self, index_id: str) -> None:
        """Drop the outcome of an index whose rules changed or that was removed."""
        with self._lock:
            self._outcomes.pop(index_id, None)

    def snapshot(self) -> dict[str, BuildOutcome]:
        """A copy of every recorded outcome."""
        with self._lock:
            return dict(self._outcomes)


@dataclass
class StoreState:
    """One reading of the database for readiness and the metrics."""

    schema_version: int
    freshness: Freshness
    last_run: dict[str, Any] | None
    """The newest ingestion run (possibly still running)."""
    last_finished_run: dict[str, Any] | None
    rejections: dict[str, int]
    """Rows of the last finished run quarantined, by ``<source>:<reason>``."""
    builds: list[BuildState]
    outcomes: dict[str, BuildOutcome] = field(default_factory=dict)
    broken_definitions: dict[str, str] = field(default_factory=dict)
    """Stored definitions that no longer validate: id -> why (every other index is
    served; these are left out until replaced or removed)."""
    waiting: dict[str, dt.date] = field(default_factory=dict)
    """Per index: the first trading day of data newer than its build (reads answer
    from the published build until the next build)."""


def read_state(
    store: DuckDBStore,
    calendar: SessionCalendar,
    now: dt.datetime,
    grace: dt.timedelta,
    outcomes: BuildOutcomes | None = None,
) -> StoreState:
    """Read the state (raises when the database cannot be used)."""
    schema_version = store.ping()
    freshness = evaluate_freshness(store.last_trading_day(), calendar, now, grace)
    last_run = store.last_ingest_run()
    finished = (
        last_run
        if last_run is None or last_run["status"] != "running"
        else store.last_ingest_run(finished=True)
    )
    rejections = store.rejection_counts(finished["run_id"]) if finished else {}
    builds = store.current_build_states()
    return StoreState(
        schema_version=schema_version,
        freshness=freshness,
        last_run=last_run,
        last_finished_run=finished,
        rejections=rejections,
        builds=builds,
        outcomes=outcomes.snapshot() if outcomes is not None else {},
        waiting=data_waiting(store, builds),
        broken_definitions=store.broken_definitions(),
    )


def ingestion_component(state: StoreState) -> dict[str, object]:
    """The readiness component of the last ingestion run (a failed run degrades)."""
    run = state.last_run
    if run is None:
        return {"status": "degraded", "detail": "no ingestion run yet"}
    finished = state.last_finished_run
    # interrupted: its process was killed (marked by the next process that opened the
    # database); reported until a later run finishes
    failed = finished is not None and finished["status"] in ("failed", "interrupted")
    component: dict[str, object] = {
        "status": "degraded" if failed else "ok",
        "run_id": run["run_id"],
        "provider": run["provider"],
        "state": run["status"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "rows_accepted": run["rows_accepted"],
        "rows_rejected": run["rows_rejected"],
    }
    if finished is not None and finished is not run:
        component["last_finished"] = {"run_id": finished["run_id"], "state": finished["status"]}
    if failed and finished is not None:
        component["detail"] = finished["message"]
    return component


def builds_component(state: StoreState) -> dict[str, object]:
    """The readiness component of every index's last build (a failed one degrades).

    An index whose data changed after its build (new days or corrections) says so
    (``data_waiting_from``): its reads still answer from the published build, which
    is normal between an ingestion and the next build, so it does not degrade."""
    indices: dict[str, dict[str, object]] = {}
    for build in state.builds:
        waiting = state.waiting.get(build.index_id)
        indices[build.index_id] = {
            "status": "ok",
            "version": build.version,
            "built_through": build.built_through,
            "built_at": build.built_at,
            "up_to_date": waiting is None,
            "data_waiting_from": waiting,
        }
    for index_id, outcome in state.outcomes.items():
        entry = indices.setdefault(index_id, {})
        if outcome.status == "failed":
            entry.update(
                status="failed", failed_at=outcome.finished_at, error=outcome.error or "failed"
            )
        else:
            entry.setdefault("status", "ok")
    failed = sorted(i for i, e in indices.items() if e.get("status") == "failed")
    component: dict[str, object] = {
        "status": "degraded" if failed else "ok",
        "indices": dict(sorted(indices.items())),
    }
    details = []
    if failed:
        details.append(f"last build failed: {', '.join(failed)}")
    if state.waiting:
        details.append(
            f"newer data waits for a build: {', '.join(sorted(state.waiting))} (reads answer "
            "from the published builds)"
        )
    if details:
        component["detail"] = "; ".join(details)
    return component


def definitions_component(state: StoreState) -> dict[str, object]:
    """The readiness component of the stored definitions: one that no longer validates
    degrades it, named with the reason (the other indices are served)."""
    broken = state.broken_definitions
    if not broken:
        return {"status": "ok"}
    return {
        "status": "degraded",
        "broken": dict(sorted(broken.items())),
        "detail": f"stored definitions that no longer validate: {', '.join(sorted(broken))} "
        "(replace them with POST /indices?replace=true or remove them)",
    }


def last_build_success(state: StoreState) -> dict[str, int]:
    """Per index: 1 when its last build succeeded, 0 when it failed (built or tried only)."""
    result = {build.index_id: 1 for build in state.builds}
    for index_id, outcome in state.outcomes.items():
        result[index_id] = 1 if outcome.status == "ok" else 0
    return result
