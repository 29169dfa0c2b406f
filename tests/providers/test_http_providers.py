"""Each HTTP provider's transform on handwritten fixtures, and every failure class."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from index_builder.errors import ProviderError
from index_builder.providers import HTTP_PROVIDERS, chain_names
from index_builder.providers.polygon import PolygonProvider, share_sample_dates

from provider_fakes import FIXTURES, NOW, fixture, json_response, make

START, END = dt.date(2024, 1, 2), dt.date(2024, 1, 8)
DAYS = [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8)]
RAW_CLOSE = [100.0, 102.0, 51.0, 52.0, 53.0]


def test_yahoo_converts_split_adjusted_closes_and_dividends_back_to_raw() -> None:
    provider, rec, _ = make("yahoo", lambda r: json_response(fixture("yahoo_chart_acme.json")))
    data = provider.fetch_symbol("acme", START, END)
    assert [r["date"] for r in data.rows] == DAYS
    assert [r["close"] for r in data.rows] == RAW_CLOSE
    assert [r["dividend"] for r in data.rows] == [0.0, 1.0, 0.0, 0.0, 0.25]  # 0: known, none
    assert [r["split_ratio"] for r in data.rows] == [None, None, 2.0, None, None]
    assert all(
        r.get("shares_outstanding") is None and r.get("adj_close") is None for r in data.rows
    )
    assert {r["source"] for r in data.rows} == {"yahoo"}
    assert {r["fetched_at"] for r in data.rows} == {NOW}
    assert data.security["exchange"] == "XNYS" and data.security["type"] == "Common Stock"
    (request,) = rec.requests
    assert request.url.path == "/v8/finance/chart/ACME"
    assert request.url.params["events"] == "div,split"
    assert int(request.url.params["period2"]) == int(NOW.timestamp())  # later splits seen


def test_polygon_raw_bars_actions_and_point_in_time_shares() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path.startswith("/v2/aggs/ticker/ACME/range/1/day/2024-01-02/2024-01-08"):
            assert params["adjusted"] == "false"
            return json_response(fixture("polygon_aggs_acme.json"))
        if path == "/v3/reference/dividends":
            page = "2" if params.get("cursor") == "page2" else "1"
            return json_response(fixture(f"polygon_dividends_page{page}.json"))
        if path == "/v3/reference/splits":
            return json_response(fixture("polygon_splits_acme.json"))
        if path == "/v3/reference/tickers/ACME":
            assert params["date"] == "2024-01-02"
            return json_response(fixture("polygon_ticker_acme.json"))
        raise AssertionError(path)

    provider, rec, _ = make("polygon", handler)
    data = provider.fetch_symbol("ACME", START, END)
    assert [r["date"] for r in data.rows] == DAYS
    assert [r["close"] for r in data.rows] == RAW_CLOSE
    assert [r["dividend"] for r in data.rows] == [0.0, 1.0, 0.0, 0.0, 0.25]  # 0: known, none
    assert [r["split_ratio"] for r in data.rows] == [None, None, 2.0, None, None]
    # the count in force: the sample of 01-02, doubled from the split on 01-04
    assert [r["shares_outstanding"] for r in data.rows] == [1e6, 1e6, 2e6, 2e6, 2e6]
    assert {r["basis"] for r in data.rows} == {"point_in_time"}
    assert {r["source"] for r in data.rows} == {"polygon"}
    assert data.security["exchange"] == "XNYS" and data.security["name"] == "Acme Corp"
    # the key is a header, never in a URL
    assert all("poly-secret-key" not in str(r.url) for r in rec.requests)
    assert rec.requests[0].headers["Authorization"] == "Bearer poly-secret-key"
    assert sum(r.url.path == "/v3/reference/dividends" for r in rec.requests) == 2


def test_polygon_share_samples_are_month_ends_and_bounded() -> None:
    dates = share_sample_dates(dt.date(2023, 1, 3), dt.date(2023, 12, 29), 24)
    assert dates[0] == dt.date(2023, 1, 3)
    assert dt.date(2023, 1, 31) in dates and dt.date(2023, 6, 30) in dates
    assert len(share_sample_dates(dt.date(2015, 1, 2), dt.date(2023, 12, 29), 24)) == 24


def test_polygon_listings_follow_next_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = "2" if request.url.params.get("cursor") == "p2" else "1"
        assert page == "2" or request.url.params["type"] == "CS"
        return json_response(fixture(f"polygon_tickers_page{page}.json"))

    provider, rec, _ = make("polygon", handler)
    assert isinstance(provider, PolygonProvider)
    table = provider.listings(types=["CS"], exchanges=["XNYS"])
    assert table.column("symbol").to_pylist() == ["ACME", "BOLT", "CRUX"]
    assert set(table.column("type").to_pylist()) == {"Common Stock"}
    assert len(rec.requests) == 2


def test_tiingo_raw_close_dividends_and_split_factor() -> None:
    provider, rec, _ = make("tiingo", lambda r: json_response(fixture("tiingo_prices_acme.json")))
    data = provider.fetch_symbol("ACME", START, END)
    assert [r["close"] for r in data.rows] == RAW_CLOSE
    assert [r["dividend"] for r in data.rows] == [0.0, 1.0, 0.0, 0.0, 0.25]  # 0: known, none
    assert [r["split_ratio"] for r in data.rows] == [None, None, 2.0, None, None]
    assert rec.requests[0].url.path == "/tiingo/daily/acme/prices"
    assert rec.requests[0].headers["Authorization"] == "Token tiingo-secret-key"


def test_the_three_providers_agree_on_the_same_market() -> None:
    yahoo, _, _ = make("yahoo", lambda r: json_response(fixture("yahoo_chart_acme.json")))
    tiingo, _, _ = make("tiingo", lambda r: json_response(fixture("tiingo_prices_acme.json")))
    keys = ("date", "close", "dividend", "split_ratio")
    a = [{k: r[k] for k in keys} for r in yahoo.fetch_symbol("ACME", START, END).rows]
    b = [{k: r[k] for k in keys} for r in tiingo.fetch_symbol("ACME", START, END).rows]
    assert a == b


def test_registry_and_chain_names() -> None:
    assert set(HTTP_PROVIDERS) == {"yahoo", "polygon", "tiingo"}
    assert chain_names("polygon,yfinance") == ["polygon", "yahoo"]
    assert chain_names("synthetic") is None
    with pytest.raises(Exception, match="cannot be in a chain"):
        chain_names("polygon,file")


# ------------------------------------------------------------------ failures
def _fail(kind: str, response: httpx.Response | Exception, **kw: object) -> ProviderError:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(response, Exception):
            raise response
        return response

    provider, rec, clock = make(kind, handler, **kw)  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as info:
        provider.fetch_symbol("ACME", START, END)
    info.value.requests = len(rec.requests)  # type: ignore[attr-defined]
    info.value.slept = clock.slept  # type: ignore[attr-defined]
    return info.value


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (httpx.Response(500, text="boom"), "server_error"),
        (httpx.Response(503, text="down"), "server_error"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectError("reset"), "connection_error"),
        (httpx.ReadError("connection reset by peer"), "connection_error"),
        (httpx.Response(429, text="slow down"), "rate_limited"),
    ],
)
def test_transient_errors_are_retried_with_backoff(
    failure: httpx.Response | Exception, reason: str
) -> None:
    error = _fail("tiingo", failure)
    assert error.reason == reason and error.transient
    assert error.requests == 4  # type: ignore[attr-defined]  # 1 + 3 retries
    slept = error.slept  # type: ignore[attr-defined]
    assert len(slept) == 3
    for attempt, wait in enumerate(slept, start=1):
        backoff = min(8.0, 2 ** (attempt - 1))
        assert backoff / 2 <= wait <= backoff  # exponential, with jitter


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "client_error"),
        (401, "unauthorized"),
        (403, "unauthorized"),
        (404, "unknown_symbol"),
        (422, "client_error"),
    ],
)
def test_client_errors_are_not_retried(status: int, reason: str) -> None:
    error = _fail("tiingo", httpx.Response(status, json={"detail": "no"}))
    assert error.reason == reason and not error.transient
    assert error.requests == 1  # type: ignore[attr-defined]


def test_429_honours_retry_after() -> None:
    calls = iter(
        [
            httpx.Response(429, headers={"Retry-After": "7"}),
            json_response(fixture("tiingo_prices_acme.json")),
        ]
    )
    provider, rec, clock = make("tiingo", lambda r: next(calls))
    assert len(provider.fetch_symbol("ACME", START, END).rows) == 5
    assert clock.slept == [7.0] and len(rec.requests) == 2


def test_retry_after_as_http_date() -> None:
    when = "Tue, 09 Jan 2024 22:00:20 GMT"  # NOW + 20 s
    calls = iter(
        [
            httpx.Response(429, headers={"Retry-After": when}),
            json_response(fixture("tiingo_prices_acme.json")),
        ]
    )
    provider, _, clock = make("tiingo", lambda r: next(calls))
    provider.fetch_symbol("ACME", START, END)
    assert clock.slept == [20.0]


def test_html_challenge_page_with_200_is_rejected() -> None:
    html = (FIXTURES / "yahoo_challenge.html").read_text()
    for headers in ({"content-type": "text/html"}, {"content-type": "application/json"}):
        error = _fail("yahoo", httpx.Response(200, text=html, headers=headers))
        assert error.reason == "html_payload"
        assert error.snippet is not None and error.snippet.startswith("<!DOCTYPE html>")
        assert error.requests == 1  # type: ignore[attr-defined]


def test_invalid_json_is_malformed() -> None:
    error = _fail("tiingo", httpx.Response(200, text="{not json"))
    assert error.reason == "malformed_payload"


def test_missing_fields_and_wrong_types_are_malformed() -> None:
    chart = fixture("yahoo_chart_acme.json")
    del chart["chart"]["result"][0]["indicators"]
    assert _fail("yahoo", json_response(chart)).reason == "malformed_payload"
    chart = fixture("yahoo_chart_acme.json")
    chart["chart"]["result"][0]["indicators"]["quote"][0]["close"][1] = "51.0"
    error = _fail("yahoo", json_response(chart))
    assert error.reason == "malformed_payload" and "close is not a number" in error.message
    rows = fixture("tiingo_prices_acme.json")
    del rows[2]["close"]
    assert _fail("tiingo", json_response(rows)).reason == "malformed_payload"
    assert _fail("tiingo", json_response({"unexpected": 1})).reason == "malformed_payload"


def test_empty_series_and_unknown_symbols() -> None:
    assert _fail("tiingo", json_response([])).reason == "empty_series"
    chart = fixture("yahoo_chart_acme.json")
    chart["chart"]["result"][0]["timestamp"] = []
    assert _fail("yahoo", json_response(chart)).reason == "empty_series"
    assert _fail("yahoo", json_response(fixture("yahoo_chart_not_found.json"))).reason == (
        "unknown_symbol"
    )
    empty = {"status": "OK", "resultsCount": 0, "results": []}
    assert _fail("polygon", json_response(empty)).reason == "empty_series"


def test_missing_api_key_is_reported_without_a_request() -> None:
    error = _fail("polygon", json_response({}), polygon_api_key=None)
    assert error.reason == "unauthorized" and "INDEX_BUILDER_POLYGON_API_KEY" in error.message
    assert error.requests == 0  # type: ignore[attr-defined]


def test_api_key_never_in_error_messages_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    error = _fail("polygon", httpx.Response(500, text="boom"))
    assert "poly-secret-key" not in error.message
    assert "poly-secret-key" not in caplog.text
