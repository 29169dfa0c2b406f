"""X-Forwarded-For counts only from INDEX_BUILDER_TRUSTED_PROXIES, in the real server
(uvicorn's client address, which access lines log) and in the rate limiter alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from index_builder.api.server import server_config
from index_builder.settings import Settings
from serve_process import ServeProcess

KEY = "reader-key-0123456789abcdef"
WRONG = "wrong-key-0123456789abcdef"
SPOOFED = "203.0.113.7"


def _serve(database: Path, tmp_path: Path, name: str, **env: str) -> ServeProcess:
    settings = {
        "INDEX_BUILDER_DATABASE": str(database),
        "INDEX_BUILDER_RATE_LIMIT_READS": "10/day",
        "INDEX_BUILDER_API_KEYS": f"reader:read:{KEY}",
        "INDEX_BUILDER_LOG_FORMAT": "json",
        **env,
    }
    server = ServeProcess(tmp_path / f"{name}.log", settings)
    server.wait_ready(60, path="/openapi.json")
    return server


def _remaining(server: ServeProcess, forwarded: str | None) -> int:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    response = httpx.get(f"{server.base}/indices", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.headers["ratelimit-remaining"])


def _wrong_key(server: ServeProcess, forwarded: str) -> None:
    headers = {"X-Forwarded-For": forwarded, "X-API-Key": WRONG}
    assert httpx.get(f"{server.base}/indices", headers=headers, timeout=10).status_code == 401


def _access_clients(output: str) -> list[Any]:
    """The ``client`` of every access line of GET /indices, in order."""
    lines = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    return [
        line["client"]
        for line in lines
        if line.get("event") == "request" and line.get("route") == "/indices"
    ]


def test_untrusted_loopback_cannot_pick_its_bucket_or_logged_address(
    database: Path, tmp_path: Path
) -> None:
    # uvicorn alone would trust 127.0.0.1, and FORWARDED_ALLOW_IPS=* everyone: both ignored
    server = _serve(database, tmp_path, "untrusted", FORWARDED_ALLOW_IPS="*")
    try:
        assert _remaining(server, None) == 9
        assert _remaining(server, SPOOFED) == 8  # the same budget: the peer's
        assert _remaining(server, f"198.51.100.9, {SPOOFED}") == 7
        _wrong_key(server, SPOOFED)
    finally:
        assert server.stop() == 0
    output = server.output()
    assert _access_clients(output) == ["127.0.0.1"] * 4
    assert "auth invalid: GET /indices needs scope 'read' (no valid key) from 127.0.0.1" in output
    assert SPOOFED not in output and WRONG not in output


def test_a_trusted_proxy_names_the_client(database: Path, tmp_path: Path) -> None:
    server = _serve(database, tmp_path, "trusted", INDEX_BUILDER_TRUSTED_PROXIES="127.0.0.1")
    try:
        assert _remaining(server, None) == 9  # the proxy's own requests
        assert _remaining(server, SPOOFED) == 9  # a budget of its own
        assert _remaining(server, SPOOFED) == 8
        # the right-most address a trusted proxy did not add is the client: prepending
        # another one does not buy a new budget
        assert _remaining(server, f"198.51.100.9, {SPOOFED}") == 7
        _wrong_key(server, SPOOFED)
    finally:
        assert server.stop() == 0
    output = server.output()
    assert _access_clients(output) == ["127.0.0.1", SPOOFED, SPOOFED, SPOOFED, SPOOFED]
    assert f"(no valid key) from {SPOOFED}" in output
    assert "198.51.100.9" not in output


def test_server_config_trusts_forwarding_headers_only_from_the_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    default = server_config(Settings(), app=None)
    assert default.proxy_headers is False and default.forwarded_allow_ips == []
    listed = server_config(Settings(trusted_proxies="10.1.2.3/8, 127.0.0.1 ,::1"), app=None)
    assert listed.proxy_headers is True
    assert listed.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1", "::1"]
