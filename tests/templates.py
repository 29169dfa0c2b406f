"""Built databases for tests: a synthetic market ingested and some indices built, made
once per session and copied for each test that may change it."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path

from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import ensure_builtins
from index_builder.storage.duckdb.store import DuckDBStore

START = dt.date(2023, 1, 3)


def build_template(
    path: Path, *, symbols: int, days: int, indices: Sequence[str], checkpoint: bool = False
) -> Path:
    """A database at ``path`` with the built-in definitions, a ``symbols`` x ``days``
    synthetic market from 2023-01-03 and ``indices`` built (``checkpoint``: folded into
    the file, no write-ahead log left)."""
    with DuckDBStore(path) as store:
        ensure_builtins(store)
        run_ingestion(store, "synthetic", {"symbols": symbols, "days": days, "start": START})
        IndexBuilder(store, store.calendar).build(list(indices))
        if checkpoint:
            store.cursor().execute("CHECKPOINT")
    return path


def private_copy(template: Path, folder: Path, name: str) -> Path:
    """A copy of a template database for one test."""
    path = folder / name
    shutil.copy(template, path)
    return path
