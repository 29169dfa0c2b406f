"""The rules METHODOLOGY.md added or pinned, each on a hand-computed crafted market,
through both paths the product computes an index (in memory, and CSV -> DuckDB ->
build -> reads). Numbers are computed by hand in the comments."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from index_builder.services.builds import IndexBuilder

from crafted import PATHS, ingest, open_store, px, run, sec, stored_run

approx = pytest.approx
REL = 1e-12
D = dt.date.fromisoformat


# --------------------------------------------------------------------------- period ends
def _month_end_market() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Jan 31 2024 (the last XNYS session of January) is missing from the data."""
    secs = [sec("A"), sec("B"), sec("C")]
    rows = [
        px("2024-01-29", "A", 3.0),
        px("2024-01-29", "B", 2.0),
        px("2024-01-29", "C", 1.0),
        px("2024-01-30", "A", 3.3),
        px("2024-01-30", "B", 2.2),
        px("2024-01-30", "C", 1.0),
        px("2024-02-01", "A", 3.0),
        px("2024-02-01", "B", 1.0),
        px("2024-02-01", "C", 5.0),
        px("2024-02-02", "A", 3.3),
        px("2024-02-02", "B", 1.0),
        px("2024-02-02", "C", 5.5),
    ]
    return secs, rows


@pytest.mark.parametrize("path", PATHS)
def test_a_missing_month_end_session_postpones_the_rebalance(path: str, tmp_path: Path) -> None:
    # base Jan 29: caps A 300, B 200, C 100 -> {A, B}; units A 500/3, B 250.
    # Jan 30: 500/3 * 3.3 + 250 * 2.2 = 550 + 550 = 1100.
    # Feb 1 (the first trading day after the missing Jan 31): 500 + 250 = 750, and the
    # January rebalance happens at its close: caps C 500, A 300, B 100 -> {C, A};
    # drifted A 2/3, B 1/3 -> turnover 0.5 * (1/6 + 1/3 + 1/2) = 0.5; units A 125, C 75.
    # Feb 2: 125 * 3.3 + 75 * 5.5 = 825.
    secs, rows = _month_end_market()
    out = run(path, secs, rows, {"top_n": 2, "rebalance": "monthly"}, tmp_path)
    assert [r["level"] for r in out.levels] == approx([1000, 1100, 750, 825], rel=REL)
    assert [r["is_rebalance"] for r in out.levels] == [True, False, True, False]
    assert out.row("2024-02-01")["turnover"] == approx(0.5, rel=REL)
    assert out.changes == [(D("2024-02-01"), ["C"], ["B"])]
    units = {r["symbol"]: r["units"] for r in out.composition(D("2024-02-02"))}
    assert units == {"A": approx(125, rel=REL), "C": approx(75, rel=REL)}


@pytest.mark.parametrize("path", PATHS)
def test_effective_lag_counts_trading_days_of_the_data(path: str, tmp_path: Path) -> None:
    # Daily top 1 with lag 1. Jan 30: C (close 4, cap 400) overtakes A (330). Lag 1 counts
    # trading days of the data: the next one after Jan 30 is Feb 1 (Jan 31, an exchange
    # session, has no data), so C enters at the close of Feb 1 at Feb 1's price.
    # Levels: base 1000 in A (units 1000/3); Jan 30 1100; Feb 1: A 3.0 -> 1000, then C in:
    # units 1000 / 5 = 200; Feb 2: 200 * 5.5 = 1100.
    secs, rows = _month_end_market()
    rows = [
        dict(r, close=4.0) if (r["date"], r["symbol"]) == ("2024-01-30", "C") else r for r in rows
    ]
    out = run(path, secs, rows, {"top_n": 1, "effective_lag": 1}, tmp_path)
    assert [r["level"] for r in out.levels] == approx([1000, 1100, 1000, 1100], rel=REL)
    assert out.changes == [(D("2024-02-01"), ["C"], ["A"])]
    assert out.composition(D("2024-02-01"))[0]["units"] == approx(200, rel=REL)


