"""Reference implementation of METHODOLOGY.md, Part 1 (test-side oracle), plus Part 2 rules.

Part 2 rules implemented here (all optional; absent, the results are exactly Part 1):

* ``buffer: {entry_rank, exit_rank}`` (selection buffer), see :func:`buffered_selection`.
* ``group_cap: {threshold, limit}`` with ``capped_market_cap`` (aggregate capping), see
  :func:`group_capped_weights`.
* Return variants: optional bar columns ``dividend`` / ``split_ratio`` and definition fields
  ``return_type`` (``price`` | ``total`` | ``net_total``, default ``total``) and ``tax``
  (default 0.30), see :func:`_return_prices`.
* ``rank_by: company`` (companies and share classes), see :func:`_rank_companies`.
* ``effective_lag`` (reference date and effective date), see the last convention below and
  :class:`PendingSelection`.

This module is deliberately naive: plain Python, one trading day at a time, dicts and loops,
no vectorisation. Every step is meant to be checked line by line against
/work/shared/METHODOLOGY.md. It is only used by the tests, never by the product.

Conventions (the contract's rules, and the project's where the contract is silent):

* Valid rows (METHODOLOGY "Inputs"), see :func:`_read_bars`. Rows are keyed by (date,
  symbol). A key given more than once: exact copies (every column equal, null == null)
  collapse into one row; copies that differ are all invalid. A row is valid when its date is
  an XNYS session (:func:`xnys_sessions`, also when a ``next_session`` is injected), ``close``
  is finite and > 0, its market cap is finite and > 0, a given ``split_ratio`` is finite and
  > 0 and a given ``dividend`` finite and >= 0 (null = NaN / None: not given; a missing
  column is all null). Invalid rows are ignored: they give no share count, and their split
  and dividend are not seen. Trading days are the distinct dates carrying at least one valid
  row (any symbol, whether or not it passes the universe filters).
* Shares and market cap: each symbol's rows are processed in date order (validity needs the
  market cap and only valid rows give counts and splits). ``shares_outstanding`` is "given"
  when finite. A row's shares are its own count when given; else the shares in force: the
  count of the symbol's latest earlier valid row that gave one, times the split ratio of
  every valid row after it, this row included (so a 2:1 split on a row without a count
  doubles the count carried in); else none. Market cap = ``market_cap`` when finite, else
  ``close * shares``; with no shares either the row has no market cap and is invalid.
* P = ``adj_close`` when finite and > 0 on that row, else ``close``.
* ``min_price`` compares to ``close`` (unadjusted) and ``min_market_cap`` to the market cap,
  both inclusive (>=). String filters (sectors, exchanges, types) match case-insensitively,
  ignoring surrounding whitespace on both sides (the definition's values and the
  securities'); a filter that is None (or an empty list) does not filter. A symbol that has
  bars but no row in the securities table is never eligible.
* Schedule, see :func:`is_rebalance_day`. The base date is always a rebalance. Daily: every
  trading day. Weekly (ISO week), monthly and quarterly: the period ends at the close of its
  last exchange session, a session whose next exchange session (XNYS calendar, or the
  injected ``next_session``; not the next day in the data) falls in a later period
  (:func:`is_scheduled_rebalance`). When that session is not a trading day of the data, the
  rebalance is postponed to the next trading day (never moved back): trading day t after the
  base date is a rebalance iff some period-end session e has t_prev < e <= t, t_prev = the
  previous trading day of the data. Several period ends missed before one trading day give
  one rebalance.
* No eligible security at a rebalance: at the base date ``ValueError``; later the rebalance
  is skipped (constituents, units and weights stay unchanged), the date goes to ``errors``,
  the day is not flagged ``is_rebalance``, its turnover is NaN and the ranks shown stay those
  of the last rebalance that happened (with ``effective_lag``, unless the day is the
  effective date of an earlier selection).
* capped_market_cap: if n * cap < 1, with n the number of selected constituents, equal
  weights; otherwise iterative capping with tolerance 1e-12.
* Selection buffer: the previous constituents C(prev) are those of the latest successful
  selection (by reference date), even if it has not taken effect yet (``effective_lag``);
  with lag 0 they are the constituents in force before the close of the rebalance date.
  Ranks are among all eligible securities, so a kept member can show a rank > top_n. No
  buffer key means plain top N; an explicit buffer (even entry = exit = top_n) goes through
  :func:`buffered_selection`.
* Aggregate capping: the contract's pinned algorithm, see :func:`group_capped_weights`. When
  no m works, the single-name capped weights w0 are used and the reference date goes to
  ``group_cap_fallbacks`` (the build's warning).
* ``n_constituents`` in the levels is the size of the composition in force after the close
  of that day (the same set as the day's composition).
* Turnover is NaN on days that are not rebalances; 0 on the base date; on a later rebalance
  0.5 * sum |w_target - w_drifted| over the union of old and new constituents.
* Return variants, per security and point in time (see :func:`_return_prices`). A security's
  dividend formulas are in force from its first valid row that gives a ``dividend`` value
  (0 included) on, that row included; a missing value counts as 0 after it. Each variant v
  has a per-security return price RI_v chained over the security's valid rows (t' = its
  previous valid row; halted days carry the last RI forward like Part 1 prices); on its
  first valid row RI_price = close and RI_total = RI_net = close when the dividend formulas
  are in force, else P. With s = split_ratio (null -> 1) and d = dividend (null -> 0):

  - always: RI_price(t) = RI_price(t') * close(t) * s / close(t');
  - dividend formulas in force at t: RI_total(t) = RI_total(t') * (close(t) * s + d) /
    close(t'), RI_net(t) = RI_net(t') * (close(t) * s + (1 - tax) * d) / close(t');
  - before (or never): RI_total(t) = P(t) exactly (the ratio of P, no products, so Part 1 is
    reproduced bit for bit; splits without dividends are not seen by the total return, only
    by adj_close), and RI_net(t) = RI_net(t') * (1 + r_p + (1 - tax) * (r_t - r_p)) with
    r_p = close(t) * s / close(t') - 1 and r_t = P(t) / P(t') - 1.

  Selection, ranks and target weights are Part 1's. Each variant is an index of its own:
  units q_v,i = L_v(r) * w_i(r) / RI_v,i(r), all starting at base_value. The headline variant
  (``return_type``) gives the levels, daily returns, turnover (its drifted weights) and the
  compositions. Compositions quote money: price(t) = real(e) * RI(t) / RI(e) and units =
  q * RI(e) / real(e), e the effective date of the composition in force, real = the close of
  the security's last valid row on or before e when its dividend formulas are in force
  there, else its P (so Part 1 outputs are unchanged: the anchor is exactly 1).
  ``variant_levels`` holds all three level series.
* Companies and share classes (``rank_by``: ``security`` (default, Part 1) | ``company``), see
  :func:`_rank_companies`. The securities table may carry ``company_id`` (missing column or
  null: the security is its own company, key = its symbol; else key = the company_id string);
  bars may carry ``volume`` (missing or NaN: 0). On a rebalance with ``rank_by: company``:
  company cap = sum of the market caps of its eligible classes (Part 1 eligibility; classes
  summed in symbol order); companies with an eligible class rank by company cap descending,
  ties by company key ascending; top_n / buffer select companies (C(prev) = the companies
  selected at the last successful rebalance); each selected company is represented by its
  eligible class with the highest volume on the day (ties by symbol ascending). Weights use
  the company cap as the market cap input (aggregate capping orders names by company rank).
  Compositions: symbol = representative, rank = company rank, market_cap = the
  representative's own market cap; changes compare symbols.
* Reference date and effective date (the project's rules): ``effective_lag`` is an int >= 0
  (absent / None: 0; bools, floats, strings and negatives raise ``ValueError``). With lag 0
  the results are exactly those without the key.

  1. Reference dates t are the rebalance dates above (the base date and the scheduled or
     postponed rebalances). Selection (buffer and company ranking included), ranks and
     target weights w_i(t) are computed at t with the data of t, as with lag 0. C(prev) for
     the buffer is the latest successful selection by reference date, in effect or not; for
     ``rank_by: company`` the companies of that selection. A reference date with no eligible
     security goes to ``errors`` and schedules nothing.
  2. The selection takes effect at the close of the trading day ``effective_lag`` trading
     days after t, counted in the trading days of the data (index of t in the days + lag).
     The base date's selection takes effect at once (the lag is ignored there).
     Effective dates are strictly increasing because reference dates are, so selections in
     flight (several at once when the lag is longer than the gap between reference dates)
     take effect in reference-date order, at most one per day.
  3. At the close of the effective date e the holdings reset: per variant v,
     q_v,i = L_v(e) * w_i(t) / RI_v,i(e), RI carried forward: a selected security without a
     valid row on e (halted, or delisted after t) enters at its last return price, like a
     Part 1 halt, and can only leave at a later effective date. Eligibility is not checked
     again on e. The composition anchor is real(e) / RI(e) as above.
  4. On e: ``is_rebalance`` True (the flag marks effective dates), turnover =
     0.5 * sum |w_i(t) - drifted w_i(e)| over the union (0 on the base date), and a change
     entry (e, entered = C(t) minus the constituents in force before the close of e, exited =
     the reverse) when they differ. A reference date that is not also an effective date gets
     no flag, NaN turnover and no change entry.
  5. Compositions after the close of d: the constituents of the latest selection whose
     effective date <= d, with ``rank`` = its rank at its reference date; weight, price,
     units and market_cap (last valid market cap) as with lag 0.
  6. Selections whose effective date falls after the last day of the data are ``pending``
     (:class:`PendingSelection`, all of them, in reference-date order): reference date,
     effective_offset (trading days after the last data day, counted on in exchange
     sessions: 1 = the next session) and the constituents in rank order with rank and market
     cap at t and target weight. The pro-forma view is :attr:`ReferenceResult.announced`: the
     latest pending selection (latest reference date), or None. ``current_weights`` are the
     weights in force after the last close; the expected one-way turnover of every pending
     selection is measured against them (:func:`expected_turnover`), also for a second one in
     flight.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

LEVEL_COLUMNS = ["date", "level", "daily_return", "is_rebalance", "turnover", "n_constituents"]
COMPOSITION_COLUMNS = ["symbol", "rank", "weight", "market_cap", "price", "units", "sector"]
WEIGHTINGS = ("equal", "market_cap", "capped_market_cap", "sqrt_market_cap")
REBALANCES = ("daily", "weekly", "monthly", "quarterly")
CAP_TOLERANCE = 1e-12
RETURN_TYPES = ("price", "total", "net_total")
RANK_BY = ("security", "company")
DEFAULT_RETURN_TYPE = "total"
DEFAULT_TAX = 0.30


PENDING_COLUMNS = ["symbol", "rank", "weight", "market_cap", "sector"]


@dataclass
class PendingSelection:
    """A selection made on ``reference_date`` that takes effect after the last day of the data.

    ``effective_offset``: how many trading days after the last data day it takes effect (1 =
    the next session). ``constituents``: columns :data:`PENDING_COLUMNS` in rank order, with
    the target weights w_i(t) and the market caps of the reference date.
    """

    reference_date: dt.date
    effective_offset: int
    constituents: pd.DataFrame

    def expected_turnover(self, current_weights: dict[str, float]) -> float:
        return expected_turnover(self, current_weights)


def expected_turnover(pending: PendingSelection, current_weights: dict[str, float]) -> float:
    """Expected one-way turnover: 0.5 * sum |w_target - w_current| over the union of names.

    ``current_weights`` are the weights in force after the last close
    (:attr:`ReferenceResult.current_weights`), also for a second selection in flight.
    """
    target = dict(zip(pending.constituents["symbol"], pending.constituents["weight"], strict=True))
    total_change = 0.0
    for symbol in sorted(set(target) | set(current_weights)):
        total_change += abs(target.get(symbol, 0.0) - current_weights.get(symbol, 0.0))
    return 0.5 * total_change


@dataclass
class ReferenceResult:
    levels: pd.DataFrame
    compositions: dict[dt.date, pd.DataFrame]
    changes: list[tuple[dt.date, list[str], list[str]]]
    errors: list[dt.date] = field(default_factory=list)
    # {"price" | "total" | "net_total": levels aligned with the rows of ``levels``}
    variant_levels: dict[str, list[float]] = field(default_factory=dict)
    # effective_lag: selections made but not yet in effect at the end of the data, in
    # reference-date order (always empty with lag 0)
    pending: list[PendingSelection] = field(default_factory=list)
    # {symbol: weight} in force after the last close (the last composition's weights)
    current_weights: dict[str, float] = field(default_factory=dict)
    # group_cap: reference dates where no m of the pinned algorithm worked and the
    # single-name capped weights w0 were used (the build's warning), in date order
    group_cap_fallbacks: list[dt.date] = field(default_factory=list)

    @property
    def announced(self) -> PendingSelection | None:
        """The pro-forma view: the latest pending selection (latest reference date), or None.

        With several pending it is the index once every announced change is in force.
        """
        if not self.pending:
            return None
        return max(self.pending, key=lambda p: p.reference_date)


def assert_identical_results(a: ReferenceResult, b: ReferenceResult) -> None:
    """Two reference results are the same bit for bit (levels, compositions, changes,
    errors, return variants, pending selections, the weights in force and the group-cap
    fallback dates)."""
    pd.testing.assert_frame_equal(a.levels, b.levels, check_exact=True)
    assert list(a.compositions) == list(b.compositions)
    for day in a.compositions:
        pd.testing.assert_frame_equal(a.compositions[day], b.compositions[day], check_exact=True)
    assert a.changes == b.changes
    assert a.errors == b.errors
    assert a.variant_levels.keys() == b.variant_levels.keys()
    for variant in a.variant_levels:
        assert np.array_equal(a.variant_levels[variant], b.variant_levels[variant], equal_nan=True)
    assert a.pending == b.pending
    assert a.current_weights == b.current_weights
    assert a.group_cap_fallbacks == b.group_cap_fallbacks


@dataclass
class _Selection:
    """A successful selection at a reference date, waiting for (or past) its effective date."""

    reference_date: dt.date
    effective_index: int  # index in ``days`` of the effective date (may be past the data)
    selected: list[str]  # symbols in rank order
    weights: dict[str, float]  # target weights w_i(t)
    ranks: dict[str, int]  # rank of every eligible symbol (or representative) at t
    market_caps: dict[str, float]  # each selected symbol's own market cap at t


@dataclass
class _Bar:
    close: float
    price: float  # P: adj_close if finite and > 0, else close
    market_cap: float
    dividend: float = math.nan  # NaN: null (no dividend column, or none that day)
    split_ratio: float = math.nan  # NaN: null (1)
    volume: float = 0.0  # missing / NaN: 0


# --------------------------------------------------------------------------- calendar


@lru_cache(maxsize=1)
def xnys_sessions() -> tuple[dt.date, ...]:
    """All XNYS sessions 1990..2040 as ``datetime.date`` (sorted)."""
    import exchange_calendars as xc

    with warnings.catch_warnings():  # exchange_calendars vs pandas 3 deprecation noise
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        cal = xc.get_calendar("XNYS", start="1990-01-01", end="2040-12-31")
    return tuple(ts.date() for ts in cal.sessions)


def xnys_next_session(day: dt.date) -> dt.date:
    """The first XNYS session strictly after ``day`` (``day`` need not be a session)."""
    sessions = xnys_sessions()
    i = bisect.bisect_right(sessions, day)
    if i == len(sessions):
        raise ValueError(f"no XNYS session after {day}")
    return sessions[i]


def period_key(day: dt.date, rebalance: str) -> tuple[int, int]:
    if rebalance == "weekly":
        iso = day.isocalendar()
        return (iso.year, iso.week)
    if rebalance == "monthly":
        return (day.year, day.month)
    if rebalance == "quarterly":
        return (day.year, (day.month - 1) // 3 + 1)
    raise ValueError(f"no period for rebalance={rebalance!r}")


def is_scheduled_rebalance(
    day: dt.date, rebalance: str, next_session: Callable[[dt.date], dt.date]
) -> bool:
    """``day`` is itself a period end: daily, every day; otherwise the next exchange session
    is in a later period (the session closing the ISO week / month / quarter).

    A trading day whose period end is missing from the data is a (postponed) rebalance too:
    see :func:`is_rebalance_day`.
    """
    if rebalance == "daily":
        return True
    return period_key(next_session(day), rebalance) > period_key(day, rebalance)


def period_end_sessions(
    after: dt.date, upto: dt.date, rebalance: str, next_session: Callable[[dt.date], dt.date]
) -> list[dt.date]:
    """The period-end exchange sessions e with ``after`` < e <= ``upto``, walking the sessions
    of the calendar one at a time (``next_session``)."""
    ends = []
    session = next_session(after)
    while session <= upto:
        if is_scheduled_rebalance(session, rebalance, next_session):
            ends.append(session)
        session = next_session(session)
    return ends


def is_rebalance_day(
    day: dt.date,
    previous_day: dt.date,
    rebalance: str,
    next_session: Callable[[dt.date], dt.date],
) -> bool:
    """Trading day ``day`` (after the base date) is a scheduled rebalance.

    ``previous_day``: the previous trading day of the data. Daily: always. Otherwise iff some
    period-end session e has ``previous_day`` < e <= ``day``: the period's own last session
    (e = day), or a missed one whose rebalance is postponed to this first trading day after
    it (several missed ends give one rebalance).
    """
    if rebalance == "daily":
        return True
    return bool(period_end_sessions(previous_day, day, rebalance, next_session))


# --------------------------------------------------------------------------- input helpers


def _as_date(value: Any) -> dt.date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return pd.Timestamp(value).date()


def _number(value: Any) -> float:
    """float(value), or NaN for None / NA / anything not numeric."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@lru_cache(maxsize=1)
