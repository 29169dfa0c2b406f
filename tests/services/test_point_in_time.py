"""Builds as of a moment K: a past publication reproduced exactly after a correction."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.errors import InvalidInputError, NoDataError
from index_builder.ingest.job import _with_row_numbers
from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA
from index_builder.providers.synthetic_market import generate_market
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition, ensure_builtins
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

T1 = dt.datetime(2024, 4, 1, 21, 0)  # the first ingestion (naive UTC)
T2 = dt.datetime(2024, 4, 15, 21, 0)  # the correction
DEFINITIONS = [
    {"id": "pit-daily", "name": "t", "top_n": 20},
    {
        "id": "pit-weekly-mcap",
        "name": "t",
        "top_n": 15,
        "weighting": "market_cap",
        "rebalance": "weekly",
    },
    {
        "id": "pit-monthly-capped",
        "name": "t",
        "top_n": 12,
        "weighting": "capped_market_cap",
        "cap": 0.15,
        "rebalance": "monthly",
    },
]
IDS = [str(d["id"]) for d in DEFINITIONS]


class Clock:
    """A settable clock for the store (naive UTC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _open(path: Path, clock: Clock) -> DuckDBStore:
    store = DuckDBStore(path, threads=2, clock=clock).open()
    ensure_builtins(store)
    for d in DEFINITIONS:
        add_definition(store, parse_definition(d))
    return store


def _ingest(store: DuckDBStore, securities: pa.Table, prices: pa.Table) -> Any:
    return store.ingest(
        _with_row_numbers(securities, SECURITIES_SCHEMA),
        _with_row_numbers(prices, PRICES_SCHEMA),
        provider="test",
        params={},
    )


def _published(reader: IndexReader, index_id: str, as_of: dt.datetime | None = None) -> Any:
    """Everything a publication shows: levels, summary, every composition, changes."""
    perf = reader.performance(index_id, as_of=as_of)
    compositions = [c.rows() for c in reader.compositions(index_id, as_of=as_of)]
    _, changes = reader.changes(index_id, as_of=as_of)
    return {
        "levels": perf.rows,
        "summary": perf.summary.as_dict(),
        "compositions": compositions,
        "changes": [(c.date, list(c.entered), list(c.exited)) for c in changes],
    }


def _levels(store: DuckDBStore, key: str) -> pa.Table:
    return (
        store.cursor()
        .sql(
            "SELECT * EXCLUDE (index_id) FROM index_levels WHERE index_id = $k ORDER BY date",
            params={"k": key},
        )
        .to_arrow_table()
    )


def _spells(store: DuckDBStore, key: str) -> list[tuple[Any, ...]]:
    sql = "SELECT symbol, valid_from, valid_to FROM index_spells WHERE index_id = ? ORDER BY ALL"
    return store.cursor().execute(sql, [key]).fetchall()


def _correct(prices: pa.Table, day: dt.date) -> tuple[pa.Table, str]:
    """The bar of the largest security on ``day`` with close, adj_close and market cap
    30% higher (a correction), and that security's symbol."""
    on_day = prices.filter(pc.equal(prices.column("date"), pa.scalar(day, pa.date32())))
    top = int(np.argmax(on_day.column("market_cap").to_numpy()))
    row = on_day.slice(top, 1)
    symbol = str(row.column("symbol")[0])
    fixed = row
    for name in ("close", "adj_close", "market_cap"):
        i = fixed.schema.get_field_index(name)
        fixed = fixed.set_column(i, name, pc.multiply(fixed.column(name), 1.3))
    return fixed, symbol


def _replace_rows(prices: pa.Table, fixed: pa.Table) -> pa.Table:
    day, symbol = fixed.column("date")[0], fixed.column("symbol")[0]
    same = pc.and_(pc.equal(prices.column("date"), day), pc.equal(prices.column("symbol"), symbol))
    return pa.concat_tables([prices.filter(pc.invert(same)), fixed])


@pytest.fixture(scope="module")
def market() -> tuple[pa.Table, pa.Table]:
    data = generate_market(seed=11, n_symbols=120, n_days=60)
    return data.securities, data.prices


def test_a_build_as_of_k_reproduces_the_publication_made_before_a_correction(
    tmp_path: Path, market: tuple[pa.Table, pa.Table]
) -> None:
    securities, prices = market
    clock = Clock(T1)
    store = _open(tmp_path / "a.duckdb", clock)
    builder, reader = IndexBuilder(store, store.calendar), IndexReader(store, store.calendar)
    _ingest(store, securities, prices)
    builder.build(IDS)
    published = {i: _published(reader, i) for i in IDS}

    # a correction at T2 of a past price of the largest constituent
    day = store.trading_days()[30]
    fixed, symbol = _correct(prices, day)
    clock.now = T2
    report = _ingest(store, securities, fixed)
    assert (report.rows_updated, report.known_at) == (1, T2)
    results = builder.build(IDS)
    assert {(r.mode, r.restated_from) for r in results} == {("restated", day)}
    for index_id in IDS:
        now = _published(reader, index_id)
        levels = [r["level"] for r in now["levels"]]
        before = [r["level"] for r in published[index_id]["levels"]]
        assert levels != before, index_id  # the correction moved the index
        first = next(i for i, r in enumerate(now["levels"]) if r["date"] >= day)
        assert levels[:first] == before[:first]  # nothing before the corrected day

    # as of any K with T1 <= K < T2: exactly what was published before the correction
    for as_of in (T1, T1 + dt.timedelta(days=3), T2 - dt.timedelta(microseconds=1)):
        results = builder.build(IDS, as_of=as_of)
        assert {(r.mode, r.as_of) for r in results} == {("full", as_of)}
        for index_id in IDS:
            assert _published(reader, index_id, as_of) == published[index_id], (index_id, as_of)
    # the current (incremental) results equal a fresh full build on the corrected data,
    # and so does a build as of T2, when the correction is known (exactly: both are full)
    fresh = _open(tmp_path / "b.duckdb", Clock(T2))
    _ingest(fresh, securities, _replace_rows(prices, fixed))
    IndexBuilder(fresh, fresh.calendar).build(IDS)
    builder.build(IDS, as_of=T2)
    for index_id in IDS:
        a, b = _levels(store, index_id), _levels(fresh, index_id)
        assert a.column("date").equals(b.column("date"))
        for col in ("level", "daily_return", "level_price", "level_total", "level_net_total"):
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-12, atol=1e-15)
        assert _spells(store, index_id) == _spells(fresh, index_id)
        key = f"{index_id}@2024-04-15T21:00:00Z"
        assert _levels(store, key).equals(b)
        assert _spells(store, key) == _spells(fresh, index_id)

    # as-of builds never touch the current results or their incremental state
    versions = {i: store.build_state(i).version for i in IDS}  # type: ignore[union-attr]
    builder.build(IDS, as_of=T1)
    assert {i: store.build_state(i).version for i in IDS} == versions  # type: ignore[union-attr]
    assert {r.mode for r in builder.build(IDS)} == {"up-to-date"}
    assert symbol in {row["symbol"] for row in published["pit-daily"]["compositions"][30]}
    store.close()
    fresh.close()


