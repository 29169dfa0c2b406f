"""End to end: a dirty CSV file -> ingestion -> stored levels and compositions,
checked against the small reference implementation in ``reference_engine.py``."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from index_builder.cli.main import app
from index_builder.providers.synthetic_market import generate_market
from index_builder.services.queries import IndexReader
from index_builder.settings import get_settings
from index_builder.storage.duckdb.store import DuckDBStore

from reference_engine import reference_build

DEFINITIONS = [
    {"id": "e2e-ew", "name": "e2e equal", "top_n": 10, "weighting": "equal", "rebalance": "daily"},
    {
        "id": "e2e-capped",
        "name": "e2e capped",
        "top_n": 8,
        "weighting": "capped_market_cap",
        "cap": 0.2,
        "rebalance": "weekly",
        "universe": {"types": ["common stock"]},
    },
]


def _clean_market() -> tuple[pd.DataFrame, pd.DataFrame]:
    data = generate_market(seed=3, n_symbols=60, n_days=35)
    securities = data.securities.to_pandas()
    # the part 1 interchange format: no dividend / split_ratio columns (return
    # variants, part 2, have their own tests)
    prices = data.prices.drop_columns(["dividend", "split_ratio"]).to_pandas()
    prices["date"] = pd.to_datetime(prices["date"]).dt.date
    return securities, prices


def _dirty(prices: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows written to the file, rows a correct ingestion keeps)."""
    rng = np.random.default_rng(5)
    keep = prices.copy()
    conflicted = keep.sample(2, random_state=1)
    keep = keep.drop(conflicted.index)
    other = conflicted.copy()
    other["close"] = other["close"] * 1.01
    dupes = keep.sample(5, random_state=2)
    template = keep.iloc[0]
    bad = []
    for close, day, symbol in [
        (0.0, template["date"], template["symbol"]),
        (-3.0, template["date"], template["symbol"]),
        (float("nan"), template["date"], template["symbol"]),
        (10.0, dt.date(2023, 1, 7), template["symbol"]),  # Saturday
        (10.0, dt.date(2023, 1, 16), template["symbol"]),  # MLK holiday
        (10.0, template["date"], "NOPE"),  # unknown symbol
    ]:
        row = template.copy()
        row["close"], row["date"], row["symbol"] = close, day, symbol
        bad.append(row)
    written = pd.concat([keep, conflicted, other, dupes, pd.DataFrame(bad)], ignore_index=True)
    written = written.iloc[rng.permutation(len(written))]
    return written, keep


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("e2e")
    securities, prices = _clean_market()
    written, kept = _dirty(prices)
    securities.to_csv(tmp / "securities.csv", index=False)
    file_prices = written.rename(columns={"close": "Close", "symbol": "Ticker"})
    file_prices.to_csv(tmp / "prices.csv", index=False)
    db = tmp / "e2e.duckdb"
    runner = CliRunner()
    get_settings.cache_clear()
    result = runner.invoke(
        app,
        [
            "--db",
            str(db),
            "-q",
            "ingest",
            "--provider",
            "file",
            "--securities",
            str(tmp / "securities.csv"),
            "--prices",
            str(tmp / "prices.csv"),
            "--map",
            "ticker=symbol",
        ],
    )
    assert result.exit_code == 0, result.output
    for d in DEFINITIONS:
        path = tmp / f"{d['id']}.json"
        path.write_text(json.dumps(d))
        assert runner.invoke(app, ["--db", str(db), "indices", "add", str(path)]).exit_code == 0
    ids = [arg for d in DEFINITIONS for arg in ("-i", str(d["id"]))]
    result = runner.invoke(app, ["--db", str(db), "-q", "build", *ids])
    assert result.exit_code == 0, result.output
    return {"db": db, "securities": securities, "kept": kept, "ingest_output": result.output}


def test_ingestion_kept_exactly_the_valid_rows(pipeline: dict[str, object]) -> None:
    kept = pipeline["kept"]
    assert isinstance(kept, pd.DataFrame)
    with DuckDBStore(pipeline["db"]) as store:  # type: ignore[arg-type]
        stored = store.cursor().sql("SELECT date, symbol, close FROM prices").df()
        stored["date"] = pd.to_datetime(stored["date"]).dt.date
        (run,) = store.ingest_runs()
    assert len(stored) == len(kept)
    assert run["rows_rejected"] == 4 + 6  # 2 conflicting pairs + 6 invalid rows
    assert run["duplicates_collapsed"] == 5
    merged = stored.merge(kept[["date", "symbol", "close"]], on=["date", "symbol"])
    assert len(merged) == len(kept)
    np.testing.assert_array_equal(merged["close_x"], merged["close_y"])


@pytest.mark.parametrize("definition", DEFINITIONS, ids=[d["id"] for d in DEFINITIONS])
def test_stored_results_equal_the_reference(
    pipeline: dict[str, object], definition: dict[str, object]
) -> None:
    ref = reference_build(pipeline["securities"], pipeline["kept"], definition)  # type: ignore[arg-type]
    index_id = str(definition["id"])
    with DuckDBStore(pipeline["db"]) as store:  # type: ignore[arg-type]
        reader = IndexReader(store, store.calendar)
        perf = reader.performance(index_id)
        levels = pd.DataFrame(perf.rows)
        assert list(levels["date"]) == list(ref.levels["date"])
        np.testing.assert_allclose(levels["level"], ref.levels["level"], rtol=1e-9)
        np.testing.assert_allclose(
            levels["daily_return"], ref.levels["daily_return"], rtol=1e-9, atol=1e-12
        )
        for day, expected in ref.compositions.items():
            rows = reader.composition(index_id, day).rows()
            assert [r["symbol"] for r in rows] == list(expected["symbol"]), day
            assert [r["rank"] for r in rows] == list(expected["rank"]), day
            for col in ("weight", "units", "price", "market_cap"):
                np.testing.assert_allclose(
                    [r[col] for r in rows], expected[col], rtol=1e-9, err_msg=f"{day} {col}"
                )
        _, changes = reader.changes(index_id)
        assert [(c.date, list(c.entered), list(c.exited)) for c in changes] == [
            (d, list(e), list(x)) for d, e, x in ref.changes
        ]
