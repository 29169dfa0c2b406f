"""Ingestion from HTTP providers: a fallback chain, in resumable batches.

The symbols are fetched and stored in batches of ``INDEX_BUILDER_INGEST_BATCH_SYMBOLS``;
each batch is its own ingestion run (one merge, committed), so a run killed
half-way keeps every finished batch. Before fetching, the (symbol, session)
pairs already stored for [start, end] (XNYS sessions) are looked up: a re-run
asks the providers only for what is still missing. Provider failures are
quarantined with the batch's run (source ``provider``); each run ends
``succeeded``, ``partial`` or ``failed`` with its summary as the message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from index_builder.calendar import get_calendar
from index_builder.errors import InvalidInputError
from index_builder.providers import make_http_provider
from index_builder.providers.chain import ChainResult, ProviderChain
from index_builder.providers.http import HttpProvider, prices_table, securities_table
from index_builder.providers.polygon import PolygonProvider
from index_builder.providers.universe import DEFAULT_EXCHANGES, filter_universe, read_universe
from index_builder.settings import get_settings
from index_builder.storage.base import IngestReport, ProgressCallback, Storage

ProviderFactory = Callable[[str], HttpProvider]


def run_provider_ingestion(
    store: Storage,
    names: Sequence[str],
    query: dict[str, Any],
    *,
    progress: ProgressCallback | None = None,
    make_provider: ProviderFactory | None = None,
    batch_symbols: int | None = None,
) -> IngestReport:
    """Ingest ``query`` through the chain ``names`` (see the module docstring).

    ``query``: ``start``, ``end`` (dates), and ``symbols`` (list) or ``universe``
    (a file path, or the name of a provider with listings), optional ``types``
    and ``exchanges`` filters, and ``batch_size`` (symbols per batch).
    """
    step = progress or (lambda _msg: None)
    factory = make_provider or (lambda n: make_http_provider(n))
    providers = [factory(n) for n in names]
    chain = ProviderChain(providers)
    start, end = _window(query)
    universe = _universe(query, providers)
    symbols = sorted(universe)
    sessions = [d for d in get_calendar().session_dates() if start <= d <= end]
    stored = store.stored_sessions(symbols, start, end)
    size = batch_symbols or int(query.get("batch_size") or get_settings().ingest_batch_symbols)
    total = ChainResult()
    reports: list[IngestReport] = []
    skipped = 0
    for first in range(0, len(symbols), size):
        batch = symbols[first : first + size]
        wanted = {s: [d for d in sessions if d not in stored.get(s, set())] for s in batch}
        wanted = {s: days for s, days in wanted.items() if days}
        skipped += len(batch) - len(wanted)
        if not wanted:
            continue
        done = f"{first + len(batch)}/{len(symbols)}"
        step(f"fetching {len(wanted)} symbols from {chain.name} ({done})")
        result = chain.fetch(
            {s: (days[0], days[-1]) for s, days in wanted.items()},
            sessions=wanted,
            universe=universe,
        )
        reports.append(_store_batch(store, chain.name, query, list(wanted), result, progress))
        total.merge(result)
    for provider in providers:
        provider.close()
    return _combined(chain.name, reports, total, skipped)


def _store_batch(
    store: Storage,
    name: str,
    query: dict[str, Any],
    symbols: list[str],
    result: ChainResult,
    progress: ProgressCallback | None,
) -> IngestReport:
    data = result.market_data()
    from index_builder.ingest.job import with_row_numbers
    from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA

    params = {**query, "batch": symbols}
    report = store.ingest(
        with_row_numbers(data.securities, SECURITIES_SCHEMA),
        with_row_numbers(data.prices, PRICES_SCHEMA),
        provider=name,
        params=params,
        progress=progress,
    )
    rejects = [(r.provider, r.symbol, r.reason, r.message, r.snippet) for r in result.rejects]
    store.quarantine_provider_rejects(report.run_id, rejects)
    report.status = result.status
    report.message = result.message()
    store.set_run_outcome(report.run_id, report.status, report.message)
    for reason, count in result.failures_by_reason().items():
        report.rejected_by_reason[f"provider:{reason}"] = count
    return report


def _combined(
    name: str, reports: list[IngestReport], total: ChainResult, skipped: int
) -> IngestReport:
    summary = total.summary()
    summary["symbols_up_to_date"] = skipped
    if not reports:
        summary["status"] = "succeeded"
        return IngestReport(
            run_id=0,
            provider=name,
            status="succeeded",
            message=f"nothing to fetch: {skipped} symbols already stored",
            summary=summary,
        )
    last = reports[-1]
    combined = IngestReport(
        run_id=last.run_id,
        provider=name,
        status=total.status,
        known_at=last.known_at,
        run_ids=[r.run_id for r in reports],
        summary=summary,
        message=total.message() + (f"; {skipped} symbols already up to date" if skipped else ""),
    )
    for r in reports:
        combined.rows_read += r.rows_read
        combined.rows_accepted += r.rows_accepted
        combined.rows_rejected += r.rows_rejected
        combined.duplicates_collapsed += r.duplicates_collapsed
        combined.rows_inserted += r.rows_inserted
        combined.rows_updated += r.rows_updated
        combined.rows_unchanged += r.rows_unchanged
        combined.securities_changed += r.securities_changed
        for key, n in r.rejected_by_reason.items():
            combined.rejected_by_reason[key] = combined.rejected_by_reason.get(key, 0) + n
        if r.min_date and (combined.min_date is None or r.min_date < combined.min_date):
            combined.min_date = r.min_date
        if r.max_date and (combined.max_date is None or r.max_date > combined.max_date):
            combined.max_date = r.max_date
    return combined


def _window(query: dict[str, Any]) -> tuple[dt.date, dt.date]:
    start, end = query.get("start"), query.get("end")
    if not isinstance(start, dt.date):
        raise InvalidInputError("a provider ingestion needs --start YYYY-MM-DD", field="start")
    if end is None:
        calendar = get_calendar()
        end = calendar.last_closed_session(dt.datetime.now(dt.UTC), dt.timedelta(0)) or start
    if not isinstance(end, dt.date) or end < start:
        raise InvalidInputError("--end must be a date on or after --start", field="end")
    return start, end


def _universe(
    query: dict[str, Any], providers: Sequence[HttpProvider]
) -> dict[str, dict[str, Any]]:
    types = list(query.get("types") or [])
    exchanges = list(query.get("exchanges") or [])
    if query.get("symbols"):
        return {s.upper(): {"symbol": s.upper()} for s in query["symbols"]}
    source = query.get("universe")
    if not source:
        raise InvalidInputError(
            "a provider ingestion needs --tickers or --universe (a file or a provider "
            "with listings)",
            field="universe",
        )
    lister = next((p for p in providers if p.name == source), None)
    if source == "polygon" or isinstance(lister, PolygonProvider):
        provider = lister if isinstance(lister, PolygonProvider) else PolygonProvider()
        table = provider.listings(types=types or ["CS"], exchanges=exchanges or DEFAULT_EXCHANGES)
        return {row["symbol"]: row for row in table.to_pylist()}
    universe = read_universe(Path(source))
    return filter_universe(universe, types=types, exchanges=exchanges)


__all__ = ["prices_table", "run_provider_ingestion", "securities_table"]
