"""Storage backends side by side: ingestion, builds and uncached reads (issue 15).

    .venv/bin/python bench/storage.py --data bench/data/incremental-6000x2520-after \\
        --backends duckdb,iceberg --repeats 2

For each repeat and each backend, every step in a fresh process (``bench/steps.py``),
in a fresh work folder (``bench/data/storage-BACKEND``: the DuckDB file or the Iceberg
warehouse with its SQLite catalog):

1. ``copy``: the baseline, a plain DuckDB copy of ``prices.parquet`` into a sorted
   table of a fresh database file (``CREATE TABLE t AS SELECT * FROM read_parquet(...)
   ORDER BY symbol, date``), measured right before the ingestion it is compared with;
2. ``ingest``: the whole ``prices.parquet`` into the empty store (validation,
   quarantine, versions, merge);
3. ``ingest-next``: one more session (``next_day.parquet``);
4. ``build``: a full build of ``ew100``;
5. ``reads``: uncached API read latency, p50/p99 of ``--samples`` random one-year
   windows of GET /index-performance and as many random dates of GET
   /index-composition (in-process TestClient, no Redis: no response cache).

Wall time is the step's own (the measured call); peak memory is the child process's
``ru_maxrss`` (``os.wait4``). The machine's load average is recorded with every step.
Results go to ``bench/results/storage[-LABEL].json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 3.0
TARGET_RSS_MIB = 1024.0


def step(workdir: Path, name: str, *args: str) -> dict[str, Any]:
    """Run one ``bench/steps.py`` step in a fresh interpreter: its JSON report, with
    the child's peak RSS (``ru_maxrss`` from ``wait4``) and the load before it."""
    load = os.getloadavg()
    cmd = [sys.executable, str(HERE / "steps.py"), name, "--workdir", str(workdir), *args]
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"step {name} failed ({proc.returncode}):\n{errors.read()[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    result["load_before"] = [round(x, 2) for x in load]
    return result


def run_backend(backend: str, data: Path, samples: int, index: str) -> dict[str, Any]:
    """Every step once for one backend, from an empty store."""
    workdir = HERE / "data" / f"storage-{backend}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    common = ["--data", str(data)]
    storage = ["--storage", backend]
    out: dict[str, Any] = {"backend": backend}
    out["copy"] = step(workdir, "copy", *common)
    out["ingest"] = step(workdir, "ingest", *common, *storage)
    out["ingest"]["ratio_to_copy"] = out["ingest"]["seconds"] / out["copy"]["seconds"]
    out["ingest_next"] = step(workdir, "ingest-next", *common, *storage)
    out["build"] = step(workdir, "build", "--index", index, "--full", *storage)
    out["reads"] = step(workdir, "reads", "--index", index, "--samples", str(samples), *storage)
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def _show(run: dict[str, Any]) -> None:
    ing, nxt, bld, rd = run["ingest"], run["ingest_next"], run["build"], run["reads"]
    print(
        f"  {run['backend']:<8} copy {run['copy']['seconds']:6.2f} s"
        f" | ingest {ing['seconds']:6.2f} s ({ing['ratio_to_copy']:.2f}x)"
        f" {ing['peak_rss_mib']:6.0f} MiB | next {nxt['seconds']:5.2f} s"
        f" | build {bld['seconds']:5.2f} s {bld['peak_rss_mib']:5.0f} MiB"
        f" | perf p50/p99 {rd['performance_ms']['p50']:.1f}/{rd['performance_ms']['p99']:.1f} ms"
        f" | comp p50/p99 {rd['composition_ms']['p50']:.1f}/{rd['composition_ms']['p99']:.1f} ms"
        f" | load {ing['load_before'][0]:.1f}",
        flush=True,
    )


def summarize(runs: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    """Medians over the repeats of one backend, and whether the target is met."""
    mine = [r for r in runs if r["backend"] == backend]

    def median(path: tuple[str, ...]) -> float:
        values = []
        for r in mine:
            value: Any = r
            for key in path:
                value = value[key]
            values.append(float(value))
        return statistics.median(values)

    ratio = median(("ingest", "ratio_to_copy"))
    rss = max(r["ingest"]["peak_rss_mib"] for r in mine)
    return {
        "copy_seconds": median(("copy", "seconds")),
        "ingest_seconds": median(("ingest", "seconds")),
        "ingest_ratio_to_copy": ratio,
        "ingest_peak_rss_mib_max": rss,
        "ingest_next_seconds": median(("ingest_next", "seconds")),
        "build_seconds": median(("build", "seconds")),
        "build_peak_rss_mib": median(("build", "peak_rss_mib")),
        "performance_p50_ms": median(("reads", "performance_ms", "p50")),
        "performance_p99_ms": median(("reads", "performance_ms", "p99")),
        "composition_p50_ms": median(("reads", "composition_ms", "p50")),
        "composition_p99_ms": median(("reads", "composition_ms", "p99")),
        "target_met": ratio <= TARGET_RATIO and rss < TARGET_RSS_MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=HERE / "data" / "incremental-6000x2520-after",
        help="folder with prices.parquet, securities.parquet and next_day.parquet",
    )
    parser.add_argument("--backends", default="duckdb,iceberg")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the backends")
    parser.add_argument("--samples", type=int, default=50, help="reads per endpoint")
    parser.add_argument("--index", default="ew100")
    parser.add_argument("--label", default="", help="results file suffix")
    args = parser.parse_args()
    data = args.data.resolve()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        print(f"round {repeat + 1} of {args.repeats}", flush=True)
        for backend in backends:
            run = run_backend(backend, data, args.samples, args.index)
            run["repeat"] = repeat
            runs.append(run)
            _show(run)
    summary = {b: summarize(runs, b) for b in backends}
    for backend, figures in summary.items():
        print(
            f"{backend}: "
            + json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
            )
        )
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    name = f"storage-{args.label}.json" if args.label else "storage.json"
    (out_dir / name).write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                },
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "data": str(data),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
