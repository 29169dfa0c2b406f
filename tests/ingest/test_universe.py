"""Universes: a symbol file restricts an ingestion; listings come from a provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_builder.errors import InvalidInputError, UnusableInputError
from index_builder.ingest.job import run_ingestion
from index_builder.ingest.universe import read_universe_file, universe
from index_builder.providers.file import FileProvider
from index_builder.providers.synthetic import SyntheticProvider
from index_builder.storage.duckdb.store import DuckDBStore

from market_files import SECURITY_HEADER, security, write_csv


def test_a_universe_file_has_one_symbol_per_line_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    path.write_text("# my universe\naapl\n\n MSFT  # software\nAAPL\n")
    assert read_universe_file(path) == ["AAPL", "MSFT"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UnusableInputError):
        read_universe_file(tmp_path / "empty.txt")
    with pytest.raises(UnusableInputError):
        read_universe_file(tmp_path / "missing.txt")


def test_ingestion_restricted_to_a_universe(store: DuckDBStore) -> None:
    market = SyntheticProvider().fetch(symbols=50, days=1).securities
    wanted = sorted(market.column("symbol").to_pylist())[:2]
    query = {"symbols": 50, "days": 3, "universe": [w.lower() for w in wanted]}
    report = run_ingestion(store, "synthetic", query)
    assert report.rows_accepted == 2 * 3 and report.rows_rejected == 0
    stored = store.cursor().execute("SELECT DISTINCT symbol FROM prices ORDER BY 1").fetchall()
    assert [r[0] for r in stored] == wanted


def test_listing_universe_filters_type_and_exchange(tmp_path: Path) -> None:
    sec = write_csv(
        tmp_path / "s.csv",
        SECURITY_HEADER,
        [
            security("AAA"),
            security("BBB", exchange="XNYS"),
            security("ETF1", type_="ETF"),
            security("LSE1", exchange="XLON"),
        ],
    )
    found = universe(FileProvider(), ["Common Stock"], ["XNAS", "XNYS"], securities=str(sec))
    assert found == ["AAA", "BBB"]
    synthetic = universe(SyntheticProvider(), symbols=80)
    assert synthetic and all(s.isupper() for s in synthetic)
    assert len(synthetic) < 80  # ETFs, ADRs and the like are filtered out


def test_a_provider_without_listings_is_refused() -> None:
    class NoListings:
        name = "plain"

    with pytest.raises(InvalidInputError):
        universe(NoListings())
