"""Rolling the market data back to a version, then restating the indices built since.

A rollback is a data correction (docs/methodology.md, "Published history"): the
store reverts the data to their state right after the target version as one new
ingestion run, recorded as a version (:meth:`~index_builder.storage.base.Storage.
rollback_data`); every index whose current build saw data written after the target
is then built again through the normal incremental path, which restates it from the
first changed day (the earlier days stay as published). A rollback is reversible:
rolling back to a version between the rollback and the data it undid re-does them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from index_builder.calendar import SessionCalendar
from index_builder.errors import ConflictError, InvalidInputError, NotFoundError
from index_builder.ops.flags import FlagStore
from index_builder.services.builds import BuildResult, IndexBuilder
from index_builder.storage.base import RollbackReport, Storage


@dataclass
class RollbackOutcome:
    """What ``rollback`` did: the data rollback (None: nothing to undo) and the builds."""

    target_version: int
    target_run: int
    report: RollbackReport | None
    builds: list[BuildResult] = field(default_factory=list)
    message: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    """Indices a feature flag switches off (not rebuilt), with the reason."""

    @property
    def failed(self) -> bool:
        """True when an index could not be rebuilt (the data rollback stands)."""
        return any(b.failed for b in self.builds)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (CLI ``--format json``, ``POST /admin/rollback``)."""
        report = self.report
        return {
            "target_version": self.target_version,
            "target_run": self.target_run,
            "nothing_to_undo": report is None,
            "run_id": None if report is None else report.run_id,
            "version_id": None if report is None else report.version_id,
            "prices_restored": 0 if report is None else report.prices_restored,
            "prices_withdrawn": 0 if report is None else report.prices_withdrawn,
            "securities_restored": 0 if report is None else report.securities_restored,
            "securities_withdrawn": 0 if report is None else report.securities_withdrawn,
            "shares_restored": 0 if report is None else report.shares_restored,
            "shares_withdrawn": 0 if report is None else report.shares_withdrawn,
            "runs_undone": [] if report is None else list(report.runs_undone),
            "runs_redone": [] if report is None else list(report.runs_redone),
            "builds": [b.as_dict() for b in self.builds],
            "skipped": [{"index": i, "reason": why} for i, why in sorted(self.skipped.items())],
            "message": self.message,
        }


def parse_version_id(value: object, label: str = "to_version") -> int:
    """A version id given as text or a number: a positive integer, else
    :class:`InvalidInputError` naming ``label``."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise InvalidInputError(
            f"{label}: {value!r} is not a version id (a positive integer; list them with "
            "'index-builder versions')",
            field=label.lstrip("-").replace("-", "_"),
        )
    return int(text)


def rollback(
    store: Storage,
    calendar: SessionCalendar,
    to_version: int,
    *,
    build: bool = True,
    flags: FlagStore | None = None,
    label: str = "to_version",
    on_index: Callable[[BuildResult], None] | None = None,
) -> RollbackOutcome:
    """Revert the data to the state right after ``to_version`` and (``build``) rebuild
    every index whose current build saw data written after it.

    An unknown version is :class:`NotFoundError` naming ``label``; a version whose data
    are those in force (or newer) has nothing to undo: the outcome says so and nothing
    is recorded. The indices are built incrementally (restated from the first changed
    day); one that cannot be built does not stop the others, and those a feature flag
    switches off are left out (``skipped``)."""
    if to_version < 1:
        raise InvalidInputError(
            f"{label}: {to_version} is not a version id (a positive integer)", field="to_version"
        )
    target = store.version(to_version)
    if target is None:
        newest = store.versions(limit=1)
        known = f"the newest is {newest[0].version_id}" if newest else "there is none yet"
        raise NotFoundError(
            f"{label}: unknown version {to_version} ({known}; list them with "
            "'index-builder versions')",
            field="to_version",
        )
    latest = store.latest_run_id()
    if target.data_run_id >= latest:
        return RollbackOutcome(
            to_version,
            target.data_run_id,
            None,
            message=f"nothing to undo: the data in force (ingestion run {latest}) are "
            f"those of version {to_version}; nothing was changed or recorded",
        )
    try:
        report = store.rollback_data(to_version)
    except ConflictError as exc:  # an ingestion ended in between and left nothing to undo
        return RollbackOutcome(to_version, target.data_run_id, None, message=exc.message)
    outcome = RollbackOutcome(
        to_version,
        report.target_run,
        report,
        message=f"rolled back the data to version {to_version} (ingestion run "
        f"{report.target_run}) as run {report.run_id}, recorded as version "
        f"{report.version_id}: {report.prices_restored} price rows restored, "
        f"{report.prices_withdrawn} withdrawn; {report.securities_restored} securities "
        f"restored, {report.securities_withdrawn} withdrawn; {report.shares_restored} share "
        f"counts restored, {report.shares_withdrawn} withdrawn; runs undone: "
        f"{_runs(report.runs_undone)}; runs re-done: {_runs(report.runs_redone)}",
    )
    if build:
        ids = stale_indices(store, report.target_run)
        builder = IndexBuilder(store, calendar, flags)
        outcome.skipped = builder.switched_off(ids)
        ids = [i for i in ids if i not in outcome.skipped]
        if ids:
            outcome.builds = builder.build(ids, on_index=on_index)
    return outcome


def stale_indices(store: Storage, target_run: int) -> list[str]:
    """The indices whose current build saw data written after ``target_run`` (never a
    build as of a moment or a version)."""
    return [
        s.index_id
        for s in store.current_build_states()
        if s.as_of is None and s.as_of_version is None and s.data_run_id > target_run
    ]


def _runs(runs: list[int]) -> str:
    return ", ".join(str(r) for r in runs) or "none"
