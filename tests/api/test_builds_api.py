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
        "outcome",
        "mode",
        "start_date",
        "end_date",
        "trading_days",
        "rebalances",
        "changes",
        "duration_ms",
        "version",
        "warnings",
        "as_of",
        "as_of_version",
    }
    assert body["outcome"] == "built" and body["mode"] == "full"
    assert body["as_of"] is None and body["as_of_version"] is None  # the current results
    assert isinstance(body["warnings"], list)
    assert body["trading_days"] == body["rebalances"] == 60
    again = client.post(
        "/build-index", json={"index": "ew-sector-energy", "start_date": "2023-02-01"}
    ).json()
    assert again["version"] == body["version"]  # nothing new: same build
    assert again["outcome"] == "unchanged" and again["mode"] == "up-to-date"
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


UNBUILDABLE = {"id": "no-sector", "name": "Nothing", "top_n": 5, "universe": {"sectors": ["None"]}}
"""A user index whose universe matches no security: it cannot be built."""


def test_build_all_reports_every_outcome_and_one_failure_does_not_stop_the_rest(
    client: TestClient,
) -> None:
    assert client.post("/indices", json=UNBUILDABLE).status_code == 201
    every = [i["definition"]["id"] for i in client.get("/indices").json()]
    response = client.post("/builds")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == accepted["status_url"]
    assert accepted["joined"] is False
    job = _wait_for_job(client, accepted["status_url"])
    assert job["status"] == "succeeded", job  # an index's failure is its outcome
    assert job["index"] is None and job["indices"] == every
    result = job["result"]
    outcomes = {o["index"]: o for o in result["outcomes"]}
    assert list(outcomes) == every
    failed = outcomes.pop("no-sector")
    assert failed["outcome"] == "failed" and failed["mode"] == "failed"
    assert "no eligible security on the base date" in failed["reason"]
    assert failed["error_code"] == "build-failed" and failed["version"] is None
    # ew100 and ew-tech50 were built in the template: unchanged; the others built now
    last = outcomes["ew100"]["end_date"]
    assert outcomes.pop("ew100")["outcome"] == outcomes.pop("ew-tech50")["outcome"] == "unchanged"
    assert {o["outcome"] for o in outcomes.values()} == {"built"}
    assert all(o["end_date"] == last and o["reason"] is None for o in outcomes.values())
    assert (result["built"], result["unchanged"], result["failed"]) == (len(outcomes), 2, 1)
    assert result["skipped"] == []
    # the built indices are served at once
    perf = client.get("/index-performance", params={"index": "ew-sector-energy"})
    assert perf.status_code == 200 and perf.json()["end_date"] == last
    # readiness names the failed index
    builds = client.get("/health/ready").json()["components"]["builds"]
    assert builds["status"] == "degraded" and "no-sector" in builds["detail"]
    assert builds["indices"]["ew-sector-energy"]["status"] == "ok"

    # the one index alone: its problem, as POST /build-index always answered
    alone = client.post("/build-index", json={"index": "no-sector"})
    assert alone.status_code == 422
    assert alone.headers["content-type"].startswith("application/problem+json")
    problem = alone.json()
    assert problem["type"].endswith("build-failed")
    assert "no eligible security on the base date" in problem["detail"]
    queued = client.post("/build-index", json={"index": "no-sector", "async": True})
    job = _wait_for_job(client, queued.json()["status_url"])
    assert job["status"] == "failed" and job["error"]["type"] == "build-failed"
    assert job["index"] == "no-sector" and job["indices"] == ["no-sector"]


def test_build_several_named_indices(client: TestClient) -> None:
    body = {"indices": ["ew-sector-energy", "ew100", "ew-sector-energy"]}
    response = client.post("/builds", json=body)
    assert response.status_code == 202, response.text
    job = _wait_for_job(client, response.json()["status_url"])
    assert job["status"] == "succeeded" and job["indices"] == ["ew-sector-energy", "ew100"]
    result = job["result"]
    assert [(o["index"], o["outcome"]) for o in result["outcomes"]] == [
        ("ew-sector-energy", "built"),
        ("ew100", "unchanged"),
    ]
    assert (result["built"], result["unchanged"], result["failed"]) == (1, 1, 0)
    built = result["outcomes"][0]
    assert built["mode"] == "full" and built["trading_days"] == 60 and built["version"]


