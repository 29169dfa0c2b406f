"""Cached reads answered before routing (api/fast_reads.py): the route's bytes, headers,
304s, 429s and records, and every case that must still go through the route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from index_builder.api.app import create_app
from index_builder.api.fast_reads import FastReadMiddleware, KnownReads
from index_builder.ops.request_records import RECORDER

from api_helpers import make_settings
from redis_server import RedisServer

PERF = "/index-performance?index=ew100&start_date=2023-02-01"
COMP = "/index-composition?index=ew100&limit=10"
READER = "rd-4f1c9a7e2b8d0c3e5a6f"
BUILDER = "bd-9e8d7c6b5a4f3e2d1c0b"
KEYS = f"reader:read:{READER},builder:build:{BUILDER}"
SAME = ("cache-control", "etag", "x-cache", "content-type", "content-length", "ratelimit-limit")


class Routed:
    """Counts the requests that reach the router (wrapped around the fast layer's app)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


def fast_layer(client: TestClient) -> FastReadMiddleware:
    """The app's FastReadMiddleware (the stack is built by the first request)."""
    layer: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, FastReadMiddleware):
        layer = layer.app
    return layer


@pytest.fixture
def app_with(database: Path, redis_server: RedisServer) -> Iterator[Any]:
    """``app_with(**settings)``: a TestClient (entered) and the router's request counter."""
    clients: list[TestClient] = []

    def make(**extra: Any) -> tuple[TestClient, Routed]:
        redis_server.flush()
        client = TestClient(create_app(make_settings(database, redis_server.url, **extra)))
        client.__enter__()
        clients.append(client)
        assert client.get("/health/live").status_code == 200  # builds the stack
        layer = fast_layer(client)
        routed = layer.app = Routed(layer.app)
        return client, routed

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _same(a: httpx.Response, b: httpx.Response) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    for name in SAME:
        assert a.headers.get(name) == b.headers.get(name), name
    assert a.headers["x-request-id"] and a.headers["x-request-id"] != b.headers["x-request-id"]


@pytest.mark.parametrize("local_entries", [0, 64])  # Redis tier, in-process tier
def test_a_remembered_read_gets_the_routes_answer_without_routing(
    app_with: Any, local_entries: int
) -> None:
    client, routed = app_with(local_cache_entries=local_entries)
    for url in (PERF, COMP):
        first = client.get(url)
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        fast_layer(client).known.clear()  # forget the URL: the route answers the HIT
        by_route = client.get(url)
        assert by_route.headers["x-cache"] == "HIT"
        before = len(routed.paths)
        fast = client.get(url)
        assert len(routed.paths) == before, "the remembered read went through the router"
        _same(fast, by_route)
        assert fast.content == first.content
        assert (
            int(fast.headers["ratelimit-remaining"])
            == int(by_route.headers["ratelimit-remaining"]) - 1
        )

        # If-None-Match: the route's 304, from either path
        etag = fast.headers["etag"]
        not_modified = client.get(url, headers={"If-None-Match": f'W/{etag}, "other"'})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == etag
        assert not_modified.headers["cache-control"] == fast.headers["cache-control"]
        assert len(routed.paths) == before
        fast_layer(client).known.clear()
        routed_304 = client.get(url, headers={"If-None-Match": etag})
        assert routed_304.status_code == 304 and len(routed.paths) == before + 1
        assert {k: v for k, v in routed_304.headers.items() if k in ("etag", "cache-control")} == {
            k: v for k, v in not_modified.headers.items() if k in ("etag", "cache-control")
        }


