"""The daily schedule driven by a fake clock across a holiday, an early close and a
missed day (XNYS, Thanksgiving 2024: Thu 28 Nov closed, Fri 29 Nov closes 13:00 ET)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from index_builder.calendar import get_calendar
from index_builder.engine.definitions import parse_definition
from index_builder.errors import BuildError
from index_builder.ingest.job import run_ingestion
from index_builder.providers import PROVIDERS
from index_builder.providers.schema import MarketData
from index_builder.providers.synthetic import SyntheticProvider
from index_builder.schedule import CycleConfig, CycleResult, run_daily_cycle, run_scheduler
from index_builder.services.builds import BuildResult, IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.storage.duckdb.store import DuckDBStore

UTC = dt.UTC
OFFSET = dt.timedelta(minutes=30)


class FakeClock:
    """Aware UTC time that moves only when something sleeps."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += dt.timedelta(seconds=seconds)


class FlakyProvider(SyntheticProvider):
    """The synthetic market, down while ``down`` is set (a provider outage)."""

    name = "flaky"
    down = False

    def fetch(self, **query: Any) -> MarketData:
        if FlakyProvider.down:
            raise ConnectionError("provider unreachable")
        return super().fetch(**query)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyProvider]]:
    monkeypatch.setitem(PROVIDERS, "flaky", FlakyProvider)
    FlakyProvider.down = False
    yield FlakyProvider
    FlakyProvider.down = False


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    """Sessions through Tue 26 Nov 2024 and one small index (no built-ins)."""
    with DuckDBStore(tmp_path / "s.duckdb", calendar=get_calendar(), threads=2) as s:
        add_definition(s, parse_definition({"id": "t-ew", "name": "t", "top_n": 10}))
        run_ingestion(s, "synthetic", {"symbols": 40, "days": 5, "start": dt.date(2024, 11, 20)})
        yield s


def _config(**extra: Any) -> CycleConfig:
    values: dict[str, Any] = {
        "provider": "flaky",
        "offset": OFFSET,
        "synthetic_symbols": 40,
        "retries": 2,
        "retry_seconds": 60.0,
    }
    values.update(extra)
    return CycleConfig(**values)


def _failures(step: str) -> float:
    value = REGISTRY.get_sample_value("index_builder_schedule_step_failures_total", {"step": step})
    return value or 0.0


