"""A publication made on one kind of CPU is reproduced bit for bit on another.

The publication is made by ``index-builder`` processes whose NumPy has its AVX-512
kernels switched off (``NPY_DISABLE_CPU_FEATURES``), as on a machine without
AVX-512, built day by day; it is then reproduced in this process, with every
kernel the CPU has, by a full build as of a moment after it. Reproducing a stored
publication is the one place the contract asks for ``==`` (METHODOLOGY
"Published history"): the engine's arithmetic is element-wise operations and
sums in a fixed order, which give the same doubles on every x86-64 CPU. On a
machine without AVX-512 both sides use the same kernels and the test still
checks that a day-by-day publication is reproduced exactly.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from numpy._core._multiarray_umath import __cpu_features__

from index_builder.engine.definitions import parse_definition
from index_builder.providers.synthetic_market import generate_market
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

DEFINITIONS = [
    {"id": "m-daily", "name": "t", "top_n": 25},
    {
        "id": "m-monthly-capped",
        "name": "t",
        "top_n": 20,
        "weighting": "capped_market_cap",
        "cap": 0.10,
        "group_cap": {"threshold": 0.05, "limit": 0.40},
        "rebalance": "monthly",
        "return_type": "net_total",
    },
    {
        "id": "m-weekly-lag",
        "name": "t",
        "top_n": 15,
        "weighting": "market_cap",
        "rebalance": "weekly",
        "effective_lag": 2,
        "rank_by": "company",
    },
]
IDS = [str(d["id"]) for d in DEFINITIONS]
AVX512 = ("X86_V4", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL", "AVX512_ICL", "AVX512_SPR")


def _without_avx512() -> dict[str, str]:
    """The environment of a process whose NumPy uses no AVX-512 kernel."""
    present = [f for f in AVX512 if __cpu_features__.get(f)]
    env = dict(os.environ)
    if present:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(present)
    return env


def _cli(db: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "index_builder.cli.main", "--db", str(db), "-q", *args]
    done = subprocess.run(cmd, env=_without_avx512(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _published(store: DuckDBStore, key: str) -> list[tuple[object, ...]]:
    sql = "SELECT * EXCLUDE (index_id) FROM index_levels WHERE index_id = ? ORDER BY date"
    rows: list[tuple[object, ...]] = store.cursor().execute(sql, [key]).fetchall()
    return rows


def test_a_day_by_day_publication_is_reproduced_exactly_with_other_cpu_kernels(
    tmp_path: Path,
) -> None:
    db = tmp_path / "machine.duckdb"
    with DuckDBStore(db) as store:
        for d in DEFINITIONS:
            add_definition(store, parse_definition(d))
    data = generate_market(seed=31, n_symbols=160, n_days=50, start=dt.date(2024, 1, 2))
    securities = tmp_path / "securities.csv"
    data.securities.to_pandas().to_csv(securities, index=False)
    prices = data.prices.to_pandas()
    days = sorted(prices["date"].unique())
    for n, (lo, hi) in enumerate([(0, 30), (30, 31), (31, 32), (32, 50)]):
        part = tmp_path / f"part{n}.csv"
        prices[prices["date"].isin(days[lo:hi])].to_csv(part, index=False)
        _cli(db, "ingest", "--provider=file", f"--securities={securities}", f"--prices={part}")
        _cli(db, "build", *[f"--index={index_id}" for index_id in IDS])

    with DuckDBStore(db) as store:
        as_of = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        results = IndexBuilder(store, store.calendar).build(IDS, as_of=as_of)
        assert {(r.mode, r.outcome) for r in results} == {("full", "built")}
        reader = IndexReader(store, store.calendar)
        for index_id in IDS:
            (key,) = [s.index_id for s in store.as_of_builds(index_id)]
            assert _published(store, key) == _published(store, index_id), index_id
            last = days[-1]
            now = reader.composition(index_id, last).rows()
            again = reader.composition(index_id, last, as_of=as_of).rows()
            assert pd.DataFrame(again).equals(pd.DataFrame(now)), index_id
