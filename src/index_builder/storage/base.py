"""The storage interface every backend implements, and the records it exchanges.

Backends (DuckDB today; an Iceberg data lake later) live in one package each
and declare what they can do in a :class:`StorageCapabilities`. Services and the
engine talk to :class:`Storage` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.kernel import Spell
from index_builder.engine.panel import MarketPanel, SecurityMaster

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class StorageCapabilities:
    """What a backend supports; callers check these instead of backend types."""

    name: str
    transactions: bool
    concurrent_writers: bool
    persistent: bool


@dataclass
class IngestReport:
    """What one ingestion run did (also the row of ``ingest_runs``)."""

    run_id: int
    provider: str
    status: str
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    duplicates_collapsed: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    securities_changed: int = 0
    min_date: dt.date | None = None
    max_date: dt.date | None = None
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    message: str | None = None
    known_at: dt.datetime | None = None
    """The run's start (naive UTC): the known_at of every row that gives none."""
    run_ids: list[int] = field(default_factory=list)
    """Provider runs: every batch's run (``run_id`` is the last)."""
    summary: dict[str, Any] | None = None
    """Provider runs: counts per provider and per failure reason (see providers.chain)."""
    rows_current_basis: int = 0
    """Accepted rows whose shares are today's count applied to their date (basis
    ``current``): their market caps carry survivorship and look-ahead bias."""


@dataclass(frozen=True)
class ScheduleStep:
    """One step of one daily cycle (a row of ``schedule_runs``)."""

    cycle_id: int
    step: str  # backfill | ingest | build | invalidate
    session: dt.date | None
    status: str  # succeeded | failed | skipped
    attempts: int
    started_at: dt.datetime  # naive UTC
    finished_at: dt.datetime
    duration_ms: float
    message: str | None = None


@dataclass(frozen=True)
class BuildState:
    """What the store knows about an index's last successful build."""

    index_id: str
    version: int
    definition_hash: str
    base_date: dt.date
    built_through: dt.date
    data_run_id: int
    built_at: dt.datetime
    duration_ms: float | None
    warnings: list[str]
    as_of: dt.datetime | None = None
    """The as-of moment of the build (naive UTC); None for the current results."""
    as_of_version: int | None = None
    """The version whose data the build used (``<index id>@v<V>``); None otherwise."""
    engine: str = "numpy"
    """The engine that computed the build: ``numpy`` or ``spark`` (migration v17)."""


VERSION_KINDS = ("ingest", "build", "definition", "rollback", "restore")
"""What a version records: an ingestion run that ended succeeded or partial, a build
stored, a definition changed or removed, a rollback of the data, a restore."""


@dataclass(frozen=True)
class VersionInfo:
    """One version of a store's content (a row of ``versions``): every change is one."""

    version_id: int
    kind: str  # one of VERSION_KINDS
    created_at: dt.datetime  # naive UTC
    data_run_id: int
    """The newest ingestion run whose data are in force after the change (reads as of
    this version read the data written by that run and the earlier ones)."""
    run_id: int | None
    """ingest / rollback: the run recorded."""
    index_id: str | None
    """build: the result key stored; definition: the index."""
    build_version: int | None
    rows: int | None
    """ingest: rows accepted; build: level rows written; rollback: rows restored."""
    detail: dict[str, Any]
    snapshots: dict[str, int] | None = None
    """The lake's table snapshot ids at this version (None: DuckDB)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (CLI ``--format json``, ``GET /admin/versions``)."""
        return {
            "version_id": self.version_id,
            "kind": self.kind,
            "created_at": self.created_at,
            "data_run_id": self.data_run_id,
            "run_id": self.run_id,
            "index_id": self.index_id,
            "build_version": self.build_version,
            "rows": self.rows,
            "detail": self.detail,
            "snapshots": self.snapshots,
        }


