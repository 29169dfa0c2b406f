"""The persistent tables every backend keeps, for whole-store operations: backup and
restore, moving a store to another backend, and comparing two stores.

Each backend stores exactly these tables with the same columns (the DuckDB
migrations define them); ``schema_migrations`` and ``calendar_sessions`` are
derived (the code's migrations, the exchange calendar) and are not part of a
store's content.
"""

from __future__ import annotations

PERSISTENT_TABLES: tuple[str, ...] = (
    "securities",
    "security_versions",
    "prices",
    "price_versions",
    "shares_history",
    "shares_withdrawn",
    "ingest_runs",
    "quarantine",
    "index_definitions",
    "index_builds",
    "index_levels",
    "index_spells",
    "index_announcements",
    "build_version_counter",
    "schedule_runs",
    "api_jobs",
    "versions",
)
"""Every table that holds a store's state, in the order a restore loads them."""

COUNTERS: dict[str, tuple[str, str]] = {
    "ingest_run_ids": ("ingest_runs", "run_id"),
    "schedule_cycle_ids": ("schedule_runs", "cycle_id"),
    "version_ids": ("versions", "version_id"),
}
"""Sequences and the column whose values they hand out: after a restore each one
continues above the largest value stored."""

STAMPED_COLUMNS: dict[str, frozenset[str]] = {
    "index_builds": frozenset({"built_at"}),
    "index_definitions": frozenset({"created_at", "updated_at"}),
    "versions": frozenset({"snapshots"}),
}
"""Columns each backend sets itself when it makes a write (the database's clock, the
lake's snapshot ids): equal in a copy (``migrate-storage`` copies them), not after the
same write was made on two stores (shadow writes); left out when two such stores are
compared (``migrate-storage --verify-only``)."""
