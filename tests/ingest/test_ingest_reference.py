"""Ingestion against a straightforward Python implementation of the input rules.

Two dirty inputs (unparseable fields, missing symbols, unknown symbols, non-sessions,
exact and conflicting duplicates, non-positive or non-finite values, future and
offset known_at, then corrections, stale corrections, unchanged rows and new days)
are ingested by each backend, and the stored prices, their history, the quarantine
and the run reports are compared with what :func:`reference` derives row by row from
the same CSV text (METHODOLOGY "Inputs", point in time). The Iceberg backend runs
both ways its scratch store writes new rows: a month at a time (an input laid out by
date) and in one partitioned pass.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from index_builder.calendar import get_calendar
from index_builder.ingest.job import run_ingestion
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.iceberg import scratch
from index_builder.storage.iceberg.location import LakeLocation
from index_builder.storage.iceberg.store import IcebergStore

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
HEADER = [
    "date",
    "symbol",
    "close",
    "adj_close",
    "volume",
    "shares_outstanding",
    "market_cap",
    "dividend",
    "split_ratio",
    "known_at",
    "basis",
]
NUMBERS = (
    "close",
    "adj_close",
    "volume",
    "shares_outstanding",
    "market_cap",
    "dividend",
    "split_ratio",
)
VALUES = ("close", "adj_close", "volume", "shares_outstanding", "market_cap", "dividend")
VERSION_COLUMNS = (
    "date",
    "symbol",
    "close",
    "known_at",
    "superseded_at",
    "superseded_by_run_id",
    "run_id",
)
RUN_STARTS = (dt.datetime(2024, 7, 1, 12), dt.datetime(2024, 7, 2, 12))
PROVIDER = "file"


# ---------------------------------------------------------------------------- inputs
def _row(day: Any, symbol: Any, close: Any, **given: Any) -> dict[str, Any]:
    row = {"date": str(day), "symbol": symbol, "close": close, "volume": 1000}
    row["shares_outstanding"] = 1_000_000
    row.update(given)
    return {name: row.get(name) for name in HEADER}


def _inputs(sessions: list[dt.date]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of the two inputs (shuffled: row numbers are the file order)."""
    rng = random.Random(11)
    days = sessions[:70]  # about three and a half months
    first: list[dict[str, Any]] = []
    for day in days:
        for symbol in SYMBOLS:
            close = round(10 + rng.random() * 90, 2)
            if symbol == "DDD":  # gives its market cap, no share count
                first.append(
                    _row(day, symbol, close, shares_outstanding=None, market_cap=close * 3e6)
                )
            else:
                first.append(_row(day, symbol, close, adj_close=round(close * 0.99, 4)))
    first += [dict(first[5]), dict(first[9]), {**first[13], "close": 999.5}]  # copies
    first += [
        _row(days[3], "AAA", "abc"),  # unparseable close
        _row("2024-02-30", "AAA", 10),  # unparseable date
        _row(days[4], "BBB", 10, volume="lots"),
        _row(days[4], "CCC", 10, known_at="yesterday"),
        _row(days[5], "ZZZ", 10),  # unknown symbol
        _row(days[5], "  ", 10),  # missing symbol
        _row(dt.date(2024, 1, 6), "AAA", 10),  # a Saturday
        _row(dt.date(2024, 1, 15), "BBB", 10),  # a holiday
        _row(days[6], "AAA", -1),
        _row(days[6], "BBB", 0),
        _row(days[7], "CCC", "inf"),
        _row(days[7], "AAA", "nan"),
        _row(days[8], "BBB", 10, shares_outstanding=-5),
        _row(days[8], "CCC", 10, shares_outstanding=None, market_cap=-3),
        _row(days[9], "DDD", 10, shares_outstanding=None, market_cap=None),
        _row(days[9], "AAA", 10, dividend=-1),
        _row(days[10], "BBB", 10, split_ratio=0),
        _row(days[10], "CCC", 10, volume="-inf"),
        _row(days[11], "CCC", 10, basis="guess"),
        _row(days[11], "DDD", 10, known_at="2099-01-01T00:00:00Z", market_cap=5e7),
        _row(days[12], " aaa ", 12.5),  # trimmed and upper-cased: valid
        _row(days[12], "BBB", 12.5, adj_close=-2, volume="nan"),  # dropped adj, no volume
        _row(days[13], "CCC", 13.5, known_at="2024-06-30T09:00:00+02:00"),
        _row(days[13], "DDD", 13.5, market_cap=4e7, shares_outstanding=None, basis="current"),
    ]
    rng.shuffle(first)
    second: list[dict[str, Any]] = [dict(r) for r in first[:40]]  # as before: unchanged
    second += [
        _row(days[20], "AAA", 55.5),  # a correction: newer, replaces
        _row(days[21], "BBB", 66.6, known_at="2024-01-01T00:00:00Z"),  # stale correction
        _row(days[22], "CCC", 77.7, known_at="2024-07-01T12:00:00"),  # as old as stored: stale
        _row(days[23], "AAA", 88.8, known_at="2024-07-01T18:00:00"),  # newer: replaces
        _row(days[24], "BBB", 1.5),
        _row(days[24], "BBB", 1.5),  # a correction given twice
    ]
    for day in sessions[70:73]:  # new days
        second += [_row(day, symbol, 50.0, shares_outstanding=2e6) for symbol in SYMBOLS]
    rng.shuffle(second)
    return first, second


