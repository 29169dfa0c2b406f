"""One benchmark step per process, so each reports its own wall time and peak RSS.

Usage (from bench/run.py): ``python bench/steps.py STEP --workdir DIR [--symbols N --days D]``.
Prints one JSON object: the step's measured seconds and the process's peak RSS.

``--storage duckdb|iceberg`` picks the backend (``index_builder.storage.factory``): the
DuckDB file ``WORKDIR/bench.duckdb`` or the Iceberg warehouse ``WORKDIR/lake``.
``--data DIR`` reads the input Parquet files from DIR instead of WORKDIR. The steps
``copy`` (the baseline: a plain DuckDB copy of the prices file into a sorted table) and
``reads`` (uncached API read latency) serve ``bench/storage.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from index_builder.engine.definitions import Buffer, GroupCap, IndexDefinition, Universe
from index_builder.ingest.job import run_ingestion
from index_builder.providers.schema import COMMON_STOCK
from index_builder.providers.synthetic import default_sessions
from index_builder.providers.synthetic_market import generate_market
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.settings import Settings
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.factory import make_store

VARIANTS = {
    "ew100": None,
    "ew100-monthly": IndexDefinition(
        id="ew100-monthly",
        name="EW100 monthly",
        top_n=100,
        rebalance="monthly",
        universe=Universe(types=(COMMON_STOCK,)),
    ),
    "mcap100-capped": IndexDefinition(
        id="mcap100-capped",
        name="Capped cap-weighted 100",
        top_n=100,
        weighting="capped_market_cap",
        cap=0.05,
        universe=Universe(types=(COMMON_STOCK,)),
    ),
    "ew100-buffer": None,  # built-in: ew100 with a 90/110 selection buffer
    "mcap100-ucits-daily": IndexDefinition(
        id="mcap100-ucits-daily",
        name="UCITS 10/5/40 top 100, daily",
        top_n=100,
        weighting="capped_market_cap",
        cap=0.10,
        group_cap=GroupCap(threshold=0.05, limit=0.40),
        universe=Universe(types=(COMMON_STOCK,)),
    ),
    "ew100-lag5": IndexDefinition(
        id="ew100-lag5",
        name="EW100, effective 5 sessions after selection",
        top_n=100,
        effective_lag=5,
        universe=Universe(types=(COMMON_STOCK,)),
    ),
    "ew100-company": IndexDefinition(
        id="ew100-company",
        name="EW100 ranked by company",
        top_n=100,
        rank_by="company",
        universe=Universe(types=(COMMON_STOCK,)),
    ),
    # every part 2 rule at once, daily: buffer, caps, lag, companies
    "mcap100-all-rules": IndexDefinition(
        id="mcap100-all-rules",
        name="Top 100 companies, 90/110 buffer, UCITS 10/5/40, lag 5, daily",
        top_n=100,
        weighting="capped_market_cap",
        cap=0.10,
        group_cap=GroupCap(threshold=0.05, limit=0.40),
        buffer=Buffer(entry_rank=90, exit_rank=110),
        effective_lag=5,
        rank_by="company",
        universe=Universe(types=(COMMON_STOCK,)),
    ),
}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """CPU time of this process so far, every thread (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generate(workdir: Path, symbols: int, days: int) -> dict[str, Any]:
    """Write the synthetic market (days + 1 sessions) as Parquet: all but the last
    session in prices.parquet, the last session in next_day.parquet."""
    started = time.perf_counter()
    sessions = default_sessions(days + 1, None)
    data = generate_market(
        seed=42, n_symbols=symbols, n_days=days + 1, sessions=sessions, start=sessions[0]
    )
    dates = data.prices.column("date")
    last = pc.max(dates)
    workdir.mkdir(parents=True, exist_ok=True)
    pq.write_table(data.securities, workdir / "securities.parquet")
    pq.write_table(
        data.prices.filter(pc.less(dates, last)),
        workdir / "prices.parquet",
        row_group_size=1_000_000,
    )
    pq.write_table(data.prices.filter(pc.equal(dates, last)), workdir / "next_day.parquet")
    return {"seconds": time.perf_counter() - started, "rows": data.prices.num_rows}


def bench_settings(workdir: Path, storage: str, **overrides: Any) -> Settings:
    """The settings of the bench store of ``storage`` in ``workdir``."""
    return Settings(
        storage=storage,
        database=workdir / "bench.duckdb",
        warehouse=str(workdir / "lake"),
        **overrides,
    )


def open_store(workdir: Path, storage: str) -> DuckDBStore:
    """The bench store of ``storage`` in ``workdir``, opened (never a shadow store)."""
    return make_store(bench_settings(workdir, storage), shadow=False).open()


def ingest(
    workdir: Path, prices: str, storage: str = "duckdb", data: Path | None = None
) -> dict[str, Any]:
    """Ingest a Parquet file into the bench store."""
    data = data or workdir
    with open_store(workdir, storage) as store:
        cpu = _cpu_seconds()
        started = time.perf_counter()
        report = run_ingestion(
            store,
            "file",
            {
                "securities": str(data / "securities.parquet"),
                "prices": str(data / prices),
            },
        )
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": report.rows_accepted,
        "rows_read": report.rows_read,
        "rejected": report.rows_rejected,
        "inserted": report.rows_inserted,
        "updated": report.rows_updated,
    }


