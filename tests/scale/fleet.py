"""Scale-out helpers: one Iceberg lake (a 300 x 120 synthetic market, ew100 built), a
real redis-server, two real ``index-builder serve`` processes and a real
``index-builder worker`` over them, all on loopback."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from index_builder.calendar import get_calendar
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import ensure_builtins
from index_builder.storage.iceberg.location import LakeLocation
from index_builder.storage.iceberg.store import IcebergStore
from serve_process import SOURCE, ServeProcess

from redis_server import RedisServer

JOB_LEASE_SECONDS = 2
"""A killed worker's job is interrupted this long after its last beat."""


def lake_env(folder: Path, redis_url: str, **extra: str | None) -> dict[str, str | None]:
    """The settings every process of the fleet shares (the lake, Redis, the exports)."""
    env: dict[str, str | None] = {
        "INDEX_BUILDER_STORAGE": "iceberg",
        "INDEX_BUILDER_WAREHOUSE": str(folder / "lake"),
        "INDEX_BUILDER_DATABASE": str(folder / "index_builder.duckdb"),  # exports beside it
        "INDEX_BUILDER_REDIS_URL": redis_url,
        "INDEX_BUILDER_DUCKDB_THREADS": "1",
        "INDEX_BUILDER_JOB_LEASE_SECONDS": str(JOB_LEASE_SECONDS),
        "INDEX_BUILDER_LAKE_LEASE_SECONDS": "5",  # a killed writer's lake lease lapses soon
        "INDEX_BUILDER_RATE_LIMIT_ENABLED": "false",  # the tests poll fast
        "INDEX_BUILDER_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    env.update(extra)
    return env


def make_lake(folder: Path) -> None:
    """The lake: built-in definitions, a 300 x 120 market from 2023-01-03, ew100 built."""
    location = LakeLocation.resolve(str(folder / "lake"), None)
    with IcebergStore(location, calendar=get_calendar(), threads=2) as store:
        ensure_builtins(store)
        run_ingestion(
            store, "synthetic", {"symbols": 300, "days": 120, "start": dt.date(2023, 1, 3)}
        )
        IndexBuilder(store, store.calendar).build(["ew100"])


class WorkerProcess:
    """One ``index-builder worker`` (its output in a log file)."""

    def __init__(self, log: Path, env: Mapping[str, str | None], *, name: str) -> None:
        self.log = log
        full = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_BUILDER_")}
        full["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE, full.get("PYTHONPATH")) if p)
        for key, value in env.items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "index_builder.cli.main", "worker", "--name", name],
            env=full,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        """What the worker wrote so far."""
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._out.close()

    def stop(self) -> None:
        """SIGTERM (the running job finishes first), then kill after 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


@dataclass
class Fleet:
    """Two API processes and a worker over one lake and one Redis."""

    folder: Path
    redis: RedisServer
    a: ServeProcess
    b: ServeProcess
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def worker(self) -> WorkerProcess:
        """The newest worker."""
        return self.workers[-1]

    def env(self, **extra: str | None) -> dict[str, str | None]:
        """The fleet's settings."""
        return lake_env(self.folder, self.redis.url, **extra)

    def start_worker(self) -> WorkerProcess:
        """Start one more worker."""
        n = len(self.workers)
        worker = WorkerProcess(self.folder / f"worker-{n}.log", self.env(), name=f"w{n}")
        self.workers.append(worker)
        return worker


def get(server: ServeProcess, path: str, **params: Any) -> httpx.Response:
    """A GET on one process."""
    return httpx.get(f"{server.base}{path}", params=params or None, timeout=30)


def post(server: ServeProcess, path: str, body: Any = None) -> httpx.Response:
    """A POST (JSON body) on one process."""
    return httpx.post(f"{server.base}{path}", json=body, timeout=60)


def wait_job(
    server: ServeProcess, job_id: str, statuses: set[str], seconds: float = 40
) -> dict[str, Any]:
    """Poll the job on ``server`` until its status is one of ``statuses``."""
    deadline = time.monotonic() + seconds
    while True:
        job: dict[str, Any] = get(server, f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.02)
