"""Shared fixtures: a fresh DuckDB store per test and small ingested markets."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from index_builder.calendar import get_calendar  # noqa: E402
from index_builder.services.catalog import ensure_builtins  # noqa: E402
from index_builder.storage.duckdb.store import DuckDBStore  # noqa: E402

from redis_server import RedisServer  # noqa: E402

if TYPE_CHECKING:
    from s3_server import S3Server


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database file that does not exist yet."""
    return tmp_path / "db" / "index_builder.duckdb"


@pytest.fixture
def store(db_path: Path) -> Iterator[DuckDBStore]:
    """An open store with the built-in definitions."""
    with DuckDBStore(db_path, calendar=get_calendar(), threads=2) as s:
        ensure_builtins(s)
        yield s


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, shared by the session (per worker)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 endpoint (moto's server) on a free loopback port, shared by the
    session (per worker); a test may stop and start it (the buckets are kept)."""
    from s3_server import S3Server  # moto takes a while to import: only when used

    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket of its own for the test, with the AWS_* variables pointing at the
    server (the server is started again if an earlier test left it stopped)."""
    s3_server.start()
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("INDEX_BUILDER_S3_ENDPOINT", raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.create_bucket()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the files tests kept as artifacts (``user_properties`` named ``artifact``;
    they travel from xdist workers with the reports)."""
    paths = sorted(
        {
            str(value)
            for reports in terminalreporter.stats.values()
            for report in reports
            for name, value in getattr(report, "user_properties", ())
            if name == "artifact"
        }
    )
    if paths:
        terminalreporter.write_sep("-", "artifacts kept by the tests")
        for path in paths:
            terminalreporter.write_line(path)
