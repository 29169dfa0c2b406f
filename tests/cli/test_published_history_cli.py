"""Published history never changes: build on the first part of a data set, ingest the
rest, build again, and every value published for the first part is byte for byte the
same, in performance, composition and changes output, CSV and JSON (METHODOLOGY
"Published history"). Also: a definition without a base date keeps its first build's
base date when data for earlier dates arrives later."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from index_builder.providers.synthetic_market import generate_market

from cli_runner import ok

START = dt.date(2023, 1, 3)
DEFINITIONS = [
    {"id": "h-daily", "name": "daily ew", "top_n": 30},
    {
        "id": "h-monthly-mcap",
        "name": "monthly market cap",
        "top_n": 25,
        "weighting": "market_cap",
        "rebalance": "monthly",
        "return_type": "net_total",
    },
    {
        "id": "h-weekly-rules",
        "name": "weekly, every part 2 rule",
        "top_n": 20,
        "weighting": "capped_market_cap",
        "cap": 0.10,
        "group_cap": {"threshold": 0.05, "limit": 0.40},
        "buffer": {"entry_rank": 18, "exit_rank": 24},
        "rebalance": "weekly",
        "rank_by": "company",
        "effective_lag": 2,
    },
]
IDS = [str(d["id"]) for d in DEFINITIONS]


def _files(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    data = generate_market(seed=23, n_symbols=140, n_days=70, start=START)
    securities = data.securities.to_pandas()
    path = tmp_path / "securities.csv"
    securities.to_csv(path, index=False)
    return path, data.prices.to_pandas()


def _ingest(db: Path, securities: Path, prices: pd.DataFrame, path: Path) -> None:
    prices.to_csv(path, index=False)
    ok(db, "ingest", "--provider", "file", "--securities", str(securities), "--prices", str(path))


def _published(db: Path, end: dt.date, days: list[str]) -> dict[str, str]:
    """Every read of the first part's window, as printed (CSV and JSON)."""
    out = {}
    for index_id in IDS:
        for fmt in ("csv", "json"):
            window = ("--index", index_id, "--end", str(end), "--format", fmt)
            out[f"{index_id} performance {fmt}"] = ok(db, "performance", *window)
            out[f"{index_id} changes {fmt}"] = ok(db, "changes", *window)
            for day in days:
                out[f"{index_id} composition {day} {fmt}"] = ok(
                    db, "composition", "--index", index_id, "--date", day, "--format", fmt
                )
    return out


def test_the_first_part_stays_byte_for_byte_after_the_rest_arrives(tmp_path: Path) -> None:
    db = tmp_path / "history.duckdb"
    securities, prices = _files(tmp_path)
    for d in DEFINITIONS:
        path = tmp_path / f"{d['id']}.json"
        path.write_text(json.dumps(d))
        ok(db, "indices", "add", str(path))
    days = sorted(prices["date"].unique())
    cut = days[44]
    first, rest = prices[prices["date"] <= cut], prices[prices["date"] > cut]
    _ingest(db, securities, first, tmp_path / "first.csv")
    builds = json.loads(ok(db, "build", *[f"--index={i}" for i in IDS], "--format", "json"))
    assert {b["mode"] for b in builds} == {"full"}
    sample = [str(d) for d in (days[0], days[9], days[20], days[31], days[43], cut)]
    before = _published(db, cut, sample)

    _ingest(db, securities, rest, tmp_path / "rest.csv")
    builds = json.loads(ok(db, "build", *[f"--index={i}" for i in IDS], "--format", "json"))
    assert {(b["mode"], b["start_date"]) for b in builds} == {("incremental", str(days[45]))}
    assert {b["trading_days"] for b in builds} == {len(days) - 45}
    after = _published(db, cut, sample)
    assert list(after) == list(before)
    for key, text in before.items():
        assert after[key] == text, key
    # and the days after the cut were published too
    assert str(days[-1]) in ok(db, "performance", "--index", "h-daily", "--format", "csv")


def test_data_for_earlier_dates_never_moves_the_base_date(tmp_path: Path) -> None:
    # h-daily has no base date: its first build fixes the first trading day then. Rows for
    # earlier dates that arrive later are corrections of those dates, not a new base date.
    db = tmp_path / "pin.duckdb"
    securities, prices = _files(tmp_path)
    path = tmp_path / "h-daily.json"
    path.write_text(json.dumps(DEFINITIONS[0]))
    ok(db, "indices", "add", str(path))
    days = sorted(prices["date"].unique())
    early, late = prices[prices["date"] < days[10]], prices[prices["date"] >= days[10]]
    _ingest(db, securities, late, tmp_path / "late.csv")
    ok(db, "build", "--index", "h-daily")
    published = ok(db, "performance", "--index", "h-daily", "--format", "csv")
    assert published.splitlines()[1].startswith(f"{days[10]},1000.0,")

    _ingest(db, securities, early, tmp_path / "early.csv")
    (build,) = json.loads(ok(db, "build", "--index", "h-daily", "--format", "json"))
    # the earlier rows may correct later days (a first dividend value earlier than known
    # switches that security's total return from the base date on): a restatement, never
    # a new base date
    assert build["base_date"] == str(days[10])
    assert build["restated_from"] is None or build["restated_from"] >= str(days[10])
    now = ok(db, "performance", "--index", "h-daily", "--format", "csv")
    assert now.splitlines()[1].startswith(f"{days[10]},1000.0,")
    assert len(now.splitlines()) == len(published.splitlines())
    shown = json.loads(ok(db, "indices", "show", "h-daily"))
    assert shown["build"]["base_date"] == str(days[10])


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_reads_answer_from_the_published_build_until_the_next(tmp_path: Path, fmt: str) -> None:
    # A correction of the last day is ingested but not built yet: the composition still
    # shows the published build's numbers, and status says newer data waits for a build.
    db = tmp_path / "waiting.duckdb"
    securities, prices = _files(tmp_path)
    path = tmp_path / "h-daily.json"
    path.write_text(json.dumps(DEFINITIONS[0]))
    ok(db, "indices", "add", str(path))
    _ingest(db, securities, prices, tmp_path / "all.csv")
    ok(db, "build", "--index", "h-daily")
    last = str(max(prices["date"]))
    published = ok(db, "composition", "--index", "h-daily", "--date", last, "--format", fmt)
    symbol = json.loads(ok(db, "composition", "--index", "h-daily", "--format", "json"))[0][
        "symbol"
    ]
    fix = prices[(prices["date"] == max(prices["date"])) & (prices["symbol"] == symbol)].copy()
    for column in ("close", "adj_close", "market_cap"):
        fix[column] *= 1.5
    _ingest(db, securities, fix, tmp_path / "fix.csv")
    assert ok(db, "composition", "--index", "h-daily", "--date", last, "--format", fmt) == published
    shown = json.loads(ok(db, "indices", "show", "h-daily"))
    assert shown["build"]["data_waiting_from"] == last
    (build,) = json.loads(ok(db, "build", "--index", "h-daily", "--format", "json"))
    assert (build["mode"], build["restated_from"]) == ("restated", last)
    assert ok(db, "composition", "--index", "h-daily", "--date", last, "--format", fmt) != published
    assert json.loads(ok(db, "indices", "show", "h-daily"))["build"]["data_waiting_from"] is None
