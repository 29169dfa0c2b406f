"""Slow clients (slowloris) in the real server: hundreds of connections sending their
headers a little at a time do not keep others from being served, and are closed after
INDEX_BUILDER_SERVER_HEADER_TIMEOUT_SECONDS; oversized heads and idle connections too."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from index_builder.api.server import (
    GuardedH11Protocol,
    ServerConfig,
    http_protocol,
    server_config,
)
from index_builder.settings import Settings
from serve_process import ServeProcess

from redis_server import free_port

SLOW = 200
HEADER_TIMEOUT = 2.0
KEEP_ALIVE = 1


@pytest.fixture
def server(database: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    env = {
        "INDEX_BUILDER_DATABASE": str(database),
        "INDEX_BUILDER_SERVER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "INDEX_BUILDER_SERVER_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
        "INDEX_BUILDER_SERVER_MAX_HEADER_BYTES": "8192",
    }
    process = ServeProcess(tmp_path / "serve.log", env)
    try:
        process.wait_ready(60, path="/openapi.json")
        yield process
    finally:
        assert process.stop() == 0


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``seconds``)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_slow_headers_do_not_stop_others_and_are_closed(server: ServeProcess) -> None:
    started = time.monotonic()
    slow = [_connect(server.port) for _ in range(SLOW)]
    try:
        for sock in slow:
            sock.sendall(b"GET /indices HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # a normal client is served at once, several times, while the slow ones trickle
        for n in range(6):
            asked = time.monotonic()
            response = httpx.get(f"{server.base}/indices", timeout=5)
            assert response.status_code == 200, response.text
            assert time.monotonic() - asked < 3
            for sock in slow[n::6]:
                sock.sendall(b"X-Slow: 1\r\n")  # more bytes do not extend the deadline
            time.sleep(0.2)
        # each slow connection gets a 408 problem and is closed by the deadline
        closed_by = started + HEADER_TIMEOUT + 5
        answers = [_read_until_closed(s, max(0.1, closed_by - time.monotonic())) for s in slow]
    finally:
        for sock in slow:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for a in answers)
    assert b"application/problem+json" in answers[0]
    assert b"urn:index-builder:problem:request-timeout" in answers[0]
    assert httpx.get(f"{server.base}/health/live", timeout=5).status_code == 200
    assert time.monotonic() - started < 20


def test_silent_idle_and_oversized_connections_are_closed(server: ServeProcess) -> None:
    silent = _connect(server.port)  # connects and never sends a byte
    idle = _connect(server.port)  # one request, then nothing (keep-alive)
    idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    big = _connect(server.port)
    try:
        big.sendall(b"GET /indices HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000)
        assert _read_until_closed(big, 5).startswith(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        )
        started = time.monotonic()
        answered = _read_until_closed(idle, KEEP_ALIVE + 3)
        assert answered.startswith(b"HTTP/1.1 200 ") and answered.count(b"HTTP/1.1") == 1
        assert _read_until_closed(silent, HEADER_TIMEOUT + 3) == b""  # closed, no answer
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    finally:
        for sock in (silent, idle, big):
            sock.close()


def test_server_limits_come_from_the_settings() -> None:
    defaults = server_config(Settings(), app=None)
    assert defaults.timeout_keep_alive == 5
    assert defaults.limit_concurrency == 1000
    assert defaults.backlog == 2048
    assert defaults.timeout_graceful_shutdown == 20
    assert defaults.h11_max_incomplete_event_size == defaults.max_header_bytes == 32768
    assert defaults.header_timeout == 10.0
    assert defaults.http is http_protocol()
    assert http_protocol().__name__.startswith("Guarded")
    custom = Settings(
        server_keep_alive_seconds=2,
        server_limit_concurrency=0,
        server_backlog=128,
        server_shutdown_timeout_seconds=3,
        server_max_header_bytes=4096,
        server_header_timeout_seconds=1.5,
        api_host="0.0.0.0",
        api_port=9000,
    )
    config = server_config(custom, app=None, log_level="warning")
    assert (config.host, config.port, config.log_level) == ("0.0.0.0", 9000, "warning")
    assert config.timeout_keep_alive == 2 and config.limit_concurrency is None
    assert config.backlog == 128 and config.timeout_graceful_shutdown == 3
    assert config.h11_max_incomplete_event_size == config.max_header_bytes == 4096
    assert config.header_timeout == 1.5
    assert config.access_log is False and config.log_config is None


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI app: 200 ``ok`` (lifespan ignored)."""
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("protocol", "oversized"), [(http_protocol(), 431), (GuardedH11Protocol, 400)]
)
def test_each_http_protocol_is_guarded(protocol: type[asyncio.Protocol], oversized: int) -> None:
    """httptools (what uvicorn picks) and h11 (its fallback; its own size limit answers
    400 first) both time out slow heads."""
    port = free_port()
    config = ServerConfig(
        _hello,
        host="127.0.0.1",
        port=port,
        http=protocol,
        lifespan="off",
        log_config=None,
        log_level="warning",
        header_timeout=0.5,
        max_header_bytes=4096,
        h11_max_incomplete_event_size=4096,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        slow, big = _connect(port), _connect(port)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
        assert _read_until_closed(big, 3).startswith(b"HTTP/1.1 %d " % oversized)
        assert _read_until_closed(slow, 3).startswith(b"HTTP/1.1 408 ")
        # a complete head in pieces, in time, is served
        sock = _connect(port)
        for piece in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(0.1)
        served = _read_until_closed(sock, 3)
        assert served.startswith(b"HTTP/1.1 200 ") and served.endswith(b"\r\n\r\nok")
        sock.close()
        slow.close()
        big.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_body_after_an_early_answer_is_not_taken_for_a_head(server: ServeProcess) -> None:
    """413 answered from Content-Length while the body still comes: those bytes are the
    body's (not an oversized head), and the connection then serves the next request."""
    size = 2 * 1024 * 1024
    sock = _connect(server.port)
    try:
        sock.sendall(
            b"POST /build-index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % size
        )
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 413 "), first[:200]
        sock.sendall(b" " * size)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        rest = _read_until_closed(sock, 5)
    finally:
        sock.close()
    answers = (first + rest).split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"413", b"200"], rest[-300:]
    assert rest.endswith(b'{"status":"ok"}')
