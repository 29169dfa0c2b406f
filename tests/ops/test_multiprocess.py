"""Two real ``index-builder serve`` processes sharing one metrics folder: every request
is counted exactly once, whichever process answers the scrape; logs are JSON lines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops_helpers import sample
from redis_server import free_port

REQUESTS = "index_builder_http_requests_total"


class Server:
    """One ``index-builder serve`` process on a free loopback port."""

    def __init__(self, database: Path, metrics_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {
            **os.environ,
            "INDEX_BUILDER_DATABASE": str(database),
            "INDEX_BUILDER_METRICS_DIR": str(metrics_dir),
            "INDEX_BUILDER_LOG_FORMAT": "json",
            "INDEX_BUILDER_DUCKDB_THREADS": "1",
        }
        env.pop("INDEX_BUILDER_REDIS_URL", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "index_builder.cli.main", "serve", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                if httpx.get(f"{self.base}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(self.log.read_text()) from None
                time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def servers(built_template: Path, tmp_path: Path) -> Iterator[tuple[Server, Server, Path]]:
    metrics_dir = tmp_path / "metrics"
    started = []
    for name in ("a", "b"):
        database = tmp_path / f"{name}.duckdb"  # DuckDB: one writing process per file
        shutil.copy(built_template, database)
        started.append(Server(database, metrics_dir, tmp_path / f"{name}.log"))
    try:
        deadline = time.monotonic() + 60
        for server in started:
            server.wait_ready(deadline)
        yield started[0], started[1], metrics_dir
    finally:
        for server in started:
            server.stop()


def test_requests_are_counted_once_across_two_processes(
    servers: tuple[Server, Server, Path],
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


def _access_ids(*servers: Server) -> list[str]:
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
