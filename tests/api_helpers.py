"""Helpers shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.settings import Settings


def make_settings(database: Path, redis_url: str | None, **extra: object) -> Settings:
    """Settings for a test app: a short Redis retry so recovery is quick."""
    values: dict[str, object] = {
        "database": database, "redis_url": redis_url, "redis_retry_seconds": 0.2,
        "duckdb_threads": 2,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def app_without_redis(database: Path) -> Iterator[TestClient]:
    """The real app with no Redis configured."""
    with TestClient(create_app(make_settings(database, None))) as client:
        yield client
