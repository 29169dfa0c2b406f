"""The store on every backend: a failed ingestion run stores nothing but its record."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_builder.errors import UnusableInputError
from index_builder.ingest.job import run_ingestion
from index_builder.storage.duckdb.store import DuckDBStore

from market_files import PRICE_HEADER, SECURITY_HEADER, bar, security, write_csv


def test_a_file_that_breaks_mid_stream_fails_the_run_and_stores_nothing(
    store: DuckDBStore, tmp_path: Path
) -> None:
    sec = write_csv(tmp_path / "s.csv", SECURITY_HEADER, [security("AAA")])
    px = write_csv(tmp_path / "p.csv", PRICE_HEADER, [bar("2024-01-02", "AAA", 10)])
    with px.open("a") as fh:
        fh.write("2024-01-03,AAA,11,,1,1,1,too,many,fields\n")
    with pytest.raises(UnusableInputError, match="Expected 7 columns"):
        run_ingestion(store, "file", {"securities": str(sec), "prices": str(px)})
    (run,) = store.ingest_runs()
    assert run["status"] == "failed" and "Expected 7 columns" in run["message"]
    assert store.cursor().execute("SELECT count(*) FROM prices").fetchall()[0][0] == 0
    assert store.latest_run_id() == 0  # failed runs never count as data
