"""The universe of an ingestion: a symbol list, a universe file, or a provider's listings.

A universe file is either plain text (one symbol a line; ``#`` comments) or a
CSV with a ``symbol`` column and optionally the security fields (``name``,
``exchange``, ``type``, ``sector``, ...). Rows are filtered by type and exchange
when those are given and the file has the columns.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from index_builder.errors import UnusableInputError
from index_builder.providers.schema import SECURITIES_SCHEMA

DEFAULT_EXCHANGES = ("XNYS", "XNAS", "XASE", "ARCX", "BATS")
"""US exchanges (ISO 10383 MICs) of the default listing universe."""


def read_universe(path: Path) -> dict[str, dict[str, Any]]:
    """Symbol -> its security fields (only ``symbol`` for a plain list)."""
    if not path.is_file():
        raise UnusableInputError(f"universe file not found: {path}", field="universe")
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise UnusableInputError(f"{path}: empty universe", field="universe")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "symbol" not in header:
        return {
            ln.split(",")[0].strip().upper(): {"symbol": ln.split(",")[0].strip().upper()}
            for ln in lines
        }
    out: dict[str, dict[str, Any]] = {}
    for row in csv.DictReader(lines):
        fields = {k.strip().lower(): (v or "").strip() or None for k, v in row.items() if k}
        symbol = (fields.get("symbol") or "").upper()
        if symbol:
            out[symbol] = {
                name: fields.get(name) for name in SECURITIES_SCHEMA.names if fields.get(name)
            } | {"symbol": symbol}
    return out


def filter_universe(
    universe: dict[str, dict[str, Any]],
    *,
    types: Sequence[str] = (),
    exchanges: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Rows whose ``type`` / ``exchange`` are among those given (rows without the field stay)."""
    wanted_types = {t.lower() for t in types}
    wanted_exchanges = {e.upper() for e in exchanges}

    def keep(row: dict[str, Any]) -> bool:
        kind, exchange = row.get("type"), row.get("exchange")
        if wanted_types and kind is not None and str(kind).lower() not in wanted_types:
            return False
        return not (
            wanted_exchanges
            and exchange is not None
            and str(exchange).upper() not in wanted_exchanges
        )

    return {s: row for s, row in universe.items() if keep(row)}