def _xnys_session_set() -> frozenset[dt.date]:
    return frozenset(xnys_sessions())


def _is_null(value: Any) -> bool:
    """None, NaN, pd.NA, NaT: not given."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _same_value(a: Any, b: Any) -> bool:
    """Equal values, null == null (for telling exact copies of a row)."""
    if _is_null(a) or _is_null(b):
        return _is_null(a) and _is_null(b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two rows of one (date, symbol) are exact copies: every other column equal."""
    columns = (set(a) | set(b)) - {"date", "symbol"}
    return all(_same_value(a.get(c), b.get(c)) for c in sorted(columns))


def _valid_on_its_own(row: dict[str, Any], day: dt.date, sessions: frozenset[dt.date]) -> bool:
    """The checks a row passes or fails alone (everything but the shares in force)."""
    market_cap = _number(row.get("market_cap"))
    split_ratio = _number(row.get("split_ratio"))
    dividend = _number(row.get("dividend"))
    return (
        day in sessions
        and _finite_positive(_number(row.get("close")))
        and (math.isnan(market_cap) or _finite_positive(market_cap))
        and (math.isnan(split_ratio) or _finite_positive(split_ratio))
        and (math.isnan(dividend) or (math.isfinite(dividend) and dividend >= 0))
    )


def _read_bars(prices: pd.DataFrame) -> dict[dt.date, dict[str, _Bar]]:
    """{date: {symbol: bar}} keeping valid rows only (METHODOLOGY "Inputs").

    1. A row that fails a check of its own (not a session, close, a given market cap, split
       ratio or dividend out of range) is invalid, as ingestion quarantines it for that
       reason. The others are grouped by (date, symbol): exact copies collapse into one
       row; copies that differ are all invalid (``conflicting_duplicate``: dropped here,
       they give nothing).
    2. Each symbol's rows in date order: the row's shares (its own finite count, else the
       shares in force times its split ratio), its market cap (``market_cap`` when finite,
       else close * shares), its validity; a valid row updates the shares in force.
    """
    sessions = _xnys_session_set()
    copies: dict[tuple[dt.date, str], list[dict[str, Any]]] = {}
    for row in prices.to_dict("records"):
        day = _as_date(row["date"])
        if _valid_on_its_own(row, day, sessions):
            copies.setdefault((day, str(row["symbol"])), []).append(row)
    by_symbol: dict[str, list[tuple[dt.date, dict[str, Any]]]] = {}
    for (day, symbol), rows in copies.items():
        if all(_same_row(rows[0], other) for other in rows[1:]):
            by_symbol.setdefault(symbol, []).append((day, rows[0]))
        # else: copies that differ, all invalid

    bars: dict[dt.date, dict[str, _Bar]] = {}
    for symbol in sorted(by_symbol):
        in_force: float | None = None  # shares in force after the last valid row (or none)
        for day, row in sorted(by_symbol[symbol], key=lambda pair: pair[0]):
            close = _number(row.get("close"))
            split_ratio = _number(row.get("split_ratio"))  # NaN: not given
            dividend = _number(row.get("dividend"))  # NaN: not given
            count = _number(row.get("shares_outstanding"))
            split = 1.0 if math.isnan(split_ratio) else split_ratio
            if math.isfinite(count):
                shares = count  # the row's own count
            elif in_force is not None:
                shares = in_force * split  # the count carried in, times this row's split
            else:
                shares = math.nan  # no count given, none in force
            market_cap = _number(row.get("market_cap"))
            if not math.isfinite(market_cap):
                market_cap = close * shares
            valid = (
                day in sessions
                and _finite_positive(close)
                and _finite_positive(market_cap)
                and (math.isnan(split_ratio) or _finite_positive(split_ratio))
                and (math.isnan(dividend) or (math.isfinite(dividend) and dividend >= 0))
            )
            if not valid:
                continue  # ignored: no count, its split and dividend are not seen
            if math.isfinite(count):
                in_force = count
            elif in_force is not None:
                in_force = shares
            volume = _number(row.get("volume"))
            adj_close = _number(row.get("adj_close"))
            bars.setdefault(day, {})[symbol] = _Bar(
                close=close,
                price=adj_close if _finite_positive(adj_close) else close,
                market_cap=market_cap,
                dividend=dividend,
                split_ratio=split_ratio,
                volume=volume if math.isfinite(volume) else 0.0,
            )
    return bars


