"""Disk full during a build, for real: the server runs with ``RLIMIT_FSIZE`` so no
file can grow (the write-ahead log cannot take the build's results). The build
answers 503 ``storage-unavailable`` with ``Retry-After``, readiness fails, nothing
partial is published, the published results keep being served, and every table is
as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from integrity import changed_tables, file_fingerprint

PROBLEM = "application/problem+json"


def test_a_build_on_a_full_disk_is_503_and_publishes_nothing(
    database: Path, serve: Callable[..., object]
) -> None:
    before = file_fingerprint(database)
    server = serve(database, file_size_limit=1)
    published = server.get("/index-performance")  # type: ignore[attr-defined]
    assert published.status_code == 200
    assert server.get("/health/ready").status_code == 200  # type: ignore[attr-defined]

    definition = {"id": "full-disk", "name": "d", "top_n": 10, "weighting": "market_cap"}
    response = server.post("/indices", json=definition)  # type: ignore[attr-defined]
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "30"
    body = response.json()
    assert body["type"].endswith(":storage-unavailable")
    assert "cannot be written" in body["detail"] and "File too large" in body["detail"]

    response = server.post("/build-index", json={"index": "ew-tech50"})  # type: ignore[attr-defined]
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith(":storage-unavailable")

    ready = server.get("/health/ready")  # type: ignore[attr-defined]
    assert ready.status_code == 503
    storage = ready.json()["components"]["storage"]
    assert storage["status"] == "down" and "File too large" in storage["detail"]
    again = server.get("/index-performance", headers={"Cache-Control": "no-cache"})  # type: ignore[attr-defined]
    assert again.status_code == 200 and again.json() == published.json()
    server.stop()  # type: ignore[attr-defined]
    assert changed_tables(before, file_fingerprint(database)) == []