@pytest.mark.parametrize("path", PATHS)
def test_the_pro_forma_view_is_the_latest_pending_selection(path: str, tmp_path: Path) -> None:
    # Lag 2 on data ending Feb 2: the selections of Feb 1 (C) and Feb 2 are both pending;
    # Feb 2's is the latest: B is bought up (close 9, cap 900) and selected on Feb 2, to take
    # effect at the close of the second session after Feb 2 (Feb 6). A selection effective on
    # the last day (Jan 30's, lag 2 -> Feb 2) is in force, not pro forma.
    secs, rows = _month_end_market()
    rows = [
        dict(r, close=9.0) if (r["date"], r["symbol"]) == ("2024-02-02", "B") else r for r in rows
    ]
    out = run(path, secs, rows, {"top_n": 1, "effective_lag": 2}, tmp_path)
    assert out.announced is not None
    reference, effective, symbols = out.announced
    assert (reference, symbols) == (D("2024-02-02"), ["B"])
    if path == "stored":
        assert effective == D("2024-02-06")
    assert out.row("2024-02-02")["is_rebalance"]  # Jan 29 + ... Jan 30's selection in force


# --------------------------------------------------------------------------- dividends
def _split_then_dividend() -> list[dict[str, object]]:
    """One security A without adj_close: a 2:1 split on Jan 4, its first dividend value
    (1.5) on Jan 8."""
    return [
        px("2024-01-02", "A", 100.0),
        px("2024-01-03", "A", 110.0),
        px("2024-01-04", "A", 55.0, split_ratio=2.0),
        px("2024-01-05", "A", 60.0),
        px("2024-01-08", "A", 57.0, dividend=1.5),
    ]


@pytest.mark.parametrize("path", PATHS)
def test_total_return_follows_dividends_only_from_the_first_dividend_value(
    path: str, tmp_path: Path
) -> None:
    # One security A, no adj_close: a 2:1 split on Jan 4 and its first dividend value (1.5)
    # on Jan 8. Before Jan 8 its total return is the ratio of P = close, so the split shows
    # as a fall: 1000, 1100, 550, 600; on Jan 8 (57 + 1.5) / 60 -> 585.
    # Price return always applies the split: 1000, 1100, 1100 (55 * 2 / 110), 1200, 1140.
    # Net (tax .3) before Jan 8: r_net = r_p + .7 (r_t - r_p): Jan 4 0 + .7 * (-.5) -> 715,
    # Jan 5 * 60/55 -> 780; Jan 8 (57 + .7 * 1.5) / 60 = .9675 -> 754.65.
    rows = _split_then_dividend()
    out = run(path, [sec("A")], rows, {"top_n": 1}, tmp_path)
    assert [r["level_total"] for r in out.levels] == approx([1000, 1100, 550, 600, 585], rel=REL)
    assert [r["level_price"] for r in out.levels] == approx([1000, 1100, 1100, 1200, 1140], rel=REL)
    assert [r["level_net_total"] for r in out.levels] == approx(
        [1000, 1100, 715, 780, 754.65], rel=REL
    )


def test_a_first_dividend_arriving_later_never_changes_earlier_days(tmp_path: Path) -> None:
    # The market above fed day by day: Jan 2..5 are published before the dividend value of
    # Jan 8 exists; they stay exactly as published and Jan 8 follows the formula.
    rows = _split_then_dividend()
    store = open_store(tmp_path, [{"id": "a", "name": "a", "top_n": 1}])
    builder = IndexBuilder(store, store.calendar)
    ingest(store, tmp_path, [sec("A")], rows[:4], "part1")
    builder.build(["a"])
    published = stored_run(store, "a").levels
    ingest(store, tmp_path, [sec("A")], rows[4:], "part2")
    (result,) = builder.build(["a"])
    assert (result.mode, result.trading_days, result.restated_from) == ("incremental", 1, None)
    levels = stored_run(store, "a").levels
    assert levels[:4] == published
    assert levels[4]["level_total"] == approx(585, rel=REL)