def _return_prices(
    bar: _Bar,
    previous: _Bar | None,
    previous_ri: dict[str, float] | None,
    dividends: bool,
    tax: float,
) -> dict[str, float]:
    """RI_v for one security on one valid row; ``previous`` is its previous valid row.

    ``dividends``: the security's dividend formulas are in force on this row (it is, or
    follows, the security's first valid row that gives a dividend value).
    """
    if previous is None or previous_ri is None:  # first valid row: no return yet
        start = bar.close if dividends else bar.price
        return {"price": bar.close, "total": start, "net_total": start}
    s = bar.split_ratio if math.isfinite(bar.split_ratio) else 1.0
    price = previous_ri["price"] * (bar.close * s) / previous.close
    if dividends:
        d = bar.dividend if math.isfinite(bar.dividend) else 0.0
        return {
            "price": price,
            "total": previous_ri["total"] * (bar.close * s + d) / previous.close,
            "net_total": previous_ri["net_total"]
            * (bar.close * s + (1.0 - tax) * d)
            / previous.close,
        }
    # Before the first dividend value (or never): total = the ratio of P, net inferred.
    r_p = bar.close * s / previous.close - 1.0
    r_t = bar.price / previous.price - 1.0
    r_net = r_p + (1.0 - tax) * (r_t - r_p)
    return {
        "price": price,
        "total": bar.price,  # exactly P: no products, so Part 1 is reproduced exactly
        "net_total": previous_ri["net_total"] * (1.0 + r_net),
    }


