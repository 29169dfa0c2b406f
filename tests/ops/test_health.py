"""GET /health/live and /health/ready on the real app (real DuckDB, real redis-server)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.calendar import get_calendar
from index_builder.ops.breakers import BREAKERS, CircuitState, publish_state
from index_builder.ops.state import evaluate_freshness
from index_builder.storage.duckdb.store import migrations

from api_helpers import make_settings
from ops_helpers import GRACE, after_close, sample, services_of
from redis_server import RedisServer

ET = dt.timezone(dt.timedelta(hours=-5))  # New York in winter (EST)
ET_SUMMER = dt.timezone(dt.timedelta(hours=-4))  # EDT


def _ready(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/health/ready")
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def test_live_answers_without_touching_storage(client: TestClient) -> None:
    services_of(client).store.close()
    response = client.get("/health/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_is_ok_with_every_component(client: TestClient, last_day: dt.date) -> None:
    code, body = _ready(client)
    assert code == 200 and body["status"] == "ok", body
    components = body["components"]
    assert body["version"] and body["checked_at"].endswith("Z")
    newest = max(version for version, _ in migrations())
    assert components["storage"] == {
        "status": "ok",
        "schema_version": newest,
        "backend": "duckdb",
        "database": str(services_of(client).settings.database),
    }
    assert components["redis"] == {"status": "ok", "redis": "up"}
    fresh = components["freshness"]
    assert fresh["status"] == "ok" and not fresh["stale"]
    assert fresh["last_trading_day"] == fresh["expected_session"] == last_day.isoformat()
    assert fresh["data_age_seconds"] == (GRACE.total_seconds() + 3600)
    ingestion = components["ingestion"]
    assert ingestion["status"] == "ok" and ingestion["state"] == "succeeded"
    assert ingestion["run_id"] == 1 and ingestion["rows_accepted"] > 0
    ew100 = components["builds"]["indices"]["ew100"]
    assert ew100["status"] == "ok" and ew100["up_to_date"] is True
    assert ew100["built_through"] == last_day.isoformat()
    assert components["circuit_breakers"] == {"status": "ok", "breakers": {}}
    flags = components["feature_flags"]
    assert flags["status"] == "ok" and flags["flags"]["async_builds"] is True


def test_ready_is_503_when_storage_is_unreachable(client: TestClient) -> None:
    services_of(client).store.close()  # the real store, closed: every query fails
    code, body = _ready(client)
    assert code == 503 and body["status"] == "down"
    storage = body["components"]["storage"]
    assert storage["status"] == "down" and "not open" in storage["detail"]
    for name in ("freshness", "ingestion", "builds"):
        assert body["components"][name]["status"] == "unknown"
    assert body["components"]["redis"]["status"] == "ok"  # the others still report
    # the reads fail the same way; liveness does not
    assert client.get("/health/live").status_code == 200


def test_ready_reports_stale_data_after_a_missed_session(
    client: TestClient, last_day: dt.date
) -> None:
    services = services_of(client)
    calendar = get_calendar()
    next_session = calendar.session_after(last_day, 1)
    assert next_session is not None
    grace_minutes = GRACE.total_seconds() / 60

    # the next session has closed, but not the grace period yet: still fresh
    services.clock = lambda: after_close(next_session, grace_minutes - 1)
    code, body = _ready(client)
    assert code == 200 and body["components"]["freshness"]["status"] == "ok"

    # one minute past close + grace: that session should be in the data
    services.clock = lambda: after_close(next_session, grace_minutes + 1)
    code, body = _ready(client)
    assert code == 200 and body["status"] == "degraded"
    fresh = body["components"]["freshness"]
    assert fresh["status"] == "degraded" and fresh["stale"] is True
    assert fresh["expected_session"] == next_session.isoformat()
    assert fresh["last_trading_day"] == last_day.isoformat()
    last_close = after_close(last_day, 0)
    expected_age = services.clock() - last_close
    assert fresh["data_age_seconds"] == expected_age.total_seconds()
    assert next_session.isoformat() in fresh["detail"]
    assert body["components"]["storage"]["status"] == "ok"


def test_weekends_and_holidays_never_make_data_stale() -> None:
    calendar = get_calendar()
    # Thursday 2023-04-06, then Good Friday (closed) and the weekend
    thursday = dt.date(2023, 4, 6)
    for moment in (
        dt.datetime(2023, 4, 7, 20, 0, tzinfo=ET_SUMMER),  # Good Friday evening
        dt.datetime(2023, 4, 9, 12, 0, tzinfo=ET_SUMMER),  # Sunday
        dt.datetime(2023, 4, 10, 17, 59, tzinfo=ET_SUMMER),  # Monday, before close + grace
    ):
        fresh = evaluate_freshness(thursday, calendar, moment, GRACE)
        assert not fresh.stale and fresh.expected_session == thursday, moment
    late_monday = dt.datetime(2023, 4, 10, 18, 1, tzinfo=ET_SUMMER)
    fresh = evaluate_freshness(thursday, calendar, late_monday, GRACE)
    assert fresh.stale and fresh.expected_session == dt.date(2023, 4, 10)


def test_early_closes_are_respected() -> None:
    calendar = get_calendar()
    wednesday = dt.date(2023, 11, 22)  # Thursday 23rd is Thanksgiving; Friday closes at 13:00
    at_1530 = dt.datetime(2023, 11, 24, 15, 30, tzinfo=ET)  # early close + 2 h 30
    assert evaluate_freshness(wednesday, calendar, at_1530, GRACE).stale
    at_1430 = dt.datetime(2023, 11, 24, 14, 30, tzinfo=ET)  # early close + 1 h 30
    assert not evaluate_freshness(wednesday, calendar, at_1430, GRACE).stale


def test_no_market_data_is_degraded() -> None:
    moment = dt.datetime(2024, 1, 10, 12, tzinfo=dt.UTC)
    fresh = evaluate_freshness(None, get_calendar(), moment, GRACE)
    assert fresh.stale and fresh.as_dict()["status"] == "degraded"
    assert "index-builder ingest" in str(fresh.as_dict()["detail"])


def test_redis_down_is_200_degraded_then_recovers(
    client: TestClient, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        code, body = _ready(client)
        assert code == 200 and body["status"] == "degraded", body
        redis = body["components"]["redis"]
        assert redis["status"] == "degraded" and redis["redis"] == "down"
        assert "retrying" in redis["detail"]
        assert client.get("/index-performance", params={"index": "ew100"}).status_code == 200
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5
    while True:  # the cache retries Redis after INDEX_BUILDER_REDIS_RETRY_SECONDS (0.2 s here)
        code, body = _ready(client)
        if body["status"] == "ok" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 200 and body["status"] == "ok", body
    assert body["components"]["redis"] == {"status": "ok", "redis": "up"}


def test_failed_ingestion_run_degrades(client: TestClient) -> None:
    store = services_of(client).store
    store.cursor().execute(
        "INSERT INTO ingest_runs (run_id, provider, status, started_at, finished_at, message)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [2, "file", "failed", dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 0, 1), "boom"],
    )
    code, body = _ready(client)
    ingestion = body["components"]["ingestion"]
    assert code == 200 and body["status"] == "degraded"
    assert ingestion["status"] == "degraded" and ingestion["run_id"] == 2
    assert ingestion["state"] == "failed" and ingestion["detail"] == "boom"


UNBUILDABLE = {
    "id": "nothing-eligible",
    "name": "No security is this big",
    "top_n": 10,
    "weighting": "equal",
    "rebalance": "monthly",
    "universe": {"min_market_cap": 1.0e18},
}


def test_failed_build_degrades_and_names_the_index(client: TestClient) -> None:
    assert client.post("/indices", json=UNBUILDABLE).status_code == 201
    failed = client.post("/build-index", json={"index": "nothing-eligible"})
    assert failed.status_code == 422, failed.text
    code, body = _ready(client)
    builds = body["components"]["builds"]
    assert code == 200 and body["status"] == "degraded"
    assert builds["status"] == "degraded" and "nothing-eligible" in builds["detail"]
    entry = builds["indices"]["nothing-eligible"]
    assert entry["status"] == "failed" and entry["error"]
    assert builds["indices"]["ew100"]["status"] == "ok"


def test_a_failed_index_of_a_build_all_job_degrades_and_counts(client: TestClient) -> None:
    assert client.post("/indices", json=UNBUILDABLE).status_code == 201
    before = client.get("/metrics").text
    accepted = client.post("/builds", json={"indices": ["ew-tech50", "nothing-eligible"]})
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 30
    job = client.get(accepted.json()["status_url"]).json()
    while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(accepted.json()["status_url"]).json()
    assert job["status"] == "succeeded" and job["result"]["failed"] == 1
    code, body = _ready(client)
    builds = body["components"]["builds"]
    assert code == 200 and builds["status"] == "degraded"
    assert builds["detail"] == "last build failed: nothing-eligible"
    assert "no eligible security" in builds["indices"]["nothing-eligible"]["error"]
    assert builds["indices"]["ew-tech50"]["status"] == "ok"
    after = client.get("/metrics").text
    assert sample(after, "index_builder_last_build_success", index="nothing-eligible") == 0
    assert sample(after, "index_builder_last_build_success", index="ew-tech50") == 1
    failures = "index_builder_build_failures_total"
    assert (
        sample(after, failures, index="nothing-eligible")
        - sample(before, failures, index="nothing-eligible")
        == 1
    )
    assert sample(after, failures, index="ew-tech50") == sample(before, failures, index="ew-tech50")


class StaticBreaker:
    """A breaker held in one state (providers bring real ones later)."""

    def __init__(self, state: CircuitState) -> None:
        self.state: CircuitState = state

    def health(self) -> dict[str, object]:
        return {"status": "ok" if self.state == "closed" else "degraded", "state": self.state}


def test_an_open_circuit_degrades_and_is_a_gauge(client: TestClient) -> None:
    BREAKERS["vendor-a"] = StaticBreaker("open")
    BREAKERS["vendor-b"] = StaticBreaker("closed")
    publish_state("vendor-a", "open")
    publish_state("vendor-b", "closed")
    try:
        code, body = _ready(client)
        breakers = body["components"]["circuit_breakers"]
        assert code == 200 and body["status"] == "degraded"
        assert breakers["status"] == "degraded"
        assert breakers["breakers"]["vendor-a"] == {"status": "degraded", "state": "open"}
        text = client.get("/metrics").text
        assert sample(text, "index_builder_circuit_state", provider="vendor-a") == 2
        assert sample(text, "index_builder_circuit_state", provider="vendor-b") == 0
    finally:
        BREAKERS.clear()
    assert _ready(client)[1]["status"] == "ok"


def test_a_storage_check_slower_than_the_timeout_is_down(
    database: Path, redis_server: RedisServer
) -> None:
    settings = make_settings(database, redis_server.url, health_timeout_seconds=1e-6)
    with TestClient(create_app(settings)) as slow:
        code, body = _ready(slow)
    assert code == 503 and body["components"]["storage"]["status"] == "down"
    assert "no answer within" in body["components"]["storage"]["detail"]


def test_newer_data_waiting_for_a_build_shows_without_degrading(client: TestClient) -> None:
    services = services_of(client)
    store = services.store
    _, body = _ready(client)
    ew100 = body["components"]["builds"]["indices"]["ew100"]
    assert (ew100["up_to_date"], ew100["data_waiting_from"]) == (True, None)
    assert (
        sample(client.get("/metrics").text, "index_builder_build_data_waiting", index="ew100") == 0
    )
    # a correction of a published day arrives (a new version, as ingestion writes it)
    day = store.trading_days()[-3]
    store.cursor().execute(
        "INSERT INTO ingest_runs (run_id, provider, status, started_at)"
        " VALUES (990, 'fix', 'succeeded', now()::TIMESTAMP)"
    )
    store.cursor().execute(
        "UPDATE prices SET close = close * 1.1, run_id = 990 WHERE date = ? AND symbol IN"
        " (SELECT symbol FROM prices WHERE date = ? ORDER BY market_cap DESC LIMIT 1)",
        [day, day],
    )
    code, body = _ready(client)
    builds = body["components"]["builds"]
    assert code == 200 and builds["status"] == "ok"  # normal between ingestion and build
    ew100 = builds["indices"]["ew100"]
    assert (ew100["up_to_date"], ew100["data_waiting_from"]) == (False, str(day))
    assert "newer data waits for a build: ew100" in builds["detail"]
    assert (
        sample(client.get("/metrics").text, "index_builder_build_data_waiting", index="ew100") == 1
    )
    assert client.post("/build-index", json={"index": "ew100"}).json()["mode"] == "restated"
    _, body = _ready(client)
    assert body["components"]["builds"]["indices"]["ew100"]["data_waiting_from"] is None
