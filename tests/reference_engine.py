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
no vectorisation. Every step is meant to be checked line by line against Part 1 of
/work/shared/METHODOLOGY.md. It is only used by the tests, never by the product.

Conventions fixed where Part 1 is silent (kept identical to the engine's brief):

* Trading days are the distinct dates carrying at least one valid row (any symbol, whether
  or not it passes the universe filters). Rows whose close or market cap is not finite and
  > 0 are ignored defensively (the engine's input is already valid).
* market cap = ``market_cap`` when finite, else ``close * shares_outstanding``.
* P = ``adj_close`` when finite and > 0 on that row, else ``close``.
* ``min_price`` compares to ``close`` (unadjusted) and ``min_market_cap`` to the market cap,
  both inclusive (>=). String filters (sectors, exchanges, types) are case-insensitive; a
  filter that is None (or an empty list) does not filter. A symbol that has bars but no row
  in the securities table is never eligible.
* Weekly (ISO week), monthly and quarterly rebalances happen on a trading day whose next
  exchange session (XNYS calendar, not the next day in the data) falls in a later period.
  The base date is always a rebalance.
* No eligible security at a scheduled rebalance: at the base date ``ValueError``; later the
  constituents, units and weights stay unchanged, the date goes to ``errors``, the day is
  not flagged ``is_rebalance``, its turnover is NaN and the ranks shown stay those of the last
  rebalance that happened (with ``effective_lag``, unless the day is the effective date of an
  earlier selection).
* capped_market_cap: if n * cap < 1, with n the number of selected constituents, equal
  weights; otherwise iterative capping with tolerance 1e-12.
* Selection buffer: the previous constituents C(prev) are those of the latest successful
  selection (by reference date), even if it has not taken effect yet (``effective_lag``);
  with lag 0 they are the constituents in force before the close of the rebalance date.
  Ranks are among all eligible securities, so a kept member can show a rank > top_n. No
  buffer key means plain top N; an explicit buffer (even entry = exit = top_n) goes through
  :func:`buffered_selection`.
* Aggregate capping: the project's algorithm, documented in :func:`group_capped_weights`.
* ``n_constituents`` in the levels is the size of the composition in force after the close
  of that day (the same set as the day's composition).
* Turnover is NaN on days that are not rebalances; 0 on the base date; on a later rebalance
  0.5 * sum |w_target - w_drifted| over the union of old and new constituents.
* Return variants (the project's rules): a security "has actions" when any of its valid rows
  carries a non-null, finite ``dividend`` or ``split_ratio`` (a missing column is all null).
  Each variant v has a per-security return price RI_v on the security's valid rows (t' = its
  previous valid row; halted days carry the last RI forward like Part 1 prices):

  - without actions: RI_total = P exactly; RI_price = close; RI_net starts at P(first) and
    RI_net(t) = RI_net(t') * (1 + r_p + (1 - tax) * (r_t - r_p)), r_p = close(t)/close(t') - 1,
    r_t = P(t)/P(t') - 1;
  - with actions (s = split_ratio, null -> 1; d = dividend, null -> 0): all three start at
    close(first); RI_price(t) = RI_price(t') * close(t) * s / close(t'),
    RI_total(t) = RI_total(t') * (close(t) * s + d) / close(t'),
    RI_net(t) = RI_net(t') * (close(t) * s + (1 - tax) * d) / close(t').

  Selection, ranks and target weights are Part 1's. Each variant is an index of its own:
  units q_v,i = L_v(r) * w_i(r) / RI_v,i(r), all starting at base_value. The headline variant
  (``return_type``) gives the levels, daily returns, turnover (its drifted weights) and the
  compositions (price = RI_headline). ``variant_levels`` holds all three level series.
* Companies and share classes (``rank_by``: ``security`` (default, Part 1) | ``company``), see
  :func:`_company_selection`. The securities table may carry ``company_id`` (missing column or
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

  1. Reference dates t are the rebalance dates above (the base date and the scheduled
     rebalances). Selection (buffer and company ranking included), ranks and target weights
     w_i(t) are computed at t with the data of t, as with lag 0. C(prev) for the buffer is the
     latest successful selection by reference date, in effect or not; for ``rank_by:
     company`` the companies of that selection. A reference date with no eligible security
     goes to ``errors`` and schedules nothing.
  2. The selection takes effect at the close of the trading day ``effective_lag`` trading
     days after t (trading days = the distinct dates of the data: index of t in the days +
     lag). The base date's selection takes effect at once (the lag is ignored there).
     Effective dates are strictly increasing because reference dates are, so selections in
     flight (several at once when the lag is longer than the gap between reference dates)
     take effect in reference-date order, at most one per day.
  3. At the close of the effective date e the holdings reset: per variant v,
     q_v,i = L_v(e) * w_i(t) / RI_v,i(e), RI carried forward: a selected security without a
     valid row on e (halted, or delisted after t) enters at its last return price, like a
     Part 1 halt, and can only leave at a later effective date. Eligibility is not checked
     again on e. The composition anchor is real(e) / RI(e) from the security's last valid bar
     on or before e (its close if it has actions, else P).
  4. On e: ``is_rebalance`` True (the flag marks effective dates), turnover =
     0.5 * sum |w_i(t) - drifted w_i(e)| over the union (0 on the base date), and a change
     entry (e, entered = C(t) minus the constituents in force before the close of e, exited =
     the reverse) when they differ. A reference date that is not also an effective date gets
     no flag, NaN turnover and no change entry.
  5. Compositions after the close of d: the constituents of the latest selection whose
     effective date <= d, with ``rank`` = its rank at its reference date; weight, price,
     units and market_cap (last valid market cap) as with lag 0.
  6. Selections whose effective date falls after the last day of the data are ``pending``
     (:class:`PendingSelection`, in reference-date order): reference date, effective_offset
     (trading days after the last data day: 1 = the next session) and the constituents in
     rank order with rank and market cap at t and target weight. ``current_weights`` are the
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


def assert_identical_results(a: ReferenceResult, b: ReferenceResult) -> None:
    """Two reference results are the same bit for bit (levels, compositions, changes,
    errors, return variants, pending selections and the weights in force)."""
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
    """Daily: every trading day. Otherwise: the next exchange session is in a later period."""
    if rebalance == "daily":
        return True
    return period_key(next_session(day), rebalance) > period_key(day, rebalance)


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


def _read_bars(prices: pd.DataFrame) -> dict[dt.date, dict[str, _Bar]]:
    """{date: {symbol: bar}} keeping valid rows only."""
    bars: dict[dt.date, dict[str, _Bar]] = {}
    for row in prices.to_dict("records"):
        day = _as_date(row["date"])
        symbol = str(row["symbol"])
        close = _number(row.get("close"))
        market_cap = _number(row.get("market_cap"))
        if not math.isfinite(market_cap):
            market_cap = close * _number(row.get("shares_outstanding"))
        if not (_finite_positive(close) and _finite_positive(market_cap)):
            continue  # invalid row: ignored
        volume = _number(row.get("volume"))
        volume = volume if math.isfinite(volume) else 0.0
        adj_close = _number(row.get("adj_close"))
        price = adj_close if _finite_positive(adj_close) else close
        day_bars = bars.setdefault(day, {})
        if symbol in day_bars:
            raise ValueError(f"duplicate bar for {symbol} on {day}")
        day_bars[symbol] = _Bar(
            close=close,
            price=price,
            market_cap=market_cap,
            dividend=_number(row.get("dividend")),
            split_ratio=_number(row.get("split_ratio")),
            volume=volume,
        )
    return bars


def _has_actions(bars: dict[dt.date, dict[str, _Bar]]) -> set[str]:
    """Symbols with a finite dividend or split_ratio on any of their valid rows."""
    out: set[str] = set()
    for day_bars in bars.values():
        for symbol, bar in day_bars.items():
            if math.isfinite(bar.dividend) or math.isfinite(bar.split_ratio):
                out.add(symbol)
    return out


def _return_prices(
    bar: _Bar,
    previous: _Bar | None,
    previous_ri: dict[str, float] | None,
    actions: bool,
    tax: float,
) -> dict[str, float]:
    """RI_v for one security on one valid row; ``previous`` is its previous valid row."""
    if not actions:
        if previous is None or previous_ri is None:
            return {"price": bar.close, "total": bar.price, "net_total": bar.price}
        r_p = bar.close / previous.close - 1.0
        r_t = bar.price / previous.price - 1.0
        r_net = r_p + (1.0 - tax) * (r_t - r_p)
        return {
            "price": bar.close,
            "total": bar.price,  # exactly P: no products, so Part 1 is reproduced exactly
            "net_total": previous_ri["net_total"] * (1.0 + r_net),
        }
    if previous is None or previous_ri is None:
        return {v: bar.close for v in RETURN_TYPES}
    s = bar.split_ratio if math.isfinite(bar.split_ratio) else 1.0
    d = bar.dividend if math.isfinite(bar.dividend) else 0.0
    return {
        "price": previous_ri["price"] * (bar.close * s) / previous.close,
        "total": previous_ri["total"] * (bar.close * s + d) / previous.close,
        "net_total": previous_ri["net_total"] * (bar.close * s + (1.0 - tax) * d) / previous.close,
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


def _matches(value: Any, allowed: list[str] | None) -> bool:
    if not allowed:  # None or empty: no filter
        return True
    if not isinstance(value, str):
        return False
    return value.lower() in {a.lower() for a in allowed}


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


def fill_to_bounds(market_caps: list[float], bounds: list[float]) -> list[float] | None:
    """w_i = min(bound_i, lam * mcap_i) with sum w = 1; None when sum(bounds) < 1 - 1e-12.

    Iterative: all names start free; a free name gets mcap_i / (sum of free mcaps) times
    (1 - sum of fixed weights); any free name above bound_i * (1 + 1e-12) is fixed at its bound;
    repeat until no free name exceeds its bound.
    """
    n = len(market_caps)
    if sum(bounds) < 1.0 - CAP_TOLERANCE:
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
            # Every name is at its bound (sum(bounds) is within 1e-12 of 1): the bounds are
            # the weights. Not reachable unless the bounds sum to 1 up to rounding.
            return list(bounds)
        weights = []
        for i in range(n):
            if fixed[i]:
                weights.append(bounds[i])
            else:
                weights.append(market_caps[i] / free_total * (1.0 - fixed_total))
        over = [
            i for i in range(n) if not fixed[i] and weights[i] > bounds[i] * (1 + CAP_TOLERANCE)
        ]
        if not over:
            return weights
        for i in over:
            fixed[i] = True


def group_capped_weights(
    selected: list[str],
    market_caps: dict[str, float],
    cap: float,
    threshold: float,
    limit: float,
    rank_of: dict[str, int] | None = None,
) -> tuple[dict[str, float], str | None]:
    """Aggregate capping (Part 2): (weights, fallback), fallback None when the rules were met.

    The project's algorithm:

    * names in rank order (market cap descending, ties by symbol ascending);
    * c = n: names at positions < c are bounded by ``cap``, those at positions >= c by
      ``threshold``;
    * loop: w = fill_to_bounds(bounds); group = names with w > threshold * (1 + 1e-12); if the
      group's total <= limit * (1 + 1e-12) return w; else c = the position of the group's last
      member (smallest market cap): it and every later name get bound ``threshold``; repeat.
    * Fallback to equal weights 1/n: ``"n*cap<1"`` when the single-name cap cannot be met,
      ``"infeasible"`` when some fill is infeasible (c * cap + (n - c) * threshold < 1), and
      ``"exhausted"`` when c reaches 0 and the limit still fails (not reachable in exact
      arithmetic: at c = 0 no weight exceeds the threshold).

    With threshold <= cap the bounds are non-increasing along the rank order, and so is
    lam * mcap, hence the weights are: a larger market cap never gets a smaller weight. With
    c = n the fill is the Part 1 capping (up to rounding), so when the group limit does not
    bind, the weights are the single-cap weights.

    ``rank_of`` (rank_by company): names are ordered by that rank instead (company cap
    descending, ties by company key).
    """
    if rank_of is None:
        order = sorted(selected, key=lambda s: (-market_caps[s], s))
    else:
        order = sorted(selected, key=lambda s: rank_of[s])
    n = len(order)
    equal = {s: 1.0 / n for s in selected}
    if n * cap < 1:
        return equal, "n*cap<1"
    caps = [market_caps[s] for s in order]
    c = n
    while True:
        bounds = [cap if i < c else threshold for i in range(n)]
        weights = fill_to_bounds(caps, bounds)
        if weights is None:
            return equal, "infeasible"
        group = [i for i in range(n) if weights[i] > threshold * (1 + CAP_TOLERANCE)]
        group_total = sum(weights[i] for i in group)
        if group_total <= limit * (1 + CAP_TOLERANCE):
            return {s: weights[i] for i, s in enumerate(order)}, None
        if c == 0:
            return equal, "exhausted"
        c = max(group)  # the group's last member in rank order, and all after it: threshold


def target_weights(
    selected: list[str],
    market_caps: dict[str, float],
    weighting: str,
    cap: float | None,
    group_cap: dict[str, Any] | None = None,
    rank_of: dict[str, int] | None = None,
) -> dict[str, float]:
    n = len(selected)
    equal = {s: 1.0 / n for s in selected}
    if weighting == "equal":
        return equal
    total = sum(market_caps[s] for s in selected)
    weights = {s: market_caps[s] / total for s in selected}
    if weighting == "market_cap":
        return weights
    if weighting == "sqrt_market_cap":  # the project's feature-flagged scheme
        roots = {s: math.sqrt(market_caps[s]) for s in selected}
        root_total = sum(roots[s] for s in selected)
        return {s: roots[s] / root_total for s in selected}
    if weighting != "capped_market_cap":
        raise ValueError(f"unknown weighting {weighting!r}")
    if cap is None or not cap > 0:
        raise ValueError("capped_market_cap needs a positive cap")
    if group_cap is not None:
        threshold, limit = _group_cap_params(group_cap)
        return group_capped_weights(selected, market_caps, cap, threshold, limit, rank_of)[0]
    if n * cap < 1:
        return equal  # the cap cannot be met: equal weights are the smallest maximum
    capped: set[str] = set()
    while True:
        over = [s for s in selected if s not in capped and weights[s] > cap + CAP_TOLERANCE]
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
    with_actions = _has_actions(bars)
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
    # Compositions report prices in real money: price(t) = real(e) * RI(t) / RI(e) and
    # units = q * RI(e) / real(e), e the effective date, with real = the close of the last
    # valid bar on or before e for securities with actions, else its Part 1 price P (so Part 1
    # outputs are unchanged: anchor 1 exactly).
    anchor: dict[str, float] = {}
    previous_level = math.nan

    level_rows: list[dict[str, Any]] = []
    compositions: dict[dt.date, pd.DataFrame] = {}
    changes: list[tuple[dt.date, list[str], list[str]]] = []
    errors: list[dt.date] = []

    for index, day in enumerate(days):
        for symbol, bar in bars[day].items():
            ri = _return_prices(
                bar, last_bar.get(symbol), last_ri.get(symbol), symbol in with_actions, tax
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

        # 2. Selection at the close of a reference date (the base date or a scheduled
        # rebalance), with the data of the day. It takes effect ``lag`` trading days later
        # (the base date's at once).
        if day == base or is_scheduled_rebalance(day, rebalance, next_session):
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
                in_flight.append(
                    _Selection(
                        reference_date=day,
                        effective_index=index if day == base else index + lag,
                        selected=selected,
                        weights=target_weights(selected, caps, weighting, cap, group_cap, rank_of),
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
                s: (last_bar[s].close if s in with_actions else last_bar[s].price)
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
        variant_levels=variant_levels,
        pending=pending,
        current_weights=current_weights,
    )
