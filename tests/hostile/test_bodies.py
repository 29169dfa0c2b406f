"""Hostile bodies: malformed JSON, other media types, missing or non-object bodies,
bodies nested too deeply, unknown fields, oversized bodies. Each answers a problem
naming what is wrong (400 / 413 / 415 / 422), and no table changes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.problems import PROBLEM_MEDIA_TYPE
from serve_process import ServeProcess

from integrity import changed_tables, file_fingerprint

JSON = {"content-type": "application/json"}
ROUTES = ("/build-index", "/indices", "/export-data", "/builds")


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f":{code}"), body
    return body


@pytest.mark.parametrize("route", ROUTES)
def test_malformed_json_says_where(
    client: TestClient, intact: Callable[[], None], route: str
) -> None:
    body = _problem(
        client.post(route, content=b'{"index": "ew100" "x": 1}', headers=JSON), 400, "invalid-json"
    )
    assert body["detail"] == "invalid JSON at line 1, column 19: expecting ',' delimiter"
    assert body["field"] == "body"
    two_lines = b'{\n  "index": ew100\n}'
    body = _problem(client.post(route, content=two_lines, headers=JSON), 400, "invalid-json")
    assert body["detail"] == "invalid JSON at line 2, column 12: expecting value"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", "text/csv"])
def test_a_body_that_is_not_json_is_415(
    client: TestClient, intact: Callable[[], None], route: str, media: str
) -> None:
    response = client.post(route, content=b'{"index": "ew100"}', headers={"content-type": media})
    body = _problem(response, 415, "unsupported-media-type")
    assert media in body["detail"] and "application/json" in body["detail"]


@pytest.mark.parametrize("route", ["/build-index", "/indices", "/export-data"])
def test_a_missing_body_is_named(
    client: TestClient, intact: Callable[[], None], route: str
) -> None:
    for headers in (JSON, {}):
        body = _problem(client.post(route, content=b"", headers=headers), 422, "invalid-input")
        assert body["field"] == "body" and "request body is missing" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "kind"), [(b"[1, 2]", "an array"), (b'"ew100"', "a string"), (b"7", "a number")]
)
def test_a_body_that_is_not_an_object_is_named(
    client: TestClient, intact: Callable[[], None], payload: bytes, kind: str
) -> None:
    body = _problem(
        client.post("/build-index", content=payload, headers=JSON), 422, "invalid-input"
    )
    assert body["detail"] == f"the request body must be a JSON object, got {kind}"


def test_bodies_nested_too_deeply_are_400_not_500(
    client: TestClient, intact: Callable[[], None]
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    body = _problem(client.post("/build-index", content=deep, headers=JSON), 400, "invalid-json")
    assert "nested too deeply" in body["detail"]


def test_unknown_and_oversized_fields_are_named(
    client: TestClient, intact: Callable[[], None]
) -> None:
    body = _problem(
        client.post("/build-index", json={"index": "ew100", "nope": 1}), 422, "invalid-input"
    )
    assert body["field"] == "nope"
    body = _problem(
        client.post("/indices", json={"id": "x", "name": "n" * 10_000, "top_n": 5}),
        422,
        "invalid-input",
    )
    assert body["field"] == "name"
    body = _problem(client.post("/build-index", json={"index": "e" * 10_000}), 422, "invalid-input")
    assert body["field"] == "index"


def _raw_post(port: int, headers: str, body: bytes, *, pause: float = 0.0) -> tuple[str, float]:
    """A request written by hand (so nothing checks its Content-Length): the answer's
    status line and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(headers.encode() + b"\r\n" + body)
        if pause:
            time.sleep(pause)
        answer = sock.recv(65536).decode(errors="replace")
    return answer.splitlines()[0] if answer else "", time.monotonic() - started


def test_a_100_mb_body_is_refused_before_it_is_read(tmp_path: Path, database: Path) -> None:
    # A real server: the body is announced as 100 MB and never sent; the answer comes at
    # once (nothing waits for, or holds, the body), the server's memory does not grow,
    # and a chunked body without a length is cut off at the limit.
    server = ServeProcess(tmp_path / "serve.log", {"INDEX_BUILDER_DATABASE": str(database)})
    try:
        server.wait_ready()
        rss = _rss_kib(server.proc.pid)
        head = (
            "POST /build-index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 104857600\r\n"
        )
        status, seconds = _raw_post(server.port, head, b'{"index": "ew1')
        assert " 413 " in status and seconds < 5, (status, seconds)
        chunk = b"x" * 65536
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40))  # 2.5 MB
        head = (
            "POST /build-index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n"
        )
        status, _ = _raw_post(server.port, head, chunked)
        assert " 413 " in status, status
        assert _rss_kib(server.proc.pid) - rss < 50 * 1024  # well under the 100 MB announced
    finally:
        server.stop()
    before = file_fingerprint(database)
    assert changed_tables(before, file_fingerprint(database)) == []


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
