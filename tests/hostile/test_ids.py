"""Hostile ids: path traversal, SQL, markup, unicode, control characters and huge
strings as index ids (query, body, path), job ids and export names. Each is a
problem naming the field (422) or an unknown resource (404); nothing is echoed
unbounded, nothing is executed, and no table changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.problems import PROBLEM_MEDIA_TYPE

HOSTILE_IDS = [
    "../../etc/passwd",
    "ew100'; DROP TABLE prices; --",
    'ew100" OR "1"="1',
    "<script>alert(1)</script>",
    "EW100",
    "ew100\n",
    "ew100%00",
    "ëw100",
    "-ew100",
    "e" * 64,
    "e" * 5_000,
    "",
]


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert len(response.content) < 4000  # nothing echoed unbounded
    return body


@pytest.mark.parametrize("index", HOSTILE_IDS, ids=lambda s: repr(s[:20]))
def test_hostile_index_ids_in_queries_and_bodies(
    client: TestClient, intact: Callable[[], None], index: str
) -> None:
    for response in (
        client.get("/index-performance", params={"index": index}),
        client.get("/index-composition", params={"index": index}),
        client.get("/composition-changes", params={"index": index}),
        client.post("/build-index", json={"index": index}),
        client.post("/export-data", json={"index": index, "format": "csv"}),
        client.post("/builds", json={"indices": [index]}),
        client.post("/build-index", json={"index": index * 20}),  # up to 100 KB in a body
    ):
        body = _problem(response, 422)
        assert body["field"] in ("index", "indices.0"), body
    assert client.get("/index-performance").status_code == 200  # ew100 still served


@pytest.mark.parametrize(
    "index", ["..%2F..%2Fetc%2Fpasswd", "ew100%27%3B%20DROP%20TABLE%20prices", "e" * 300]
)
def test_hostile_index_ids_in_paths(
    client: TestClient, intact: Callable[[], None], index: str
) -> None:
    for response in (client.get(f"/indices/{index}"), client.delete(f"/indices/{index}")):
        assert response.status_code in (404, 422), response.text[:300]
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


def test_definitions_with_hostile_ids_are_refused(
    client: TestClient, intact: Callable[[], None]
) -> None:
    for index in HOSTILE_IDS:
        body = _problem(client.post("/indices", json={"id": index, "name": "x", "top_n": 5}), 422)
        assert body["field"] == "id"


@pytest.mark.parametrize("job", ["nope", "../../x", "0" * 5000, "'; DROP TABLE jobs; --"])
def test_hostile_job_ids_are_unknown_jobs(
    client: TestClient, intact: Callable[[], None], job: str
) -> None:
    response = client.get(f"/jobs/{job}")
    assert response.status_code in (404, 422)
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert len(response.content) < 4000
