"""The same answers from every backend: one small market with what makes data dirty
(rejected rows, a conflicting duplicate, ties, a halt, an IPO, a delisting, a split,
dividends, share classes, a sector change) is ingested in three runs (the later ones
correct earlier bars) and built (ew100, ew-tech50, a sector index, the capped
announced index, a user index, a build as of a moment and one as of a version) into a
store of the backend under test, once per module; then every GET route of the API
(enumerated from the app: one neither asked nor excluded fails) and every read command
of the CLI (enumerated from the CLI the same way) must answer on it what it answers on
the reference backend, DuckDB, and the stores must hold the same rows.

What may differ is listed once, each with its reason, in :data:`EXCLUDED` (fields),
:data:`EXCLUDED_TABLE_COLUMNS` (stored columns), :data:`EXCLUDED_ROUTES` and
:data:`EXCLUDED_COMMANDS`; nothing else is left out. An excluded field's value is
replaced by ``<excluded>`` (never dropped), so the comparison still sees that it is
there, and every exclusion must be met somewhere (a stale one fails). Numbers are
compared exactly, CSV files byte for byte (cell by cell where a column or a field of
theirs is EXCLUDED): both backends run the same engine and SQL
over the same stored numbers (Parquet keeps a double's bits), so any difference, even
in the last bit, is the backend's.

A backend's answers are computed once per test run: under xdist, the first worker that
needs them computes them and leaves them (plain data) for the other one."""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import json
import os
import pickle
import random
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from typer.testing import CliRunner

from index_builder.api.app import create_app
from index_builder.calendar import get_calendar
from index_builder.cli.main import app as cli_app
from index_builder.engine.definitions import parse_definition
from index_builder.ingest.job import run_ingestion
from index_builder.ops import metrics
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.settings import get_settings
from index_builder.storage.duckdb.store import DuckDBStore

from backend_stores import BACKENDS, lake_tables, open_store, settings_for
from crafted import PRICE_COLUMNS, SECURITY_COLUMNS, px, sec
from market_files import write_csv

REFERENCE = "duckdb"
"""The backend every other one must answer like (the long-standing one). On it, the
tests check that the answers are real ones (not errors alike, jobs that succeeded)."""

# ---------------------------------------------------------------------- what may differ
EXCLUDED: dict[str, str] = {
    # wall-clock times: the builder, the job manager, exports and health checks stamp
    # the real time (ingestion runs and versions use the store clock, set alike here)
    "built_at": "when a build ran: the builder stamps the wall clock",
    "built_at_utc": "the same, in an export's summary",
    "generated_at_utc": "when an export file was written (wall clock)",
    "duration_ms": "how long a build took",
    "checked_at": "when the health check ran",
    "loaded_at": "when the API process read its feature flags",
    "data_age_seconds": "the data's age, measured at the wall clock (health, /metrics)",
    "bytes": "an export file's size: its summary holds the time it was written",
    "created_at": "when a job was submitted (wall clock)",
    "started_at": "when a job started (wall clock)",
    "finished_at": "when a job finished (wall clock)",
    "expires_at": "when an export job's file expires (wall clock + retention)",
    # job ids are random (uuid4)
    "job_id": "a job's id is random",
    "status_url": "names the random job id",
    "download_url": "names the random job id",
    # where the data lives: the backend's own description
    "backend": "the backend's name",
    "database": "the DuckDB file",
    "warehouse": "the Iceberg warehouse",
    "catalog": "the Iceberg catalog",
    "namespace": "the Iceberg namespace",
    "snapshots": "a version's Iceberg table snapshot ids (null on DuckDB)",
    "lake_commit": "`status`: the Iceberg commit read (Iceberg only)",
    "lake_commit_at": "`status`: when it was written (Iceberg only)",
    "lake_commit_by": "`status`: the process that wrote it (Iceberg only)",
    "location": "`migrate --check`: the DuckDB file or the lake's warehouse",
    "store_version": "`migrate --check`: a DuckDB file's newest migration; a lake has none "
    "(None: its schema is checked column by column, storage/schema.py)",
}
"""Fields whose values are left out of every comparison (anywhere in a JSON answer, a
CLI record, an export table or a /metrics sample), with the reason each may differ
between two stores holding the same data. Everything else, build versions, run ids and
version ids included, must be equal."""

JOB_EXCLUDED: dict[str, str] = {
    "id": "a job's id is random",
    "status": "in a 202 answer only: whether the job started yet (its end is compared)",
}
"""Fields left out of a job's answers only (``id`` and ``status`` are compared elsewhere:
an index definition's id, a health component's status...)."""

EXCLUDED_TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "index_definitions": {
        "created_at": "SQL now(): the wall clock",
        "updated_at": "SQL now(): the wall clock",
    },
    "index_builds": {"built_at": EXCLUDED["built_at"], "duration_ms": EXCLUDED["duration_ms"]},
    "versions": {"snapshots": EXCLUDED["snapshots"]},
    "api_jobs": {
        "job_id": EXCLUDED["job_id"],
        "created_at": EXCLUDED["created_at"],
        "started_at": EXCLUDED["started_at"],
        "finished_at": EXCLUDED["finished_at"],
    },
}
"""Stored columns left out when the stores' rows are compared."""

