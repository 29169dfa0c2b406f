"""Point in time through the API: ``as_of`` on the builds, the reads and the exports."""

from __future__ import annotations

import datetime as dt
import io
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from index_builder.api.deps import Services
from index_builder.ingest.job import run_ingestion

INDICES = ("ew100", "ew-tech50")
CORRECTED_DAY = dt.date(2023, 2, 15)


def _services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _first_run_known_at(client: TestClient) -> str:
    """When the template's data became known (its ingestion run's start), ISO with a Z."""
    (run,) = _services(client).store.ingest_runs()
    known_at: dt.datetime = run["known_at"]
    return known_at.isoformat() + "Z"


def _correct_a_past_price(client: TestClient, tmp_path: Path) -> None:
    """Ingest (known now) the largest tech stock's bar of CORRECTED_DAY, 30% higher."""
    store = _services(client).store
    cur = store.cursor()
    fixed = cur.sql(
        "SELECT p.date, p.symbol, p.close * 1.3 AS close, p.adj_close * 1.3 AS adj_close,"
        " p.volume, p.shares_outstanding, p.market_cap * 1.3 AS market_cap, p.dividend,"
        " p.split_ratio FROM prices p JOIN securities s USING (symbol)"
        " WHERE s.sector = 'Information Technology' AND p.date = $day"
        " ORDER BY p.market_cap DESC LIMIT 1",
        params={"day": CORRECTED_DAY},
    ).to_arrow_table()
    securities = cur.sql(
        "SELECT symbol, name, exchange, sector, industry, currency, type, company_id"
        " FROM securities WHERE symbol = $s",
        params={"s": fixed.column("symbol")[0].as_py()},
    ).to_arrow_table()
    pq.write_table(fixed, tmp_path / "fix.parquet")
    pq.write_table(securities, tmp_path / "sec.parquet")
    paths = {"securities": tmp_path / "sec.parquet", "prices": tmp_path / "fix.parquet"}
    report = run_ingestion(store, "file", {k: str(v) for k, v in paths.items()})
    assert report.rows_updated == 1


def _reads(client: TestClient, index: str, **as_of: str) -> dict[str, Any]:
    """The answers of the three GET endpoints (without the as_of echo)."""
    answers = {
        "performance": client.get("/index-performance", params={"index": index, **as_of}),
        "composition": client.get(
            "/index-composition", params={"index": index, "date": "2023-02-20", **as_of}
        ),
        "changes": client.get("/composition-changes", params={"index": index, **as_of}),
    }
    bodies = {}
    for name, response in answers.items():
        assert response.status_code == 200, response.text
        body = response.json()
        assert body.pop("as_of") == (as_of["as_of"] if as_of else None)
        bodies[name] = body
    return bodies


def test_as_of_reads_reproduce_the_answers_from_before_a_correction(
    client: TestClient, tmp_path: Path
) -> None:
    published = {index: _reads(client, index) for index in INDICES}
    as_of = _first_run_known_at(client)
    _correct_a_past_price(client, tmp_path)
    for index in INDICES:
        assert client.post("/build-index", json={"index": index}).status_code == 200
        current = _reads(client, index)
        assert current["performance"]["data"] != published[index]["performance"]["data"]

    for index in INDICES:
        response = client.post("/build-index", json={"index": index, "as_of": as_of})
        assert response.status_code == 200, response.text
        assert response.json()["as_of"] == as_of
        assert _reads(client, index, as_of=as_of) == published[index]
    # the cache key includes as_of: the current answers are still the corrected ones
    again = client.get("/index-performance", params={"as_of": as_of})
    assert again.headers["x-cache"] == "HIT"
    assert client.get("/index-performance").json()["data"] == current_levels(client)

    # the current results equal a fresh full build on the corrected data
    definition = client.get("/indices/ew100").json()["definition"]
    created = client.post("/indices", json={**definition, "id": "ew100-fresh"})
    assert created.status_code == 201, created.text
    assert client.post("/build-index", json={"index": "ew100-fresh"}).status_code == 200
    fresh = client.get("/index-performance", params={"index": "ew100-fresh"}).json()["data"]
    now = client.get("/index-performance").json()["data"]
    assert [r["date"] for r in fresh] == [r["date"] for r in now]
    np.testing.assert_allclose([r["level"] for r in now], [r["level"] for r in fresh], rtol=1e-12)


