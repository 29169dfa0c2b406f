"""Rate limits: one budget shared through a real Redis, local limiting while it is down."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from limits import parse
from prometheus_client import REGISTRY

from index_builder.api.app import create_app
from index_builder.ops.ratelimit import RateLimiter, batch_size

from api_helpers import make_settings
from redis_server import RedisServer

PROBLEM = "application/problem+json"
KEY = "reader-key-0123456789abcdef"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _assert_limited(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "urn:index-builder:problem:rate-limited"
    assert body["status"] == 429 and "retry in" in body["detail"]
    retry_after = int(response.headers["retry-after"])  # integer seconds
    assert 1 <= retry_after <= 3600
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["ratelimit-reset"]) == retry_after


@pytest.fixture
def second_database(built_template: Path, tmp_path: Path) -> Path:
    """Another private copy of the built database (a second API instance needs its own)."""
    path = tmp_path / "second.duckdb"
    shutil.copy(built_template, path)
    return path


def test_two_app_instances_share_one_budget(
    database: Path, second_database: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    limited = _metric("index_builder_rate_limited_total", category="reads")
    settings = {"rate_limit_reads": "5/hour"}
    with (
        TestClient(create_app(make_settings(database, redis_server.url, **settings))) as a,
        TestClient(create_app(make_settings(second_database, redis_server.url, **settings))) as b,
    ):
        answers = [c.get("/index-performance") for c in (a, a, a, b, b)]
        assert [r.status_code for r in answers] == [200] * 5
        # one budget: the remaining count goes down across both instances
        assert [r.headers["ratelimit-remaining"] for r in answers] == ["4", "3", "2", "1", "0"]
        assert {r.headers["ratelimit-policy"] for r in answers} == {"5;w=3600"}
        _assert_limited(b.get("/index-performance"), 5)
        _assert_limited(a.get("/indices"), 5)  # every read route spends the same budget
        # builds and exports have budgets of their own
        assert b.post("/build-index", json={"index": "ew100"}).status_code == 200
        health = a.app.state.services.rate_limiter.health()  # type: ignore[attr-defined]
        assert health["status"] == "ok" and health["shared"] is True
    assert _metric("index_builder_rate_limited_total", category="reads") == limited + 2
    keys = redis.Redis.from_url(redis_server.url).keys("ib:rl:reads:*")
    assert len(keys) == 1  # one counter for the one caller


def test_each_api_key_has_its_own_budget_and_errors_spend_it_too(
    database: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    settings = make_settings(
        database, redis_server.url, rate_limit_reads="2/hour", api_keys=f"reader:read:{KEY}"
    )
    with TestClient(create_app(settings)) as client:
        missing = client.get("/index-composition", params={"index": "nope"})
        assert missing.status_code == 404  # an error still counts and carries the headers
        assert missing.headers["ratelimit-remaining"] == "1"
        assert client.get("/index-composition").status_code == 200
        _assert_limited(client.get("/index-composition"), 2)
        # a valid key is its own caller, whatever its address
        keyed = client.get("/index-composition", headers={"X-API-Key": KEY})
        assert keyed.status_code == 200 and keyed.headers["ratelimit-remaining"] == "1"
        # an unknown key is counted against the address (guessing keys is rate limited)
        _assert_limited(client.get("/index-composition", headers={"X-API-Key": "x" * 20}), 2)
        # routes without a budget carry no headers
        docs = client.get("/openapi.json")
        assert docs.status_code == 200 and "ratelimit-limit" not in docs.headers


def test_forwarded_for_counts_only_behind_a_trusted_proxy(
    database: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    base = {"rate_limit_reads": "1/hour"}
    spoofed = {"X-Forwarded-For": "203.0.113.7"}
    peer = ("127.0.0.1", 40000)
    app = create_app(make_settings(database, redis_server.url, **base))
    with TestClient(app, client=peer) as client:
        assert client.get("/indices").status_code == 200
        # not a trusted proxy: a made-up X-Forwarded-For buys no new budget
        _assert_limited(client.get("/indices", headers=spoofed), 1)
    redis_server.flush()
    trusted = make_settings(database, redis_server.url, trusted_proxies="127.0.0.0/8", **base)
    with TestClient(create_app(trusted), client=peer) as client:
        first = {"X-Forwarded-For": "198.51.100.1, 127.0.0.2"}  # via two trusted proxies
        assert client.get("/indices", headers=first).status_code == 200
        _assert_limited(client.get("/indices", headers={"X-Forwarded-For": "198.51.100.1"}), 1)
        assert client.get("/indices", headers=spoofed).status_code == 200  # another client
    keys = sorted(k.decode() for k in redis.Redis.from_url(redis_server.url).keys("ib:rl:*"))
    assert [k.split(":")[4] for k in keys] == ["198.51.100.1", "203.0.113.7"]


def test_redis_down_limits_locally_then_shares_again(
    database: Path, redis_server: RedisServer, caplog: Any
) -> None:
    redis_server.flush()
    degraded = ("index_builder_rate_limiter_degraded", {})
    settings = make_settings(database, redis_server.url, rate_limit_reads="3/hour")
    with (
        caplog.at_level(logging.WARNING, logger="index_builder.ops.ratelimit"),
        TestClient(create_app(settings)) as client,
    ):
        assert client.get("/indices").headers["ratelimit-remaining"] == "2"  # shared count
        redis_server.stop()
        try:
            # this process counts on its own from zero: 3 allowed, then 429
            local = [client.get("/indices") for _ in range(3)]
            assert [r.status_code for r in local] == [200, 200, 200]
            assert [r.headers["ratelimit-remaining"] for r in local] == ["2", "1", "0"]
            _assert_limited(client.get("/indices"), 3)
            health = client.get("/health/ready").json()["components"]["rate_limiter"]
            assert health["status"] == "degraded" and health["backend"] == "memory"
            assert health["shared"] is False and "Redis unavailable" in health["detail"]
            assert REGISTRY.get_sample_value(*degraded) == 1.0
        finally:
            redis_server.start()
        time.sleep(0.25)  # INDEX_BUILDER_REDIS_RETRY_SECONDS is 0.2 in the tests
        # readiness probes Redis itself: the recovery shows without limited traffic
        health = client.get("/health/ready").json()["components"]["rate_limiter"]
        assert health["status"] == "ok" and health["shared"] is True
        assert REGISTRY.get_sample_value(*degraded) == 0.0
        back = client.get("/indices")
        assert back.status_code == 200
        assert back.headers["ratelimit-remaining"] == "2"  # counted in the (new, empty) Redis
        assert redis.Redis.from_url(redis_server.url).keys("ib:rl:reads:*")
    messages = [r.getMessage() for r in caplog.records if r.name == "index_builder.ops.ratelimit"]
    assert len([m for m in messages if "Redis is down" in m]) == 1  # once per outage
    assert len([m for m in messages if "Redis is back" in m]) == 1


def test_without_redis_limits_are_per_process_and_can_be_disabled(database: Path) -> None:
    with TestClient(create_app(make_settings(database, None, rate_limit_reads="1/hour"))) as c:
        assert c.get("/indices").status_code == 200
        _assert_limited(c.get("/indices"), 1)
        health = c.app.state.services.rate_limiter.health()  # type: ignore[attr-defined]
        assert health["status"] == "ok" and health["backend"] == "memory"
    off = make_settings(database, None, rate_limit_reads="1/hour", rate_limit_enabled=False)
    with TestClient(create_app(off)) as c:
        answers = [c.get("/indices") for _ in range(3)]
        assert [r.status_code for r in answers] == [200] * 3
        assert "ratelimit-limit" not in answers[0].headers


def test_large_budgets_are_reserved_in_batches_and_spent_windows_stay_local(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    store = redis.Redis.from_url(redis_server.url)
    assert [batch_size(n) for n in (5, 199, 200, 1000, 10**9)] == [1, 1, 2, 10, 1000]

    def counted() -> int:
        (key,) = store.keys("ib:rl:reads:*")
        return int(store.get(key) or 0)

    async def scenario() -> None:
        budgets = {"reads": parse("1000/hour")}
        first = RateLimiter(budgets, redis_server.url)
        second = RateLimiter(budgets, redis_server.url)  # another worker
        try:
            quotas = [await first.hit("reads", "ip:a") for _ in range(10)]
            assert [q.remaining for q in quotas] == list(range(999, 989, -1))
            assert counted() == 10  # one reservation of 10 for ten requests
            assert (await second.hit("reads", "ip:a")).remaining == 989  # after the first's
            assert counted() == 20
            # concurrent requests share one reservation at a time: nothing is wasted
            await asyncio.gather(*(first.hit("reads", "ip:a") for _ in range(50)))
            assert counted() == 70
        finally:
            await first.close()
            await second.close()

        small = RateLimiter({"reads": parse("3/hour")}, redis_server.url)
        try:
            store.flushall()
            assert [(await small.hit("reads", "ip:b")).allowed for _ in range(4)] == [
                True,
                True,
                True,
                False,
            ]
            commands = store.info("stats")["total_commands_processed"]
            refused = [await small.hit("reads", "ip:b") for _ in range(20)]
            assert not any(q.allowed for q in refused)
            # a spent window is refused from memory: no further Redis calls (INFO is one)
            assert store.info("stats")["total_commands_processed"] == commands + 1
        finally:
            await small.close()

    asyncio.run(scenario())
