"""Several processes, one truth: two real ``serve`` processes and a real ``worker`` over
one Iceberg lake and one Redis. A job requested on one process runs once, in the
worker, and every process sees its progress and result; a finished build is served
everywhere within a second, never un-served after; cancel and retry work; a worker
killed mid-job leaves its job ``interrupted`` and a retry completes it;
``serve --workers 2`` keeps answering while one of its processes is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fleet import JOB_LEASE_SECONDS, Fleet, get, post, wait_job

from serve_process import ServeProcess

from cli_runner import run


def _define(server: ServeProcess, prefix: str, count: int) -> list[str]:
    """``count`` new indices (each build computes and commits to the lake: a job of
    several takes a few seconds)."""
    ids = [f"{prefix}-{n}" for n in range(count)]
    for n, index in enumerate(ids):
        body = {"id": index, "name": index, "top_n": 30 + n, "weighting": "market_cap"}
        response = post(server, "/indices", body)
        assert response.status_code == 201, response.text
    return ids


def test_a_job_requested_on_a_runs_once_and_b_sees_its_progress_and_result(
    fleet: Fleet,
) -> None:
    ids = _define(fleet.a, "once", 4)
    accepted = post(fleet.a, "/builds", {"indices": ids})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    again = post(fleet.b, "/builds", {"indices": ids}).json()  # the other process
    assert again["job_id"] == job_id and again["joined"] is True

    seen: list[tuple[str, str, float]] = []
    deadline = time.monotonic() + 60
    while True:
        job = get(fleet.b, f"/jobs/{job_id}").json()
        seen.append((job["status"], job["stage"], job["progress"]))
        if job["status"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.02)
    assert job["status"] == "succeeded", job
    running = [s for s in seen if s[0] == "running"]
    assert any(stage.startswith("computing") and 0 < p < 1 for _, stage, p in running), seen
    progress = [p for _, _, p in seen]
    assert progress == sorted(progress)  # never backwards
    result = job["result"]
    assert result["built"] == 4 and result["failed"] == 0
    assert [o["index"] for o in result["outcomes"]] == ids
    on_a = get(fleet.a, f"/jobs/{job_id}").json()
    assert on_a == job  # one truth: the same record on every process
    assert on_a["attempt"] == 1
    # ran once: one start in the worker's log, and one build version per index
    assert fleet.worker.output().count(f"job {job_id} (builds) attempt 1 started") == 1
    versions = {o["version"] for o in result["outcomes"]}
    assert len(versions) == 4
    for index in ids:
        assert get(fleet.a, "/index-performance", index=index).status_code == 200


def test_a_build_finished_is_served_by_b_within_a_second_and_never_unserved(
    fleet: Fleet,
) -> None:
    (index,) = _define(fleet.a, "seen", 1)
    assert get(fleet.b, "/index-performance", index=index).status_code == 404
    reads: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll_b() -> None:
        with httpx.Client(base_url=fleet.b.base, timeout=30) as client:
            while not stop.is_set():
                status = client.get("/index-performance", params={"index": index}).status_code
                reads.append((time.monotonic(), status))
                time.sleep(0.01)

    poller = threading.Thread(target=poll_b)
    poller.start()
    try:
        built = post(fleet.a, "/build-index", {"index": index})  # waits for the worker
        finished = time.monotonic()
        assert built.status_code == 200, built.text
        assert built.json()["outcome"] == "built"
        # read your writes: the process that answered the build serves it at once
        assert get(fleet.a, "/index-performance", index=index).status_code == 200
        deadline = finished + 5
        while not any(status == 200 for _, status in reads) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # and keep reading a while
    finally:
        stop.set()
        poller.join(30)
    statuses = [status for _, status in reads]
    assert set(statuses) <= {200, 404}, statuses
    first = next(at for at, status in reads if status == 200)
    print(f"served on b {first - finished:.3f} s after the build")  # the measured figure
    assert first - finished <= 1.0, f"served on b {first - finished:.3f} s after the build"
    after = statuses[statuses.index(200) :]
    assert after == [200] * len(after)  # once served, never un-served (monotonic reads)
    on_a = get(fleet.a, "/index-performance", index=index).json()
    on_b = get(fleet.b, "/index-performance", index=index).json()
    assert on_a == on_b


def test_cancel_a_queued_and_a_running_job_then_retry(fleet: Fleet) -> None:
    ids = _define(fleet.b, "cancel", 5)
    running = post(fleet.a, "/builds", {"indices": ids}).json()["job_id"]
    wait_job(fleet.b, running, {"running"})
    queued = post(fleet.b, "/build-index", {"index": "ew-sector-energy", "async": True})
    assert queued.status_code == 202
    queued_id = queued.json()["job_id"]
    assert queued.json()["status"] == "queued"  # the one worker is busy

    cancelled = post(fleet.a, f"/jobs/{queued_id}/cancel")  # on the other process
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    asked = httpx.delete(f"{fleet.b.base}/jobs/{running}", timeout=30)  # DELETE cancels too
    assert asked.status_code == 200
    assert asked.json()["status"] == "cancelled" or asked.json()["cancel_requested"] is True

    stopped = wait_job(fleet.a, running, {"cancelled", "succeeded", "failed"})
    assert stopped["status"] == "cancelled", stopped
    assert stopped["error"]["type"] == "cancelled" and stopped["result"] is None
    built_before = [
        i for i in ids if get(fleet.a, "/index-performance", index=i).status_code == 200
    ]
    assert len(built_before) < len(ids)  # it stopped before the end
    assert post(fleet.a, f"/jobs/{running}/cancel").json()["status"] == "cancelled"  # again: same

    retried = post(fleet.b, f"/jobs/{running}/retry")
    assert retried.status_code == 202 and retried.json()["job_id"] == running
    done = wait_job(fleet.a, running, {"succeeded", "failed"}, seconds=60)
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    outcomes = {o["index"]: o["outcome"] for o in done["result"]["outcomes"]}
    assert all(outcomes[i] == "unchanged" for i in built_before)
    assert done["result"]["built"] == len(ids) - len(built_before)
    # the cancelled queued job never ran: its worker skipped it
    late = get(fleet.b, f"/jobs/{queued_id}").json()
    assert late["status"] == "cancelled" and late["started_at"] is None
    assert post(fleet.b, f"/jobs/{done['job_id']}/cancel").status_code == 409  # succeeded
    assert post(fleet.b, f"/jobs/{done['job_id']}/retry").status_code == 409
    assert post(fleet.b, "/jobs/nope/cancel").status_code == 404


def test_a_worker_killed_mid_job_leaves_it_interrupted_and_a_retry_completes_it(
    fleet: Fleet,
) -> None:
    ids = _define(fleet.a, "kill", 5)
    job_id = post(fleet.b, "/builds", {"indices": ids}).json()["job_id"]
    deadline = time.monotonic() + 60
    while True:  # kill it while it computes (some indices stored, others not)
        job = get(fleet.a, f"/jobs/{job_id}").json()
        if job["status"] == "running" and job["stage"].startswith("computing"):
            break
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.01)
    fleet.worker.kill()
    started = time.monotonic()
    interrupted = wait_job(fleet.b, job_id, {"interrupted", "succeeded"}, seconds=30)
    assert interrupted["status"] == "interrupted", interrupted
    assert time.monotonic() - started <= JOB_LEASE_SECONDS + 3
    assert interrupted["error"]["type"] == "interrupted"
    assert get(fleet.a, f"/jobs/{job_id}").json()["status"] == "interrupted"

    fleet.start_worker()
    retried = post(fleet.a, f"/jobs/{job_id}/retry")
    assert retried.status_code == 202, retried.text
    done = wait_job(fleet.b, job_id, {"succeeded", "failed"}, seconds=90)
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert done["result"]["failed"] == 0
    assert {o["index"] for o in done["result"]["outcomes"]} == set(ids)
    for index in ids:
        assert get(fleet.b, "/index-performance", index=index).status_code == 200


def _children(pid: int) -> list[int]:
    """The serving processes uvicorn's supervisor started (not its resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    out = []
    for child in path.read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            out.append(int(child))
    return out


