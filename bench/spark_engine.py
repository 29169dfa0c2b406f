"""The Spark engine against the NumPy engine (issue 17, docs/benchmarks.md "Spark engine").

Usage::

    python bench/spark_engine.py --data bench/data/incremental-6000x2520-after \\
        --workdir /tmp/spark-bench --repeats 1

The store ``DATA/bench.duckdb`` is copied once into WORKDIR (never modified) and 50
custom definitions are added to the copy. Each measurement then runs in a fresh
process (``--step``) on its own copy of that store: a full build of ``ew100`` alone, or
of the 50 custom indices in one build (``build --all``), by either engine. It reports
the wall time of the build call (the Spark session's start separately), the peak
memory of the whole process tree (the Python driver, Spark's JVM and its Python
workers, sampled every 50 ms) and, for Spark, the job's stages. Every Spark build's
levels are compared with the NumPy build's (relative difference, all variants).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from index_builder.calendar import get_calendar
from index_builder.engine.definitions import Buffer, GroupCap, IndexDefinition, Universe
from index_builder.engine.spark.session import SparkOptions
from index_builder.providers.schema import COMMON_STOCK, GICS_SECTORS
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.storage.duckdb.store import DuckDBStore

WEIGHTINGS = ("equal", "market_cap", "capped_market_cap", "sqrt_market_cap")
SCHEDULES = ("daily", "weekly", "monthly", "quarterly")


def custom_definitions(count: int = 50) -> list[IndexDefinition]:
    """``count`` varied definitions: sizes 25/50/100, every weighting and schedule, sector
    and whole-market universes, buffers, group caps, lags and company ranking."""
    out = []
    sectors: list[str | None] = [None, *GICS_SECTORS]
    for i in range(count):
        top_n = (25, 50, 100)[i % 3]
        weighting = WEIGHTINGS[i % 4]
        sector = sectors[i % len(sectors)]
        universe = Universe(
            types=(COMMON_STOCK,),
            sectors=None if sector is None else (sector,),
            min_price=5.0 if i % 5 == 0 else None,
        )
        capped = weighting == "capped_market_cap"
        out.append(
            IndexDefinition(
                id=f"bench-{i:02d}",
                name=f"bench {i}",
                top_n=top_n,
                weighting=weighting,  # type: ignore[arg-type]
                cap=0.10 if capped else None,
                group_cap=GroupCap(threshold=0.05, limit=0.40) if capped and i % 8 == 2 else None,
                rebalance=SCHEDULES[(i // 4) % 4],  # type: ignore[arg-type]
                universe=universe,
                buffer=Buffer(entry_rank=top_n - 5, exit_rank=top_n + 10) if i % 6 == 1 else None,
                effective_lag=3 if i % 7 == 3 else 0,
                rank_by="company" if i % 9 == 4 else "security",
            )
        )
    return out


class PeakTree:
    """The peak RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakTree:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(self.every)


def step(db: Path, engine: str, which: str, master: str, memory: str) -> dict[str, Any]:
    """One full build in this process: wall time, peak tree memory, the Spark report."""
    with PeakTree() as peak:
        started = time.perf_counter()
        with DuckDBStore(db, calendar=get_calendar(), threads=2) as store:
            ids = ["ew100"] if which == "ew100" else [d.id for d in custom_definitions()]
            builder = IndexBuilder(
                store,
                store.calendar,
                engine=engine,  # type: ignore[arg-type]
                spark=SparkOptions(master=master, driver_memory=memory),
            )
            results = builder.build(ids, full=True)
            wall = time.perf_counter() - started
            failed = [r.reason for r in results if r.failed]
            levels = {
                i: store.read_levels(i, r.base_date, r.end_date).to_pydict()  # type: ignore[arg-type]
                for i, r in zip(ids, results, strict=True)
            }
    job = builder.last_spark_job
    out: dict[str, Any] = {
        "engine": engine,
        "set": which,
        "indices": len(ids),
        "wall_s": round(wall, 2),
        "peak_mib": round(peak.peak / 2**20),
        "failed": failed,
    }
    if job is not None:
        out["spark"] = {
            "stages": job.stages,
            "bars": job.bars,
            "ranked": job.ranked,
            "panel_rows": job.panel_rows,
            "scans": job.scans,
            "later_scans": job.later_scans,
        }
        out["build_without_session_s"] = round(wall - job.stages.get("session", 0.0), 2)
    np.save(db.with_suffix(".levels.npy"), np.array([levels], dtype=object), allow_pickle=True)
    return out


def _worst(a: Path, b: Path) -> float:
    """The largest relative difference between two builds' levels (every variant)."""
    left = np.load(a, allow_pickle=True)[0]
    right = np.load(b, allow_pickle=True)[0]
    worst = 0.0
    for index_id, columns in left.items():
        for column in ("level", "level_price", "level_total", "level_net_total"):
            x = np.array(columns[column], dtype=float)
            y = np.array(right[index_id][column], dtype=float)
            assert x.shape == y.shape, index_id
            worst = max(worst, float(np.max(np.abs(x / y - 1.0))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/data/incremental-6000x2520-after"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/spark-bench"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--sets", default="ew100,custom50")
    parser.add_argument("--step", nargs=3, metavar=("DB", "ENGINE", "SET"))
    args = parser.parse_args()
    if args.step:
        db, engine, which = args.step
        print(json.dumps(step(Path(db), engine, which, args.master, args.driver_memory)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = args.workdir / "base.duckdb"
    if not base.exists():
        shutil.copy(args.data / "bench.duckdb", base)  # the data folder is never written
        with DuckDBStore(base, calendar=get_calendar(), threads=2) as store:
            for definition in custom_definitions():
                add_definition(store, definition, replace=True)
    for which in args.sets.split(","):
        for repeat in range(args.repeats):
            outputs = {}
            for engine in ("numpy", "spark"):
                db = args.workdir / f"{which}-{engine}-{repeat}.duckdb"
                shutil.copy(base, db)
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--master",
                        args.master,
                        "--driver-memory",
                        args.driver_memory,
                        "--step",
                        str(db),
                        engine,
                        which,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                record = json.loads(done.stdout.strip().splitlines()[-1])
                outputs[engine] = db.with_suffix(".levels.npy")
                print(json.dumps(record), flush=True)
            worst = _worst(outputs["numpy"], outputs["spark"])
            print(json.dumps({"set": which, "max_relative_difference": worst}), flush=True)


if __name__ == "__main__":
    main()