# --------------------------------------------------------------------------- shares
@pytest.mark.parametrize("path", PATHS)
def test_a_split_day_without_a_count_carries_the_split_adjusted_count(
    path: str, tmp_path: Path
) -> None:
    # Market-cap weights, daily. A gives a count (100) on Jan 2 only; B gives 100 every day.
    # Jan 4: A splits 2:1 (close 10 -> 5) without a count: its shares in force are
    # 100 * 2 = 200, market cap 5 * 200 = 1000, not 500. B: close 10 -> cap 1000.
    # Weights after the close of Jan 4: A 1000 / 2000 = 0.5, B 0.5.
    # Jan 5 (no count, no split): A still 200 shares at 6 -> cap 1200; B 10 -> 1000.
    rows = [
        px("2024-01-02", "A", 10.0, adj_close=5.0),
        px("2024-01-02", "B", 10.0),
        px("2024-01-03", "A", 10.0, adj_close=5.0, shares=None),
        px("2024-01-03", "B", 10.0),
        px("2024-01-04", "A", 5.0, split_ratio=2.0, shares=None),
        px("2024-01-04", "B", 10.0),
        px("2024-01-05", "A", 6.0, shares=None),
        px("2024-01-05", "B", 10.0),
    ]
    out = run(path, [sec("A"), sec("B")], rows, {"top_n": 2, "weighting": "market_cap"}, tmp_path)
    assert out.weights("2024-01-04") == {"A": approx(0.5, rel=REL), "B": approx(0.5, rel=REL)}
    caps = {r["symbol"]: r["market_cap"] for r in out.composition(D("2024-01-05"))}
    assert caps == {"A": approx(1200, rel=REL), "B": approx(1000, rel=REL)}


# --------------------------------------------------------------------------- validity
def test_invalid_split_dividend_session_and_conflicts_are_quarantined(tmp_path: Path) -> None:
    rows = [
        px("2024-01-02", "A", 10.0),
        px("2024-01-02", "B", 20.0),
        px("2024-01-03", "A", 11.0, split_ratio=0.0),  # not > 0
        px("2024-01-03", "B", 21.0, split_ratio="nan"),  # not finite
        px("2024-01-04", "A", 12.0, dividend=-0.5),  # negative
        px("2024-01-04", "B", 22.0, dividend="inf"),  # not finite
        px("2024-01-06", "A", 12.0),  # a Saturday: not a session
        px("2024-01-05", "A", 12.0),
        px("2024-01-05", "A", 12.5),  # two different rows for one (date, symbol)
        px("2024-01-05", "B", 23.0),
    ]
    store = open_store(tmp_path, [])
    report = ingest(store, tmp_path, [sec("A"), sec("B")], rows)
    assert report.rejected_by_reason == {
        "prices:invalid_split_ratio": 2,
        "prices:invalid_dividend": 2,
        "prices:not_a_session": 1,
        "prices:conflicting_duplicate": 2,
    }
    assert report.rows_accepted == 3


@pytest.mark.parametrize("path", PATHS)
def test_an_invalid_row_is_a_halt(path: str, tmp_path: Path) -> None:
    # A's Jan 3 row has split_ratio 0: invalid, so A is halted that day (price carried, its
    # split never seen). Equal weight top 2 daily: units A 50, B 25; Jan 3: 500 + 550 = 1050,
    # and A, without a valid row, is not eligible at Jan 3's rebalance: B alone (units
    # 1050 / 22). Jan 4: B flat -> 1050; A is eligible again and re-enters at the close.
    rows = [
        px("2024-01-02", "A", 10.0),
        px("2024-01-02", "B", 20.0),
        px("2024-01-03", "A", 11.0, split_ratio=0.0),
        px("2024-01-03", "B", 22.0),
        px("2024-01-04", "A", 12.0),
        px("2024-01-04", "B", 22.0),
    ]
    out = run(path, [sec("A"), sec("B")], rows, {"top_n": 2}, tmp_path)
    assert [r["level"] for r in out.levels] == approx([1000, 1050, 1050], rel=REL)
    assert out.weights("2024-01-03") == {"B": approx(1.0, rel=REL)}
    assert out.changes == [(D("2024-01-03"), [], ["A"]), (D("2024-01-04"), ["A"], [])]


