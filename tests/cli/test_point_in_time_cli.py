"""Point in time through the command line: files with publication times, a correction,
``build --as-of`` and the reads ``--as-of`` reproducing the earlier publication."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from index_builder.providers.synthetic_market import generate_market

from cli_runner import ok, run

START = dt.date(2023, 1, 3)
AS_OF = "2023-02-28"  # the end of that day, UTC: after the last bar, before the correction
CORRECTED_AT = "2023-03-01T15:00:00Z"
INDICES = ("ew100", "ew-tech50")


def _market() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(securities, prices, correction): every bar published at 22:00 UTC on its date;
    the correction raises the largest tech stock's bar of the 20th session by 30%."""
    data = generate_market(seed=5, n_symbols=130, n_days=39, start=START)
    securities = data.securities.to_pandas()
    securities["known_at"] = "2023-01-01T00:00:00Z"
    prices = data.prices.to_pandas()
    prices["known_at"] = pd.to_datetime(prices["date"]).dt.strftime("%Y-%m-%dT22:00:00Z")
    assert prices["date"].max() == dt.date(2023, 2, 28)
    tech = securities.loc[securities["sector"] == "Information Technology", "symbol"]
    day = sorted(prices["date"].unique())[20]
    on_day = prices[(prices["date"] == day) & prices["symbol"].isin(tech)]
    fixed = on_day.loc[[on_day["market_cap"].idxmax()]].copy()  # in ew100 and ew-tech50
    for column in ("close", "adj_close", "market_cap"):
        fixed[column] *= 1.3
    fixed["known_at"] = CORRECTED_AT
    return securities, prices, fixed


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _publication(db: Path, *as_of: str) -> dict[str, str]:
    """The read commands' outputs: performance (CSV, full precision), compositions on
    three dates and changes (JSON)."""
    out = {}
    for index in INDICES:
        out[f"{index} performance"] = ok(db, "performance", "-i", index, "-f", "csv", *as_of)
        for day in ("2023-01-20", "2023-02-01", "2023-02-28"):
            out[f"{index} {day}"] = ok(
                db, "composition", "-i", index, "--date", day, "-f", "json", *as_of
            )
        out[f"{index} changes"] = ok(db, "changes", "-i", index, "-f", "json", *as_of)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pit-cli")
    securities, prices, fixed = _market()
    paths = {
        "securities": folder / "securities.csv",
        "prices": folder / "prices.csv",
        "fix": folder / "fix.csv",
        "corrected": folder / "corrected.csv",
    }
    securities.to_csv(paths["securities"], index=False)
    prices.to_csv(paths["prices"], index=False)
    fixed.to_csv(paths["fix"], index=False)
    corrected = pd.concat([prices.drop(fixed.index), fixed]).drop(columns=["known_at"])
    corrected.to_csv(paths["corrected"], index=False)
    return paths


@pytest.fixture(scope="module")
def built(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original data ingested and ew100 built."""
    db = tmp_path_factory.mktemp("pit-cli-errors") / "db.duckdb"
    _ingest(db, files["securities"], files["prices"])
    ok(db, "build", "-i", "ew100")
    return db


def _ingest(db: Path, securities: Path, prices: Path) -> str:
    return ok(
        db, "ingest", "--provider", "file", "--securities", str(securities), "--prices", str(prices)
    )


def test_build_as_of_reproduces_the_publication_before_a_correction(
    files: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "pit.duckdb"
    _ingest(db, files["securities"], files["prices"])
    ok(db, "build", *[a for i in INDICES for a in ("-i", i)])
    published = _publication(db)

    report = _ingest(db, files["securities"], files["fix"])
    assert "known at:" in report
    ok(db, "build", *[a for i in INDICES for a in ("-i", i)])
    current = _publication(db)
    for index in INDICES:
        assert current[f"{index} performance"] != published[f"{index} performance"]

    out = ok(db, "build", "-i", "ew100", "-i", "ew-tech50", "--as-of", AS_OF)
    assert "as of 2023-02-28T23:59:59.999999Z" in out
    assert _publication(db, "--as-of", AS_OF) == published  # byte for byte
    # an earlier moment reproduces the publication of that day
    ok(db, "build", "-i", "ew100", "--as-of", "2023-01-31T22:00:00Z")
    january = _csv_rows(ok(db, "performance", "-f", "csv", "--as-of", "2023-01-31T22:00:00Z"))
    before = _csv_rows(published["ew100 performance"])
    assert january == [r for r in before if r["date"] <= "2023-01-31"]

    # the current build equals a fresh full build on the corrected data
    fresh = tmp_path / "fresh.duckdb"
    _ingest(fresh, files["securities"], files["corrected"])
    ok(fresh, "build", "-i", "ew100", "-i", "ew-tech50", "--full")
    for index in INDICES:
        a = pd.read_csv(io.StringIO(current[f"{index} performance"]))
        b = pd.read_csv(io.StringIO(ok(fresh, "performance", "-i", index, "-f", "csv")))
        assert list(a["date"]) == list(b["date"])
        np.testing.assert_allclose(a["level"], b["level"], rtol=1e-12)
        for day in ("2023-01-20", "2023-02-01", "2023-02-28"):
            got = json.loads(current[f"{index} {day}"])
            want = json.loads(ok(fresh, "composition", "-i", index, "--date", day, "-f", "json"))
            assert [r["symbol"] for r in got] == [r["symbol"] for r in want]
        assert current[f"{index} changes"] == ok(fresh, "changes", "-i", index, "-f", "json")

    out = ok(db, "indices", "show", "ew100")
    builds = json.loads(out)["as_of_builds"]
    assert [b["as_of"] for b in builds] == ["2023-01-31T22:00:00Z", "2023-02-28T23:59:59.999999Z"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["build", "--as-of", "last tuesday"],
            "--as-of: 'last tuesday' is not a date or timestamp",
        ),
        (["build", "--as-of", "2999-01-01"], "as_of 2999-01-01T23:59:59.999999Z is in the future"),
        (["performance", "--as-of", "2023-02-30"], "is not a date or timestamp"),
        (
            ["performance", "--as-of", "2023-02-27"],
            "ew100 has no build as of 2023-02-27T23:59:59.999999Z: run 'index-builder build "
            "--index ew100 --as-of 2023-02-27T23:59:59.999999Z'",
        ),
        (["composition", "--as-of", "2023-02-27T12:00:00+01:00"], "--as-of 2023-02-27T11:00:00Z"),
        (["changes", "-i", "ew-tech50", "--as-of", "2023-02-27"], "no build as of"),
        (["build", "--as-of", "2022-12-31"], "no market data was known at 2022-12-31T23:59"),
    ],
)
def test_as_of_errors_are_one_line_with_exit_code_2(
    built: Path, args: list[str], message: str
) -> None:
    code, _, err = run(built, *args)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0
