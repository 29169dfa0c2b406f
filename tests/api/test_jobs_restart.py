"""Jobs outlive the server process: a restart answers a job as it ended, or `interrupted`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.api.deps import Services
from index_builder.api.jobs import BuildRequest, JobManager
from index_builder.errors import StorageError

from api_helpers import make_settings

REPO = Path(__file__).resolve().parents[2]


def _services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _wait(client: TestClient, url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def _app(database: Path, **extra: Any) -> TestClient:
    return TestClient(create_app(make_settings(database, None, **extra)))


def test_a_finished_job_answers_the_same_after_a_restart(database: Path) -> None:
    with _app(database) as client:
        accepted = client.post("/build-index", json={"index": "ew-sector-energy", "async": True})
        assert accepted.status_code == 202
        url = accepted.json()["status_url"]
        before = _wait(client, url)
        assert before["status"] == "succeeded" and before["kind"] == "build"
        sync = client.post("/build-index", json={"index": "ew100", "start_date": "2023-02-01"})
        assert sync.status_code == 200  # a synchronous build is a job too
    with _app(database) as client:
        after = client.get(url)
        assert after.status_code == 200
        assert after.json() == before  # result, timestamps, progress: all as they ended
        assert after.json()["result"]["index"] == "ew-sector-energy"


CHILD = """
import json, os, signal, sys, threading, time
from fastapi.testclient import TestClient
from index_builder.api.app import create_app
from index_builder.export import files
from index_builder.settings import Settings

blocked = threading.Event()

def slow_build(request, progress):
    progress("computing", 0.4)
    blocked.set()
    time.sleep(3600)  # the process is killed meanwhile

def slow_export(self, reader, job_id, *args, **kwargs):
    folder = self.folder / job_id
    folder.mkdir(parents=True)
    (folder / "export.xlsx").write_bytes(b"half a workbook")
    time.sleep(3600)

