"""Fault fixtures: a built database, and ``index-builder serve`` as a real process
with optional resource limits and its output drained from a pipe."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from serve_process import SOURCE

from redis_server import free_port
from templates import build_template, private_copy


@pytest.fixture(scope="session")
def faults_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 150 x 40 synthetic market with ew100 built, checkpointed (no WAL)."""
    path = tmp_path_factory.mktemp("faults") / "template.duckdb"
    return build_template(path, symbols=150, days=40, indices=["ew100"], checkpoint=True)


@pytest.fixture
def database(faults_template: Path, tmp_path: Path) -> Path:
    return private_copy(faults_template, tmp_path, "faults.duckdb")


class Server:
    """One ``index-builder serve`` whose output goes to a pipe (a file would count
    against a file size limit), optionally with ``RLIMIT_FSIZE``."""

    def __init__(self, database: Path, *, file_size_limit: int | None = None, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_BUILDER_")}
        full.update(PYTHONPATH=SOURCE, INDEX_BUILDER_DATABASE=str(database), **env)
        self.lines: list[str] = []

        def limits() -> None:
            if file_size_limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write, not a kill
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "index_builder.cli.main", "serve", "--port", str(self.port)],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=limits,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(f"{self.base}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("serve did not start:\n" + "".join(self.lines[-50:]))
            time.sleep(0.1)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", timeout=60, **kwargs)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start servers (``serve(database, **options)``); every one is stopped after."""
    started: list[Server] = []

    def start(database: Path, **options: object) -> Server:
        server = Server(database, **options)  # type: ignore[arg-type]
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
