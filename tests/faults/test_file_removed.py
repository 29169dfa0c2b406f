"""The database file removed (or replaced) while the server holds it: readiness
notices and fails, writes fail loudly with 503 ``storage-unavailable`` instead of
going to a file nobody will read again, what was published is still served, and
no file is silently created in its place."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from integrity import changed_tables, file_fingerprint

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_removed_or_replaced_database_file_fails_readiness_and_writes(
    database: Path, tmp_path: Path, serve: Callable[..., object], how: str
) -> None:
    keep = tmp_path / "keep.duckdb"
    shutil.copy(database, keep)
    server = serve(database)
    published = server.get("/index-performance")  # type: ignore[attr-defined]
    assert published.status_code == 200
    assert server.get("/health/ready").status_code == 200  # type: ignore[attr-defined]

    database.unlink()
    if how == "replaced":
        shutil.copy(keep, database)  # another file at the same path
    ready = server.get("/health/ready")  # type: ignore[attr-defined]
    assert ready.status_code == 503
    storage = ready.json()["components"]["storage"]
    assert storage["status"] == "down" and f"was {how}" in storage["detail"], storage

    for response in (
        server.post("/build-index", json={"index": "ew-tech50"}),  # type: ignore[attr-defined]
        server.post("/indices", json={"id": "after", "name": "a", "top_n": 5}),  # type: ignore[attr-defined]
    ):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["retry-after"] == "30"
        body = response.json()
        assert body["type"].endswith(":storage-unavailable") and f"was {how}" in body["detail"]
    again = server.get("/index-performance")  # type: ignore[attr-defined]
    assert again.status_code == 200 and again.json() == published.json()
    server.stop()  # type: ignore[attr-defined]
    if how == "removed":
        assert not database.exists()  # nothing recreated an empty database there
    else:
        assert changed_tables(file_fingerprint(keep), file_fingerprint(database)) == []
