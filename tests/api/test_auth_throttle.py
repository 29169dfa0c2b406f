"""Failed API keys are throttled per client address: 401 while the budget lasts, then
429 with Retry-After for every key of that address; shared through Redis, per process
without it; logged without the key; counted in the metrics."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.ops.ratelimit import AUTH_FAILURES
from index_builder.settings import Settings
from serve_process import ServeProcess

from api_helpers import make_settings
from ops_helpers import sample
from redis_server import RedisServer, free_port

PROBLEM = "application/problem+json"
ROOT = "ad-5e5e5e5e7f7f7f7f9a9a"
KEYS = f"root:admin:{ROOT}"
LIMIT = 5
BUDGET = f"{LIMIT}/day"  # a window boundary inside a test is (almost) impossible


def _wrong(n: int) -> dict[str, str]:
    return {"X-API-Key": f"guess-{n:04d}-0123456789abcdef"}


def _assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "urn:index-builder:problem:rate-limited" and body["status"] == 429
    assert "invalid API keys" in body["detail"]
    assert 1 <= int(response.headers["retry-after"]) <= 86400


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """No Redis (per process), or the real redis-server (shared counts)."""
    if request.param == "memory":
        yield None
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        yield server.url


def test_wrong_keys_are_throttled_in_the_real_server(
    database: Path, tmp_path: Path, backend: str | None
) -> None:
    env = {
        "INDEX_BUILDER_DATABASE": str(database),
        "INDEX_BUILDER_API_KEYS": KEYS,
        "INDEX_BUILDER_AUTH_FAILURE_LIMIT": BUDGET,
        "INDEX_BUILDER_LOG_FORMAT": "json",
        "INDEX_BUILDER_REDIS_URL": backend,
    }
    server = ServeProcess(tmp_path / "serve.log", env)
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
    try:
        server.wait_ready(60, path="/openapi.json")
        admin = f"{server.base}/admin/flags"
        with httpx.Client(timeout=10) as client:
            answers = [client.get(admin, headers=_wrong(n)) for n in range(50)]
            assert [r.status_code for r in answers] == [401] * LIMIT + [429] * (50 - LIMIT)
            for response in answers[LIMIT:]:
                _assert_throttled(response)
            # the address is blocked: even the right key waits
            _assert_throttled(client.get(admin, headers={"X-API-Key": ROOT}))
            # requests without a key guess nothing: answered as usual
            assert client.get(admin).status_code == 401
            assert client.get(f"{server.base}/indices").status_code == 200
            # another client: the right key works, and its failures are its own
            assert other.get(admin, headers={"X-API-Key": ROOT}).status_code == 200
            assert other.get(admin, headers=_wrong(99)).status_code == 401
            metrics = client.get(f"{server.base}/metrics").text
    finally:
        other.close()
        assert server.stop() == 0
    failures = "index_builder_auth_failures_total"
    assert sample(metrics, failures, reason="invalid") == LIMIT + 1
    assert sample(metrics, failures, reason="throttled") == 50 - LIMIT + 1
    assert sample(metrics, failures, reason="missing") == 1
    assert sample(metrics, "index_builder_auth_blocks_total") == 1
    output = server.output()
    assert (
        "auth invalid: GET /admin/flags needs scope 'admin' (no valid key) from 127.0.0.1" in output
    )
    assert "(no valid key) from 127.0.0.2" in output
    assert f"auth: {LIMIT} invalid API keys from 127.0.0.1 within 86400 s" in output
    assert output.count("auth invalid:") == LIMIT + 1  # throttled requests: DEBUG only
    for secret in [ROOT, *(_wrong(n)["X-API-Key"] for n in (0, LIMIT, 49, 99))]:
        assert secret not in output
    if backend is not None:
        keys = redis.Redis.from_url(backend).keys(f"ib:rl:{AUTH_FAILURES}:*")
        assert sorted(k.decode().split(":")[3] for k in keys) == ["127.0.0.1", "127.0.0.2"]


@pytest.fixture
def second_database(built_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "second.duckdb"
    shutil.copy(built_template, path)
    return path


def _app(database: Path, redis_url: str | None, **extra: Any) -> TestClient:
    settings = make_settings(
        database, redis_url, **{"api_keys": KEYS, "auth_failure_limit": BUDGET, **extra}
    )
    return TestClient(create_app(settings))


def test_two_processes_share_the_failed_key_budget_through_redis(
    database: Path, second_database: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    with _app(database, redis_server.url) as a, _app(second_database, redis_server.url) as b:
        assert [a.get("/admin/flags", headers=_wrong(n)).status_code for n in range(LIMIT)] == [
            401
        ] * LIMIT
        # b has seen no failure itself; Redis tells it the budget is spent
        _assert_throttled(b.post("/admin/flags/reload", headers=_wrong(LIMIT)))
        _assert_throttled(b.get("/admin/flags", headers={"X-API-Key": ROOT}))  # now known
        _assert_throttled(a.get("/admin/flags", headers={"X-API-Key": ROOT}))
        # on reads and builds too, whatever the route
        _assert_throttled(a.get("/indices", headers=_wrong(99)))
        _assert_throttled(a.post("/build-index", json={}, headers={"X-API-Key": ROOT}))


def test_without_redis_each_process_throttles_on_its_own(database: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # configured, but nothing listens
    with _app(database, dead, rate_limit_enabled=False) as client:
        codes = [client.get("/admin/flags", headers=_wrong(n)).status_code for n in range(8)]
        assert codes == [401] * LIMIT + [429] * 3
        health = client.get("/health/ready").json()["components"]["rate_limiter"]
        assert health["status"] == "degraded" and health["backend"] == "memory"
        assert health["enabled"] is False  # the budgets are off, failed keys still count


def test_the_throttle_can_be_switched_off(database: Path) -> None:
    assert Settings(auth_failure_limit="OFF").auth_failure_limit == "off"
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(auth_failure_limit="ten a minute")
    with _app(database, None, auth_failure_limit="off") as client:
        codes = {client.get("/admin/flags", headers=_wrong(n)).status_code for n in range(20)}
        assert codes == {401}
        assert client.get("/admin/flags", headers={"X-API-Key": ROOT}).status_code == 200
