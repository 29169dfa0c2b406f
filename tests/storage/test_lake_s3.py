"""The Iceberg backend on object storage: a lake in ``s3://bucket/lake`` of a real S3
endpoint (moto's server, tests/s3_server.py) and a SQLite catalog file, written and
read by the real pyiceberg, DuckDB and s3fs.

The same market, definitions, ingestions and builds (at the same moments, on a fixed
clock) go into three stores: the S3 lake, a lake in a local folder and a DuckDB file.
Every read (store and API) is then the same on the three; the lake is Iceberg in the
bucket (metadata and data files), with no DuckDB file anywhere; a second store opened
on the same catalog and warehouse reads it. When the object store goes away, reads
that touch the bars answer 503 storage-unavailable within seconds (refused or hung
connections), readiness fails, and both come back with the store.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.calendar import get_calendar
from index_builder.engine.definitions import parse_definition
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.services.queries import IndexReader
from index_builder.settings import Settings
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.iceberg.lakefs import INFO_SECONDS
from index_builder.storage.iceberg.location import LakeLocation, ObjectStoreOptions
from index_builder.storage.iceberg.store import IcebergStore
from index_builder.storage.tables import PERSISTENT_TABLES

from s3_server import S3Server

START = dt.date(2024, 1, 2)
FIRST_KNOWN = dt.datetime(2024, 2, 1, 22, 0)
"""When the first ingestion is known (naive UTC, the stores' fixed clock)."""
SECOND_KNOWN = dt.datetime(2024, 3, 1, 22, 0)
AS_OF = FIRST_KNOWN + dt.timedelta(hours=1)
"""A moment between the two ingestions: as-of reads see the first one only."""
TIMEOUT = 2.0
"""Object-store connect and read timeout of every S3 store here (seconds)."""
LAGGED = {
    "id": "t-lag2",
    "name": "Top 10, effective two sessions after selection",
    "top_n": 10,
    "effective_lag": 2,
}
INDICES = ("ew100", "t-lag2")
BACKENDS = ("s3", "local", "duckdb")


class FixedClock:
    """The stores' clock: the moment the test sets (the same on every store)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def s3_location(bucket: str, folder: Path) -> LakeLocation:
    """The lake ``s3://<bucket>/lake`` with a SQLite catalog file in ``folder``
    (endpoint and credentials: the AWS_* variables of the S3 server)."""
    return LakeLocation.resolve(
        f"s3://{bucket}/lake",
        f"sqlite:///{folder / 'catalog.db'}",
        options=ObjectStoreOptions.from_environment(None, TIMEOUT),
    )


def s3_settings(bucket: str, folder: Path, **extra: Any) -> Settings:
    """API settings over the S3 lake of :func:`s3_location` (no Redis, no cache)."""
    values: dict[str, Any] = {
        "storage": "iceberg",
        "warehouse": f"s3://{bucket}/lake",
        "catalog_uri": f"sqlite:///{folder / 'catalog.db'}",
        "database": folder / "db" / "index_builder.duckdb",  # must never be created
        "s3_timeout_seconds": TIMEOUT,
        "redis_url": None,
        "local_cache_entries": 0,
        "duckdb_threads": 2,
    }
    values.update(extra)
    return Settings(**values)


def _open(backend: str, folder: Path, clock: FixedClock, bucket: str) -> DuckDBStore:
    options: dict[str, Any] = {"calendar": get_calendar(), "threads": 2, "clock": clock}
    store: DuckDBStore
    if backend == "s3":
        store = IcebergStore(s3_location(bucket, folder), **options)
    elif backend == "local":
        store = IcebergStore(LakeLocation.resolve(str(folder / "lake"), None), **options)
    else:
        store = DuckDBStore(folder / "index_builder.duckdb", **options)
    return store.open()


def _fill(store: DuckDBStore, clock: FixedClock) -> None:
    """Two ingestions (the second corrects and extends the first), a user definition
    with an effective lag (an announced selection), two indices built, an as-of build."""
    clock.now = FIRST_KNOWN
    ensure_builtins(store)
    add_definition(store, parse_definition(LAGGED))
    run_ingestion(store, "synthetic", {"symbols": 16, "days": 20, "start": START, "seed": 7})
    clock.now = SECOND_KNOWN
    # the same generator over more days: every stored bar is corrected, 10 days added
    run_ingestion(store, "synthetic", {"symbols": 16, "days": 30, "start": START, "seed": 7})
    builder = IndexBuilder(store, store.calendar)
    assert not [r.error for r in builder.build(list(INDICES)) if r.failed]
    assert not [r.error for r in builder.build(["ew100"], as_of=AS_OF) if r.failed]


def _store_reads(store: DuckDBStore) -> dict[str, Any]:
    """What the store serves through IndexReader, by read: levels, compositions on
    several days (now and as of AS_OF), changes, the announcement."""
    reader = IndexReader(store, store.calendar)
    out: dict[str, Any] = {}
    for index in INDICES:
        state = store.build_state(index)
        assert state is not None
        days = store.built_days(index)
        out[f"{index} days"] = days
        out[f"{index} levels"] = store.read_levels(
            index, state.base_date, state.built_through
        ).to_pylist()
        for day in (days[0], days[len(days) // 3], days[len(days) // 2], days[-1]):
            out[f"{index} composition {day}"] = reader.composition(index, day).rows()
        out[f"{index} changes"] = reader.changes(index)[1]
    out["t-lag2 announcement"] = reader.announcement("t-lag2")
    as_of_day = store.built_days("ew100")[5]
    out["ew100 composition as of"] = reader.composition("ew100", as_of_day, AS_OF).rows()
    out["ew100 composition now"] = reader.composition("ew100", as_of_day).rows()
    out["ew100 changes as of"] = reader.changes("ew100", as_of=AS_OF)[1]
    return out


def _api_requests(days: list[dt.date]) -> list[str]:
    stamp = AS_OF.isoformat() + "Z"
    requests = ["/indices"]
    for index in INDICES:
        requests += [
            f"/indices/{index}",
            f"/index-performance?index={index}",
            f"/index-composition?index={index}",
            f"/composition-changes?index={index}",
        ]
        requests += [f"/index-composition?index={index}&date={d}" for d in days]
    return [
        *requests,
        "/index-composition/next?index=t-lag2",
        f"/index-performance?index=ew100&as_of={stamp}",
        f"/index-composition?index=ew100&date={days[0]}&as_of={stamp}",
        f"/composition-changes?index=ew100&as_of={stamp}",
    ]


def _api_answers(settings: Settings, requests: list[str]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        for request in requests:
            response = client.get(request)
            assert response.status_code == 200, (request, response.text)
            answers[request] = response.json()
    return answers


_MOMENTS = frozenset({"built_at", "created_at", "updated_at", "finished_at", "started_at"})


WALL_CLOCK_COLUMNS = {
    "index_definitions": ("created_at", "updated_at"),
    "index_builds": ("built_at", "duration_ms"),
    "versions": ("snapshots",),  # the lake's snapshot ids (random; NULL in DuckDB)
}
"""Columns the engine stamps with the wall clock (not the stores' clock), or that
only a lake fills: the only values two stores filled alike may differ in."""


def _tables(store: DuckDBStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every persistent table's rows, sorted, without :data:`WALL_CLOCK_COLUMNS`."""
    cur = store.cursor()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name in PERSISTENT_TABLES:  # names and columns from the code, never user text
        skip = WALL_CLOCK_COLUMNS.get(name)
        columns = f"* EXCLUDE ({', '.join(skip)})" if skip else "*"
        out[name] = sorted(cur.execute(f'SELECT {columns} FROM "{name}"').fetchall(), key=repr)
    return out


def _months(store: DuckDBStore) -> list[str]:
    """The months holding stored bars, ``YYYY-MM``."""
    rows = (
        store.cursor()
        .execute("SELECT DISTINCT strftime(date, '%Y-%m') FROM prices ORDER BY 1")
        .fetchall()
    )
    return [str(row[0]) for row in rows]


def _without_build_moments(value: Any) -> Any:
    """``value`` without the wall-clock moments a build stamps itself (not the stores'
    clock): the only fields that may differ between two stores built alike."""
    if isinstance(value, dict):
        return {k: _without_build_moments(v) for k, v in value.items() if k not in _MOMENTS}
    if isinstance(value, list):
        return [_without_build_moments(v) for v in value]
    return value


def _point_at(server: S3Server, mp: pytest.MonkeyPatch) -> None:
    """Start ``server`` and point the AWS_* variables at it (nothing else)."""
    server.start()
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        mp.delenv(name, raising=False)
    mp.delenv("INDEX_BUILDER_S3_ENDPOINT", raising=False)
    for name, value in server.env().items():
        mp.setenv(name, value)


@dataclass
class Lakes:
    """The three stores' reads and what the S3 lake left behind."""

    bucket: str
    folder: Path
    store_reads: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)
    api: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    second_reader: dict[str, Any] = field(default_factory=dict)
    scratch_left: list[str] = field(default_factory=list)
    months: list[str] = field(default_factory=list)
    """The months of the stored bars (``YYYY-MM``), from the DuckDB store."""


@pytest.fixture(scope="module")
def lakes(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakes]:
    """The three stores filled alike and read (the S3 one also through a second store
    opened before the writes, and through the API, which opens its own)."""
    root = tmp_path_factory.mktemp("lakes")
    with pytest.MonkeyPatch.context() as mp:
        _point_at(s3_server, mp)
        scratch_root = root / "tmp"  # where the lake's scratch databases go (and go away)
        scratch_root.mkdir()
        mp.setattr(tempfile, "tempdir", str(scratch_root))
        bucket = s3_server.create_bucket()
        lakes = Lakes(bucket, root / "s3")
        folders = {backend: root / backend for backend in BACKENDS}
        for backend in BACKENDS:
            folders[backend].mkdir()
            clock = FixedClock(FIRST_KNOWN)
            store = _open(backend, folders[backend], clock, bucket)
            try:
                second = None
                if backend == "s3":  # another instance on the same catalog and warehouse
                    second = IcebergStore(
                        s3_location(bucket, folders[backend]), calendar=get_calendar(), threads=2
                    ).open()
                _fill(store, clock)
                lakes.store_reads[backend] = _store_reads(store)
                lakes.tables[backend] = _tables(store)
                if backend == "duckdb":
                    lakes.months = _months(store)
                if second is not None:
                    try:
                        lakes.second_reader["refreshed"] = second.refresh(force=True)
                        lakes.second_reader["head"] = second.head == store.head
                        lakes.second_reader["tables"] = _tables(second)
                        reader = IndexReader(second, second.calendar)
                        day = lakes.store_reads[backend]["t-lag2 days"][-1]
                        lakes.second_reader["reads"] = {
                            f"t-lag2 composition {day}": reader.composition("t-lag2", day).rows(),
                            "t-lag2 changes": reader.changes("t-lag2")[1],
                        }
                    finally:
                        second.close()
            finally:
                store.close()
        days = lakes.store_reads["duckdb"]["t-lag2 days"]
        requests = _api_requests([days[1], days[len(days) // 2], days[-1]])
        for backend in BACKENDS:
            settings = (
                s3_settings(bucket, folders["s3"])
                if backend == "s3"
                else Settings(
                    storage="duckdb" if backend == "duckdb" else "iceberg",
                    database=folders[backend] / "index_builder.duckdb",
                    warehouse=str(folders[backend] / "lake"),
                    redis_url=None,
                    local_cache_entries=0,
                    duckdb_threads=2,
                )
            )
            lakes.api[backend] = _api_answers(settings, requests)
        lakes.keys = s3_server.keys(bucket)
        lakes.scratch_left = [str(p) for p in scratch_root.iterdir()]
        yield lakes


def test_an_s3_lake_reads_and_holds_what_a_local_lake_and_duckdb_do(lakes: Lakes) -> None:
    """One test (the three stores are made once, on one xdist worker)."""
    # every store read: the same code over the same lake tables (local lake), the same
    # queries over the same values (DuckDB; Parquet keeps doubles whole): exactly equal
    s3, local, duck = (lakes.store_reads[b] for b in BACKENDS)
    assert len(s3["ew100 days"]) > 20 and s3["t-lag2 announcement"] is not None
    assert s3["ew100 composition as of"] and s3["ew100 changes"]
    assert s3["ew100 composition as of"] != s3["ew100 composition now"]  # corrected since
    assert s3 == local
    assert s3 == duck

    # every table's rows
    s3_rows, local_rows, duck_rows = (lakes.tables[b] for b in BACKENDS)
    assert s3_rows["prices"] and s3_rows["price_versions"] and s3_rows["index_levels"]
    assert [t for t in PERSISTENT_TABLES if s3_rows[t] != local_rows[t]] == []
    assert [t for t in PERSISTENT_TABLES if s3_rows[t] != duck_rows[t]] == []
    assert len(s3_rows["index_builds"]) == 3 and len(s3_rows["versions"]) > 3

    # every API read (the API opens its own store on the lake), but the moments a
    # build stamps with the wall clock
    s3_api, local_api, duck_api = (_without_build_moments(lakes.api[b]) for b in BACKENDS)
    assert s3_api == local_api
    assert s3_api == duck_api

    # the lake is Iceberg in the bucket; no DuckDB file anywhere
    keys = lakes.keys
    for table in PERSISTENT_TABLES:
        metadata = [k for k in keys if k.startswith(f"lake/index_builder/{table}/metadata/")]
        assert [k for k in metadata if k.endswith(".metadata.json")], table
    prices = [k for k in keys if k.startswith("lake/index_builder/prices/data/")]
    assert prices and all(k.endswith(".parquet") for k in prices)
    assert len(lakes.months) >= 2  # the bars span months: one partition each
    assert sorted({k.split("/")[4] for k in prices}) == [
        f"date_month={month}" for month in lakes.months
    ]
    assert not [k for k in keys if ".duckdb" in k or k.endswith(".wal")]
    # the catalog (SQLite in write-ahead-log mode) is the only local file
    assert {p.name for p in lakes.folder.rglob("*")} <= {
        "catalog.db",
        "catalog.db-wal",
        "catalog.db-shm",
    }
    assert lakes.scratch_left == []  # the ingestions' scratch databases were removed

    # a second store opened on the same catalog and warehouse before the writes
    second = lakes.second_reader
    assert second["refreshed"] is True and second["head"] is True
    assert second["tables"] == s3_rows
    assert second["reads"] == {k: s3[k] for k in second["reads"]}


# ---------------------------------------------------------------------------- outage
@pytest.fixture(scope="module")
def small_lake(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A small market with ew100 built, in a lake of its own bucket: (bucket, the
    folder of its catalog), with the AWS_* variables pointing at the server."""
    folder = tmp_path_factory.mktemp("small-lake")
    with pytest.MonkeyPatch.context() as mp:
        _point_at(s3_server, mp)
        bucket = s3_server.create_bucket()
        store = IcebergStore(s3_location(bucket, folder), calendar=get_calendar(), threads=2)
        with store.open():
            ensure_builtins(store)
            run_ingestion(store, "synthetic", {"symbols": 12, "days": 30, "start": START})
            built = IndexBuilder(store, store.calendar).build(["ew100"])
            assert not [r.error for r in built if r.failed]
        yield bucket, folder


def _timed_get(client: TestClient, path: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def _ready(client: TestClient, status: int, seconds: float = 20) -> dict[str, Any]:
    """Poll readiness until it answers ``status`` (a probe still waiting on the old
    connection may answer for a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        response = client.get("/health/ready")
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            body: dict[str, Any] = response.json()
            return body
        time.sleep(0.2)


@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_an_object_store_outage_is_503_and_not_ready_until_it_is_back(
    outage: str, s3_server: S3Server, small_lake: tuple[str, Path]
) -> None:
    bucket, folder = small_lake
    s3_server.start()  # a failed test may have left it stopped
    settings = s3_settings(bucket, folder, health_timeout_seconds=2.0)
    with TestClient(create_app(settings)) as client:  # the answer, from a reader of its own
        days = client.get("/index-performance?index=ew100").json()["data"]
        past = days[len(days) // 2]["date"]
        path = f"/index-composition?index=ew100&date={past}"
        before = client.get(path)
        assert before.status_code == 200 and before.json()["constituents"]

    # a reader keeps the compositions it reconstructed in memory: this app's first
    # composition read is made in the outage, so it must read the bars in the bucket
    with TestClient(create_app(settings)) as client:
        assert _ready(client, 200)["components"]["storage"]["status"] == "ok"
        assert client.get("/index-performance?index=ew100").status_code == 200

        if outage == "refused":
            s3_server.stop()
        else:
            s3_server.hang()
        time.sleep(INFO_SECONDS)  # the data files' details read just before are stale
        try:
            response, seconds = _timed_get(client, path)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["type"].endswith(":storage-unavailable") and problem["status"] == 503
            assert int(response.headers["Retry-After"]) > 0
            # refused at once; a hung server after two attempts of TIMEOUT each
            assert seconds < (3 if outage == "refused" else 2 * TIMEOUT + 3), seconds
            started = time.monotonic()
            storage = _ready(client, 503)["components"]["storage"]
            assert storage["status"] == "down" and storage["backend"] == "iceberg"
            assert time.monotonic() - started < 2 * TIMEOUT + 3
            # what is served from memory (the small tables, the levels read) stays up
            assert client.get("/index-performance?index=ew100").status_code == 200
        finally:
            s3_server.start()

        assert _ready(client, 200)["components"]["storage"]["status"] == "ok"
        after = client.get(path)
        assert after.status_code == 200
        assert after.json() == before.json()
    assert not settings.database.exists() and not settings.database.parent.exists()
