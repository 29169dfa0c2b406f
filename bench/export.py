"""Export of a built index window: wall time and peak memory of one fresh process per run.

    python bench/export.py --source bench/data/incremental-6000x2520-after/base.duckdb \
        --index ew100 --format xlsx --via service,api-job --repeats 3 --label after

The source database is copied once to a scratch folder (it is never opened in
place) and every run is a fresh interpreter (``python bench/export.py run ...``)
over that copy, so its wall time and peak RSS (``ru_maxrss``) are its own:

* ``service``: ``export_index(reader, index, None, None, format, folder)``, the
  whole built range (what POST /export-data runs);
* ``api-sync``: the app in process (TestClient), POST /export-data, the file in the
  answer;
* ``api-job``: POST /export-data with ``"async": true``, poll GET /jobs/{id}, then
  GET its ``download_url`` (code without export jobs cannot run it).

``seconds`` is the export (the call, or POST to the last byte downloaded);
``process_seconds`` adds the interpreter's start, the imports and opening the
database. ``--duckdb-memory-limit`` bounds DuckDB's cache of the database blocks
read (without it the cache may take up to 80% of RAM, and an export reads the
whole price table once). Run it from another tree with ``PYTHONPATH=<tree>/src`` to measure that
code ("before"). Results also go to ``bench/results/export-<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
HERE = Path(__file__).resolve().parent
VIAS = ("service", "api-sync", "api-job")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- one run (own process)
def _run_service(
    database: Path, index: str, fmt: str, folder: Path, limit: str | None
) -> dict[str, Any]:
    from index_builder.export import export_index
    from index_builder.services.queries import IndexReader
    from index_builder.storage.duckdb.store import DuckDBStore

    with DuckDBStore(database, memory_limit=limit) as store:
        reader = IndexReader(store, store.calendar)
        started = time.perf_counter()
        exported = export_index(reader, index, None, None, fmt, folder)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "bytes": exported.path.stat().st_size}


def _run_api(
    database: Path, index: str, fmt: str, folder: Path, job: bool, limit: str | None
) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from index_builder.api.app import create_app
    from index_builder.settings import Settings

    settings = Settings(
        database=database,
        redis_url=None,
        rate_limit_enabled=False,
        duckdb_memory_limit=limit,
        export_dir=folder,  # these two are ignored by code without export jobs
        async_export_days=1_000_000,  # api-sync: the file in the answer, whatever the window
    )
    body: dict[str, Any] = {"index": index, "format": fmt}
    if job:
        body["async"] = True
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        response = client.post("/export-data", json=body)
        polls = 0
        if job:
            assert response.status_code == 202, response.text
            status_url = response.json()["status_url"]
            while True:
                state = client.get(status_url).json()
                polls += 1
                if state["status"] not in ("queued", "running"):
                    break
                time.sleep(0.1)
            assert state["status"] == "succeeded", state
            response = client.get(state["download_url"])
        assert response.status_code == 200, response.text[:500]
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "bytes": len(response.content), "polls": polls}


def run_once(args: argparse.Namespace) -> None:
    """Measure one export in this process; print one JSON line."""
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(tmp)
        if args.via == "service":
            result = _run_service(Path(args.database), args.index, args.format, folder, args.limit)
        else:
            job = args.via == "api-job"
            result = _run_api(Path(args.database), args.index, args.format, folder, job, args.limit)
    result |= {
        "via": args.via,
        "peak_rss_mib": round(_peak_mib(), 1),
        "process_seconds": round(time.perf_counter() - STARTED, 3),
        "seconds": round(result["seconds"], 3),
    }
    print(json.dumps(result))


# ---------------------------------------------------------------- driver
def _child(database: Path, via: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "run", "--database", str(database)]
    cmd += ["--via", via, "--index", args.index, "--format", args.format]
    if args.duckdb_memory_limit:
        cmd += ["--limit", args.duckdb_memory_limit]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{via} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def drive(args: argparse.Namespace) -> None:
    """Copy the source database, run every requested path ``repeats`` times, report."""
    source = Path(args.source)
    vias = [v for v in args.via.split(",") if v]
    unknown = set(vias) - set(VIAS)
    if unknown:
        raise SystemExit(f"unknown --via {sorted(unknown)} (known: {', '.join(VIAS)})")
    scratch = Path(tempfile.mkdtemp(prefix="bench-export-db-"))
    try:
        database = scratch / "export.duckdb"
        shutil.copyfile(source, database)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in vias}
        for _ in range(args.repeats):  # alternate the paths: drift hits each alike
            for via in vias:
                result = _child(database, via, args)
                runs[via].append(result)
                print(json.dumps(result), file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "label": args.label,
        "index": args.index,
        "format": args.format,
        "duckdb_memory_limit": args.duckdb_memory_limit,
        "source": str(source),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "runs": runs,
    }
    limit = args.duckdb_memory_limit or "DuckDB's default"
    print(f"{args.index} {args.format} export ({args.label}, DuckDB memory limit: {limit}),")
    print(f"median of {args.repeats}:")
    for via, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        rss = statistics.median(r["peak_rss_mib"] for r in results)
        every = ", ".join(f"{r['seconds']:.2f} s / {r['peak_rss_mib']:.0f} MiB" for r in results)
        print(f"  {via:9} {seconds:6.2f} s  {rss:7.0f} MiB peak RSS   ({every})")
    out = HERE / "results" / f"export-{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        parser = argparse.ArgumentParser(prog="export.py run")
        parser.add_argument("--database", required=True)
        parser.add_argument("--via", choices=VIAS, required=True)
        parser.add_argument("--index", default="ew100")
        parser.add_argument("--format", default="xlsx")
        parser.add_argument("--limit", default=None)
        run_once(parser.parse_args(sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="a built database (copied, not opened)")
    parser.add_argument("--index", default="ew100")
    parser.add_argument("--format", default="xlsx", choices=("xlsx", "csv", "parquet"))
    parser.add_argument("--via", default="service", help=f"comma-separated: {', '.join(VIAS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="now")
    parser.add_argument(
        "--duckdb-memory-limit",
        default=None,
        help="DuckDB's memory limit in the runs, e.g. 256MB (default: DuckDB's own, 80%% of "
        "RAM: its cache of the blocks read grows with the window)",
    )
    drive(parser.parse_args())


if __name__ == "__main__":
    main()
