"""Every test of this folder runs on each storage backend: ``backend`` is parametrised
over DuckDB and Iceberg (a test of the folder that does not use it is refused at
collection), and ``make_store`` opens stores of it (the one place they are made). An
Iceberg store is checked when the test ends: a second store opened on the same lake
reads exactly the tables the test's store holds in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.iceberg.store import IcebergStore

from backend_stores import (
    BACKENDS,
    Clock,
    StoreFactory,
    StoreTemplates,
    assert_lake_holds_what_memory_holds,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test of this folder that is not run on every backend."""
    lacking = [
        item.nodeid
        for item in items
        if HERE in item.path.parents and "backend" not in getattr(item, "fixturenames", ())
    ]
    if lacking:
        raise pytest.UsageError(f"tests of tests/backends without the backend fixture: {lacking}")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test (module scope: a module's stores made once per
    backend, its tests grouped by backend)."""
    return str(request.param)


@pytest.fixture(scope="session")
def store_templates(tmp_path_factory: pytest.TempPathFactory) -> StoreTemplates:
    """New stores copied from templates made once per process (see StoreTemplates)."""
    return StoreTemplates(tmp_path_factory.mktemp("store-templates"))


@pytest.fixture
def make_store(
    backend: str, tmp_path: Path, store_templates: StoreTemplates
) -> Iterator[StoreFactory]:
    """``make_store(name="store", clock=None, builtins=True)``: an open new store of the
    backend under test (with the built-in definitions unless ``builtins`` is false);
    closed when the test ends, after the lake check of an Iceberg store."""
    opened: list[DuckDBStore] = []

    def make(
        name: str = "store", *, clock: Clock | None = None, builtins: bool = True
    ) -> DuckDBStore:
        store = store_templates.open(
            backend, tmp_path / name, slot=name, clock=clock, builtins=builtins
        )
        opened.append(store)
        return store

    yield make
    try:
        for store in opened:
            if isinstance(store, IcebergStore) and store.head is not None:
                assert_lake_holds_what_memory_holds(store)
    finally:
        for store in opened:
            store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> DuckDBStore:
    """An open store of the backend under test with the built-in definitions."""
    return make_store()
