"""Incremental daily update: one new session on top of a built 10-year market.

    python bench/incremental.py --symbols 6000 --days 2520 --repeats 3

Set-up (once per size, kept in ``bench/data/incremental-SxD``): the synthetic market
of ``bench/steps.py`` (``days`` sessions ingested, one more session kept apart), and
a full build of every benchmarked index. Each repeat then starts from a copy of that
database, ingests the new session (one process) and builds each index
incrementally, each in a fresh process, so every figure is one process's wall time.

Besides the time, each build reports how many rows of days that were already
published it rewrote (``rewritten``) and how many of those changed value
(``changed``, compared bit for bit): published history must never change.
Results go to ``bench/results/incremental-SxD.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INDICES = ("ew100", "ew100-monthly", "ew100-lag5", "mcap100-capped", "mcap50-ucits")


def _run(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _steps(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "steps.py"), *args]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- steps (own processes)
def _store(path: Path) -> Any:
    from index_builder.services.catalog import add_definition, ensure_builtins
    from index_builder.storage.duckdb.store import DuckDBStore

    sys.path.insert(0, str(HERE))
    from steps import VARIANTS

    store = DuckDBStore(path).open()
    ensure_builtins(store)
    for index_id in INDICES:
        definition = VARIANTS.get(index_id)
        if definition is not None:
            add_definition(store, definition, replace=True)
    return store


def step_build_all(database: Path, full: bool) -> dict[str, Any]:
    """Build every benchmarked index (full: the set-up)."""
    from index_builder.services.builds import IndexBuilder

    store = _store(database)
    started = time.perf_counter()
    IndexBuilder(store, store.calendar).build(list(INDICES), full=full)
    seconds = time.perf_counter() - started
    store.close()
    return {"seconds": seconds}


def _published(store: Any, index_id: str) -> list[tuple[Any, ...]]:
    sql = (
        "SELECT date, level, daily_return, turnover, level_price, level_total, level_net_total "
        "FROM index_levels WHERE index_id = ? ORDER BY date"
    )
    rows: list[tuple[Any, ...]] = store.cursor().execute(sql, [index_id]).fetchall()
    return rows


def step_build_one(database: Path, index_id: str) -> dict[str, Any]:
    """One incremental build; compares the days published before it bit for bit."""
    from index_builder.services.builds import IndexBuilder

    store = _store(database)
    before = {row[0]: row for row in _published(store, index_id)}
    builder = IndexBuilder(store, store.calendar)
    started = time.perf_counter()
    (result,) = builder.build([index_id])
    seconds = time.perf_counter() - started
    after = {row[0]: row for row in _published(store, index_id)}
    store.close()
    changed = sum(
        1 for day, row in before.items() if day not in after or _bits(row) != _bits(after[day])
    )
    return {
        "seconds": seconds,
        "mode": getattr(result, "mode", "?"),
        "days_written": getattr(result, "trading_days", None),
        "changed": changed,
    }


def _bits(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row's values, floats by their exact bits."""
    return tuple(v.hex() if isinstance(v, float) else v for v in row)


# ---------------------------------------------------------------- driver
def prepare(workdir: Path, symbols: int, days: int) -> None:
    """Generate, ingest and fully build once; kept for later runs."""
    ready = workdir / "base.duckdb"
    if ready.exists():
        return
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"preparing {workdir} ...", flush=True)
    _steps("generate", "--workdir", str(workdir), "--symbols", str(symbols), "--days", str(days))
    _steps("ingest", "--workdir", str(workdir))
    _run("build-all", "--database", str(workdir / "bench.duckdb"), "--full")
    shutil.copy(workdir / "bench.duckdb", ready)


def measure(workdir: Path, repeats: int) -> list[dict[str, Any]]:
    """Each repeat: a fresh copy of the built database, one new session, one
    incremental build per index in its own process."""
    runs: list[dict[str, Any]] = []
    for repeat in range(repeats):
        database = workdir / "bench.duckdb"
        shutil.copy(workdir / "base.duckdb", database)
        ingest = _steps("ingest-next", "--workdir", str(workdir))
        print(f"run {repeat + 1}: ingest one session {ingest['seconds']:.2f} s", flush=True)
        for index_id in INDICES:
            out = _run("build-one", "--database", str(database), "--index", index_id)
            out.update(index=index_id, repeat=repeat)
            runs.append(out)
            print(
                f"  {index_id:<16} {out['seconds']:6.3f} s  {out['mode']:<12} "
                f"changed published rows: {out['changed']}",
                flush=True,
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", default="run", choices=["run", "build-all", "build-one"])
    parser.add_argument("--symbols", type=int, default=6000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", type=Path)
    parser.add_argument("--index", default="ew100")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--label", default="", help="a name for this run in the results file")
    args = parser.parse_args()
    if args.step == "build-all":
        print(json.dumps(step_build_all(args.database, args.full)))
        return
    if args.step == "build-one":
        print(json.dumps(step_build_one(args.database, args.index)))
        return
    suffix = f"-{args.label}" if args.label else ""
    workdir = HERE / "data" / f"incremental-{args.symbols}x{args.days}{suffix}"
    prepare(workdir, args.symbols, args.days)
    runs = measure(workdir, args.repeats)
    summary = {
        index_id: statistics.median(r["seconds"] for r in runs if r["index"] == index_id)
        for index_id in INDICES
    }
    print("median seconds per index:", json.dumps(summary))
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    name = f"incremental-{args.symbols}x{args.days}{suffix}.json"
    machine = {"python": platform.python_version(), "machine": platform.machine()}
    (out_dir / name).write_text(
        json.dumps({"machine": machine, "median_seconds": summary, "runs": runs}, indent=2)
    )


if __name__ == "__main__":
    main()