JSON_COLUMNS: dict[str, set[str]] = {"api_jobs": {"result", "error"}}
"""JSON text columns compared as documents with the EXCLUDED fields masked (a job's
result holds its build's built_at, its file's size and expiry)."""

EXCLUDED_ROUTES: dict[str, str] = {
    "/docs/static/{name}": "Swagger UI's files, from the installed package (no store read)",
    "/static/{path:path}": "the dashboard's files, from the package (no store read)",
}
"""GET routes not asked for (every other GET route of the app must be)."""

SCRAPE_TIME_METRICS = {name for name in metrics.SCRAPE_TIME_METRICS if name != metrics.DATA_AGE}
"""The /metrics samples compared: the gauges read from the store at scrape time but the
data's age (EXCLUDED). The others count and time this process's own requests, builds
and exports, and every app of a test process shares them."""

EXCLUDED_COMMANDS: dict[str, str] = {
    "backup": "a write: a copy of the store (in the backend's own form, by design)",
    "restore": "a write: replaces the store",
    "ingest": "a write (the market is ingested through the same code into both)",
    "quickstart": "a write: ingests a synthetic market and builds",
    "daily": "a write: the daily cycle (ingest, build), at the wall clock",
    "scheduler": "runs the daily cycle until stopped",
    "serve": "runs the API server (the app's answers are compared here)",
    "worker": "runs queued API jobs until stopped (the API's jobs are compared here)",
    "rollback": "a write (tests/storage/test_rollback.py)",
    "migrate-storage": "copies the store into the other backend",
    "indices add": "a write",
    "indices remove": "a write",
    "lake compact": "Iceberg only: rewrites the lake's files",
    "lake expire": "Iceberg only: drops old lake snapshots",
    "warehouse ddl": "SQL from its options (no store read; --from-lake: Iceberg only)",
    "warehouse publish": "a write, to another database",
}
"""CLI commands not run (every other command of the CLI must be)."""

MASK = "<excluded>"

# ---------------------------------------------------------------------- the market
CALENDAR = get_calendar()
SESSIONS = [d for d in CALENDAR.session_dates() if d >= dt.date(2024, 1, 2)][:63]
FIRST_RUN_DAYS = SESSIONS[:45]  # through 2024-03-06
SECOND_RUN_DAYS = SESSIONS[45:]  # through 2024-04-02, just after the March reference date
T1 = dt.datetime(2024, 3, 7, 12, 0)  # each run's known_at (the store clock)
T2 = dt.datetime(2024, 4, 3, 12, 0)
T3 = dt.datetime(2024, 4, 4, 12, 0)
AS_OF = dt.datetime(2024, 3, 8, 0, 0)  # knows the first run only
AS_OF_TEXT = "2024-03-08T00:00:00Z"

USER_INDEX = {
    "id": "mine",
    "name": "Capped tech and health 10, monthly, announced 3 sessions ahead",
    "top_n": 10,
    "weighting": "capped_market_cap",
    "cap": 0.2,
    "rebalance": "monthly",
    "effective_lag": 3,
    "universe": {"sectors": ["Information Technology", "Health Care"]},
}
SECTOR_INDEX = "ew-sector-health-care"
INDICES = ["ew100", "ew-tech50", SECTOR_INDEX, "mcap50-ucits", "mine"]
AS_OF_INDEX = "mine"  # also built as of AS_OF
AS_OF_VERSION_INDEX = "ew-tech50"  # also built as of the first run's version

SECTORS = {
    "Information Technology": [f"T{c}" for c in "ABCDEFGHIJKL"],
    "Health Care": [f"H{c}" for c in "ABCDEFG"],
    "Financials": [f"F{c}" for c in "ABCDEF"],
    "Energy": [f"E{c}" for c in "ABCDE"],
}


@dataclass(frozen=True)
class Market:
    securities: list[dict[str, Any]]
    runs: list[list[dict[str, Any]]]
    """The price rows of each ingestion run."""
    sector_change: list[dict[str, Any]]
    """The securities of the second run (one moves sector)."""


