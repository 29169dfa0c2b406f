"""POST /build-index, jobs, and the cache across rebuilds and Redis outages."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.api.deps import Services
from index_builder.ingest.job import run_ingestion
from index_builder.providers.synthetic_market import generate_market

from api_helpers import make_settings
from redis_server import RedisServer


def _services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _wait_for_job(client: TestClient, url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def _ingest_five_more_days(client: TestClient, tmp_path: Path) -> None:
    """Five sessions after the stored ones (the 65-day market's, same seed)."""
    store = _services(client).store
    last = store.trading_days()[-1]
    longer = generate_market(seed=42, n_symbols=300, n_days=65, start=dt.date(2023, 1, 3))
    newer = longer.prices.filter(pc.greater(longer.prices.column("date"), pa.scalar(last)))
    pq.write_table(newer, tmp_path / "new.parquet")
    pq.write_table(longer.securities, tmp_path / "sec.parquet")
    run_ingestion(
        store,
        "file",
        {"securities": str(tmp_path / "sec.parquet"), "prices": str(tmp_path / "new.parquet")},
    )


def test_sync_build_reports_the_window(client: TestClient) -> None:
    response = client.post("/build-index", json={"index": "ew-sector-energy"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "index",
        "start_date",
        "end_date",
        "trading_days",
        "rebalances",
        "changes",
        "duration_ms",
        "version",
        "as_of",
    }
    assert body["as_of"] is None  # the current results
    assert body["trading_days"] == body["rebalances"] == 60
    again = client.post(
        "/build-index", json={"index": "ew-sector-energy", "start_date": "2023-02-01"}
    ).json()
    assert again["version"] == body["version"]  # nothing new: same build
    assert again["start_date"] == "2023-02-01" and again["trading_days"] < 60


def test_async_build_returns_a_job_that_succeeds(client: TestClient) -> None:
    response = client.post("/build-index", json={"index": "ew-sector-utilities", "async": True})
    assert response.status_code == 202
    accepted = response.json()
    assert response.headers["location"] == accepted["status_url"]
    job = _wait_for_job(client, accepted["status_url"])
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["result"]["index"] == "ew-sector-utilities"
    assert client.get("/jobs/unknown").status_code == 404


def test_build_errors(client: TestClient) -> None:
    assert client.post("/build-index", json={"index": "nope"}).status_code == 404
    r = client.post("/build-index", json={"start_date": "2022-01-03"})
    assert r.status_code == 422 and r.json()["field"] == "start_date"
    r = client.post("/build-index", json={"start_date": "2023-03-01", "end_date": "2023-02-01"})
    assert r.status_code == 422 and r.json()["field"] == "end_date"


def test_large_builds_are_asynchronous(database: Path, redis_server: RedisServer) -> None:
    settings = make_settings(database, redis_server.url, async_build_days=10)
    with TestClient(create_app(settings)) as client:
        response = client.post("/build-index", json={"index": "ew-sector-materials"})
        assert response.status_code == 202
        assert _wait_for_job(client, response.json()["status_url"])["status"] == "succeeded"


def test_two_concurrent_builds_of_one_index_run_once(client: TestClient) -> None:
    services = _services(client)
    gate = threading.Event()
    calls: list[str] = []
    real_build = services.jobs._build

    def gated(request: Any, progress: Any) -> dict[str, Any]:
        calls.append(request.index)
        gate.wait(10)
        return real_build(request, progress)

    services.jobs._build = gated
    body = {"index": "ew-sector-energy", "async": True}
    first = client.post("/build-index", json=body).json()
    second = client.post("/build-index", json=body).json()
    assert second["job_id"] == first["job_id"] and second["joined"] is True
    results: list[Any] = []
    waiter = threading.Thread(
        target=lambda: results.append(
            client.post("/build-index", json={"index": "ew-sector-energy"})
        )
    )
    waiter.start()  # a synchronous request joins the same build and waits for it
    time.sleep(0.2)
    gate.set()
    waiter.join(30)
    assert _wait_for_job(client, first["status_url"])["status"] == "succeeded"
    assert results[0].status_code == 200
    assert calls == ["ew-sector-energy"]


def test_a_rebuild_after_new_data_changes_the_cached_answer(
    client: TestClient, tmp_path: Path
) -> None:
    before = client.get("/index-performance")
    assert client.get("/index-performance").headers["x-cache"] == "HIT"
    _ingest_five_more_days(client, tmp_path)
    built = client.post("/build-index", json={"index": "ew100"}).json()
    after = client.get("/index-performance")
    assert after.headers["x-cache"] == "MISS"
    assert len(after.json()["data"]) == len(before.json()["data"]) + 5 == built["trading_days"]
    assert after.json()["data"][:60] == before.json()["data"]  # history unchanged


def test_answers_stay_correct_while_redis_stops_and_restarts(
    client: TestClient, redis_server: RedisServer
) -> None:
    reference = client.get("/index-composition").content
    assert client.get("/index-composition").headers["x-cache"] == "HIT"
    redis_server.stop()
    try:
        for _ in range(5):
            r = client.get("/index-composition")
            assert r.status_code == 200 and r.content == reference
            assert r.headers["x-cache"] == "MISS"
        assert _services(client).cache.status == "down"
    finally:
        redis_server.start()
    time.sleep(0.3)  # past the retry wait (0.2 s in tests)
    statuses = [client.get("/index-composition") for _ in range(3)]
    assert all(r.status_code == 200 and r.content == reference for r in statuses)
    assert statuses[-1].headers["x-cache"] == "HIT"
    assert _services(client).cache.status == "up"


def test_indices_crud(client: TestClient) -> None:
    listed = client.get("/indices").json()
    assert {i["definition"]["id"] for i in listed} >= {"ew100", "ew-tech50"}
    assert client.get("/indices/ew100").json()["builtin"] is True
    bad = client.post("/indices", json={"id": "mine", "name": "Mine", "top_n": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "top_n"
    definition = {"id": "mine", "name": "Mine", "top_n": 5, "rebalance": "monthly"}
    created = client.post("/indices", json=definition)
    assert created.status_code == 201 and created.json()["build"] is None
    assert client.post("/indices", json=definition).status_code == 409
    assert client.post("/build-index", json={"index": "mine"}).status_code == 200
    assert client.get("/index-performance", params={"index": "mine"}).status_code == 200
    assert client.delete("/indices/ew100").status_code == 409
    assert client.delete("/indices/mine").status_code == 204
    assert client.get("/indices/mine").status_code == 404
    assert client.delete("/indices/mine").status_code == 404


def test_the_local_tier_serves_hits_without_redis_and_never_outlives_a_rebuild(
    database: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.flush()
    settings = make_settings(database, redis_server.url, local_cache_entries=8)
    with TestClient(create_app(settings)) as client:
        first = client.get("/index-performance")
        assert first.headers["x-cache"] == "MISS"
        redis_server.stop()
        try:
            hit = client.get("/index-performance")
            assert hit.headers["x-cache"] == "HIT" and hit.content == first.content
            _ingest_five_more_days(client, tmp_path)
            assert client.post("/build-index", json={"index": "ew100"}).status_code == 200
            after = client.get("/index-performance")
            assert after.headers["x-cache"] == "MISS"
            assert len(after.json()["data"]) == len(first.json()["data"]) + 5
        finally:
            redis_server.start()


def test_a_slow_redis_is_skipped_not_waited_for(
    client: TestClient, redis_server: RedisServer, caplog: Any
) -> None:
    reference = client.get("/index-composition").content
    blocker = threading.Thread(
        target=lambda: redis.Redis.from_url(redis_server.url).execute_command("DEBUG", "SLEEP", 2)
    )
    blocker.start()  # Redis answers nothing for 2 s
    time.sleep(0.1)
    try:
        with caplog.at_level(logging.WARNING, logger="index_builder.cache"):
            for _ in range(3):
                started = time.monotonic()
                r = client.get("/index-composition")
                assert r.status_code == 200 and r.content == reference
                assert time.monotonic() - started < 1.5  # never waits out the 2 s stall
        outage_logs = [m for m in caplog.messages if "redis unavailable" in m]
        assert len(outage_logs) == 1  # once per outage, not once per request
    finally:
        blocker.join(10)


def test_builds_wait_while_the_daily_cycle_holds_the_write_gate(client: TestClient) -> None:
    jobs = client.app.state.services.jobs  # type: ignore[attr-defined]
    with jobs.write_gate:  # what the in-process daily cycle holds while it writes
        response = client.post("/build-index", json={"index": "ew-sector-energy", "async": True})
        assert response.status_code == 202
        job = jobs.get(response.json()["job_id"])
        time.sleep(0.3)
        assert job.status == "queued"
    job.future.result(timeout=30)
    assert job.status == "succeeded"
