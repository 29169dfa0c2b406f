"""Versions, rollback and ``as_of_version`` through the API: GET /admin/versions, POST
/admin/rollback, builds and reads as of a version."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from typing import Any

from fastapi.testclient import TestClient

from index_builder.api.deps import Services
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder

NEW_DATA = {"symbols": 300, "days": 60, "seed": 7, "start": dt.date(2023, 1, 3)}
"""Another market over the same sessions: every bar corrected (the template has seed 42)."""


def _services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _reads(client: TestClient, index: str = "ew100", **point: Any) -> dict[str, Any]:
    """The three GET answers of an index (200 each)."""
    answers = {
        "performance": client.get("/index-performance", params={"index": index, **point}),
        "composition": client.get(
            "/index-composition", params={"index": index, "date": "2023-02-20", **point}
        ),
        "changes": client.get("/composition-changes", params={"index": index, **point}),
    }
    bodies = {}
    for name, response in answers.items():
        assert response.status_code == 200, response.text
        bodies[name] = response.json()
    return bodies


def test_versions_and_a_rollback_through_the_api(client: TestClient) -> None:
    before = _reads(client)
    versions = client.get("/admin/versions").json()["versions"]
    assert [(v["version_id"], v["kind"]) for v in versions] == [
        (3, "build"),
        (2, "build"),
        (1, "ingest"),
    ]
    assert versions[2]["run_id"] == 1 and versions[2]["detail"]["provider"] == "synthetic"
    builds = client.get("/admin/versions", params={"kind": "build", "limit": 1}).json()
    assert [v["version_id"] for v in builds["versions"]] == [3]
    for params in ({"kind": "builds"}, {"limit": 0}):
        assert client.get("/admin/versions", params=params).status_code == 422

    store = _services(client).store
    run_ingestion(store, "synthetic", NEW_DATA)
    assert client.post("/build-index", json={"index": "ew100"}).json()["mode"] == "restated"
    assert _reads(client) != before

    response = client.post("/admin/rollback", json={"to_version": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["run_id"], body["target_run"], body["runs_undone"]) == (3, 1, [2])
    assert body["prices_restored"] > 0 and not body["nothing_to_undo"]
    assert [(b["index"], b["mode"]) for b in body["builds"]] == [("ew100", "restated")]
    assert _reads(client) == before  # the caches went with the rollback
    assert (
        client.get("/admin/versions", params={"kind": "rollback"}).json()["versions"][0][
            "version_id"
        ]
        == body["version_id"]
    )

    again = client.post("/admin/rollback", json={"to_version": body["version_id"]}).json()
    assert again["nothing_to_undo"] and again["run_id"] is None
    missing = client.post("/admin/rollback", json={"to_version": 999})
    assert missing.status_code == 404 and missing.json()["field"] == "to_version"
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert client.post("/admin/rollback", json={"to_version": 0}).status_code == 422


def test_builds_and_reads_as_of_a_version(client: TestClient) -> None:
    current = _reads(client)
    response = client.post("/build-index", json={"index": "ew100", "as_of_version": 1})
    assert response.status_code == 200, response.text
    assert response.json()["as_of_version"] == 1 and response.json()["mode"] == "full"
    first = client.get("/index-performance", params={"as_of_version": 1})
    assert first.headers["x-cache"] == "MISS"
    assert client.get("/index-performance", params={"as_of_version": 1}).headers["x-cache"] == "HIT"
    as_of_version = _reads(client, as_of_version=1)
    for name, body in as_of_version.items():
        assert body.pop("as_of_version") == 1 and current[name].pop("as_of_version") is None
        assert body == current[name]  # no data arrived after version 1

    store = _services(client).store
    run_ingestion(store, "synthetic", NEW_DATA)
    IndexBuilder(store, store.calendar).build(["ew100"])
    _services(client).invalidate_caches()
    assert _reads(client, as_of_version=1)["performance"]["data"] == first.json()["data"]
    assert _reads(client)["performance"]["data"] != first.json()["data"]

    both = client.get("/index-performance", params={"as_of": "2024-01-01", "as_of_version": 1})
    assert both.status_code == 400 and "as_of and as_of_version" in both.json()["detail"]
    unknown = client.get("/composition-changes", params={"as_of_version": 99})
    assert unknown.status_code == 404 and unknown.json()["field"] == "as_of_version"
    unbuilt = client.get("/index-performance", params={"index": "ew-tech50", "as_of_version": 1})
    assert unbuilt.status_code == 404
    assert "'index-builder build --index ew-tech50 --as-of-version 1'" in unbuilt.json()["detail"]
    assert client.post("/build-index", json={"as_of_version": 99}).status_code == 404
    assert (
        client.post("/build-index", json={"as_of": "2024-01-01", "as_of_version": 1}).status_code
        == 400
    )
    info = client.get("/indices/ew100").json()
    assert [b["as_of_version"] for b in info["as_of_builds"]] == [1]
    export = client.post("/export-data", json={"as_of_version": 1, "format": "csv"})
    assert export.status_code == 200, export.text
    assert "_asof-v1_" in export.headers["content-disposition"]
    assert zipfile.ZipFile(io.BytesIO(export.content)).namelist()


def test_openapi_documents_versions(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/index-performance", "/index-composition", "/composition-changes"):
        params = spec["paths"][path]["get"]["parameters"]
        (param,) = [p for p in params if p["name"] == "as_of_version"]
        assert "right after that version" in param["description"]
    schemas = spec["components"]["schemas"]
    for name in ("BuildIndexRequest", "ExportRequest"):
        assert "as_of_version" in schemas[name]["properties"]
    assert "get" in spec["paths"]["/admin/versions"]
    assert "post" in spec["paths"]["/admin/rollback"]