def test_scheduler_across_a_holiday_an_early_close_and_a_missed_day(
    store: DuckDBStore, flaky: type[FlakyProvider]
) -> None:
    clock = FakeClock(dt.datetime(2024, 11, 27, 21, 0, tzinfo=UTC))  # Wed, 16:00 ET close
    ran_at: list[dt.datetime] = []
    failures_before = _failures("ingest")

    def cycle(now: dt.datetime) -> CycleResult:
        ran_at.append(now)
        flaky.down = now.date() == dt.date(2024, 12, 2)  # Monday's cycle finds it down
        return run_daily_cycle(store, _config(), now=now, sleep=clock.sleep)

    results = run_scheduler(
        cycle, store.calendar, OFFSET, clock=clock, sleep=clock.sleep, max_cycles=5
    )

    assert ran_at == [
        dt.datetime(2024, 11, 27, 21, 0, tzinfo=UTC),  # start: Wednesday not closed + 30 min
        dt.datetime(2024, 11, 27, 21, 30, tzinfo=UTC),  # Wednesday close + 30 min
        # Thanksgiving skipped; Friday's early close (13:00 ET) + 30 min, not 16:30
        dt.datetime(2024, 11, 29, 18, 30, tzinfo=UTC),
        dt.datetime(2024, 12, 2, 21, 30, tzinfo=UTC),  # Monday: the provider is down
        dt.datetime(2024, 12, 3, 21, 30, tzinfo=UTC),  # Tuesday: backfills Monday
    ]
    assert [r.status for r in results] == [
        "up-to-date",
        "succeeded",
        "succeeded",
        "failed",
        "succeeded",
    ]
    assert [r.session for r in results] == [
        dt.date(2024, 11, 26),
        dt.date(2024, 11, 27),
        dt.date(2024, 11, 29),
        dt.date(2024, 12, 2),
        dt.date(2024, 12, 3),
    ]
    assert results[4].backfilled == [dt.date(2024, 12, 2)]
    days = store.trading_days()
    assert days[-5:] == [
        dt.date(2024, 11, 26),
        dt.date(2024, 11, 27),
        dt.date(2024, 11, 29),
        dt.date(2024, 12, 2),
        dt.date(2024, 12, 3),
    ]
    assert store.build_state("t-ew").built_through == dt.date(2024, 12, 3)  # type: ignore[union-attr]

    # Monday's ingest: 1 attempt + 2 retries with exponential backoff, then the cycle failed
    monday = results[3]
    assert [(s.step, s.status, s.attempts) for s in monday.steps] == [
        ("backfill", "skipped", 0),
        ("ingest", "failed", 3),
        ("build", "skipped", 0),
        ("invalidate", "skipped", 0),
    ]
    assert "provider unreachable" in (monday.steps[1].message or "")
    assert [s for s in clock.sleeps if s in (60.0, 120.0)][:2] == [60.0, 120.0]
    assert _failures("ingest") - failures_before == 3

    rows = store.schedule_runs(cycles=10)
    assert len(rows) == 4 * 4  # four cycles did something, one row per step
    tuesday = [(r["step"], r["status"]) for r in rows if r["cycle_id"] == results[4].cycle_id]
    assert tuesday == [
        ("backfill", "succeeded"),
        ("ingest", "succeeded"),
        ("build", "succeeded"),
        ("invalidate", "succeeded"),
    ]


def test_a_step_that_recovers_on_retry_succeeds(
    store: DuckDBStore, flaky: type[FlakyProvider]
) -> None:
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        flaky.down = False  # the outage ends during the backoff

    flaky.down = True
    now = dt.datetime(2024, 11, 27, 22, 0, tzinfo=UTC)
    result = run_daily_cycle(store, _config(), now=now, sleep=sleep)
    assert result.status == "succeeded"
    assert calls == [60.0]
    assert result.steps[1].attempts == 2 and result.steps[1].status == "succeeded"


def test_no_cycle_before_the_close_plus_offset_and_none_on_a_holiday(
    store: DuckDBStore, flaky: type[FlakyProvider]
) -> None:
    # Thanksgiving evening: the latest closed session is Wednesday; once it is in, nothing
    run_daily_cycle(store, _config(), now=dt.datetime(2024, 11, 27, 23, 0, tzinfo=UTC))
    holiday = run_daily_cycle(store, _config(), now=dt.datetime(2024, 11, 28, 23, 0, tzinfo=UTC))
    assert holiday.status == "up-to-date" and holiday.session == dt.date(2024, 11, 27)
    # Friday 18:29 UTC: the early close + 30 min has not passed yet
    early = run_daily_cycle(store, _config(), now=dt.datetime(2024, 11, 29, 18, 29, tzinfo=UTC))
    assert early.status == "up-to-date"
    late = run_daily_cycle(store, _config(), now=dt.datetime(2024, 11, 29, 18, 31, tzinfo=UTC))
    assert late.status == "succeeded" and late.session == dt.date(2024, 11, 29)


def test_a_universe_restricts_what_the_cycle_ingests(
    store: DuckDBStore, flaky: type[FlakyProvider]
) -> None:
    symbols = sorted(store.security_master().symbols.tolist())[:3]
    now = dt.datetime(2024, 11, 27, 22, 0, tzinfo=UTC)
    result = run_daily_cycle(store, _config(universe=symbols), now=now)
    assert result.ok
    got = store.cursor().execute(
        "SELECT DISTINCT symbol FROM prices WHERE date = DATE '2024-11-27' ORDER BY 1"
    )
    assert [r[0] for r in got.fetchall()] == symbols


