"""Stores of either backend for the backend suite (tests/backends): open one (fast,
from a template), the settings of the API and the CLI over one, and the check that an
Iceberg lake holds what its store holds in memory."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from index_builder.calendar import get_calendar
from index_builder.services.catalog import ensure_builtins
from index_builder.settings import Settings
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.iceberg.location import LakeLocation
from index_builder.storage.iceberg.store import IcebergStore
from index_builder.storage.tables import PERSISTENT_TABLES

BACKENDS = ("duckdb", "iceberg")

Clock = Callable[[], dt.datetime]
StoreFactory = Callable[..., DuckDBStore]


def database_path(folder: Path) -> Path:
    """The DuckDB file of a store kept in ``folder``."""
    return folder / "index_builder.duckdb"


def warehouse_path(folder: Path) -> Path:
    """The Iceberg warehouse (with its SQLite catalog) of a store kept in ``folder``."""
    return folder / "lake"


def open_store(
    backend: str,
    folder: Path,
    *,
    clock: Clock | None = None,
    builtins: bool = True,
) -> DuckDBStore:
    """An open store of ``backend`` kept in ``folder`` (created when missing), with the
    built-in definitions unless ``builtins`` is false."""
    options: dict[str, Any] = {"calendar": get_calendar(), "threads": 2}
    if clock is not None:
        options["clock"] = clock
    store: DuckDBStore
    if backend == "duckdb":
        store = DuckDBStore(database_path(folder), **options)
    elif backend == "iceberg":
        store = IcebergStore(LakeLocation.resolve(str(warehouse_path(folder)), None), **options)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    store.open()
    try:
        if builtins:
            ensure_builtins(store)
    except BaseException:
        store.close()
        raise
    return store


class StoreTemplates:
    """New stores, fast: a store with (or without) the built-in definitions is made once
    per process for each backend, then copied for each test (a new Iceberg lake costs
    seconds: a table per persistent table, then a lake commit per built-in definition).

    A DuckDB file is copied anywhere. An Iceberg lake cannot be: its SQLite catalog and
    its metadata files name the metadata and data files by absolute path, so a copy
    elsewhere would read (and write over) the original's. A lake is therefore made in a
    fixed folder of this process, one per slot name, and put back there from its
    template before each test that asks for it: the tests of one process (one xdist
    worker) run one at a time, so the folder is free."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[str, str, bool], Path] = {}

    def open(
        self,
        backend: str,
        folder: Path,
        *,
        slot: str = "store",
        clock: Clock | None = None,
        builtins: bool = True,
    ) -> DuckDBStore:
        """An open new store of ``backend``: a DuckDB file in ``folder``, an Iceberg lake
        in the slot's fixed folder (whatever was there is replaced)."""
        template = self._template(backend, slot, builtins)
        if backend == "duckdb":
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(database_path(template), database_path(folder))
            home = folder
        else:
            home = self._slot(slot)
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(template, home)
        return open_store(backend, home, clock=clock, builtins=False)

    def _slot(self, slot: str) -> Path:
        return self.root / "slots" / slot

    def _template(self, backend: str, slot: str, builtins: bool) -> Path:
        key = (backend, slot if backend == "iceberg" else "", builtins)
        if key not in self._made:
            copy = self.root / "templates" / "-".join(str(k) for k in key)
            home = copy if backend == "duckdb" else self._slot(slot)
            shutil.rmtree(home, ignore_errors=True)
            open_store(backend, home, builtins=builtins).close()
            if home != copy:
                shutil.copytree(home, copy)
            self._made[key] = copy
        return self._made[key]


def settings_for(backend: str, folder: Path, **extra: Any) -> Settings:
    """Settings for the API and the CLI over the store ``open_store(backend, folder)``
    keeps (no Redis, no in-process cache: every read comes from the store)."""
    values: dict[str, Any] = {
        "storage": backend,
        "database": database_path(folder),
        "warehouse": str(warehouse_path(folder)),
        "catalog_uri": None,
        "redis_url": None,
        "local_cache_entries": 0,
        "duckdb_threads": 2,
    }
    values.update(extra)
    return Settings(**values)


def lake_tables(store: DuckDBStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every persistent table's rows, sorted (what two stores must agree on)."""
    cur = store.cursor()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name in PERSISTENT_TABLES:  # names from the code, never user text
        rows = cur.execute(f'SELECT * FROM "{name}"').fetchall()
        out[name] = sorted(rows, key=repr)
    return out


def assert_lake_holds_what_memory_holds(store: IcebergStore) -> None:
    """A second store opened on the lake of ``store`` reads the same rows in every table
    (a write that reached memory but not the lake, or the reverse, fails here)."""
    reader = IcebergStore(store.location, calendar=store.calendar, threads=2).open()
    try:
        store.refresh(force=True)
        mine, theirs = lake_tables(store), lake_tables(reader)
    finally:
        reader.close()
    differ = [name for name in PERSISTENT_TABLES if mine[name] != theirs[name]]
    assert not differ, {name: (mine[name], theirs[name]) for name in differ}
