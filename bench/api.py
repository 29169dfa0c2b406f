"""Benchmark the REST API under load (wrk) and the xlsx export; prints a table.

    python bench/api.py [--duration 10] [--connections 32] [--threads 2]

Set-up: the default synthetic market (3000 symbols x 504 days, every built-in index
built) in ``bench/data/api/``, reused when ew100 is already built there. Then, one
phase at a time so that only the server under test runs during its load:

1. redis-server (loopback, no persistence) and ``index-builder serve`` with
   ``INDEX_BUILDER_REDIS_URL``: cached GET /index-performance (the last 252 trading
   days of ew100) and GET /index-composition, both verified to be ``X-Cache: HIT``.
2. ``index-builder serve`` without Redis: the same URLs, every answer from DuckDB.
3. The framework floor (``bench/floor_app.py``): FastAPI under uvicorn returning the
   cached bytes from memory, the most a single uvicorn process can do for that body.
   It runs beside the cached servers, and each cached URL is measured ``--rounds``
   times alternately with the floor on the same bytes (server, floor, server,
   floor...): the ratio of runs seconds apart is what a shared machine moves least.
   The floor rows shown are those measured beside the default configuration.

Every server is one uvicorn process on 127.0.0.1, as ``index-builder serve`` runs it.
Load is ``wrk -t THREADS -c CONNECTIONS -d DURATIONs --latency`` (plus ``--timeout``,
so that slow answers count in the latencies instead of being dropped), after an
unrecorded warm-up of ``--warmup`` seconds on the same URL; any non-2xx answer or
socket error fails the run, and so does a cached run in which Redis's hit counter
grew by less than wrk's request count (the API bypasses a Redis call that takes over
250 ms (INDEX_BUILDER_REDIS_TIMEOUT_SECONDS) for 5 s, which a busy machine can trigger:
that run would measure the database, not the cache). Finally, in its own process
(so that its peak RSS is its own), the xlsx export of ew100 over the whole 6000 x 2520
bench database that ``bench/run.py`` (``make bench``) leaves in ``bench/data/6000x2520/``.

Results are also written to ``bench/results/api.json``. Figures are whatever this
machine measures; note that wrk, the server and Redis share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

import httpx
import redis

from index_builder.export import export_index
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

HERE = Path(__file__).resolve().parent
API_DATA = HERE / "data" / "api"
API_DB = API_DATA / "bench.duckdb"
EXPORT_DB = HERE / "data" / "6000x2520" / "bench.duckdb"
RESULTS = HERE / "results" / "api.json"

INDEX = "ew100"
YEAR_DAYS = 252
COMPOSITION_DATE = "2024-06-28"
HOST = "127.0.0.1"
START_TIMEOUT = 120.0  # seconds for a server to answer after it is started
STOP_TIMEOUT = 10.0  # seconds between terminate and kill
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


# ---------------------------------------------------------------------------- processes
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Terminate ``proc``, and kill it if it has not exited after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextmanager
def running(
    name: str, cmd: list[str], logdir: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` (output to ``logdir/NAME.log``, cwd ``logdir``) and always stop it."""
    log: IO[bytes] = (logdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=logdir, env=env)
    try:
        yield proc
    finally:
        try:
            stop_process(proc)
        finally:
            log.close()


