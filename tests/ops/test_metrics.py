"""GET /metrics on the real app: request, cache, build, export and data metrics."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from fastapi.testclient import TestClient

from index_builder.calendar import get_calendar

from api_helpers import app_without_redis
from ops_helpers import GRACE, after_close, sample, services_of
from redis_server import RedisServer

REQUESTS = "index_builder_http_requests_total"
DURATION_COUNT = "index_builder_http_request_duration_seconds_count"


def _metrics(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_requests_are_counted_by_route_template_method_and_status(client: TestClient) -> None:
    before = _metrics(client)
    template = "/indices/{index_id}"
    assert client.get("/indices/ew100").status_code == 200
    assert client.get("/indices/ew-tech50").status_code == 200
    assert client.get("/indices/nope").status_code == 404
    assert client.get("/no/such/path/42").status_code == 404
    after = _metrics(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta(REQUESTS, route=template, method="GET", status="200") == 2
    assert delta(REQUESTS, route=template, method="GET", status="404") == 1
    assert delta(REQUESTS, route="unmatched", method="GET", status="404") == 1
    assert delta(DURATION_COUNT, route=template, method="GET") == 3
    assert "/no/such/path/42" not in after  # raw paths never become label values
    assert delta(REQUESTS, route="/metrics", method="GET", status="200") == 1


def test_cache_hits_and_misses(client: TestClient, redis_server: RedisServer) -> None:
    before = _metrics(client)
    params = {"index": "ew100", "start_date": "2023-01-10"}
    assert client.get("/index-performance", params=params).headers["x-cache"] == "MISS"
    assert client.get("/index-performance", params=params).headers["x-cache"] == "HIT"
    after = _metrics(client)
    name = "index_builder_cache_requests_total"
    assert sample(after, name, result="miss") - sample(before, name, result="miss") == 1
    assert sample(after, name, result="hit") - sample(before, name, result="hit") == 1
    assert sample(after, "index_builder_redis_up") == 1

    redis_server.stop()
    try:
        errors_before = sample(after, name, result="error")
        client.get("/index-performance", params={"index": "ew100", "start_date": "2023-01-11"})
        down = _metrics(client)
        assert sample(down, name, result="error") - errors_before == 1
        assert sample(down, "index_builder_redis_up") == 0
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5
    while sample(_metrics(client), "index_builder_redis_up") != 1:
        assert time.monotonic() < deadline, "redis_up did not recover"
        time.sleep(0.1)


def test_no_redis_configured_exports_no_redis_up(database: Path) -> None:
    with app_without_redis(database) as c:
        assert "index_builder_redis_up" not in c.get("/metrics").text


def test_build_and_export_durations_and_failures(client: TestClient) -> None:
    before = _metrics(client)
    assert client.post("/build-index", json={"index": "ew-tech50"}).status_code == 200
    unbuildable = {
        "id": "too-big",
        "name": "Nothing is this big",
        "top_n": 5,
        "weighting": "equal",
        "rebalance": "monthly",
        "universe": {"min_market_cap": 1.0e18},
    }
    assert client.post("/indices", json=unbuildable).status_code == 201
    assert client.post("/build-index", json={"index": "too-big"}).status_code == 422
    exported = client.post("/export-data", json={"index": "ew100", "format": "csv"})
    assert exported.status_code == 200
    not_built = client.post("/export-data", json={"index": "too-big", "format": "csv"})
    assert not_built.status_code == 404  # the client's error: not a failed export
    after = _metrics(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    build_count = "index_builder_build_duration_seconds_count"
    assert delta(build_count, index="ew-tech50") == 1
    assert delta(build_count, index="too-big") == 1
    assert delta("index_builder_build_failures_total", index="too-big") == 1
    assert delta("index_builder_build_failures_total", index="ew-tech50") == 0
    assert sample(after, "index_builder_last_build_success", index="too-big") == 0
    assert sample(after, "index_builder_last_build_success", index="ew-tech50") == 1
    assert sample(after, "index_builder_last_build_success", index="ew100") == 1
    assert delta("index_builder_export_duration_seconds_count", format="csv") == 2
    assert delta("index_builder_export_failures_total", format="csv") == 0


def test_data_metrics_come_from_the_database(client: TestClient, last_day: dt.date) -> None:
    services = services_of(client)
    store = services.store
    report = store.ingest_runs(1)[0]
    text = _metrics(client)
    accepted = sample(text, "index_builder_ingest_rows", outcome="accepted", reason="none")
    assert accepted == report["rows_accepted"] > 0
    assert sample(text, "index_builder_last_ingest_success") == 1
    finished = report["finished_at"].replace(tzinfo=dt.UTC).timestamp()
    assert sample(text, "index_builder_last_ingest_timestamp_seconds") == finished
    assert sample(text, "index_builder_data_stale") == 0
    age = sample(text, "index_builder_data_age_seconds")
    assert age == GRACE.total_seconds() + 3600

    # a run that quarantined rows and then failed (as the CLI's ingestion records it)
    cur = store.cursor()
    cur.execute(
        "INSERT INTO ingest_runs (run_id, provider, status, started_at, finished_at,"
        " rows_accepted) VALUES (?, ?, ?, ?, ?, ?)",
        [7, "file", "failed", dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 0, 5), 10],
    )
    for reason, count in (("invalid_close", 3), ("not_a_session", 1)):
        for i in range(count):
            cur.execute(
                "INSERT INTO quarantine (run_id, source, row_number, reason) VALUES (?, ?, ?, ?)",
                [7, "prices", i + 1, reason],
            )
    next_session = get_calendar().session_after(last_day, 1)
    assert next_session is not None
    services.clock = lambda: after_close(next_session, GRACE.total_seconds() / 60 + 5)
    text = _metrics(client)
    rows = "index_builder_ingest_rows"
    assert sample(text, rows, outcome="accepted", reason="none") == 10
    assert sample(text, rows, outcome="rejected", reason="prices:invalid_close") == 3
    assert sample(text, rows, outcome="rejected", reason="prices:not_a_session") == 1
    assert sample(text, "index_builder_last_ingest_success") == 0
    assert sample(text, "index_builder_last_ingest_status", status="failed") == 1
    assert sample(text, "index_builder_last_ingest_status", status="succeeded") == 0
    assert sample(text, "index_builder_data_stale") == 1


def test_metrics_answer_when_storage_is_down(client: TestClient) -> None:
    services_of(client).store.close()
    text = _metrics(client)
    assert REQUESTS in text and "index_builder_data_stale" not in text


def test_feature_flags_in_force_are_gauges(client: TestClient) -> None:
    text = _metrics(client)
    assert sample(text, "index_builder_feature_flag", flag="async_builds") == 1
    assert sample(text, "index_builder_feature_flag", flag="weighting_sqrt_market_cap") == 0
