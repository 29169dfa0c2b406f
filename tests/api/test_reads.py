"""GET endpoints against the real app, a real DuckDB file and a real redis-server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.problems import PROBLEM_MEDIA_TYPE

from api_helpers import app_without_redis


def _problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    if field is not None:
        assert body.get("field") == field, body
    return body


def test_performance_defaults_to_ew100_and_is_cached_byte_for_byte(client: TestClient) -> None:
    first = client.get("/index-performance")
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    body = first.json()
    assert body["index"] == "ew100"
    assert body["data"][0]["level"] == 1000.0 and body["data"][0]["cumulative_return"] == 0.0
    assert set(body["summary"]) == {
        "total_return",
        "annualized_return",
        "annualized_volatility",
        "sharpe",
        "max_drawdown",
        "best_day",
        "worst_day",
        "turnover",
    }
    second = client.get("/index-performance")
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    window = client.get(
        "/index-performance", params={"start_date": "2023-02-01", "end_date": "2023-02-28"}
    ).json()
    assert window["start_date"] == "2023-02-01" and window["end_date"] == "2023-02-28"
    assert window["data"][0]["cumulative_return"] == 0.0
    last = window["data"][-1]
    assert last["cumulative_return"] == pytest.approx(
        last["level"] / window["data"][0]["level"] - 1, rel=1e-12
    )


def test_composition_resolves_a_weekend_to_the_previous_session(client: TestClient) -> None:
    body = client.get(
        "/index-composition", params={"index": "ew-tech50", "date": "2023-01-14"}
    ).json()
    assert body["date"] == "2023-01-14" and body["effective_date"] == "2023-01-13"
    rows = body["constituents"]
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    assert set(rows[0]) == {
        "rank",
        "symbol",
        "name",
        "sector",
        "weight",
        "market_cap",
        "price",
        "units",
    }
    assert sum(r["weight"] for r in rows) == pytest.approx(1.0, abs=1e-9)
    assert {r["sector"] for r in rows} == {"Information Technology"}


def test_composition_changes(client: TestClient) -> None:
    body = client.get("/composition-changes", params={"start_date": "2023-02-01"}).json()
    assert body["index"] == "ew100" and body["changes"]
    for change in body["changes"]:
        assert change["date"] >= "2023-02-01"
        assert change["entered"] == sorted(change["entered"])
        assert change["entered"] or change["exited"]


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/index-performance", {"index": "nope"}, 404, "index"),
        ("/index-composition", {"index": "nope"}, 404, "index"),
        ("/composition-changes", {"index": "nope"}, 404, "index"),
        ("/index-performance", {"start_date": "2023-02-30"}, 422, "start_date"),
        (
            "/index-performance",
            {"start_date": "2023-03-01", "end_date": "2023-02-01"},
            422,
            "end_date",
        ),
        ("/index-performance", {"start_date": "2022-12-01"}, 422, "start_date"),
        ("/index-composition", {"date": "2022-06-01"}, 422, "date"),
        ("/index-composition", {"date": "not-a-date"}, 422, "date"),
        ("/index-performance", {"start_date": "2030-01-02"}, 404, None),
        ("/index-composition", {"date": "2030-01-02"}, 404, None),
        ("/index-performance", {"index": "ew-sector-energy"}, 404, None),  # not built
    ],
)
def test_every_error_class_is_problem_json(
    client: TestClient, path: str, params: dict[str, str], status: int, field: str | None
) -> None:
    body = _problem(client.get(path, params=params), status, field)
    if status == 404 and field is None:
        assert "build" in body["detail"]  # says how to build / what is built


def test_unknown_route_and_malformed_body_are_problem_json(client: TestClient) -> None:
    _problem(client.get("/nowhere"), 404)
    body = _problem(
        client.post(
            "/build-index", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
        "body",
    )
    assert body["detail"].startswith("invalid JSON at line 1, column 2: expecting property name")
    _problem(client.post("/build-index", json={"index": "ew100", "extra": 1}), 422, "extra")


def test_openapi_describes_fields_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/index-performance",
        "/index-composition",
        "/composition-changes",
        "/build-index",
        "/export-data",
        "/indices",
        "/jobs/{job_id}",
    ):
        assert path in spec["paths"]
    schemas = spec["components"]["schemas"]
    for name in ("PerformanceSummary", "Constituent", "BuildResponse", "PerformancePoint"):
        for prop, schema in schemas[name]["properties"].items():
            assert schema.get("description"), f"{name}.{prop} has no description"
    assert schemas["Problem"]["properties"]["detail"]["examples"]


def test_reads_work_without_redis(database: Any) -> None:
    with app_without_redis(database) as c:
        a, b = c.get("/index-performance"), c.get("/index-performance")
        assert a.status_code == b.status_code == 200
        assert a.headers["x-cache"] == b.headers["x-cache"] == "MISS"
        assert a.content == b.content


def test_dates_are_iso_strings(client: TestClient) -> None:
    body = client.get("/index-performance").json()
    dt.date.fromisoformat(body["data"][0]["date"])


def test_performance_return_variants(client: TestClient) -> None:
    default = client.get("/index-performance").json()
    assert default["return_type"] == "total"
    first = default["data"][0]
    assert first["level_price"] == first["level_total"] == first["level_net_total"] == 1000.0
    # the synthetic market pays dividends: total >= net >= price by the end
    last = default["data"][-1]
    assert last["level_total"] > last["level_net_total"] > last["level_price"]
    assert [r["level"] for r in default["data"]] == [r["level_total"] for r in default["data"]]
    price = client.get("/index-performance", params={"return_type": "price"}).json()
    assert price["return_type"] == "price"
    assert [r["level"] for r in price["data"]] == [r["level_price"] for r in default["data"]]
    window = client.get(
        "/index-performance",
        params={"return_type": "net_total", "start_date": "2023-02-01"},
    ).json()
    row, day_before = window["data"][0], None
    for r in default["data"]:
        if r["date"] < "2023-02-01":
            day_before = r
    assert day_before is not None
    assert row["daily_return"] == pytest.approx(
        row["level_net_total"] / day_before["level_net_total"] - 1, rel=1e-12
    )
    bad = client.get("/index-performance", params={"return_type": "gross"})
    assert bad.status_code == 422 and bad.json()["field"] == "return_type"


def test_next_composition_is_the_announced_selection(client: TestClient) -> None:
    definition = {
        "id": "lag2-mcap",
        "name": "Top 20 by market cap, effective 2 sessions after selection",
        "top_n": 20,
        "weighting": "market_cap",
        "effective_lag": 2,
    }
    assert client.post("/indices", json=definition).status_code == 201
    assert client.post("/build-index", json={"index": "lag2-mcap"}).status_code == 200
    body = client.get("/index-composition/next", params={"index": "lag2-mcap"}).json()
    in_force = client.get("/index-composition", params={"index": "lag2-mcap"}).json()
    assert body["last_close"] == in_force["effective_date"]
    # daily with lag 2: the last close's selection takes effect two sessions later and
    # the one before it next session; the pro-forma view is the latest one
    assert body["sessions_ahead"] == 2 and body["pending_selections"] == 2
    assert body["reference_date"] == body["last_close"]
    assert body["effective_date"] > body["last_close"]
    members = body["constituents"]
    assert [m["rank"] for m in members] == sorted(m["rank"] for m in members)
    assert sum(m["weight"] for m in members) == pytest.approx(1.0, abs=1e-12)
    current = {c["symbol"]: c["weight"] for c in in_force["constituents"]}
    for m in members:
        assert m["current_weight"] == pytest.approx(current.get(m["symbol"], 0.0), abs=1e-15)
    target = {m["symbol"]: m["weight"] for m in members}
    expected = 0.5 * sum(
        abs(target.get(s, 0.0) - current.get(s, 0.0)) for s in set(target) | set(current)
    )
    assert body["expected_turnover"] == pytest.approx(expected, rel=1e-12)
    assert body["entered"] == sorted(set(target) - set(current))
    assert body["exited"] == sorted(set(current) - set(target))


def test_next_composition_without_an_effective_lag_is_a_clear_404(client: TestClient) -> None:
    body = _problem(client.get("/index-composition/next"), 404)
    assert "effective_lag 0" in body["detail"]
    _problem(client.get("/index-composition/next", params={"index": "nope"}), 404, "index")
