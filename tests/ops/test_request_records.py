"""Request records become the same metrics and access lines in batches as one by one."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from index_builder.ops.logging import configure_logging, reset_logging
from index_builder.ops.metrics import LATENCY_BUCKETS
from index_builder.ops.request_records import (
    Record,
    RequestRecorder,
    add_observations,
    index_from_query,
)
from index_builder.settings import Settings

REQUESTS = "index_builder_http_requests_total"
DURATION_COUNT = "index_builder_http_request_duration_seconds_count"
DURATION_BUCKET = "index_builder_http_request_duration_seconds_bucket"


class Route:
    """What the router leaves in ``scope["route"]``."""

    def __init__(self, path: str) -> None:
        self.path = path


def record(route: str | None, status: int = 200, duration: float = 0.002, **kw: object) -> Record:
    return (
        Route(route) if route else None,
        str(kw.get("method", "GET")),
        status,
        duration,
        str(kw.get("request_id", "rid")),
        ("10.0.0.7", 5555),
        bytes(kw.get("query", b"")),  # type: ignore[arg-type]
        time.time(),
    )


@pytest.fixture
def log_stream(tmp_path: Path) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(Settings(database=tmp_path / "x.duckdb"), stream=stream, log_format="json")
    yield stream
    reset_logging()


def access_lines(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in stream.getvalue().splitlines() if x.strip()]
    return [x for x in lines if x.get("logger") == "index_builder.access"]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_batched_observations_equal_one_by_one() -> None:
    durations = [0.0004, 0.001, 0.001, 0.0031, 0.02, 0.7, 3.0, 12.0, 0.0]
    one, batched = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("h", "h", ["r"], buckets=LATENCY_BUCKETS, registry=one).labels("x")
    for duration in durations:
        by_one.observe(duration)
    counts = [0.0] * (len(LATENCY_BUCKETS) + 1)
    for duration in durations:
        counts[
            next(i for i, b in enumerate((*LATENCY_BUCKETS, float("inf"))) if duration <= b)
        ] += 1
    add_observations(
        Histogram("h", "h", ["r"], buckets=LATENCY_BUCKETS, registry=batched).labels("x"),
        sum(durations),
        counts,
    )
    assert list(one.collect()) == list(batched.collect())


def test_a_batch_counts_every_record_once_by_label_set(log_stream: io.StringIO) -> None:
    route = "/test-records/{id}"
    before = {
        "ok": value(REQUESTS, route=route, method="GET", status="200"),
        "missing": value(REQUESTS, route=route, method="GET", status="404"),
        "unmatched": value(REQUESTS, route="unmatched", method="POST", status="404"),
        "count": value(DURATION_COUNT, route=route, method="GET"),
        "le_1ms": value(DURATION_BUCKET, route=route, method="GET", le="0.001"),
    }
    recorder = RequestRecorder()
    for rec in (
        record(route, 200, 0.0005),
        record(route, 200, 0.004),
        record(route, 404, 0.001),
        record(None, 404, method="POST"),
    ):
        recorder.add(rec)  # no event loop here: processed at once
    assert value(REQUESTS, route=route, method="GET", status="200") - before["ok"] == 2
    assert value(REQUESTS, route=route, method="GET", status="404") - before["missing"] == 1
    assert (
        value(REQUESTS, route="unmatched", method="POST", status="404") == before["unmatched"] + 1
    )
    assert value(DURATION_COUNT, route=route, method="GET") - before["count"] == 3
    # le is cumulative: 0.0005 and 0.001 are <= 1 ms, 0.004 is not
    assert value(DURATION_BUCKET, route=route, method="GET", le="0.001") - before["le_1ms"] == 2
    assert [x["status"] for x in access_lines(log_stream)] == [200, 200, 404, 404]


def test_records_wait_for_the_timer_a_full_batch_or_a_5xx(log_stream: io.StringIO) -> None:
    route = "/test-records/batch"
    recorder = RequestRecorder(max_records=3, delay=0.05)

    def counted() -> float:
        return value(REQUESTS, route=route, method="GET", status="200")

    async def scenario() -> list[float]:
        seen = [counted()]
        recorder.add(record(route))
        seen.append(counted())  # waiting for the timer
        await asyncio.sleep(0.2)
        seen.append(counted())  # the timer processed it
        recorder.add(record(route))
        recorder.add(record(route))
        seen.append(counted())
        recorder.add(record(route))  # third waiting: a full batch
        seen.append(counted())
        recorder.add(record(route, 503))  # an error is processed (and logged) at once
        seen.append(value(REQUESTS, route=route, method="GET", status="503"))
        return seen

    start, waiting, timed, two, full, errors = asyncio.run(scenario())
    assert (waiting - start, timed - start, two - start, full - start) == (0, 1, 1, 4)
    assert errors >= 1
    lines = access_lines(log_stream)
    assert [x["level"] for x in lines] == ["info"] * 4 + ["error"]


def test_access_line_fields_levels_and_quiet_routes(log_stream: io.StringIO) -> None:
    recorder = RequestRecorder()
    recorder.add(
        record("/index-performance", query=b"start_date=x&index=ew%2D100", request_id="r1")
    )
    recorder.add(record("/health/live"))  # probes: DEBUG, below the INFO level set here
    (line,) = access_lines(log_stream)
    assert line["event"] == "request" and line["level"] == "info"
    assert line["route"] == "/index-performance" and line["index"] == "ew-100"
    assert line["request_id"] == "r1" and line["client"] == "10.0.0.7"
    assert line["duration_ms"] == 2.0 and str(line["timestamp"]).endswith("Z")
    assert logging.getLogger("index_builder.access").isEnabledFor(logging.INFO)


def test_index_from_query() -> None:
    assert index_from_query(b"") is None
    assert index_from_query(b"reindex=1") is None
    assert index_from_query(b"a=1&index=ew100&b=2") == "ew100"
    assert index_from_query(b"index=my+index%21") == "my index!"


def test_a_metrics_failure_is_logged_and_the_access_lines_still_written(
    log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RequestRecorder()

    def broken(records: list[Record]) -> None:
        raise RuntimeError("metric files unwritable")

    monkeypatch.setattr(recorder, "_count", broken)
    recorder.add(record("/index-performance", request_id="kept"))
    lines = [json.loads(x) for x in log_stream.getvalue().splitlines() if x.strip()]
    (failure,) = [x for x in lines if x.get("logger") == "index_builder.ops.request_records"]
    assert failure["level"] == "error" and "not recorded" in str(failure["event"])
    assert [x["request_id"] for x in access_lines(log_stream)] == ["kept"]
