"""The point-in-time worked example of docs/methodology.md (section 9.4), end to end:
files with publication times, a correction, builds as of a moment.

The test also checks that every number it asserts is written in the document."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.ingest.job import run_ingestion
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

from market_files import PRICE_HEADER, SECURITY_HEADER, bar, security, write_csv

DOC = Path(__file__).resolve().parents[2] / "docs" / "methodology.md"
DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4), dt.date(2024, 1, 5)]
CLOSES = {"A": [10, 11, 12, 12], "B": [20, 20, 22, 21], "C": [5, 6, None, 7]}
SHARES = {"A": 100, "B": 100, "C": 1000}
CORRECTED_AT = dt.datetime(2024, 1, 8, 14, 0)


class Clock:
    """A settable clock for the store (naive UTC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _files(folder: Path) -> dict[str, Path]:
    securities = write_csv(
        folder / "secs.csv",
        [*SECURITY_HEADER, "known_at"],
        [[*security(s, sector="Energy", exchange="XNYS"), "2024-01-01"] for s in CLOSES],
    )
    prices = write_csv(
        folder / "prices.csv",
        [*PRICE_HEADER, "known_at"],
        [
            [*bar(day, s, c, shares=SHARES[s]), f"{day}T22:00:00Z"]
            for s, closes in CLOSES.items()
            for day, c in zip(DAYS, closes, strict=True)
            if c is not None
        ],
    )
    fix = write_csv(
        folder / "fix.csv",
        [*PRICE_HEADER, "known_at"],
        [[*bar(DAYS[1], "B", 24, shares=100), "2024-01-08T14:00:00Z"]],
    )
    return {"securities": securities, "prices": prices, "fix": fix}


def _ingest(store: DuckDBStore, securities: Path, prices: Path) -> None:
    run_ingestion(store, "file", {"securities": str(securities), "prices": str(prices)})


def test_point_in_time_worked_example(tmp_path: Path) -> None:
    files = _files(tmp_path)
    clock = Clock(dt.datetime(2024, 1, 6))
    with DuckDBStore(tmp_path / "example.duckdb", clock=clock) as store:
        add_definition(store, parse_definition({"id": "example", "name": "E", "top_n": 2}))
        builder, reader = IndexBuilder(store, store.calendar), IndexReader(store, store.calendar)
        _ingest(store, files["securities"], files["prices"])
        builder.build(["example"])
        published = reader.performance("example").rows
        assert [r["level"] for r in published] == pytest.approx([1000, 1100, 1155, 1128.75])

        clock.now = dt.datetime(2024, 1, 9)
        _ingest(store, files["securities"], files["fix"])
        (result,) = builder.build(["example"])
        assert (result.mode, result.restated_from) == ("restated", DAYS[1])
        current = reader.performance("example").rows
        assert [r["level"] for r in current] == pytest.approx(
            [1000, 1200, 1150, 1123.8636], rel=1e-7
        )
        assert current[2]["daily_return"] == pytest.approx(-0.041667, abs=1e-6)
        levels = store.read_levels("example", DAYS[0], DAYS[-1])
        assert levels.column("turnover")[2].as_py() == pytest.approx(0.5217, abs=1e-4)

        builder.build(["example"], as_of=dt.datetime(2024, 1, 7, 23, 59, 59, 999999))
        as_of = reader.performance("example", as_of=dt.datetime(2024, 1, 7, 23, 59, 59, 999999))
        assert as_of.rows == published  # exactly the publication of 2024-01-05
        changes = reader.changes("example", as_of=dt.datetime(2024, 1, 7, 23, 59, 59, 999999))[1]
        assert [(c.date, list(c.entered), list(c.exited)) for c in changes] == [
            (DAYS[2], ["A"], ["C"]),
            (DAYS[3], ["C"], ["A"]),
        ]

        early = dt.datetime(2024, 1, 3, 22)
        builder.build(["example"], as_of=early)
        rows = reader.performance("example", as_of=early).rows
        assert [(r["date"], r["level"]) for r in rows] == [(DAYS[0], 1000), (DAYS[1], 1100)]

        history = store.price_versions("B", DAYS[1])
        assert [(v["close"], v["known_at"], v["superseded_at"]) for v in history] == [
            (20.0, dt.datetime(2024, 1, 3, 22), CORRECTED_AT),
            (24.0, CORRECTED_AT, None),
        ]
    text = DOC.read_text()
    section = text[text.index("### 9.4 Worked example") :]
    for number in ("**1200**", "**1150**", "**0.5217**", "**1123.8636**", "**1100**", "1128.75"):
        assert number in section