def _read_securities(securities: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(row["symbol"]): row for row in securities.to_dict("records")}


def company_key(symbol: str, security: dict[str, Any] | None) -> str:
    """The company_id string, or the symbol when the column is missing or the value null."""
    value = None if security is None else security.get("company_id")
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return symbol
    return str(value)


# --------------------------------------------------------------------------- selection


def _normalised(text: str) -> str:
    """Case-insensitive, surrounding whitespace ignored."""
    return text.strip().lower()


def _matches(value: Any, allowed: list[str] | None) -> bool:
    """String filter: case-insensitive, ignoring surrounding spaces on both sides."""
    if not allowed:  # None or empty: no filter
        return True
    if not isinstance(value, str):
        return False
    return _normalised(value) in {_normalised(a) for a in allowed if isinstance(a, str)}


def _is_eligible(security: dict[str, Any] | None, bar: _Bar, universe: dict[str, Any]) -> bool:
    if security is None:
        return False
    if not _matches(security.get("sector"), universe.get("sectors")):
        return False
    if not _matches(security.get("exchange"), universe.get("exchanges")):
        return False
    if not _matches(security.get("type"), universe.get("types")):
        return False
    min_price = universe.get("min_price")
    if min_price is not None and bar.close < min_price:
        return False
    min_market_cap = universe.get("min_market_cap")
    return min_market_cap is None or bar.market_cap >= min_market_cap


