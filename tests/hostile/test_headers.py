"""Hostile headers: API keys that are huge, binary, or near misses; odd content types,
encodings and request ids. Each answers a problem (401, 413, 415, 422) or is ignored,
never a 500, never echoed unbounded, never logged in full, and no table changes.
(Forwarded addresses and the Host header have their own tests in tests/api.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.api.problems import PROBLEM_MEDIA_TYPE

from api_helpers import make_settings
from integrity import changed_tables, fingerprint

SECRET = "bd-9e8d7c6b5a4f3e2d1c0b"


@pytest.fixture
def keyed(database: Path, caplog: Any) -> Iterator[TestClient]:
    """The app with one build key; every log record captured."""
    settings = make_settings(database, None, api_keys=f"builder:build+read:{SECRET}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        store = client.app.state.services.store  # type: ignore[attr-defined]
        skip = frozenset({"api_jobs"})  # the accepted builds of the tests are recorded jobs
        before = fingerprint(store.cursor(), skip=skip)
        yield client
        assert changed_tables(before, fingerprint(store.cursor(), skip=skip)) == []


@pytest.mark.parametrize(
    "key",
    [
        SECRET[:-1],  # a near miss
        SECRET + "0",
        "x" * 8000,
        "\u00e9" * 10,
        "bd-9e8d7c6b5a4f3e2d1c0\x01",
        "",
    ],
    ids=["near", "longer", "huge", "latin1", "control", "empty"],
)
def test_bad_api_keys_are_401_never_500_nor_logged(
    keyed: TestClient, caplog: Any, key: str
) -> None:
    headers = {"X-API-Key": key.encode("latin-1")}  # bytes: sent as they are
    response = keyed.post("/build-index", json={"index": "ew100"}, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert len(response.content) < 2000
    if len(key) > 4:
        assert all(key.strip() not in record.getMessage() for record in caplog.records)
    ok = keyed.post("/build-index", json={"index": "ew100"}, headers={"X-API-Key": SECRET})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-16",
        "application/json; boundary=" + "x" * 5000,
        "multipart/form-data; boundary=zzz",
        "application/xml",
    ],
)
def test_odd_content_types(
    client: TestClient, intact: Callable[[], None], content_type: str
) -> None:
    response = client.post(
        "/build-index", content=b'{"index": "nope"}', headers={"content-type": content_type}
    )
    assert response.status_code in (400, 404, 415, 422), response.text[:300]
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


def test_hostile_request_ids_are_not_reflected_unbounded(
    client: TestClient, intact: Callable[[], None]
) -> None:
    for request_id in ("x" * 5000, "a\u0085b", "<script>", "ok-123"):
        response = client.get(
            "/index-performance", headers={"X-Request-ID": request_id.encode("utf-8")}
        )
        assert response.status_code == 200
        echoed = response.headers.get("x-request-id", "")
        assert len(echoed) <= 128 and "<" not in echoed


def test_a_body_announced_larger_than_the_limit_is_413(
    client: TestClient, intact: Callable[[], None]
) -> None:
    big = b'{"index": "ew100", "pad": "' + b"x" * (2 << 20) + b'"}'
    response = client.post(
        "/build-index", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["type"].endswith(":content-too-large")
