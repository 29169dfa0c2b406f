"""API keys: 401 vs 403 on every protected route kind, open reads, and keys never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from index_builder.api.app import create_app
from index_builder.ops.auth import ApiKeyConfigError, load_keys
from index_builder.settings import Settings
from serve_process import ServeProcess

from api_helpers import make_settings
from redis_server import RedisServer

PROBLEM = "application/problem+json"
SECRETS = {
    "reader": "rd-4f1c9a7e2b8d0c3e5a6f",
    "builder": "bd-9e8d7c6b5a4f3e2d1c0b",
    "exporter": "ex-0a1b2c3d4e5f6a7b8c9d",
    "root": "ad-5e5e5e5e7f7f7f7f9a9a",
}
ENTRIES = (
    f"reader:read:{SECRETS['reader']}, builder:build+read:{SECRETS['builder']},"
    f"exporter:export:{SECRETS['exporter']},root:admin:{SECRETS['root']}"
)
UNKNOWN = "zz-not-a-configured-key-000"


def _key(name: str) -> dict[str, str]:
    return {"X-API-Key": SECRETS[name]}


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:index-builder:problem:{code}" and body["status"] == status
    if status == 401:
        assert response.headers["www-authenticate"] == "ApiKey"
    return body


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("index_builder_auth_failures_total", {"reason": reason}) or 0


@pytest.fixture
def keyed(database: Path, redis_server: RedisServer, caplog: Any) -> Iterator[TestClient]:
    """The app with four keys; logs of every level captured."""
    redis_server.flush()
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(make_settings(database, redis_server.url, api_keys=ENTRIES))) as c:
        yield c


def test_each_auth_outcome_on_builds_definitions_and_exports(keyed: TestClient) -> None:
    before = {r: _failures(r) for r in ("missing", "invalid", "forbidden")}
    build = {"index": "ew100"}
    body = _problem(keyed.post("/build-index", json=build), 401, "unauthorized")
    assert "'build' scope" in body["detail"] and "X-API-Key" in body["detail"]
    _problem(
        keyed.post("/build-index", json=build, headers={"X-API-Key": UNKNOWN}), 401, "unauthorized"
    )
    body = _problem(
        keyed.post("/build-index", json=build, headers=_key("reader")), 403, "forbidden"
    )
    assert "'reader'" in body["detail"] and "'build'" in body["detail"]
    assert keyed.post("/build-index", json=build, headers=_key("builder")).status_code == 200
    assert keyed.post("/build-index", json=build, headers=_key("root")).status_code == 200

    # definition changes need 'build'
    _problem(keyed.delete("/indices/nope"), 401, "unauthorized")
    _problem(keyed.delete("/indices/nope", headers=_key("exporter")), 403, "forbidden")
    _problem(keyed.delete("/indices/nope", headers=_key("builder")), 404, "not-found")
    _problem(keyed.post("/indices", json={"id": "x"}, headers=_key("reader")), 403, "forbidden")

    # exports need 'export'
    export = {"index": "ew100", "format": "csv", "start_date": "2023-03-01"}
    _problem(keyed.post("/export-data", json=export), 401, "unauthorized")
    _problem(keyed.post("/export-data", json=export, headers=_key("builder")), 403, "forbidden")
    done = keyed.post("/export-data", json=export, headers=_key("exporter"))
    assert done.status_code == 200 and done.headers["content-type"] == "application/zip"

    assert _failures("missing") == before["missing"] + 3
    assert _failures("invalid") == before["invalid"] + 1
    assert _failures("forbidden") == before["forbidden"] + 4


def test_admin_endpoints_need_the_admin_scope(keyed: TestClient) -> None:
    _problem(keyed.get("/admin/flags"), 401, "unauthorized")
    _problem(keyed.get("/admin/flags", headers=_key("builder")), 403, "forbidden")
    _problem(keyed.post("/admin/flags/reload", headers=_key("exporter")), 403, "forbidden")
    assert keyed.get("/admin/flags", headers=_key("root")).status_code == 200
    assert keyed.post("/admin/flags/reload", headers=_key("root")).status_code == 200


def test_reads_are_open_but_a_wrong_key_is_refused(keyed: TestClient) -> None:
    assert keyed.get("/index-performance").status_code == 200
    assert keyed.get("/jobs/nope").status_code == 404  # open, and then simply not found
    assert keyed.get("/indices", headers=_key("exporter")).status_code == 200
    _problem(keyed.get("/indices", headers={"X-API-Key": UNKNOWN}), 401, "unauthorized")


def test_reads_can_require_a_key(database: Path, redis_server: RedisServer) -> None:
    settings = make_settings(database, redis_server.url, api_keys=ENTRIES, reads_require_key=True)
    with TestClient(create_app(settings)) as client:
        _problem(client.get("/index-performance"), 401, "unauthorized")
        _problem(client.get("/indices/ew100"), 401, "unauthorized")
        _problem(client.get("/index-composition", headers=_key("exporter")), 403, "forbidden")
        assert client.get("/index-composition", headers=_key("reader")).status_code == 200
        assert client.get("/composition-changes", headers=_key("root")).status_code == 200
        assert client.get("/openapi.json").status_code == 200  # the documentation stays open


def test_without_keys_auth_is_off_and_says_so(database: Path, caplog: Any) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="index_builder.ops.auth"),
        TestClient(create_app(make_settings(database, None))) as client,
    ):
        assert client.post("/build-index", json={"index": "ew100"}).status_code == 200
        health = client.app.state.services.auth.health()  # type: ignore[attr-defined]
        assert health == {"status": "ok", "enabled": False, "keys": 0, "reads_require_key": False}
    assert any("API KEYS ARE NOT REQUIRED" in m for m in caplog.messages)


def test_enabled_without_keys_refuses_and_explains(database: Path) -> None:
    with TestClient(create_app(make_settings(database, None, auth_enabled=True))) as client:
        body = _problem(client.post("/build-index", json={}), 401, "unauthorized")
        assert "INDEX_BUILDER_API_KEYS" in body["detail"]
        assert client.get("/indices").status_code == 200
        health = client.get("/health/ready").json()["components"]["api_keys"]
        assert health["status"] == "degraded" and health["keys"] == 0


def test_keys_file_entries_and_errors_that_never_show_the_key(tmp_path: Path) -> None:
    secrets_file = tmp_path / "keys"
    secrets_file.write_text(
        "# pipeline keys\n\n"
        f"nightly:read+build:{SECRETS['builder']}\n"
        f"  ops:admin:{SECRETS['root']}#with-a-hash  \n"
    )
    keys = load_keys(
        Settings(api_keys_file=secrets_file, api_keys=f"reader:read:{SECRETS['reader']}")
    )
    assert [(k.name, sorted(k.scopes)) for k in keys] == [
        ("reader", ["read"]),
        ("nightly", ["build", "read"]),
        ("ops", ["admin"]),
    ]
    assert all(k.allows("export") for k in keys if k.name == "ops")
    assert SECRETS["root"] not in repr(keys)

    secret = "s3cr3t-but-the-scope-is-wrong"
    bad = {
        f"a:write:{secret}": "unknown: write",
        f"a b:read:{secret}": "the name",
        "a:read:short": "at least 16",
        f"a:read:{secret},b:read:{secret}": "the same secret",
        f"a:read:{secret},a:build:{secret}x": "unique",
        f"only-two:{secret}": "expected",
    }
    for entries, message in bad.items():
        with pytest.raises(ApiKeyConfigError) as raised:
            load_keys(Settings(api_keys=entries))
        assert message in str(raised.value) and secret not in str(raised.value)
    secrets_file.write_text(f"broken-line-without-scopes{secret}\n")
    with pytest.raises(ApiKeyConfigError, match="line 1") as raised:
        load_keys(Settings(api_keys_file=secrets_file))
    assert secret not in str(raised.value)
    with pytest.raises(ApiKeyConfigError, match="cannot read"):
        load_keys(Settings(api_keys_file=tmp_path / "missing"))


def test_openapi_documents_the_key_and_the_problems(keyed: TestClient) -> None:
    spec = keyed.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    build = spec["paths"]["/build-index"]["post"]
    assert {"401", "403", "413", "429"} <= set(build["responses"])
    assert build["security"] == [{"ApiKey": []}]
    read = spec["paths"]["/index-performance"]["get"]
    assert {"401", "403", "429", "504"} <= set(read["responses"])
    assert read["security"] == [{"ApiKey": []}, {}]  # the key is optional on reads


def test_keys_never_appear_in_logs(keyed: TestClient, caplog: Any) -> None:
    caplog.clear()
    for name in SECRETS:
        keyed.get("/index-performance", headers=_key(name))
        keyed.post("/build-index", json={"index": "ew100"}, headers=_key(name))
        keyed.post("/export-data", json={"format": "nope"}, headers=_key(name))
    keyed.post("/build-index", json={"index": "ew100"}, headers={"X-API-Key": UNKNOWN})
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "auth forbidden: POST /build-index needs scope 'build' (key reader)" in logged
    assert "auth invalid: POST /build-index" in logged
    for secret in [*SECRETS.values(), UNKNOWN]:
        assert secret not in logged


def test_serve_process_logs_names_never_keys(
    database: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The real server: startup, access and auth logs name keys, never show them."""
    env = {
        "INDEX_BUILDER_DATABASE": str(database),
        "INDEX_BUILDER_REDIS_URL": redis_server.url,
        "INDEX_BUILDER_API_KEYS": ENTRIES,
        "INDEX_BUILDER_READS_REQUIRE_KEY": "true",
    }
    server = ServeProcess(tmp_path / "serve.log", env)
    base = server.base
    try:
        server.wait_ready(30, path="/openapi.json")
        assert httpx.get(f"{base}/indices", timeout=10).status_code == 401
        assert httpx.get(f"{base}/indices", headers=_key("reader"), timeout=10).status_code == 200
        wrong = httpx.get(f"{base}/indices", headers={"X-API-Key": UNKNOWN}, timeout=10)
        assert wrong.status_code == 401
        build = httpx.post(
            f"{base}/build-index", json={"index": "ew100"}, headers=_key("reader"), timeout=30
        )
        assert build.status_code == 403
    finally:
        server.stop()
    output = server.output()
    assert "auth missing: GET /indices needs scope 'read' (no valid key)" in output
    assert "auth forbidden: POST /build-index needs scope 'build' (key reader)" in output
    for secret in [*SECRETS.values(), UNKNOWN]:
        assert secret not in output