# --------------------------------------------------------------------------- filters
@pytest.mark.parametrize("path", PATHS)
def test_filters_ignore_case_and_surrounding_spaces(path: str, tmp_path: Path) -> None:
    secs = [sec("A", sector="Information Technology"), sec("B", sector="Energy")]
    rows = [px("2024-01-02", "A", 10.0), px("2024-01-02", "B", 20.0)]
    rows += [px("2024-01-03", "A", 11.0), px("2024-01-03", "B", 20.0)]
    universe = {"sectors": ["  information TECHNOLOGY "], "exchanges": [" xnas"]}
    out = run(path, secs, rows, {"top_n": 5, "universe": universe}, tmp_path)
    assert out.weights("2024-01-03") == {"A": 1.0}
    assert out.level("2024-01-03") == approx(1100, rel=REL)


@pytest.mark.parametrize("path", PATHS)
def test_min_price_and_min_market_cap_are_inclusive(path: str, tmp_path: Path) -> None:
    # A: close 10, cap 1000 (both exactly at the minimums): eligible. B: close 9.99 (below
    # min_price). C: close 20 but 49.9 shares: cap 998 (below min_market_cap).
    rows = [
        px("2024-01-02", "A", 10.0),
        px("2024-01-02", "B", 9.99, shares=1000.0),
        px("2024-01-02", "C", 20.0, shares=49.9),
    ]
    universe = {"min_price": 10.0, "min_market_cap": 1000.0}
    out = run(path, [sec(s) for s in "ABC"], rows, {"top_n": 3, "universe": universe}, tmp_path)
    assert out.weights("2024-01-02") == {"A": 1.0}


@pytest.mark.parametrize("path", PATHS)
def test_a_missing_volume_counts_as_zero_when_choosing_a_class(path: str, tmp_path: Path) -> None:
    # Company X: X1 without volume, X2 volume 5 -> X2 represents X. Company Y: Y1 without
    # volume, Y2 volume 0: a tie at 0, broken by symbol -> Y1.
    secs = [sec(s, company_id=s[0]) for s in ("X1", "X2", "Y1", "Y2")]
    rows = [
        px("2024-01-02", "X1", 10.0, volume=None),
        px("2024-01-02", "X2", 10.0, volume=5.0),
        px("2024-01-02", "Y1", 9.0, volume=None),
        px("2024-01-02", "Y2", 9.0, volume=0.0),
    ]
    out = run(path, secs, rows, {"top_n": 2, "rank_by": "company"}, tmp_path)
    assert sorted(out.weights("2024-01-02")) == ["X2", "Y1"]


