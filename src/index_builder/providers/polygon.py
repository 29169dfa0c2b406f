"""The ``polygon`` provider: Polygon.io REST (API key as a bearer header).

* bars: ``/v2/aggs/ticker/{t}/range/1/day/{start}/{end}?adjusted=false`` (raw close);
* ``/v3/reference/dividends`` (cash per share on the ex date) and
  ``/v3/reference/splits`` (``split_to / split_from`` new shares per old);
* shares outstanding, point in time: ``/v3/reference/tickers/{t}?date=`` at a
  bounded number of dates (the first session, then month ends, thinned evenly
  to ``INDEX_BUILDER_POLYGON_SHARES_SAMPLES``); a bar uses the count of the
  latest sample on or before its date, times the splits since that sample
  (basis ``point_in_time``);
* listings: ``/v3/reference/tickers?market=stocks&type=CS&exchange=`` following
  ``next_url`` pages.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

from index_builder.calendar import get_calendar
from index_builder.errors import ProviderError
from index_builder.providers.base import ProviderCapabilities
from index_builder.providers.http import (
    HttpProvider,
    SymbolData,
    SymbolQuery,
    field_of,
    number,
    number_field,
    payload_error,
    securities_table,
)
from index_builder.providers.schema import BASIS_POINT_IN_TIME, COMMON_STOCK

NEW_YORK = ZoneInfo("America/New_York")
TYPES = {"CS": COMMON_STOCK, "ETF": "ETF", "ADRC": "ADR", "PFD": "Preferred Stock"}


class PolygonProvider(HttpProvider):
    """Polygon.io: raw bars, dividends, splits, point-in-time shares and listings."""

    name = "polygon"
    base_url = "https://api.polygon.io"
    capabilities = ProviderCapabilities(
        adjusted_prices=True,
        dividends=True,
        splits=True,
        shares_outstanding_history=True,
        listings=True,
        needs_api_key=True,
        network=True,
        rate_limit_per_minute=5,
        auth="API key (Authorization: Bearer)",
    )
    auth_scheme = "Bearer"  # Authorization: Bearer <key>
    api_key_setting = "polygon_api_key"
    rate_limit_setting = "polygon_rate_limit_per_minute"

    def transform_query(self, query: SymbolQuery) -> dict[str, Any]:
        """The window and the dates at which shares outstanding are sampled."""
        return {
            "start": query.start.isoformat(),
            "end": query.end.isoformat(),
            "share_dates": share_sample_dates(
                query.start, query.end, self.settings.polygon_shares_samples
            ),
        }

    def extract(self, params: dict[str, Any], query: SymbolQuery) -> Any:
        """Bars, dividends, splits and the ticker details at every sample date."""
        sym, start, end = query.symbol, params["start"], params["end"]
        bars = self.get_json(
            f"/v2/aggs/ticker/{sym}/range/1/day/{start}/{end}",
            {"adjusted": "false", "sort": "asc", "limit": 50000},
            symbol=sym,
        )
        if not isinstance(bars, dict) or not bars.get("results"):
            return {"bars": bars}  # transform says why (empty or malformed)
        window = {"ticker": sym, "limit": 1000}
        dividends = list(
            self.paginate(
                "/v3/reference/dividends",
                {**window, "ex_dividend_date.gte": start, "ex_dividend_date.lte": end},
                symbol=sym,
            )
        )
        splits = list(
            self.paginate(
                "/v3/reference/splits",
                {**window, "execution_date.gte": start, "execution_date.lte": end},
                symbol=sym,
            )
        )
        details: list[tuple[dt.date, Any]] = []
        for day in params["share_dates"]:
            try:
                payload = self.get_json(
                    f"/v3/reference/tickers/{sym}", {"date": day.isoformat()}, symbol=sym
                )
            except ProviderError as exc:  # a date before the listing: no details then
                if exc.reason != "unknown_symbol":
                    raise
                continue
            details.append((day, payload))
        return {"bars": bars, "dividends": dividends, "splits": splits, "details": details}

    def transform(self, raw: Any, query: SymbolQuery) -> SymbolData:
        """Standard rows with point-in-time shares and corporate actions."""
        sym, name = query.symbol, self.name
        bars = raw["bars"]
        results = field_of(bars, "results", name, sym, bars) if isinstance(bars, dict) else None
        if isinstance(bars, dict) and not bars.get("results"):
            raise payload_error(name, "empty_series", "no bars", symbol=sym, raw=bars)
        if not isinstance(results, list):
            raise payload_error(
                name, "malformed_payload", "results is not a list", symbol=sym, raw=bars
            )
        splits: dict[dt.date, float] = {}
        for item in raw["splits"]:
            day = _date(field_of(item, "execution_date", name, sym, item), name, sym)
            to = number_field(item, "split_to", name, sym, item)
            frm = number_field(item, "split_from", name, sym, item)
            if to <= 0 or frm <= 0:
                raise payload_error(
                    name, "malformed_payload", "split ratio <= 0", symbol=sym, raw=item
                )
            splits[day] = splits.get(day, 1.0) * to / frm
        dividends: dict[dt.date, float] = {}
        for item in raw["dividends"]:
            day = _date(field_of(item, "ex_dividend_date", name, sym, item), name, sym)
            cash = number_field(item, "cash_amount", name, sym, item)
            dividends[day] = dividends.get(day, 0.0) + cash
        samples, security = self._shares(raw["details"], sym)
        fetched_at = self.now()
        rows: list[dict[str, Any]] = []
        for bar in results:
            stamp = number_field(bar, "t", name, sym, bar)
            day = dt.datetime.fromtimestamp(stamp / 1000, tz=NEW_YORK).date()
            shares = _shares_on(samples, splits, day)
            volume = bar.get("v")
            rows.append(
                {
                    "date": day,
                    "symbol": sym,
                    "close": number_field(bar, "c", name, sym, bar),
                    "volume": None if volume is None else number(volume, "v", name, sym, bar),
                    "shares_outstanding": shares,
                    # 0 on a day without one: the reference endpoint lists every
                    # dividend, so the security's total return comes from dividends
                    # (METHODOLOGY part 2), and a split is never read as a price fall
                    "dividend": dividends.get(day, 0.0),
                    "split_ratio": splits.get(day),
                    "source": name,
                    "fetched_at": fetched_at,
                    "basis": None if shares is None else BASIS_POINT_IN_TIME,
                }
            )
        return SymbolData(sym, rows, security)

    def _shares(
        self, details: Sequence[tuple[dt.date, Any]], sym: str
    ) -> tuple[list[tuple[dt.date, float]], dict[str, Any]]:
        samples: list[tuple[dt.date, float]] = []
        security: dict[str, Any] = {"symbol": sym}
        for day, payload in details:
            result = field_of(payload, "results", self.name, sym, payload)
            count = (
                result.get("share_class_shares_outstanding") if isinstance(result, dict) else None
            )
            if count is not None:
                samples.append(
                    (day, number(count, "share_class_shares_outstanding", self.name, sym, payload))
                )
            if isinstance(result, dict):
                security = _security(result, sym)
        return sorted(samples), security

    def listings(
        self, *, types: Sequence[str] = ("CS",), exchanges: Sequence[str] = ()
    ) -> pa.Table:
        """Active listed securities of ``types`` on ``exchanges`` (all when empty)."""
        rows: list[dict[str, Any]] = []
        for kind in types:
            for exchange in exchanges or (None,):
                params: dict[str, Any] = {
                    "market": "stocks",
                    "type": kind,
                    "active": "true",
                    "limit": 1000,
                }
                if exchange:
                    params["exchange"] = exchange
                for item in self.paginate("/v3/reference/tickers", params):
                    ticker = field_of(item, "ticker", self.name, "*", item)
                    rows.append(_security(item, str(ticker)))
        return securities_table(rows)


def _security(result: dict[str, Any], sym: str) -> dict[str, Any]:
    return {
        "symbol": sym,
        "name": result.get("name"),
        "exchange": result.get("primary_exchange"),
        "currency": str(result.get("currency_name") or "").upper() or None,
        "type": TYPES.get(str(result.get("type")), result.get("type")),
    }


def _date(value: Any, provider: str, sym: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise payload_error(
            provider, "malformed_payload", f"bad date {value!r}", symbol=sym, raw=value
        ) from None


def _shares_on(
    samples: list[tuple[dt.date, float]], splits: dict[dt.date, float], day: dt.date
) -> float | None:
    """The count of the latest sample on or before ``day``, times the splits since."""
    chosen: tuple[dt.date, float] | None = None
    for sample in samples:
        if sample[0] <= day:
            chosen = sample
    if chosen is None:
        return None
    count = chosen[1]
    for when, ratio in splits.items():
        if chosen[0] < when <= day:
            count *= ratio
    return count


def share_sample_dates(start: dt.date, end: dt.date, most: int) -> list[dt.date]:
    """The first session in [start, end] and the last session of every month, at most ``most``."""
    sessions = [d for d in get_calendar().session_dates() if start <= d <= end]
    if not sessions:
        return []
    picks = [sessions[0]]
    for before, after in itertools.pairwise(sessions):
        if after.month != before.month and before != sessions[0]:
            picks.append(before)
    if len(picks) > most:
        step = len(picks) / most
        picks = [picks[int(i * step)] for i in range(most)]
    return picks
