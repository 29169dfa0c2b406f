"""The compiled views answer what the API answers, on DuckDB, PostgreSQL and Snowflake's
dialect (fakesnow): daily levels of every variant, the composition on every day and on
any date, changes, sector weights. Floats from the two paths agree within 1e-9."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import sqlglot

from index_builder.warehouse.views import compile_views

from warehouse_fixtures import INDICES, Answers, Warehouse

VARIANTS = ("price", "total", "net_total")


def close(a: Any, b: Any) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def as_date(value: Any) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def test_daily_levels_of_every_variant(warehouse: Warehouse, api: Answers) -> None:
    s = warehouse.schema
    for index_id in INDICES:
        rows = warehouse.query(
            f"SELECT date, level, daily_return, cumulative_return, level_price, level_total, "
            f"level_net_total, daily_return_price, daily_return_total, daily_return_net_total, "
            f"cumulative_return_price, cumulative_return_total, cumulative_return_net_total "
            f"FROM {s}.index_daily_levels WHERE index_id = ? ORDER BY date",
            [index_id],
        )
        headline = api.performance[index_id, api.headline[index_id]]
        assert [as_date(r[0]) for r in rows] == [r["date"] for r in headline]
        for row, expected in zip(rows, headline, strict=True):
            for i, name in enumerate(("level", "daily_return", "cumulative_return"), start=1):
                assert close(row[i], expected[name]), (index_id, expected["date"], name)
        for j, variant in enumerate(VARIANTS):
            answer = api.performance[index_id, variant]
            for row, expected in zip(rows, answer, strict=True):
                day = expected["date"]
                assert close(row[4 + j], expected["level"]), (index_id, day, variant)
                assert close(row[7 + j], expected["daily_return"]), (index_id, day, variant)
                assert close(row[10 + j], expected["cumulative_return"]), (index_id, day, variant)


def _composition(warehouse: Warehouse, index_id: str) -> dict[dt.date, list[tuple[Any, ...]]]:
    rows = warehouse.query(
        f"SELECT date, symbol, rank, weight, market_cap, price, units, sector, name "
        f"FROM {warehouse.schema}.index_composition WHERE index_id = ? ORDER BY date, rank",
        [index_id],
    )
    by_day: dict[dt.date, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_day[as_date(row[0])].append(row[1:])
    return by_day


def _same_constituents(got: list[tuple[Any, ...]], expected: list[dict[str, Any]]) -> None:
    assert [g[0] for g in got] == [e["symbol"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[1] == e["rank"], e
        for i, name in ((2, "weight"), (3, "market_cap"), (4, "price"), (5, "units")):
            assert close(g[i], e[name]), (e["symbol"], name, g[i], e[name])
        assert (g[6], g[7]) == (e["sector"], e["name"])


def test_composition_on_every_built_day(warehouse: Warehouse, api: Answers) -> None:
    for index_id in INDICES:
        got = _composition(warehouse, index_id)
        expected = api.compositions[index_id]
        assert sorted(got) == sorted(expected)
        for day, rows in expected.items():
            _same_constituents(got[day], rows)
            assert math.isclose(sum(float(r[2]) for r in got[day]), 1.0, rel_tol=1e-12)


def test_drifting_weights_are_not_the_target_weights(warehouse: Warehouse) -> None:
    """Between mcap50-ucits's rebalances the weights drift: the view computes them from
    the units and each day's prices, not by repeating the rebalance's targets."""
    rows = warehouse.query(
        f"SELECT c.weight AS drifted, h.weight AS target "
        f"FROM {warehouse.schema}.index_composition AS c "
        f"JOIN {warehouse.schema}.index_holdings AS h ON h.index_id = c.index_id "
        f"AND h.symbol = c.symbol AND h.effective_date < c.date "
        f"WHERE c.index_id = ? AND c.date = (SELECT MAX(date) FROM "
        f"{warehouse.schema}.index_levels WHERE index_id = ?) AND h.effective_date = "
        f"(SELECT MAX(date) FROM {warehouse.schema}.index_levels WHERE index_id = ? "
        f"AND is_rebalance)",
        ["mcap50-ucits"] * 3,
    )
    assert rows
    assert max(abs(float(a) - float(b)) for a, b in rows) > 1e-4


@pytest.mark.parametrize("offset", [0, 2, 5, 17, 40])
def test_composition_on_any_date(
    warehouse: Warehouse,
    opened: Any,
    offset: int,
) -> None:
    """A calendar date (weekends included) reads the last built day on or before it,
    as GET /index-composition?date= does."""
    _, reader = opened
    first = dt.date(2023, 1, 7)  # a Saturday
    day = first + dt.timedelta(days=offset)
    for index_id in ("mcap50-ucits", "ew-tech50"):
        api = reader.composition(index_id, day)
        rows = warehouse.query(
            f"SELECT symbol, rank, weight, market_cap, price, units, sector, name, date "
            f"FROM {warehouse.schema}.index_composition WHERE index_id = ? AND date = "
            f"(SELECT MAX(date) FROM {warehouse.schema}.index_daily_levels "
            f"WHERE index_id = ? AND date <= ?) ORDER BY rank",
            [index_id, index_id, day],
        )
        assert {as_date(r[8]) for r in rows} == {api.effective_date}
        _same_constituents([r[:8] for r in rows], api.rows())


def test_composition_changes(warehouse: Warehouse, api: Answers) -> None:
    for index_id in INDICES:
        for table in ("index_composition_changes", "index_changes"):
            rows = warehouse.query(
                f"SELECT date, symbol, change_type FROM {warehouse.schema}.{table} "
                f"WHERE index_id = ?",
                [index_id],
            )
            got = sorted((as_date(d), s, k) for d, s, k in rows)
            assert got == api.changes[index_id], (index_id, table)
    assert any(api.changes[i] for i in INDICES)


def test_sector_weights_over_time(warehouse: Warehouse, api: Answers) -> None:
    for index_id in ("mcap50-ucits", "ew100"):
        expected: dict[tuple[dt.date, str], list[float]] = defaultdict(list)
        for day, rows in api.compositions[index_id].items():
            for r in rows:
                expected[day, r["sector"] or "Unknown"].append(r["weight"])
        rows = warehouse.query(
            f"SELECT date, sector, weight, constituents FROM "
            f"{warehouse.schema}.index_sector_weights WHERE index_id = ?",
            [index_id],
        )
        got = {(as_date(d), s): (w, n) for d, s, w, n in rows}
        assert sorted(got) == sorted(expected)
        for key, weights in expected.items():
            assert close(got[key][0], sum(weights)), key
            assert got[key][1] == len(weights)


def test_redshift_views_run_on_postgres(published: Callable[[str], Warehouse]) -> None:
    """The views compiled for Redshift run on PostgreSQL (Redshift's ancestor dialect;
    without WITH NO SCHEMA BINDING, which only Redshift's external schemas need) and
    answer what the PostgreSQL-compiled views answer."""
    warehouse = published("postgres")
    warehouse.execute("CREATE SCHEMA IF NOT EXISTS redshift_views")
    sources = {t: warehouse.schema for t in ("index_levels", "index_spells", "securities")}
    sources |= {t: warehouse.schema for t in ("index_holdings", "index_constituent_prices")}
    for view, sql in compile_views("redshift", "redshift_views", sources):
        assert "WITH NO SCHEMA BINDING" in sql
        tree = sqlglot.parse_one(sql, read="redshift")
        tree.set("no_schema_binding", False)
        warehouse.execute(tree.sql("redshift"))
        a = warehouse.query(f"SELECT * FROM redshift_views.{view.name} ORDER BY 1, 2, 3, 4")
        b = warehouse.query(f"SELECT * FROM {warehouse.schema}.{view.name} ORDER BY 1, 2, 3, 4")
        assert len(a) == len(b) > 0, view.name
        for x, y in zip(a, b, strict=True):
            for u, v in zip(x, y, strict=True):
                assert close(u, v) if isinstance(u, float) else u == v, view.name
