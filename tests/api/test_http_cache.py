"""HTTP caching of reads: strong ETag, Cache-Control, 304 on If-None-Match, and a
tag that changes when a rebuild changes the answer (real app, real redis-server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.api.http_cache import strong_etag

from api_helpers import make_settings

READS = [
    ("/index-performance", {"start_date": "2023-02-01"}),
    ("/index-composition", {"date": "2023-02-15"}),
    ("/index-composition/next", {"index": "lag2"}),
    ("/composition-changes", {}),
    ("/indices", {}),
    ("/indices/ew100", {}),
    ("/providers", {}),
    ("/admin/flags", {}),
    ("/admin/versions", {}),
]


LAG2 = {"id": "lag2", "name": "Top 20, effective 2 sessions later", "top_n": 20, "effective_lag": 2}


def _define(client: TestClient, definition: dict[str, object], replace: bool = False) -> None:
    created = client.post("/indices", json=definition, params={"replace": replace})
    assert created.status_code in (200, 201), created.text
    assert client.post("/build-index", json={"index": definition["id"]}).status_code == 200


@pytest.mark.parametrize(("path", "params"), READS, ids=[p for p, _ in READS])
def test_every_read_has_a_strong_etag_and_answers_304_when_current(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    if params.get("index") == "lag2":
        _define(client, LAG2)
    first = client.get(path, params=params)
    assert first.status_code == 200, first.text
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert "no-cache" in first.headers["cache-control"]

    again = client.get(path, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == first.headers["cache-control"]

    # a weak form of the same tag, a list, and * all match (RFC 9110 weak comparison)
    for header in (f"W/{etag}", f'"other", {etag}', "*"):
        assert client.get(path, params=params, headers={"If-None-Match": header}).status_code == 304

    stale = client.get(path, params=params, headers={"If-None-Match": '"not-it"'})
    assert stale.status_code == 200 and stale.headers["etag"] == etag
    assert stale.content == first.content  # same tag, same bytes


def test_the_tag_names_the_query(client: TestClient) -> None:
    a = client.get("/index-performance", params={"start_date": "2023-02-01"})
    b = client.get("/index-performance", params={"start_date": "2023-02-02"})
    assert a.headers["etag"] != b.headers["etag"]
    c = client.get("/index-performance", params={"start_date": "2023-02-02"})
    assert b.headers["etag"] == c.headers["etag"]  # cached or not, the same tag


def test_public_reads_are_public_and_admin_reads_private(client: TestClient) -> None:
    assert client.get("/index-performance").headers["cache-control"] == "public, no-cache"
    assert client.get("/admin/versions").headers["cache-control"] == "private, no-cache"


def test_a_rebuild_changes_the_tag_so_a_304_never_outlives_it(client: TestClient) -> None:
    _define(client, LAG2)
    params = {"index": "lag2"}
    etag = client.get("/index-performance", params=params).headers["etag"]
    unchanged = client.post("/build-index", json={"index": "lag2"})
    assert unchanged.status_code == 200  # nothing new: same published numbers, same tag
    assert client.get("/index-performance", params=params).headers["etag"] == etag

    _define(client, {**LAG2, "top_n": 10}, replace=True)  # new rules: new numbers
    after = client.get("/index-performance", params=params, headers={"If-None-Match": etag})
    assert after.status_code == 200  # the old tag no longer matches
    assert after.headers["etag"] != etag


def test_max_age_comes_from_the_settings(database: Path) -> None:
    settings = make_settings(database, None, http_max_age_seconds=60)
    with TestClient(create_app(settings)) as client:
        response = client.get("/index-performance")
    assert response.headers["cache-control"] == "public, max-age=60, must-revalidate"


def test_a_body_tag_hashes_the_bytes() -> None:
    assert strong_etag(b"a") == strong_etag(b"a") != strong_etag(b"b")
    assert strong_etag("x", "y") != strong_etag("xy")  # parts are delimited