def _rank_eligible(
    day_bars: dict[str, _Bar], secs: dict[str, dict[str, Any]], universe: dict[str, Any]
) -> list[str]:
    """Eligible symbols on the day, by market cap descending, ties by symbol ascending."""
    eligible = [s for s, bar in day_bars.items() if _is_eligible(secs.get(s), bar, universe)]
    return sorted(eligible, key=lambda s: (-day_bars[s].market_cap, s))


@dataclass
class _CompanyRanking:
    ranked: list[str]  # eligible company keys in rank order (rank = position + 1)
    caps: dict[str, float]  # company key -> company market cap (eligible classes only)
    representative: dict[str, str]  # company key -> representative symbol


def _rank_companies(
    day_bars: dict[str, _Bar], secs: dict[str, dict[str, Any]], universe: dict[str, Any]
) -> _CompanyRanking:
    """Eligible companies on the day, by company cap descending, ties by company key."""
    classes: dict[str, list[str]] = {}
    for symbol in sorted(day_bars):
        security = secs.get(symbol)
        if _is_eligible(security, day_bars[symbol], universe):
            classes.setdefault(company_key(symbol, security), []).append(symbol)
    caps = {}
    representative = {}
    for key, symbols in classes.items():
        total = 0.0
        for symbol in symbols:  # symbol order
            total += day_bars[symbol].market_cap
        caps[key] = total
        representative[key] = min(symbols, key=lambda s: (-day_bars[s].volume, s))
    ranked = sorted(classes, key=lambda k: (-caps[k], k))
    return _CompanyRanking(ranked, caps, representative)


# --------------------------------------------------------------------------- selection buffer


def buffered_selection(
    ranked: list[str], previous: set[str], top_n: int, entry_rank: int, exit_rank: int
) -> list[str]:
    """METHODOLOGY.md Part 2 "Selection buffer", in rank order.

    ``ranked``: all eligible symbols in rank order (rank = position + 1); ``previous``: the
    constituents in force before this rebalance.
    """
    rank = {s: i + 1 for i, s in enumerate(ranked)}
    # 1. keep: previous members that are eligible (ranked) with rank <= exit_rank
    keep = [s for s in ranked if s in previous and rank[s] <= exit_rank]
    # 2. enter: eligible non-members with rank <= entry_rank
    enter = [s for s in ranked if s not in previous and rank[s] <= entry_rank]
    # 3. S = keep + enter, trimmed (worst rank first) or filled up (best rank first) to top_n
    chosen = set(keep) | set(enter)
    while len(chosen) > top_n:
        worst = max(chosen, key=lambda s: rank[s])
        chosen.remove(worst)
    while len(chosen) < top_n:
        outside = [s for s in ranked if s not in chosen]
        if not outside:
            break  # fewer eligible securities than top_n: all of them
        chosen.add(outside[0])
    return [s for s in ranked if s in chosen]


# --------------------------------------------------------------------------- weights


def _above(weight: float, bound: float) -> bool:
    """weight > bound, allowing 1e-12 (relative)."""
    return weight > bound * (1 + CAP_TOLERANCE)


def _at_most(value: float, bound: float) -> bool:
    """value <= bound, allowing 1e-12 (relative)."""
    return value <= bound * (1 + CAP_TOLERANCE)


def _at_least(value: float, bound: float) -> bool:
    """value >= bound, allowing 1e-12 (relative)."""
    return value >= bound * (1 - CAP_TOLERANCE)


def fill_to_bounds(
    market_caps: list[float], bounds: list[float], total: float = 1.0
) -> list[float] | None:
    """w_i = min(bound_i, lam * mcap_i) with sum w = ``total``; None when the bounds sum to
    less than ``total`` (allowing 1e-12).

    Pro rata by market cap: all names start free; a free name gets mcap_i / (sum of free
    mcaps) times (total - sum of fixed weights); any free name above its bound (allowing
    1e-12) is set to its bound and fixed, the excess going pro rata to the names still
    below theirs; repeat until no free name exceeds its bound.
    """
    n = len(market_caps)
    if sum(bounds) < total * (1 - CAP_TOLERANCE):
        return None
    fixed = [False] * n
    while True:
        fixed_total = 0.0
        free_total = 0.0
        for i in range(n):
            if fixed[i]:
                fixed_total += bounds[i]
            else:
                free_total += market_caps[i]
        if free_total == 0.0:
            # Every name is at its bound (the bounds sum to ``total`` up to rounding): the
            # bounds are the weights.
            return list(bounds)
        weights = []
        for i in range(n):
            if fixed[i]:
                weights.append(bounds[i])
            else:
                weights.append(market_caps[i] / free_total * (total - fixed_total))
        over = [i for i in range(n) if not fixed[i] and _above(weights[i], bounds[i])]
        if not over:
            return weights
        for i in over:
            fixed[i] = True


