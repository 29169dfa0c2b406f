"""Open the store the settings name: the embedded DuckDB file or the Iceberg lake."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from index_builder.calendar import SessionCalendar, get_calendar
from index_builder.point_in_time import utc_now
from index_builder.settings import Settings
from index_builder.storage.duckdb.store import DuckDBStore

if TYPE_CHECKING:
    from index_builder.storage.iceberg.location import LakeLocation

BACKENDS = ("duckdb", "iceberg")


def lake_location(settings: Settings) -> LakeLocation:
    """The catalog and warehouse of the Iceberg backend (settings and AWS_* variables)."""
    from index_builder.storage.iceberg.location import LakeLocation, ObjectStoreOptions

    return LakeLocation.resolve(
        settings.warehouse,
        settings.catalog_uri,
        namespace=settings.lake_namespace,
        options=ObjectStoreOptions.from_environment(
            settings.s3_endpoint, settings.s3_timeout_seconds
        ),
        local_folder=settings.database.parent,
    )


def make_store(
    settings: Settings,
    calendar: SessionCalendar | None = None,
    *,
    shadow: bool | None = None,
) -> DuckDBStore:
    """The store of ``settings.storage``, not opened yet (``open()`` or ``with``).

    With the ``shadow_storage`` feature flag on (or ``shadow=True``) it is a
    :class:`~index_builder.storage.shadow.ShadowStore`: the store of
    ``settings.storage`` serves every read and takes every write first, the other
    backend (as the same settings configure it) takes every write too and answers a
    sample of the reads for comparison. The flag is read here, once: a change takes
    effect when the process starts again (docs/operations.md).
    """
    calendar = calendar or get_calendar(settings.calendar, settings.calendar_start)
    if shadow is None:
        shadow = settings.feature_flags().enabled("shadow_storage")
    if not shadow:
        return make_backend(settings, settings.storage, calendar)
    from index_builder.storage.shadow import ShadowClock, ShadowStore

    clocks = ShadowClock(utc_now)
    return ShadowStore(
        make_backend(settings, settings.storage, calendar, clock=clocks.primary),
        make_backend(settings, other_backend(settings.storage), calendar, clock=clocks.shadow),
        sample_rate=settings.shadow_sample_rate,
        clocks=clocks,
        spool_dir=settings.database.parent,
    )


def other_backend(backend: str) -> str:
    """The backend that is not ``backend`` (the target of a migration, the shadow)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown storage backend {backend!r}")
    return "iceberg" if backend == "duckdb" else "duckdb"


def make_backend(
    settings: Settings,
    backend: str,
    calendar: SessionCalendar | None = None,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
) -> DuckDBStore:
    """The store of ``backend`` (``duckdb``: ``settings.database``; ``iceberg``: the
    warehouse and catalog of ``settings``), whatever ``settings.storage`` names; not
    opened yet. ``clock``: the store's naive-UTC clock (ingestion runs, versions)."""
    calendar = calendar or get_calendar(settings.calendar, settings.calendar_start)
    common = {
        "calendar": calendar,
        "threads": settings.duckdb_threads,
        "memory_limit": settings.duckdb_memory_limit,
        "ingest_memory_limit": settings.ingest_memory_limit,
        "clock": clock,
    }
    if backend == "iceberg":
        from index_builder.storage.iceberg.store import IcebergStore

        return IcebergStore(
            lake_location(settings),
            lease_seconds=settings.lake_lease_seconds,
            wait_seconds=settings.lake_wait_seconds,
            refresh_seconds=settings.lake_refresh_seconds,
            **common,  # type: ignore[arg-type]
        )
    if backend != "duckdb":
        raise ValueError(f"unknown storage backend {backend!r}")
    return DuckDBStore(settings.database, **common)  # type: ignore[arg-type]


def describe_store(store: DuckDBStore) -> dict[str, str]:
    """What status, health and build output say about where the data lives."""
    return store.describe()


def describe_settings(settings: Settings) -> dict[str, str]:
    """Where the settings put the data, without opening anything (no password)."""
    if settings.storage == "iceberg":
        return lake_location(settings).describe()
    return {"backend": "duckdb", "database": str(settings.database.resolve())}


def storage_label(info: dict[str, str]) -> str:
    """One line for people: ``duckdb /path/db.duckdb`` or ``iceberg /lake (catalog ...)``."""
    if info.get("backend") == "iceberg":
        return f"iceberg {info['warehouse']} (catalog {info['catalog']})"
    return f"duckdb {info.get('database', '')}"