def make_market() -> Market:
    """The market, deterministic: random walks plus the crafted cases."""
    rng = random.Random(20240102)
    securities = [sec(s, sector) for sector, symbols in SECTORS.items() for s in symbols]
    securities += [
        sec("TIEA"),  # TIEA and TIEB: the same market cap every day (a tie by symbol)
        sec("TIEB"),
        sec("HALT"),  # no bars for five sessions
        sec("IPOX", "Health Care"),  # listed from the 31st session
        sec("DLST", "Financials"),  # delisted after the 41st session
        sec("SPLT"),  # a 2:1 split, its shares inferred
        sec("DIVD", "Energy"),  # dividends
        sec("GOOA", company_id="GOO"),  # two share classes of one company
        sec("GOOB", company_id="GOO"),
        sec("ETFX", type="ETF"),  # not a common stock
    ]
    for s in securities:
        s.setdefault("company_id", None)
    walk: dict[str, list[dict[str, Any]]] = {}
    for s in securities:
        symbol = s["symbol"]
        close = rng.uniform(20, 200)
        shares = float(rng.randrange(1_000_000, 60_000_000, 1000))
        rows = []
        for i, day in enumerate(SESSIONS):
            close = round(close * (1 + rng.gauss(0.0005, 0.02)), 4)
            rows.append(px(day.isoformat(), symbol, close, shares=shares))
            if symbol == "SPLT":
                if i == 25:  # 2:1: half the price, twice the shares, inferred
                    close = round(close / 2, 4)
                    rows[-1] = px(day.isoformat(), symbol, close, shares=None, split_ratio=2)
                elif i > 0:
                    rows[-1]["shares_outstanding"] = None
        walk[symbol] = rows
    walk["TIEB"] = [{**r, "symbol": "TIEB"} for r in walk["TIEA"]]
    walk["HALT"] = [r for i, r in enumerate(walk["HALT"]) if not 33 <= i <= 37]
    walk["IPOX"] = walk["IPOX"][30:]
    walk["DLST"] = walk["DLST"][:41]
    for i in (20, 50):
        walk["DIVD"][i]["dividend"] = 1.25
    walk["TC"][40]["dividend"] = 0.5
    rows = [r for symbol_rows in walk.values() for r in symbol_rows]
    first_days = {d.isoformat() for d in FIRST_RUN_DAYS}
    first = [r for r in rows if r["date"] in first_days]
    second = [r for r in rows if r["date"] not in first_days]
    first += [  # dirty rows: each rejected with its reason
        {**walk["TA"][5], "close": walk["TA"][5]["close"] + 1},  # conflicting duplicate
        px(SESSIONS[7].isoformat(), "FB", "abc"),  # not a number
        px(SESSIONS[8].isoformat(), "FC", -5.0),  # negative close
        px("2024-01-13", "TD", 10.0),  # a Saturday
        px(SESSIONS[9].isoformat(), "EA", 10.0, shares=0),  # no shares
        px(SESSIONS[9].isoformat(), "ZZZZ", 10.0),  # unknown security
    ]
    # the second run corrects three past closes of TB and TIE* stays tied
    for i in (10, 11, 12):
        second.append({**walk["TB"][i], "close": round(walk["TB"][i]["close"] * 1.1, 4)})
    second.append(px("2024-03-29", "TE", 10.0))  # Good Friday: not a session
    moved = [dict(s) for s in securities]
    for s in moved:
        if s["symbol"] == "FA":
            s["sector"] = "Health Care"  # a sector change: enters the sector index
    # the third run corrects two recent bars and the split day's close
    third = [
        {**walk["TC"][60], "close": round(walk["TC"][60]["close"] * 0.9, 4)},
        {**walk["HA"][62], "close": round(walk["HA"][62]["close"] * 1.05, 4)},
        {**walk["SPLT"][25], "close": round(walk["SPLT"][25]["close"] * 1.01, 4)},
    ]
    return Market(securities, [first, second, third], moved)


class Clock:
    """The store clock while the market is made (naive UTC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def build(store: DuckDBStore, ids: list[str], **point: Any) -> None:
    for result in IndexBuilder(store, store.calendar).build(ids, **point):
        result.raise_for_failure()


def write_market_files(folder: Path, market: Market) -> list[dict[str, str]]:
    """The file provider's parameters of each run, its files written in ``folder``."""
    sec_columns = [*SECURITY_COLUMNS, "company_id"]
    runs = []
    for n, (securities, prices) in enumerate(
        zip([market.securities, *[market.sector_change] * 2], market.runs, strict=True), 1
    ):
        sec_file = write_csv(
            folder / f"run{n}-securities.csv",
            sec_columns,
            [[s.get(c) for c in sec_columns] for s in securities],
        )
        px_file = write_csv(
            folder / f"run{n}-prices.csv",
            PRICE_COLUMNS,
            [[p.get(c) for c in PRICE_COLUMNS] for p in prices],
        )
        runs.append({"securities": str(sec_file), "prices": str(px_file)})
    return runs


def make_market_store(backend: str, folder: Path, runs: list[dict[str, str]]) -> None:
    """The market (the file provider's parameters of each run) ingested and built into
    a new store of ``backend`` in ``folder``."""
    clock = Clock(T1)
    store = open_store(backend, folder, clock=clock)
    try:
        run_ingestion(store, "file", runs[0])
        clock.now = T1 + dt.timedelta(hours=1)
        add_definition(store, parse_definition(USER_INDEX))
        build(store, ["ew100", "ew-tech50"])
        first_run = next(v for v in store.versions(1000, "ingest") if v.run_id == 1)
        clock.now = T2
        run_ingestion(store, "file", runs[1])
        clock.now = T2 + dt.timedelta(hours=1)
        build(store, INDICES)
        build(store, [AS_OF_INDEX], as_of=AS_OF)
        build(store, [AS_OF_VERSION_INDEX], as_of_version=first_run.version_id)
        clock.now = T3
        run_ingestion(store, "file", runs[2])
        clock.now = T3 + dt.timedelta(hours=1)
        build(store, INDICES)  # restated from the corrected days
    finally:
        store.close()


