"""Run one ingestion: provider -> validation -> store, recorded as a run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from index_builder.ingest.providers import ProviderFactory, run_provider_ingestion
from index_builder.ingest.universe import restrict
from index_builder.providers import chain_names, get_provider
from index_builder.providers.file import ROW_COLUMN
from index_builder.providers.schema import KNOWN_AT, PRICES_SCHEMA, SECURITIES_SCHEMA
from index_builder.storage.base import IngestReport, ProgressCallback, Storage


def run_ingestion(
    store: Storage,
    provider_name: str,
    query: dict[str, Any],
    *,
    progress: ProgressCallback | None = None,
    make_provider: ProviderFactory | None = None,
) -> IngestReport:
    """Fetch from ``provider_name`` with ``query`` and merge into ``store``.

    A ``universe`` key (a symbol list) restricts the run to those symbols. Input
    that cannot be used at all (missing file or column) raises
    :class:`~index_builder.errors.UnusableInputError` before a run is recorded;
    row-level problems are quarantined and counted in the report. A comma list
    of HTTP providers is a fallback chain, ingested in resumable batches (see
    :mod:`index_builder.ingest.providers`); ``make_provider`` builds its
    providers (tests inject transports).
    """
    names = chain_names(provider_name)
    if names is not None:  # HTTP providers (a chain like "polygon,yahoo")
        return run_provider_ingestion(
            store, names, query, progress=progress, make_provider=make_provider
        )
    step = progress or (lambda _msg: None)
    step(f"fetching from {provider_name}")
    provider = get_provider(provider_name)
    fetch_query = {k: v for k, v in query.items() if k != "universe"}
    data = provider.fetch(**fetch_query)
    if query.get("universe") is not None:
        data = restrict(data, query["universe"])
    securities = with_row_numbers(data.securities, SECURITIES_SCHEMA)
    prices = data.prices
    if isinstance(prices, pa.Table):
        prices = with_row_numbers(prices, PRICES_SCHEMA)
    return store.ingest(securities, prices, provider=provider_name, params=query, progress=progress)


def with_row_numbers(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Every column of ``schema`` and the optional ``known_at`` present (nulls when
    absent), plus a 1-based ``_row``."""
    if ROW_COLUMN in table.column_names:
        return table
    columns = {
        name: table.column(name)
        if name in table.column_names
        else pa.nulls(table.num_rows, pa.string())
        for name in (*schema.names, KNOWN_AT)
    }
    rows = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return pa.table({ROW_COLUMN: rows, **columns})


_with_row_numbers = with_row_numbers  # the name tests and callers used before
