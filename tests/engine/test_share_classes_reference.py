"""Hand-computed checks of companies and share classes in tests/reference_engine.py.

METHODOLOGY.md Part 2, "Companies and share classes", with ``rank_by: company``: a company's
market cap is the sum of its eligible classes' market caps; companies rank by it (ties by
company key: the company_id, or the symbol when company_id is null); top_n / buffer select
companies; each selected company is represented by its eligible class with the highest volume
on the day (ties by symbol, NaN volume = 0); market-cap weights use the company total;
composition rows show the representative's symbol and own market cap with the company rank.

The markets use a constant close of 10 (so the level stays 1000 and units = 1000 * w / 10 =
100 * w). Market caps are in billions; "Jan 3" means 2024-01-03.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from typing import Any

import pandas as pd
import pytest

from engine_scenarios import (
    JAN,
    SECURITY_COLUMNS,
    Scenario,
    all_scenarios,
    bar,
    definition,
    prices_frame,
    security,
)
from reference_engine import ReferenceResult, assert_identical_results, company_key, reference_build

approx = pytest.approx
NAN = math.nan
JAN2, JAN3, JAN4, JAN5 = JAN


# --------------------------------------------------------------------------- helpers


def classes_market(
    name: str,
    classes: dict[str, str | None],
    days: dict[dt.date, dict[str, tuple[float, float]]],
    *,
    types: dict[str, str] | None = None,
    **overrides: Any,
) -> Scenario:
    """``classes``: {symbol: company_id or None}; ``days``: {day: {symbol: (mc bn, volume)}}."""
    types = types or {}
    securities = pd.DataFrame(
        [
            {**security(s, type_=types.get(s, "Common Stock")), "company_id": company}
            for s, company in classes.items()
        ],
        columns=[*SECURITY_COLUMNS, "company_id"],
    )
    rows = []
    for day, day_rows in days.items():
        for symbol, (mc, volume) in day_rows.items():
            rows.append({**bar(day, symbol, 10.0, mc=mc * 1e9), "volume": volume})
    overrides.setdefault("rank_by", "company")
    return Scenario(name, securities, prices_frame(rows), definition(**overrides))


def build(s: Scenario) -> ReferenceResult:
    return reference_build(s.securities, s.prices, s.definition)


def comp(res: ReferenceResult, day: dt.date, name: str) -> list[Any]:
    return list(res.compositions[day][name])


GOOG = {"GOOA": "GOOG", "GOOC": "GOOG", "BIG": None, "MID": None}


def two_classes_beat_single(**overrides: Any) -> Scenario:
    # Jan 2: GOOA 6 + GOOC 5 = GOOG 11 > BIG 10 > MID 9, although each GOOG class is smaller
    # than BIG and MID. Volumes: GOOC 300 > GOOA 100, so GOOC represents GOOG.
    day = {"GOOA": (6, 100), "GOOC": (5, 300), "BIG": (10, 50), "MID": (9, 50)}
    overrides.setdefault("top_n", 2)
    return classes_market("classes_two_beat_single", GOOG, {JAN2: day}, **overrides)


def volume_flip() -> Scenario:
    caps = {"GOOA": 6, "GOOC": 5, "BIG": 10, "MID": 9}
    volumes = {
        JAN2: {"GOOA": 100, "GOOC": 300},  # GOOC
        JAN3: {"GOOA": 200, "GOOC": 300},  # GOOC
        JAN4: {"GOOA": 500, "GOOC": 300},  # flips to GOOA
        JAN5: {"GOOA": NAN, "GOOC": 0},  # NaN = 0: tie at 0, by symbol -> GOOA
    }
    days = {
        day: {s: (caps[s], day_volumes.get(s, 50)) for s in caps}
        for day, day_volumes in volumes.items()
    }
    return classes_market("classes_volume_flip", GOOG, days, top_n=2)


def company_key_tie() -> Scenario:
    # Three companies of 10 each: key "ALPHA" (class ZZZ, 10), "MMM" (null company_id: key =
    # symbol, 10), "ZETA" (ZA 4 + ZB 6 = 10). Keys ALPHA < MMM < ZETA: ranks 1, 2, 3.
    classes = {"ZZZ": "ALPHA", "MMM": None, "ZA": "ZETA", "ZB": "ZETA"}
    day = {"ZZZ": (10, 1), "MMM": (10, 1), "ZA": (4, 1), "ZB": (6, 2)}
    return classes_market("classes_company_key_tie", classes, {JAN2: day}, top_n=2)


def ineligible_classes() -> Scenario:
    # BRK: BRKA (common, 6) + BRKB (ETF, 6; filtered out by types): BRK = 6, not 12.
    # DUO: DUOA 5 + DUOB 5; DUOB has no row on Jan 3. SOLO: 8.
    classes = {"BRKA": "BRK", "BRKB": "BRK", "SOLO": None, "DUOA": "DUO", "DUOB": "DUO"}
    days = {
        JAN2: {
            "BRKA": (6, 10),
            "BRKB": (6, 1000),
            "SOLO": (8, 10),
            "DUOA": (5, 100),
            "DUOB": (5, 200),
        },
        JAN3: {"BRKA": (6, 10), "BRKB": (6, 1000), "SOLO": (8, 10), "DUOA": (5, 100)},
    }
    return classes_market(
        "classes_ineligible",
        classes,
        days,
        types={"BRKB": "ETF"},
        top_n=2,
        universe={"types": ["Common Stock"]},
    )


def buffered_companies() -> Scenario:
    # Jan 2: GOOG 11 (GOOC by volume), BIG 10, MID 9 -> GOOG, BIG.
    # Jan 3: GOOA 4 + GOOC 4 = GOOG 8; volumes flip to GOOA. Ranks BIG 1, MID 2, GOOG 3.
    jan2 = {"GOOA": (6, 100), "GOOC": (5, 300), "BIG": (10, 50), "MID": (9, 50)}
    jan3 = {"GOOA": (4, 500), "GOOC": (4, 300), "BIG": (10, 50), "MID": (9, 50)}
    return classes_market(
        "classes_buffered",
        GOOG,
        {JAN2: jan2, JAN3: jan3},
        top_n=2,
        buffer={"entry_rank": 1, "exit_rank": 3},
    )


def share_class_scenarios() -> list[Scenario]:
    """The hand-made share-class markets of this module (also run through the engine)."""
    capped = two_classes_beat_single(top_n=3, weighting="capped_market_cap", cap=0.35)
    capped.name = "classes_capped"
    weighted = two_classes_beat_single(weighting="market_cap")
    weighted.name = "classes_market_cap"
    return [
        two_classes_beat_single(),
        weighted,
        capped,
        volume_flip(),
        company_key_tie(),
        ineligible_classes(),
        buffered_companies(),
    ]


# --------------------------------------------------------------------------- company key


def test_company_key() -> None:
    assert company_key("A", {"company_id": "C1"}) == "C1"
    assert company_key("A", {"company_id": None}) == "A"
    assert company_key("A", {"company_id": NAN}) == "A"
    assert company_key("A", {"company_id": pd.NA}) == "A"
    assert company_key("A", {}) == "A"  # no column
    assert company_key("A", None) == "A"


# --------------------------------------------------------------------------- company cap


def test_two_classes_enter_on_the_company_sum() -> None:
    res = build(two_classes_beat_single(top_n=1))
    # GOOG = 6 + 5 = 11 > BIG 10: GOOG is rank 1, represented by GOOC (volume 300 > 100).
    assert comp(res, JAN2, "symbol") == ["GOOC"]
    assert comp(res, JAN2, "rank") == [1]
    assert comp(res, JAN2, "market_cap") == [5e9]  # the representative's own market cap
    assert comp(res, JAN2, "weight") == [1.0]
    assert comp(res, JAN2, "units") == approx([100.0], rel=1e-12)  # 1000 * 1 / 10


def test_two_classes_equal_weight_ranks() -> None:
    res = build(two_classes_beat_single())
    # Companies: GOOG 11 (1), BIG 10 (2), MID 9 (3); top 2 equal weighted: 1/2 each,
    # units = 1000 * 0.5 / 10 = 50.
    assert comp(res, JAN2, "symbol") == ["GOOC", "BIG"]
    assert comp(res, JAN2, "rank") == [1, 2]
    assert comp(res, JAN2, "market_cap") == [5e9, 10e9]
    assert comp(res, JAN2, "weight") == approx([0.5, 0.5], rel=1e-12)
    assert comp(res, JAN2, "units") == approx([50.0, 50.0], rel=1e-12)


def test_rank_by_security_on_the_same_market() -> None:
    s = two_classes_beat_single()
    s.definition["rank_by"] = "security"
    res = build(s)
    # Per class: BIG 10, MID 9, GOOA 6, GOOC 5: top 2 = BIG, MID.
    assert comp(res, JAN2, "symbol") == ["BIG", "MID"]
    assert comp(res, JAN2, "rank") == [1, 2]


# --------------------------------------------------------------------------- representative


def test_representative_by_volume_and_switch() -> None:
    res = build(volume_flip())
    # Jan 2, Jan 3: GOOC (300 > 100, 300 > 200) with BIG.
    assert comp(res, JAN2, "symbol") == ["GOOC", "BIG"]
    assert comp(res, JAN3, "symbol") == ["GOOC", "BIG"]
    # Jan 4: GOOA 500 > GOOC 300: GOOA represents GOOG, still rank 1 (company cap 11).
    assert comp(res, JAN4, "symbol") == ["GOOA", "BIG"]
    assert comp(res, JAN4, "rank") == [1, 2]
    assert comp(res, JAN4, "market_cap") == [6e9, 10e9]
    # Jan 5: GOOA NaN (= 0) vs GOOC 0: tie, by symbol -> GOOA stays (no change).
    assert comp(res, JAN5, "symbol") == ["GOOA", "BIG"]
    # The switch is a change by symbol: GOOA entered, GOOC exited on Jan 4 only.
    assert res.changes == [(JAN4, ["GOOA"], ["GOOC"])]
    # Turnover Jan 4: old {GOOC .5, BIG .5}, new {GOOA .5, BIG .5}:
    # 0.5 * (|.5 - 0| + |0 - .5| + |.5 - .5|) = 0.5. Jan 3 and Jan 5: 0.
    assert list(res.levels["turnover"]) == approx([0.0, 0.0, 0.5, 0.0], abs=1e-12)
    assert list(res.levels["level"]) == approx([1000.0] * 4, rel=1e-12)


# --------------------------------------------------------------------------- ties


def test_company_cap_tie_broken_by_company_key() -> None:
    res = build(company_key_tie())
    # ALPHA (ZZZ) 10, MMM 10, ZETA (4 + 6) 10: by key ALPHA < MMM < ZETA. Top 2 = ZZZ, MMM,
    # although ZZZ is the last symbol alphabetically.
    assert comp(res, JAN2, "symbol") == ["ZZZ", "MMM"]
    assert comp(res, JAN2, "rank") == [1, 2]
    s = company_key_tie()
    s.definition["top_n"] = 3
    res = build(s)
    # ZETA rank 3, represented by ZB (volume 2 > 1), own market cap 6.
    assert comp(res, JAN2, "symbol") == ["ZZZ", "MMM", "ZB"]
    assert comp(res, JAN2, "rank") == [1, 2, 3]
    assert comp(res, JAN2, "market_cap") == [10e9, 10e9, 6e9]


# --------------------------------------------------------------------------- eligibility


def test_ineligible_classes_do_not_count() -> None:
    res = build(ineligible_classes())
    # Jan 2: DUO 5 + 5 = 10 (1), SOLO 8 (2), BRK 6 (3): BRKB is an ETF, filtered out, so BRK
    # is 6, not 12. DUO is represented by DUOB (volume 200 > 100).
    assert comp(res, JAN2, "symbol") == ["DUOB", "SOLO"]
    assert comp(res, JAN2, "rank") == [1, 2]
    # Jan 3: DUOB has no row: DUO = 5 (3); SOLO 8 (1); BRK 6 (2), represented by BRKA although
    # BRKB trades more (BRKB is not eligible).
    assert comp(res, JAN3, "symbol") == ["SOLO", "BRKA"]
    assert comp(res, JAN3, "rank") == [1, 2]
    assert res.changes == [(JAN3, ["BRKA"], ["DUOB"])]


# --------------------------------------------------------------------------- weights


def test_market_cap_weights_use_company_total() -> None:
    res = build(two_classes_beat_single(weighting="market_cap"))
    # GOOG 11, BIG 10: weights 11/21 and 10/21 (not GOOC's own 5 / 15).
    assert comp(res, JAN2, "symbol") == ["GOOC", "BIG"]
    assert comp(res, JAN2, "weight") == approx([11 / 21, 10 / 21], rel=1e-12)
    # units = 1000 * w / 10
    assert comp(res, JAN2, "units") == approx([1100 / 21, 1000 / 21], rel=1e-12)
    assert comp(res, JAN2, "market_cap") == [5e9, 10e9]


def test_capped_weights_use_company_total() -> None:
    res = build(two_classes_beat_single(top_n=3, weighting="capped_market_cap", cap=0.35))
    # GOOG 11, BIG 10, MID 9 (total 30): GOOG 11/30 = 0.3667 > 0.35 -> 0.35; the other 0.65
    # goes 10:9 -> BIG 0.65 * 10/19, MID 0.65 * 9/19 (both < 0.35).
    assert comp(res, JAN2, "symbol") == ["GOOC", "BIG", "MID"]
    expected = [0.35, 0.65 * 10 / 19, 0.65 * 9 / 19]
    assert comp(res, JAN2, "weight") == approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- buffer


def test_buffer_keeps_companies_across_a_representative_switch() -> None:
    res = build(buffered_companies())
    assert comp(res, JAN2, "symbol") == ["GOOC", "BIG"]
    # Jan 3 ranks: BIG 10 (1), MID 9 (2), GOOG 8 (3). C(prev) = {GOOG, BIG} (companies).
    # keep = BIG (1), GOOG (3 <= exit 3); enter = non-members with rank <= 1: none (MID is 2).
    # GOOG now represented by GOOA (volume 500 > 300), shown with the company rank 3.
    assert comp(res, JAN3, "symbol") == ["BIG", "GOOA"]
    assert comp(res, JAN3, "rank") == [1, 3]
    assert res.changes == [(JAN3, ["GOOA"], ["GOOC"])]


# --------------------------------------------------------------------------- validation


def test_unknown_rank_by_raises() -> None:
    s = two_classes_beat_single()
    s.definition["rank_by"] = "issuer"
    with pytest.raises(ValueError):
        build(s)


# --------------------------------------------------------------------------- Part 1 unchanged


def with_companies(securities: pd.DataFrame) -> pd.DataFrame:
    """Pairs of consecutive symbols share a company."""
    out = securities.copy()
    out["company_id"] = [f"CO{i // 2}" for i in range(len(out))]
    return out


@pytest.mark.parametrize("s", all_scenarios(), ids=lambda s: s.name)
def test_rank_by_security_is_part_one(s: Scenario) -> None:
    explicit = copy.deepcopy(s.definition)
    explicit["rank_by"] = "security"
    inputs = [(s.securities, explicit), (with_companies(s.securities), s.definition)]
    if s.raises:
        for securities, definition_ in inputs:
            with pytest.raises(ValueError):
                reference_build(securities, s.prices, definition_)
        return
    plain = reference_build(s.securities, s.prices, s.definition)
    for securities, definition_ in inputs:
        assert_identical_results(reference_build(securities, s.prices, definition_), plain)


@pytest.mark.parametrize("s", all_scenarios(), ids=lambda s: s.name)
def test_rank_by_company_without_company_ids_is_part_one(s: Scenario) -> None:
    # Every security its own company (key = symbol): the company ranking is the security
    # ranking and each company's only class represents it.
    by_company = copy.deepcopy(s.definition)
    by_company["rank_by"] = "company"
    if s.raises:
        with pytest.raises(ValueError):
            reference_build(s.securities, s.prices, by_company)
        return
    plain = reference_build(s.securities, s.prices, s.definition)
    assert_identical_results(reference_build(s.securities, s.prices, by_company), plain)