def test_scheduler_stops_when_asked(store: DuckDBStore, flaky: type[FlakyProvider]) -> None:
    clock = FakeClock(dt.datetime(2024, 11, 27, 22, 0, tzinfo=UTC))
    stop = iter([False, True])
    results = run_scheduler(
        lambda now: run_daily_cycle(store, _config(), now=now),
        store.calendar,
        OFFSET,
        clock=clock,
        sleep=clock.sleep,
        should_stop=lambda: next(stop, True),
    )
    assert len(results) == 1


def _add_unbuildable(store: DuckDBStore) -> None:
    """An index whose universe matches no security: it cannot be built."""
    definition = {"id": "t-none", "name": "none", "top_n": 5, "universe": {"sectors": ["None"]}}
    add_definition(store, parse_definition(definition))


def test_one_failing_index_fails_the_build_step_but_the_others_are_published(
    store: DuckDBStore, flaky: type[FlakyProvider]
) -> None:
    _add_unbuildable(store)
    sleeps: list[float] = []
    invalidated: list[bool] = []
    now = dt.datetime(2024, 11, 27, 22, 0, tzinfo=UTC)
    result = run_daily_cycle(
        store, _config(), now=now, sleep=sleeps.append, invalidate=lambda: invalidated.append(True)
    )
    assert result.status == "failed" and not result.ok
    assert [(s.step, s.status, s.attempts) for s in result.steps] == [
        ("backfill", "skipped", 0),
        ("ingest", "succeeded", 1),
        ("build", "failed", 1),  # the same data would fail again: no retry
        ("invalidate", "succeeded", 1),  # t-ew was published: its caches go
    ]
    assert sleeps == [] and invalidated == [True]
    message = result.steps[2].message or ""
    assert message.startswith("2 indices: 1 built, 0 unchanged, 1 failed (t-none: ")
    assert "no eligible security on the base date" in message
    assert message.endswith("; 0 switched off")
    assert [(r.index_id, r.outcome) for r in result.builds] == [
        ("t-ew", "built"),
        ("t-none", "failed"),
    ]
    assert store.build_state("t-ew").built_through == dt.date(2024, 11, 27)  # type: ignore[union-attr]
    rows = [r for r in store.schedule_runs(cycles=1) if r["step"] == "build"]
    assert rows[0]["status"] == "failed" and rows[0]["message"] == message


def test_an_unexpected_error_of_one_index_is_retried_for_that_index_only(
    store: DuckDBStore, flaky: type[FlakyProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    _add_unbuildable(store)
    calls: list[list[str]] = []
    real_build = IndexBuilder.build

    def first_attempt_breaks_t_ew(
        self: IndexBuilder, ids: list[str], **options: Any
    ) -> list[BuildResult]:
        calls.append(list(ids))
        results = real_build(self, ids, **options)
        if len(calls) > 1:
            return results
        error = BuildError("t-ew: internal error: OSError: disk hiccup")
        error.code = "internal-error"
        broken = {"outcome": "failed", "mode": "failed", "error": error}
        return [replace(r, **broken) if r.index_id == "t-ew" else r for r in results]

    monkeypatch.setattr(IndexBuilder, "build", first_attempt_breaks_t_ew)
    sleeps: list[float] = []
    now = dt.datetime(2024, 11, 27, 22, 0, tzinfo=UTC)
    result = run_daily_cycle(store, _config(), now=now, sleep=sleeps.append)
    assert calls == [["t-ew", "t-none"], ["t-ew"]]  # the retry builds the broken one only
    assert sleeps == [60.0]
    build = result.steps[2]
    assert build.status == "failed" and build.attempts == 2  # t-none still fails
    assert [(r.index_id, r.outcome) for r in result.builds] == [
        ("t-ew", "unchanged"),
        ("t-none", "failed"),
    ]
    assert (build.message or "").startswith("2 indices: 0 built, 1 unchanged, 1 failed (t-none")
