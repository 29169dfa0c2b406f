"""The ``yahoo`` provider: Yahoo Finance's chart endpoint (what yfinance calls), over httpx.

``GET /v8/finance/chart/{symbol}?period1=&period2=&interval=1d&events=div,split``
returns daily bars, dividends and splits. We call it with httpx rather than
through the yfinance package so that every provider shares one HTTP stack with
an injectable transport (tests never touch the internet) and the same retries,
breaker and rate limit.

Yahoo's ``close`` is split-adjusted (for every split up to today) and its
dividend amounts too; both are converted back to raw values with the split
events, so the request always runs to now (``period2``) and the bars are cut to
the window afterwards. ``adjclose`` (also dividend-adjusted) changes after
every corporate action and is not stored. Yahoo has no shares outstanding
history: rows carry no shares (capability false).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from index_builder.providers.base import ProviderCapabilities
from index_builder.providers.http import (
    HttpProvider,
    SymbolData,
    SymbolQuery,
    field_of,
    number,
    number_field,
    payload_error,
)
from index_builder.providers.schema import COMMON_STOCK

EXCHANGES = {
    "NYQ": "XNYS",
    "NYSE": "XNYS",
    "NMS": "XNAS",
    "NGM": "XNAS",
    "NCM": "XNAS",
    "NasdaqGS": "XNAS",
    "ASE": "XASE",
    "PCX": "ARCX",
}
"""Yahoo exchange codes -> ISO 10383 MICs."""


class YahooProvider(HttpProvider):
    """Yahoo Finance daily bars, dividends and splits (no key, unofficial, no SLA)."""

    name = "yahoo"
    base_url = "https://query1.finance.yahoo.com"
    capabilities = ProviderCapabilities(
        adjusted_prices=True,
        dividends=True,
        splits=True,
        shares_outstanding_history=False,
        listings=False,
        needs_api_key=False,
        network=True,
        rate_limit_per_minute=60,
        auth="none (unofficial endpoint)",
    )
    rate_limit_setting = "yahoo_rate_limit_per_minute"

    def transform_query(self, query: SymbolQuery) -> dict[str, Any]:
        """period1 at the window's start; period2 now (later splits adjust the window)."""
        start = dt.datetime.combine(query.start, dt.time(), tzinfo=dt.UTC)
        return {
            "period1": int(start.timestamp()),
            "period2": int(self.now().timestamp()),
            "interval": "1d",
            "events": "div,split",
            "includeAdjustedClose": "true",
        }

    def extract(self, params: dict[str, Any], query: SymbolQuery) -> Any:
        """The chart payload."""
        return self.get_json(f"/v8/finance/chart/{query.symbol}", params, symbol=query.symbol)

    def transform(self, raw: Any, query: SymbolQuery) -> SymbolData:
        """Raw close = Yahoo's close x the later splits; dividends likewise."""
        sym, name = query.symbol, self.name
        chart = field_of(raw, "chart", name, sym, raw)
        error = chart.get("error") if isinstance(chart, dict) else None
        if error:
            code = str(error.get("code", "")) if isinstance(error, dict) else str(error)
            reason = "unknown_symbol" if code == "Not Found" else "malformed_payload"
            raise payload_error(name, reason, f"chart error {code!r}", symbol=sym, raw=raw)
        results = field_of(chart, "result", name, sym, raw)
        if not isinstance(results, list) or not results:
            raise payload_error(name, "empty_series", "no chart result", symbol=sym, raw=raw)
        result = results[0]
        meta = field_of(result, "meta", name, sym, raw)
        zone = ZoneInfo(str(meta.get("exchangeTimezoneName") or "America/New_York"))
        stamps = result.get("timestamp") or []
        if not stamps:
            raise payload_error(name, "empty_series", "no bars", symbol=sym, raw=raw)
        quotes = field_of(field_of(result, "indicators", name, sym, raw), "quote", name, sym, raw)
        quote = quotes[0] if isinstance(quotes, list) and quotes else None
        closes = field_of(quote, "close", name, sym, raw)
        volumes = quote.get("volume") or [None] * len(stamps) if isinstance(quote, dict) else []
        if (
            not isinstance(closes, list)
            or len(closes) != len(stamps)
            or len(volumes) != len(stamps)
        ):
            raise payload_error(
                name, "malformed_payload", "bars and timestamps differ", symbol=sym, raw=raw
            )
        events = result.get("events") or {}
        splits = self._splits(events.get("splits") or {}, zone, sym, raw)
        dividends = self._dividends(events.get("dividends") or {}, zone, sym, raw)
        fetched_at = self.now()
        rows: list[dict[str, Any]] = []
        for stamp, close, volume in zip(stamps, closes, volumes, strict=True):
            day = _day(number(stamp, "timestamp", name, sym, raw), zone)
            if close is None or not query.start <= day <= query.end:
                continue  # no trade that day, or outside the window
            factor = _later_splits(splits, day)
            rows.append(
                {
                    "date": day,
                    "symbol": sym,
                    "close": number(close, "close", name, sym, raw) * factor,
                    "volume": None if volume is None else number(volume, "volume", name, sym, raw),
                    # 0 on a day without one: the events list every dividend, so the
                    # security's total return comes from dividends (METHODOLOGY part 2)
                    "dividend": dividends[day] * factor if day in dividends else 0.0,
                    "split_ratio": splits.get(day),
                    "source": self.name,
                    "fetched_at": fetched_at,
                }
            )
        if not rows:
            raise payload_error(name, "empty_series", "no bars in the window", symbol=sym, raw=raw)
        security = {
            "symbol": sym,
            "name": meta.get("longName") or meta.get("shortName"),
            "exchange": EXCHANGES.get(str(meta.get("exchangeName")), meta.get("exchangeName")),
            "currency": meta.get("currency"),
            "type": COMMON_STOCK if meta.get("instrumentType") == "EQUITY" else None,
        }
        return SymbolData(sym, rows, security)

    def _splits(self, events: Any, zone: ZoneInfo, sym: str, raw: Any) -> dict[dt.date, float]:
        out: dict[dt.date, float] = {}
        for event in _event_list(events, self.name, sym, raw):
            day = _day(number_field(event, "date", self.name, sym, raw), zone)
            num = number_field(event, "numerator", self.name, sym, raw)
            den = number_field(event, "denominator", self.name, sym, raw)
            if num <= 0 or den <= 0:
                raise payload_error(
                    self.name, "malformed_payload", "split ratio <= 0", symbol=sym, raw=raw
                )
            out[day] = out.get(day, 1.0) * num / den
        return out

    def _dividends(self, events: Any, zone: ZoneInfo, sym: str, raw: Any) -> dict[dt.date, float]:
        out: dict[dt.date, float] = {}
        for event in _event_list(events, self.name, sym, raw):
            day = _day(number_field(event, "date", self.name, sym, raw), zone)
            amount = number_field(event, "amount", self.name, sym, raw)
            out[day] = out.get(day, 0.0) + amount
        return out


def _event_list(events: Any, provider: str, sym: str, raw: Any) -> list[Any]:
    if not isinstance(events, dict):
        raise payload_error(
            provider, "malformed_payload", "events is not an object", symbol=sym, raw=raw
        )
    return list(events.values())


def _day(stamp: float, zone: ZoneInfo) -> dt.date:
    """The exchange-local date of a Unix timestamp."""
    return dt.datetime.fromtimestamp(stamp, tz=zone).date()


def _later_splits(splits: dict[dt.date, float], day: dt.date) -> float:
    """The product of the split ratios effective after ``day`` (Yahoo adjusted for them)."""
    factor = 1.0
    for when, ratio in splits.items():
        if when > day:
            factor *= ratio
    return factor