def _write(folder: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "securities.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["symbol", "name", "type"])
        writer.writerows([s, f"{s} Inc", "Common Stock"] for s in SYMBOLS)
    with (folder / "prices.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(["" if r[h] is None else r[h] for h in HEADER] for r in rows)
    return {"securities": str(folder / "securities.csv"), "prices": str(folder / "prices.csv")}


# ---------------------------------------------------------------------------- reference
@dataclass
class Expected:
    """What the reference implementation expects after each input."""

    prices: dict[tuple[dt.date, str], dict[str, Any]] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[tuple[int, int, str]] = field(default_factory=list)
    reports: list[dict[str, int]] = field(default_factory=list)


def _number(text: str) -> tuple[float | None, bool]:
    """(value, parsed): '' is missing; 'nan', 'inf' parse; anything else must be a float."""
    text = text.strip()
    if text == "":
        return None, True
    try:
        return float(text), True
    except ValueError:
        return None, False


def _time(text: str) -> tuple[dt.datetime | None, bool]:
    text = text.strip()
    if text == "":
        return None, True
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None, False
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value, True


def _check(raw: dict[str, str], sessions: set[dt.date], start: dt.datetime) -> dict[str, Any]:
    """One CSV row: its parsed values and the first rule it fails (or None)."""
    out: dict[str, Any] = {"reason": None}
    try:
        out["date"] = dt.date.fromisoformat(raw["date"].strip())
    except ValueError:
        out["date"] = None
    out["symbol"] = raw["symbol"].strip().upper() or None
    parsed = {}
    for name in NUMBERS:
        out[name], parsed[name] = _number(raw[name])
    out["known_at"], known_ok = _time(raw["known_at"])
    basis = raw["basis"].strip().lower() or None
    if out["date"] is None:
        out["reason"] = "unparseable_date"
    elif out["symbol"] is None:
        out["reason"] = "missing_symbol"
    elif bad := next((n for n in NUMBERS if not parsed[n]), None):
        out["reason"] = f"unparseable_{bad}"
    elif not known_ok:
        out["reason"] = "unparseable_known_at"
    adj = out["adj_close"]
    out["adj_close"] = adj if adj is not None and math.isfinite(adj) and adj > 0 else None
    for name in ("volume", "shares_outstanding"):
        if out[name] is not None and math.isnan(out[name]):
            out[name] = None
    close, shares, given_cap = out["close"], out["shares_outstanding"], out["market_cap"]
    cap = given_cap
    if cap is None and shares is not None and close is not None:
        cap = close * shares
    out["market_cap"] = cap

    def bad_number(value: float | None, floor_ok: bool = False) -> bool:
        if value is None:
            return False
        return not math.isfinite(value) or (value < 0 if floor_ok else value <= 0)

    if out["reason"] is None:
        if out["symbol"] not in SYMBOLS:
            out["reason"] = "unknown_symbol"
        elif out["date"] not in sessions:
            out["reason"] = "not_a_session"
        elif close is None or not math.isfinite(close) or close <= 0:
            out["reason"] = "invalid_close"
        elif bad_number(shares):
            out["reason"] = "invalid_shares_outstanding"
        elif given_cap is None and shares is None:
            out["reason"] = "missing_market_cap"
        elif cap is None or not math.isfinite(cap) or cap <= 0:
            out["reason"] = "invalid_market_cap"
        elif bad_number(out["split_ratio"]):
            out["reason"] = "invalid_split_ratio"
        elif bad_number(out["dividend"], floor_ok=True):
            out["reason"] = "invalid_dividend"
        elif bad_number(out["volume"], floor_ok=True):
            out["reason"] = "invalid_volume"
        elif basis is not None and basis not in ("point_in_time", "current"):
            out["reason"] = "invalid_basis"
        elif out["known_at"] is not None and out["known_at"] > start:
            out["reason"] = "future_known_at"
    out["known_at"] = out["known_at"] or start
    out["basis"] = (basis or "point_in_time") if shares is not None else None
    return out


def reference(
    expected: Expected, path: str, run_id: int, sessions: set[dt.date], start: dt.datetime
) -> None:
    """Apply one input to ``expected`` the straightforward way, row by row."""
    with open(path, newline="") as fh:
        raws = list(csv.DictReader(fh))
    checked = [(number, _check(raw, sessions, start)) for number, raw in enumerate(raws, 1)]
    quarantined = [(run_id, n, c["reason"]) for n, c in checked if c["reason"] is not None]
    by_key: dict[tuple[dt.date, str], list[tuple[int, dict[str, Any]]]] = {}
    for n, c in checked:
        if c["reason"] is None:
            by_key.setdefault((c["date"], c["symbol"]), []).append((n, c))
    valid: list[tuple[int, dict[str, Any]]] = []
    collapsed = 0
    for copies in by_key.values():
        if len({tuple(c[v] for v in (*VALUES, "split_ratio")) for _, c in copies}) > 1:
            quarantined += [(run_id, n, "conflicting_duplicate") for n, _ in copies]
            continue
        n, c = min(copies, key=lambda item: item[0])
        valid.append((n, {**c, "known_at": min(c2["known_at"] for _, c2 in copies)}))
        collapsed += len(copies) - 1
    inserted = updated = unchanged = accepted = 0
    compared = (*VALUES, "split_ratio", "basis")
    for n, c in valid:
        key = (c["date"], c["symbol"])
        stored = expected.prices.get(key)
        row = {name: c[name] for name in ("date", "symbol", *compared, "known_at")}
        row.update(run_id=run_id, source=PROVIDER, fetched_at=start)
        if stored is None:
            inserted += 1
        elif all(stored[k] == row[k] for k in compared):
            unchanged += 1
            accepted += 1
            continue
        elif stored["known_at"] >= row["known_at"]:
            quarantined.append((run_id, n, "stale_version"))
            continue
        else:
            updated += 1
            expected.versions.append(
                {**stored, "superseded_at": row["known_at"], "superseded_by_run_id": run_id}
            )
        accepted += 1
        expected.prices[key] = row
    expected.quarantine += quarantined
    expected.reports.append(
        {
            "rows_read": len(raws),
            "rows_accepted": accepted,
            "rows_rejected": len(quarantined),
            "duplicates_collapsed": collapsed,
            "rows_inserted": inserted,
            "rows_updated": updated,
            "rows_unchanged": unchanged,
        }
    )


# ---------------------------------------------------------------------------- the test
@pytest.fixture(params=["duckdb", "iceberg-by-month", "iceberg-partitioned"])
def backend_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DuckDBStore]:
    clock = {"now": RUN_STARTS[0]}
    options: dict[str, Any] = {"calendar": get_calendar(), "threads": 2}
    options["clock"] = lambda: clock["now"]
    store: DuckDBStore
    if request.param == "duckdb":
        store = DuckDBStore(tmp_path / "db.duckdb", **options)
    else:
        # the scratch store's two ways of writing new rows, whatever the input's layout
        monkeypatch.setattr(
            scratch, "_MONTH_SPAN", 10**9 if request.param == "iceberg-by-month" else 0
        )
        store = IcebergStore(LakeLocation.resolve(str(tmp_path / "lake"), None), **options)
    store.open()
    store.clock_box = clock  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.close()


def _stored_prices(store: DuckDBStore) -> dict[tuple[dt.date, str], dict[str, Any]]:
    cur = store.cursor().execute("SELECT * FROM prices")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {(r["date"], r["symbol"]): r for r in rows}


def _same_row(stored: dict[str, Any], expected: dict[str, Any]) -> bool:
    for name, value in expected.items():
        got = stored[name]
        if isinstance(value, float) and isinstance(got, float):
            if not math.isclose(got, value, rel_tol=1e-12):
                return False
        elif got != value:
            return False
    return True


def test_ingestion_matches_the_reference_rules(backend_store: DuckDBStore, tmp_path: Path) -> None:
    store = backend_store
    sessions = [
        s
        for s in store.calendar.sessions.astype("datetime64[D]").astype(dt.date).tolist()
        if s >= dt.date(2024, 1, 2)
    ]
    inputs = _inputs(sessions)
    expected = Expected()
    for number, (rows, start) in enumerate(zip(inputs, RUN_STARTS, strict=True), 1):
        files = _write(tmp_path / f"input{number}", rows)
        store.clock_box["now"] = start  # type: ignore[attr-defined]
        report = run_ingestion(store, "file", files)
        reference(expected, files["prices"], report.run_id, set(sessions), start)
        got = {name: getattr(report, name) for name in expected.reports[-1]}
        assert got == expected.reports[-1], f"input {number}"

    stored = _stored_prices(store)
    assert sorted(stored) == sorted(expected.prices)
    wrong = [key for key, row in expected.prices.items() if not _same_row(stored[key], row)]
    assert wrong == []

    cur = store.cursor()
    quarantine = cur.execute(
        "SELECT run_id, row_number, reason FROM quarantine WHERE source = 'prices'"
    ).fetchall()
    assert sorted(quarantine) == sorted(expected.quarantine)
    reasons = {reason for _, _, reason in quarantine}
    assert {
        "unparseable_close",
        "conflicting_duplicate",
        "stale_version",
        "not_a_session",
    } <= reasons

    history = cur.execute(
        f"SELECT {', '.join(VERSION_COLUMNS)} FROM price_versions ORDER BY ALL"
    ).fetchall()
    assert history == sorted(tuple(v[k] for k in VERSION_COLUMNS) for v in expected.versions)
    assert len(history) >= 2  # newer corrections moved the rows they replace
