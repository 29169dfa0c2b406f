"""Where the ops stack's cost goes: CPU per cached read in process, one part off at a time.

    python bench/ops_parts.py [--batches 12] [--requests 1000]

No server and no socket: the app is called as an ASGI function (cached
``GET /index-performance`` of one year of ew100 over the default synthetic market,
``bench/data/api``, as ``bench/api.py`` prepares it), with a real redis-server on
loopback behind the rate limiter and the response cache. One app per variant lives
in this process; batches of ``--requests`` calls alternate between the variants, so
they share the machine's state, and each variant's best and median batch (CPU time
per request) are reported:

* ``off``: rate limits, API keys and the request middleware off;
* ``on``: all on, as ``bench/ops_overhead.py`` runs them (metrics in multiprocess
  mode, JSON access lines, a reads budget the benchmark cannot spend);
* ``no-middleware``, ``no-rate-limit``, ``no-auth``: ``on`` with that part off.

Over HTTP the server adds its own per-request work to both sides (see
``bench/ops_overhead.py`` for the end-to-end ratio). Results:
``bench/results/ops_parts.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

# before anything imports index_builder's metrics: multiprocess mode, as served
METRICS_DIR = tempfile.mkdtemp(prefix="ops-parts-metrics-")
os.environ["INDEX_BUILDER_METRICS_DIR"] = METRICS_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api  # bench/api.py: processes, the database  # noqa: E402

RESULTS = api.HERE / "results" / "ops_parts.json"
STACK_ON: dict[str, Any] = {
    "rate_limit_reads": "1000000000/minute",
    "api_keys": "bench:admin:bench-key-not-secret",
    "log_format": "json",
}
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"rate_limit_enabled": False, "auth_enabled": False, "request_middleware": False},
    "on": {},
    "no-middleware": {"request_middleware": False},
    "no-rate-limit": {"rate_limit_enabled": False},
    "no-auth": {"auth_enabled": False},
}


def scope_of(query: bytes) -> dict[str, Any]:
    """The ASGI scope of a GET /index-performance (what uvicorn passes for wrk's request)."""
    path = "/index-performance"
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def measure(apps: dict[str, Any], args: argparse.Namespace) -> dict[str, list[float]]:
    """CPU microseconds per request of each batch, per variant."""
    statuses: list[int] = []
    bodies: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif message["type"] == "http.response.body":
            bodies.append(message.get("body", b""))

    batches: dict[str, list[float]] = {name: [] for name in apps}
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        await apps["off"](scope_of(f"index={api.INDEX}".encode()), receive, send)
        year = json.loads(b"".join(bodies))["data"][-api.YEAR_DAYS :]
        start, end = year[0]["date"], year[-1]["date"]
        scope = scope_of(f"index={api.INDEX}&start_date={start}&end_date={end}".encode())
        for app in apps.values():  # warm-up: fills the cache tiers
            for _ in range(300):
                await app(dict(scope), receive, send)
        for _ in range(args.batches):
            for name, app in apps.items():
                started = time.process_time()
                for _ in range(args.requests):
                    await app(dict(scope), receive, send)
                batches[name].append((time.process_time() - started) / args.requests * 1e6)
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses {sorted(set(statuses))}")
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    print(api.prepare_database(), flush=True)
    with tempfile.TemporaryDirectory(prefix="ops-parts-") as tmp_name:
        tmp = Path(tmp_name)
        from index_builder.api.app import create_app
        from index_builder.ops.logging import configure_logging
        from index_builder.settings import Settings

        port = api.free_port()
        redis_url = f"redis://{api.HOST}:{port}/0"
        redis_cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port)]
        redis_cmd += ["--bind", api.HOST, "--save", "", "--appendonly", "no", "--dir", tmp_name]
        with api.running("redis", redis_cmd, tmp) as redis_proc:
            api.wait_redis(redis_url, redis_proc)
            apps = {}
            for name, overrides in VARIANTS.items():
                database = tmp / f"{name}.duckdb"
                shutil.copy(api.API_DB, database)
                settings = Settings(
                    database=database,
                    redis_url=redis_url,
                    local_cache_entries=512,
                    **{**STACK_ON, **overrides},
                )
                apps[name] = create_app(settings)
            with (tmp / "access.log").open("w") as log:
                configure_logging(Settings(log_format="json"), stream=log)
                batches = asyncio.run(measure(apps, args))
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    summary = {
        name: {"best_us": min(values), "median_us": statistics.median(values)}
        for name, values in batches.items()
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"batches": batches, "summary": summary}, indent=2))
    off = summary["off"]["best_us"]
    for name, row in summary.items():
        print(
            f"{name:14s} best {row['best_us']:6.0f} us  median {row['median_us']:6.0f} us"
            f"  (best {row['best_us'] - off:+5.0f} us vs off)"
        )


if __name__ == "__main__":
    main()
