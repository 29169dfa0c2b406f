"""Column maps per file: --map for both files, --securities-map / --prices-map for
one (they win over --map for the same column), so a column name the two files
share can mean different things."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_builder.errors import UnusableInputError
from index_builder.providers.file import FileProvider, file_column_map, parse_column_map
from index_builder.storage.duckdb.store import DuckDBStore

from cli_runner import run
from market_files import write_csv


@pytest.fixture
def clashing(tmp_path: Path) -> dict[str, Path]:
    """Both files have a ``Code`` column: the exchange in the securities file (whose
    symbol is ``Ticker``), the symbol in the prices file."""
    secs = write_csv(
        tmp_path / "secs.csv",
        ["Ticker", "Code", "Name", "Sector"],
        [["AAA", "XNYS", "A Inc", "Energy"], ["BBB", "XNAS", "B Inc", "Utilities"]],
    )
    prices = write_csv(
        tmp_path / "prices.csv",
        ["Day", "Code", "Px", "MktCap"],
        [["2024-01-02", "AAA", "10", "1e9"], ["2024-01-02", "BBB", "20", "2e9"]],
    )
    return {"securities": secs, "prices": prices, "db": tmp_path / "maps.duckdb"}


def _ingest(files: dict[str, Path], *maps: str) -> tuple[int, str, str]:
    return run(
        files["db"],
        "ingest",
        "--provider",
        "file",
        "--securities",
        str(files["securities"]),
        "--prices",
        str(files["prices"]),
        *maps,
    )


def _stored(db: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with DuckDBStore(db) as store:
        cur = store.cursor()
        secs = cur.execute("SELECT symbol, exchange FROM securities ORDER BY symbol").fetchall()
        prices = cur.execute("SELECT symbol, close FROM prices ORDER BY symbol").fetchall()
    return secs, prices


EXPECTED = ([("AAA", "XNYS"), ("BBB", "XNAS")], [("AAA", 10.0), ("BBB", 20.0)])
PRICE_MAPS = ["--map", "Day=date", "--map", "Px=close", "--map", "MktCap=market_cap"]


def test_per_file_maps_resolve_a_column_both_files_name(clashing: dict[str, Path]) -> None:
    code, _, err = _ingest(
        clashing,
        *PRICE_MAPS,
        "--prices-map",
        "Code=symbol",
        "--securities-map",
        "Ticker=symbol",
        "--securities-map",
        "Code=exchange",
    )
    assert code == 0, err
    assert _stored(clashing["db"]) == EXPECTED


def test_a_per_file_map_wins_over_map_for_the_same_column(clashing: dict[str, Path]) -> None:
    code, _, err = _ingest(
        clashing,
        *PRICE_MAPS,
        "--map",
        "Code=symbol",  # right for the prices file only
        "--securities-map",
        "code=EXCHANGE",  # names are case-insensitive
        "--securities-map",
        "Ticker=symbol",
    )
    assert code == 0, err
    assert _stored(clashing["db"]) == EXPECTED


def test_one_map_for_both_files_cannot_express_the_clash(clashing: dict[str, Path]) -> None:
    # Code=symbol is right for the prices file and wrong for the securities file
    code, _, err = _ingest(clashing, *PRICE_MAPS, "--map", "Code=symbol")
    assert code == 0, err
    secs, prices = _stored(clashing["db"])
    assert [s for s, _ in secs] == ["XNAS", "XNYS"] and prices == []  # prices: unknown symbols
    # mapping both columns to symbol: the securities file has it twice
    code, _, err = _ingest(clashing, *PRICE_MAPS, "--map", "Code=symbol", "--map", "Ticker=symbol")
    assert code == 2 and err.strip().count("\n") == 0
    assert "column(s) given twice: symbol" in err and "--securities-map" in err


def test_a_malformed_per_file_map_names_its_option(clashing: dict[str, Path]) -> None:
    code, _, err = _ingest(clashing, "--prices-map", "Code")
    assert code == 2 and "--prices-map expects old=new, got 'Code'" in err


def test_file_column_map_precedence() -> None:
    query = {
        "column_map": {"code": "symbol", "px": "close"},
        "securities_column_map": {"code": "exchange"},
    }
    assert file_column_map(query, "securities") == {"code": "exchange", "px": "close"}
    assert file_column_map(query, "prices") == {"code": "symbol", "px": "close"}
    assert file_column_map({}, "prices") == {}
    with pytest.raises(UnusableInputError, match="--securities-map"):
        parse_column_map(["=x"], option="--securities-map")


def test_listings_use_the_securities_map(clashing: dict[str, Path]) -> None:
    listed = FileProvider().list_securities(
        [],
        ["XNAS"],
        securities=str(clashing["securities"]),
        column_map={"code": "symbol"},
        securities_column_map={"ticker": "symbol", "code": "exchange"},
    )
    assert listed.column("symbol").to_pylist() == ["BBB"]
