"""Benchmark ingestion and builds on synthetic markets; prints a table.

    python bench/run.py --sizes 3000x252,6000x2520

Each step runs in its own process (``bench/steps.py``) so that its wall time and
peak RSS are its own. Results are also written to ``bench/results/SIZE.json``.
Figures are whatever this machine measures; ``docs/benchmarks.md`` records a run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def step(workdir: Path, *args: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter and return its JSON report."""
    cmd = [sys.executable, str(HERE / "steps.py"), *args, "--workdir", str(workdir)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_size(symbols: int, days: int, repeats: int) -> list[dict[str, Any]]:
    """All measurements for one market size."""
    workdir = HERE / "data" / f"{symbols}x{days}"
    shutil.rmtree(workdir, ignore_errors=True)
    size = ["--symbols", str(symbols), "--days", str(days)]
    rows: list[dict[str, Any]] = []

    def record(name: str, result: dict[str, Any], note: str = "") -> None:
        rows.append(
            {
                "step": name,
                "seconds": result["seconds"],
                "peak_rss_mib": result["peak_rss_mib"],
                "note": note,
            }
        )
        print(
            f"  {name:<44} {result['seconds']:8.3f} s {result['peak_rss_mib']:8.0f} MiB {note}",
            flush=True,
        )

    gen = step(workdir, "generate", *size)
    record("generate synthetic Parquet", gen, f"{gen['rows']:,} rows")
    ing = step(workdir, "ingest")
    record("ingest Parquet -> DuckDB", ing, f"{ing['rows']:,} rows accepted")
    cold = [step(workdir, "build", "--index", "ew100", "--full") for _ in range(repeats)]
    median = dict(cold[0], seconds=statistics.median(c["seconds"] for c in cold))
    record(
        "build ew100 daily, fresh process (median)",
        median,
        "runs: " + ", ".join(f"{c['seconds']:.2f}" for c in cold),
    )
    warm = step(workdir, "build", "--index", "ew100", "--full", "--repeat", str(repeats + 1))
    warm_median = statistics.median(warm["warm_seconds"])
    record(
        "build ew100 daily, warm process (median)",
        dict(warm, seconds=warm_median),
        "runs: " + ", ".join(f"{s:.2f}" for s in warm["warm_seconds"]),
    )
    spells, snapshots = warm["spell_rows"], warm["snapshot_rows"]
    for variant in (
        "ew100-monthly",
        "mcap100-capped",
        "ew100-buffer",
        "mcap100-ucits-daily",
        "ew100-lag5",
        "ew100-company",
        "mcap100-all-rules",
    ):
        res = step(workdir, "build", "--index", variant, "--full", "--repeat", "2")
        record(f"build {variant} (fresh / warm)", res, f"warm {res['warm_seconds'][0]:.2f} s")
    nxt = step(workdir, "ingest-next")
    record("ingest one more session", nxt, f"{nxt['rows']:,} rows")
    inc = step(workdir, "build", "--index", "ew100")
    record(
        "build ew100 incremental (+1 session)",
        inc,
        f"{inc['mode']}, {inc['days_computed']} day(s) written",
    )
    rows.append(
        {
            "step": "ew100 composition rows",
            "spells": spells,
            "snapshots": snapshots,
            "ratio": snapshots / max(spells, 1),
        }
    )
    print(
        f"  ew100 composition storage: {spells:,} spell rows vs {snapshots:,} daily snapshot "
        f"rows ({snapshots / max(spells, 1):.0f}x fewer)"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="3000x252,6000x2520", help="comma-separated SYMBOLSxDAYS"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of the main build")
    args = parser.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    for size in args.sizes.split(","):
        symbols, days = (int(x) for x in size.lower().split("x"))
        print(f"{symbols} symbols x {days} days", flush=True)
        rows = run_size(symbols, days, args.repeats)
        (out_dir / f"{symbols}x{days}.json").write_text(
            json.dumps({"machine": machine, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
