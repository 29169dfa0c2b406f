"""Rendering rows as a rich table, CSV or JSON (methodology column names), and the
one-line-per-index report of builds."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from index_builder.point_in_time import format_as_of

if TYPE_CHECKING:
    from index_builder.services.builds import BuildResult
    from index_builder.storage.base import IngestReport


class OutputFormat(StrEnum):
    """Output formats of the commands that print rows: ``table`` for a person (it may
    be cut to the terminal's width), ``csv`` and ``json`` for programs (every value in
    full, never cut or wrapped)."""

    table = "table"
    csv = "csv"
    json = "json"


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):  # a datetime too
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6f}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(_plain(value))


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: OutputFormat,
    *,
    title: str | None = None,
    console: Console | None = None,
    header: bool = True,
) -> None:
    """Write ``rows`` (restricted to ``columns``) to stdout in ``fmt`` (``header``: the
    CSV header row, left out when appending to earlier rows)."""
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if header:
            writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in columns])
    elif fmt is OutputFormat.json:
        payload = [{c: _json_value(row.get(c)) for c in columns} for row in rows]
        sys.stdout.write(json.dumps(payload, indent=2, default=_json_default) + "\n")
    else:
        table = Table(title=title)
        for c in columns:
            table.add_column(c, justify="right" if _numeric(rows, c) else "left")
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        (console or Console(width=None if sys.stdout.isatty() else 160)).print(table)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision, round-trips exactly
    return _plain(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date):  # a datetime too
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _numeric(rows: Sequence[dict[str, Any]], column: str) -> bool:
    return bool(rows) and isinstance(rows[0].get(column), (int, float))


def write_json(payload: Any, *, indent: int | None = 2) -> None:
    """``payload`` as JSON on stdout (dates and timestamps in ISO 8601); indented, or
    on one line with ``indent=None`` (JSON Lines)."""
    sys.stdout.write(json.dumps(payload, indent=indent, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (Decimal, Path)):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def ingest_record(report: IngestReport, storage: dict[str, str]) -> dict[str, Any]:
    """One ingestion run's report as a flat record (``ingest --format csv|json``)."""
    return {
        "run_id": report.run_id,
        "provider": report.provider,
        "status": report.status,
        "rows_read": report.rows_read,
        "rows_accepted": report.rows_accepted,
        "rows_inserted": report.rows_inserted,
        "rows_updated": report.rows_updated,
        "rows_unchanged": report.rows_unchanged,
        "duplicates_collapsed": report.duplicates_collapsed,
        "rows_rejected": report.rows_rejected,
        "rejected_by_reason": dict(sorted(report.rejected_by_reason.items())),
        "securities_changed": report.securities_changed,
        "rows_current_basis": report.rows_current_basis,
        "min_date": report.min_date,
        "max_date": report.max_date,
        "known_at": None if report.known_at is None else format_as_of(report.known_at),
        "run_ids": report.run_ids or [report.run_id],
        "message": report.message,
        "backend": storage.get("backend"),
        "database": storage.get("database"),
        "warehouse": storage.get("warehouse"),
        "catalog": storage.get("catalog"),
    }


OUTCOME_WIDTH = len("unchanged")
MODE_WIDTH = len("incremental")


def build_line(result: BuildResult, index_width: int = 0) -> str:
    """One line for one index's build: outcome, index id, then what happened.

    ``built      ew100      incremental  2024-01-02..2024-12-31  1 day written  version 12
    engine numpy  85 ms`` (one line)
    ``unchanged  ew-tech50  built through 2024-12-31  version 11``
    ``failed     ew-x       <reason>``

    Fields are separated by two spaces, the outcome and the index id padded to a
    column (``index_width``); a build as of a moment ends with ``as of <K>``, one as
    of a version with ``as of version <V>``.
    """
    head = f"{result.outcome:<{OUTCOME_WIDTH}}  {result.index_id:<{index_width}}"
    if result.failed:
        reason = " ".join((result.reason or "failed").split())  # always one line
        reason = reason.removeprefix(f"{result.index_id}: ")  # the id is the column before
        return f"{head}  {reason}"
    if result.outcome == "unchanged":
        parts = [f"built through {result.end_date}", f"version {result.version}"]
    else:
        days = result.trading_days
        parts = [
            f"{result.mode:<{MODE_WIDTH}}",
            f"{result.start_date}..{result.end_date}",
            f"{days} day{'' if days == 1 else 's'} written",
            f"version {result.version}",
            f"engine {result.engine}",
            f"{result.duration_ms:.0f} ms",
        ]
        if result.restated_from is not None:
            changed = result.restated_days
            parts.append(
                f"restated from {result.restated_from} "
                f"({changed} published day{'' if changed == 1 else 's'} changed)"
            )
    if result.as_of is not None:
        parts.append(f"as of {format_as_of(result.as_of)}")
    if result.as_of_version is not None:
        parts.append(f"as of version {result.as_of_version}")
    return "  ".join([head, *parts])


def build_summary(results: Sequence[BuildResult], skipped: int = 0) -> str:
    """``3 built, 27 unchanged, 1 failed`` (and ``, 2 skipped`` when some were)."""
    counts = {o: sum(1 for r in results if r.outcome == o) for o in ("built", "unchanged")}
    failed = sum(1 for r in results if r.failed)
    text = f"{counts['built']} built, {counts['unchanged']} unchanged, {failed} failed"
    return f"{text}, {skipped} skipped" if skipped else text