def first_run_version(folder: Path, backend: str) -> int:
    """The version of the first ingestion run (what ``as_of_version`` reads)."""
    store = open_store(backend, folder, builtins=False)
    try:
        return next(v for v in store.versions(1000, "ingest") if v.run_id == 1).version_id
    finally:
        store.close()


# ---------------------------------------------------------------------- comparing
def masked(value: Any) -> Any:
    """``value`` with the EXCLUDED fields' values replaced by MASK, at any depth."""
    if isinstance(value, dict):
        return {k: MASK if k in EXCLUDED else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def masked_table(rows: list[list[Any]]) -> list[list[Any]]:
    """A table (header first) with the EXCLUDED columns, and the values of the EXCLUDED
    rows of a field/value table, masked."""
    header = rows[0] if rows else []
    hidden = {i for i, name in enumerate(header) if name in EXCLUDED}
    out = []
    for row in rows:
        cells = [MASK if i in hidden else cell for i, cell in enumerate(row)]
        if cells and cells[0] in EXCLUDED:
            cells = [cells[0]] + [MASK] * (len(cells) - 1)
        out.append(cells)
    return out


def exclusions_met(value: Any) -> Iterator[str]:
    """The EXCLUDED names whose values were masked in ``value`` (answers)."""
    if isinstance(value, dict):
        yield from (k for k, v in value.items() if v == MASK)
        for v in value.values():
            yield from exclusions_met(v)
    elif isinstance(value, list):
        if value and isinstance(value[0], list):  # a table: header first
            header, *rows = value
            yield from (c for c in header if isinstance(c, str) and c in EXCLUDED)
            yield from (r[0] for r in rows if r and isinstance(r[0], str) and r[0] in EXCLUDED)
        for v in value:
            yield from exclusions_met(v)


def file_content(kind: str, data: bytes) -> dict[str, Any]:
    """An export file as comparable values (the file's bytes differ: zip and workbook
    metadata hold times). A zip's CSV files: their exact text, unless a column or a
    field of theirs is EXCLUDED (then their cells, masked); its Parquet files and a
    workbook's sheets: their cells, masked."""
    if kind == "xlsx":
        book = openpyxl.load_workbook(io.BytesIO(data))
        return {
            sheet.title: masked_table([list(row) for row in sheet.iter_rows(values_only=True)])
            for sheet in book.worksheets
        }
    tables: dict[str, Any] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            raw = archive.read(name)
            if name.endswith(".csv"):
                rows = list(csv.reader(io.StringIO(raw.decode())))
                hidden = masked_table(rows)
                tables[name] = raw.decode() if hidden == rows else hidden
            else:
                table = pq.read_table(io.BytesIO(raw))
                rows = [table.column_names, *([*r.values()] for r in table.to_pylist())]
                tables[name] = masked_table(rows)
    return tables


def metrics_content(text: str) -> list[str]:
    """The /metrics samples read from the store (SCRAPE_TIME_METRICS), sorted."""
    samples = []
    for line in text.splitlines():
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if not line.startswith("#") and name in SCRAPE_TIME_METRICS:
            samples.append(line)
    return sorted(samples)


def _document(text: str | None) -> str | None:
    """A JSON text column with the EXCLUDED fields masked (sorted keys)."""
    return None if text is None else json.dumps(masked(json.loads(text)), sort_keys=True)


def differences(a: Any, b: Any, path: str, names: tuple[str, str]) -> Iterator[str]:
    """Where two answers differ: a path and both values for each difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if key in a and key in b:
                yield from differences(a[key], b[key], f"{path}.{key}", names)
            elif MASK not in (a.get(key), b.get(key)):  # an excluded field may be on one only
                yield f"{path}.{key}: only on {names[0] if key in a else names[1]}"
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{i}]", names)
    elif a != b:
        yield f"{path}: {names[0]} {a!r:.300} != {names[1]} {b!r:.300}"


def assert_same(reference: dict[str, Any], answers: dict[str, Any], names: tuple[str, str]) -> None:
    """Every answer equals the reference's (each difference named in the failure)."""
    assert list(reference) == list(answers)
    found = [
        d
        for label in reference
        for d in differences(reference[label], answers[label], label, names)
    ]
    assert not found, f"{len(found)} differences:\n" + "\n".join(found[:60])


# ---------------------------------------------------------------------- the API
def api_requests(first_run_version: int) -> list[tuple[str, str, str, Any]]:
    """(label, method, path, params or body) of every read, in order."""
    last, saturday = SESSIONS[-1].isoformat(), "2024-02-10"
    days = [SESSIONS[0], SESSIONS[10], SESSIONS[26], SESSIONS[35], SESSIONS[44], SESSIONS[61]]
    out: list[tuple[str, str, str, Any]] = [
        ("indices", "GET", "/indices", None),
        ("providers", "GET", "/providers", None),
        ("flags", "GET", "/admin/flags", None),
        ("live", "GET", "/health/live", None),
        ("openapi", "GET", "/openapi.json", None),
        ("dashboard", "GET", "/", None),
        ("docs", "GET", "/docs", None),
        ("redoc", "GET", "/redoc", None),
        ("unknown index", "GET", "/indices/nope", None),
    ]
    for index in [*INDICES, "ew-sector-energy"]:  # the last one is never built
        out += [
            (f"show {index}", "GET", f"/indices/{index}", None),
            (f"performance {index}", "GET", "/index-performance", {"index": index}),
            (f"changes {index}", "GET", "/composition-changes", {"index": index}),
            (f"composition {index}", "GET", "/index-composition", {"index": index}),
            (f"next {index}", "GET", "/index-composition/next", {"index": index}),
        ]
    for index in ("ew100", "mine", "mcap50-ucits"):
        for return_type in ("price", "total", "net_total"):
            params = {"index": index, "return_type": return_type}
            out.append((f"performance {index} {return_type}", "GET", "/index-performance", params))
    window = {"start_date": SESSIONS[20].isoformat(), "end_date": SESSIONS[50].isoformat()}
    for index in ("ew100", "ew-tech50", SECTOR_INDEX):
        out += [
            (
                f"performance {index} window",
                "GET",
                "/index-performance",
                {"index": index, **window},
            ),
            (f"changes {index} window", "GET", "/composition-changes", {"index": index, **window}),
        ]
    for index in ("ew100", "ew-tech50", SECTOR_INDEX, "mine", "mcap50-ucits"):
        for day in [*days, saturday, last]:
            params = {"index": index, "date": str(day)}
            out.append((f"composition {index} {day}", "GET", "/index-composition", params))
    for limit, offset in ((5, 0), (5, 5), (7, 30), (1000, 0), (3, 1000)):
        params = {"index": "ew100", "date": SESSIONS[40].isoformat(), "limit": limit}
        params["offset"] = offset
        out.append((f"composition page {limit} {offset}", "GET", "/index-composition", params))
    as_of = {"index": AS_OF_INDEX, "as_of": AS_OF_TEXT}
    as_version = {"index": AS_OF_VERSION_INDEX, "as_of_version": first_run_version}
    for name, point in (("as of", as_of), ("as of version", as_version)):
        out += [
            (f"performance {name}", "GET", "/index-performance", point),
            (
                f"performance {name} price",
                "GET",
                "/index-performance",
                {**point, "return_type": "price"},
            ),
            (f"changes {name}", "GET", "/composition-changes", point),
            (f"composition {name}", "GET", "/index-composition", point),
            (
                f"composition {name} day",
                "GET",
                "/index-composition",
                {**point, "date": SESSIONS[30].isoformat()},
            ),
        ]
    out += [
        (
            "performance as of, no such build",
            "GET",
            "/index-performance",
            {"index": "ew100", "as_of": AS_OF_TEXT},
        ),
        (
            "performance outside the data",
            "GET",
            "/index-performance",
            {"index": "ew100", "start_date": "2020-01-02"},
        ),
        ("versions", "GET", "/admin/versions", {"limit": 1000}),
        ("versions 3", "GET", "/admin/versions", {"limit": 3}),
    ]
    for kind in ("ingest", "build", "definition"):
        out.append((f"versions {kind}", "GET", "/admin/versions", {"kind": kind}))
    exports = [
        {"index": "ew100", "format": "csv"},
        {"index": "ew100", "format": "parquet"},
        {"index": "ew100", "format": "xlsx"},
        {"index": "mine", "format": "csv", **window},
        {"index": "mcap50-ucits", "format": "xlsx"},
        {"index": AS_OF_INDEX, "format": "csv", "as_of": AS_OF_TEXT},
        {"index": AS_OF_VERSION_INDEX, "format": "parquet", "as_of_version": first_run_version},
    ]
    out += [(f"export {json.dumps(body)}", "POST", "/export-data", body) for body in exports]
    out += [  # jobs last: they write (their records; builds with nothing new to do)
        ("build ew100", "POST", "/build-index", {"index": "ew100"}),
        ("build job", "POST", "/builds", {"indices": INDICES}),
        (
            "export job",
            "POST",
            "/export-data",
            {"index": "ew-tech50", "format": "csv", "async": True},
        ),
        ("ready", "GET", "/health/ready", None),
        ("metrics", "GET", "/metrics", None),
    ]
    return out


def get_routes(app: FastAPI) -> list[str]:
    """The path of every GET route of the app (of included routers too), sorted."""
    found: set[str] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # an included router
            if inner is not None:
                walk(inner.routes, prefix + route.include_context.prefix)
            elif "GET" in (getattr(route, "methods", None) or ()):
                found.add(prefix + route.path)

    walk(app.routes, "")
    found |= {path for path, ops in app.openapi()["paths"].items() if "get" in ops}
    return sorted(found)


def route_pattern(route: str) -> re.Pattern[str]:
    """The paths a route template matches (``{name}``: one segment; ``{name:path}``: any)."""
    parts = re.split(r"(\{[^}]+\})", route)
    return re.compile(
        "".join(
            (".+" if p.endswith(":path}") else "[^/]+") if p.startswith("{") else re.escape(p)
            for p in parts
        )
        + "$"
    )


class Client:
    """A TestClient that remembers the path of every GET it made."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.paths: list[str] = []

    def request(self, method: str, path: str, data: Any = None) -> Response:
        if method == "GET":
            self.paths.append(path)
            return self.client.get(path, params=data)
        return self.client.post(path, json=data)


def api_answer(client: Client, response: Response) -> dict[str, Any]:
    """Status, media type and the body (JSON masked, files as comparable values; a
    job's answer once it finished, with its file)."""
    kind = response.headers.get("content-type", "").split(";")[0]
    answer: dict[str, Any] = {"status": response.status_code, "type": kind}
    if kind.endswith("json"):
        body = response.json()
        if response.status_code == 202 and isinstance(body, dict) and "status_url" in body:
            answer["job"] = finished_job(client, body["status_url"])
            body = {k: v for k, v in body.items() if k not in JOB_EXCLUDED}
        answer["body"] = masked(body)
    elif response.request.url.path == "/metrics":
        answer["body"] = metrics_content(response.text)
    elif kind.startswith("text/"):
        answer["body"] = response.text
    else:
        answer["disposition"] = response.headers.get("content-disposition")
        suffix = (answer["disposition"] or "").rstrip('"').rsplit(".", 1)[-1]
        answer["body"] = file_content(suffix, response.content)
    return answer


def finished_job(client: Client, url: str) -> dict[str, Any]:
    """A job's answer once it ended (and its file's content)."""
    deadline = time.monotonic() + 60
    while True:
        job = client.request("GET", url).json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    out = {"job": masked({k: v for k, v in job.items() if k != "id"})}
    if job.get("download_url"):
        file = client.request("GET", job["download_url"])
        out["file"] = file_content(job["result"]["filename"].rsplit(".", 1)[-1], file.content)
    return out


def api_answers(folder: Path, backend: str, version: int) -> dict[str, Any]:
    """Every API answer of the store, the app's GET routes and the paths asked for."""
    settings = settings_for(backend, folder, rate_limit_enabled=False)
    answers: dict[str, Any] = {}
    app = create_app(settings)
    with TestClient(app) as test_client:
        client = Client(test_client)
        for label, method, path, data in api_requests(version):
            answers[label] = api_answer(client, client.request(method, path, data))
    return {"api": answers, "routes": get_routes(app), "asked": sorted(set(client.paths))}


# ---------------------------------------------------------------------- the CLI
def cli_commands(version: int, out: Path) -> list[list[str]]:
    """Every read command of the CLI (JSON where it has a format), the exports, and a
    build with nothing new to do (last: it writes). Each variant of a read is asked of
    the API above (the same queries); here each command once, with its own options."""
    j = ["--format", "json"]
    as_of, as_version = ["--as-of", AS_OF_TEXT], ["--as-of-version", str(version)]
    window = ["--start", SESSIONS[20].isoformat(), "--end", SESSIONS[50].isoformat()]
    commands: list[list[str]] = [
        ["runs", "--limit", "2", *j],
        ["quarantine", *j],
        ["quarantine", "--run", "1", "--limit", "3", *j],
        ["versions", "--limit", "1000", *j],
        ["versions", "--kind", "build", *j],
        ["indices", "list", *j],
        ["indices", "show", "mine"],
        ["providers", *j],
        ["status", *j],
        ["migrate", "--check", *j],
        ["performance", "-i", "ew100", *window, "--return-type", "total", *j],
        ["performance", "-i", AS_OF_INDEX, *as_of, *j],
        ["changes", "-i", "ew-tech50", *window, *j],
        ["changes", "-i", AS_OF_VERSION_INDEX, *as_version, *j],
        ["composition", "-i", SECTOR_INDEX, *j],
        ["composition", "-i", "mcap50-ucits", "--date", SESSIONS[26].isoformat(), *j],
        ["composition", "-i", AS_OF_INDEX, *as_of, "--date", "2024-02-10", *j],
        ["proforma", "-i", "mine", *j],
        ["proforma", "-i", "ew100", *j],  # nothing announced: an error
        ["performance", "-i", "nope", *j],  # an error
    ]
    for n, (index, fmt, extra) in enumerate(
        [
            ("ew100", "csv", window),
            (AS_OF_VERSION_INDEX, "parquet", as_version),
            (AS_OF_INDEX, "xlsx", as_of),
        ]
    ):
        target = out / f"export-{n}.{'zip' if fmt != 'xlsx' else 'xlsx'}"
        commands.append(["export", "-i", index, "--format", fmt, "-o", str(target), *extra])
    commands.append(["build", "-i", "ew100", "-i", "mine", *j])
    return commands


def command_name(args: list[str]) -> str:
    """The CLI command ``args`` run (``indices show``, ``runs``)."""
    group = typer.main.get_command(cli_app)
    words = []
    for word in args:
        group = getattr(group, "commands", {}).get(word)
        if group is None:
            break
        words.append(word)
    return " ".join(words)


def cli_command_names() -> list[str]:
    """Every command of the CLI (groups' commands as ``group command``), sorted."""

    def walk(command: Any, prefix: str) -> Iterator[str]:
        subs = getattr(command, "commands", None)
        if not subs:
            yield prefix
            return
        for name, sub in subs.items():
            yield from walk(sub, f"{prefix} {name}".strip())

    return sorted(walk(typer.main.get_command(cli_app), ""))


def cli_answers(folder: Path, backend: str, version: int) -> dict[str, Any]:
    """Every CLI answer of the store: exit code and JSON output (masked), or the error
    message, or an export's file (each command runs as on a command line: it opens the
    store the environment names, reads and closes it)."""
    settings = settings_for(backend, folder)
    env = {
        "INDEX_BUILDER_STORAGE": settings.storage,
        "INDEX_BUILDER_DATABASE": str(settings.database),
        "INDEX_BUILDER_WAREHOUSE": settings.warehouse,
        "INDEX_BUILDER_DUCKDB_THREADS": "2",
    }
    out = folder / "cli-exports"
    out.mkdir(exist_ok=True)
    answers: dict[str, Any] = {}
    runner = CliRunner()
    for args in cli_commands(version, out):
        get_settings.cache_clear()
        result = runner.invoke(cli_app, ["-q", *args], env=env)
        label = " ".join(a.replace(str(out), "<out>") for a in args)
        answer: dict[str, Any] = {"exit": result.exit_code}
        if result.exit_code != 0:
            answer["stderr"] = result.stderr
        elif args[0] == "export":
            target = Path(args[args.index("-o") + 1])
            answer["file"] = file_content(args[args.index("--format") + 1], target.read_bytes())
            answer["stdout"] = result.stdout.replace(str(out), "<out>").split("(")[0]
        else:
            answer["stdout"] = masked(json.loads(result.stdout))
        answers[label] = answer
    get_settings.cache_clear()
    return {"cli": answers, "commands": sorted({command_name(a) for a in cli_commands(0, out)})}


# ---------------------------------------------------------------------- the stores
def store_contents(folder: Path, backend: str) -> dict[str, Any]:
    """The store's numbering (runs, builds, versions) and its rows, table by table
    (EXCLUDED_TABLE_COLUMNS left out, JSON_COLUMNS masked), once the reads are done."""
    store = open_store(backend, folder, builtins=False)
    try:
        states = {i: store.build_state(i) for i in INDICES}
        numbers = {
            "runs": [(r["run_id"], r["status"]) for r in store.ingest_runs(100)],
            "builds": {i: (s.version, s.data_run_id) for i, s in states.items() if s},
            "as_of": [s.version for s in store.as_of_builds(AS_OF_INDEX)],
            "as_of_version": [s.version for s in store.as_of_builds(AS_OF_VERSION_INDEX)],
            "versions": [(v.version_id, v.kind, v.run_id) for v in store.versions(1000)],
        }
        rows = {}
        for name, table in lake_tables(store).items():
            cur = store.cursor().execute(f'SELECT * FROM "{name}" LIMIT 0')  # a known name
            columns = [d[0] for d in cur.description]
            hidden = EXCLUDED_TABLE_COLUMNS.get(name, {})
            assert not set(hidden) - set(columns), f"{name}: excluded columns it lacks"
            documents = JSON_COLUMNS.get(name, set())
            keep = [(i, c in documents) for i, c in enumerate(columns) if c not in hidden]
            rows[name] = sorted(
                (tuple(_document(row[i]) if doc else row[i] for i, doc in keep) for row in table),
                key=repr,
            )
        return {"numbers": numbers, "rows": rows}
    finally:
        store.close()


@dataclass(frozen=True)
class Answers:
    """What one backend answered (plain data: it may travel between xdist workers)."""

    api: dict[str, Any]
    routes: list[str]
    """The app's GET routes."""
    asked: list[str]
    """The paths the API was asked for."""
    cli: dict[str, Any]
    commands: list[str]
    """The CLI commands run."""
    numbers: dict[str, Any]
    rows: dict[str, list[tuple[Any, ...]]]


def compute_answers(backend: str, folder: Path, runs: list[dict[str, str]]) -> Answers:
    """Make the market's store of ``backend`` in ``folder`` and ask it everything."""
    make_market_store(backend, folder, runs)
    version = first_run_version(folder, backend)
    return Answers(
        **api_answers(folder, backend, version),
        **cli_answers(folder, backend, version),
        **store_contents(folder, backend),
    )


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The folder the xdist workers of this run share (None: no xdist)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return None
    shared = tmp_path_factory.getbasetemp().parent / "same-answers"
    shared.mkdir(exist_ok=True)
    return shared


_COMPUTED: dict[tuple[Path, str], Any] = {}
"""What this process computed, by (base temporary folder, name)."""


def once_per_run(
    name: str, tmp_path_factory: pytest.TempPathFactory, compute: Callable[[], Any]
) -> Any:
    """``compute()`` (plain data) once per test run: again in this process, or in another
    xdist worker of the run (the second one waits for the first one's result, under a
    lock, instead of computing it again)."""
    key = (tmp_path_factory.getbasetemp(), name)
    if key not in _COMPUTED:
        _COMPUTED[key] = _shared(name, tmp_path_factory, compute)
    return _COMPUTED[key]


def _shared(name: str, tmp_path_factory: pytest.TempPathFactory, compute: Callable[[], Any]) -> Any:
    shared = shared_folder(tmp_path_factory)
    if shared is None:
        return compute()
    done = shared / f"{name}.pickle"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if done.exists():
            return pickle.loads(done.read_bytes())
        result = compute()
        partial = done.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(result))
        partial.replace(done)
        return result


@pytest.fixture(scope="module")
def market_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """The market's files, written once for every store (a run records their paths)."""
    folder = shared_folder(tmp_path_factory) or tmp_path_factory.mktemp("same-answers")
    return list(
        once_per_run("files", tmp_path_factory, lambda: write_market_files(folder, make_market()))
    )


def backend_answers(
    backend: str, tmp_path_factory: pytest.TempPathFactory, runs: list[dict[str, str]]
) -> Answers:
    """What ``backend`` answered, computed once per run."""

    def compute() -> dict[str, Any]:
        folder = tmp_path_factory.mktemp(f"same-answers-{backend}")
        return asdict(compute_answers(backend, folder, runs))

    return Answers(**once_per_run(backend, tmp_path_factory, compute))


@pytest.fixture(scope="module")
def answers(
    backend: str, tmp_path_factory: pytest.TempPathFactory, market_runs: list[dict[str, str]]
) -> Answers:
    """What the backend under test answered."""
    return backend_answers(backend, tmp_path_factory, market_runs)


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, market_runs: list[dict[str, str]]
) -> Answers:
    """What the REFERENCE backend answered."""
    return backend_answers(REFERENCE, tmp_path_factory, market_runs)


