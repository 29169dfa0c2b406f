"""``index-builder providers`` and ``GET /providers`` list the same providers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from index_builder.api.app import create_app
from index_builder.cli.main import app
from index_builder.settings import get_settings

from api_helpers import make_settings


def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "db.duckdb"), "-q", *args])
    return result.exit_code, result.stdout


def test_cli_lists_providers_with_capabilities_and_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INDEX_BUILDER_POLYGON_API_KEY", "very-secret")
    monkeypatch.delenv("INDEX_BUILDER_TIINGO_API_KEY", raising=False)
    code, out = _cli(tmp_path, "providers", "--format", "csv")
    assert code == 0, out
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"file", "polygon", "synthetic", "tiingo", "yahoo"}
    assert rows["polygon"]["configured"] == "yes" and rows["tiingo"]["configured"] == "no"
    assert rows["yahoo"]["configured"] == "yes"
    assert "shares_outstanding_history" in rows["polygon"]["capabilities"]
    assert "shares_outstanding_history" not in rows["yahoo"]["capabilities"]
    assert float(rows["polygon"]["rate_limit_per_minute"]) == 5.0
    assert "Bearer" in rows["polygon"]["auth"]
    assert "very-secret" not in out
    get_settings.cache_clear()


def test_cli_ingest_with_an_http_provider_needs_a_window_and_symbols(tmp_path: Path) -> None:
    code, _ = _cli(tmp_path, "ingest", "--provider", "polygon,yahoo", "--tickers", "AAPL")
    assert code == 2
    code, _ = _cli(tmp_path, "ingest", "--provider", "polygon,file", "--start", "2024-01-02")
    assert code == 2


def test_api_lists_providers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    settings = make_settings(tmp_path / "api.duckdb", None, tiingo_api_key="tok-secret")
    with TestClient(create_app(settings)) as client:
        response = client.get("/providers")
    assert response.status_code == 200
    body = response.json()
    by_name = {p["name"]: p for p in body["providers"]}
    assert by_name["tiingo"]["configured"] is True
    assert by_name["tiingo"]["api_key_variable"] == "INDEX_BUILDER_TIINGO_API_KEY"
    assert by_name["polygon"]["capabilities"]["listings"] is True
    assert by_name["synthetic"]["needs_api_key"] is False
    assert "tok-secret" not in json.dumps(body)
