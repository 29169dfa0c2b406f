"""Fakes for the HTTP provider tests: a fake clock, recorded transports, generated payloads.

No test touches the internet: every provider gets an ``httpx.MockTransport``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from index_builder.ops.breakers import CircuitBreaker
from index_builder.providers.http import HttpProvider
from index_builder.providers.polygon import PolygonProvider
from index_builder.providers.tiingo import TiingoProvider
from index_builder.providers.yahoo import YahooProvider
from index_builder.settings import Settings

FIXTURES = Path(__file__).resolve().parent / "providers" / "fixtures"
NOW = dt.datetime(2024, 1, 9, 22, 0, tzinfo=dt.UTC)
NY = ZoneInfo("America/New_York")
KINDS: dict[str, type[HttpProvider]] = {
    "yahoo": YahooProvider,
    "polygon": PolygonProvider,
    "tiingo": TiingoProvider,
}


def fixture(name: str) -> Any:
    """A JSON fixture."""
    return json.loads((FIXTURES / name).read_text())


class FakeClock:
    """Monotonic seconds that only move when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "polygon_api_key": SecretStr("poly-secret-key"),
        "tiingo_api_key": SecretStr("tiingo-secret-key"),
        "provider_retries": 3,
        "provider_backoff_base_seconds": 1.0,
        "provider_backoff_max_seconds": 8.0,
        "breaker_failure_threshold": 3,
        "breaker_cooldown_seconds": 30.0,
        "yahoo_rate_limit_per_minute": 6000.0,
        "polygon_rate_limit_per_minute": 6000.0,
        "tiingo_rate_limit_per_minute": 6000.0,
    }
    values.update(overrides)
    return Settings(**values)


def make(
    kind: str,
    handler: Handler,
    *,
    clock: FakeClock | None = None,
    breaker: CircuitBreaker | None = None,
    **overrides: Any,
) -> tuple[HttpProvider, Recorder, FakeClock]:
    """A provider of ``kind`` on a recorded MockTransport with a fake clock and breaker."""
    clock = clock or FakeClock()
    recorder = handler if isinstance(handler, Recorder) else Recorder(handler)
    cfg = settings(**overrides)
    provider = KINDS[kind](
        settings=cfg,
        transport=httpx.MockTransport(recorder),
        sleep=clock.sleep,
        clock=clock,
        now=lambda: NOW,
        breaker=breaker
        or CircuitBreaker(
            kind,
            threshold=cfg.breaker_failure_threshold,
            ratio=cfg.breaker_failure_ratio,
            window=cfg.breaker_window,
            cooldown=cfg.breaker_cooldown_seconds,
            clock=clock,
        ),
    )
    return provider, recorder, clock


def json_response(payload: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=payload)


# ------------------------------------------------------------ generated markets
Bar = tuple[dt.date, float]  # raw close


