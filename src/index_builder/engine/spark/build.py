"""The Spark job: every planned index of one build, from one scan of the bars.

Which part runs where (docs/architecture.md, "Spark engine"):

Driver (this process)
    Plans the build (:class:`~index_builder.services.builds.IndexBuilder`), reads the
    security master and the stored state a build resumes from, evaluates the static
    universe filters (:func:`~index_builder.engine.kernel.universe_columns`) and the
    rebalance schedules (:data:`~index_builder.engine.schedules.SCHEDULES`) of every
    index, and afterwards stores each index's results through the NumPy engine's
    write path.

Spark, set-based
    1. reads the window's bars once (:mod:`.reader`), keeps the securities of the
       master and numbers days and securities (``row``, ``col``), and checkpoints
       them: the only scan of the Parquet files;
    2. on every reference date of every index at once: eligibility (a market cap,
       ``min_market_cap`` and ``min_price`` inclusive, the universe's securities),
       company totals for ``rank_by: company`` (summed in the kernel's order), and the
       ranks (``row_number`` by key descending, then symbol), kept up to the deepest
       rank a rule can use (``top_n``, or ``exit_rank`` with a buffer). Indices with
       the same universe and minimums share one ranking;
    3. each index's panel: the bars of the securities (for companies: every share
       class in the universe) that reach those ranks on some reference date, plus
       the constituents a resumed build starts from, over the index's window.

Spark, per index (a cogrouped Arrow UDF, one group per index, in parallel)
    Scatters the index's bars into a :class:`~index_builder.engine.panel.MarketPanel`
    of those securities only and runs :func:`~index_builder.engine.kernel.compute_index`
    on it: the one implementation of the methodology (selection with buffers and
    companies, weights and caps, effective lags, levels of every variant, turnover,
    pending selections). The securities left out never rank within reach, so the
    kernel selects, weights and compounds exactly what it does on the whole panel,
    in the same symbol order: the same doubles. It then checks every selection's
    ranks against Spark's (a difference fails that index) and returns the
    computation without its panel matrices.
"""

from __future__ import annotations

import datetime as dt
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from index_builder.calendar import SessionCalendar
from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.kernel import (
    IndexComputation,
    StartState,
    compute_index,
    universe_columns,
)
from index_builder.engine.panel import MarketPanel, SecurityMaster
from index_builder.engine.schedules import SCHEDULES
from index_builder.engine.spark.reader import read_bars
from index_builder.engine.spark.session import SparkOptions, spark_session
from index_builder.errors import BuildError
from index_builder.storage.base import Storage

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

IntArray = NDArray[np.int64]
Days = NDArray[np.datetime64]

RESULT_SCHEMA = "index_id string, panel_rows long, payload binary"
_NONE = np.empty((0, 0))


class ResumePoint(Protocol):
    """The stored state a build resumes from (``services.builds.StoredStart``)."""

    @property
    def members(self) -> list[str]:
        """The constituents in force (symbols)."""
        ...

    def state_for(self, window: MarketPanel) -> StartState:
        """The kernel's start state over ``window``."""
        ...


@dataclass(frozen=True)
class SparkTask:
    """One index of the job: its rules, its window and where it resumes (None: a
    full build from ``first_day``, the base date)."""

    definition: IndexDefinition
    first_day: dt.date
    end: dt.date
    start: ResumePoint | None = None


@dataclass(frozen=True)
class SparkJobReport:
    """What a Spark job did (the CLI prints it; tests and benchmarks read it)."""

    master: str
    origin: str  # where the bars came from: "iceberg snapshot <id>" | "duckdb export"
    files: int  # Parquet files read
    bars: int  # bars in the window (read once)
    scans: int  # Parquet scans of the bar read: one per table read (1: current data)
    later_scans: int  # Parquet scans after it: 0, everything reads the checkpoint
    indices: int  # indices computed (one group each)
    ranked: int  # (index, reference date, security or company) ranks kept
    panel_rows: int  # bars sent to the per-index computations, all indices together
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage of the job

    def line(self) -> str:
        """One line for the build output."""
        return (
            f"spark {self.master}: {self.indices} "
            f"ind{'ex' if self.indices == 1 else 'ices'} in one job, {self.bars:,} bars from "
            f"{self.files} Parquet file{'' if self.files == 1 else 's'} ({self.origin}, "
            f"{self.scans} scan{'' if self.scans == 1 else 's'}), {self.panel_rows:,} panel "
            f"rows, {self.seconds:.1f} s"
        )


