"""Cost of the ops stack (rate limits, API keys, metrics, access logs) on cached reads.

    python bench/ops_overhead.py [--rounds 4] [--duration 8]

One run, one machine: redis-server, then ``index-builder serve`` over the default
synthetic market (``bench/data/api``, as ``bench/api.py`` prepares it), started
alternately in two configurations (DuckDB lets one server hold the file at a time):

* ``on``: the production stack: rate limits on (per-client budgets of
  ``1000000000/minute`` so wrk never exhausts them, but every request is counted
  in Redis), API keys configured (reads stay open, so the auth dependency runs and
  lets them through), request ids, JSON access lines to a file, request metrics in
  multiprocess mode;
* ``off``: the same app with ``INDEX_BUILDER_RATE_LIMIT_ENABLED=false``,
  ``INDEX_BUILDER_AUTH_ENABLED=false`` and ``INDEX_BUILDER_REQUEST_MIDDLEWARE=false``.

Both use the default cache configuration (in-process tier in front of Redis), the
fastest read path, where a fixed per-request cost weighs most. Each round measures
``off`` then ``on`` with ``wrk`` (warm-up, then ``--duration`` seconds) on cached
``GET /index-performance`` (one year of ew100); the overhead is 1 - on / off of the
summed requests over all rounds, so drift of a shared machine hits both sides.

It also reads the server's CPU time (user + system, ``/proc/PID/stat``) over each
measured run: CPU per request is the stack's cost without the scheduling noise
of other work on the machine (1 - off/on of the CPU per request is the same
ratio as 1 - on/off of the throughput when the server saturates its core). With
``--pin`` (the default on Linux with two or more cores) the server runs on core 0
and wrk on the others (``taskset``), so the two do not trade cores.
Results: ``bench/results/ops_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api  # bench/api.py: processes, wrk, the database

RESULTS = api.HERE / "results" / "ops_overhead.json"
BUDGET = "1000000000/minute"


def stack_env(redis_url: str, on: bool, tmp: Path) -> dict[str, str]:
    """Server environment for one configuration."""
    env = api.server_env(redis_url, local_entries=512)
    if on:
        metrics = tmp / "metrics"
        metrics.mkdir(exist_ok=True)
        env.update(
            {
                "INDEX_BUILDER_RATE_LIMIT_READS": BUDGET,
                "INDEX_BUILDER_API_KEYS": "bench:admin:bench-key-not-secret",
                "INDEX_BUILDER_LOG_FORMAT": "json",
                "INDEX_BUILDER_METRICS_DIR": str(metrics),
            }
        )
    else:
        env.update(
            {
                "INDEX_BUILDER_RATE_LIMIT_ENABLED": "false",
                "INDEX_BUILDER_AUTH_ENABLED": "false",
                "INDEX_BUILDER_REQUEST_MIDDLEWARE": "false",
            }
        )
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def can_pin() -> bool:
    """True when ``taskset`` exists and the machine has two or more cores."""
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: list[str], cores: str | None) -> list[str]:
    """``cmd`` under ``taskset -c CORES`` (unchanged without cores)."""
    return ["taskset", "-c", cores, *cmd] if cores else cmd


def load_with_cpu(
    step: str, url: str, body_bytes: int, args: argparse.Namespace, pid: int
) -> dict[str, Any]:
    """Warm-up, then one measured wrk run with the server's CPU time over it."""
    print(f"  {step} ...", end="", flush=True)
    if args.warmup > 0:
        api.wrk(url, args.warmup, args)
    before = cpu_seconds(pid)
    output = api.wrk(url, args.duration, args)
    cpu = cpu_seconds(pid) - before
    load = api.Load(step=step, url=url, body_bytes=body_bytes, **api.parse_wrk(output))
    if load.non_2xx or any(load.socket_errors.values()):
        raise RuntimeError(f"{step}: {load.non_2xx} non-2xx, socket errors {load.socket_errors}")
    cpu_us = cpu / max(1, load.requests) * 1e6
    print(f" {load.requests_per_sec:,.0f} req/s, server CPU {cpu_us:.0f} us/request", flush=True)
    return {**load.__dict__, "server_cpu_s": cpu, "server_cpu_us_per_request": cpu_us}