@pytest.fixture(scope="module")
def every_answer(
    tmp_path_factory: pytest.TempPathFactory, market_runs: list[dict[str, str]]
) -> list[Answers]:
    """What every backend answered."""
    return [backend_answers(b, tmp_path_factory, market_runs) for b in BACKENDS]


# ---------------------------------------------------------------------- the tests
def test_every_get_route_and_cli_command_is_asked_and_every_exclusion_met(
    backend: str, answers: Answers, every_answer: list[Answers]
) -> None:
    """Nothing slips through: a GET route of the app (as configured for the backend) or
    a CLI command neither asked nor excluded fails; so does a stale exclusion."""
    routes = set(answers.routes)
    assert not set(EXCLUDED_ROUTES) - routes, "an excluded route the app no longer has"
    unasked = [
        route
        for route in sorted(routes - set(EXCLUDED_ROUTES))
        if not any(route_pattern(route).match(path) for path in answers.asked)
    ]
    assert not unasked, f"GET routes neither compared nor in EXCLUDED_ROUTES: {unasked}"
    commands = set(cli_command_names())
    assert not set(EXCLUDED_COMMANDS) - commands, "an excluded command the CLI no longer has"
    unrun = sorted(commands - set(EXCLUDED_COMMANDS) - set(answers.commands))
    assert not unrun, f"CLI commands neither compared nor in EXCLUDED_COMMANDS: {unrun}"
    met = set(exclusions_met([[a.api, a.cli] for a in every_answer]))
    assert not set(EXCLUDED) - met, f"EXCLUDED fields no answer holds: {set(EXCLUDED) - met}"


