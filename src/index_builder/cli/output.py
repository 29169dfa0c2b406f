"""Rendering rows as a rich table, CSV or JSON (methodology column names)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    """Output formats of the read commands."""

    table = "table"
    csv = "csv"
    json = "json"


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
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
) -> None:
    """Write ``rows`` (restricted to ``columns``) to stdout in ``fmt``."""
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in columns])
    elif fmt is OutputFormat.json:
        payload = [{c: _json_value(row.get(c)) for c in columns} for row in rows]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
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
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _numeric(rows: Sequence[dict[str, Any]], column: str) -> bool:
    return bool(rows) and isinstance(rows[0].get(column), (int, float))
