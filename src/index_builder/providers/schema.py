"""Standard data models every provider returns (the interchange format).

Providers return Arrow tables with exactly these schemas. Optional values are
nulls, never sentinels. See ``../shared/METHODOLOGY.md`` "Inputs".
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SECURITIES_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("exchange", pa.string()),
        pa.field("sector", pa.string()),
        pa.field("industry", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("type", pa.string()),
        pa.field("company_id", pa.string()),
    ]
)
"""One row per security. ``type`` uses e.g. ``Common Stock``, ``ETF``, ``ADR``."""

PRICES_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("close", pa.float64()),
        pa.field("adj_close", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("shares_outstanding", pa.float64()),
        pa.field("market_cap", pa.float64()),
        pa.field("dividend", pa.float64()),
        pa.field("split_ratio", pa.float64()),
        # provenance (optional: storage fills what a provider leaves null)
        pa.field("source", pa.string()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
        pa.field("basis", pa.string()),
    ]
)
"""One row per (date, symbol) daily bar.

- ``close``: unadjusted close; ``adj_close``: split- and dividend-adjusted close.
- ``market_cap`` may be null when ``shares_outstanding`` is given (then
  ``close * shares_outstanding``).
- ``dividend``: cash per share going ex on ``date``; ``split_ratio``: new shares
  per old share effective on ``date`` (null means 1).
- Provenance, optional: ``source`` is the provider that delivered the row (null:
  the ingesting provider), ``fetched_at`` when it was fetched (null: the run's
  start), ``basis`` how ``shares_outstanding`` relates to ``date``:
  ``point_in_time`` (the count in force on that date), ``current`` (today's count
  applied to a past date: survivorship and look-ahead bias, see the README), null
  when the row has no shares (given shares without a basis count as
  ``point_in_time``).
"""

BASIS_POINT_IN_TIME = "point_in_time"
BASIS_CURRENT = "current"
SHARES_BASES = (BASIS_POINT_IN_TIME, BASIS_CURRENT)

KNOWN_AT = "known_at"
"""Optional column of both tables: when the row became known (its publication
time), ISO 8601 text or a timestamp; naive means UTC. Without it a row is known
from the start of the ingestion run that stores it (point in time)."""

GICS_SECTORS: tuple[str, ...] = (
    "Communication Services",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)
"""The 11 GICS sectors."""

COMMON_STOCK = "Common Stock"


@dataclass(frozen=True)
class MarketData:
    """What a provider returns: the security master and the daily bars.

    ``prices`` may hold raw (unparsed) values when the source is a file; the
    ingestion job validates and casts. Provider-built tables follow
    :data:`PRICES_SCHEMA` exactly.
    """

    securities: pa.Table
    prices: pa.Table