def current_levels(client: TestClient) -> list[dict[str, Any]]:
    """The current performance rows, straight from the reader (no cache)."""
    perf = _services(client).reader.performance("ew100")
    return [{**r, "date": r["date"].isoformat()} for r in perf.rows]


def test_as_of_builds_run_as_jobs_and_exports_name_their_moment(client: TestClient) -> None:
    as_of = _first_run_known_at(client)
    accepted = client.post("/build-index", json={"as_of": as_of, "async": True})
    assert accepted.status_code == 202
    for _ in range(600):
        job = client.get(accepted.json()["status_url"]).json()
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded" and job["result"]["as_of"] == as_of
    response = client.post(
        "/export-data", json={"index": "ew100", "format": "parquet", "as_of": as_of}
    )
    assert response.status_code == 200, response.text
    stamp = as_of[:19].replace("-", "").replace(":", "") + "Z"
    assert f"ew100_asof-{stamp}_" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        levels = pq.read_table(io.BytesIO(zf.read("performance.parquet"))).column("level")
    perf = client.get("/index-performance", params={"as_of": as_of}).json()["data"]
    assert levels.to_pylist() == [p["level"] for p in perf]


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("get", "/index-performance", {"as_of": "yesterday"}),
        ("get", "/index-composition", {"as_of": "2024-02-30"}),
        ("get", "/composition-changes", {"as_of": "2999-01-01"}),
        ("get", "/index-performance", {"as_of": "2999-01-01T00:00:00Z"}),
        ("post", "/build-index", {"as_of": "soon"}),
        ("post", "/build-index", {"as_of": "2999-01-01"}),
        ("post", "/export-data", {"as_of": "2999-01-01"}),
    ],
)
def test_a_bad_or_future_as_of_is_422(
    client: TestClient, method: str, path: str, payload: dict[str, str]
) -> None:
    if method == "get":
        response = client.get(path, params=payload)
    else:
        response = client.post(path, json=payload)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["field"] == "as_of"
    assert "future" in body["detail"] or "not a date or timestamp" in body["detail"]


def test_a_read_without_its_as_of_build_is_404_with_the_command(client: TestClient) -> None:
    response = client.get("/index-performance", params={"as_of": "2023-03-01"})
    assert response.status_code == 404
    assert response.json()["detail"] == (
        "ew100 has no build as of 2023-03-01T23:59:59.999999Z: run 'index-builder build "
        "--index ew100 --as-of 2023-03-01T23:59:59.999999Z'"
    )


def test_as_of_answers_are_cached_per_as_of_build_and_go_with_their_index(
    client: TestClient,
) -> None:
    as_of = _first_run_known_at(client)
    definition = {"id": "mine", "name": "Mine", "top_n": 5}
    assert client.post("/indices", json=definition).status_code == 201
    assert client.post("/build-index", json={"index": "mine", "as_of": as_of}).status_code == 200
    info = client.get("/indices/mine").json()
    assert info["build"] is None and [b["as_of"] for b in info["as_of_builds"]] == [as_of]
    params = {"index": "mine", "as_of": as_of}
    assert client.get("/index-performance", params=params).headers["x-cache"] == "MISS"
    assert client.get("/index-performance", params=params).headers["x-cache"] == "HIT"
    # cached per as-of build: rebuilding as of the same moment is a new version
    assert client.post("/build-index", json={"index": "mine", "as_of": as_of}).status_code == 200
    assert client.get("/index-performance", params=params).headers["x-cache"] == "MISS"
    assert client.delete("/indices/mine").status_code == 204
    assert client.post("/indices", json=definition).status_code == 201
    assert client.get("/index-performance", params=params).status_code == 404


def test_openapi_documents_as_of(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/index-performance", "/index-composition", "/composition-changes"):
        (param,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "as_of"]
        assert "known then" in param["description"] and param["required"] is False
    schemas = spec["components"]["schemas"]
    for name in ("BuildIndexRequest", "ExportRequest"):
        assert "known then" in schemas[name]["properties"]["as_of"]["description"]
    for name in ("BuildResponse", "PerformanceResponse", "CompositionResponse", "ChangesResponse"):
        assert schemas[name]["properties"]["as_of"]["description"]
