"""Helpers shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.settings import Settings


def make_settings(database: Path, redis_url: str | None, **extra: object) -> Settings:
    """Settings for a test app: a short Redis retry so recovery is quick, and no
    in-process cache tier unless asked for."""
    values: dict[str, object] = {
        "database": database,
        "redis_url": redis_url,
        "redis_retry_seconds": 0.2,
        "duckdb_threads": 2,
        "local_cache_entries": 0,  # exercise Redis itself; the local tier has its own test
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def app_without_redis(database: Path) -> Iterator[TestClient]:
    """The real app with no Redis configured."""
    with TestClient(create_app(make_settings(database, None))) as client:
        yield client
