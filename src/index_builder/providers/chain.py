"""The fallback chain: ``--provider polygon,yahoo``.

Per symbol, the first provider is asked for the sessions wanted; what it cannot
give (it is down, its circuit is open, it does not know the symbol, its payload
is rejected, or dates are missing) the next provider fills, row by row. Every
row records its ``source``; every provider failure is kept as a
:class:`ProviderReject` (quarantine evidence) and counted by reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from index_builder.errors import ProviderError
from index_builder.providers.http import SymbolData, prices_table, securities_table
from index_builder.providers.schema import MarketData

log = logging.getLogger("index_builder.providers")


class SymbolSource(Protocol):
    """A provider that fetches one symbol at a time (every HTTP provider)."""

    name: str

    def fetch_symbol(self, symbol: str, start: dt.date, end: dt.date) -> SymbolData:
        """One symbol's bars over [start, end]."""
        ...


@dataclass(frozen=True)
class ProviderReject:
    """A provider's failure for one symbol (stored in the quarantine)."""

    provider: str
    symbol: str
    reason: str
    message: str
    snippet: str | None = None


@dataclass
class ChainResult:
    """What a chain fetched for a set of symbols."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    securities: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejects: list[ProviderReject] = field(default_factory=list)
    rows_by_provider: Counter[str] = field(default_factory=Counter)
    complete: list[str] = field(default_factory=list)
    incomplete: dict[str, int] = field(default_factory=dict)
    """Symbols with some but not all wanted sessions: sessions missing."""
    failed: list[str] = field(default_factory=list)
    """Symbols for which no provider gave anything."""

    @property
    def status(self) -> str:
        """``succeeded`` (all there), ``failed`` (nothing), else ``partial``."""
        if not self.failed and not self.incomplete:
            return "succeeded"
        if not self.rows:
            return "failed"
        return "partial"

    def failures_by_reason(self) -> dict[str, int]:
        """``{"<provider>:<reason>": count}`` of every provider failure."""
        counts = Counter(f"{r.provider}:{r.reason}" for r in self.rejects)
        if self.incomplete:
            counts["chain:missing_sessions"] = sum(self.incomplete.values())
        return dict(sorted(counts.items()))

    def market_data(self) -> MarketData:
        """The fetched rows as standard tables (sorted by symbol and date)."""
        rows = sorted(self.rows, key=lambda r: (r["symbol"], r["date"]))
        return MarketData(
            securities=securities_table([self.securities[s] for s in sorted(self.securities)]),
            prices=prices_table(rows),
        )

    def merge(self, other: ChainResult) -> None:
        """Add ``other``'s results (batches of one run)."""
        self.rows.extend(other.rows)
        self.securities.update(other.securities)
        self.rejects.extend(other.rejects)
        self.rows_by_provider.update(other.rows_by_provider)
        self.complete.extend(other.complete)
        self.incomplete.update(other.incomplete)
        self.failed.extend(other.failed)

    def summary(self) -> dict[str, Any]:
        """Counts per provider and per failure reason, and the symbols not complete."""
        return {
            "status": self.status,
            "symbols_complete": len(self.complete),
            "symbols_incomplete": sorted(self.incomplete),
            "symbols_failed": sorted(self.failed),
            "rows_by_provider": dict(sorted(self.rows_by_provider.items())),
            "failures_by_reason": self.failures_by_reason(),
        }

    def message(self) -> str:
        """The summary on one line (stored with the run)."""
        s = self.summary()
        rows = ", ".join(f"{k}={v}" for k, v in s["rows_by_provider"].items()) or "none"
        fails = ", ".join(f"{k}={v}" for k, v in s["failures_by_reason"].items()) or "none"
        text = (
            f"{s['status']}: {s['symbols_complete']} symbols complete, "
            f"{len(s['symbols_incomplete'])} incomplete, {len(s['symbols_failed'])} failed; "
            f"rows by provider: {rows}; failures: {fails}"
        )
        if s["symbols_failed"]:
            text += f"; failed: {', '.join(s['symbols_failed'][:20])}"
        return text


class ProviderChain:
    """Providers asked in order, each filling what the ones before could not give."""

    def __init__(self, providers: Sequence[SymbolSource]) -> None:
        if not providers:
            raise ValueError("a chain needs at least one provider")
        self.providers = list(providers)

    @property
    def name(self) -> str:
        """``polygon,yahoo``."""
        return ",".join(p.name for p in self.providers)

    def fetch(
        self,
        wanted: Mapping[str, tuple[dt.date, dt.date]],
        *,
        sessions: Mapping[str, Sequence[dt.date]] | None,
        universe: Mapping[str, dict[str, Any]] | None = None,
    ) -> ChainResult:
        """Fetch every symbol of ``wanted`` (symbol -> window).

        ``sessions`` (symbol -> the sessions wanted) decides what is missing and
        what the next provider must fill; without it, whatever the first provider
        that answers gives is taken. ``universe`` rows describe the securities
        (their fields win over the providers').
        """
        result = ChainResult()
        for symbol, (start, end) in wanted.items():
            want = None if sessions is None else set(sessions[symbol])
            self._fetch_one(symbol, start, end, want, result, (universe or {}).get(symbol))
        return result

    def _fetch_one(
        self,
        symbol: str,
        start: dt.date,
        end: dt.date,
        want: set[dt.date] | None,
        result: ChainResult,
        listed: dict[str, Any] | None,
    ) -> None:
        got: set[dt.date] = set()
        security: dict[str, Any] = dict(listed or {})
        for provider in self.providers:
            remaining = None if want is None else want - got
            if remaining is not None and not remaining:
                break
            lo, hi = (start, end) if not remaining else (min(remaining), max(remaining))
            try:
                data = provider.fetch_symbol(symbol, lo, hi)
            except ProviderError as exc:
                log.info("%s: %s for %s: %s", provider.name, exc.reason, symbol, exc.message)
                result.rejects.append(
                    ProviderReject(provider.name, symbol, exc.reason, exc.message, exc.snippet)
                )
                continue
            taken = [
                row
                for row in data.rows
                if row["date"] not in got and (remaining is None or row["date"] in remaining)
            ]
            result.rows.extend(taken)
            result.rows_by_provider[provider.name] += len(taken)
            got.update(row["date"] for row in taken)
            for key, value in data.security.items():
                if security.get(key) is None:
                    security[key] = value
            if want is None and taken:
                break
        _carry_shares_forward([r for r in result.rows if r["symbol"] == symbol])
        security["symbol"] = symbol
        missing = 0 if want is None else len(want - got)
        if got:
            result.securities[symbol] = security
        if not got:
            result.failed.append(symbol)
        elif missing:
            result.incomplete[symbol] = missing
        else:
            result.complete.append(symbol)


def _carry_shares_forward(rows: list[dict[str, Any]]) -> None:
    """A row without shares (its provider has none) takes the count in force: the
    latest earlier row's of the same symbol, with that row's basis."""
    last: dict[str, Any] | None = None
    for row in sorted(rows, key=lambda r: r["date"]):
        if row.get("shares_outstanding") is not None:
            last = row
        elif last is not None:
            row["shares_outstanding"] = last["shares_outstanding"]
            row["basis"] = last.get("basis")


def empty_prices() -> pa.Table:
    """A prices table without rows."""
    return prices_table([])
