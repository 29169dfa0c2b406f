"""Hostile-input fixtures: a built database copied per test, the real app over it
(no Redis: answers come from the database), and the tables checked intact after."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app

from api_helpers import make_settings
from integrity import changed_tables, fingerprint
from templates import build_template, private_copy

START = dt.date(2023, 1, 3)


@pytest.fixture(scope="session")
def hostile_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 150 x 40 synthetic market with ew100 and ew-tech50 built."""
    path = tmp_path_factory.mktemp("hostile") / "template.duckdb"
    return build_template(path, symbols=150, days=40, indices=["ew100", "ew-tech50"])


@pytest.fixture
def database(hostile_template: Path, tmp_path: Path) -> Path:
    return private_copy(hostile_template, tmp_path, "hostile.duckdb")


@pytest.fixture
def client(database: Path) -> Iterator[TestClient]:
    """The real app; an unexpected server error is a 500 answer, not an exception."""
    app = create_app(make_settings(database, None))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def intact(client: TestClient) -> Iterator[Callable[[], None]]:
    """Call it (or let the test end) to assert that no table changed since the test
    started: row counts and checksums of every table."""
    store = client.app.state.services.store  # type: ignore[attr-defined]
    before = fingerprint(store.cursor())

    def check() -> None:
        assert changed_tables(before, fingerprint(store.cursor())) == []

    yield check
    check()
