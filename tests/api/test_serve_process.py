"""End to end: ``index-builder serve`` as a process, spoken to over HTTP on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx

from serve_process import ServeProcess

from redis_server import RedisServer


def test_serve_answers_http_and_stops_cleanly_on_ctrl_c(
    database: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"INDEX_BUILDER_DATABASE": str(database), "INDEX_BUILDER_REDIS_URL": redis_server.url}
    server = ServeProcess(tmp_path / "serve.log", env)
    base = server.base
    try:
        server.wait_ready(30, path="/indices")
        perf = httpx.get(f"{base}/index-performance", params={"index": "ew100"}, timeout=10)
        assert perf.status_code == 200 and perf.json()["data"][0]["level"] == 1000.0
        again = httpx.get(f"{base}/index-performance", params={"index": "ew100"}, timeout=10)
        assert again.headers["x-cache"] == "HIT" and again.content == perf.content
        missing = httpx.get(f"{base}/index-composition", params={"index": "nope"}, timeout=10)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
    finally:
        code = server.stop()
    output = server.output()
    assert code == 0, output
    assert f"http://127.0.0.1:{server.port}/docs" in output
