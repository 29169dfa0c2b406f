"""Hostile numbers: NaN, infinities, overflowing literals and out-of-range values in
API bodies, definition files, input files and settings. Each is refused with a
problem (or exit code 2, or a quarantine reason) naming the field, nothing reaches
storage, and a stored definition that no longer validates never bricks the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.api.problems import PROBLEM_MEDIA_TYPE
from index_builder.ingest.job import run_ingestion
from index_builder.storage.duckdb.store import DuckDBStore

from api_helpers import make_settings
from cli_runner import run
from market_files import PRICE_HEADER, SECURITY_HEADER, security, write_csv

DEFINITION = '{"id": "hostile", "name": "h", "top_n": 5, %s}'


def _problem(response: Any, status: int, code: str, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f":{code}") and body.get("field") == field, body
    return body


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ('"base_value": 1e309', "base_value", "finite"),  # overflows to infinity
        ('"base_value": NaN', "base_value", "finite"),
        ('"base_value": Infinity', "base_value", "finite"),
        ('"base_value": -Infinity', "base_value", "finite"),
        ('"base_value": 1.7e308', "base_value", "less than or equal to 1000000000"),
        ('"base_value": 5e-324', "base_value", "greater than or equal to 0.001"),
        ('"universe": {"min_price": 1e309}', "universe.min_price", "finite"),
        ('"universe": {"min_market_cap": NaN}', "universe.min_market_cap", "finite"),
        ('"universe": {"min_market_cap": 1e19}', "universe.min_market_cap", "less than"),
        ('"weighting": "capped_market_cap", "cap": Infinity', "cap", "finite"),
        ('"tax": NaN', "tax", "finite"),
        ('"top_n": 1e400', "top_n", "finite"),
        ('"top_n": 100000000000000000000', "top_n", "less than or equal to 10000"),
        ('"effective_lag": -1', "effective_lag", "greater than or equal to 0"),
    ],
)
def test_definitions_with_hostile_numbers_are_refused_and_stored_nowhere(
    client: TestClient, intact: Callable[[], None], fields: str, field: str, words: str
) -> None:
    response = client.post(
        "/indices",
        content=(DEFINITION % fields).encode(),
        headers={"content-type": "application/json"},
    )
    body = _problem(response, 422, "invalid-input", field)
    assert words in body["detail"], body["detail"]
    intact()
    assert client.get("/indices").status_code == 200
    assert client.get("/indices/hostile").status_code == 404


@pytest.mark.parametrize(
    ("yaml_value", "field"),
    [("base_value: .inf", "base_value"), ("base_value: .nan", "base_value"), ("tax: 1e999", "tax")],
)
def test_definition_files_with_hostile_numbers_exit_2_naming_the_field(
    database: Path, tmp_path: Path, yaml_value: str, field: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(f"id: hostile\nname: h\ntop_n: 5\n{yaml_value}\n")
    code, out, err = run(database, "indices", "add", str(path))
    assert code == 2, (out, err)
    assert f"field '{field}'" in err and "finite" in err, err
    assert "Traceback" not in err


def test_input_files_with_hostile_numbers_are_quarantined_never_stored(
    store: DuckDBStore, tmp_path: Path
) -> None:
    header = [*PRICE_HEADER, "dividend", "split_ratio"]
    ok = ["2024-01-02", "AAA", 10, None, 1000, 1e6, None, None, None]
    rows = [
        ok,
        ["2024-01-03", "AAA", "inf", None, 1000, 1e6, None, None, None],  # close
        ["2024-01-03", "BBB", 10, None, 1000, None, "1e309", None, None],  # market cap
        ["2024-01-04", "AAA", 10, None, 1000, "-inf", None, None, None],  # shares
        ["2024-01-04", "BBB", 10, None, "inf", 1e6, None, None, None],  # volume
        ["2024-01-05", "AAA", 10, None, 1000, 1e6, None, "nan", None],  # dividend
        ["2024-01-05", "BBB", 10, None, 1000, 1e6, None, None, "Infinity"],  # split
        ["2024-01-08", "AAA", 10, "inf", "nan", 1e6, None, None, None],  # valid: no adj, no vol
    ]
    prices = write_csv(tmp_path / "p.csv", header, rows)
    secs = write_csv(tmp_path / "s.csv", SECURITY_HEADER, [security("AAA"), security("BBB")])
    report = run_ingestion(store, "file", {"securities": str(secs), "prices": str(prices)})
    assert report.rejected_by_reason == {
        "prices:invalid_close": 1,
        "prices:invalid_market_cap": 1,
        "prices:invalid_shares_outstanding": 1,
        "prices:invalid_volume": 1,
        "prices:invalid_dividend": 1,
        "prices:invalid_split_ratio": 1,
    }
    assert report.rows_accepted == 2
    finite = store.cursor().execute(
        "SELECT count(*) FROM prices WHERE NOT isfinite(close) OR NOT isfinite(market_cap)"
        " OR NOT isfinite(coalesce(adj_close, 1)) OR NOT isfinite(coalesce(volume, 1))"
        " OR NOT isfinite(coalesce(shares_outstanding, 1))"
    )
    assert finite.fetchall() == [(0,)]
    stored = (
        store.cursor()
        .execute("SELECT adj_close, volume FROM prices WHERE date = '2024-01-08'")
        .fetchall()
    )
    assert stored == [(None, None)]  # not finite: stored as missing (P falls back to close)


def test_a_stored_definition_that_no_longer_validates_never_bricks_the_store(
    database: Path,
) -> None:
    # Written by an older release or by hand: the store still opens, every other index
    # is served, and the broken one is named by health, the reads, the listing and logs.
    with DuckDBStore(database) as store:
        broken = {"id": "broken", "name": "b", "top_n": 5, "base_value": None}
        store.cursor().execute(
            "INSERT INTO index_definitions (index_id, definition, builtin, created_at,"
            " updated_at) VALUES ('broken', ?, false, now()::TIMESTAMP, now()::TIMESTAMP)",
            [json.dumps(broken)],
        )
    code, out, err = run(database, "indices", "list", "--format", "json")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["id"] == "broken"]
    assert "no longer validates" in row["problem"] and "broken" in err
    with TestClient(create_app(make_settings(database, None))) as client:
        listed = [i["definition"]["id"] for i in client.get("/indices").json()]
        assert "ew100" in listed and "broken" not in listed
        assert client.get("/index-performance", params={"index": "ew100"}).status_code == 200
        body = _problem(client.get("/indices/broken"), 409, "conflict", "index")
        assert "no longer validates" in body["detail"] and "base_value" in body["detail"]
        ready = client.get("/health/ready").json()
        definitions = ready["components"]["definitions"]
        assert definitions["status"] == "degraded" and "broken" in definitions["broken"]
        # replacing it repairs it
        repaired = {"id": "broken", "name": "b", "top_n": 5}
        assert client.post("/indices?replace=true", json=repaired).status_code == 201
        assert client.get("/health/ready").json()["components"]["definitions"] == {"status": "ok"}
    code, _, err = run(database, "indices", "list")
    assert code == 0, err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INDEX_BUILDER_REDIS_TIMEOUT_SECONDS", "inf"),
        ("INDEX_BUILDER_HEALTH_TIMEOUT_SECONDS", "nan"),
    ],
)
def test_settings_with_hostile_numbers_are_refused_naming_the_variable(
    database: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = run(database, "runs")
    assert code == 2, (out, err)
    assert variable in err and "Traceback" not in err
