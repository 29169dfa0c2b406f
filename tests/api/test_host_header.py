"""The Host header is never reflected: job URLs are paths; INDEX_BUILDER_ALLOWED_HOSTS
refuses other hosts with problem+json."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from index_builder.api.app import create_app
from index_builder.ops.hosts import host_name
from index_builder.settings import Settings
from serve_process import ServeProcess

from api_helpers import make_settings

FORGED = "evil.example"


def _job_done(base: str, status_url: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, object] = httpx.get(f"{base}{status_url}", timeout=10).json()
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_forged_host_is_not_in_status_url_or_location(database: Path, tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "serve.log", {"INDEX_BUILDER_DATABASE": str(database)})
    try:
        server.wait_ready(60, path="/openapi.json")
        forged = {"Host": f"{FORGED}:443", "X-Forwarded-Host": FORGED}
        accepted = [
            httpx.post(f"{server.base}/builds", headers=forged, timeout=30),
            httpx.post(
                f"{server.base}/build-index",
                json={"index": "ew100", "async": True},
                headers=forged,
                timeout=30,
            ),
        ]
        for response in accepted:
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["status_url"] == f"/jobs/{body['job_id']}"
            assert response.headers["location"] == body["status_url"]
            assert FORGED not in response.text and FORGED not in response.headers["location"]
            assert _job_done(server.base, body["status_url"])["status"] == "succeeded"
    finally:
        assert server.stop() == 0


def test_allowed_hosts_refuse_other_hosts_with_a_problem(database: Path) -> None:
    settings = make_settings(
        database, None, allowed_hosts="API.example.com, *.internal.example, 127.0.0.1, [::1]"
    )
    with TestClient(create_app(settings), base_url="http://api.example.com") as client:
        assert client.get("/indices").status_code == 200
        for host in ("api.example.com:8443", "a.internal.example", "127.0.0.1:8000", "[::1]:80"):
            assert client.get("/health/live", headers={"Host": host}).status_code == 200
        for host in (FORGED, "internal.example", "api.example.com.evil.example", ""):
            refused = client.post("/builds", headers={"Host": host})
            assert refused.status_code == 400, host
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["type"] == "urn:index-builder:problem:invalid-host"
            assert problem["status"] == 400 and problem["instance"] == "/builds"
            assert FORGED not in refused.text


def test_default_allows_any_host(database: Path) -> None:
    with TestClient(create_app(make_settings(database, None))) as client:
        assert client.get("/indices", headers={"Host": "anything.example:1"}).status_code == 200


def test_allowed_hosts_setting_and_host_names() -> None:
    assert Settings().allowed_hosts == "*"
    hosts = Settings(allowed_hosts=" A.example ,*.b.example").allowed_hosts
    assert hosts == "a.example,*.b.example"
    assert Settings(allowed_hosts="a.example,*").allowed_hosts == "*"
    for bad in ("", " , ", "a.*.example", "*example.com"):
        with pytest.raises(ValidationError):
            Settings(allowed_hosts=bad)
    assert host_name("[::1]:8000") == "::1"
    assert host_name("Example.COM:80") == "example.com"
    assert host_name("example.com") == "example.com"
