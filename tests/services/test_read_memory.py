"""Reads from memory (services/queries.py): every composition and performance window equals
what the store gives directly, one engine run per block of days, never a stale build."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.engine.variants import VARIANTS
from index_builder.ingest.job import run_ingestion
from index_builder.services import queries
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.services.queries import IndexReader, Memo, Window
from index_builder.storage.duckdb.store import DuckDBStore

START = dt.date(2023, 1, 3)
DEFINITIONS = [
    {
        "id": "t-weekly-mcap",
        "name": "t",
        "top_n": 15,
        "weighting": "market_cap",
        "rebalance": "weekly",
    },
    {"id": "t-daily-lag1", "name": "t", "top_n": 15, "effective_lag": 1},
    {
        "id": "t-monthly-lag2",
        "name": "t",
        "top_n": 20,
        "weighting": "capped_market_cap",
        "cap": 0.10,
        "rebalance": "monthly",
        "effective_lag": 2,
    },
]
IDS = [str(d["id"]) for d in DEFINITIONS]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("read-memory") / "m.duckdb"
    with DuckDBStore(path) as store:
        ensure_builtins(store)
        for d in DEFINITIONS:
            add_definition(store, parse_definition(d), replace=True)
        run_ingestion(store, "synthetic", {"symbols": 150, "days": 90, "start": START})
        IndexBuilder(store, store.calendar).build(IDS)
        yield store


def _direct(reader: IndexReader, index_id: str, day: dt.date) -> Any:
    """The composition of one day by one engine run over [last rebalance, day], as reads
    made it before the memory (no memory involved)."""
    definition = reader._builder.definition(index_id)
    state = store_state(reader, index_id)
    (found,) = reader._reconstruct(Window(definition, state, day, day))
    return found.snapshot


def store_state(reader: IndexReader, index_id: str) -> Any:
    state = reader.store.build_state(index_id)
    assert state is not None
    return state


@pytest.mark.parametrize("index_id", IDS)
def test_every_composition_equals_one_engine_run_per_day(
    store: DuckDBStore, index_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = IndexReader(store, store.calendar)
    days = store.built_days(index_id)
    runs: list[dt.date] = []
    reconstruct = reader._reconstruct

    def counted(window: Window) -> Any:
        runs.append(window.start)
        return reconstruct(window)

    monkeypatch.setattr(reader, "_reconstruct", counted)
    monkeypatch.setattr(queries, "BLOCK_DAYS", 7)  # blocks that start inside periods too
    order = list(days)
    random.Random(7).shuffle(order)
    for day in order:
        got = reader.composition(index_id, day).snapshot
        want = _direct(reader, index_id, day)
        for field in dataclasses.fields(got):
            a, b = getattr(got, field.name), getattr(want, field.name)
            assert np.array_equal(a, b), (day, field.name)  # bit for bit
    blocks = math.ceil(len(days) / 7)
    direct_runs = len(days)  # _direct's own runs went through the spy too
    assert len(runs) - direct_runs == blocks  # one run per block, the first time
    assert len(reader.composition_memory) == blocks
    # a non-trading day resolves to the previous trading day, from the same memory
    saturday = next(d for d in (days[0] + dt.timedelta(n) for n in range(30)) if d.weekday() == 5)
    comp = reader.composition(index_id, saturday)
    assert comp.effective_date == max(d for d in days if d <= saturday)
    assert len(runs) - direct_runs == blocks


def _expected_performance(
    store: DuckDBStore, index_id: str, start: dt.date, end: dt.date, variant: str
) -> dict[str, Any]:
    """Levels and returns of a window straight from SQL (the reads before the memory)."""
    table = store.read_levels(index_id, start, end)
    headline = variant == "total"
    levels = table.column("level" if headline else f"level_{variant}").to_numpy()
    if headline:
        daily = table.column("daily_return").to_numpy()
    else:
        before = store.last_built_day(index_id, start - dt.timedelta(days=1))
        previous = store.variant_levels_on(index_id, before) if before else None
        first = levels[0] / previous[variant] - 1.0 if previous else 0.0
        daily = np.concatenate([[first], levels[1:] / levels[:-1] - 1.0])
    return {
        "dates": table.column("date").to_pylist(),
        "level": levels,
        "daily": daily,
        "cumulative": levels / levels[0] - 1.0,
    }


def test_performance_windows_equal_the_stored_levels(store: DuckDBStore) -> None:
    reader = IndexReader(store, store.calendar)
    rng = random.Random(3)
    for index_id in IDS:
        days = store.built_days(index_id)
        assert reader.performance(index_id).return_type == "total"
        for _ in range(25):
            i = rng.randrange(len(days))
            j = rng.randrange(i, len(days))
            variant = rng.choice(VARIANTS)
            perf = reader.performance(index_id, days[i], days[j], variant)
            want = _expected_performance(store, index_id, days[i], days[j], variant)
            assert [r["date"] for r in perf.rows] == want["dates"]
            assert [r["level"] for r in perf.rows] == list(want["level"])
            assert [r["daily_return"] for r in perf.rows] == list(want["daily"])
            assert [r["cumulative_return"] for r in perf.rows] == list(want["cumulative"])
        assert len(reader.levels_memory) == IDS.index(index_id) + 1  # one frame per build


def test_a_new_build_is_read_at_once_and_a_moving_version_is_not_kept(tmp_path: Path) -> None:
    with DuckDBStore(tmp_path / "n.duckdb") as store:
        ensure_builtins(store)
        add_definition(store, parse_definition(DEFINITIONS[0]), replace=True)
        run_ingestion(store, "synthetic", {"symbols": 80, "days": 40, "start": START})
        IndexBuilder(store, store.calendar).build(["t-weekly-mcap"])
        reader = IndexReader(store, store.calendar)
        last = reader.composition("t-weekly-mcap").effective_date
        before = reader.performance("t-weekly-mcap")
        run_ingestion(store, "synthetic", {"symbols": 80, "days": 45, "start": START})
        IndexBuilder(store, store.calendar).build(["t-weekly-mcap"])
        after = reader.performance("t-weekly-mcap")
        assert len(after.rows) > len(before.rows) and after.window.end > last
        newest = reader.composition("t-weekly-mcap")
        assert newest.effective_date == after.window.end
        fresh = IndexReader(store, store.calendar).composition("t-weekly-mcap").snapshot
        assert np.array_equal(newest.snapshot.weights, fresh.weights)

        # a build read while another replaced it: used for this read, not kept
        reader = IndexReader(store, store.calendar)
        state = store.build_state("t-weekly-mcap")
        assert state is not None
        moved = dataclasses.replace(state, version=state.version - 1)
        assert reader.levels(moved).dates == store.built_days("t-weekly-mcap")
        assert len(reader.levels_memory) == 0
        reader.levels(state)
        assert len(reader.levels_memory) == 1


def test_memo_loads_a_key_once_and_stays_within_its_bytes() -> None:
    memo: Memo[str] = Memo(max_entries=10, max_bytes=100)
    calls: list[str] = []

    def slow(value: str, size: int | None) -> Any:
        def load() -> tuple[str, int | None]:
            calls.append(value)
            time.sleep(0.05)
            return value, size

        return load

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(memo.get("k", slow("v", 10))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["v"] * 4 and calls == ["v"]  # the others waited for the first
    for n in range(5):
        memo.get(n, slow(f"x{n}", 30))
    assert memo.bytes <= 100 and len(memo) == 3  # the oldest went first
    assert memo.get("big", slow("big", 101)) == "big" and memo.get("big", slow("big", 101)) == "big"
    assert calls.count("big") == 2  # larger than the memory: never kept
    assert memo.get("skip", slow("s", None)) == "s" and len(memo) == 3  # not to be kept
