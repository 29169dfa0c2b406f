"""Structured logs: JSON lines with the request id, route, status and duration."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.ops.logging import configure_logging, reset_logging

from api_helpers import make_settings
from redis_server import RedisServer

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    reset_logging()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _access(stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in _lines(stream) if line.get("logger") == "index_builder.access"]


def test_json_access_line_with_request_id_route_status_duration(
    database: Path, redis_server: RedisServer, log_stream: io.StringIO
) -> None:
    settings = make_settings(database, redis_server.url, log_format="json")
    assert configure_logging(settings, stream=log_stream) == "json"
    with TestClient(create_app(settings)) as client:
        response = client.get(
            "/index-composition", params={"index": "ew100"}, headers={"X-Request-ID": "req-42.a:b"}
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "req-42.a:b"
    (line,) = [a for a in _access(log_stream) if a["route"] == "/index-composition"]
    assert line["request_id"] == "req-42.a:b"
    assert line["event"] == "request" and line["level"] == "info"
    assert line["method"] == "GET" and line["status"] == 200 and line["index"] == "ew100"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["client"] == "testclient" and line["timestamp"].endswith("Z")
    # the app's own stdlib records come out as JSON too
    assert any(x.get("logger") == "index_builder.api" for x in _lines(log_stream))


def test_request_id_generated_when_missing_or_unsafe(
    database: Path, log_stream: io.StringIO
) -> None:
    settings = make_settings(database, None)
    configure_logging(settings, stream=log_stream, log_format="json")
    with TestClient(create_app(settings)) as client:
        generated = client.get("/indices/nope").headers["x-request-id"]
        unsafe = client.get("/indices", headers={"X-Request-ID": "a b\r\n<script>"})
        too_long = client.get("/indices", headers={"X-Request-ID": "x" * 129})
    assert GENERATED.fullmatch(generated)
    assert GENERATED.fullmatch(unsafe.headers["x-request-id"])
    assert GENERATED.fullmatch(too_long.headers["x-request-id"])
    lines = _access(log_stream)
    assert [x["request_id"] for x in lines] == [
        generated,
        unsafe.headers["x-request-id"],
        too_long.headers["x-request-id"],
    ]
    assert lines[0]["route"] == "/indices/{index_id}" and lines[0]["status"] == 404


def test_stdlib_records_during_a_request_carry_its_request_id(
    database: Path, redis_server: RedisServer, log_stream: io.StringIO
) -> None:
    settings = make_settings(database, redis_server.url)
    configure_logging(settings, stream=log_stream, log_format="json")
    with TestClient(create_app(settings)) as client:
        redis_server.stop()
        try:
            response = client.get(
                "/index-performance", params={"index": "ew100"}, headers={"X-Request-ID": "r1"}
            )
        finally:
            redis_server.start()
    assert response.status_code == 200
    (outage,) = [x for x in _lines(log_stream) if x["event"].startswith("redis unavailable")]
    assert outage["request_id"] == "r1" and outage["logger"] == "index_builder.cache"
    assert outage["level"] == "warning"


def test_unhandled_error_is_500_with_request_id_and_logged(
    database: Path, log_stream: io.StringIO
) -> None:
    settings = make_settings(database, None)
    configure_logging(settings, stream=log_stream, log_format="json")
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "err-1"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "err-1"
    lines = _lines(log_stream)
    (access,) = [x for x in lines if x.get("logger") == "index_builder.access"]
    assert access["status"] == 500 and access["level"] == "error" and access["route"] == "/boom"
    (error,) = [x for x in lines if x["event"].startswith("unhandled error")]
    assert error["request_id"] == "err-1" and "kaboom" in error["exception"]


def test_console_format_is_readable_and_levels_filter(
    database: Path, log_stream: io.StringIO
) -> None:
    settings = make_settings(database, None)
    assert configure_logging(settings, stream=log_stream, log_format="console") == "console"
    with TestClient(create_app(settings)) as client:
        client.get("/indices", headers={"X-Request-ID": "c-1"})
    text = log_stream.getvalue()
    line = next(x for x in text.splitlines() if "request_id=c-1" in x)
    assert "route=/indices" in line and "status=200" in line and "{" not in line

    quiet = io.StringIO()
    configure_logging(make_settings(database, None, log_level="warning"), stream=quiet)
    with TestClient(create_app(settings)) as client:
        client.get("/indices")
    assert "index_builder.access" not in quiet.getvalue()


def test_auto_format_is_json_when_not_a_terminal(database: Path, log_stream: io.StringIO) -> None:
    assert configure_logging(make_settings(database, None), stream=log_stream) == "json"


def test_probes_are_logged_at_debug_only(database: Path, log_stream: io.StringIO) -> None:
    settings = make_settings(database, None)
    configure_logging(settings, stream=log_stream, log_format="json")
    with TestClient(create_app(settings)) as client:
        client.get("/health/live")
        client.get("/metrics")
    assert _access(log_stream) == []
    debug = io.StringIO()
    configure_logging(make_settings(database, None, log_level="DEBUG"), stream=debug)
    with TestClient(create_app(settings)) as client:
        client.get("/health/live")
    assert [x["route"] for x in _access(debug)] == ["/health/live"]