@dataclass
class SparkJob:
    """Each index's computation (or why it failed), and the job's report."""

    results: dict[str, IndexComputation | Exception]
    report: SparkJobReport


@dataclass(frozen=True)
class _WorkerTask:
    """What the per-index computation needs besides its bars (sent to the workers)."""

    definition: IndexDefinition
    first_row: int  # global day row of the window's first day
    stop_row: int  # global day row after its last day
    start: ResumePoint | None
    start_columns: IntArray  # master columns the resumed constituents need


@dataclass(frozen=True)
class JobContext:
    """Shared by every per-index computation of a job (broadcast once)."""

    days: Days  # the job's trading days; a bar's ``row`` indexes them
    master: SecurityMaster  # a bar's ``col`` indexes it
    company: IntArray  # company code per master column (codes sorted by company key)
    calendar: SessionCalendar
    tasks: dict[str, _WorkerTask] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ranking:
    """Indices that share a universe and minimums share one ranking."""

    code: int
    columns: IntArray  # master columns in the universe
    min_price: float | None
    min_market_cap: float | None
    by_company: bool


def run_spark_job(
    store: Storage,
    calendar: SessionCalendar,
    tasks: Sequence[SparkTask],
    trading_days: Sequence[dt.date],
    *,
    as_of: dt.datetime | None = None,
    run: int | None = None,
    options: SparkOptions | None = None,
) -> SparkJob:
    """Compute every task in one Spark job (see the module docstring)."""
    started = time.perf_counter()
    stages: dict[str, float] = {}
    opts = options or SparkOptions()
    spark = spark_session(opts)
    stages["session"] = time.perf_counter() - started
    first = min(t.first_day for t in tasks)
    last = max(t.end for t in tasks)
    days = np.array([d for d in trading_days if first <= d <= last], dtype="datetime64[D]")
    master = store.security_master(as_of, run=run)
    labels = master.company_keys().astype(str)
    company = np.unique(labels, return_inverse=True)[1].astype(np.int64).reshape(-1)
    context = JobContext(days, master, company, calendar)
    results: dict[str, IndexComputation | Exception] = {}
    rankings: dict[tuple[Any, ...], _Ranking] = {}
    plan: list[tuple[str, _Ranking, IntArray, int]] = []  # (index, ranking, ref rows, depth)
    for task in tasks:
        index_id = task.definition.id
        try:
            worker, ranking, rows = _prepare(task, context, rankings)
        except Exception as exc:  # one index's fault stays its own
            results[index_id] = exc
            continue
        context.tasks[index_id] = worker
        plan.append((index_id, ranking, rows, _depth(task.definition)))
    if not plan:
        return SparkJob(results, _report(opts, stages, "none", 0, 0, 0, 0, 0, 0, 0, started))
    with tempfile.TemporaryDirectory(prefix="index-builder-spark-") as staging:
        source = read_bars(spark, store, first, last, as_of=as_of, run=run, staging=Path(staging))
        job = _Job(spark, context, plan)
        bars = job.bars(source.frame, first, last)
        scans = _scans(bars)
        from pyspark import StorageLevel

        # the one scan of the Parquet files: kept in Spark's columnar cache (spilled to
        # disk, never recomputed) for every later stage
        bars = bars.persist(StorageLevel.MEMORY_AND_DISK)
        selections = job.selections(bars).persist(StorageLevel.MEMORY_AND_DISK)
        shared = spark.sparkContext.broadcast(context)
        try:
            n_bars = bars.count()
            stages["read"] = time.perf_counter() - started - sum(stages.values())
            ranked = selections.count()
            stages["rank"] = time.perf_counter() - started - sum(stages.values())
            panels = job.panels(bars, selections)
            computed = (
                job.with_markers(selections)
                .groupBy("index_id")
                .cogroup(panels.groupBy("index_id"))
                .applyInArrow(_group_function(shared), RESULT_SCHEMA)
            )
            later = _scans(computed)
            table = computed.toArrow()
            stages["compute"] = time.perf_counter() - started - sum(stages.values())
        finally:
            shared.unpersist()
            selections.unpersist()
            bars.unpersist()
    panel_rows = int(pc.sum(table.column("panel_rows")).as_py() or 0)
    for index_id, payload in zip(
        table.column("index_id").to_pylist(), table.column("payload").to_pylist(), strict=True
    ):
        results[index_id] = _loaded(payload)
    for index_id, *_ in plan:
        results.setdefault(
            index_id, BuildError(f"{index_id}: the Spark job returned no result for it")
        )
    report = _report(
        opts,
        stages,
        source.origin,
        source.files,
        n_bars,
        scans,
        later,
        len(plan),
        ranked,
        panel_rows,
        started,
    )
    return SparkJob(results, report)


