"""Ingestion from files: validation, quarantine, de-duplication, idempotency, upserts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from index_builder.errors import UnusableInputError
from index_builder.ingest.job import run_ingestion
from index_builder.storage.duckdb.store import DuckDBStore

from market_files import PRICE_HEADER, SECURITY_HEADER, bar, security, write_csv

D1, D2, D3 = "2024-01-02", "2024-01-03", "2024-01-04"


def _files(tmp_path: Path, price_rows: list[list[object]]) -> dict[str, object]:
    sec = write_csv(
        tmp_path / "securities.csv", SECURITY_HEADER, [security("AAA"), security("BBB")]
    )
    px = write_csv(tmp_path / "prices.csv", PRICE_HEADER, price_rows)
    return {"securities": str(sec), "prices": str(px), "column_map": {}}


def _stored(store: DuckDBStore) -> list[tuple[object, ...]]:
    return (
        store.cursor()
        .execute("SELECT date, symbol, close, market_cap FROM prices ORDER BY date, symbol")
        .fetchall()
    )


DIRTY = [
    bar(D1, "AAA", 10),
    bar(D1, "BBB", 20),
    bar(D2, "AAA", 11),
    bar(D2, "AAA", 11),  # exact duplicate: collapsed
    bar(D2, "BBB", 21),
    bar(D2, "BBB", 22),  # conflicting duplicate: both copies quarantined
    bar(D3, "AAA", 0),  # non-positive close
    bar(D3, "BBB", "nan"),  # non-finite close
    bar("2024-01-06", "AAA", 12),  # Saturday: not a session
    bar("2024-01-15", "AAA", 12),  # MLK day: a weekday but not a session
    bar("2024-13-01", "AAA", 12),  # unparseable date
    bar(D3, "ZZZ", 5),  # unknown symbol
    bar(D3, "AAA", "12,5"),  # unparseable close
    bar("2023-12-29", "AAA", 12, shares=None),  # no market cap, no shares in force yet
    bar(D3, "AAA", 12, shares=-5),  # negative share count
    bar(D3, "AAA", 12, market_cap=-5.0),  # negative market cap
    bar("2024-01-05", "AAA", 13, shares=None, market_cap=1.3e7),  # valid, market cap given
]


def test_dirty_file_quarantines_each_invalid_row_with_its_reason(
    store: DuckDBStore, tmp_path: Path
) -> None:
    report = run_ingestion(store, "file", _files(tmp_path, DIRTY))
    assert report.status == "succeeded"
    assert report.rows_read == len(DIRTY)
    assert report.duplicates_collapsed == 1
    assert report.rows_accepted == 4  # D1 AAA, D1 BBB, D2 AAA, 2024-01-05 AAA
    assert report.rejected_by_reason == {
        "prices:conflicting_duplicate": 2,
        "prices:invalid_close": 2,
        "prices:not_a_session": 2,
        "prices:unparseable_date": 1,
        "prices:unknown_symbol": 1,
        "prices:unparseable_close": 1,
        "prices:missing_market_cap": 1,
        "prices:invalid_shares_outstanding": 1,
        "prices:invalid_market_cap": 1,
    }
    assert report.rows_rejected == 12
    assert report.rows_read == report.rows_accepted + report.rows_rejected + 1
    assert _stored(store) == [
        (dt.date(2024, 1, 2), "AAA", 10.0, 1e7),
        (dt.date(2024, 1, 2), "BBB", 20.0, 2e7),
        (dt.date(2024, 1, 3), "AAA", 11.0, 1.1e7),
        (dt.date(2024, 1, 5), "AAA", 13.0, 1.3e7),
    ]
    quarantined = store.quarantined(report.run_id)
    assert len(quarantined) == 12
    bad_date = next(q for q in quarantined if q["reason"] == "unparseable_date")
    assert bad_date["row_number"] == 11 and bad_date["date"] == "2024-13-01"
    assert '"2024-13-01"' in bad_date["record"]


def test_rerunning_the_same_input_changes_nothing(store: DuckDBStore, tmp_path: Path) -> None:
    files = _files(tmp_path, DIRTY)
    first = run_ingestion(store, "file", files)
    before = _stored(store)
    second = run_ingestion(store, "file", files)
    assert second.run_id == first.run_id + 1
    assert (second.rows_inserted, second.rows_updated) == (0, 0)
    assert second.rows_unchanged == first.rows_accepted
    assert _stored(store) == before
    runs = store.ingest_runs()
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert store.first_changed_date(first.run_id) is None


def test_new_values_upsert_and_mark_the_first_changed_date(
    store: DuckDBStore, tmp_path: Path
) -> None:
    first = run_ingestion(store, "file", _files(tmp_path, [bar(D1, "AAA", 10), bar(D2, "AAA", 11)]))
    second = run_ingestion(
        store, "file", _files(tmp_path, [bar(D2, "AAA", 11.5), bar(D3, "AAA", 12)])
    )
    assert (second.rows_inserted, second.rows_updated, second.rows_unchanged) == (1, 1, 0)
    assert [r[2] for r in _stored(store)] == [10.0, 11.5, 12.0]
    assert store.first_changed_date(first.run_id) == dt.date(2024, 1, 3)


def test_column_names_are_case_insensitive_and_can_be_mapped(
    store: DuckDBStore, tmp_path: Path
) -> None:
    sec = write_csv(
        tmp_path / "s.csv",
        ["Ticker", "NAME", "Sector", "TYPE"],
        [["AAA", "A Inc", "Energy", "Common Stock"]],
    )
    px = write_csv(
        tmp_path / "p.csv", ["Date", "Ticker", "CLOSE", "MarketCap"], [[D1, "aaa", "10", "1e9"]]
    )
    report = run_ingestion(
        store,
        "file",
        {
            "securities": str(sec),
            "prices": str(px),
            "column_map": {"ticker": "symbol", "marketcap": "market_cap"},
        },
    )
    assert report.rows_accepted == 1
    assert _stored(store) == [(dt.date(2024, 1, 2), "AAA", 10.0, 1e9)]


def test_parquet_input_gives_the_same_store_as_csv(tmp_path: Path) -> None:
    files = _files(tmp_path, DIRTY)
    typed = pacsv.read_csv(files["prices"])  # type: ignore[arg-type]
    pq.write_table(typed, tmp_path / "prices.parquet")
    pq.write_table(pacsv.read_csv(files["securities"]), tmp_path / "securities.parquet")  # type: ignore[arg-type]
    results = []
    for name, paths in {
        "csv": files,
        "parquet": {
            "securities": str(tmp_path / "securities.parquet"),
            "prices": str(tmp_path / "prices.parquet"),
            "column_map": {},
        },
    }.items():
        with DuckDBStore(tmp_path / f"{name}.duckdb") as s:
            report = run_ingestion(s, "file", paths)
            results.append((report.rows_accepted, _stored(s)))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["date", "symbol", "shares_outstanding"], "missing required column(s): close"),
        (["date", "symbol", "close"], "market_cap or shares_outstanding"),
    ],
)
def test_unusable_input_is_refused_before_anything_is_stored(
    store: DuckDBStore, tmp_path: Path, header: list[str], message: str
) -> None:
    sec = write_csv(tmp_path / "s.csv", SECURITY_HEADER, [security("AAA")])
    px = write_csv(tmp_path / "p.csv", header, [])
    with pytest.raises(UnusableInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_ingestion(store, "file", {"securities": str(sec), "prices": str(px)})
    with pytest.raises(UnusableInputError, match="file not found"):
        run_ingestion(store, "file", {"securities": str(sec), "prices": str(tmp_path / "no.csv")})
    assert _stored(store) == []


def test_conflicting_security_rows_are_quarantined(store: DuckDBStore, tmp_path: Path) -> None:
    sec = write_csv(
        tmp_path / "s.csv",
        SECURITY_HEADER,
        [security("AAA"), security("AAA", sector="Energy"), security("BBB"), security("BBB")],
    )
    px = write_csv(tmp_path / "p.csv", PRICE_HEADER, [bar(D1, "AAA", 10), bar(D1, "BBB", 10)])
    report = run_ingestion(store, "file", {"securities": str(sec), "prices": str(px)})
    assert report.rejected_by_reason == {
        "securities:conflicting_duplicate": 2,
        "prices:unknown_symbol": 1,
    }
    assert [r[1] for r in _stored(store)] == ["BBB"]


def test_synthetic_ingestion_is_deterministic_and_clean(tmp_path: Path) -> None:
    tables = []
    for name in ("a", "b"):
        with DuckDBStore(tmp_path / f"{name}.duckdb") as s:
            report = run_ingestion(s, "synthetic", {"seed": 7, "symbols": 120, "days": 30})
            assert report.rows_rejected == 0 and report.rows_accepted == report.rows_read
            tables.append(
                s.cursor()
                .sql(
                    "SELECT * EXCLUDE (run_id, known_at, fetched_at) FROM prices"
                    " ORDER BY date, symbol"
                )
                .to_arrow_table()
            )
    assert tables[0].equals(tables[1])
    assert isinstance(tables[0], pa.Table) and tables[0].num_rows > 0