@dataclass(frozen=True)
class RollbackReport:
    """What a rollback of the data did (``Storage.rollback_data``).

    ``run_id``: the rollback's own ingestion run; ``version_id``: the version that
    records it; ``target_run``: the data_run_id of ``target_version``, the run whose
    data are in force again. ``*_withdrawn``: current rows written after it, moved to
    the history; ``*_restored``: rows in force at it, current again. ``runs_undone``:
    the runs now marked rolled back; ``runs_redone``: runs up to the target that an
    earlier rollback had undone and are in force again.
    """

    run_id: int
    version_id: int
    target_version: int
    target_run: int
    prices_restored: int
    prices_withdrawn: int
    securities_restored: int
    securities_withdrawn: int
    shares_restored: int
    shares_withdrawn: int
    runs_undone: list[int]
    runs_redone: list[int] = field(default_factory=list)
    min_date: dt.date | None = None
    max_date: dt.date | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class LevelRows:
    """Computed level rows to persist (parallel sequences)."""

    dates: Sequence[dt.date]
    level: Sequence[float]
    daily_return: Sequence[float]
    is_rebalance: Sequence[bool]
    turnover: Sequence[float | None]
    n_constituents: Sequence[int]
    variant_levels: dict[str, Sequence[float]]  # "price" | "total" | "net_total"
    reference_date: Sequence[dt.date | None]  # on rebalance rows: the selection's reference


@dataclass(frozen=True)
class AnnouncedConstituent:
    """One constituent of a selection announced but not yet in force (pro-forma)."""

    reference_date: dt.date
    effective_date: dt.date | None  # None: beyond the exchange calendar
    sessions_ahead: int  # sessions after the last built close until it takes effect
    symbol: str
    name: str | None
    sector: str | None
    rank: int
    weight: float  # target weight
    market_cap: float  # on the reference date


