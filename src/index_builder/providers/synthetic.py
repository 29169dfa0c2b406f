"""The ``synthetic`` provider: the embedded, offline, deterministic default market."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from index_builder.calendar import get_calendar
from index_builder.errors import InvalidInputError
from index_builder.providers.base import ProviderCapabilities
from index_builder.providers.schema import MarketData
from index_builder.providers.synthetic_market import generate_market

DEFAULT_SEED = 42
DEFAULT_SYMBOLS = 3000
DEFAULT_DAYS = 504
DEFAULT_END = dt.date(2024, 12, 31)
"""Without ``start``, the market is the ``days`` XNYS sessions ending on this date,
so any size of market lies in the past (504 days: 2022-12-29 .. 2024-12-31)."""


def default_sessions(days: int, start: dt.date | None) -> list[dt.date]:
    """The sessions of a synthetic market: from ``start``, or ending on DEFAULT_END."""
    calendar = get_calendar()
    sessions = calendar.session_dates()
    if start is None:
        upto = [d for d in sessions if d <= DEFAULT_END]
        if days > len(upto):
            raise InvalidInputError(
                f"--days {days} reaches before the calendar start {calendar.first}", field="days"
            )
        return upto[-days:]
    chosen = [d for d in sessions if d >= start][:days]
    if len(chosen) < days:
        raise InvalidInputError(
            f"--days {days} from {start} runs past the calendar end {calendar.last}", field="days"
        )
    return chosen


class SyntheticProvider:
    """A realistic synthetic US market on XNYS sessions (see ``synthetic_market``)."""

    name = "synthetic"
    capabilities = ProviderCapabilities(
        adjusted_prices=True,
        dividends=True,
        splits=True,
        shares_outstanding_history=True,
        listings=True,
    )

    def list_securities(
        self, types: Sequence[str], exchanges: Sequence[str], **query: Any
    ) -> pa.Table:
        """The securities of the market ``fetch`` gives for ``query``, filtered."""
        from index_builder.ingest.universe import filter_listings

        market = self.fetch(**{**query, "days": 1})
        return filter_listings(market.securities, types, exchanges)

    def fetch(self, **query: Any) -> MarketData:
        """``seed``, ``symbols``, ``days``, ``start`` (all optional); ``start`` with
        ``end`` (dates) instead of ``days``: the sessions from start through end."""
        days = int(query.get("days", DEFAULT_DAYS))
        if query.get("start") is not None and query.get("end") is not None:
            between = get_calendar().sessions_between(query["start"], query["end"])
            days = len(between) + int(get_calendar().is_session(query["start"]))
        sessions = default_sessions(days, query.get("start"))
        return generate_market(
            seed=int(query.get("seed", DEFAULT_SEED)),
            n_symbols=int(query.get("symbols", DEFAULT_SYMBOLS)),
            n_days=days,
            start=sessions[0],
            sessions=sessions,
        )
