"""Crafted markets run through both ways the product computes an index.

``in_memory``: :func:`index_builder.engine.memory.build_in_memory` on data frames.
``stored``: CSV files ingested by the file provider into a real DuckDB store, built by
:class:`IndexBuilder` and read back by :class:`IndexReader` (what the CLI and the API
serve). Both give a :class:`Run` with the same shape, so one hand-computed test
checks both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from index_builder.engine.definitions import parse_definition
from index_builder.engine.memory import build_in_memory
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import BuildResult, IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.services.queries import IndexReader
from index_builder.storage.base import IngestReport
from index_builder.storage.duckdb.store import DuckDBStore

from market_files import PRICE_HEADER, SECURITY_HEADER, write_csv

SECURITY_COLUMNS = SECURITY_HEADER
PRICE_COLUMNS = [*PRICE_HEADER, "dividend", "split_ratio"]
PATHS = ("in_memory", "stored")


def sec(symbol: str, sector: str = "Information Technology", **extra: Any) -> dict[str, Any]:
    """A securities row (common stock on XNAS unless given)."""
    return {
        "symbol": symbol,
        "name": f"{symbol} Inc",
        "exchange": "XNAS",
        "sector": sector,
        "industry": "Software",
        "currency": "USD",
        "type": "Common Stock",
        **extra,
    }


def px(day: str, symbol: str, close: float, **extra: Any) -> dict[str, Any]:
    """A prices row (100 shares unless a count, a market cap or ``shares=None`` is given)."""
    row: dict[str, Any] = {"date": day, "symbol": symbol, "close": close}
    if "shares" in extra:
        row["shares_outstanding"] = extra.pop("shares")
    elif "market_cap" not in extra:
        row["shares_outstanding"] = 100.0
    row.update(extra)
    return row


@dataclass
class Run:
    """One computed index: levels (methodology columns), compositions, changes."""

    levels: list[dict[str, Any]]
    composition: Callable[[dt.date], list[dict[str, Any]]]
    changes: list[tuple[dt.date, list[str], list[str]]]
    warnings: list[str]
    announced: tuple[dt.date, dt.date | None, list[str]] | None = None
    result: BuildResult | None = None
    quarantined: dict[str, int] = field(default_factory=dict)

    def level(self, day: str) -> float:
        """The headline level on ``day``."""
        return float(self.row(day)["level"])

    def row(self, day: str) -> dict[str, Any]:
        """The level row of ``day``."""
        wanted = dt.date.fromisoformat(day)
        (found,) = [r for r in self.levels if r["date"] == wanted]
        return found

    def weights(self, day: str) -> dict[str, float]:
        """{symbol: weight} after the close of ``day``."""
        return {r["symbol"]: r["weight"] for r in self.composition(dt.date.fromisoformat(day))}


def run(
    path: str,
    securities: list[dict[str, Any]],
    prices: list[dict[str, Any]],
    definition: dict[str, Any],
    tmp_path: Path,
) -> Run:
    """The index of ``definition`` over the crafted market, computed along ``path``."""
    definition = {"id": "crafted", "name": "crafted", **definition}
    if path == "in_memory":
        return _in_memory(securities, prices, definition)
    return _stored(securities, prices, definition, tmp_path)


def _in_memory(
    securities: list[dict[str, Any]], prices: list[dict[str, Any]], definition: dict[str, Any]
) -> Run:
    frame = pd.DataFrame(prices, columns=PRICE_COLUMNS)
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    result = build_in_memory(pd.DataFrame(securities), frame, definition)
    levels = result.levels.to_dict("records")
    for row in levels:
        row["turnover"] = None if pd.isna(row["turnover"]) else row["turnover"]
    pending = result.computation.pending
    announced = None
    if pending:
        latest = pending[-1]
        announced = (latest.reference_date, None, [str(s) for s in latest.symbols])
    return Run(
        levels=levels,
        composition=lambda day: result.snapshot(day).to_dict("records"),
        changes=[
            (c["date"], list(c["entered"]), list(c["exited"]))
            for c in result.changes.to_dict("records")
        ],
        warnings=result.warnings,
        announced=announced,
    )


def ingest(
    store: DuckDBStore,
    tmp_path: Path,
    securities: list[dict[str, Any]],
    prices: list[dict[str, Any]],
    name: str = "prices",
) -> IngestReport:
    """Write the rows as CSV files and ingest them with the file provider."""
    sec_columns = list(SECURITY_COLUMNS) + (
        ["company_id"] if any("company_id" in s for s in securities) else []
    )
    sec_file = write_csv(
        tmp_path / f"{name}-securities.csv",
        sec_columns,
        [[s.get(c) for c in sec_columns] for s in securities],
    )
    px_file = write_csv(
        tmp_path / f"{name}.csv", PRICE_COLUMNS, [[p.get(c) for c in PRICE_COLUMNS] for p in prices]
    )
    return run_ingestion(store, "file", {"securities": str(sec_file), "prices": str(px_file)})


def open_store(tmp_path: Path, definitions: list[dict[str, Any]]) -> DuckDBStore:
    """A fresh store holding ``definitions`` (no built-ins)."""
    store = DuckDBStore(tmp_path / "crafted.duckdb", threads=2).open()
    for d in definitions:
        add_definition(store, parse_definition(d), replace=True)
    return store


def stored_run(store: DuckDBStore, index_id: str, result: BuildResult | None = None) -> Run:
    """What the store serves for an index built there."""
    reader = IndexReader(store, store.calendar)
    state = store.build_state(index_id)
    assert state is not None
    levels = store.read_levels(index_id, state.base_date, state.built_through).to_pylist()
    _, changes = reader.changes(index_id)
    announced = None
    if store.announcements(index_id):
        a = reader.announcement(index_id)
        announced = (a.reference_date, a.effective_date, [r["symbol"] for r in a.constituents])
    return Run(
        levels=levels,
        composition=lambda day: reader.composition(index_id, day).rows(),
        changes=[(c.date, list(c.entered), list(c.exited)) for c in changes],
        warnings=list(state.warnings),
        announced=announced,
        result=result,
    )


def _stored(
    securities: list[dict[str, Any]],
    prices: list[dict[str, Any]],
    definition: dict[str, Any],
    tmp_path: Path,
) -> Run:
    store = open_store(tmp_path, [definition])
    report = ingest(store, tmp_path, securities, prices)
    (result,) = IndexBuilder(store, store.calendar).build([definition["id"]])
    result.raise_for_failure()
    out = stored_run(store, definition["id"], result)
    out.quarantined = dict(report.rejected_by_reason)
    return out