def test_every_api_read_answers_as_on_the_reference(
    backend: str, answers: Answers, reference: Answers
) -> None:
    api = answers.api
    # the answers are real ones, not errors alike: only these are errors
    errors = {label for label, a in api.items() if a["status"] not in (200, 202)}
    assert errors == {
        "unknown index",
        *(f"next {i}" for i in ("ew100", "ew-tech50", SECTOR_INDEX)),  # nothing announced
        *(f"{r} ew-sector-energy" for r in ("performance", "changes", "composition", "next")),
        "performance as of, no such build",
        "performance outside the data",
    }
    assert api["next mine"]["body"]["constituents"]
    assert api["build job"]["job"]["job"]["status"] == "succeeded"
    assert api["export job"]["job"]["file"]
    assert api["metrics"]["body"] and "index_builder_last_build_success" in str(api["metrics"])
    if backend != REFERENCE:
        assert_same(reference.api, api, (REFERENCE, backend))


def test_every_cli_read_answers_as_on_the_reference(
    backend: str, answers: Answers, reference: Answers
) -> None:
    failed = [label for label, a in answers.cli.items() if a["exit"] != 0]
    assert failed == ["proforma -i ew100 --format json", "performance -i nope --format json"]
    if backend != REFERENCE:
        assert_same(reference.cli, answers.cli, (REFERENCE, backend))


def test_runs_builds_and_versions_are_numbered_alike(
    backend: str, answers: Answers, reference: Answers
) -> None:
    numbers = answers.numbers
    assert [r for r, _ in numbers["runs"]] == [3, 2, 1]
    assert set(numbers["builds"]) == set(INDICES)  # every index built
    assert numbers["as_of"] and numbers["as_of_version"]
    assert numbers == reference.numbers


def test_the_stores_hold_the_same_rows(backend: str, answers: Answers, reference: Answers) -> None:
    mine, theirs = answers.rows, reference.rows
    assert len(mine["quarantine"]) >= 6 and len(mine["price_versions"]) >= 3
    differ = [name for name in theirs if mine.get(name) != theirs[name]]
    assert not differ, {
        name: sorted(set(mine.get(name, [])) ^ set(theirs[name]), key=repr)[:6] for name in differ
    }