def test_build_all_validates_like_build_index(client: TestClient) -> None:
    missing = client.post("/builds", json={"indices": ["ew100", "nope"]})
    assert missing.status_code == 404 and missing.json()["field"] == "index"
    assert "nope" in missing.json()["detail"]
    assert client.post("/builds", json={"indices": []}).status_code == 422
    assert client.post("/builds", json={"index": "ew100"}).status_code == 422  # unknown field
    assert client.get("/jobs/unknown").status_code == 404


def test_build_all_needs_the_async_builds_flag_and_skips_switched_off_indices(
    database: Path, redis_server: RedisServer
) -> None:
    flags = '{"async_builds": false, "methodology_part2": false}'
    settings = make_settings(database, redis_server.url, flags=flags)
    with TestClient(create_app(settings)) as client:
        refused = client.post("/builds")
        assert refused.status_code == 409 and refused.json()["field"] == "async_builds"
    settings = make_settings(database, redis_server.url, flags='{"methodology_part2": false}')
    with TestClient(create_app(settings)) as client:
        off = client.post("/builds", json={"indices": ["ew100-buffer"]})
        assert off.status_code == 409 and off.json()["field"] == "methodology_part2"
        job = _wait_for_job(client, client.post("/builds").json()["status_url"])
        assert job["status"] == "succeeded"
        skipped = {s["index"]: s["reason"] for s in job["result"]["skipped"]}
        assert set(skipped) == {"ew100-buffer", "mcap50-ucits"}
        assert "methodology_part2" in skipped["mcap50-ucits"]
        assert not set(skipped) & {o["index"] for o in job["result"]["outcomes"]}


def test_a_multi_index_job_waits_for_the_lock_of_each_of_its_indices(
    database: Path, redis_server: RedisServer
) -> None:
    settings = make_settings(database, redis_server.url, build_workers=2)
    with TestClient(create_app(settings)) as client:
        jobs = _services(client).jobs
        # what a running build of ew-sector-energy holds (taken here by hand)
        lock = jobs._index_locks.setdefault("ew-sector-energy", threading.Lock())
        with lock:
            body = {"indices": ["ew100", "ew-sector-energy"]}
            first = client.post("/builds", json=body).json()
            second = client.post("/builds", json=body).json()
            assert second["job_id"] == first["job_id"] and second["joined"] is True
            other = client.post("/builds", json={"indices": ["ew-tech50"]}).json()
            assert _wait_for_job(client, other["status_url"])["status"] == "succeeded"
            waiting = jobs.get(first["job_id"])
            assert waiting is not None and waiting.status == "queued"
        job = _wait_for_job(client, first["status_url"])
        assert job["status"] == "succeeded"
        outcomes = {o["index"]: o["outcome"] for o in job["result"]["outcomes"]}
        assert outcomes == {"ew100": "unchanged", "ew-sector-energy": "built"}


def test_the_openapi_document_describes_build_all_and_the_outcomes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/builds"]["post"]
    assert set(post["responses"]) >= {"202", "404", "409", "422", "401", "403", "429"}
    assert post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/JobAccepted"
    )
    assert not post["requestBody"].get("required")  # no body: every index
    schemas = doc["components"]["schemas"]
    outcome = schemas["BuildOutcomeInfo"]["properties"]
    assert outcome["outcome"]["enum"] == ["built", "unchanged", "failed"]
    assert all(p.get("description") for p in outcome.values())
    assert set(schemas["BuildsResult"]["properties"]) == {
        "outcomes",
        "built",
        "unchanged",
        "failed",
        "skipped",
    }
    single = schemas["BuildResponse"]["properties"]
    assert single["outcome"]["enum"] == ["built", "unchanged"] and "warnings" in single
    job = schemas["JobStatusResponse"]["properties"]
    assert "indices" in job and len(job["result"]["anyOf"]) == 4  # three shapes or null
    assert job["status"]["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "interrupted",
        "cancelled",
    ]