def test_a_build_or_a_removal_sends_the_next_read_through_the_route(app_with: Any) -> None:
    client, routed = app_with()
    url = "/index-performance?index=mine"
    definition = {"id": "mine", "name": "Mine", "top_n": 5, "rebalance": "monthly"}
    assert client.post("/indices", json=definition).status_code == 201
    assert client.post("/build-index", json={"index": "mine"}).status_code == 200
    first = client.get(url)
    before = len(routed.paths)
    assert client.get(url).headers["x-cache"] == "HIT" and len(routed.paths) == before

    assert client.post("/build-index", json={"index": "mine"}).status_code == 200
    rebuilt = client.get(url)  # the version is read again: through the route
    assert routed.paths[before:] == ["/build-index", "/index-performance"]
    assert rebuilt.content == first.content

    assert client.delete("/indices/mine").status_code == 204
    gone = client.get(url)
    assert gone.status_code == 404 and routed.paths[-1] == "/index-performance"

    definition["top_n"] = 7  # the same id, other results
    assert client.post("/indices", json=definition).status_code == 201
    assert client.post("/build-index", json={"index": "mine"}).status_code == 200
    other = client.get(url)
    assert other.status_code == 200 and other.headers["x-cache"] == "MISS"
    assert other.headers["etag"] != first.headers["etag"] and other.content != first.content
    before = len(routed.paths)
    again = client.get(url)
    assert again.content == other.content and len(routed.paths) == before


def test_a_spent_budget_is_the_routes_429(app_with: Any) -> None:
    client, routed = app_with(rate_limit_reads="3/hour")
    assert [client.get(PERF).status_code for _ in range(3)] == [200, 200, 200]
    assert routed.paths == ["/index-performance"]  # the first read only
    fast = client.get(PERF)
    assert len(routed.paths) == 1
    by_route = client.get(COMP)  # not remembered: the route refuses it
    assert len(routed.paths) == 2
    for limited in (fast, by_route):
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.headers["ratelimit-remaining"] == "0"
        assert int(limited.headers["retry-after"]) >= 1
    assert fast.json()["detail"] == by_route.json()["detail"]
    assert {k: v for k, v in fast.json().items() if k != "instance"} == {
        k: v for k, v in by_route.json().items() if k != "instance"
    }
    assert fast.json()["instance"] == "/index-performance"


def test_keys_on_reads(app_with: Any) -> None:
    client, routed = app_with(api_keys=KEYS)
    client.get(PERF)
    before = len(routed.paths)
    assert client.get(PERF).status_code == 200  # open reads, no key: fast
    assert client.get(PERF, headers={"X-API-Key": READER}).status_code == 200  # valid: fast
    assert len(routed.paths) == before
    wrong = client.get(PERF, headers={"X-API-Key": "zz-not-a-configured-key-000"})
    assert wrong.status_code == 401 and len(routed.paths) == before + 1  # the route refuses

    client, routed = app_with(api_keys=KEYS, reads_require_key=True)
    assert client.get(PERF, headers={"X-API-Key": READER}).status_code == 200
    before = len(routed.paths)
    assert client.get(PERF, headers={"X-API-Key": READER}).status_code == 200
    assert len(routed.paths) == before
    assert client.get(PERF).status_code == 401  # no key: the route refuses
    assert client.get(PERF, headers={"X-API-Key": BUILDER}).status_code == 403  # no read scope
    assert len(routed.paths) == before + 2


def test_fast_reads_are_recorded_under_their_route(
    app_with: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = app_with()
    client.get(PERF)
    records: list[Any] = []
    monkeypatch.setattr(RECORDER, "add", records.append)
    response = client.get(PERF, headers={"X-Request-ID": "fast-read-1"})
    assert response.headers["x-request-id"] == "fast-read-1"
    (record,) = records
    route, method, status, _, request_id, *_ = record
    assert (route.path, method, status, request_id) == (
        "/index-performance",
        "GET",
        200,
        "fast-read-1",
    )


def test_known_reads_are_bounded_and_expire_at_the_end_of_the_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = KnownReads(max_entries=2)
    route = object()

    def scope(query: bytes) -> dict[str, Any]:
        return {"method": "GET", "path": "/p", "query_string": query, "route": route}

    for query in (b"a", b"b", b"c"):
        known.remember(scope(query), "performance", "ew100", {})
    assert len(known) == 2 and known.get("/p", b"a") is None  # the oldest went first
    assert known.get("/p", b"c") is not None
    known.remember({**scope(b"d"), "method": "HEAD"}, "performance", "ew100", {})
    known.remember({**scope(b"e"), "route": None}, "performance", "ew100", {})
    assert known.get("/p", b"d") is None and known.get("/p", b"e") is None
    import index_builder.api.fast_reads as fast_reads

    tomorrow = fast_reads._today() + 1
    monkeypatch.setattr(fast_reads, "_today", lambda: tomorrow)
    assert known.get("/p", b"c") is None and len(known) == 1