class Storage(Protocol):
    """The operations the services need from a market data and results store."""

    capabilities: StorageCapabilities

    # ingestion
    def ingest(
        self,
        securities: pa.Table,
        prices: pa.RecordBatchReader | pa.Table,
        *,
        provider: str,
        params: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Validate and merge one input; records the run (also when it fails)."""
        ...

    def ingest_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent ingestion runs, newest first."""
        ...

    def quarantined(self, run_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Quarantined rows (of one run, or of all runs), newest first."""
        ...

    def stored_sessions(
        self, symbols: Sequence[str], start: dt.date, end: dt.date
    ) -> dict[str, set[dt.date]]:
        """The dates stored per symbol in [start, end]."""
        ...

    def quarantine_provider_rejects(
        self, run_id: int, rejects: Sequence[tuple[str, str, str, str, str | None]]
    ) -> None:
        """Quarantine provider failures ``(provider, symbol, reason, message, snippet)``."""
        ...

    def set_run_outcome(self, run_id: int, status: str, message: str | None) -> None:
        """Record a provider run's status and summary (a version when it ends succeeded
        or partial and none records the run yet)."""
        ...

    # versions: every change of the content is one (storage/base.py VersionInfo)
    def versions(self, limit: int = 50, kind: str | None = None) -> list[VersionInfo]:
        """The newest versions first (of one kind)."""
        ...

    def version(self, version_id: int) -> VersionInfo | None:
        """One version, or None."""
        ...

    def rollback_data(self, to_version: int) -> RollbackReport:
        """Revert the market data to their state right after ``to_version``, as one new
        ingestion run recorded as a ``rollback`` version, all or nothing (NotFoundError:
        unknown version; ConflictError: nothing to undo)."""
        ...

    def record_restore(self, detail: dict[str, Any]) -> int:
        """Record a restore of the whole store as a version; returns its id."""
        ...

    # market data for the engine; ``as_of`` (naive UTC): the values known at that
    # moment; ``run``: the values as written by that ingestion run and the earlier ones
    # (the data a published build used)
    def trading_days(
        self, as_of: dt.datetime | None = None, *, run: int | None = None
    ) -> list[dt.date]:
        """All trading days (dates with at least one valid bar), ascending."""
        ...

    def security_master(
        self, as_of: dt.datetime | None = None, *, run: int | None = None
    ) -> SecurityMaster:
        """Securities sorted by symbol (as they were known at ``as_of`` / after ``run``)."""
        ...

    def last_built_day(self, index_id: str, day: dt.date) -> dt.date | None:
        """The last day with a stored level on or before ``day``."""
        ...

    def load_panel(
        self,
        start: dt.date,
        end: dt.date,
        as_of: dt.datetime | None = None,
        *,
        run: int | None = None,
    ) -> MarketPanel:
        """Every security's prices and market caps on every trading day in [start, end]."""
        ...

    def price_versions(self, symbol: str, day: dt.date) -> list[dict[str, Any]]:
        """Every version of one bar, oldest first (the current one last)."""
        ...

    def latest_run_id(self) -> int:
        """The newest finished ingestion run id (0 when none): the data a build sees."""
        ...

    def first_changed_date(self, since_run_id: int) -> dt.date | None:
        """Earliest trading day whose inputs changed after ``since_run_id``."""
        ...

    # definitions
    def list_definitions(self) -> list[tuple[IndexDefinition, bool]]:
        """All definitions with their built-in flag."""
        ...

    def get_definition(self, index_id: str) -> tuple[IndexDefinition, bool] | None:
        """One definition with its built-in flag, or None."""
        ...

    def put_definition(self, definition: IndexDefinition, *, builtin: bool) -> None:
        """Create or replace a definition (new rules delete the index's as-of results)."""
        ...

    def put_definitions(self, items: Sequence[tuple[IndexDefinition, bool]]) -> None:
        """Create or replace several definitions (and built-in flags) atomically."""
        ...

    def delete_definition(self, index_id: str) -> None:
        """Remove a definition, its results and its as-of results."""
        ...

    def pinned_base_date(self, index_id: str) -> dt.date | None:
        """The base date a definition without one was first built with (None: not yet)."""
        ...

    def pin_base_date(self, index_id: str, base_date: dt.date) -> None:
        """Fix the base date of a definition without one, unless already fixed."""
        ...

    # results, stored under a result key: the index id, or '<index id>@<as of>'
    def build_state(self, index_id: str) -> BuildState | None:
        """The last successful build stored under a result key, or None."""
        ...

    def as_of_builds(self, index_id: str) -> list[BuildState]:
        """The stored builds of an index as of a moment (by moment), then as of a
        version (by version)."""
        ...

    def current_build_states(self) -> list[BuildState]:
        """The build state of every index's current results (no as-of builds)."""
        ...

    def next_build_version(self) -> int:
        """A build version never handed out before (cache keys include it)."""
        ...

    def last_rebalance(self, index_id: str, day: dt.date, *, inclusive: bool) -> dt.date | None:
        """The last rebalance before (or on, if inclusive) ``day``."""
        ...

    def variant_levels_on(self, index_id: str, day: dt.date) -> dict[str, float] | None:
        """Every return variant's stored level on ``day``."""
        ...

    def reference_date_on(self, index_id: str, day: dt.date) -> dt.date | None:
        """The reference date of the selection that took effect on ``day`` (a rebalance)."""
        ...

    def announcements(self, index_id: str) -> list[AnnouncedConstituent]:
        """Selections announced but not yet in force after the last built close."""
        ...

    def level_on(self, index_id: str, day: dt.date) -> float | None:
        """The stored level on ``day``."""
        ...

    def spells_from(self, index_id: str, day: dt.date) -> list[Spell]:
        """Spells in force on or after ``day``."""
        ...

    def spells_overlapping(self, index_id: str, start: dt.date, end: dt.date) -> list[Spell]:
        """Spells in force at some point of [start, end]."""
        ...

    def save_results(
        self,
        state: BuildState,
        levels: LevelRows,
        spells: Sequence[Spell],
        announcements: Sequence[AnnouncedConstituent],
        *,
        write_from: dt.date | None,
        kept_through: dt.date | None = None,
    ) -> None:
        """Atomically store a build: every result of the key (``write_from`` None), or
        the levels from ``write_from`` on and the spells still in force after the close
        of ``kept_through``; replace the announced selections. Nothing else changes."""
        ...

    def read_levels(self, index_id: str, start: dt.date, end: dt.date) -> pa.Table:
        """Stored levels in [start, end], ascending."""
        ...

    def built_days(self, index_id: str) -> list[dt.date]:
        """Days with a stored level, ascending."""
        ...

    # whole store (backup, restore, a change of backend): storage/tables.py
    def read_table(self, name: str, batch_rows: int = 1 << 17) -> pa.RecordBatchReader:
        """Every row of a persistent table, streamed in a stable order."""
        ...

    def table_counts(self) -> dict[str, int]:
        """Rows of every persistent table."""
        ...

    def load_tables(self, tables: dict[str, pa.RecordBatchReader | pa.Table]) -> None:
        """Fill an empty store with the given tables, all or nothing."""
        ...

    def count_spells(self, index_id: str) -> int:
        """Number of stored spells (composition storage rows)."""
        ...