def test_a_read_as_of_a_moment_needs_its_build_and_says_how_to_make_it(
    tmp_path: Path, market: tuple[pa.Table, pa.Table]
) -> None:
    securities, prices = market
    store = _open(tmp_path / "c.duckdb", Clock(T1))
    _ingest(store, securities, prices)
    builder, reader = IndexBuilder(store, store.calendar), IndexReader(store, store.calendar)
    builder.build(["pit-daily"])
    as_of = dt.datetime(2024, 4, 2, 12, 30)
    command = "index-builder build --index pit-daily --as-of 2024-04-02T12:30:00Z"
    for read in (
        lambda: reader.performance("pit-daily", as_of=as_of),
        lambda: reader.composition("pit-daily", as_of=as_of),
        lambda: list(reader.compositions("pit-daily", as_of=as_of)),
        lambda: reader.changes("pit-daily", as_of=as_of),
    ):
        with pytest.raises(NoDataError) as caught:
            read()
        assert caught.value.message == (
            f"pit-daily has no build as of 2024-04-02T12:30:00Z: run '{command}'"
        )
    # an aware moment is the same moment in UTC
    paris = dt.datetime(2024, 4, 2, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    (result,) = builder.build(["pit-daily"], as_of=paris)
    assert result.as_of == as_of
    assert (
        reader.performance("pit-daily", as_of=as_of).window.key == "pit-daily@2024-04-02T12:30:00Z"
    )
    assert store.as_of_builds("pit-daily")[0].as_of == as_of
    store.close()


def test_as_of_moments_in_the_future_or_before_any_data_are_refused(
    tmp_path: Path, market: tuple[pa.Table, pa.Table]
) -> None:
    securities, prices = market
    store = _open(tmp_path / "d.duckdb", Clock(T1))
    _ingest(store, securities, prices)
    builder, reader = IndexBuilder(store, store.calendar), IndexReader(store, store.calendar)
    future = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=5)
    with pytest.raises(InvalidInputError, match="in the future") as caught:
        builder.build(["pit-daily"], as_of=future)
    assert caught.value.field == "as_of"
    with pytest.raises(InvalidInputError, match="in the future"):
        builder.check_window("pit-daily", None, None, future)
    with pytest.raises(InvalidInputError, match="in the future"):
        reader.performance("pit-daily", as_of=future)
    with pytest.raises(NoDataError, match="no market data was known at 2024-04-01T20:59:59Z"):
        builder.build(["pit-daily"], as_of=T1 - dt.timedelta(seconds=1))
    store.close()
