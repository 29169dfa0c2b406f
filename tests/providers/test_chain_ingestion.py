"""Fallback chain with provenance, partial/failed summaries, and resumption after a kill."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from index_builder.calendar import get_calendar
from index_builder.ingest.job import run_ingestion
from index_builder.providers.chain import ProviderChain
from index_builder.providers.http import HttpProvider
from index_builder.storage.duckdb.store import DuckDBStore

from provider_fakes import FakeMarket, Recorder, make

START, END = dt.date(2024, 1, 2), dt.date(2024, 1, 12)
SESSIONS = [d for d in get_calendar().session_dates() if START <= d <= END]


def market() -> FakeMarket:
    bars = {
        sym: [(d, base + i) for i, d in enumerate(SESSIONS)]
        for sym, base in (("AAA", 100.0), ("BBB", 50.0), ("CCC", 20.0))
    }
    return FakeMarket(
        bars,
        dividends={"AAA": {SESSIONS[2]: 0.5}},
        splits={"AAA": {SESSIONS[6]: 2.0}},
    )


class Factory:
    """Providers on recorded MockTransports over one fake market."""

    def __init__(self, m: FakeMarket, kill_on: str | None = None) -> None:
        self.market = m
        self.kill_on = kill_on
        self.recorders: dict[str, Recorder] = {}

    def __call__(self, name: str) -> HttpProvider:
        serve = getattr(self.market, name)

        def handler(request: httpx.Request) -> httpx.Response:
            if self.kill_on and self.kill_on in request.url.path:
                raise KeyboardInterrupt("killed")  # the process dies mid-run
            response: httpx.Response = serve(request)
            return response

        provider, rec, _ = make(name, handler)
        self.recorders[name] = rec
        return provider


def _query(*symbols: str, end: dt.date = END) -> dict[str, Any]:
    return {"symbols": list(symbols), "start": START, "end": end}


def test_chain_fills_row_by_row_and_records_the_source() -> None:
    m = market()
    m.down.add(("polygon", "BBB"))  # polygon fails for BBB: yahoo gives it all
    m.missing[("polygon", "CCC")] = {SESSIONS[3], SESSIONS[4]}  # yahoo fills two rows
    factory = Factory(m)
    chain = ProviderChain([factory("polygon"), factory("yahoo")])
    wanted = {s: SESSIONS for s in ("AAA", "BBB", "CCC", "ZZZ")}
    result = chain.fetch({s: (START, END) for s in wanted}, sessions=wanted)
    source = {(r["symbol"], r["date"]): r["source"] for r in result.rows}
    assert {source[("AAA", d)] for d in SESSIONS} == {"polygon"}
    assert {source[("BBB", d)] for d in SESSIONS} == {"yahoo"}
    assert [source[("CCC", d)] for d in SESSIONS] == [
        "yahoo" if d in (SESSIONS[3], SESSIONS[4]) else "polygon" for d in SESSIONS
    ]
    # yahoo's CCC rows take the point-in-time count in force from polygon's earlier rows
    ccc = {r["date"]: r for r in result.rows if r["symbol"] == "CCC"}
    assert ccc[SESSIONS[3]]["shares_outstanding"] == 1e6
    assert ccc[SESSIONS[3]]["basis"] == "point_in_time"
    # the second provider was asked only for the missing window
    yahoo_paths = factory.recorders["yahoo"].paths()
    assert "/v8/finance/chart/AAA" not in yahoo_paths
    assert result.failed == ["ZZZ"] and result.status == "partial"
    summary = result.summary()
    assert summary["rows_by_provider"] == {"polygon": 2 * len(SESSIONS) - 2, "yahoo": 11}
    assert summary["failures_by_reason"] == {
        "polygon:empty_series": 1,
        "polygon:server_error": 1,
        "yahoo:unknown_symbol": 1,
    }


def test_all_providers_failing_ends_failed_with_a_summary(store: DuckDBStore) -> None:
    m = market()
    m.down.update({("polygon", "AAA"), ("yahoo", "AAA")})
    report = run_ingestion(store, "polygon,yahoo", _query("AAA"), make_provider=Factory(m))
    assert report.status == "failed"
    assert report.summary is not None and report.summary["symbols_failed"] == ["AAA"]
    (run,) = store.ingest_runs()
    assert run["status"] == "failed" and "polygon:server_error=1" in run["message"]
    reasons = {(q["source"], q["symbol"], q["reason"]) for q in store.quarantined(run["run_id"])}
    assert reasons == {("provider", "AAA", "server_error")}
    assert store.trading_days() == []


def test_partial_run_keeps_what_was_fetched_and_quarantines_provider_rejects(
    store: DuckDBStore,
) -> None:
    m = market()
    chart = "<html><body>Please enable JavaScript</body></html>"
    factory = Factory(m)

    def make_provider(name: str) -> HttpProvider:
        provider = factory(name)
        if name == "yahoo":  # a challenge page instead of data
            factory.recorders[name].handler = lambda r: httpx.Response(200, text=chart)
        return provider

    m.down.add(("polygon", "BBB"))
    report = run_ingestion(
        store, "polygon,yfinance", _query("AAA", "BBB"), make_provider=make_provider
    )
    assert report.status == "partial"
    (run,) = store.ingest_runs()
    assert run["status"] == "partial" and run["rows_accepted"] == len(SESSIONS)
    rejects = [q for q in store.quarantined(run["run_id"]) if q["source"] == "provider"]
    assert {(q["symbol"], q["reason"]) for q in rejects} == {
        ("BBB", "server_error"),
        ("BBB", "html_payload"),
    }
    html = next(q for q in rejects if q["reason"] == "html_payload")
    assert "<html>" in html["record"] and "yahoo" in html["record"]


def _prices(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return (
        store.cursor()
        .execute(
            "SELECT date, symbol, close, volume, shares_outstanding, market_cap, dividend,"
            " split_ratio"
            " FROM prices ORDER BY symbol, date"
        )
        .fetchall()
    )


def test_a_killed_run_resumes_fetching_only_what_is_missing(
    store: DuckDBStore, tmp_path: Any
) -> None:
    symbols = ("AAA", "BBB", "CCC")
    killed = Factory(market(), kill_on="/BBB/")
    with pytest.raises(KeyboardInterrupt):
        run_ingestion(store, "polygon", {**_query(*symbols), "batch_size": 1}, make_provider=killed)
    assert {row[1] for row in _prices(store)} == {"AAA"}  # the first batch was committed

    again = Factory(market())
    report = run_ingestion(store, "polygon", _query(*symbols), make_provider=again)
    assert report.status == "succeeded"
    paths = again.recorders["polygon"].paths()
    assert paths and not [p for p in paths if "AAA" in p]  # only the missing symbols
    assert {p.split("/")[4] for p in paths if p.startswith("/v2/aggs")} == {"BBB", "CCC"}

    with DuckDBStore(tmp_path / "clean.duckdb") as clean:
        run_ingestion(clean, "polygon", _query(*symbols), make_provider=Factory(market()))
        assert _prices(store) == _prices(clean)

    # nothing missing: a third run asks nothing
    third = Factory(market())
    report = run_ingestion(store, "polygon", _query(*symbols), make_provider=third)
    assert report.status == "succeeded" and third.recorders["polygon"].requests == []


@pytest.mark.parametrize("provider", ["polygon", "yahoo"])
def test_daily_increments_equal_a_one_shot_history_load(provider: str) -> None:
    """A dividend and a split arriving day by day give the same rows as one load.

    Yahoo's closes are re-adjusted after the split; stored closes are raw, so the
    increments never disagree with the history.
    """
    one_shot = market()
    chain = ProviderChain([Factory(one_shot)(provider)])
    wanted = {"AAA": SESSIONS}
    history = chain.fetch({"AAA": (START, END)}, sessions=wanted).rows
    daily: list[dict[str, Any]] = []
    m = market()
    for day in SESSIONS:
        m.up_to = day
        step = ProviderChain([Factory(m)(provider)])
        daily += step.fetch({"AAA": (day, day)}, sessions={"AAA": [day]}).rows
    keys = ("date", "close", "dividend", "split_ratio")
    assert [{k: r[k] for k in keys} for r in daily] == [{k: r[k] for k in keys} for r in history]
    assert [r["close"] for r in history] == [100.0 + i for i in range(len(SESSIONS))]
    assert [r["dividend"] for r in history][2] == 0.5
    assert [r["split_ratio"] for r in history][6] == 2.0
