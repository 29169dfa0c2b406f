"""Two real ``index-builder serve`` processes sharing one metrics folder: every request
is counted exactly once, whichever process answers the scrape; logs are JSON lines."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_process import ServeProcess

from ops_helpers import sample

REQUESTS = "index_builder_http_requests_total"


def serve(database: Path, metrics_dir: Path, log: Path) -> ServeProcess:
    """One server over ``database`` writing its metrics to the shared ``metrics_dir``."""
    env = {
        "INDEX_BUILDER_DATABASE": str(database),
        "INDEX_BUILDER_METRICS_DIR": str(metrics_dir),
        "INDEX_BUILDER_LOG_FORMAT": "json",
        "INDEX_BUILDER_DUCKDB_THREADS": "1",
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    return ServeProcess(log, env)


@pytest.fixture
def servers(
    built_template: Path, tmp_path: Path
) -> Iterator[tuple[ServeProcess, ServeProcess, Path]]:
    metrics_dir = tmp_path / "metrics"
    started = []
    for name in ("a", "b"):
        database = tmp_path / f"{name}.duckdb"  # DuckDB: one writing process per file
        shutil.copy(built_template, database)
        started.append(serve(database, metrics_dir, tmp_path / f"{name}.log"))
    try:
        for server in started:
            server.wait_ready()
        yield started[0], started[1], metrics_dir
    finally:
        for server in started:
            server.stop()


def test_requests_are_counted_once_across_two_processes(
    servers: tuple[ServeProcess, ServeProcess, Path],
) -> None:
    a, b, metrics_dir = servers
    n = 11
    for i in range(n):
        server = a if i % 3 else b  # 7 on a, 4 on b
        response = httpx.get(
            f"{server.base}/indices", timeout=10, headers={"X-Request-ID": f"mp-{i}"}
        )
        assert response.status_code == 200 and response.headers["x-request-id"] == f"mp-{i}"

    # each process adds its requests to the shared files in batches within 50 ms
    # (a scrape flushes its own process's at once)
    deadline = time.monotonic() + 5
    for scraped in (a, b):
        while (
            sample(
                text := httpx.get(f"{scraped.base}/metrics", timeout=10).text,
                REQUESTS,
                route="/indices",
                method="GET",
                status="200",
            )
            < n
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert sample(text, REQUESTS, route="/indices", method="GET", status="200") == n
        assert (
            sample(
                text,
                "index_builder_http_request_duration_seconds_count",
                route="/indices",
                method="GET",
            )
            == n
        )
        # gauges read from the scraped process's database are there too
        assert sample(text, "index_builder_last_build_success", index="ew100") == 1

    # JSON access lines, with the request id, in each process's log (written in
    # batches within 50 ms)
    deadline = time.monotonic() + 5
    while sorted(logged := _access_ids(a, b)) != sorted(f"mp-{i}" for i in range(n)):
        assert time.monotonic() < deadline, logged
        time.sleep(0.05)

    # a stopped process's live gauges leave the shared folder; its counts stay
    pid = a.proc.pid
    assert any(f.name.endswith(f"_{pid}.db") and "live" in f.name for f in metrics_dir.iterdir())
    assert a.stop() == 0
    assert not any(
        f.name.endswith(f"_{pid}.db") and "live" in f.name for f in metrics_dir.iterdir()
    )
    text = httpx.get(f"{b.base}/metrics", timeout=10).text
    assert sample(text, REQUESTS, route="/indices", method="GET", status="200") == n


def _access_ids(*servers: ServeProcess) -> list[str]:
    """Request ids of the JSON access lines for GET /indices in the servers' logs."""
    ids = []
    for server in servers:
        for line in server.log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("logger") == "index_builder.access" and record["route"] == "/indices":
                    assert record["status"] == 200 and record["duration_ms"] > 0
                    ids.append(record["request_id"])
    return ids
