"""End to end: ``index-builder serve`` as a process, spoken to over HTTP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from redis_server import RedisServer, free_port


def test_serve_answers_http_and_stops_cleanly_on_ctrl_c(
    database: Path, redis_server: RedisServer
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "INDEX_BUILDER_DATABASE": str(database),
        "INDEX_BUILDER_REDIS_URL": redis_server.url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "index_builder.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/indices", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = proc.stdout.read() if proc.stdout else "no output"
                    raise AssertionError(output) from None
                time.sleep(0.1)
        perf = httpx.get(f"{base}/index-performance", params={"index": "ew100"}, timeout=10)
        assert perf.status_code == 200 and perf.json()["data"][0]["level"] == 1000.0
        again = httpx.get(f"{base}/index-performance", params={"index": "ew100"}, timeout=10)
        assert again.headers["x-cache"] == "HIT" and again.content == perf.content
        missing = httpx.get(f"{base}/index-composition", params={"index": "nope"}, timeout=10)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    output = proc.stdout.read() if proc.stdout else ""
    assert code == 0, output
    assert f"http://127.0.0.1:{port}/docs" in output