def measure(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Alternate off/on servers for ``args.rounds`` rounds; one wrk load each."""
    client = httpx.Client(trust_env=False)
    rows: list[dict[str, Any]] = []
    redis_port = api.free_port()
    redis_url = f"redis://{api.HOST}:{redis_port}/0"
    redis_bin = shutil.which("redis-server") or "redis-server"
    redis_cmd = [redis_bin, "--port", str(redis_port), "--bind", api.HOST, "--save", ""]
    redis_cmd += ["--appendonly", "no", "--dir", str(tmp)]
    server_cores = "0" if args.pin else None
    client_cores = f"1-{(os.cpu_count() or 2) - 1}" if args.pin else None
    if client_cores:  # wrk is started by api.wrk: pin this process, which it inherits
        os.sched_setaffinity(0, range(1, os.cpu_count() or 2))
    redis_cmd = pinned(redis_cmd, client_cores)
    with api.running("redis", redis_cmd, tmp) as redis_proc:
        api.wait_redis(redis_url, redis_proc)
        for round_no in range(args.rounds):
            for config in ("off", "on"):
                port = api.free_port()
                env = stack_env(redis_url, config == "on", tmp)
                name = f"{config}-{round_no}"
                cmd = pinned(api.serve_cmd(port), server_cores)
                with api.running(name, cmd, tmp, env) as proc:
                    base = f"http://{api.HOST}:{port}"
                    try:
                        api.wait_http(client, f"{base}/indices", proc, f"{config} server")
                    except RuntimeError as exc:
                        raise RuntimeError(f"{exc}\n{api.log_tail(tmp, name)}") from exc
                    start, end = api.year_window(client, base)
                    query = urlencode({"index": api.INDEX, "start_date": start, "end_date": end})
                    url = f"{base}/index-performance?{query}"
                    api.fetch(client, url)
                    body = api.fetch(client, url, expect_cache="HIT")
                    head = client.get(url).headers
                    if (config == "on") != ("ratelimit-limit" in head):
                        raise RuntimeError(f"{config}: rate-limit headers {dict(head)}")
                    step = f"round {round_no + 1} {config}"
                    load = load_with_cpu(step, url, len(body), args, server_pid(proc))
                    rows.append({"config": config, "round": round_no + 1, **load})
    client.close()
    return rows


def server_pid(proc: subprocess.Popen[bytes]) -> int:
    """The server's pid (``taskset`` execs the command, so it is ``proc``'s)."""
    return proc.pid


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summed throughput per configuration and the overhead of ``on``."""
    totals = {
        c: sum(r["requests_per_sec"] for r in rows if r["config"] == c) for c in ("off", "on")
    }
    p99 = {c: [r["p99_ms"] for r in rows if r["config"] == c] for c in ("off", "on")}
    cpu = {c: sum(r["server_cpu_s"] for r in rows if r["config"] == c) for c in ("off", "on")}
    served = {c: sum(r["requests"] for r in rows if r["config"] == c) for c in ("off", "on")}
    cpu_us = {c: cpu[c] / max(1, served[c]) * 1e6 for c in ("off", "on")}
    return {
        "off_req_s_mean": totals["off"] / max(1, len(p99["off"])),
        "on_req_s_mean": totals["on"] / max(1, len(p99["on"])),
        "overhead": 1.0 - totals["on"] / totals["off"],
        "off_cpu_us_per_request": cpu_us["off"],
        "on_cpu_us_per_request": cpu_us["on"],
        "cpu_overhead": 1.0 - cpu_us["off"] / cpu_us["on"],
        "p99_ms": p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wrk-timeout", type=int, default=5)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=can_pin(),
        help="server on core 0, wrk and Redis on the others (taskset)",
    )
    args = parser.parse_args()
    print(api.prepare_database(), flush=True)
    with tempfile.TemporaryDirectory(prefix="ops-overhead-") as tmp:
        rows = measure(args, Path(tmp))
    summary = summarize(rows)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2, default=str))
    print(
        f"off {summary['off_req_s_mean']:,.0f} req/s, on {summary['on_req_s_mean']:,.0f} req/s: "
        f"overhead {summary['overhead']:.1%} (target < 15%); server CPU per request "
        f"off {summary['off_cpu_us_per_request']:.0f} us, on {summary['on_cpu_us_per_request']:.0f}"
        f" us: {summary['cpu_overhead']:.1%}"
    )


if __name__ == "__main__":
    main()
