"""Cancel and retry of the in-process queue (no Redis: jobs run in the serving process),
through the API, and the restart of a job interrupted by a stopped server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from index_builder.api.app import create_app

from api_helpers import make_settings


def _wait(client: TestClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if body["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_cancel_queued_and_running_jobs_then_retry_them(database: Path) -> None:
    with TestClient(create_app(make_settings(database, None))) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert services.jobs.mode == "process"
        started, release = threading.Event(), threading.Event()
        real_build = services.jobs._build

        def held(request: Any, progress: Any) -> dict[str, Any]:
            progress("planning", 0.02)
            started.set()
            release.wait(10)
            progress("computing", 0.5)  # a cancel requested meanwhile stops it here
            return real_build(request, progress)  # type: ignore[no-any-return]

        services.jobs._build = held
        running = client.post("/build-index", json={"index": "ew-sector-energy", "async": True})
        assert started.wait(10)
        queued = client.post("/build-index", json={"index": "ew-sector-utilities", "async": True})
        running_id, queued_id = running.json()["job_id"], queued.json()["job_id"]
        assert client.get(f"/jobs/{queued_id}").json()["status"] == "queued"

        cancelled = client.post(f"/jobs/{queued_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        asked = client.delete(f"/jobs/{running_id}").json()
        assert asked["status"] == "running" and asked["cancel_requested"] is True
        release.set()
        stopped = _wait(client, running_id)
        assert stopped["status"] == "cancelled" and stopped["error"]["type"] == "cancelled"
        assert stopped["result"] is None and stopped["cancel_requested"] is False
        # the queued one never ran, and answers the same when cancelled again
        again = client.post(f"/jobs/{queued_id}/cancel").json()
        assert again["status"] == "cancelled" and again["started_at"] is None

        services.jobs._build = real_build
        retried = client.post(f"/jobs/{running_id}/retry")
        assert retried.status_code == 202 and retried.json()["job_id"] == running_id
        assert retried.headers["location"] == f"/jobs/{running_id}"
        done = _wait(client, running_id)
        assert done["status"] == "succeeded" and done["attempt"] == 2
        assert done["result"]["index"] == "ew-sector-energy"
        assert client.post(f"/jobs/{running_id}/cancel").status_code == 409  # it ended
        assert client.post(f"/jobs/{running_id}/retry").status_code == 409  # succeeded
        assert client.post("/jobs/0123abcd/retry").status_code == 404
        assert client.post("/jobs/0123abcd/cancel").status_code == 404


def test_a_synchronous_build_whose_job_is_cancelled_answers_409(database: Path) -> None:
    with TestClient(create_app(make_settings(database, None))) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        with services.jobs.write_gate:  # the build waits for the gate: still queued
            results: list[Any] = []
            waiter = threading.Thread(
                target=lambda: results.append(
                    client.post("/build-index", json={"index": "ew-sector-energy"})
                )
            )
            waiter.start()
            deadline = time.monotonic() + 10
            while not services.jobs.jobs() or services.jobs.jobs()[-1].done:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            job = services.jobs.jobs()[-1]
            assert client.post(f"/jobs/{job.id}/cancel").status_code == 200
        waiter.join(30)
        (response,) = results
        assert response.status_code == 409 and response.json()["type"].endswith("cancelled")
        assert client.get(f"/jobs/{job.id}").json()["status"] == "cancelled"


def test_a_job_interrupted_by_a_stopped_server_is_retried_after_the_restart(
    database: Path,
) -> None:
    gate_held, release = threading.Event(), threading.Event()

    def hold_gate(gate: Any) -> None:
        with gate:  # what the in-process daily cycle does while it writes
            gate_held.set()
            release.wait(30)

    with TestClient(create_app(make_settings(database, None))) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        holder = threading.Thread(target=hold_gate, args=(services.jobs.write_gate,))
        holder.start()
        assert gate_held.wait(10)
        first = client.post("/build-index", json={"index": "ew-sector-energy", "async": True})
        second = client.post("/build-index", json={"index": "ew-sector-materials", "async": True})
        job_id = second.json()["job_id"]  # queued behind the first (one build worker)
        threading.Timer(0.5, release.set).start()  # the shutdown waits for the first
    holder.join(30)
    with TestClient(create_app(make_settings(database, None))) as client:
        assert client.get(f"/jobs/{first.json()['job_id']}").json()["status"] == "succeeded"
        before = client.get(f"/jobs/{job_id}").json()
        assert before["status"] == "interrupted" and before["error"]["type"] == "interrupted"
        assert client.post(f"/jobs/{job_id}/retry").status_code == 202
        after = _wait(client, job_id)
        assert after["status"] == "succeeded" and after["attempt"] == 2
        assert after["result"]["index"] == "ew-sector-materials"