def log_tail(logdir: Path, name: str, lines: int = 30) -> str:
    """The last lines of a process's log, for error messages."""
    path = logdir / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def server_env(redis_url: str | None, local_entries: int = 0) -> dict[str, str]:
    """The environment of an API server: no inherited ``INDEX_BUILDER_*`` settings, and
    ``INDEX_BUILDER_REDIS_URL`` only when given (the cwd is a fresh folder: no .env).

    wrk is one client address: a reads budget it cannot spend keeps the rate limiter
    on the hot path (its cost is measured) without refusing the load with 429s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_BUILDER_")}
    if redis_url is not None:
        env["INDEX_BUILDER_REDIS_URL"] = redis_url
    env["INDEX_BUILDER_LOCAL_CACHE_ENTRIES"] = str(local_entries)
    env["INDEX_BUILDER_RATE_LIMIT_READS"] = "1000000000/minute"
    return env


def wait_http(client: httpx.Client, url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    """Poll ``url`` until it answers 200; fail if ``proc`` exits or it takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before answering")
        try:
            if client.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def wait_redis(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until redis-server answers PING (at most 10 s)."""
    client = redis.Redis.from_url(url, socket_timeout=0.2)
    deadline = time.monotonic() + 10
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {proc.returncode}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def serve_cmd(port: int) -> list[str]:
    """``index-builder --db API_DB -q serve --port PORT`` (uvicorn, warning log level)."""
    cli = [sys.executable, "-m", "index_builder.cli.main", "--db", str(API_DB), "-q"]
    return [*cli, "serve", "--host", HOST, "--port", str(port)]


# ---------------------------------------------------------------------------- database
def ew100_built(path: Path) -> bool:
    """True when the database at ``path`` exists and has ew100 built."""
    if not path.exists():
        return False
    with DuckDBStore(path) as store:
        return store.build_state(INDEX) is not None


def prepare_database() -> str:
    """Create the default synthetic market database unless it is already there."""
    if ew100_built(API_DB):
        return f"reused {API_DB.relative_to(HERE.parent)}"
    API_DATA.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "index_builder.cli.main", "--db", str(API_DB), "-q"]
    subprocess.run(
        [*cmd, "quickstart"],
        check=True,
        stdout=subprocess.DEVNULL,
        env=server_env(None),
        cwd=API_DATA,
        timeout=1800,
    )
    if not ew100_built(API_DB):
        raise RuntimeError(f"quickstart did not build {INDEX} in {API_DB}")
    seconds = time.perf_counter() - started
    return f"created {API_DB.relative_to(HERE.parent)} (quickstart {seconds:.1f} s)"


# ---------------------------------------------------------------------------- wrk
@dataclass
class Load:
    """What one wrk run measured."""

    step: str
    url: str
    requests: int
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    body_bytes: int
    ratio_to_floor: float | None = None
    redis_hits: int | None = None


def to_ms(value: str, unit: str) -> float:
    """A wrk duration (``521.00us``, ``1.20ms``, ``2.00s``...) in milliseconds."""
    return float(value) * UNITS_MS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/sec, the 50% and 99% latencies (ms), non-2xx and socket error counts."""
    latency = {
        pct: to_ms(value, unit)
        for pct, value, unit in re.findall(
            r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M
        )
    }
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if rps is None or total is None or set(latency) != {"50", "99"}:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = dict(zip(("connect", "read", "write", "timeout"), (0, 0, 0, 0), strict=True))
    if sock is not None:
        errors = {k: int(v) for k, v in zip(errors, sock.groups(), strict=True)}
    return {
        "requests": int(total.group(1)),
        "requests_per_sec": float(rps.group(1)),
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors,
    }


def wrk(url: str, seconds: int, args: argparse.Namespace) -> str:
    """wrk's output for ``seconds`` of load on ``url`` (loopback only)."""
    if urlsplit(url).hostname != HOST:
        raise ValueError(f"refusing to load a non-loopback URL: {url}")
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        f"--timeout={args.wrk_timeout}s",
        "--latency",
        url,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + args.wrk_timeout + 30
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def run_wrk(step: str, url: str, body_bytes: int, args: argparse.Namespace) -> Load:
    """Warm ``url`` up (``args.warmup`` seconds, not recorded), then measure it for
    ``args.duration`` seconds."""
    print(f"  {step} ...", end="", flush=True)
    if args.warmup > 0:
        wrk(url, args.warmup, args)
    output = wrk(url, args.duration, args)
    load = Load(step=step, url=url, body_bytes=body_bytes, **parse_wrk(output))
    print(f" {load.requests_per_sec:,.0f} req/s", flush=True)
    if load.non_2xx or any(load.socket_errors.values()):
        raise RuntimeError(
            f"{step}: {load.non_2xx} non-2xx answers, socket errors {load.socket_errors}:\n{output}"
        )
    return load


def redis_hits(url: str) -> int:
    """Redis's ``keyspace_hits`` counter (successful GETs since it started)."""
    client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        return int(client.info("stats")["keyspace_hits"])
    finally:
        client.close()


def run_cached_wrk(
    step: str, url: str, body_bytes: int, args: argparse.Namespace, redis_url: str
) -> Load:
    """``run_wrk`` on the cached server, failing unless Redis answered every request.

    The API skips Redis for 5 s whenever a call to it fails or takes more than 250 ms
    (``INDEX_BUILDER_REDIS_TIMEOUT_SECONDS``), serving from the database instead; the
    warm-up opens the Redis connections the load needs, and Redis's own hit counter
    shows whether any measured request was served without it.
    """
    print(f"  {step} ...", end="", flush=True)
    if args.warmup > 0:
        wrk(url, args.warmup, args)
    wait_for_hit(url)  # after a tripped breaker in the warm-up, Redis is used again
    before = redis_hits(redis_url)
    output = wrk(url, args.duration, args)
    hits = redis_hits(redis_url) - before
    load = Load(step=step, url=url, body_bytes=body_bytes, **parse_wrk(output))
    load.redis_hits = hits
    print(f" {load.requests_per_sec:,.0f} req/s ({hits:,} Redis hits)", flush=True)
    if load.non_2xx or any(load.socket_errors.values()):
        raise RuntimeError(
            f"{step}: {load.non_2xx} non-2xx answers, socket errors {load.socket_errors}:\n{output}"
        )
    if hits < load.requests:  # more hits than requests: those in flight when wrk stopped
        raise RuntimeError(
            f"{step}: only {hits:,} of {load.requests:,} requests were Redis hits: the API "
            "skipped Redis (a call exceeded its timeout) and served the rest from the "
            "database, so this is not a cached figure"
        )
    return load


def wait_for_hit(url: str, timeout: float = 15.0) -> None:
    """Poll ``url`` until it answers ``X-Cache: HIT`` (Redis in use again)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False) as client:
        while True:
            response = client.get(url, timeout=10.0)
            if response.status_code == 200 and response.headers.get("x-cache") == "HIT":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET {url} is still not a cache HIT after {timeout:.0f} s")
            time.sleep(0.25)


# ---------------------------------------------------------------------------- phases
def fetch(client: httpx.Client, url: str, expect_cache: str | None = None) -> bytes:
    """GET ``url``; it must answer 200 (and ``X-Cache: expect_cache`` when given)."""
    response = client.get(url, timeout=60.0)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:500]}")
    cache = response.headers.get("x-cache")
    if expect_cache is not None and cache != expect_cache:
        raise RuntimeError(f"GET {url}: X-Cache is {cache!r}, expected {expect_cache!r}")
    return response.content


def year_window(client: httpx.Client, base: str) -> tuple[str, str]:
    """The first and last date of the last ``YEAR_DAYS`` trading days of ew100."""
    rows = json.loads(fetch(client, f"{base}/index-performance?index={INDEX}"))["data"]
    year = rows[-YEAR_DAYS:]
    return str(year[0]["date"]), str(year[-1]["date"])


def start_floor(
    stack: ExitStack, tmp: Path, bodies: dict[str, bytes], client: httpx.Client, probe: str
) -> str:
    """The framework floor app serving ``bodies`` (route path -> bytes); its base URL."""
    floor_port = free_port()
    floor_cmd = [sys.executable, str(HERE / "floor_app.py"), "--port", str(floor_port)]
    for route, body in bodies.items():
        file = tmp / f"{route.strip('/')}.json"
        file.write_bytes(body)
        floor_cmd += ["--route", f"{route}={file}"]
    proc = stack.enter_context(running("floor", floor_cmd, tmp))
    base = f"http://{HOST}:{floor_port}"
    try:
        wait_http(client, base + probe, proc, "floor app")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{log_tail(tmp, 'floor')}") from exc
    return base


def against_floor(
    runs: list[tuple[str, str, str, bytes]],
    floor: str,
    args: argparse.Namespace,
    measure: Any,
) -> tuple[list[Load], list[Load]]:
    """Each ``(step, base, path, body)`` measured by ``measure`` and then the floor on the
    same path, ``args.rounds`` times, alternately (the machine is shared: a ratio of
    two runs a few seconds apart is what drifts least). Returns the server's loads
    and the floor's, requests summed over the rounds, the ratio set on the server's."""
    out, floors = [], []
    for step, base, path, body in runs:
        mine: list[Load] = []
        theirs: list[Load] = []
        for _ in range(args.rounds):
            mine.append(measure(step, base + path, len(body), args))
            theirs.append(run_wrk(f"floor for {step}", floor + path, len(body), args))
        load, floor_load = merged(mine), merged(theirs)
        load.ratio_to_floor = load.requests_per_sec / floor_load.requests_per_sec
        floor_load.ratio_to_floor = 1.0
        out.append(load)
        floors.append(floor_load)
    return out, floors


def merged(loads: list[Load]) -> Load:
    """Several runs of one step as one: requests and req/s summed over the runs'
    time, the worst p50 and p99."""
    first = loads[0]
    seconds = sum(x.requests / x.requests_per_sec for x in loads)
    return Load(
        step=first.step,
        url=first.url,
        requests=sum(x.requests for x in loads),
        requests_per_sec=sum(x.requests for x in loads) / seconds,
        p50_ms=max(x.p50_ms for x in loads),
        p99_ms=max(x.p99_ms for x in loads),
        non_2xx=sum(x.non_2xx for x in loads),
        socket_errors={k: sum(x.socket_errors[k] for x in loads) for k in first.socket_errors},
        body_bytes=first.body_bytes,
        redis_hits=None if first.redis_hits is None else sum(x.redis_hits or 0 for x in loads),
    )


def measure_servers(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, str], list[Load]]:
    """The cached (Redis only, then the default tiers) and uncached phases, one API
    server at a time, each cached run alternating with the floor app on the same
    bytes."""
    loads: list[Load] = []
    floors: list[Load] = []
    client = httpx.Client(trust_env=False)  # no proxies: loopback only
    try:
        with ExitStack() as stack:
            # ---- phase 1: Redis and the cached server
            redis_port, cached_port = free_port(), free_port()
            redis_url = f"redis://{HOST}:{redis_port}/0"
            redis_bin = shutil.which("redis-server") or "redis-server"
            redis_cmd = [redis_bin, "--port", str(redis_port), "--bind", HOST, "--save", ""]
            redis_cmd += ["--appendonly", "no", "--dir", str(tmp)]
            redis_proc = stack.enter_context(running("redis", redis_cmd, tmp))
            wait_redis(redis_url, redis_proc)
            env = server_env(redis_url)
            with running("cached", serve_cmd(cached_port), tmp, env) as proc:
                base = f"http://{HOST}:{cached_port}"
                try:
                    wait_http(client, f"{base}/indices", proc, "cached server")
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}\n{log_tail(tmp, 'cached')}") from exc
                start, end = year_window(client, base)
                query = urlencode({"index": INDEX, "start_date": start, "end_date": end})
                perf_path = f"/index-performance?{query}"
                comp_path = f"/index-composition?index={INDEX}&date={COMPOSITION_DATE}"
                fetch(client, base + perf_path)  # MISS or HIT: either way it is stored now
                perf_body = fetch(client, base + perf_path, expect_cache="HIT")
                fetch(client, base + comp_path)
                comp_body = fetch(client, base + comp_path, expect_cache="HIT")
                # the framework floor, the same bytes from memory, alive while cached
                # servers are measured so that each of their runs has a floor run beside it
                floor = start_floor(
                    stack,
                    tmp,
                    {"/index-performance": perf_body, "/index-composition": comp_body},
                    client,
                    perf_path,
                )
                if fetch(client, floor + perf_path) != perf_body:
                    raise RuntimeError("the floor app does not return the cached bytes")

                def cached_run(step: str, url: str, size: int, a: argparse.Namespace) -> Load:
                    return run_cached_wrk(step, url, size, a, redis_url)

                mine, theirs = against_floor(
                    [
                        ("cached GET /index-performance", base, perf_path, perf_body),
                        ("cached GET /index-composition", base, comp_path, comp_body),
                    ],
                    floor,
                    args,
                    cached_run,
                )
                loads += mine
                fetch(client, base + perf_path, expect_cache="HIT")  # still served from Redis

            # ---- phase 1b: the default configuration, in-process tier in front of Redis
            local_port = free_port()
            env = server_env(redis_url, local_entries=512)
            with running("local", serve_cmd(local_port), tmp, env) as proc:
                base = f"http://{HOST}:{local_port}"
                try:
                    wait_http(client, f"{base}/indices", proc, "local-tier server")
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}\n{log_tail(tmp, 'local')}") from exc
                runs = []
                for step, path, body in (
                    ("cached+local GET /index-performance", perf_path, perf_body),
                    ("cached+local GET /index-composition", comp_path, comp_body),
                ):
                    fetch(client, base + path)
                    if fetch(client, base + path, expect_cache="HIT") != body:
                        raise RuntimeError(f"{step}: body differs from the Redis-only server's")
                    runs.append((step, base, path, body))
                mine, theirs = against_floor(runs, floor, args, run_wrk)
                loads += mine
                floors += theirs  # the floor figures shown: those beside the default tiers
                for _, _, path, _ in runs:
                    fetch(client, base + path, expect_cache="HIT")

        # ---- phase 2: the server without Redis
        uncached_port = free_port()
        with running("uncached", serve_cmd(uncached_port), tmp, server_env(None)) as proc:
            base = f"http://{HOST}:{uncached_port}"
            try:
                wait_http(client, f"{base}/indices", proc, "uncached server")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{log_tail(tmp, 'uncached')}") from exc
            for path, cached_body in ((perf_path, perf_body), (comp_path, comp_body)):
                body = fetch(client, base + path, expect_cache="MISS")  # also warms DuckDB
                if body != cached_body:
                    print(f"  note: uncached body of {path} differs from the cached one")
                fetch(client, base + path, expect_cache="MISS")
            for step, path, body in (
                ("uncached GET /index-performance", perf_path, perf_body),
                ("uncached GET /index-composition", comp_path, comp_body),
            ):
                load = run_wrk(step, base + path, len(body), args)
                floor_load = next(f for f in floors if path.split("?")[0] in f.url)
                load.ratio_to_floor = load.requests_per_sec / floor_load.requests_per_sec
                loads.append(load)
    finally:
        client.close()

    for load in floors:
        load.step = "floor (" + load.step.removeprefix("floor for cached+local GET ") + " body)"
    window = {"index": INDEX, "start_date": start, "end_date": end, "date": COMPOSITION_DATE}
    return window, [*loads, *floors]


# ---------------------------------------------------------------------------- export
def export_child(path: Path) -> None:
    """In this (fresh) process: export ew100 over the whole database to xlsx; print JSON."""
    with DuckDBStore(path) as store, tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        if store.build_state(INDEX) is None:
            json.dump({"skipped": f"{INDEX} is not built in {path}"}, sys.stdout)
            return
        reader = IndexReader(store, store.calendar)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        exported = export_index(reader, INDEX, None, None, "xlsx", Path(tmp))
        seconds = time.perf_counter() - started
        size = exported.path.stat().st_size
    out = {
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_export_mib": rss_before,
        "file_bytes": size,
        "filename": exported.filename,
    }
    json.dump(out, sys.stdout)


def measure_export() -> dict[str, Any]:
    """The xlsx export of ew100 over the 6000 x 2520 database, in a fresh process."""
    if not EXPORT_DB.exists():
        note = (
            f"skipped: {EXPORT_DB.relative_to(HERE.parent)} does not exist; run `make bench` "
            "(bench/run.py --sizes 3000x252,6000x2520) first"
        )
        return {"skipped": note}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--export-child", str(EXPORT_DB)]
    print("  export ew100 xlsx (6000 x 2520) ...", end="", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the export process failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f" {result.get('seconds', 0):.1f} s", flush=True)
    return result


# ---------------------------------------------------------------------------- report
def print_table(loads: list[Load], export: dict[str, Any]) -> None:
    """The results as a fixed-width table."""
    header = (
        f"  {'step':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'body bytes':>11} {'x floor':>8}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for load in loads:
        ratio = f"{load.ratio_to_floor:.3f}" if load.ratio_to_floor is not None else ""
        print(
            f"  {load.step:<34} {load.requests_per_sec:>9,.0f} {load.p50_ms:>8.2f} "
            f"{load.p99_ms:>8.2f} {load.body_bytes:>11,} {ratio:>8}"
        )
    print("  x floor: req/s over the floor app's req/s for a body of the same bytes")
    if "skipped" in export:
        print(f"  export ew100 xlsx: {export['skipped']}")
    else:
        print(
            f"  export ew100 xlsx, 6000 x 2520 (fresh process): {export['seconds']:.2f} s, "
            f"peak RSS {export['peak_rss_mib']:,.0f} MiB "
            f"({export['rss_before_export_mib']:,.0f} MiB before the export), "
            f"file {export['file_bytes'] / 2**20:,.1f} MiB"
        )


def main() -> None:
    """Parse the options, run every measurement, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per URL")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--wrk-timeout", type=int, default=10, help="wrk request timeout, seconds")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating runs of each cached server and the floor"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of unrecorded load before each run"
    )
    parser.add_argument("--export-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child is not None:
        export_child(args.export_child)
        return
    if args.rounds < 1:
        parser.error("need rounds >= 1")
    if args.connections < args.threads or min(args.duration, args.threads) < 1 or args.warmup < 0:
        parser.error("need duration >= 1, threads >= 1, connections >= threads, warmup >= 0")
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (make system-deps installs it)")
    # a terminated run still stops its servers (the finally blocks run on SystemExit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(f"API under load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s")
    print(f"  database: {prepare_database()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        window, loads = measure_servers(args, Path(tmp))
    export = measure_export()
    print(
        f"\n{INDEX} performance {window['start_date']}..{window['end_date']} "
        f"({YEAR_DAYS} trading days), composition on {window['date']}"
    )
    print_table(loads, export)

    RESULTS.parent.mkdir(exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    load_settings = {
        "duration_s": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "wrk_timeout_s": args.wrk_timeout,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
    }
    payload = {
        "machine": machine,
        "load": load_settings,
        "window": window,
        "rows": [asdict(load) for load in loads],
        "export": export,
    }
    RESULTS.write_text(json.dumps(payload, indent=2))
    print(f"  results: {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
