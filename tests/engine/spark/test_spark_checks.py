"""What the Spark engine refuses, without starting Spark: a bad engine or master (exit
2 naming the field), ``--all`` with ``--index``; and the per-index computation (what a
Spark worker runs) failing an index whose Spark ranks are not the kernel's."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from index_builder.calendar import get_calendar
from index_builder.engine.definitions import parse_definition
from index_builder.engine.panel import SecurityMaster
from index_builder.engine.spark.build import JobContext, _WorkerTask, index_computation
from index_builder.errors import BuildError

from cli_runner import run


def test_a_bad_engine_is_exit_2_naming_it(tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "db.duckdb", "build", "--engine", "pandas")
    assert code == 2 and "--engine" in err


def test_all_and_index_exclude_each_other(tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "db.duckdb", "build", "--all", "--index", "ew100")
    assert code == 2 and "--all and --index exclude each other" in err


def test_a_bad_spark_master_is_exit_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INDEX_BUILDER_SPARK_MASTER", "local[two]")
    code, _, err = run(tmp_path / "db.duckdb", "build", "--engine", "spark")
    assert code == 2 and "INDEX_BUILDER_SPARK_MASTER" in err


def _context() -> tuple[JobContext, _WorkerTask, pa.Table]:
    """Three securities over three sessions; an index of the largest one, daily."""
    symbols = np.array(["AAA", "BBB", "CCC"], dtype=object)
    master = SecurityMaster(
        symbols=symbols,
        names=symbols.copy(),
        sectors=np.array(["Energy"] * 3, dtype=object),
        exchanges=np.array(["XNYS"] * 3, dtype=object),
        types=np.array(["Common Stock"] * 3, dtype=object),
    )
    calendar = get_calendar()
    days = np.array(
        [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)], dtype="datetime64[D]"
    )
    definition = parse_definition({"id": "top1", "name": "top 1", "top_n": 1})
    task = _WorkerTask(definition, 0, 3, None, np.zeros(0, dtype=np.int64))
    context = JobContext(days, master, np.arange(3), calendar, {"top1": task})
    caps = {0: [3.0, 2.0, 1.0], 1: [1.0, 5.0, 2.0], 2: [1.0, 2.0, 9.0]}  # row -> caps by col
    rows = [(r, c, 10.0 + c + r, caps[r][c]) for r in range(3) for c in range(3)]
    bars = pa.table(
        {
            "row": pa.array([r for r, *_ in rows], pa.int32()),
            "col": pa.array([c for _, c, *_ in rows], pa.int32()),
            "close": pa.array([x for *_, x, _ in rows], pa.float64()),
            "adj_close": pa.array([None] * len(rows), pa.float64()),
            "market_cap": pa.array([m for *_, m in rows], pa.float64()),
            "dividend": pa.array([None] * len(rows), pa.float64()),
            "split_ratio": pa.array([None] * len(rows), pa.float64()),
            "volume": pa.array([None] * len(rows), pa.float64()),
        }
    )
    return context, task, bars


def _selections(entities: list[int]) -> pa.Table:
    """Spark's rank-1 security on each of the three days (and the marker row)."""
    return pa.table(
        {
            "index_id": pa.array(["top1"] * 4, pa.string()),
            "row": pa.array([-1, 0, 1, 2], pa.int32()),
            "entity": pa.array([-1, *entities], pa.int32()),
            "rank": pa.array([-1, 1, 1, 1], pa.int32()),
        }
    )


def test_the_kernel_runs_on_the_panel_and_agrees_with_the_ranks() -> None:
    context, task, bars = _context()
    computation = index_computation(context, task, _selections([0, 1, 2]), bars)
    assert [str(s.symbol) for s in computation.spells()] == ["AAA", "BBB", "CCC"]
    assert computation.panel.price.size == 0  # the matrices stay in the worker


def test_ranks_that_are_not_the_kernels_fail_the_index() -> None:
    context, task, bars = _context()
    with pytest.raises(BuildError, match=r"kernel ranked BBB 1 but Spark not ranked"):
        index_computation(context, task, _selections([0, 2, 2]), bars)
