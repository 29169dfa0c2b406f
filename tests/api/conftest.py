"""API fixtures: a built database, a real redis-server, and the real app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app

from api_helpers import make_settings
from redis_server import RedisServer  # the redis_server fixture: tests/conftest.py
from templates import build_template, private_copy

START = dt.date(2023, 1, 3)


@pytest.fixture(scope="session")
def built_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a 300 x 60 synthetic market and ew100/ew-tech50 built."""
    path = tmp_path_factory.mktemp("api-template") / "template.duckdb"
    return build_template(path, symbols=300, days=60, indices=["ew100", "ew-tech50"])


@pytest.fixture
def database(built_template: Path, tmp_path: Path) -> Path:
    """A private copy of the built database for one test."""
    return private_copy(built_template, tmp_path, "api.duckdb")


@pytest.fixture
def client(database: Path, redis_server: RedisServer) -> Iterator[TestClient]:
    redis_server.flush()
    with TestClient(create_app(make_settings(database, redis_server.url))) as c:
        yield c
