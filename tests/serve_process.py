"""``index-builder serve`` as a real process for tests: a free loopback port, its
output in a log file, readiness polled over HTTP, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

import index_builder

from redis_server import free_port

SOURCE = str(Path(index_builder.__file__).resolve().parents[1])
"""The code under test (on PYTHONPATH, whatever the server's working directory)."""


class ServeProcess:
    """One ``index-builder [OPTIONS] serve`` on 127.0.0.1.

    ``env``: settings on top of this environment with every inherited
    ``INDEX_BUILDER_*`` variable removed (``None`` removes a variable).
    """

    def __init__(
        self,
        log: Path,
        env: Mapping[str, str | None],
        *,
        options: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        full = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_BUILDER_")}
        full["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE, full.get("PYTHONPATH")) if p)
        for name, value in env.items():
            if value is None:
                full.pop(name, None)
            else:
                full[name] = value
        cmd = [sys.executable, "-m", "index_builder.cli.main", *options, "serve"]
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(self.port)],
            env=full,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    def wait_ready(self, seconds: float = 60, path: str = "/health/live") -> None:
        """Poll ``path`` until it answers 200; fail with the log if the server exits
        or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(f"{self.base}{path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        """Everything the server wrote so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """Ctrl-C, then the exit code (killed, and an error, after 20 s)."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        finally:
            self._out.close()