def copy(workdir: Path, data: Path | None = None) -> dict[str, Any]:
    """The baseline: a plain DuckDB copy of the prices file into a sorted table of a
    fresh database file (no validation, no versions)."""
    import duckdb

    data = data or workdir
    target = workdir / "copy.duckdb"
    target.unlink(missing_ok=True)
    con = duckdb.connect(str(target))
    cpu = _cpu_seconds()
    started = time.perf_counter()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM read_parquet(?) ORDER BY symbol, date",
        [str(data / "prices.parquet")],
    )
    con.execute("CHECKPOINT")
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    rows = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    con.close()
    target.unlink(missing_ok=True)
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows}


def build(
    workdir: Path, index_id: str, full: bool, repeat: int, storage: str = "duckdb"
) -> dict[str, Any]:
    """Build one index (from the store to persisted levels and spells).

    The first build runs in a fresh process (cold); with ``repeat`` > 1 the same
    full build runs again in the same process (warm) and each time is reported.
    """
    with open_store(workdir, storage) as store:
        ensure_builtins(store)
        definition = VARIANTS.get(index_id)
        if definition is not None:
            add_definition(store, definition, replace=True)
        builder = IndexBuilder(store, store.calendar)
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            (result,) = builder.build([index_id], full=full)
            times.append(time.perf_counter() - started)
        spells = store.count_spells(index_id)
        days = len(store.built_days(index_id))
        top_n = builder.definition(index_id).top_n
    return {
        "seconds": times[0],
        "warm_seconds": times[1:],
        "mode": result.mode,
        "days_computed": result.trading_days,
        "spell_rows": spells,
        "snapshot_rows": top_n * days,
    }


def reads(
    workdir: Path, storage: str, index_id: str, samples: int, seed: int = 7
) -> dict[str, Any]:
    """Uncached API read latency: ``samples`` random one-year windows of GET
    /index-performance and ``samples`` random dates of GET /index-composition, in
    process (FastAPI TestClient, the app's lifespan and middleware included), no
    Redis (so no response cache: every answer is ``X-Cache: MISS``), no rate limit."""
    import random

    from fastapi.testclient import TestClient

    from index_builder.api.app import create_app

    settings = bench_settings(workdir, storage, redis_url=None, rate_limit_enabled=False)
    rng = random.Random(seed)
    with TestClient(create_app(settings)) as client:
        days = client.app.state.services.store.built_days(index_id)  # type: ignore[attr-defined]
        year = 252
        windows = []
        for _ in range(samples):
            first = rng.randrange(0, len(days) - year)
            windows.append((days[first], days[first + year - 1]))
        dates = [days[rng.randrange(len(days))] for _ in range(samples)]

        def timed(url: str, params: dict[str, str]) -> float:
            started = time.perf_counter()
            response = client.get(url, params=params)
            elapsed = time.perf_counter() - started
            if response.status_code != 200 or response.headers.get("x-cache") != "MISS":
                raise SystemExit(f"{url} {params}: {response.status_code} {response.text[:300]}")
            return elapsed * 1000

        timed("/index-performance", {"index": index_id})  # first touch, not recorded
        performance = [
            timed(
                "/index-performance",
                {"index": index_id, "start_date": a.isoformat(), "end_date": b.isoformat()},
            )
            for a, b in windows
        ]
        composition = [
            timed("/index-composition", {"index": index_id, "date": d.isoformat()}) for d in dates
        ]
    return {
        "seconds": (sum(performance) + sum(composition)) / 1000,
        "samples": samples,
        "performance_ms": _latency(performance),
        "composition_ms": _latency(composition),
    }


def _latency(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50": float(np.percentile(ordered, 50)),
        "p99": float(np.percentile(ordered, 99)),
        "max": ordered[-1],
        "mean": float(np.mean(ordered)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "step", choices=["generate", "ingest", "ingest-next", "build", "copy", "reads"]
    )
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--storage", choices=["duckdb", "iceberg"], default="duckdb")
    parser.add_argument("--data", type=Path, default=None, help="input files (default: workdir)")
    parser.add_argument("--samples", type=int, default=50, help="reads: requests per endpoint")
    parser.add_argument("--symbols", type=int, default=3000)
    parser.add_argument("--days", type=int, default=252)
    parser.add_argument("--index", default="ew100")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.step == "generate":
        out = generate(args.workdir, args.symbols, args.days)
    elif args.step == "ingest":
        out = ingest(args.workdir, "prices.parquet", args.storage, args.data)
    elif args.step == "ingest-next":
        out = ingest(args.workdir, "next_day.parquet", args.storage, args.data)
    elif args.step == "copy":
        out = copy(args.workdir, args.data)
    elif args.step == "reads":
        out = reads(args.workdir, args.storage, args.index, args.samples)
    else:
        out = build(args.workdir, args.index, args.full, args.repeat, args.storage)
    out["peak_rss_mib"] = _peak_rss_mib()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    np.seterr(all="ignore")
    pa.set_cpu_count(2)
    main()
