"""Request limits: body size (413), window length and page size (422), read timeout (504)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi.testclient import TestClient

from index_builder.api.app import create_app

from api_helpers import make_settings
from redis_server import RedisServer

PROBLEM = "application/problem+json"


def _problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"urn:index-builder:problem:{code}"
    assert body.get("field") == field
    return body


def _definition(padding: int) -> dict[str, Any]:
    return {"id": "pad", "name": "x" * padding, "top_n": 5, "weighting": "equal"}


def test_oversized_bodies_are_413_whether_announced_or_streamed(
    database: Path, redis_server: RedisServer
) -> None:
    settings = make_settings(database, redis_server.url, max_body_bytes=1000)
    with TestClient(create_app(settings)) as client:
        body = _problem(client.post("/indices", json=_definition(2000)), 413, "content-too-large")
        assert "1000 bytes" in body["detail"] and "INDEX_BUILDER_MAX_BODY_BYTES" in body["detail"]
        # an announced length is refused before anything is read (the body sent is tiny)
        announced = client.post(
            "/build-index",
            content=b"{}",
            headers={"Content-Type": "application/json", "Content-Length": "5000000"},
        )
        _problem(announced, 413, "content-too-large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
            yield b'{"index": "ew100", "start_date": "'
            yield b" " * 1200
            yield b'"}'

        streamed = client.post(
            "/build-index", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in streamed.request.headers
        _problem(streamed, 413, "content-too-large")
        created = client.post("/indices", json=_definition(10))
        assert created.status_code == 201  # below the limit: unaffected


def test_too_long_windows_are_422_with_the_field(database: Path, redis_server: RedisServer) -> None:
    settings = make_settings(database, redis_server.url, max_window_days=31)
    with TestClient(create_app(settings)) as client:
        window = {"start_date": "2023-01-03", "end_date": "2023-02-03"}  # 32 days
        body = _problem(
            client.get("/index-performance", params=window), 422, "invalid-input", "end_date"
        )
        assert "32 calendar days" in body["detail"] and "at most 31" in body["detail"]
        _problem(
            client.get("/composition-changes", params=window), 422, "invalid-input", "end_date"
        )
        export = client.post("/export-data", json={**window, "format": "csv"})
        _problem(export, 422, "invalid-input", "end_date")
        # a start without an end runs to today: far longer than 31 days
        start_only = client.get("/index-performance", params={"start_date": "2023-01-03"})
        _problem(start_only, 422, "invalid-input", "start_date")
        # 31 days is allowed; the default window (from the base date) is not limited
        ok = {"start_date": "2023-01-03", "end_date": "2023-02-02"}
        assert client.get("/index-performance", params=ok).status_code == 200
        assert client.get("/index-performance").status_code == 200
        assert client.get("/composition-changes", params={"end_date": "2023-03-01"}).is_success
        # an end after the built range is refused, naming the range (never silently cut)
        late = client.get("/composition-changes", params={"end_date": "9999-12-31"})
        assert (
            "after the last built day" in _problem(late, 422, "invalid-input", "end_date")["detail"]
        )


def test_composition_pages(database: Path, redis_server: RedisServer) -> None:
    redis_server.flush()
    with TestClient(create_app(make_settings(database, redis_server.url))) as client:
        full = client.get("/index-composition").json()
        assert (full["total"], full["limit"], full["offset"]) == (100, 1000, 0)
        assert len(full["constituents"]) == 100  # existing clients see every constituent
        pages = [
            client.get("/index-composition", params={"limit": 40, "offset": offset}).json()
            for offset in (0, 40, 80)
        ]
        assert [len(p["constituents"]) for p in pages] == [40, 40, 20]
        assert [c for p in pages for c in p["constituents"]] == full["constituents"]
        assert {p["total"] for p in pages} == {100}
        beyond = client.get("/index-composition", params={"offset": 100}).json()
        assert beyond["constituents"] == [] and beyond["total"] == 100
        _problem(
            client.get("/index-composition", params={"limit": 1001}), 422, "invalid-input", "limit"
        )
        _problem(
            client.get("/index-composition", params={"limit": 0}), 422, "invalid-input", "limit"
        )
        _problem(
            client.get("/index-composition", params={"offset": -1}), 422, "invalid-input", "offset"
        )
    settings = make_settings(database, redis_server.url, max_page_size=30)
    with TestClient(create_app(settings)) as client:
        page = client.get("/index-composition").json()
        assert (page["total"], page["limit"], len(page["constituents"])) == (100, 30, 30)
        body = _problem(
            client.get("/index-composition", params={"limit": 31}), 422, "invalid-input", "limit"
        )
        assert "INDEX_BUILDER_MAX_PAGE_SIZE" in body["detail"]


def test_a_slow_read_is_504_and_its_answer_is_cached_for_the_retry(
    database: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    store = redis.Redis.from_url(redis_server.url)
    # 1 ms: any read that reaches the database (a worker thread, DuckDB) takes longer
    settings = make_settings(database, redis_server.url, request_timeout_seconds=0.001)
    with TestClient(create_app(settings)) as client:
        slow = client.get("/index-composition")
        body = _problem(slow, 504, "timeout")
        assert "INDEX_BUILDER_REQUEST_TIMEOUT_SECONDS" in body["detail"]
        assert store.keys("ib:v1:composition:*")  # the work finished: cached for the retry
        # builds are not limited by the read timeout
        assert client.post("/build-index", json={"index": "ew100"}).status_code == 200
    with TestClient(create_app(make_settings(database, redis_server.url))) as client:
        assert client.get("/index-composition").status_code == 200  # the default: 30 s


def test_inputs_reach_sql_only_as_bound_parameters(client: TestClient) -> None:
    hostile = "ew100' OR '1'='1"  # not an index id: refused before any query
    body = _problem(
        client.get("/index-performance", params={"index": hostile}), 422, "invalid-input", "index"
    )
    assert "pattern" in body["detail"]
    _problem(client.get("/indices/x'; DROP TABLE prices; --"), 422, "invalid-input", "index_id")
    assert client.delete("/indices/ew100' --").status_code == 422
    # the data is intact
    assert len(client.get("/index-composition").json()["constituents"]) == 100
