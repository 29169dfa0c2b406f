"""The ``tiingo`` provider: Tiingo's end-of-day REST API (API token as a header).

``GET /tiingo/daily/{ticker}/prices?startDate=&endDate=`` returns per day the
raw ``close`` and ``volume``, ``divCash`` (cash per share going ex that day) and
``splitFactor`` (new shares per old, 1 when none). Its ``adjClose`` changes
after every corporate action and is not stored. Tiingo's free plan has no
shares outstanding (capability false) and no listing endpoint with types.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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


class TiingoProvider(HttpProvider):
    """Tiingo end-of-day prices with dividends and splits."""

    name = "tiingo"
    base_url = "https://api.tiingo.com"
    capabilities = ProviderCapabilities(
        adjusted_prices=True,
        dividends=True,
        splits=True,
        shares_outstanding_history=False,
        listings=False,
        needs_api_key=True,
        network=True,
        rate_limit_per_minute=0.8,
        auth="API token (Authorization: Token)",
    )
    auth_scheme = "Token"  # Authorization: Token <key>
    api_key_setting = "tiingo_api_key"
    rate_limit_setting = "tiingo_rate_limit_per_minute"

    def transform_query(self, query: SymbolQuery) -> dict[str, Any]:
        """Tiingo's query parameters."""
        return {
            "startDate": query.start.isoformat(),
            "endDate": query.end.isoformat(),
            "format": "json",
        }

    def extract(self, params: dict[str, Any], query: SymbolQuery) -> Any:
        """The list of daily records."""
        return self.get_json(
            f"/tiingo/daily/{query.symbol.lower()}/prices", params, symbol=query.symbol
        )

    def transform(self, raw: Any, query: SymbolQuery) -> SymbolData:
        """Standard rows: raw close, ``divCash`` as dividend (0 on ordinary days),
        ``splitFactor`` != 1 as split ratio."""
        sym, name = query.symbol, self.name
        if isinstance(raw, dict) and "detail" in raw:
            raise payload_error(name, "unknown_symbol", str(raw["detail"]), symbol=sym, raw=raw)
        if not isinstance(raw, list):
            raise payload_error(name, "malformed_payload", "not a list", symbol=sym, raw=raw)
        if not raw:
            raise payload_error(name, "empty_series", "no bars", symbol=sym, raw=raw)
        fetched_at = self.now()
        rows: list[dict[str, Any]] = []
        for item in raw:
            text = field_of(item, "date", name, sym, item)
            try:
                day = dt.date.fromisoformat(str(text)[:10])
            except ValueError:
                raise payload_error(
                    name, "malformed_payload", f"bad date {text!r}", symbol=sym, raw=item
                ) from None
            dividend = item.get("divCash")
            split = item.get("splitFactor")
            volume = item.get("volume")
            div = None if dividend is None else number(dividend, "divCash", name, sym, item)
            ratio = None if split is None else number(split, "splitFactor", name, sym, item)
            rows.append(
                {
                    "date": day,
                    "symbol": sym,
                    "close": number_field(item, "close", name, sym, item),
                    "volume": None if volume is None else number(volume, "volume", name, sym, item),
                    # 0 on a day without one: the provider knows every dividend, so
                    # the security's total return comes from dividends (METHODOLOGY
                    # part 2), and a split is never read as a price fall
                    "dividend": div,
                    "split_ratio": ratio if ratio is not None and ratio != 1.0 else None,
                    "source": name,
                    "fetched_at": fetched_at,
                }
            )
        return SymbolData(sym, rows, {"symbol": sym})