files.ExportFiles.write = slow_export
settings = Settings(database=sys.argv[1], redis_url=None, duckdb_threads=2)
with TestClient(create_app(settings)) as client:
    client.app.state.services.jobs._build = slow_build
    running = client.post("/build-index", json={"index": "ew-sector-energy", "async": True})
    blocked.wait(30)
    queued = client.post("/build-index", json={"index": "ew-sector-utilities", "async": True})
    export = client.post("/export-data", json={"index": "ew100", "async": True})
    time.sleep(0.3)
    ids = {k: r.json()["job_id"] for k, r in
           (("running", running), ("queued", queued), ("export", export))}
    states = {k: client.get(f"/jobs/{i}").json()["status"] for k, i in ids.items()}
    print(json.dumps({"ids": ids, "states": states}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the server dies: no shutdown, no cleanup
"""


def test_jobs_of_a_killed_server_are_interrupted_and_can_be_submitted_again(
    database: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(database)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=database.parent,
    )
    assert done.returncode == -9, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["states"] == {"running": "running", "queued": "queued", "export": "running"}
    ids = child["ids"]
    exports = database.parent / "exports"
    assert (exports / ids["export"] / "export.xlsx").exists()  # left by the dead process

    with _app(database) as client:
        for name, was in (("running", "running"), ("queued", "queued"), ("export", "running")):
            response = client.get(f"/jobs/{ids[name]}")
            assert response.status_code == 200, response.text  # not 404
            job = response.json()
            assert job["status"] == "interrupted" and job["stage"] == "interrupted", job
            assert job["finished_at"] is not None and job["result"] is None
            assert job["download_url"] is None
            error = job["error"]
            assert error["type"] == "interrupted" and error["status"] == 503
            assert f"the server stopped while the job was {was}" in error["detail"]
            assert "submit the request again" in error["detail"]
        assert client.get(f"/jobs/{ids['running']}").json()["index"] == "ew-sector-energy"
        # the half-written file went with its job
        assert not (exports / ids["export"]).exists()
        assert client.get(f"/exports/{ids['export']}/file").status_code == 404
        # the client submits again: a new job that runs
        again = client.post("/build-index", json={"index": "ew-sector-energy", "async": True})
        assert again.status_code == 202 and again.json()["job_id"] != ids["running"]
        assert _wait(client, again.json()["status_url"])["status"] == "succeeded"


def test_queued_jobs_a_shutdown_cancels_are_interrupted(database: Path) -> None:
    gate = threading.Event()
    with _app(database) as client:
        jobs = _services(client).jobs
        real = jobs._build

        def gated(request: Any, progress: Any) -> dict[str, Any]:
            gate.wait(30)
            return real(request, progress)

        jobs._build = gated
        first = client.post("/build-index", json={"index": "ew-sector-energy", "async": True})
        second = client.post("/build-index", json={"index": "ew-tech50", "async": True})
        first_id, second_id = first.json()["job_id"], second.json()["job_id"]
        while jobs.get(first_id).status != "running":  # type: ignore[union-attr]
            time.sleep(0.01)
        # the server stops while the first runs: it finishes, the second never starts
        threading.Timer(0.5, gate.set).start()
    with _app(database) as client:
        assert client.get(f"/jobs/{first_id}").json()["status"] == "succeeded"
        job = client.get(f"/jobs/{second_id}").json()
        assert job["status"] == "interrupted"
        assert "stopped before the job started" in job["error"]["detail"]


def test_jobs_kept_are_bounded_in_memory_and_in_the_database(database: Path) -> None:
    ids = []
    with _app(database, jobs_keep=3) as client:
        for index in ("ew100", "ew-tech50", "ew100", "ew-tech50", "ew100"):
            accepted = client.post("/build-index", json={"index": index, "async": True})
            ids.append(accepted.json()["job_id"])
            assert _wait(client, accepted.json()["status_url"])["status"] == "succeeded"
        assert [client.get(f"/jobs/{i}").status_code for i in ids] == [404, 404, 200, 200, 200]
    with duckdb.connect(str(database), read_only=True) as con:
        stored = {row[0] for row in con.execute("SELECT job_id FROM api_jobs").fetchall()}
    assert stored == set(ids[2:])
    with _app(database, jobs_keep=2) as client:  # a smaller bound applies at start
        assert [client.get(f"/jobs/{i}").status_code for i in ids] == [404, 404, 404, 200, 200]
        missing = client.get(f"/jobs/{ids[0]}").json()
        assert "the newest 2 jobs are kept" in missing["detail"]


def test_concurrent_polling_while_jobs_finish(database: Path) -> None:
    with _app(database) as client:
        urls = [
            client.post("/build-index", json={"index": i, "async": True}).json()["status_url"]
            for i in ("ew-sector-energy", "ew-sector-utilities", "ew-sector-materials")
        ]
        errors: list[str] = []

        def poll(url: str) -> None:
            last = 0.0
            for _ in range(400):
                response = client.get(url)
                if response.status_code != 200:
                    errors.append(response.text)
                    return
                job = response.json()
                if job["progress"] < last:
                    errors.append(f"progress went back: {job}")
                last = job["progress"]
                if job["status"] == "succeeded":
                    return
                time.sleep(0.01)
            errors.append(f"not finished: {url}")

        pollers = [threading.Thread(target=poll, args=(u,)) for u in urls for _ in range(3)]
        for t in pollers:
            t.start()
        for t in pollers:
            t.join(60)
        assert errors == []


class _FullDisk:
    """Job records whose inserts fail (the database cannot be written)."""

    def insert(self, record: dict[str, Any]) -> None:
        raise StorageError("cannot write the job record: disk full")

    def update(self, record: dict[str, Any]) -> None:
        raise AssertionError("a job never recorded is never updated")

    def delete(self, job_ids: Any) -> None: ...

    def interrupt(self, at: Any) -> int:
        return 0

    def recent(self, keep: int) -> list[dict[str, Any]]:
        return []


def test_a_job_that_cannot_be_recorded_fails_and_never_runs() -> None:
    ran: list[str] = []

    def build(request: Any, progress: Any) -> dict[str, Any]:
        ran.append(request.index)
        return {}

    jobs = JobManager(build, records=_FullDisk())
    try:
        with pytest.raises(StorageError, match="disk full"):
            jobs.submit(BuildRequest("ew100", None, None))
        (job,) = jobs.jobs()
        assert job.future is not None
        with pytest.raises(StorageError):
            job.future.result(timeout=10)  # what a request that joined it gets
        assert job.status == "failed" and job.error is not None
        assert job.error["type"] == StorageError.code and ran == []
    finally:
        jobs.shutdown()