def _single_capped_weights(
    selected: list[str], market_caps: dict[str, float], cap: float
) -> dict[str, float]:
    """Part 1 capping: market-cap weights, any weight above the cap set to it and the excess
    redistributed pro rata, repeated; equal weights when n * cap < 1."""
    n = len(selected)
    equal = {s: 1.0 / n for s in selected}
    if n * cap < 1:
        return equal  # the cap cannot be met: equal weights are the smallest maximum
    total = sum(market_caps[s] for s in selected)
    weights = {s: market_caps[s] / total for s in selected}
    capped: set[str] = set()
    while True:
        over = [s for s in selected if s not in capped and _above(weights[s], cap)]
        if not over:
            return weights
        capped.update(over)
        free = [s for s in selected if s not in capped]
        if not free:  # only possible when n * cap == 1
            return equal
        # Capped names sit at the cap; what is left (1 - cap * #capped) goes to the free names
        # pro rata to market cap. This equals "cut to the cap and hand the excess out pro rata
        # over the uncapped names", because the free names' weights were already pro rata.
        budget = 1.0 - cap * len(capped)
        free_cap = sum(market_caps[s] for s in free)
        weights = {s: cap if s in capped else budget * market_caps[s] / free_cap for s in selected}


def _group_limit_holds(weights: list[float], threshold: float, limit: float) -> bool:
    """The weights above the threshold (strictly, allowing 1e-12) sum to at most the limit."""
    return _at_most(sum(w for w in weights if _above(w, threshold)), limit)


def group_capped_weights(
    selected: list[str],
    market_caps: dict[str, float],
    cap: float,
    threshold: float,
    limit: float,
    rank_of: dict[str, int] | None = None,
) -> tuple[dict[str, float], str | None]:
    """Aggregate capping (Part 2): (weights, fallback), fallback None when a solution was
    found and ``"no_solution"`` when the single-name capped weights w0 are used instead.

    The contract's pinned algorithm, step by step (comparisons allow 1e-12, relative):

    1. w0 = the single-name capped weights (Part 1 capping; equal weights when n * cap < 1).
       If w0 meets the group limit (the weights above the threshold sum to <= limit), w0.
    2. Names in rank order (market cap descending, ties by symbol ascending; ``rank_of``
       for rank_by company: company cap descending, ties by company key); m = the number of
       w0 weights above the threshold. For m, m - 1, ..., 0:

       a. bounds: ``cap`` for the top m names, ``threshold`` for the others;
          :func:`fill_to_bounds` (skip this m when the bounds sum to less than 1); if the
          group limit holds, done;
       b. else, if m * cap >= limit and (n - m) * threshold >= 1 - limit: fill the top m pro
          rata to exactly ``limit`` (bound ``cap``) and the others pro rata to 1 - limit
          (bound ``threshold``); if the smallest of the top m weights is >= the largest of
          the others, done. (b's two conditions imply bounds summing to >= 1, so skipping a
          skipped m never skips a b that could apply.)
    3. No m works: no solution exists (e.g. UCITS 10/5/40 with fewer than 16 names): w0.
    """
    if rank_of is None:
        order = sorted(selected, key=lambda s: (-market_caps[s], s))
    else:
        order = sorted(selected, key=lambda s: rank_of[s])
    n = len(order)
    caps = [market_caps[s] for s in order]
    w0 = _single_capped_weights(selected, market_caps, cap)  # exactly target_weights' w0
    # 1. w0 when it meets the group limit
    if _group_limit_holds([w0[s] for s in order], threshold, limit):
        return {s: w0[s] for s in selected}, None
    # 2. m = the number of w0 weights above the threshold, down to 0
    first_m = sum(1 for s in order if _above(w0[s], threshold))
    for m in range(first_m, -1, -1):
        # a. cap for the top m, threshold for the others, one fill
        bounds = [cap if i < m else threshold for i in range(n)]
        weights = fill_to_bounds(caps, bounds)
        if weights is None:
            continue  # the bounds sum to less than 1: skip this m
        if _group_limit_holds(weights, threshold, limit):
            return {s: weights[i] for i, s in enumerate(order)}, None
        # b. the top m at exactly the limit, the others at 1 - limit
        if _at_least(m * cap, limit) and _at_least((n - m) * threshold, 1.0 - limit):
            top = fill_to_bounds(caps[:m], [cap] * m, limit)
            rest = fill_to_bounds(caps[m:], [threshold] * (n - m), 1.0 - limit)
            assert top is not None and rest is not None  # guaranteed by the two conditions
            if not top or not rest or _at_least(min(top), max(rest)):
                weights = top + rest
                return {s: weights[i] for i, s in enumerate(order)}, None
    # 3. no m works: w0, reported
    return {s: w0[s] for s in selected}, "no_solution"


def _weights_with_fallback(
    selected: list[str],
    market_caps: dict[str, float],
    weighting: str,
    cap: float | None,
    group_cap: dict[str, Any] | None = None,
    rank_of: dict[str, int] | None = None,
) -> tuple[dict[str, float], bool]:
    """Target weights, and whether aggregate capping fell back to w0 (no solution)."""
    n = len(selected)
    if weighting == "equal":
        return {s: 1.0 / n for s in selected}, False
    total = sum(market_caps[s] for s in selected)
    if weighting == "market_cap":
        return {s: market_caps[s] / total for s in selected}, False
    if weighting == "sqrt_market_cap":  # the project's feature-flagged scheme
        roots = {s: math.sqrt(market_caps[s]) for s in selected}
        root_total = sum(roots[s] for s in selected)
        return {s: roots[s] / root_total for s in selected}, False
    if weighting != "capped_market_cap":
        raise ValueError(f"unknown weighting {weighting!r}")
    if cap is None or not cap > 0:
        raise ValueError("capped_market_cap needs a positive cap")
    if group_cap is not None:
        threshold, limit = _group_cap_params(group_cap)
        weights, fallback = group_capped_weights(
            selected, market_caps, cap, threshold, limit, rank_of
        )
        return weights, fallback is not None
    return _single_capped_weights(selected, market_caps, cap), False


def target_weights(
    selected: list[str],
    market_caps: dict[str, float],
    weighting: str,
    cap: float | None,
    group_cap: dict[str, Any] | None = None,
    rank_of: dict[str, int] | None = None,
) -> dict[str, float]:
    """The target weights w_i(r) of the selected names (Part 1, and Part 2 aggregate capping
    with ``group_cap``; its fallback is reported by the build, see
    :attr:`ReferenceResult.group_cap_fallbacks`)."""
    return _weights_with_fallback(selected, market_caps, weighting, cap, group_cap, rank_of)[0]


