"""Stored builds: incremental equals full, spells reconstruct snapshots, corrections."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from index_builder.engine.definitions import IndexDefinition, Universe, parse_definition
from index_builder.engine.memory import build_in_memory
from index_builder.engine.spells import members_on
from index_builder.ingest.job import run_ingestion
from index_builder.providers.synthetic_market import generate_market
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

SYMBOLS, DAYS = 260, 130

DEFINITIONS = [
    {
        "id": "t-company-buffered",
        "name": "t",
        "top_n": 15,
        "rank_by": "company",
        "weighting": "market_cap",
        "buffer": {"entry_rank": 12, "exit_rank": 20},
    },
    {"id": "t-daily-ew", "name": "t", "top_n": 20},
    {
        "id": "t-weekly-mcap",
        "name": "t",
        "top_n": 15,
        "weighting": "market_cap",
        "rebalance": "weekly",
    },
    {
        "id": "t-monthly-capped",
        "name": "t",
        "top_n": 12,
        "weighting": "capped_market_cap",
        "cap": 0.15,
        "rebalance": "monthly",
        "base_date": "2023-01-07",
    },
    {
        "id": "t-quarterly-filtered",
        "name": "t",
        "top_n": 10,
        "rebalance": "quarterly",
        "universe": {
            "sectors": ["Information Technology", "Health Care"],
            "min_price": 20,
            "min_market_cap": 1e9,
        },
    },
    # effective lags: one selection in flight, several in flight (daily, lag 3),
    # and a monthly schedule with a group cap
    {
        "id": "t-daily-lag1-buffered",
        "name": "t",
        "top_n": 15,
        "effective_lag": 1,
        "buffer": {"entry_rank": 12, "exit_rank": 20},
    },
    {
        "id": "t-daily-lag3-company",
        "name": "t",
        "top_n": 15,
        "effective_lag": 3,
        "rank_by": "company",
        "weighting": "market_cap",
    },
    {
        "id": "t-monthly-lag2-ucits",
        "name": "t",
        "top_n": 25,
        "weighting": "capped_market_cap",
        "cap": 0.10,
        "group_cap": {"threshold": 0.05, "limit": 0.40},
        "rebalance": "monthly",
        "effective_lag": 2,
    },
]


def _market(days: int = DAYS) -> tuple[pa.Table, pa.Table]:
    data = generate_market(seed=11, n_symbols=SYMBOLS, n_days=days)
    return data.securities, data.prices


def _ingest_table(store: DuckDBStore, securities: pa.Table, prices: pa.Table) -> None:
    from index_builder.ingest.job import _with_row_numbers
    from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA

    store.ingest(
        _with_row_numbers(securities, SECURITIES_SCHEMA),
        _with_row_numbers(prices, PRICES_SCHEMA),
        provider="test",
        params={},
    )


def _open(path: Path) -> DuckDBStore:
    store = DuckDBStore(path).open()
    ensure_builtins(store)
    for d in DEFINITIONS:
        add_definition(store, parse_definition(d), replace=True)
    return store


def _levels(store: DuckDBStore, index_id: str) -> pa.Table:
    return (
        store.cursor()
        .sql(
            "SELECT date, level, daily_return, is_rebalance, turnover, n_constituents,"
            " level_price, level_total, level_net_total"
            " FROM index_levels WHERE index_id = $i ORDER BY date",
            params={"i": index_id},
        )
        .to_arrow_table()
    )


def _spells(store: DuckDBStore, index_id: str) -> list[tuple[object, ...]]:
    return (
        store.cursor()
        .execute(
            "SELECT symbol, valid_from, valid_to FROM index_spells WHERE index_id = ?"
            " ORDER BY symbol, valid_from",
            [index_id],
        )
        .fetchall()
    )


def _assert_same_results(a: DuckDBStore, b: DuckDBStore, index_id: str) -> None:
    la, lb = _levels(a, index_id), _levels(b, index_id)
    assert la.column("date").equals(lb.column("date"))
    for col in ("level", "daily_return", "level_price", "level_total", "level_net_total"):
        np.testing.assert_allclose(
            la.column(col).to_numpy(), lb.column(col).to_numpy(), rtol=1e-12, atol=1e-15
        )
    np.testing.assert_allclose(
        la.column("turnover").to_numpy(zero_copy_only=False).astype(float),
        lb.column("turnover").to_numpy(zero_copy_only=False).astype(float),
        rtol=1e-9,
        atol=1e-12,
        equal_nan=True,
    )
    assert la.column("is_rebalance").equals(lb.column("is_rebalance"))
    assert la.column("n_constituents").equals(lb.column("n_constituents"))
    assert _spells(a, index_id) == _spells(b, index_id)


def test_incremental_builds_equal_a_full_rebuild(tmp_path: Path) -> None:
    securities, prices = _market()
    dates = np.unique(prices.column("date").to_numpy())
    ids = [d["id"] for d in DEFINITIONS] + ["ew-tech50"]
    inc = _open(tmp_path / "inc.duckdb")
    builder = IndexBuilder(inc, inc.calendar)
    # ingest in three slices, building after each; the last slice is one session
    for cut in (dates[60], dates[-2], dates[-1]):
        mask = pc.less_equal(prices.column("date"), pa.scalar(cut.astype(object), pa.date32()))
        _ingest_table(inc, securities, prices.filter(mask))
        results = builder.build(ids)
    assert {r.mode for r in results} == {"incremental"}
    assert all(r.trading_days >= 1 for r in results)
    full = _open(tmp_path / "full.duckdb")
    _ingest_table(full, securities, prices)
    assert {r.mode for r in IndexBuilder(full, full.calendar).build(ids)} == {"full"}
    for index_id in ids:
        _assert_same_results(inc, full, index_id)
    # nothing new: nothing to do
    assert {r.mode for r in builder.build(ids)} == {"up-to-date"}
    inc.close()
    full.close()


def test_a_correction_in_the_past_recomputes_from_the_rebalance_before_it(tmp_path: Path) -> None:
    securities, prices = _market()
    store = _open(tmp_path / "a.duckdb")
    _ingest_table(store, securities, prices)
    builder = IndexBuilder(store, store.calendar)
    corrected_ids = [
        "t-daily-ew",
        "t-monthly-capped",
        "t-daily-lag3-company",
        "t-monthly-lag2-ucits",
    ]
    builder.build(corrected_ids)
    top = (
        store.cursor()
        .execute(
            "SELECT symbol FROM index_spells WHERE index_id = 't-daily-ew'"
            " ORDER BY valid_from LIMIT 1"
        )
        .fetchall()[0][0]
    )
    day = dt.date.fromisoformat(str(np.unique(prices.column("date").to_numpy())[70]))
    fixed = (
        store.cursor()
        .execute("SELECT close, adj_close FROM prices WHERE symbol = ? AND date = ?", [top, day])
        .fetchall()
    )
    assert fixed, "the corrected bar exists"
    store.cursor().execute(
        "UPDATE prices SET adj_close = adj_close * 1.25, close = close * 1.25,"
        " market_cap = market_cap * 1.25, run_id = 999 WHERE symbol = ? AND date = ?",
        [top, day],
    )
    store.cursor().execute(
        "INSERT INTO ingest_runs (run_id, provider, status, started_at)"
        " VALUES (999, 'fix', 'succeeded', now()::TIMESTAMP)"
    )
    before = {i: _levels(store, i) for i in corrected_ids}
    results = builder.build(corrected_ids)
    # a correction restates from the corrected day on, as a new version; the days
    # before it stay exactly as published
    assert all((r.mode, r.restated_from, r.start_date) == ("restated", day, day) for r in results)
    for index_id in corrected_ids:
        now = _levels(store, index_id)
        kept = pc.less(before[index_id].column("date"), pa.scalar(day, pa.date32()))
        assert now.filter(pc.less(now.column("date"), pa.scalar(day, pa.date32()))).equals(
            before[index_id].filter(kept)
        )
    corrected = (
        store.cursor()
        .sql("SELECT * EXCLUDE (run_id) FROM prices ORDER BY date, symbol")
        .to_arrow_table()
    )
    full = _open(tmp_path / "b.duckdb")
    sec = securities
    _ingest_table(full, sec, corrected)
    IndexBuilder(full, full.calendar).build(corrected_ids)
    for index_id in corrected_ids:
        _assert_same_results(store, full, index_id)


@pytest.mark.parametrize("definition", DEFINITIONS, ids=[d["id"] for d in DEFINITIONS])
def test_stored_compositions_match_the_in_memory_daily_snapshots(
    tmp_path: Path, definition: dict[str, object]
) -> None:
    securities, prices = _market(70)
    store = _open(tmp_path / "c.duckdb")
    _ingest_table(store, securities, prices)
    index_id = str(definition["id"])
    IndexBuilder(store, store.calendar).build([index_id])
    memory = build_in_memory(securities.to_pandas(), prices.to_pandas(), definition)
    reader = IndexReader(store, store.calendar)
    spells = store.spells_overlapping(index_id, dt.date(2000, 1, 1), dt.date(2100, 1, 1))
    stored_levels = _levels(store, index_id).column("level").to_numpy()
    np.testing.assert_allclose(stored_levels, memory.levels["level"].to_numpy(), rtol=1e-12)
    for day in memory.levels["date"]:
        snap = memory.snapshot(day)
        comp = reader.composition(index_id, day)
        rows = comp.rows()
        assert [r["symbol"] for r in rows] == list(snap["symbol"])
        assert members_on(spells, day) == sorted(snap["symbol"])
        np.testing.assert_allclose([r["weight"] for r in rows], snap["weight"], rtol=1e-9)
        np.testing.assert_allclose([r["units"] for r in rows], snap["units"], rtol=1e-9)
        assert [r["rank"] for r in rows] == list(snap["rank"])
        assert abs(sum(r["weight"] for r in rows) - 1.0) < 1e-9


def test_spells_take_far_fewer_rows_than_daily_snapshots(tmp_path: Path) -> None:
    store = _open(tmp_path / "d.duckdb")
    run_ingestion(store, "synthetic", {"symbols": 600, "days": 252})
    IndexBuilder(store, store.calendar).build(["ew100"])
    snapshot_rows = 100 * len(store.built_days("ew100"))
    assert store.count_spells("ew100") * 20 <= snapshot_rows


def test_non_trading_base_date_rolls_forward(tmp_path: Path) -> None:
    store = _open(tmp_path / "e.duckdb")
    run_ingestion(store, "synthetic", {"symbols": 80, "days": 20, "start": dt.date(2023, 1, 3)})
    add_definition(
        store,
        IndexDefinition(
            id="sat", name="s", top_n=5, base_date=dt.date(2023, 1, 7), universe=Universe()
        ),
    )
    (result,) = IndexBuilder(store, store.calendar).build(["sat"])
    assert result.base_date == dt.date(2023, 1, 9)  # Saturday -> Monday session
    assert store.level_on("sat", dt.date(2023, 1, 9)) == 1000.0


def test_a_first_dividend_arriving_later_rebuilds_that_security_history(tmp_path: Path) -> None:
    """The rule of a security's return variants depends on whether it has any dividend
    or split data at all; the first one arriving later affects its whole history."""
    securities, prices = _market(40)
    frame = prices.to_pandas()
    has = (
        frame.groupby("symbol")[["dividend", "split_ratio"]]
        .transform(lambda c: c.notna().any())
        .any(axis=1)
    )
    plain = frame[~has].copy()  # securities without any action data
    # the largest of them (a constituent), with an adj_close that drifts from its close,
    # so the part 1 price and the close-based return differ
    symbol = plain.groupby("symbol")["market_cap"].max().idxmax()
    mine = plain["symbol"] == symbol
    plain.loc[mine, "adj_close"] = plain.loc[mine, "close"] * np.linspace(0.9, 1.0, mine.sum())
    last_day = plain["date"].max()
    first_part = pa.Table.from_pandas(plain[plain["date"] < last_day], preserve_index=False)
    later = plain[plain["date"] == last_day].copy()
    later.loc[later["symbol"] == symbol, "dividend"] = 0.5  # its first dividend ever
    everything = pa.Table.from_pandas(
        pd.concat([plain[plain["date"] < last_day], later]), preserve_index=False
    )
    inc = _open(tmp_path / "inc.duckdb")
    _ingest_table(inc, securities, first_part.cast(prices.schema))
    IndexBuilder(inc, inc.calendar).build(["t-daily-ew"])
    _ingest_table(
        inc, securities, pa.Table.from_pandas(later, preserve_index=False).cast(prices.schema)
    )
    (result,) = IndexBuilder(inc, inc.calendar).build(["t-daily-ew"])
    full = _open(tmp_path / "full.duckdb")
    _ingest_table(full, securities, everything.cast(prices.schema))
    IndexBuilder(full, full.calendar).build(["t-daily-ew"])
    _assert_same_results(inc, full, "t-daily-ew")
    assert result.mode in ("full", "incremental")


def _correct_bar(store: DuckDBStore, symbol: str, day: dt.date, factor: float, run: int) -> None:
    """A corrected bar as ingestion writes it: new values, the run that changed it."""
    store.cursor().execute(
        "INSERT INTO ingest_runs (run_id, provider, status, started_at)"
        " VALUES (?, 'fix', 'succeeded', now()::TIMESTAMP)",
        [run],
    )
    store.cursor().execute(
        "UPDATE prices SET close = close * ?, adj_close = adj_close * ?,"
        " market_cap = market_cap * ?, run_id = ? WHERE symbol = ? AND date = ?",
        [factor, factor, factor, run, symbol, day],
    )


def test_a_correction_that_moves_no_published_value_restates_nothing(tmp_path: Path) -> None:
    # A bar of a security outside ew-tech50's universe is corrected: the build recomputes
    # from that day, finds every published value unchanged and says so.
    securities, prices = _market()
    store = _open(tmp_path / "a.duckdb")
    _ingest_table(store, securities, prices)
    builder = IndexBuilder(store, store.calendar)
    builder.build(["ew-tech50"])
    before = _levels(store, "ew-tech50")
    outside = (
        store.cursor()
        .execute("SELECT symbol FROM securities WHERE sector <> 'Information Technology' LIMIT 1")
        .fetchall()[0][0]
    )
    day = store.trading_days()[50]
    _correct_bar(store, outside, day, 1.5, 901)
    (result,) = builder.build(["ew-tech50"])
    assert (result.mode, result.outcome, result.restated_days) == ("up-to-date", "unchanged", 0)
    assert _levels(store, "ew-tech50").equals(before)
    assert {r.mode for r in builder.build(["ew-tech50"])} == {"up-to-date"}


def test_stored_days_computed_differently_are_kept_and_reported(tmp_path: Path) -> None:
    # Results stored by another release of the engine (simulated: the last stored level of
    # every variant one part in 1e15 off; monthly, so the next build recomputes the days
    # since the last rebalance before the new one): the next build keeps them and warns.
    securities, prices = _market()
    dates = np.unique(prices.column("date").to_numpy())
    store = _open(tmp_path / "a.duckdb")
    first = pc.less(prices.column("date"), pa.scalar(dates[-1].astype(object), pa.date32()))
    _ingest_table(store, securities, prices.filter(first))
    builder = IndexBuilder(store, store.calendar)
    builder.build(["t-monthly-capped"])
    store.cursor().execute(
        "UPDATE index_levels SET level = level * (1 + 1e-15),"
        " level_price = level_price * (1 + 1e-15), level_total = level_total * (1 + 1e-15),"
        " level_net_total = level_net_total * (1 + 1e-15)"
        " WHERE index_id = 't-monthly-capped' AND date = (SELECT max(date) FROM index_levels"
        " WHERE index_id = 't-monthly-capped')"
    )
    tampered = _levels(store, "t-monthly-capped")
    _ingest_table(store, securities, prices.filter(pc.invert(first)))
    (result,) = builder.build(["t-monthly-capped"])
    assert (result.mode, result.trading_days) == ("incremental", 1)
    (warning,) = result.warnings
    assert "differ from their recomputation by up to" in warning
    kept = _levels(store, "t-monthly-capped").slice(0, tampered.num_rows)
    assert kept.equals(tampered)  # the published days stay as they were
