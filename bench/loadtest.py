"""Bounded load test: nginx in front of 1, 2 and 4 API processes, a realistic mix.

    python bench/loadtest.py [--processes 1,2,4] [--rounds 2] [--duration 20] \
        [--nginx-config deploy/nginx/nginx.conf]        # = make loadtest

What runs, all on loopback:

* the lake, prepared once: a copy of the 6000 x 2520 bench database
  (``bench/data/incremental-6000x2520-after/bench.duckdb``, ew100 and five more
  indices built) migrated to the Iceberg backend in ``bench/data/loadtest/``
  (``index-builder migrate-storage --to iceberg``, about 5 minutes the first time;
  reused afterwards);
* one redis-server; for each process count N, one *fleet* on its own Redis
  database: ``index-builder serve --workers N`` (N uvicorn processes on one port, the
  Iceberg store, the Redis job queue, API keys from a file, JSON access lines, the
  default cache tiers), one ``index-builder worker`` for the jobs, and nginx with the
  canonical configuration (``--nginx-config``, rendered for loopback by
  ``deploy/nginx/render.sh``: ``INDEX_BUILDER_TRUSTED_PROXIES`` is nginx's address).
  Every fleet starts first, so the runs can alternate between them (the machine is
  shared: each round measures 1, 2 and 4 processes within a minute or two);
* the mix, four wrk processes at once per run (``bench/lua/paths.lua``), each a
  class with its own latency distribution and status counts:

  - ``cached``: 16 connections, GETs of a few popular URLs (year windows and
    compositions of the built indices) by 100 users (100 API keys, a
    ``RateLimit`` budget each that they stay within);
  - ``uncached``: 4 connections, random performance windows (1 to 252 trading days,
    nine in ten requests) and random composition dates of the built indices, mostly
    answered by computing them (a composition date of a block of days no process of
    the fleet has read yet costs an engine run over the lake's Parquet files);
  - ``jobs``: 1 connection, one request a second: POST /build-index (ew100 is up to
    date: the build finds nothing to do) and POST /export-data (a month as csv);
  - ``abusive``: 4 connections of one API key far over its budget (answered ``429``
    after its first 3000 requests a minute).

Each run: a warm-up of the cached URLs (``--warmup`` seconds, not recorded),
``--cached-only`` seconds of the cached class alone (the most it serves), as long
again of the cached class at a fixed pace (:data:`PACED`: CPU per request at the
same work, where coordination overhead between processes would show), then
``--duration`` seconds of the mix. CPU: user + system time of the fleet's API
processes (psutil), of nginx, Redis, the job worker, and of the four wrk processes.
Results: ``bench/results/loadtest.json``; the table is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api  # bench/api.py: ports, processes, Redis

ROOT = api.HERE.parent
SOURCE = api.HERE / "data" / "incremental-6000x2520-after" / "bench.duckdb"
LAKE_HOME = api.HERE / "data" / "loadtest"
LAKE = LAKE_HOME / "lake"
ANCHOR = LAKE_HOME / "source.duckdb"
READY = LAKE_HOME / "READY"
LUA = api.HERE / "lua" / "paths.lua"
RENDER = ROOT / "deploy" / "nginx" / "render.sh"
RESULTS = api.HERE / "results" / "loadtest.json"
CLI = [sys.executable, "-m", "index_builder.cli.main"]
USERS = 100
READS_BUDGET = "3000/minute"
CLASSES: dict[str, dict[str, Any]] = {
    "cached": {"connections": 16},
    "uncached": {"connections": 4},
    "jobs": {"connections": 1, "delay_ms": 1000},
    "abusive": {"connections": 4},
}
PACED = {"cached": {"connections": 16, "delay_ms": 8}}
"""The cached class at a rate every fleet serves (16 connections, 8 ms apart: about
1,800 requests a second): CPU per request at the same work, whatever the processes."""


# ---------------------------------------------------------------------------- the lake
def lake_env() -> dict[str, str]:
    """The settings of every process over the load test's lake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_BUILDER_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env |= {
        "INDEX_BUILDER_STORAGE": "iceberg",
        "INDEX_BUILDER_WAREHOUSE": str(LAKE),
        "INDEX_BUILDER_DATABASE": str(ANCHOR),
    }
    return env