def _group_cap_params(group_cap: dict[str, Any]) -> tuple[float, float]:
    threshold = float(group_cap["threshold"])
    limit = float(group_cap["limit"])
    if not (threshold > 0 and limit > 0):
        raise ValueError("group_cap needs a positive threshold and limit")
    return threshold, limit


def _buffer_params(buffer: dict[str, Any], top_n: int) -> tuple[int, int]:
    entry_rank = buffer.get("entry_rank")
    exit_rank = buffer.get("exit_rank")
    entry_rank = top_n if entry_rank is None else int(entry_rank)
    exit_rank = top_n if exit_rank is None else int(exit_rank)
    if entry_rank < 1 or exit_rank < 1:
        raise ValueError("buffer ranks must be >= 1")
    return entry_rank, exit_rank


def _effective_lag(value: Any) -> int:
    """``effective_lag``: an int >= 0 (None: 0). Bools and non-integers are rejected."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"effective_lag must be an integer >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"effective_lag must be an integer >= 0, got {value!r}")
    return value


# --------------------------------------------------------------------------- build


def reference_build(
    securities: pd.DataFrame,
    prices: pd.DataFrame,
    definition: dict[str, Any],
    next_session: Callable[[dt.date], dt.date] | None = None,
) -> ReferenceResult:
    next_session = next_session or xnys_next_session
    weighting = definition.get("weighting", "equal")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}")
    rebalance = definition.get("rebalance", "daily")
    if rebalance not in REBALANCES:
        raise ValueError(f"unknown rebalance {rebalance!r}")
    top_n = int(definition["top_n"])
    if top_n < 1:
        raise ValueError("top_n must be >= 1")
    cap = definition.get("cap")
    base_value = definition.get("base_value")
    base_value = 1000.0 if base_value is None else float(base_value)
    universe = definition.get("universe") or {}
    buffer = definition.get("buffer")
    entry_rank = exit_rank = top_n
    if buffer is not None:
        entry_rank, exit_rank = _buffer_params(buffer, top_n)
    group_cap = definition.get("group_cap")
    if group_cap is not None:
        if weighting != "capped_market_cap":
            raise ValueError("group_cap is only allowed with weighting 'capped_market_cap'")
        _group_cap_params(group_cap)
    headline = definition.get("return_type")
    headline = DEFAULT_RETURN_TYPE if headline is None else str(headline)
    if headline not in RETURN_TYPES:
        raise ValueError(f"unknown return_type {headline!r}")
    rank_by = definition.get("rank_by")
    rank_by = "security" if rank_by is None else str(rank_by)
    if rank_by not in RANK_BY:
        raise ValueError(f"unknown rank_by {rank_by!r}")
    tax = definition.get("tax")
    tax = DEFAULT_TAX if tax is None else float(tax)
    if not (0.0 <= tax <= 1.0):
        raise ValueError("tax must be between 0 and 1")
    lag = _effective_lag(definition.get("effective_lag"))

    secs = _read_securities(securities)
    bars = _read_bars(prices)
    days = sorted(bars)
    if not days:
        raise ValueError("no trading days in the data")

    # Base date: first trading day, or the requested date rolled forward to a trading day.
    requested = definition.get("base_date")
    if requested is None:
        base = days[0]
    else:
        later = [d for d in days if d >= _as_date(requested)]
        if not later:
            raise ValueError(f"no trading day on or after base date {requested}")
        base = later[0]

    last_bar: dict[str, _Bar] = {}  # the last valid row of each security
    last_ri: dict[str, dict[str, float]] = {}  # {symbol: {variant: RI_v}} carried forward
    last_price: dict[str, float] = {}  # RI of the headline variant carried forward (Part 1: P)
    last_market_cap: dict[str, float] = {}  # last valid market cap
    units: dict[str, float] = {}  # q_i of the headline composition in force, in rank order
    variant_units: dict[str, dict[str, float]] = {v: {} for v in RETURN_TYPES}
    variant_levels: dict[str, list[float]] = {v: [] for v in RETURN_TYPES}
    ranks: dict[str, int] = {}  # ranks at the reference date of the selection in force
    # C(prev) for the buffer: the latest successful selection (by reference date), whether or
    # not it has taken effect yet (with lag 0 it is the composition in force).
    latest_selected: set[str] = set()
    companies: set[str] = set()  # rank_by company: the companies of the latest selection
    in_flight: list[_Selection] = []  # selections not yet in effect, in reference-date order
    # Securities whose dividend formulas are in force: from their first valid row giving a
    # dividend value (0 included) on.
    with_dividends: set[str] = set()
    # Compositions report prices in real money: price(t) = real(e) * RI(t) / RI(e) and
    # units = q * RI(e) / real(e), e the effective date, with real = the close of the last
    # valid bar on or before e for securities whose dividend formulas are in force there,
    # else its Part 1 price P (so Part 1 outputs are unchanged: anchor 1 exactly).
    anchor: dict[str, float] = {}
    previous_level = math.nan

    level_rows: list[dict[str, Any]] = []
    compositions: dict[dt.date, pd.DataFrame] = {}
    changes: list[tuple[dt.date, list[str], list[str]]] = []
    errors: list[dt.date] = []
    group_cap_fallbacks: list[dt.date] = []

    for index, day in enumerate(days):
        for symbol, bar in bars[day].items():
            if math.isfinite(bar.dividend):  # a dividend value (0 included): from now on
                with_dividends.add(symbol)
            ri = _return_prices(
                bar, last_bar.get(symbol), last_ri.get(symbol), symbol in with_dividends, tax
            )
            last_ri[symbol] = ri
            last_bar[symbol] = bar
            last_price[symbol] = ri[headline]
            last_market_cap[symbol] = bar.market_cap
        if day < base:
            continue

        # 1. Levels with the units fixed at the last effective date (prices carried forward),
        # per variant; the headline variant's is the index level.
        variant_level: dict[str, float] = {}
        for v in RETURN_TYPES:
            if day == base:
                variant_level[v] = base_value
            else:
                total = 0.0
                for symbol, q in variant_units[v].items():
                    total += q * last_ri[symbol][v]
                variant_level[v] = total
        level = variant_level[headline]
        daily_return = 0.0 if day == base else level / previous_level - 1.0

        # 2. Selection at the close of a reference date (the base date, or a scheduled
        # rebalance: a period end in (previous trading day, day], postponed to this day when
        # it is missing from the data), with the data of the day. It takes effect ``lag``
        # trading days of the data later (the base date's at once).
        if day == base or is_rebalance_day(day, days[index - 1], rebalance, next_session):
            if rank_by == "company":
                by_company = _rank_companies(bars[day], secs, universe)
                ranked = by_company.ranked  # company keys
                previous = companies  # companies of the latest selection
            else:
                ranked = _rank_eligible(bars[day], secs, universe)
                previous = latest_selected  # the latest selection, in effect or not
            if not ranked:
                if day == base:
                    raise ValueError(f"no eligible security on the base date {day}")
                errors.append(day)  # nothing selected, nothing scheduled
            else:
                if buffer is None or day == base:
                    selected = ranked[:top_n]  # Part 1; the base date has no C(prev)
                else:
                    selected = buffered_selection(ranked, previous, top_n, entry_rank, exit_rank)
                rank_of: dict[str, int] | None = None
                if rank_by == "company":
                    companies = set(selected)
                    rep = by_company.representative
                    caps = {rep[k]: by_company.caps[k] for k in selected}
                    new_ranks = {rep[k]: i + 1 for i, k in enumerate(ranked)}
                    selected = [rep[k] for k in selected]  # symbols, in company rank order
                    rank_of = new_ranks
                else:
                    caps = {s: bars[day][s].market_cap for s in selected}
                    new_ranks = {s: i + 1 for i, s in enumerate(ranked)}
                latest_selected = set(selected)
                weights, fell_back = _weights_with_fallback(
                    selected, caps, weighting, cap, group_cap, rank_of
                )
                if fell_back:
                    group_cap_fallbacks.append(day)  # no solution: w0, with a warning
                in_flight.append(
                    _Selection(
                        reference_date=day,
                        effective_index=index if day == base else index + lag,
                        selected=selected,
                        weights=weights,
                        ranks=new_ranks,
                        market_caps={s: bars[day][s].market_cap for s in selected},
                    )
                )

        # 3. The selection whose effective date is today takes effect at the close: holdings
        # reset to its target weights at the last prices (a selected security without a row
        # today enters at its last price, like a halt).
        is_rebalance = False
        turnover = math.nan  # only effective dates have a turnover
        if in_flight and in_flight[0].effective_index == index:
            sel = in_flight.pop(0)
            weights = sel.weights
            turnover = 0.0  # the base date's formation is not turnover
            if day != base:
                drifted = {s: q * last_price[s] / level for s, q in units.items()}
                total_change = 0.0
                for symbol in sorted(set(drifted) | set(weights)):
                    total_change += abs(weights.get(symbol, 0.0) - drifted.get(symbol, 0.0))
                turnover = 0.5 * total_change
                old_set, new_set = set(units), set(sel.selected)
                if old_set != new_set:
                    changes.append((day, sorted(new_set - old_set), sorted(old_set - new_set)))
            # last_ri / last_bar: today's row, or the last one before it (carried forward)
            for v in RETURN_TYPES:
                variant_units[v] = {
                    s: variant_level[v] * weights[s] / last_ri[s][v] for s in sel.selected
                }
            units = variant_units[headline]
            anchor = {
                s: (last_bar[s].close if s in with_dividends else last_bar[s].price)
                / last_ri[s][headline]
                for s in sel.selected
            }
            ranks = sel.ranks
            is_rebalance = True

        # 4. Outputs for the day: composition in force after the close.
        level_rows.append(
            {
                "date": day,
                "level": level,
                "daily_return": daily_return,
                "is_rebalance": is_rebalance,
                "turnover": turnover,
                "n_constituents": len(units),
            }
        )
        comp_rows = []
        for symbol, q in units.items():
            sector = secs[symbol].get("sector")
            comp_rows.append(
                {
                    "symbol": symbol,
                    "rank": ranks[symbol],
                    "weight": q * last_price[symbol] / level,
                    "market_cap": last_market_cap[symbol],
                    "price": last_price[symbol] * anchor[symbol],
                    "units": q / anchor[symbol],
                    "sector": sector,
                }
            )
        comp = pd.DataFrame(comp_rows, columns=COMPOSITION_COLUMNS)
        compositions[day] = comp.sort_values("rank", kind="stable").reset_index(drop=True)
        for v in RETURN_TYPES:
            variant_levels[v].append(variant_level[v])
        previous_level = level

    # Selections still in flight after the last day of the data: pending (pro-forma).
    last_index = len(days) - 1
    pending = []
    for sel in in_flight:
        rows = [
            {
                "symbol": s,
                "rank": sel.ranks[s],
                "weight": sel.weights[s],
                "market_cap": sel.market_caps[s],
                "sector": secs[s].get("sector"),
            }
            for s in sel.selected  # rank order
        ]
        pending.append(
            PendingSelection(
                reference_date=sel.reference_date,
                effective_offset=sel.effective_index - last_index,
                constituents=pd.DataFrame(rows, columns=PENDING_COLUMNS),
            )
        )
    current_weights = {s: q * last_price[s] / previous_level for s, q in units.items()}

    levels = pd.DataFrame(level_rows, columns=LEVEL_COLUMNS)
    levels["is_rebalance"] = levels["is_rebalance"].astype(bool)
    levels["n_constituents"] = levels["n_constituents"].astype("int64")
    return ReferenceResult(
        levels=levels,
        compositions=compositions,
        changes=changes,
        errors=errors,
        group_cap_fallbacks=group_cap_fallbacks,
        variant_levels=variant_levels,
        pending=pending,
        current_weights=current_weights,
    )
