"""POST /export-data as a job: progress, a download URL, the same values, retention."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from index_builder.api.app import create_app

from api_helpers import make_settings

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
WINDOW = {"index": "ew-tech50", "start_date": "2023-02-01", "end_date": "2023-02-28"}


def _app(database: Path, **extra: Any) -> TestClient:
    return TestClient(create_app(make_settings(database, None, **extra)))


def _wait(client: TestClient, url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[float] = []
    while True:
        body: dict[str, Any] = client.get(url).json()
        seen.append(body["progress"])
        if body["status"] not in ("queued", "running") or time.monotonic() > deadline:
            assert seen == sorted(seen)
            return body
        time.sleep(0.02)


def _sheet(content: bytes, title: str) -> list[tuple[Any, ...]]:
    book = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    return list(book[title].iter_rows(values_only=True))


def test_an_export_job_gives_the_file_of_the_synchronous_export(client: TestClient) -> None:
    sync = client.post("/export-data", json={**WINDOW, "format": "xlsx"})
    assert sync.status_code == 200
    accepted = client.post("/export-data", json={**WINDOW, "format": "xlsx", "async": True})
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert accepted.headers["location"] == body["status_url"] == f"/jobs/{body['job_id']}"
    assert body["joined"] is False
    job = _wait(client, body["status_url"])
    assert job["status"] == "succeeded", job
    assert job["kind"] == "export" and job["index"] == "ew-tech50"
    assert job["indices"] == ["ew-tech50"] and job["progress"] == 1.0
    assert job["download_url"] == f"/exports/{body['job_id']}/file"
    result = job["result"]
    assert result["filename"] == "ew-tech50_2023-02-01_2023-02-28.xlsx"
    assert (result["format"], result["media_type"]) == ("xlsx", XLSX)
    assert (result["start_date"], result["end_date"]) == ("2023-02-01", "2023-02-28")
    perf = client.get("/index-performance", params=WINDOW).json()["data"]
    assert result["rows"]["performance"] == len(perf)
    assert result["expires_at"].endswith("Z") and result["as_of"] is None

    download = client.get(job["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"].startswith(XLSX)
    assert result["filename"] in download.headers["content-disposition"]
    assert "attachment" in download.headers["content-disposition"]
    assert len(download.content) == result["bytes"]
    for title in ("Performance", "Compositions", "Changes"):
        assert _sheet(download.content, title) == _sheet(sync.content, title), title
    levels = [row[1] for row in _sheet(download.content, "Performance")[1:]]
    assert levels == [p["level"] for p in perf]  # the JSON endpoint's numbers
    assert len(_sheet(download.content, "Compositions")) - 1 == result["rows"]["compositions"]


def test_parquet_job_and_long_windows_are_jobs_anyway(database: Path) -> None:
    with _app(database, async_export_days=10) as client:
        short = client.post("/export-data", json={**WINDOW, "end_date": "2023-02-10"})
        assert short.status_code == 200  # 8 trading days: at once
        accepted = client.post("/export-data", json={"index": "ew100", "format": "parquet"})
        assert accepted.status_code == 202  # 60 trading days: a job
        job = _wait(client, accepted.json()["status_url"])
        download = client.get(job["download_url"])
        assert download.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
            table = pq.read_table(io.BytesIO(zf.read("performance.parquet")))
        perf = client.get("/index-performance").json()["data"]
        assert table.column("level").to_pylist() == [p["level"] for p in perf]


def test_an_identical_export_in_flight_is_joined(client: TestClient) -> None:
    body = {**WINDOW, "format": "csv", "async": True}
    first = client.post("/export-data", json=body).json()
    second = client.post("/export-data", json=body).json()
    if second["joined"]:  # unless the first finished already
        assert second["job_id"] == first["job_id"]
    assert _wait(client, first["status_url"])["status"] == "succeeded"


def test_errors_come_before_any_job(client: TestClient) -> None:
    unknown = client.post("/export-data", json={"index": "nope", "async": True})
    assert unknown.status_code == 404
    backwards = {"start_date": "2023-03-01", "end_date": "2023-01-01", "async": True}
    assert client.post("/export-data", json=backwards).status_code == 422
    assert client.post("/export-data", json={"async": "soon"}).status_code == 422
    assert client.get("/exports/0123456789abcdef0123456789abcdef/file").status_code == 404
    assert client.get("/exports/not-a-job/file").status_code == 422
    build = client.post("/build-index", json={"index": "ew100", "async": True}).json()
    _wait(client, build["status_url"])
    not_export = client.get(f"/exports/{build['job_id']}/file")
    assert not_export.status_code == 404 and not_export.json()["field"] == "job_id"


def test_a_running_export_has_no_file_yet(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.jobs.write_gate:  # exports do not wait for builds (they only read)
        accepted = client.post("/export-data", json={**WINDOW, "async": True}).json()
        job = services.jobs.get(accepted["job_id"])
        early = client.get(f"/exports/{job.id}/file")
        if not job.done:
            assert early.status_code == 409 and "poll" in early.json()["detail"]
        job.future.result(timeout=30)
    assert client.get(f"/exports/{job.id}/file").status_code == 200


def test_the_file_survives_a_restart_until_it_expires(database: Path) -> None:
    exports = database.parent / "exports"
    with _app(database, export_retention_hours=1.5 / 3600) as client:  # 1.5 s
        accepted = client.post("/export-data", json={**WINDOW, "async": True}).json()
        job = _wait(client, accepted["status_url"])
        url = job["download_url"]
        assert (exports / accepted["job_id"] / "export.xlsx").is_file()
    with _app(database, export_retention_hours=1.5 / 3600) as client:
        again = client.get(f"/jobs/{accepted['job_id']}").json()
        assert again == job
        assert client.get(url).status_code == 200
        time.sleep(1.6)
        expired = client.get(url)
        assert expired.status_code == 404 and "expired" in expired.json()["detail"]
        job = client.get(f"/jobs/{accepted['job_id']}").json()
        assert job["status"] == "succeeded" and job["download_url"] is None
        # the next export request deletes expired files
        assert (exports / accepted["job_id"]).exists()
        other = client.post("/export-data", json={"index": "ew100", "async": True}).json()
        assert not (exports / accepted["job_id"]).exists()
        assert _wait(client, other["status_url"])["download_url"]
    assert (exports / other["job_id"]).exists()
    time.sleep(1.6)
    with _app(database) as client:  # a restart deletes expired files too
        assert not (exports / other["job_id"]).exists()
        assert client.get(other["status_url"]).json()["download_url"] is None


def test_files_of_jobs_dropped_beyond_the_bound_are_deleted(database: Path) -> None:
    exports = database.parent / "exports"
    with _app(database, jobs_keep=1) as client:
        first = client.post("/export-data", json={**WINDOW, "async": True}).json()
        _wait(client, first["status_url"])
        assert (exports / first["job_id"]).is_dir()
        second = client.post("/export-data", json={"index": "ew100", "async": True}).json()
        assert not (exports / first["job_id"]).exists()
        assert client.get(first["status_url"]).status_code == 404
        assert client.get(f"/exports/{first['job_id']}/file").status_code == 404
        _wait(client, second["status_url"])
    (exports / "0123456789abcdef0123456789abcdef").mkdir()  # a folder no kept job owns
    (exports / "notes.txt").write_text("not a job's: left alone")
    with _app(database, jobs_keep=1) as client:
        assert sorted(p.name for p in exports.iterdir()) == sorted([second["job_id"], "notes.txt"])


def test_the_openapi_document_describes_export_jobs(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/export-data"]["post"]
    assert {"200", "202"} <= set(post["responses"])
    assert post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/JobAccepted"
    )
    schemas = doc["components"]["schemas"]
    assert "async" in schemas["ExportRequest"]["properties"]
    download = doc["paths"]["/exports/{job_id}/file"]["get"]
    assert {"200", "404", "409"} <= set(download["responses"])
    assert set(download["responses"]["200"]["content"]) == {XLSX, "application/zip"}
    job = schemas["JobStatusResponse"]["properties"]
    assert "interrupted" in job["status"]["enum"] and "interrupted" in job["status"]["description"]
    assert job["kind"]["enum"] == ["build", "builds", "export"]
    assert "download_url" in job and job["download_url"]["description"]
    result = schemas["ExportResult"]["properties"]
    assert all(p.get("description") for p in result.values())