def _report(
    opts: SparkOptions,
    stages: dict[str, float],
    origin: str,
    files: int,
    bars: int,
    scans: int,
    later: int,
    indices: int,
    ranked: int,
    panel_rows: int,
    started: float,
) -> SparkJobReport:
    return SparkJobReport(
        master=opts.master,
        origin=origin,
        files=files,
        bars=bars,
        scans=scans,
        later_scans=later,
        indices=indices,
        ranked=ranked,
        panel_rows=panel_rows,
        seconds=time.perf_counter() - started,
        stages={k: round(v, 3) for k, v in stages.items()},
    )


def _depth(definition: IndexDefinition) -> int:
    """The deepest rank the selection rule can look at (METHODOLOGY "Selection
    buffer": ranks beyond ``exit_rank`` never matter)."""
    buffer = definition.buffer
    if buffer is None:
        return definition.top_n
    return max(definition.top_n, buffer.entry_rank, buffer.exit_rank)


def _prepare(
    task: SparkTask, context: JobContext, rankings: dict[tuple[Any, ...], _Ranking]
) -> tuple[_WorkerTask, _Ranking, IntArray]:
    """The index's window rows, reference rows, ranking and resumed constituents."""
    definition = task.definition
    days = context.days
    first_row = int(np.searchsorted(days, np.datetime64(task.first_day, "D")))
    if first_row >= len(days) or days[first_row] != np.datetime64(task.first_day, "D"):
        raise KeyError(f"{task.first_day} is not a trading day of the panel")
    stop_row = int(np.searchsorted(days, np.datetime64(task.end, "D"), side="right"))
    window = days[first_row:stop_row]
    # the schedule's reference dates, the window's first day always one of them: as
    # compute_index takes them (the rank check fails an index where they differ)
    scheduled = SCHEDULES.get(definition.rebalance).mask(window, context.calendar)
    scheduled[0] = True
    rows = first_row + np.flatnonzero(scheduled).astype(np.int64)
    universe = definition.universe
    columns = np.flatnonzero(universe_columns(universe, context.master)).astype(np.int64)
    by_company = definition.rank_by == "company"
    key = (columns.tobytes(), universe.min_price, universe.min_market_cap, by_company)
    if key not in rankings:
        rankings[key] = _Ranking(
            len(rankings), columns, universe.min_price, universe.min_market_cap, by_company
        )
    ranking = rankings[key]
    start_columns = np.zeros(0, dtype=np.int64)
    if task.start is not None:
        start_columns = context.master.column_of(task.start.members)
        if by_company:  # every class of their companies: the company totals need them
            wanted = np.isin(context.company[columns], context.company[start_columns])
            start_columns = np.union1d(start_columns, columns[wanted])
    worker = _WorkerTask(definition, first_row, stop_row, task.start, start_columns)
    return worker, ranking, rows


