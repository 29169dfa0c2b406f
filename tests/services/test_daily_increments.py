"""A dividend and a split arriving in daily increments give the index of a one-shot load.

A provider's backward-adjusted close changes retroactively after every dividend
or split, so a day-by-day feed only ever sees adj_close == close on its newest
day. A feed that knows every dividend gives a dividend value on every row (0 on
ordinary days, as the project's HTTP providers do): from a security's first
dividend value on, its returns come from raw close, splits and dividends
(METHODOLOGY part 2), never from adj_close, so both paths agree to 1e-12 (two
computation paths: compared with a tolerance): levels of every return variant
and compositions. Each daily build appends one day and never rewrites another.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index_builder.calendar import get_calendar
from index_builder.engine.definitions import parse_definition
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.storage.duckdb.store import DuckDBStore

from market_files import SECURITY_HEADER, security, write_csv

HEADER = [
    "date",
    "symbol",
    "close",
    "adj_close",
    "shares_outstanding",
    "dividend",
    "split_ratio",
]
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "JJJ"]
DIVIDEND_DAY, SPLIT_DAY = 6, 13  # session numbers of AAA's dividend and BBB's 2:1 split
N_DAYS = 20
DEFINITIONS = [
    {"id": "inc-ew", "name": "t", "top_n": 5},
    {
        "id": "inc-mcap",
        "name": "t",
        "top_n": 6,
        "weighting": "market_cap",
        "rebalance": "weekly",
        "return_type": "price",
    },
    {
        "id": "inc-capped",
        "name": "t",
        "top_n": 8,
        "weighting": "capped_market_cap",
        "cap": 0.2,
        "rebalance": "weekly",
        "return_type": "net_total",
    },
]


def _market() -> tuple[list[dt.date], dict[str, list[dict[str, Any]]]]:
    """Bars per symbol: raw close, shares, the actions; adj_close filled later."""
    sessions = [d for d in get_calendar().session_dates() if d >= dt.date(2024, 3, 1)][:N_DAYS]
    rng = np.random.default_rng(11)
    bars: dict[str, list[dict[str, Any]]] = {}
    for k, symbol in enumerate(SYMBOLS):
        close, shares = 20.0 + 7 * k, 1e6 * (1 + k % 4)
        if symbol in ("AAA", "BBB"):  # large enough to be selected everywhere
            shares = 2e7
        rows = []
        for i, day in enumerate(sessions):
            close *= float(np.exp(rng.normal(0.0, 0.02)))
            row: dict[str, Any] = {"date": day, "symbol": symbol, "dividend": None, "split": None}
            if symbol == "AAA" and i == DIVIDEND_DAY:
                row["dividend"] = 1.25
                close -= 1.25
            if symbol == "BBB" and i == SPLIT_DAY:
                row["split"] = 2.0
                close, shares = close / 2, shares * 2
            row["close"], row["shares"] = round(close, 4), shares
            rows.append(row)
        bars[symbol] = rows
    return sessions, bars


def _adjusted(rows: list[dict[str, Any]], upto: int) -> list[float]:
    """Backward-adjusted closes of rows[:upto] as a provider reports them on day upto-1."""
    factor, out = 1.0, []
    for i in range(upto - 1, -1, -1):
        out.append(rows[i]["close"] * factor)
        if rows[i]["split"]:
            factor /= rows[i]["split"]
        if rows[i]["dividend"]:
            factor *= 1 - rows[i]["dividend"] / rows[i - 1]["close"]
    return out[::-1]


def _csv_rows(bars: dict[str, list[dict[str, Any]]], days: range, upto: int) -> list[list[Any]]:
    out = []
    for rows in bars.values():
        adjusted = _adjusted(rows, upto)
        for i in days:
            r = rows[i]
            # CCC reports its share count only when it changes (here: once)
            shares = None if r["symbol"] == "CCC" and i > 0 else r["shares"]
            dividend = r["dividend"] or 0.0  # a feed that knows dividends: 0 on other days
            out.append(
                [r["date"], r["symbol"], r["close"], adjusted[i], shares, dividend, r["split"]]
            )
    return out


def _ingest(store: DuckDBStore, tmp_path: Path, name: str, rows: list[list[Any]]) -> None:
    sec = write_csv(tmp_path / "securities.csv", SECURITY_HEADER, [security(s) for s in SYMBOLS])
    px = write_csv(tmp_path / f"{name}.csv", HEADER, rows)
    report = run_ingestion(
        store, "file", {"securities": str(sec), "prices": str(px), "column_map": {}}
    )
    assert report.rows_rejected == 0, report.rejected_by_reason


def _results(store: DuckDBStore) -> dict[str, Any]:
    out = {}
    for d in DEFINITIONS:
        levels = store.read_levels(d["id"], dt.date(2000, 1, 1), dt.date(2100, 1, 1)).to_pylist()
        spells = sorted(
            (s.symbol, s.valid_from, s.valid_to)
            for s in store.spells_from(d["id"], dt.date(2000, 1, 1))
        )
        out[d["id"]] = (levels, spells)
    return out


def _store(path: Path) -> DuckDBStore:
    store = DuckDBStore(path, calendar=get_calendar(), threads=2).open()
    for d in DEFINITIONS:
        add_definition(store, parse_definition(d))
    return store


def test_daily_increments_equal_a_one_shot_history_load(tmp_path: Path) -> None:
    _, bars = _market()
    ids = [d["id"] for d in DEFINITIONS]

    with _store(tmp_path / "oneshot.duckdb") as oneshot:
        _ingest(oneshot, tmp_path, "all", _csv_rows(bars, range(N_DAYS), N_DAYS))
        IndexBuilder(oneshot, oneshot.calendar).build(ids)
        expected = _results(oneshot)

    with _store(tmp_path / "daily.duckdb") as daily:
        modes = set()
        for i in range(N_DAYS):
            _ingest(daily, tmp_path, f"day{i}", _csv_rows(bars, range(i, i + 1), i + 1))
            before = _results(daily)
            results = IndexBuilder(daily, daily.calendar).build(ids)
            modes |= {r.mode for r in results}
            assert all(r.trading_days == 1 for r in results)  # one day written, appended
            after = _results(daily)
            for index_id in ids:  # the days published before stay exactly as they were
                assert after[index_id][0][:i] == before[index_id][0], (index_id, i)
        got = _results(daily)
        # the day-by-day feed never saw an adjusted close different from the close
        stored = daily.cursor().execute("SELECT count(*) FROM prices WHERE adj_close <> close")
        assert stored.fetchall()[0][0] == 0

    assert "incremental" in modes
    for index_id in ids:
        exp_levels, exp_spells = expected[index_id]
        got_levels, got_spells = got[index_id]
        assert got_spells == exp_spells, index_id
        assert len(got_levels) == len(exp_levels) == N_DAYS
        for e, g in zip(exp_levels, got_levels, strict=True):
            assert g["date"] == e["date"]
            assert g["is_rebalance"] == e["is_rebalance"], (index_id, e["date"])
            assert g["n_constituents"] == e["n_constituents"]
            for column in ("level", "level_price", "level_total", "level_net_total"):
                assert g[column] == pytest.approx(e[column], rel=1e-12, abs=0), (
                    index_id,
                    e["date"],
                    column,
                )
    # the actions moved the variants apart (the comparison is not trivially equal)
    levels = expected["inc-ew"][0][-1]
    assert levels["level_total"] > levels["level_net_total"] > levels["level_price"]
