"""Uncached reads under concurrent load: random windows and random dates on 6000 x 2520.

    python bench/reads.py [--duration 20] [--rounds 2] [--connections 8] \
        [--baseline-src PATH]

One ``index-builder serve`` process without Redis (every answer computed: no response
cache) over a copy of the 6000 x 2520 bench database with ``ew100`` built
(``bench/data/incremental-6000x2520-after/bench.duckdb``, as ``bench/incremental.py``
leaves it; the copy is opened, the original is never written). wrk
(``bench/lua/paths.lua``) keeps ``--connections`` clients busy, each request a path
drawn at random from a list made once per run (seeded):

* performance: ``GET /index-performance`` of ew100 from a random trading day over a
  random length of 1 to 252 trading days;
* composition: ``GET /index-composition`` of ew100 on a random calendar day of the
  built range (a weekend resolves to the previous trading day).

With ``--baseline-src`` (a ``src`` folder of another version of the package, e.g. a
``git worktree`` of an older commit), a second server runs that code over its own
copy, and each round measures the baseline then the current tree, alternately, in
the same minute (the machine is shared: ratios, not absolute figures). The first
round of each server is **cold** (nothing read yet: the reads' memory of levels and
compositions fills as they go); later rounds are **warm**. Results:
``bench/results/reads.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api  # bench/api.py: processes

DATA = api.HERE / "data" / "incremental-6000x2520-after" / "bench.duckdb"
LUA = api.HERE / "lua" / "paths.lua"
RESULTS = api.HERE / "results" / "reads.json"
INDEX = "ew100"
MAX_WINDOW = 252


def run_wrk(
    base: str, paths: Path, seconds: int, connections: int, threads: int, *extra: str
) -> dict[str, Any]:
    """One wrk run of the paths in ``paths``; the script's JSON summary."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout=30s"]
    cmd += ["-s", str(LUA), base, "--", str(paths), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90)
    lines = [x for x in done.stdout.splitlines() if x.startswith("wrk-json ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("wrk-json "))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def write_paths(folder: Path, days: list[dt.date], seed: int) -> dict[str, Path]:
    """The request lists: random performance windows and random composition dates."""
    rng = random.Random(seed)
    perf, comp = [], []
    first, last = days[0], days[-1]
    for _ in range(20000):
        i = rng.randrange(len(days))
        j = min(len(days) - 1, i + rng.randrange(MAX_WINDOW))
        perf.append(f"/index-performance?index={INDEX}&start_date={days[i]}&end_date={days[j]}")
        day = first + dt.timedelta(days=rng.randrange((last - first).days + 1))
        comp.append(f"/index-composition?index={INDEX}&date={day}")
    files = {"performance": folder / "performance.txt", "composition": folder / "composition.txt"}
    files["performance"].write_text("\n".join(perf) + "\n")
    files["composition"].write_text("\n".join(comp) + "\n")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (the first is cold)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--baseline-src", type=Path, help="a src folder to compare with")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is missing: run bench/incremental.py (make bench) first")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (make system-deps installs it)")
    sources = {"current": api.HERE.parent / "src"}
    if args.baseline_src is not None:
        sources = {"baseline": args.baseline_src.resolve(), **sources}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        client = stack.enter_context(httpx.Client(trust_env=False))
        servers: dict[str, str] = {}
        for name, src in sources.items():
            database = tmp / f"{name}.duckdb"
            shutil.copy(DATA, database)
            port = api.free_port()
            env = api.server_env(None)
            env["PYTHONPATH"] = str(src)
            cmd = [sys.executable, "-m", "index_builder.cli.main", "--db", str(database), "-q"]
            cmd += ["serve", "--host", api.HOST, "--port", str(port)]
            proc = stack.enter_context(api.running(name, cmd, tmp, env))
            base = f"http://{api.HOST}:{port}"
            try:
                api.wait_http(client, f"{base}/health/live", proc, f"{name} server")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{api.log_tail(tmp, name)}") from exc
            servers[name] = base
        first = next(iter(servers.values()))
        data = client.get(f"{first}/index-performance", params={"index": INDEX}, timeout=120)
        days = [dt.date.fromisoformat(r["date"]) for r in data.json()["data"]]
        files = write_paths(tmp, days, args.seed)
        load = os.getloadavg()
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, load {load[0]:.1f}")
        for round_number in range(args.rounds):
            for kind, paths in files.items():
                for name, base in servers.items():
                    result = run_wrk(
                        base,
                        paths,
                        args.duration,
                        args.connections,
                        args.threads,
                        f"seed={args.seed + round_number}",
                    )
                    row = {
                        "round": round_number + 1,
                        "phase": "cold" if round_number == 0 else "warm",
                        "kind": kind,
                        "server": name,
                        "load_1m": os.getloadavg()[0],
                        **result,
                    }
                    rows.append(row)
                    ok = row["statuses"].get("200", 0)
                    print(
                        f"  round {row['round']} {row['phase']:4s} {kind:11s} {name:8s} "
                        f"{row['rps']:7.1f} req/s  p50 {row['p50_ms']:7.1f}  "
                        f"p99 {row['p99_ms']:7.1f}  max {row['max_ms']:7.1f} ms  "
                        f"200: {ok}/{row['requests']}  load {row['load_1m']:.1f}",
                        flush=True,
                    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"settings": vars(args) | {"baseline_src": str(args.baseline_src)}, "rows": rows},
            indent=2,
            default=str,
        )
    )
    print(f"results: {RESULTS.relative_to(api.HERE.parent)}")


if __name__ == "__main__":
    main()