def test_serve_workers_keeps_answering_while_one_process_is_killed(fleet: Fleet) -> None:
    server = fleet.b  # serve --workers 2 (INDEX_BUILDER_API_WORKERS)
    assert "2 processes" in server.output()
    deadline = time.monotonic() + 60
    while len(_children(server.proc.pid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    first = get(server, "/index-performance").json()
    failures, answers = 0, 0
    victim = _children(server.proc.pid)[0]
    killed_at = time.monotonic() + 0.5
    killed = False
    end = killed_at + 2.0
    with httpx.Client(base_url=server.base, timeout=10) as client:
        while time.monotonic() < end:
            if not killed and time.monotonic() >= killed_at:
                os.kill(victim, signal.SIGKILL)
                killed = True
            try:
                response = client.get("/index-performance")
                answers += 1
                failures += response.status_code != 200
                if response.status_code == 200:
                    assert response.json() == first
            except httpx.TransportError:
                failures += 1
    assert answers > 20 and failures <= 2, (answers, failures)
    deadline = time.monotonic() + 10  # the supervisor saw it (and starts another)
    while f"Child process [{victim}] died" not in server.output():
        assert time.monotonic() < deadline, server.output()[-2000:]
        time.sleep(0.1)


def test_serve_workers_on_duckdb_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_BUILDER_")}
    env.update(INDEX_BUILDER_STORAGE="duckdb", INDEX_BUILDER_DATABASE=str(tmp_path / "x.duckdb"))
    done = subprocess.run(
        [sys.executable, "-m", "index_builder.cli.main", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "INDEX_BUILDER_STORAGE=iceberg" in lines[0], done.stderr
    assert not (tmp_path / "x.duckdb").exists()  # refused before anything was opened


def test_the_worker_and_serve_refuse_what_cannot_scale_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("INDEX_BUILDER_")]:
        monkeypatch.delenv(name)
    db = tmp_path / "x.duckdb"
    cases = [
        ({}, ["worker"], "INDEX_BUILDER_STORAGE=iceberg"),
        ({"INDEX_BUILDER_STORAGE": "iceberg"}, ["worker"], "INDEX_BUILDER_REDIS_URL"),
        (
            {"INDEX_BUILDER_STORAGE": "iceberg", "INDEX_BUILDER_WAREHOUSE": str(tmp_path)},
            ["serve", "--workers", "3"],
            "INDEX_BUILDER_REDIS_URL",
        ),
        ({"INDEX_BUILDER_JOB_QUEUE": "redis"}, ["serve"], "INDEX_BUILDER_REDIS_URL"),
        (
            {"INDEX_BUILDER_JOB_QUEUE": "redis", "INDEX_BUILDER_REDIS_URL": "redis://127.0.0.1:1"},
            ["serve"],
            "INDEX_BUILDER_STORAGE=iceberg",
        ),
    ]
    for env, args, named in cases:
        with monkeypatch.context() as patched:
            for key, value in env.items():
                patched.setenv(key, value)
            code, out, err = run(db, *args)
        assert code == 2, (args, env, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], (args, err)
    assert not db.exists()  # nothing was opened
