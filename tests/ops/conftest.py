"""Ops fixtures: a built database, a real redis-server, the real app with a settable clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.storage.duckdb.store import DuckDBStore

from api_helpers import make_settings
from ops_helpers import GRACE, after_close, services_of
from redis_server import RedisServer  # the redis_server fixture: tests/conftest.py
from templates import build_template, private_copy

START = dt.date(2023, 1, 3)


@pytest.fixture(scope="session")
def built_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a 200 x 40 synthetic market and ew100 built."""
    path = tmp_path_factory.mktemp("ops-template") / "template.duckdb"
    return build_template(path, symbols=200, days=40, indices=["ew100"])


@pytest.fixture(scope="session")
def last_day(built_template: Path) -> dt.date:
    """The last trading day of the template's data."""
    with DuckDBStore(built_template, read_only=True) as store:
        day = store.last_trading_day()
    assert day is not None
    return day


@pytest.fixture
def database(built_template: Path, tmp_path: Path) -> Path:
    """A private copy of the built database for one test."""
    return private_copy(built_template, tmp_path, "ops.duckdb")


@pytest.fixture
def client(database: Path, redis_server: RedisServer, last_day: dt.date) -> Iterator[TestClient]:
    """The real app over a private database and the real Redis, its clock an hour
    after the data's last session closed plus the grace (fresh data)."""
    redis_server.flush()
    with TestClient(create_app(make_settings(database, redis_server.url))) as c:
        services_of(c).clock = lambda: after_close(last_day, GRACE.total_seconds() / 60 + 60)
        yield c