class FakeMarket:
    """Raw closes, dividends (raw cash) and splits per symbol, served like the APIs.

    ``up_to`` limits what the fake APIs know (a day-by-day increment: Yahoo
    adjusts its closes only for the splits it knows of by then).
    """

    def __init__(
        self,
        bars: dict[str, list[Bar]],
        *,
        dividends: dict[str, dict[dt.date, float]] | None = None,
        splits: dict[str, dict[dt.date, float]] | None = None,
        shares: float = 1e6,
    ) -> None:
        self.bars = bars
        self.dividends = dividends or {}
        self.splits = splits or {}
        self.shares = shares
        self.up_to: dt.date = max(d for rows in bars.values() for d, _ in rows)
        self.down: set[tuple[str, str]] = set()  # (provider, symbol) answering 500
        self.missing: dict[tuple[str, str], set[dt.date]] = {}  # dates a provider lacks

    def _known(self, provider: str, symbol: str) -> list[Bar]:
        lacking = self.missing.get((provider, symbol), set())
        return [(d, c) for d, c in self.bars[symbol] if d <= self.up_to and d not in lacking]

    def yahoo(self, request: httpx.Request) -> httpx.Response:
        symbol = request.url.path.rsplit("/", 1)[-1]
        if symbol not in self.bars:
            return json_response(fixture("yahoo_chart_not_found.json"), 404)
        if ("yahoo", symbol) in self.down:
            return httpx.Response(503, text="unavailable")
        start = dt.datetime.fromtimestamp(int(request.url.params["period1"]), dt.UTC).date()
        bars = [(d, c) for d, c in self._known("yahoo", symbol) if d >= start]
        splits = {d: r for d, r in self.splits.get(symbol, {}).items() if d <= self.up_to}

        def factor(day: dt.date) -> float:
            out = 1.0
            for when, ratio in splits.items():
                if when > day:
                    out *= ratio
            return out

        def stamp(day: dt.date) -> int:
            return int(dt.datetime.combine(day, dt.time(9, 30), tzinfo=NY).timestamp())

        divs = {
            str(stamp(d)): {"amount": a / factor(d), "date": stamp(d)}
            for d, a in self.dividends.get(symbol, {}).items()
            if start <= d <= self.up_to
        }
        split_events = {
            str(stamp(d)): {"date": stamp(d), "numerator": r, "denominator": 1.0}
            for d, r in splits.items()
            if d >= start
        }
        result = {
            "meta": {
                "symbol": symbol,
                "exchangeName": "NMS",
                "instrumentType": "EQUITY",
                "currency": "USD",
                "exchangeTimezoneName": "America/New_York",
            },
            "timestamp": [stamp(d) for d, _ in bars],
            "events": {"dividends": divs, "splits": split_events},
            "indicators": {
                "quote": [
                    {"close": [c / factor(d) for d, c in bars], "volume": [1000 for _ in bars]}
                ]
            },
        }
        return json_response({"chart": {"result": [result], "error": None}})

    def polygon(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        parts = path.split("/")
        if path.startswith("/v2/aggs/ticker/"):
            symbol, start, end = parts[4], parts[8], parts[9]
            if symbol not in self.bars:
                return json_response({"status": "OK", "resultsCount": 0, "results": []})
            if ("polygon", symbol) in self.down:
                return httpx.Response(500, text="oops")
            lo, hi = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
            results = [
                {
                    "t": int(dt.datetime.combine(d, dt.time(), tzinfo=NY).timestamp() * 1000),
                    "c": c,
                    "v": 1000,
                }
                for d, c in self._known("polygon", symbol)
                if lo <= d <= hi
            ]
            return json_response({"status": "OK", "resultsCount": len(results), "results": results})
        symbol = request.url.params.get("ticker") or parts[-1]
        if path == "/v3/reference/dividends":
            items = [
                {"ex_dividend_date": d.isoformat(), "cash_amount": a, "ticker": symbol}
                for d, a in self.dividends.get(symbol, {}).items()
                if d <= self.up_to
            ]
            return json_response({"status": "OK", "results": items})
        if path == "/v3/reference/splits":
            items = [
                {"execution_date": d.isoformat(), "split_from": 1, "split_to": r, "ticker": symbol}
                for d, r in self.splits.get(symbol, {}).items()
                if d <= self.up_to
            ]
            return json_response({"status": "OK", "results": items})
        if path.startswith("/v3/reference/tickers/"):
            day = dt.date.fromisoformat(request.url.params["date"])
            count = self.shares
            for when, ratio in self.splits.get(symbol, {}).items():
                if when <= day:
                    count *= ratio
            return json_response(
                {
                    "status": "OK",
                    "results": {
                        "ticker": symbol,
                        "name": f"{symbol} Inc",
                        "primary_exchange": "XNAS",
                        "type": "CS",
                        "currency_name": "usd",
                        "share_class_shares_outstanding": count,
                    },
                }
            )
        return httpx.Response(404, json={"status": "NOT_FOUND"})