def prepare_lake() -> str:
    """The lake, from a copy of the bench database (once; reused when READY exists)."""
    if READY.exists() and (LAKE / "catalog.db").exists():
        return f"reused {LAKE.relative_to(ROOT)}"
    if not SOURCE.exists():
        sys.exit(f"{SOURCE} is missing: run bench/incremental.py (make bench) first")
    shutil.rmtree(LAKE, ignore_errors=True)
    LAKE_HOME.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCE, ANCHOR)
    started = time.perf_counter()
    print("  preparing the lake (migrate-storage --to iceberg, a few minutes) ...", flush=True)
    done = subprocess.run(
        [*CLI, "-q", "migrate-storage", "--to", "iceberg"],
        env=lake_env() | {"INDEX_BUILDER_STORAGE": "duckdb"},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate-storage failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    READY.write_text(f"migrated from {SOURCE.name} in {time.perf_counter() - started:.0f} s\n")
    return f"created {LAKE.relative_to(ROOT)} ({time.perf_counter() - started:.0f} s)"


# ---------------------------------------------------------------------------- a fleet
@dataclass
class Fleet:
    """N API processes (``serve --workers N``), a job worker and nginx, on Redis db ``db``."""

    processes: int
    db: int
    folder: Path
    redis_url: str
    keys_file: Path
    nginx_config: Path
    api_port: int = field(default_factory=api.free_port)
    nginx_port: int = field(default_factory=api.free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{api.HOST}:{self.nginx_port}"

    def env(self) -> dict[str, str]:
        return lake_env() | {
            "INDEX_BUILDER_REDIS_URL": f"{self.redis_url}/{self.db}",
            "INDEX_BUILDER_TRUSTED_PROXIES": api.HOST,  # nginx, and only nginx
            "INDEX_BUILDER_API_KEYS_FILE": str(self.keys_file),
            "INDEX_BUILDER_RATE_LIMIT_READS": READS_BUDGET,
            "INDEX_BUILDER_RATE_LIMIT_BUILDS": "600/minute",
            "INDEX_BUILDER_RATE_LIMIT_EXPORTS": "600/minute",
            "INDEX_BUILDER_LOG_FORMAT": "json",
            # one DuckDB thread per process, as served on small machines: a query over
            # the lake's Parquet files then takes one core, not every core from the rest
            "INDEX_BUILDER_DUCKDB_THREADS": "1",
            "INDEX_BUILDER_EXPORT_FOLDER": str(self.folder / "exports"),
        }

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env
        )

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = self.env()
        serve = [*CLI, "serve", "--host", api.HOST, "--port", str(self.api_port)]
        self._start("api", [*serve, "--workers", str(self.processes)], env)
        self._start("worker", [*CLI, "worker"], env)
        prefix = self.folder / "nginx"
        prefix.mkdir(exist_ok=True)
        config = prefix / "nginx.conf"
        render_env = os.environ | {
            "API_SERVERS": f"{api.HOST}:{self.api_port}",
            "NGINX_LISTEN": f"{api.HOST}:{self.nginx_port}",
        }
        subprocess.run(
            ["sh", str(RENDER), str(self.nginx_config), str(config)], env=render_env, check=True
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        foreground = f"daemon off; pid {prefix / 'nginx.pid'};"
        self._start(
            "nginx", [nginx, "-e", "stderr", "-p", str(prefix), "-c", str(config), "-g", foreground]
        )

    def wait_ready(self, client: httpx.Client, deadline: float) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} of the {self.processes}-process fleet exited:\n"
                    + api.log_tail(self.folder, name)
                )
        while True:
            try:
                if client.get(f"{self.base}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.procs["api"].poll() is not None:
                raise RuntimeError(
                    f"the {self.processes}-process fleet did not start:\n"
                    + api.log_tail(self.folder, "api")
                )
            time.sleep(0.25)
        # every worker process answers (uvicorn's children start one after the other)
        while len(self.api_pids()) < self.processes + (1 if self.processes > 1 else 0):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.processes} API processes did not all start")
            time.sleep(0.25)

    def api_pids(self) -> list[int]:
        """The API's processes: ``serve`` itself and, with workers, its children."""
        root = psutil.Process(self.procs["api"].pid)
        return [root.pid, *(c.pid for c in root.children(recursive=True))]

    def pids(self) -> dict[str, list[int]]:
        out = {"api": self.api_pids()}
        for name in ("worker", "nginx"):
            root = psutil.Process(self.procs[name].pid)
            out[name] = [root.pid, *(c.pid for c in root.children(recursive=True))]
        return out

    def stop(self) -> None:
        stops = {"nginx": signal.SIGQUIT, "api": signal.SIGINT, "worker": signal.SIGTERM}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(stops[name])
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self.logs:
            log.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of live processes (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


# ---------------------------------------------------------------------------- the mix
def write_keys(folder: Path) -> dict[str, Any]:
    """100 users with the read scope, one abusive reader, one builder; the keys file."""
    keys = {
        "users": [f"user-{i:03d}-{secrets.token_hex(10)}" for i in range(USERS)],
        "abusive": f"abuser-{secrets.token_hex(10)}",
        "builder": f"builder-{secrets.token_hex(10)}",
    }
    lines = [f"user{i:03d}:read:{key}" for i, key in enumerate(keys["users"])]
    lines += [f"abuser:read:{keys['abusive']}", f"builder:read+build+export:{keys['builder']}"]
    path = folder / "keys.txt"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    keys["file"] = path
    return keys


def line(path: str, key: str, method: str = "GET", body: str = "") -> str:
    return f"{method}\t{path}\t{key}\t{body}"


def write_mix(
    client: httpx.Client, base: str, keys: dict[str, Any], folder: Path, seed: int
) -> dict[str, Any]:
    """The request files of the four classes (and the cached URLs to warm)."""
    headers = {"X-API-Key": keys["builder"]}
    listed = client.get(f"{base}/indices", headers=headers, timeout=60).json()
    built = sorted(i["definition"]["id"] for i in listed if i.get("build"))
    perf = client.get(
        f"{base}/index-performance", params={"index": "ew100"}, headers=headers, timeout=120
    )
    days = [dt.date.fromisoformat(r["date"]) for r in perf.json()["data"]]
    rng = random.Random(seed)
    popular = []
    for index in built[:3]:
        popular.append(
            f"/index-performance?index={index}&start_date={days[-252]}&end_date={days[-1]}"
        )
        popular.append(
            f"/index-performance?index={index}&start_date={days[-504]}&end_date={days[-253]}"
        )
        for day in (days[-1], days[-22], days[-63], days[-252]):
            popular.append(f"/index-composition?index={index}&date={day}&limit=100")
    users = keys["users"]
    cached = [line(p, key) for p in popular for key in users]
    abusive = [line(p, keys["abusive"]) for p in popular]
    uncached = []
    first, last = days[0], days[-1]
    for n in range(20000):
        index = rng.choice(built)
        if n % 10:  # nine random windows for one random composition date
            i = rng.randrange(len(days))
            j = min(len(days) - 1, i + rng.randrange(252))
            path = f"/index-performance?index={index}&start_date={days[i]}&end_date={days[j]}"
        else:
            day = first + dt.timedelta(days=rng.randrange((last - first).days + 1))
            path = f"/index-composition?index={index}&date={day}&limit=100"
        uncached.append(line(path, users[n % len(users)]))
    jobs = [
        line(
            "/build-index",
            keys["builder"],
            "POST",
            json.dumps({"index": "ew100"}, separators=(",", ":")),
        )
    ]
    for _ in range(20):
        i = rng.randrange(len(days) - 21)
        body = {
            "index": rng.choice(built),
            "start_date": str(days[i]),
            "end_date": str(days[i + 20]),
            "format": "csv",
        }
        jobs.append(
            line("/export-data", keys["builder"], "POST", json.dumps(body, separators=(",", ":")))
        )
    files = {}
    for name, lines in (
        ("cached", cached),
        ("uncached", uncached),
        ("jobs", jobs),
        ("abusive", abusive),
    ):
        files[name] = folder / f"{name}.tsv"
        files[name].write_text("\n".join(lines) + "\n")
    return {"files": files, "popular": popular, "built": built}


def wrk_cmd(base: str, paths: Path, seconds: int, connections: int, *options: str) -> list[str]:
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout=30s",
        "-s",
        str(LUA),
        base,
        "--",
        str(paths),
        *options,
    ]