class _Job:
    """The DataFrames of one job (the set-based part)."""

    def __init__(
        self,
        spark: SparkSession,
        context: JobContext,
        plan: list[tuple[str, _Ranking, IntArray, int]],
    ) -> None:
        self.spark = spark
        self.context = context
        self.plan = plan
        rankings = {r.code: r for _, r, _, _ in plan}
        self.rankings = rankings
        self.max_depth = max(depth for *_, depth in plan)
        company = context.company
        universe = [(r.code, r.columns) for r in rankings.values()]
        self.universe = self._frame(
            {
                "ranking": np.concatenate([np.full(len(c), k, np.int32) for k, c in universe]),
                "col": np.concatenate([c for _, c in universe]).astype(np.int32),
                "company": np.concatenate([company[c] for _, c in universe]).astype(np.int32),
            }
        )
        # the first class of each company in a universe: the kernel's sum starts from it
        self.rankings_frame = self.spark.createDataFrame(
            pa.table(
                {
                    "ranking": pa.array([r.code for r in rankings.values()], pa.int32()),
                    "min_price": pa.array([r.min_price for r in rankings.values()], pa.float64()),
                    "min_market_cap": pa.array(
                        [r.min_market_cap for r in rankings.values()], pa.float64()
                    ),
                    "by_company": pa.array([r.by_company for r in rankings.values()], pa.bool_()),
                }
            )
        )
        reference = [(r.code, rows) for _, r, rows, _ in plan]
        pairs = np.unique(
            np.concatenate(
                [np.stack([np.full(len(rows), k), rows], axis=1) for k, rows in reference]
            ),
            axis=0,
        )
        self.rank_dates = self._frame(
            {"ranking": pairs[:, 0].astype(np.int32), "row": pairs[:, 1].astype(np.int32)}
        )
        self.index_dates = self.spark.createDataFrame(
            pa.table(
                {
                    "index_id": pa.array(
                        [i for i, _, rows, _ in plan for _ in range(len(rows))], pa.string()
                    ),
                    "ranking": pa.array(
                        np.concatenate([np.full(len(rows), r.code) for _, r, rows, _ in plan]),
                        pa.int32(),
                    ),
                    "row": pa.array(np.concatenate([rows for *_, rows, _ in plan]), pa.int32()),
                    "depth": pa.array(
                        np.concatenate([np.full(len(rows), d) for *_, rows, d in plan]),
                        pa.int32(),
                    ),
                }
            )
        )
        tasks = context.tasks
        self.indices = self.spark.createDataFrame(
            pa.table(
                {
                    "index_id": pa.array([i for i, *_ in plan], pa.string()),
                    "ranking": pa.array([r.code for _, r, _, _ in plan], pa.int32()),
                    "by_company": pa.array([r.by_company for _, r, _, _ in plan], pa.bool_()),
                    "first_row": pa.array([tasks[i].first_row for i, *_ in plan], pa.int32()),
                    "stop_row": pa.array([tasks[i].stop_row for i, *_ in plan], pa.int32()),
                }
            )
        )
        starts = [(i, tasks[i].start_columns) for i, *_ in plan]
        self.start_columns = self.spark.createDataFrame(
            pa.table(
                {
                    "index_id": pa.array(
                        [i for i, cols in starts for _ in range(len(cols))], pa.string()
                    ),
                    "col": pa.array(
                        np.concatenate([cols for _, cols in starts]).astype(np.int32), pa.int32()
                    ),
                }
            )
        )

    def _frame(self, columns: dict[str, NDArray[Any]]) -> DataFrame:
        return self.spark.createDataFrame(pa.table({k: pa.array(v) for k, v in columns.items()}))

    def bars(self, frame: DataFrame, first: dt.date, last: dt.date) -> DataFrame:
        """The window's bars of the master's securities, days and securities numbered
        as the panel numbers them (``row``, ``col``)."""
        from pyspark.sql import functions as F

        context = self.context
        days = self.spark.createDataFrame(
            pa.table(
                {
                    "date": pa.array(context.days, pa.date32()),
                    "row": pa.array(np.arange(len(context.days), dtype=np.int32)),
                }
            )
        )
        securities = self.spark.createDataFrame(
            pa.table(
                {
                    "symbol": pa.array(context.master.symbols.tolist(), pa.string()),
                    "col": pa.array(np.arange(len(context.master), dtype=np.int32)),
                }
            )
        )
        return (
            frame.where(F.col("date").between(F.lit(first), F.lit(last)))
            .join(F.broadcast(days), "date")
            .join(F.broadcast(securities), "symbol")
            .select(
                "row",
                "col",
                "close",
                "adj_close",
                "market_cap",
                "dividend",
                "split_ratio",
                "volume",
            )
        )

    def selections(self, bars: DataFrame) -> DataFrame:
        """(index_id, row, entity, rank): every index's ranked securities (or companies)
        on each of its reference dates, up to its deepest usable rank."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        cap, close = F.col("market_cap"), F.col("close")
        at_dates = (
            bars.join(F.broadcast(self.rank_dates), "row")
            .join(F.broadcast(self.universe), ["ranking", "col"])
            .join(F.broadcast(self.rankings_frame), "ranking")
        )
        eligible = at_dates.where(
            cap.isNotNull()
            & ~F.isnan(cap)
            & (F.col("min_market_cap").isNull() | (cap >= F.col("min_market_cap")))
            & (F.col("min_price").isNull() | (~F.isnan(close) & (close >= F.col("min_price"))))
        )
        securities = eligible.where(~F.col("by_company")).select(
            "ranking", "row", F.col("col").alias("entity"), cap.alias("key")
        )
        companies = self._company_keys(eligible.where(F.col("by_company")))
        order = Window.partitionBy("ranking", "row").orderBy(
            F.col("key").desc(), F.col("entity").asc()
        )
        ranked = (
            securities.unionByName(companies)
            .withColumn("rank", F.row_number().over(order))
            .where(F.col("rank") <= self.max_depth)
        )
        return (
            ranked.join(F.broadcast(self.index_dates), ["ranking", "row"])
            .where(F.col("rank") <= F.col("depth"))
            .select("index_id", "row", "entity", "rank")
        )

    def _company_keys(self, eligible: DataFrame) -> DataFrame:
        """A company's key: the market caps of its eligible classes summed as the
        kernel sums them (``numpy.add.reduceat`` over the company's classes in symbol
        order: the first class, plus the others added one by one)."""
        from pyspark.sql import functions as F

        firsts = self.universe.groupBy("ranking", "company").agg(F.min("col").alias("first"))
        caps = F.array_sort(F.collect_list(F.struct("col", "market_cap")))
        grouped = eligible.groupBy("ranking", "row", "company").agg(caps.alias("caps"))

        def added(items: Any) -> Any:
            return F.aggregate(items, F.lit(0.0), lambda acc, x: acc + x["market_cap"])

        head = F.col("caps")[0]
        key = F.when(
            head["col"] == F.col("first"),
            head["market_cap"] + added(F.slice("caps", 2, F.size("caps"))),
        ).otherwise(added(F.col("caps")))
        return grouped.join(F.broadcast(firsts), ["ranking", "company"]).select(
            "ranking", "row", F.col("company").alias("entity"), key.alias("key")
        )

    def panels(self, bars: DataFrame, selections: DataFrame) -> DataFrame:
        """Each index's bars over its window, for the securities it can select."""
        from pyspark.sql import functions as F

        ranked = selections.select("index_id", "entity").distinct()
        kinds = self.indices.select("index_id", "ranking", "by_company")
        by_security = ranked.join(
            F.broadcast(kinds.where(~F.col("by_company"))), "index_id"
        ).select("index_id", F.col("entity").alias("col"))
        by_company = (
            ranked.join(F.broadcast(kinds.where(F.col("by_company"))), "index_id")
            .join(self.universe.withColumnRenamed("company", "entity"), ["ranking", "entity"])
            .select("index_id", "col")
        )
        wanted = by_security.unionByName(by_company).unionByName(self.start_columns).distinct()
        windows = self.indices.select("index_id", "first_row", "stop_row")
        return (
            bars.join(F.broadcast(wanted), "col")
            .join(F.broadcast(windows), "index_id")
            .where((F.col("row") >= F.col("first_row")) & (F.col("row") < F.col("stop_row")))
            .select(
                "index_id",
                "row",
                "col",
                "close",
                "adj_close",
                "market_cap",
                "dividend",
                "split_ratio",
                "volume",
            )
        )

    def with_markers(self, selections: DataFrame) -> DataFrame:
        """The selections plus one marker row per index (entity -1): every index gets
        its group, even one with nothing eligible (the kernel then says why)."""
        from pyspark.sql import functions as F

        markers = self.indices.select(
            "index_id",
            F.lit(-1).cast("int").alias("row"),
            F.lit(-1).cast("int").alias("entity"),
            F.lit(-1).cast("int").alias("rank"),
        )
        # new names for the columns: the panels' side comes from the same checkpoint
        # (same column ids), which a cogroup could not tell apart
        return selections.unionByName(markers).select(
            *(F.col(c).alias(c) for c in ("index_id", "row", "entity", "rank"))
        )