# --------------------------------------------------------------------------- no eligible
@pytest.mark.parametrize("path", PATHS)
def test_a_later_rebalance_without_eligible_security_is_skipped_and_reported(
    path: str, tmp_path: Path
) -> None:
    # min_price 10: on Jan 3 both closes are below 10, nothing is eligible: the rebalance is
    # skipped, the units of Jan 2 carry on and the build warns naming the date.
    # Jan 3: mean(9/10 - 1, 18/20 - 1) = -10% -> 900. Jan 4: 11/9 and 22/18 -> 1100.
    rows = [
        px("2024-01-02", "A", 10.0),
        px("2024-01-02", "B", 20.0),
        px("2024-01-03", "A", 9.0),
        px("2024-01-03", "B", 9.5, shares=200.0),
        px("2024-01-04", "A", 11.0),
        px("2024-01-04", "B", 11.0, shares=200.0),
    ]
    # B's close falls below 10 too on Jan 3 (9.5), so its return is 9.5 / 20 - 1 (-52.5%):
    # Jan 3: mean(-10%, -52.5%) = -31.25% -> 687.5; Jan 4: units A 50, B 25:
    # 50 * 11 + 25 * 11 = 825.
    out = run(
        path, [sec("A"), sec("B")], rows, {"top_n": 2, "universe": {"min_price": 10}}, tmp_path
    )
    assert [r["level"] for r in out.levels] == approx([1000, 687.5, 825], rel=REL)
    assert [r["is_rebalance"] for r in out.levels] == [True, False, True]
    assert any(w.startswith("2024-01-03: no eligible security") for w in out.warnings)


# --------------------------------------------------------------------------- group cap
@pytest.mark.parametrize("path", PATHS)
def test_the_group_cap_fills_the_top_names_to_the_limit(path: str, tmp_path: Path) -> None:
    # caps 40, 30, 20, 10; cap .45, threshold .25, limit .60. w0 = .4, .3, .2, .1 (none
    # above .45); above .25: A + B = .7 > .6, m = 2. (a) bounds .45, .45, .25, .25: the fill
    # is w0 again: no. (b) 2 * .45 >= .6 and 2 * .25 >= .4: A, B pro rata to .6 -> 12/35,
    # 9/35; C, D pro rata to .4: C .267 -> .25, D .15; smallest top 9/35 = .257 >= .25: done.
    # (The cut-based algorithm of earlier releases gave A .4286, B .25, C .2143, D .1071.)
    caps = {"A": 40.0, "B": 30.0, "C": 20.0, "D": 10.0}
    rows = [
        px(day, s, 10.0, market_cap=c)
        for day in ("2024-01-02", "2024-01-03")
        for s, c in caps.items()
    ]
    definition = {
        "top_n": 4,
        "weighting": "capped_market_cap",
        "cap": 0.45,
        "group_cap": {"threshold": 0.25, "limit": 0.60},
    }
    out = run(path, [sec(s) for s in caps], rows, definition, tmp_path)
    expected = {"A": 12 / 35, "B": 9 / 35, "C": 0.25, "D": 0.15}
    assert out.weights("2024-01-02") == {s: approx(w, rel=REL) for s, w in expected.items()}
    assert out.warnings == []


@pytest.mark.parametrize("path", PATHS)
def test_a_group_cap_without_solution_keeps_single_capped_weights_and_warns(
    path: str, tmp_path: Path
) -> None:
    # UCITS 10/5/40 on 10 names (caps 10..1): w0 caps every name at .1, all above .05 (1 >
    # .4). m = 10: (a) w0 again; (b) needs 0 * .05 >= .6: no. m < 10: (a) bounds sum to
    # less than 1; (b) needs (10 - m) * .05 >= .6: no. No m works: w0, and a warning naming
    # the rebalance date (both daily rebalances).
    names = [f"S{k}" for k in range(10)]
    rows = [
        px(day, s, 10.0, market_cap=float(10 - k))
        for day in ("2024-01-02", "2024-01-03")
        for k, s in enumerate(names)
    ]
    definition = {
        "top_n": 10,
        "weighting": "capped_market_cap",
        "cap": 0.10,
        "group_cap": {"threshold": 0.05, "limit": 0.40},
    }
    out = run(path, [sec(s) for s in names], rows, definition, tmp_path)
    assert out.weights("2024-01-02") == {s: approx(0.1, rel=REL) for s in names}
    assert [w[:12] for w in out.warnings] == ["2024-01-02: ", "2024-01-03: "]
    assert all("group cap" in w for w in out.warnings)
