"""Helpers that write small interchange-format files for ingestion tests."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SECURITY_HEADER = ["symbol", "name", "exchange", "sector", "industry", "currency", "type"]
PRICE_HEADER = [
    "date",
    "symbol",
    "close",
    "adj_close",
    "volume",
    "shares_outstanding",
    "market_cap",
]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write rows (values stringified as given) under ``header``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    return path


def security(
    symbol: str,
    sector: str = "Information Technology",
    type_: str = "Common Stock",
    exchange: str = "XNAS",
) -> list[str]:
    """One securities row."""
    return [symbol, f"{symbol} Inc", exchange, sector, "Software", "USD", type_]


def bar(
    day: dt.date | str,
    symbol: str,
    close: Any,
    shares: Any = 1_000_000,
    adj_close: Any = None,
    market_cap: Any = None,
    volume: Any = 1000,
) -> list[Any]:
    """One prices row."""
    return [str(day), symbol, close, adj_close, volume, shares, market_cap]