def _scans(frame: DataFrame) -> int:
    """Parquet scans a DataFrame's physical plan runs: the scan nodes of its plan, not
    counting those under a cached relation (``InMemoryTableScan`` reads the cache, the
    plan that filled it does not run again). Walks the JVM plan (py4j): explain's text
    prints cached and adaptive sub-plans with indentation that cannot be parsed."""

    def count(node: Any) -> int:
        kind = str(node.getClass().getSimpleName())
        if kind == "InMemoryTableScanExec":
            return 0
        if kind == "FileSourceScanExec":
            return 1
        if kind == "AdaptiveSparkPlanExec":
            return count(node.inputPlan())
        children = node.children()
        return sum(count(children.apply(i)) for i in range(children.size()))

    return count(frame._jdf.queryExecution().executedPlan())


def _group_function(
    shared: Broadcast[JobContext],
) -> Callable[[pa.Table, pa.Table], pa.Table]:
    """The per-index function of the cogrouped UDF (runs in Spark's Python workers)."""

    def compute(selections: pa.Table, bars: pa.Table) -> pa.Table:
        return compute_group(shared.value, selections, bars)

    return compute


def compute_group(context: JobContext, selections: pa.Table, bars: pa.Table) -> pa.Table:
    """One index's result row: its computation (or its error), pickled."""
    index_id = str(selections.column("index_id")[0].as_py())
    try:
        computation = index_computation(context, context.tasks[index_id], selections, bars)
        payload = pickle.dumps(("ok", computation), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # the index fails, the job goes on
        try:
            payload = pickle.dumps(("error", exc, traceback.format_exc()))
        except Exception:  # an exception that does not pickle
            error = RuntimeError(f"{type(exc).__name__}: {exc}")
            payload = pickle.dumps(("error", error, traceback.format_exc()))
    return pa.table(
        {
            "index_id": pa.array([index_id], pa.string()),
            "panel_rows": pa.array([bars.num_rows], pa.int64()),
            "payload": pa.array([payload], pa.binary()),
        }
    )


def index_computation(
    context: JobContext, task: _WorkerTask, selections: pa.Table, bars: pa.Table
) -> IndexComputation:
    """The kernel over the index's panel (the securities it can select), checked
    against Spark's ranks, without its panel matrices (what a build stores needs
    only the days and the securities)."""
    col = _ints(bars, "col")
    columns = np.union1d(col, task.start_columns).astype(np.int64)
    securities = _subset(context.master, columns)
    window = context.days[task.first_row : task.stop_row]
    cell = (_ints(bars, "row") - task.first_row) * len(columns) + np.searchsorted(columns, col)
    dividend = _floats(bars, "dividend", np.nan)
    split = _floats(bars, "split_ratio", np.nan)
    acted = ~_nulls(bars, "dividend", "split_ratio")  # the bars with a corporate action
    company = task.definition.rank_by == "company"
    panel = MarketPanel.from_batches(
        window,
        securities,
        [
            (
                cell,
                _floats(bars, "close", np.nan),
                _floats(bars, "adj_close", np.nan),
                _floats(bars, "market_cap", np.nan),
            )
        ],
        actions=(cell[acted], dividend[acted], split[acted]),
        volumes=(cell, _floats(bars, "volume", 0.0)) if company else None,
    )
    start = None if task.start is None else task.start.state_for(panel)
    computation = compute_index(panel, task.definition, context.calendar, start=start)
    check_ranks(context, task, columns, computation, selections)
    computation.panel = MarketPanel(
        days=panel.days, securities=panel.securities, price=_NONE, market_cap=_NONE
    )
    computation.growth = _NONE
    computation.real_prices = _NONE
    computation.units = _NONE
    return computation


def check_ranks(
    context: JobContext,
    task: _WorkerTask,
    columns: IntArray,
    computation: IndexComputation,
    selections: pa.Table,
) -> None:
    """Every constituent the kernel selected has the rank Spark gave it on that
    reference date (a resumed build's first selection is the stored one: skipped).
    Raises :class:`BuildError` naming the first difference."""
    marked = _ints(selections, "entity")
    real = marked >= 0
    by_company = task.definition.rank_by == "company"
    width = int(context.company.max(initial=0) + 1) if by_company else len(context.master)
    spark_keys = _ints(selections, "row")[real] * width + marked[real]
    spark_ranks = _ints(selections, "rank")[real]
    order = np.argsort(spark_keys, kind="stable")
    spark_keys, spark_ranks = spark_keys[order], spark_ranks[order]
    members = computation.selection.members
    present = members >= 0
    if task.start is not None:
        present[0] = False
    ref_rows = np.broadcast_to(computation.reference_rows[:, None], members.shape)[present]
    rows = [ref_rows + task.first_row]
    cols = [members[present]]
    ranks = [computation.selection.ranks[present]]
    for pending in computation.pending:
        row = computation.panel.row_of(np.datetime64(pending.reference_date, "D"))
        rows.append(np.full(len(pending.columns), task.first_row + row, dtype=np.int64))
        cols.append(pending.columns)
        ranks.append(pending.ranks)
    at = np.concatenate(rows).astype(np.int64)
    member = columns[np.concatenate(cols).astype(np.int64)]
    kernel = np.concatenate(ranks).astype(np.int64)
    entity = context.company[member] if by_company else member
    keys = at * width + entity
    spark = np.full(len(keys), -1, dtype=np.int64)  # -1: Spark did not rank it
    if len(spark_keys):
        pos = np.minimum(np.searchsorted(spark_keys, keys), len(spark_keys) - 1)
        spark = np.where(spark_keys[pos] == keys, spark_ranks[pos], -1)
    differ = np.flatnonzero(spark != kernel)
    if len(differ):
        i = int(differ[0])
        day = context.days[at[i]]
        symbol = context.master.symbols[member[i]]
        given = "not ranked" if spark[i] < 0 else f"ranked {spark[i]}"
        raise BuildError(
            f"{task.definition.id}: on {day} the kernel ranked {symbol} {kernel[i]} but Spark "
            f"{given} ({len(differ)} difference(s)); the Spark engine's selection is not the "
            "kernel's: build with --engine numpy"
        )


def _subset(master: SecurityMaster, columns: IntArray) -> SecurityMaster:
    """The master's entries of ``columns`` (ascending: still sorted by symbol)."""
    return SecurityMaster(
        symbols=master.symbols[columns],
        names=master.names[columns],
        sectors=master.sectors[columns],
        exchanges=master.exchanges[columns],
        types=master.types[columns],
        dividends_from=None if master.dividends_from is None else master.dividends_from[columns],
        company_ids=None if master.company_ids is None else master.company_ids[columns],
    )


def _ints(table: pa.Table, name: str) -> IntArray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.int64)


def _floats(table: pa.Table, name: str, missing: float) -> NDArray[np.float64]:
    column = pc.fill_null(table.column(name).cast(pa.float64()), missing)
    return np.asarray(column.to_numpy(), dtype=np.float64)


def _nulls(table: pa.Table, *names: str) -> NDArray[np.bool_]:
    """True where every one of ``names`` is null."""
    out = np.ones(table.num_rows, dtype=bool)
    for name in names:
        out &= np.asarray(pc.is_null(table.column(name)).to_numpy(zero_copy_only=False))
    return out


def _loaded(payload: bytes) -> IndexComputation | Exception:
    """A result row's computation, or the exception that failed its index."""
    kind, value, *rest = pickle.loads(payload)
    if kind == "ok":
        assert isinstance(value, IndexComputation)
        return value
    assert isinstance(value, Exception)
    if rest and not isinstance(value, BuildError):
        value.add_note(f"in a Spark worker:\n{rest[0]}")
    return value