def wrk_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    found = [x for x in out.splitlines() if x.startswith("wrk-json ")]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}\n{err}")
    result: dict[str, Any] = json.loads(found[-1].removeprefix("wrk-json "))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    fleet: Fleet,
    files: dict[str, Path],
    classes: dict[str, dict[str, Any]],
    seconds: int,
    seed: int,
    redis_pid: int,
) -> dict[str, Any]:
    """``classes`` at once for ``seconds``: per class the wrk figures; the CPU of each part."""
    pids = fleet.pids()
    before = {name: cpu_seconds(p) for name, p in pids.items()}
    before["redis"] = cpu_seconds([redis_pid])
    before_wrk = children_cpu()
    load_before = os.getloadavg()[0]
    procs = {}
    for name, spec in classes.items():
        options = [f"seed={seed}"]
        if "delay_ms" in spec:
            options.append(f"delay={spec['delay_ms']}")
        procs[name] = subprocess.Popen(
            wrk_cmd(fleet.base, files[name], seconds, spec["connections"], *options),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {name: wrk_result(proc) for name, proc in procs.items()}
    after = {name: cpu_seconds(p) for name, p in pids.items()}
    after["redis"] = cpu_seconds([redis_pid])
    cpu = {name: after[name] - before[name] for name in after}
    cpu["wrk"] = children_cpu() - before_wrk
    requests = sum(c["requests"] for c in results.values())
    for name, c in results.items():
        ok = {"200"} if name != "abusive" else {"200", "429"}
        c["errors_total"] = sum(v for s, v in c["statuses"].items() if s not in ok) + sum(
            v for k, v in c["errors"].items() if k != "status"
        )
    served = sum(c["requests"] for n, c in results.items() if n != "abusive")
    return {
        "seconds": seconds,
        "load_1m": [load_before, os.getloadavg()[0]],
        "classes": results,
        "requests": requests,
        "rps": requests / seconds,
        "served_rps": served / seconds,
        "cpu_seconds": cpu,
        "app_cpu_us_per_request": cpu["api"] / requests * 1e6,
        "errors": sum(c["errors_total"] for c in results.values()),
    }


def run_fleet(
    fleet: Fleet, mix: dict[str, Any], args: argparse.Namespace, seed: int, redis_pid: int
) -> dict[str, Any]:
    """A warm-up of the cached URLs, ``--cached-only`` seconds of the cached class alone
    (throughput and CPU per request without the other classes' uneven work), then the
    four classes at once for ``--duration`` seconds."""
    files = mix["files"]
    warm = subprocess.Popen(
        wrk_cmd(fleet.base, files["cached"], args.warmup, 8, f"seed={seed}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wrk_result(warm)
    row: dict[str, Any] = {"processes": fleet.processes}
    if args.cached_only > 0:
        cached = {"cached": CLASSES["cached"]}
        row["cached_only"] = measure(fleet, files, cached, args.cached_only, seed, redis_pid)
        row["cached_paced"] = measure(fleet, files, PACED, args.cached_only, seed, redis_pid)
    row["mix"] = measure(fleet, files, CLASSES, args.duration, seed, redis_pid)
    return row


# ---------------------------------------------------------------------------- report
def print_run(row: dict[str, Any]) -> None:
    mix = row["mix"]
    c = mix["classes"]
    parts = []
    for phase, label in (("cached_only", "cached alone"), ("cached_paced", "paced")):
        got = row.get(phase)
        if got:
            parts.append(
                f"{label} {got['rps']:5.0f} req/s {got['app_cpu_us_per_request']:4.0f} us/req "
                f"p99 {got['classes']['cached']['p99_ms']:.1f} ms"
            )
    print(
        f"  {row['processes']} proc  {' | '.join(parts)} | mix {mix['rps']:5.0f} req/s "
        f"(served {mix['served_rps']:5.0f}) {mix['app_cpu_us_per_request']:4.0f} us/req  "
        f"p50/p99 ms: cached {c['cached']['p50_ms']:.1f}/{c['cached']['p99_ms']:.1f} "
        f"uncached {c['uncached']['p50_ms']:.0f}/{c['uncached']['p99_ms']:.0f} "
        f"jobs {c['jobs']['p50_ms']:.0f}/{c['jobs']['p99_ms']:.0f}  "
        f"abusive 429 {c['abusive']['statuses'].get('429', 0)}/{c['abusive']['requests']}  "
        f"errors {mix['errors']}  load {mix['load_1m'][0]:.1f}",
        flush=True,
    )


def _totals(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Summed requests and CPU of measurements of one process count."""
    seconds = sum(r["seconds"] for r in runs)
    requests = sum(r["requests"] for r in runs)
    per_class = {}
    for name in names:
        got = [r["classes"][name] for r in runs]
        statuses = sorted({s for x in got for s in x["statuses"]})
        per_class[name] = {
            "rps": sum(x["requests"] for x in got) / seconds,
            "p50_ms": max(x["p50_ms"] for x in got),
            "p99_ms": max(x["p99_ms"] for x in got),
            "statuses": {s: sum(x["statuses"].get(s, 0) for x in got) for s in statuses},
            "errors": sum(x["errors_total"] for x in got),
        }
    return {
        "seconds": seconds,
        "rps": requests / seconds,
        "served_rps": sum(r["served_rps"] * r["seconds"] for r in runs) / seconds,
        "app_cpu_us_per_request": sum(r["cpu_seconds"]["api"] for r in runs) / requests * 1e6,
        "cpu_cores": {
            k: sum(r["cpu_seconds"][k] for r in runs) / seconds for k in runs[0]["cpu_seconds"]
        },
        "classes": per_class,
        "errors": sum(r["errors"] for r in runs),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per process count, per phase: summed over its runs, with ratios to 1 process
    (p50 and p99: the worst run's)."""
    out = []
    for n in sorted({r["processes"] for r in rows}):
        mine = [r for r in rows if r["processes"] == n]
        entry: dict[str, Any] = {"processes": n, "runs": len(mine)}
        entry["mix"] = _totals([r["mix"] for r in mine], list(CLASSES))
        for phase in ("cached_only", "cached_paced"):
            if all(phase in r for r in mine):
                entry[phase] = _totals([r[phase] for r in mine], ["cached"])
        out.append(entry)
    one = next((s for s in out if s["processes"] == 1), None)
    for s in out:
        for phase in ("mix", "cached_only", "cached_paced"):
            if one is None or phase not in s or phase not in one:
                continue
            mine, base = s[phase], one[phase]
            mine["rps_vs_1"] = mine["rps"] / base["rps"]
            mine["served_rps_vs_1"] = mine["served_rps"] / base["served_rps"]
            mine["app_cpu_per_request_vs_1"] = (
                mine["app_cpu_us_per_request"] / base["app_cpu_us_per_request"]
            )
    return out


def print_summary(summary: list[dict[str, Any]]) -> None:
    print(
        "\n  procs | cached alone: req/s   x1 us/req   x1 | paced: us/req   x1 "
        "| mix: req/s   x1 served   x1 us/req  cached p99 uncached p99 errors"
    )
    for s in summary:
        cells = []
        for phase in ("cached_only", "cached_paced"):
            got = s.get(phase)
            if got is None:
                cells.append("")
                continue
            rps = (
                f"{got['rps']:6.0f} {got.get('rps_vs_1', 1):4.2f} "
                if phase == "cached_only"
                else ""
            )
            cells.append(
                f"{rps}{got['app_cpu_us_per_request']:6.0f} "
                f"{got.get('app_cpu_per_request_vs_1', 1):4.2f}"
            )
        mix = s["mix"]
        c = mix["classes"]
        print(
            f"  {s['processes']:5d} |          {cells[0]:>24s} |       {cells[1]:>11s} "
            f"|      {mix['rps']:5.0f} {mix.get('rps_vs_1', 1):4.2f} "
            f"{mix['served_rps']:6.0f} {mix.get('served_rps_vs_1', 1):4.2f} "
            f"{mix['app_cpu_us_per_request']:6.0f} "
            f"{c['cached']['p99_ms']:11.1f} {c['uncached']['p99_ms']:12.1f} {mix['errors']:6d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,4", help="API process counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="runs per process count, alternating")
    parser.add_argument("--duration", type=int, default=15, help="seconds of the mix (at most 30)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="seconds of cached reads before each run"
    )
    parser.add_argument(
        "--cached-only",
        type=int,
        default=6,
        help="seconds of the cached class alone, and as long at a fixed pace, per run",
    )
    parser.add_argument(
        "--nginx-config", type=Path, default=ROOT / "deploy" / "nginx" / "nginx.conf"
    )
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    counts = [int(x) for x in args.processes.split(",")]
    if not 1 <= args.duration <= 30 or not 0 <= args.cached_only <= 30:
        parser.error("need 1 <= duration <= 30 and 0 <= cached-only <= 30")
    if args.rounds < 1 or min(counts) < 1:
        parser.error("need rounds >= 1 and process counts >= 1")
    for tool in ("wrk", "redis-server", "nginx"):
        if shutil.which(tool) is None and not (
            tool == "nginx" and os.access("/usr/sbin/nginx", os.X_OK)
        ):
            sys.exit(f"{tool} is not installed (make system-deps installs it)")
    if not args.nginx_config.exists():
        sys.exit(f"{args.nginx_config}: no such nginx configuration template")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    print(f"load test: nginx ({args.nginx_config}) in front of {counts} API processes")
    print(f"  lake: {prepare_lake()}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        client = stack.enter_context(httpx.Client(trust_env=False))
        port = api.free_port()
        redis_url = f"redis://{api.HOST}:{port}"
        redis_cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            api.HOST,
        ]
        redis_cmd += ["--save", "", "--appendonly", "no", "--dir", tmp_name, "--databases", "32"]
        redis_proc = stack.enter_context(api.running("redis", redis_cmd, tmp))
        api.wait_redis(f"{redis_url}/0", redis_proc)
        keys = write_keys(tmp)
        fleets = [
            Fleet(n, db, tmp / f"fleet-{n}", redis_url, keys["file"], args.nginx_config.resolve())
            for db, n in enumerate(counts, start=1)
        ]
        started = time.perf_counter()
        for fleet in fleets:
            stack.callback(fleet.stop)
            fleet.start()
        deadline = time.monotonic() + 240
        for fleet in fleets:
            fleet.wait_ready(client, deadline)
        print(f"  {len(fleets)} fleets up in {time.perf_counter() - started:.0f} s", flush=True)
        mix = write_mix(client, fleets[0].base, keys, tmp, args.seed)
        for fleet in fleets:  # each popular URL stored in the fleet's Redis
            for path in mix["popular"]:
                response = client.get(
                    fleet.base + path, headers={"X-API-Key": keys["users"][0]}, timeout=120
                )
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        print(
            f"  mix over {', '.join(mix['built'])}; {args.rounds} rounds of {args.duration} s",
            flush=True,
        )
        for round_number in range(args.rounds):
            for fleet in fleets:
                row = run_fleet(fleet, mix, args, args.seed + round_number, redis_proc.pid)
                row["round"] = round_number + 1
                rows.append(row)
                print_run(row)
    summary = summarize(rows)
    print_summary(summary)
    total = time.perf_counter() - began
    print(f"  whole load test: {total:.0f} s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "settings": {k: str(v) for k, v in vars(args).items()},
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "classes": CLASSES,
                "reads_budget": READS_BUDGET,
                "runs": rows,
                "summary": summary,
                "seconds": total,
            },
            indent=2,
        )
    )
    print(f"  results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
