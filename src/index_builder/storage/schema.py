"""Where a store's schema stands against this release: ``index-builder migrate --check``.

Migrations are forward only: a process that opens a store applies the ones it is
missing (DuckDB: the numbered ``v<N>_`` queries; the lake: columns added to its
Iceberg tables). Before a rollout the check says what the new release would change,
and before a rollback to an older image it says when the store is already newer than
that image (which then cannot run against it: restore the backup taken before the
rollout, docs/operations.md). The check opens nothing for writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy.exc

from index_builder.settings import Settings
from index_builder.storage.duckdb.store import DuckDBStore, migrations
from index_builder.storage.tables import PERSISTENT_TABLES


@dataclass(frozen=True)
class SchemaStatus:
    """The schema of a store as this release sees it."""

    backend: str
    location: str
    code_version: int
    """The newest migration this release knows."""
    store_version: int | None
    """The newest migration applied (None: a new store; the lake: not versioned)."""
    pending: list[str] = field(default_factory=list)
    """What opening the store would apply: migrations, or lake columns to add."""
    newer: list[str] = field(default_factory=list)
    """What the store has that this release does not know (a newer release wrote it)."""

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.newer

    def summary(self) -> str:
        """One line for people."""
        if self.newer:
            return (
                f"the {self.backend} store at {self.location} is newer than this release "
                f"(it has {', '.join(self.newer)}): run the newer release, or restore the "
                "backup taken before it"
            )
        if self.pending:
            return (
                f"{len(self.pending)} migration(s) pending for the {self.backend} store at "
                f"{self.location}: {', '.join(self.pending)} (applied when a process opens it)"
            )
        return (
            f"the {self.backend} store at {self.location} is up to date "
            f"(schema v{self.code_version})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "location": self.location,
            "code_version": self.code_version,
            "store_version": self.store_version,
            "pending": self.pending,
            "newer": self.newer,
            "up_to_date": self.up_to_date,
        }


def schema_status(settings: Settings) -> SchemaStatus:
    """The schema status of the store the settings name, read without writing."""
    if settings.storage == "iceberg":
        return _lake_status(settings)
    return _duckdb_status(settings)


def _code_version() -> int:
    return max(version for version, _ in migrations())


def _duckdb_status(settings: Settings) -> SchemaStatus:
    path = settings.database
    known = dict(migrations())
    if not path.exists():
        pending = [name for _, name in sorted(known.items())]
        return SchemaStatus("duckdb", str(path), _code_version(), None, pending)
    with duckdb.connect(str(path), read_only=True) as con:
        present = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_migrations'"
        ).fetchone()
        applied: set[int] = set()
        if present and present[0]:
            rows = con.execute("SELECT version FROM schema_migrations").fetchall()
            applied = {int(r[0]) for r in rows}
    return SchemaStatus(
        "duckdb",
        str(path),
        _code_version(),
        max(applied, default=None),
        pending=[name for v, name in sorted(known.items()) if v not in applied],
        newer=[f"v{v}" for v in sorted(applied - set(known))],
    )


def _lake_status(settings: Settings) -> SchemaStatus:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import NoSuchTableError

    from index_builder.storage.factory import lake_location

    location = lake_location(settings)
    where = location.describe().get("warehouse", "")
    reference = _reference_columns()
    pending: list[str] = []
    newer: list[str] = []
    sqlite_file = location.catalog_uri.removeprefix("sqlite:///")
    if sqlite_file != location.catalog_uri and not Path(sqlite_file).exists():
        pending = [f"create table {name}" for name in PERSISTENT_TABLES]  # a new lake
        return SchemaStatus("iceberg", str(where), _code_version(), None, pending)
    # the catalog's own tables are not created here: the check writes nothing
    properties = {**location.catalog_properties(), "init_catalog_tables": "false"}
    catalog = SqlCatalog("index_builder", **properties)
    for name in PERSISTENT_TABLES:
        try:
            table = catalog.load_table((location.namespace, name))
        except (NoSuchTableError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            pending.append(f"create table {name}")
            continue
        columns = {f.name for f in table.schema().fields}
        pending += [f"add column {name}.{c}" for c in sorted(set(reference[name]) - columns)]
        newer += [f"column {name}.{c}" for c in sorted(columns - set(reference[name]))]
    return SchemaStatus("iceberg", str(where), _code_version(), None, pending, newer)


def _reference_columns() -> dict[str, list[str]]:
    """Every persistent table's columns as this release's migrations define them."""
    columns: dict[str, list[str]] = {name: [] for name in PERSISTENT_TABLES}
    with DuckDBStore(":memory:") as store:
        rows = store.cursor().execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE table_name IN (SELECT unnest($tables)) ORDER BY table_name, column_index",
            {"tables": list(PERSISTENT_TABLES)},
        )
        for table, column in rows.fetchall():
            columns[table].append(column)
    return columns
