"""Deterministic synthetic US equity market (security master and daily bars).

:func:`generate_market` builds a realistic, fully reproducible market for tests,
demos and benchmarks. Everything is drawn from one ``numpy.random.default_rng(seed)``
stream in a fixed order, so the same arguments give byte-identical Arrow tables.

Model
-----
Security master
    Tickers are distinct 1-5 letter codes (mostly 3-4 letters) drawn without
    replacement from the base-26 code space; the table is sorted by symbol. About
    93% are common stocks, 5% ETFs (exchange ``ARCX``, no sector or industry) and
    2% ADRs. Short tickers list mostly on ``XNYS``, four/five letter ones mostly on
    ``XNAS`` (a few on ``XASE``). Sectors follow unequal, US-like frequencies (every
    GICS sector appears once there are at least 11 non-ETF securities) with a few
    GICS industries each. Names are built from syllables plus a sector word and a
    corporate suffix. About 2% of companies have two share classes: both rows
    carry the same ``company_id`` (``C000001`` ...), share the sector, listing,
    life span, dividend policy and most of the idiosyncratic risk; every other
    security has a null ``company_id``.

Market caps and prices
    Initial caps come from a rank-size curve fitted to the US market (largest
    about $3T, 100th of 3,000 about $110B, median about $2B, smallest about $50M)
    sampled by stratified quantiles plus log noise, so the top 100 look like a
    large-cap universe for any universe size. Initial closes lie in [5, 500] and
    are mildly correlated with size; shares outstanding = cap / close.

Returns
    Daily log total returns ``g = beta * m + f_sector + sigma * e``:
    ``m`` is the market factor (expected simple return 7% per year, vol 16% per
    year), ``f_sector`` one factor per sector (10% per year, zero expected simple
    return), ``e`` unit-variance Student-t noise (4 degrees of freedom, clipped at
    10 sd) whose vol falls with size (roughly 55% per year for micro caps, 12% for
    mega caps; median total vol near 35%). A slowly mean-reverting volatility
    regime (AR(1) in log vol, applied by convolution) scales all of them. Every
    log drift carries the ``-sigma^2 / 2`` convexity term, so expected simple
    returns come from beta (plus a small random alpha). ETFs have beta near 1
    and tiny idiosyncratic risk.

Corporate actions (only on trading rows that have a previous row)
    Dividends: about 40% of securities pay every 63 sessions (random phase) with a
    1-5% yearly yield. The cash ``d(t) = q * close(t-1) * (1 + r(t))`` is a fixed
    fraction ``q`` (quarterly yield) of the cum-dividend value, so
    ``close(t) * s(t) + d(t) = close(t-1) * (1 + r(t))`` holds exactly and the close
    path stays a cumulative product. Splits: about 3% of securities split once
    (2, 3 or 4 for 1) and about 0.3% reverse split (0.5), on a random day: the
    close divides by the ratio and the shares multiply by it, so the market cap
    is continuous. Shares outstanding change point-in-time: half the stocks buy
    back or issue 0-2% every 63 sessions, ETFs create/redeem units every 21.

Adjusted close
    Backward adjusted for splits and dividends: ``adj_close`` equals ``close`` on a
    security's last row and ``adj_close(t) / adj_close(t-1) =
    (close(t) * s(t) + d(t)) / close(t-1)`` between consecutive rows.

Life cycle and gaps
    About 8% of securities list after the first session (IPO) and 6% delist
    before the last; no rows exist outside a security's life. Inside it, about
    0.1% of cells are single-day halts and about 1% of securities have one halt
    of 2-10 sessions (never on the first or last day of life). A halted security
    keeps its price: the next row continues from the last close.

Volume is ``shares * turnover * noise * (1 + 20 |g|)`` (whole shares as floats).

Implementation: dense (sessions x securities) float64 matrices, cumulative sums
in log space, then a boolean mask flattens them into rows ordered by
(date, symbol). Memory stays at a few dense matrices plus the output columns.
"""

from __future__ import annotations

import datetime
import functools
import math
import warnings
from collections.abc import Sequence
from typing import TypeAlias

import exchange_calendars
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from index_builder.providers.schema import (
    COMMON_STOCK,
    GICS_SECTORS,
    PRICES_SCHEMA,
    SECURITIES_SCHEMA,
    MarketData,
)

__all__ = ["generate_market"]

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
StrArray: TypeAlias = npt.NDArray[np.str_]

_YEAR = 252
_MARKET_DRIFT = math.log(1.07) / _YEAR  # expected simple return; log drift adds -var/2
_MARKET_VOL = 0.16 / math.sqrt(_YEAR)
_SECTOR_VOL = 0.10 / math.sqrt(_YEAR)
_T_DF = 4.0
_T_CLIP = 10.0
_DIVIDEND_PERIOD = 63
_ETF_UNIT_PERIOD = 21
_VOLUME_RETURN_SENSITIVITY = 20.0

# Type mix (exact shares of the universe, remainder common stock).
_ETF_SHARE = 0.05
_ADR_SHARE = 0.02
_TYPE_COMMON, _TYPE_ETF, _TYPE_ADR = 0, 1, 2
_TYPE_NAMES = (COMMON_STOCK, "ETF", "ADR")

# Per sector, in GICS_SECTORS order: frequency, log10 cap tilt, mean beta, vol multiplier.
_SECTOR_WEIGHTS = (0.055, 0.11, 0.045, 0.05, 0.16, 0.16, 0.14, 0.16, 0.045, 0.045, 0.03)
_SECTOR_CAP_TILT = (0.10, 0.05, 0.10, 0.05, 0.0, 0.0, 0.0, 0.15, -0.05, -0.10, 0.0)
_SECTOR_BETA = (1.05, 1.15, 0.70, 1.00, 1.05, 0.90, 1.05, 1.20, 1.00, 0.90, 0.60)
_SECTOR_VOL_MULT = (1.0, 1.1, 0.8, 1.2, 0.9, 1.3, 0.95, 1.1, 1.0, 0.85, 0.7)

_INDUSTRIES: tuple[tuple[str, ...], ...] = (
    (
        "Interactive Media & Services",
        "Entertainment",
        "Diversified Telecommunication Services",
        "Media",
    ),
    (
        "Broadline Retail",
        "Automobiles",
        "Hotels, Restaurants & Leisure",
        "Specialty Retail",
        "Textiles, Apparel & Luxury Goods",
    ),
    (
        "Beverages",
        "Food Products",
        "Household Products",
        "Consumer Staples Distribution & Retail",
    ),
    ("Oil, Gas & Consumable Fuels", "Energy Equipment & Services"),
    ("Banks", "Capital Markets", "Insurance", "Financial Services", "Consumer Finance"),
    (
        "Biotechnology",
        "Pharmaceuticals",
        "Health Care Equipment & Supplies",
        "Health Care Providers & Services",
        "Life Sciences Tools & Services",
    ),
    (
        "Aerospace & Defense",
        "Machinery",
        "Ground Transportation",
        "Electrical Equipment",
        "Professional Services",
        "Building Products",
    ),
    (
        "Software",
        "Semiconductors & Semiconductor Equipment",
        "Technology Hardware, Storage & Peripherals",
        "IT Services",
        "Communications Equipment",
        "Electronic Equipment, Instruments & Components",
    ),
    ("Chemicals", "Metals & Mining", "Containers & Packaging", "Construction Materials"),
    (
        "Specialized REITs",
        "Residential REITs",
        "Industrial REITs",
        "Real Estate Management & Development",
    ),
    ("Electric Utilities", "Multi-Utilities", "Gas Utilities", "Water Utilities"),
)

_SECTOR_WORDS: tuple[tuple[str, ...], ...] = (
    ("Media", "Communications", "Networks", "Interactive", "Broadcasting"),
    ("Brands", "Motors", "Retail", "Hospitality", "Apparel"),
    ("Foods", "Beverages", "Consumer Products", "Farms", "Provisions"),
    ("Energy", "Petroleum", "Resources", "Drilling", "Midstream"),
    ("Financial", "Bancorp", "Capital", "Insurance", "Partners"),
    ("Therapeutics", "Biosciences", "Medical", "Health", "Pharmaceuticals"),
    ("Industries", "Aerospace", "Logistics", "Machinery", "Engineering"),
    ("Systems", "Software", "Semiconductor", "Technologies", "Data"),
    ("Materials", "Chemicals", "Mining", "Metals", "Packaging"),
    ("Realty Trust", "Properties", "Residential", "Land", "Towers"),
    ("Power", "Electric", "Utilities", "Water", "Gas & Electric"),
)

_SYLLABLES_START = (
    "Vel", "Ar", "Cor", "Zen", "Nov", "Bri", "Cal", "Dra", "Ex", "Fal", "Gal", "Hel",
    "Jun", "Kel", "Lum", "Mar", "Nex", "Or", "Pra", "Quan", "Ros", "Sol", "Tal", "Ul",
    "Ver", "Wex", "Xan", "Yor", "Ast", "Bel", "Cen", "Dav", "Em", "Fen", "Gr", "Hal",
)  # fmt: skip
_SYLLABLES_MID = ("o", "a", "i", "e", "u", "ar", "en", "is", "", "an", "or", "el")
_SYLLABLES_END = (
    "ra", "nix", "tek", "dyne", "lia", "ron", "vo", "tis", "gen", "via", "lon", "rix",
    "ta", "mo", "sys", "ca", "nia", "thon", "dex", "lux",
)  # fmt: skip
_COMMON_SUFFIXES = ("Inc", "Corp", "Holdings Inc", "Co", "Group Inc", "Inc", "Corp", "Ltd")
_ADR_SUFFIXES = ("Ltd ADR", "plc ADR", "SA ADR", "AG ADR", "NV ADR", "ASA ADR")
_ETF_THEMES = (
    "US Large Cap", "Total Market", "Dividend Growth", "Short Treasury Bond",
    "Momentum Factor", "Small Cap Value", "Technology Select", "Gold Miners",
    "Aggregate Bond", "Emerging Markets", "Quality Factor", "Equal Weight",
)  # fmt: skip

# Rank-size curve of US market caps: (log10 of the fraction of the universe that is
# larger, log10 of the cap in USD), anchored on a 3,000-stock universe.
_CAP_CURVE_U = np.log10(np.array([1, 10, 100, 500, 1000, 2000, 3000]) / 3000.0)
_CAP_CURVE_LOG10 = np.array([12.40, 11.78, 11.04, 10.18, 9.70, 9.08, 7.70])
_CAP_LOG10_RANGE = (7.70, 12.48)  # about $50M to $3T before a little log noise
_CAP_TOP_SLOPE = 0.30  # log10 cap per decade of rank beyond the largest anchor

_MAX_TICKER_LEN = 5
_TICKER_CAPACITY = sum(26**k for k in range(1, _MAX_TICKER_LEN + 1))
_TICKER_LEN_PROBS = (0.004, 0.03, 0.38, 0.53, 0.056)


def generate_market(
    *,
    seed: int = 42,
    n_symbols: int = 3000,
    n_days: int = 504,
    start: datetime.date = datetime.date(2023, 1, 3),
    sessions: Sequence[datetime.date] | None = None,
) -> MarketData:
    """Generate a deterministic synthetic US equity market.

    Args:
        seed: Seed of ``numpy.random.default_rng``; equal arguments give
            byte-identical tables.
        n_symbols: Number of securities (>= 1).
        n_days: Number of sessions (>= 1).
        start: First allowed session date; the first session on or after it is
            the first day of data.
        sessions: Optional session calendar; its first ``n_days`` dates on or after
            ``start`` are used. By default the XNYS calendar is used.

    Returns:
        ``MarketData`` whose ``securities`` table follows ``SECURITIES_SCHEMA``
        (sorted by symbol) and whose ``prices`` table follows ``PRICES_SCHEMA``
        (sorted by date, then symbol).

    Raises:
        ValueError: If ``n_symbols`` or ``n_days`` is below 1, ``n_symbols``
            exceeds the number of distinct 1-5 letter tickers, or ``sessions``
            holds fewer than ``n_days`` dates on or after ``start``.
    """
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    if n_days < 1:
        raise ValueError(f"n_days must be >= 1, got {n_days}")
    if n_symbols > _TICKER_CAPACITY:
        raise ValueError(
            f"n_symbols must be <= {_TICKER_CAPACITY} (distinct 1-5 letter tickers), "
            f"got {n_symbols}"
        )
    day_numbers = _session_day_numbers(start, n_days, sessions)
    rng = np.random.default_rng(seed)
    universe = _Universe(rng, n_symbols, n_days)
    securities = universe.securities_table()
    prices = _simulate_prices(rng, universe, day_numbers)
    return MarketData(securities=securities, prices=prices)


# --------------------------------------------------------------------------- sessions


def _session_day_numbers(
    start: datetime.date, n_days: int, sessions: Sequence[datetime.date] | None
) -> npt.NDArray[np.int32]:
    """Sessions as days since 1970-01-01 (int32), ``n_days`` of them from ``start``."""
    start_day = np.datetime64(start, "D")
    if sessions is None:
        return _xnys_day_numbers(start, n_days)
    days = np.unique(np.asarray(sessions, dtype="datetime64[D]"))
    days = days[days >= start_day]
    if days.size < n_days:
        raise ValueError(
            f"sessions holds {days.size} dates on or after {start}, need n_days={n_days}"
        )
    return days[:n_days].astype(np.int64).astype(np.int32)


@functools.lru_cache(maxsize=32)
def _xnys_day_numbers(start: datetime.date, n_days: int) -> npt.NDArray[np.int32]:
    """The first ``n_days`` XNYS sessions on or after ``start`` (cached, read-only)."""
    start_day = np.datetime64(start, "D")
    horizon = int(n_days * 1.6) + 30
    while True:
        end = start + datetime.timedelta(days=horizon)
        with warnings.catch_warnings():
            # exchange_calendars still reads Series.values (deprecated in pandas 3.1)
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            calendar = exchange_calendars.get_calendar("XNYS", start=start, end=end)
        days = np.asarray(calendar.sessions.values, dtype="datetime64[D]")
        days = days[days >= start_day]
        if days.size >= n_days:
            out = days[:n_days].astype(np.int64).astype(np.int32)
            out.flags.writeable = False
            return out
        horizon *= 2


# --------------------------------------------------------------------------- universe


class _Universe:
    """Static per-security attributes (all arrays indexed in symbol order)."""

    def __init__(self, rng: np.random.Generator, n: int, n_days: int) -> None:
        self.n = n
        self.n_days = n_days
        self.symbols = _make_symbols(rng, n)

        # Security types: exact counts, randomly placed.
        n_etf = round(n * _ETF_SHARE)
        n_adr = round(n * _ADR_SHARE)
        kind = np.full(n, _TYPE_COMMON, dtype=np.int64)
        order = rng.permutation(n)
        kind[order[:n_etf]] = _TYPE_ETF
        kind[order[n_etf : n_etf + n_adr]] = _TYPE_ADR
        self.kind = kind
        is_etf = kind == _TYPE_ETF
        self.is_etf = is_etf
        n_sectors = len(GICS_SECTORS)

        # Two share classes for ~2% of companies (common stocks only).
        common = np.flatnonzero(kind == _TYPE_COMMON)
        n_pairs = round(common.size * 0.02 / 1.02)
        picked = rng.choice(common, size=2 * n_pairs, replace=False).astype(np.int64)
        primary = np.sort(picked[:n_pairs])
        secondary = picked[n_pairs:]
        self.pair_primary: IntArray = primary
        self.pair_secondary: IntArray = secondary
        is_secondary = np.zeros(n, dtype=np.bool_)
        is_secondary[secondary] = True

        # Sectors (code n_sectors = no sector, for ETFs); every sector once if possible.
        sector = rng.choice(n_sectors, size=n, p=np.asarray(_SECTOR_WEIGHTS)).astype(np.int64)
        operating = rng.permutation(np.flatnonzero(~is_etf & ~is_secondary))
        seeded = operating[: min(n_sectors, operating.size)]
        sector[seeded] = np.arange(seeded.size)
        sector[is_etf] = n_sectors
        sector[secondary] = sector[primary]
        self.sector = sector

        industry_count = np.array([len(x) for x in _INDUSTRIES] + [1])
        self.industry_pick = np.floor(rng.random(n) * industry_count[sector]).astype(np.int64)

        # Listing venue: short tickers mostly NYSE, long ones mostly Nasdaq.
        lengths = np.strings.str_len(self.symbols)
        u_venue = rng.random(n)
        p_nyse = np.where(lengths <= 3, 0.85, 0.08)
        exchange = np.where(u_venue < p_nyse, "XNYS", np.where(u_venue < 0.97, "XNAS", "XASE"))
        self.exchange: StrArray = np.where(is_etf, "ARCX", exchange)

        # Market caps: stratified rank-size quantiles, sector tilt, log noise.
        u_rank = (rng.permutation(n) + 0.25 + 0.5 * rng.random(n)) / n
        log_u = np.log10(u_rank)
        log_cap = np.interp(log_u, _CAP_CURVE_U, _CAP_CURVE_LOG10)
        beyond = log_u < _CAP_CURVE_U[0]
        log_cap[beyond] += _CAP_TOP_SLOPE * (_CAP_CURVE_U[0] - log_u[beyond])
        tilt = np.append(np.asarray(_SECTOR_CAP_TILT), 0.0)
        log_cap = np.clip(log_cap + tilt[sector], *_CAP_LOG10_RANGE) + rng.normal(0.0, 0.04, n)

        # Initial close in [5, 500], mildly increasing with size (rank transform).
        size_score = (log_cap - log_cap.mean()) / max(float(log_cap.std()), 1e-12)
        score = 0.5 * size_score + rng.standard_normal(n)
        price_q = (np.argsort(np.argsort(score)) + 0.5) / n
        log_price = math.log(5.0) + price_q * (math.log(500.0) - math.log(5.0))

        # Risk parameters.
        beta_mean = np.append(np.asarray(_SECTOR_BETA), 1.0)[sector]
        beta = np.clip(rng.normal(beta_mean, 0.3), 0.2, 2.2)
        beta_etf = np.clip(rng.normal(1.0, 0.1, n), 0.5, 1.3)
        self.beta: FloatArray = np.where(is_etf, beta_etf, beta)
        vol_mult = np.append(np.asarray(_SECTOR_VOL_MULT), 1.0)[sector]
        idio = np.clip(0.25 + 0.12 * (10.0 - log_cap), 0.12, 0.9) * vol_mult
        idio *= np.exp(rng.normal(0.0, 0.2, n))
        idio_etf = rng.uniform(0.02, 0.08, n)
        self.idio_vol: FloatArray = np.where(is_etf, idio_etf, idio) / math.sqrt(_YEAR)
        self.alpha: FloatArray = rng.normal(0.0, 0.03, n) / _YEAR

        # Life cycle: IPOs and delistings.
        first = np.zeros(n, dtype=np.int64)
        last = np.full(n, n_days - 1, dtype=np.int64)
        u_ipo = rng.random(n)
        u_ipo_day = rng.random(n)
        u_delist = rng.random(n)
        u_delist_day = rng.random(n)
        if n_days > 1:
            ipo = u_ipo < 0.08
            first[ipo] = 1 + np.floor(u_ipo_day[ipo] * (n_days - 1)).astype(np.int64)
            delist = u_delist < 0.06
            span = n_days - 1 - first
            last[delist] = first[delist] + np.floor(u_delist_day[delist] * span[delist]).astype(
                np.int64
            )

        # Dividend policy.
        payer = rng.random(n) < np.where(is_etf, 0.5, 0.4)
        self.div_yield: FloatArray = rng.uniform(0.01, 0.05, n)
        self.div_phase: IntArray = rng.integers(0, _DIVIDEND_PERIOD, n)

        cap_share = rng.uniform(0.2, 1.0, n_pairs)
        price_jitter = rng.uniform(0.9, 1.1, n_pairs)
        for arr in (self.industry_pick, first, last, self.div_phase):
            arr[secondary] = arr[primary]
        for farr in (self.beta, self.idio_vol, self.alpha, self.div_yield):
            farr[secondary] = farr[primary]
        payer[secondary] = payer[primary]
        self.exchange[secondary] = self.exchange[primary]
        log_cap[secondary] = log_cap[primary] + np.log10(cap_share)
        log_price[secondary] = np.clip(
            log_price[primary] + np.log(price_jitter), math.log(5.0), math.log(500.0)
        )

        self.first: IntArray = first
        self.last: IntArray = last
        self.payer: BoolArray = payer
        self.cap0: FloatArray = 10.0**log_cap
        self.close0: FloatArray = np.exp(log_price)
        self.shares0: FloatArray = self.cap0 / self.close0
        turnover = np.exp(rng.normal(math.log(0.006), 0.5, n))
        turnover_etf = np.exp(rng.normal(math.log(0.01), 0.8, n))
        self.turnover: FloatArray = np.where(is_etf, turnover_etf, turnover)

        self.names = self._make_names(rng)
        company_id = np.full(n, "", dtype="<U7")
        if n_pairs:
            numbers = np.arange(1, n_pairs + 1).astype(str)
            ids = np.strings.add("C", np.strings.zfill(numbers, 6))
            company_id[primary] = ids
            company_id[secondary] = ids
        self.company_id: StrArray = company_id

    def _make_names(self, rng: np.random.Generator) -> StrArray:
        """Company names from syllables, a sector word and a corporate suffix."""
        n = self.n
        primary, secondary = self.pair_primary, self.pair_secondary
        base = np.strings.add(
            np.strings.add(
                np.asarray(_SYLLABLES_START)[rng.integers(0, len(_SYLLABLES_START), n)],
                np.asarray(_SYLLABLES_MID)[rng.integers(0, len(_SYLLABLES_MID), n)],
            ),
            np.asarray(_SYLLABLES_END)[rng.integers(0, len(_SYLLABLES_END), n)],
        )
        words = np.asarray((*_SECTOR_WORDS, ("Global",) * len(_SECTOR_WORDS[0])))
        word = words[self.sector, rng.integers(0, words.shape[1], n)]
        common_suffix = np.asarray(_COMMON_SUFFIXES)[rng.integers(0, len(_COMMON_SUFFIXES), n)]
        adr_suffix = np.asarray(_ADR_SUFFIXES)[rng.integers(0, len(_ADR_SUFFIXES), n)]
        theme = np.asarray(_ETF_THEMES)[rng.integers(0, len(_ETF_THEMES), n)]
        suffix = np.where(self.kind == _TYPE_ADR, adr_suffix, common_suffix)
        for arr in (base, word, suffix):  # a second share class shares the company name
            arr[secondary] = arr[primary]
        share_class = np.full(n, "", dtype="<U8")
        share_class[primary] = " Class A"
        share_class[secondary] = " Class B"
        company = np.strings.add(np.strings.add(np.strings.add(base, " "), word), " ")
        company = np.strings.add(np.strings.add(company, suffix), share_class)
        etf = np.strings.add(np.strings.add(np.strings.add(base, " "), theme), " ETF")
        names: StrArray = np.where(self.is_etf, etf, company)
        return names

    def securities_table(self) -> pa.Table:
        """The security master as an Arrow table with ``SECURITIES_SCHEMA``."""
        n = self.n
        sector_names = np.asarray((*GICS_SECTORS, ""))
        width = max(len(x) for x in _INDUSTRIES)
        industry_table = np.asarray([(*x, *([""] * (width - len(x)))) for x in _INDUSTRIES])
        industry_table = np.vstack([industry_table, np.full((1, width), "")])
        industry = industry_table[self.sector, self.industry_pick]
        no_sector = self.is_etf
        no_company = self.company_id == ""
        kinds = np.asarray(_TYPE_NAMES)[self.kind]
        arrays = [
            pa.array(self.symbols, type=pa.string()),
            pa.array(self.names, type=pa.string()),
            pa.array(self.exchange, type=pa.string()),
            pa.array(sector_names[self.sector], type=pa.string(), mask=no_sector),
            pa.array(industry, type=pa.string(), mask=no_sector),
            pa.array(np.full(n, "USD"), type=pa.string()),
            pa.array(kinds, type=pa.string()),
            pa.array(self.company_id, type=pa.string(), mask=no_company),
        ]
        return pa.Table.from_arrays(arrays, schema=SECURITIES_SCHEMA)


def _make_symbols(rng: np.random.Generator, n: int) -> StrArray:
    """``n`` distinct uppercase tickers of 1-5 letters, sorted."""
    capacity = [26**k for k in range(1, _MAX_TICKER_LEN + 1)]
    counts = [int(c) for c in rng.multinomial(n, np.asarray(_TICKER_LEN_PROBS))]
    for k in range(_MAX_TICKER_LEN - 1):  # push overflow to longer tickers ...
        extra = max(0, counts[k] - capacity[k])
        counts[k] -= extra
        counts[k + 1] += extra
    for k in range(_MAX_TICKER_LEN - 1, 0, -1):  # ... and back if even 5 letters overflow
        extra = max(0, counts[k] - capacity[k])
        counts[k] -= extra
        counts[k - 1] += extra
    parts: list[StrArray] = []
    for length, count in enumerate(counts, start=1):
        codes = rng.choice(capacity[length - 1], size=count, replace=False).astype(np.int64)
        powers = 26 ** np.arange(length - 1, -1, -1, dtype=np.int64)
        letters = ((codes[:, None] // powers[None, :]) % 26 + ord("A")).astype(np.uint8)
        parts.append(np.ascontiguousarray(letters).view(f"S{length}").ravel().astype(str))
    return np.sort(np.concatenate(parts))


# --------------------------------------------------------------------------- prices


def _vol_regime(rng: np.random.Generator, n_days: int) -> FloatArray:
    """Volatility multiplier with E[m^2] = 1: exp of an AR(1) in log vol (phi 0.98)."""
    phi, stationary_sd = 0.98, 0.35
    kernel = phi ** np.arange(400)
    shocks = rng.normal(0.0, stationary_sd * math.sqrt(1.0 - phi**2), n_days + 400)
    log_vol = np.convolve(shocks, kernel)[400 : 400 + n_days]
    out: FloatArray = np.exp(log_vol - stationary_sd**2)
    return out


def _unit_t(rng: np.random.Generator, size: tuple[int, ...]) -> FloatArray:
    """Student-t draws scaled to unit variance and clipped at +-_T_CLIP."""
    draws: FloatArray = rng.standard_t(_T_DF, size=size)
    draws *= math.sqrt((_T_DF - 2.0) / _T_DF)
    np.clip(draws, -_T_CLIP, _T_CLIP, out=draws)
    return draws


def _periodic_cells(
    cols: IntArray,
    period: int,
    phase: IntArray,
    u: _Universe,
    present: BoolArray,
) -> tuple[IntArray, IntArray]:
    """(day, security) cells at ``phase + k * period`` that are non-first trading rows."""
    n_k = u.n_days // period + 1
    days = phase[cols][:, None] + period * np.arange(n_k, dtype=np.int64)[None, :]
    owners = np.broadcast_to(cols[:, None], days.shape)
    inside = days < u.n_days
    t, j = days[inside], owners[inside]
    keep = (t > u.first[j]) & (t <= u.last[j]) & present[t, j]
    return t[keep], j[keep]


def _presence(rng: np.random.Generator, u: _Universe) -> BoolArray:
    """(days x securities) mask of cells that carry a row (life minus halts)."""
    n, n_days = u.n, u.n_days
    day = np.arange(n_days, dtype=np.int64)[:, None]
    present: BoolArray = (day >= u.first[None, :]) & (day <= u.last[None, :])

    # Single-day halts (~0.1% of cells), strictly inside the life.
    n_cells = round(0.001 * n * n_days)
    flat = rng.integers(0, n * n_days, n_cells)
    t, j = flat // n, flat % n
    inner = (t > u.first[j]) & (t < u.last[j])
    present[t[inner], j[inner]] = False

    # Multi-day halts (2-10 sessions) for ~1% of securities.
    pick = rng.random(n) < 0.01
    u_start = rng.random(n)
    length = rng.integers(2, 11, n)
    cols = np.flatnonzero(pick & (u.last - u.first >= 2))
    lo, hi = u.first[cols] + 1, u.last[cols] - 1
    begin = lo + np.floor(u_start[cols] * (hi - lo + 1)).astype(np.int64)
    end = np.minimum(begin + length[cols] - 1, hi)
    halted = (day >= begin[None, :]) & (day <= end[None, :])
    present[:, cols] &= ~halted
    return present


def _simulate_prices(
    rng: np.random.Generator, u: _Universe, day_numbers: npt.NDArray[np.int32]
) -> pa.Table:
    """Simulate the daily bars and flatten them into a ``PRICES_SCHEMA`` table."""
    n, n_days = u.n, u.n_days
    n_sectors = len(GICS_SECTORS)
    cols_all = np.arange(n, dtype=np.int64)

    # Factors.
    regime = _vol_regime(rng, n_days)
    market_vol = _MARKET_VOL * regime
    market = _MARKET_DRIFT - 0.5 * market_vol**2 + market_vol * _unit_t(rng, (n_days,))
    sector_f = np.zeros((n_days, n_sectors + 1))
    sector_vol = _SECTOR_VOL * regime[:, None]
    sector_f[:, :n_sectors] = sector_vol * _unit_t(rng, (n_days, n_sectors)) - 0.5 * sector_vol**2

    # Log total returns g (days x securities), built in place.
    g = _unit_t(rng, (n_days, n))
    prim, sec = u.pair_primary, u.pair_secondary
    if prim.size:
        rho = 0.9
        g[:, sec] = rho * g[:, prim] + math.sqrt(1.0 - rho**2) * g[:, sec]
    g *= u.idio_vol[None, :]
    g *= (0.6 + 0.4 * regime)[:, None]
    g += (u.alpha - 0.5 * u.idio_vol**2)[None, :]
    g += np.multiply.outer(market, u.beta)
    g += sector_f[:, u.sector]

    present = _presence(rng, u)
    g[~present] = 0.0  # halts and life edges: price level is kept
    g[u.first, cols_all] = 0.0  # first row: close = initial close

    # Volume activity factor (float32 to save memory): noise * (1 + k |g|).
    activity = np.abs(g, dtype=np.float32, casting="same_kind")
    activity *= _VOLUME_RETURN_SENSITIVITY
    activity += 1.0
    noise = rng.standard_normal((n_days, n), dtype=np.float32)
    noise *= 0.35
    np.exp(noise, out=noise)
    activity *= noise
    del noise

    # Corporate actions.
    div_t, div_j = _periodic_cells(
        np.flatnonzero(u.payer), _DIVIDEND_PERIOD, u.div_phase, u, present
    )
    div_q = u.div_yield[div_j] / 4.0

    split_u = rng.random(n)
    split_ratio_pick = rng.choice(np.array([2.0, 3.0, 4.0]), size=n, p=[0.6, 0.25, 0.15])
    split_day_u = rng.random(n)
    forward = split_u < 0.03
    reverse = (split_u >= 0.03) & (split_u < 0.033)
    ratio_by_col = np.where(forward, split_ratio_pick, np.where(reverse, 0.5, 1.0))
    split_j = np.flatnonzero((forward | reverse) & (u.last > u.first))
    split_t0 = u.first[split_j] + 1
    split_t0 += np.floor(split_day_u[split_j] * (u.last[split_j] - u.first[split_j])).astype(
        np.int64
    )
    day = np.arange(n_days, dtype=np.int64)[:, None]
    split_t = np.argmax(present[:, split_j] & (day >= split_t0[None, :]), axis=0).astype(np.int64)
    split_r = ratio_by_col[split_j]

    shares_period = np.where(u.is_etf, _ETF_UNIT_PERIOD, _DIVIDEND_PERIOD)
    shares_phase = np.floor(rng.random(n) * shares_period).astype(np.int64)
    changer = u.is_etf | (rng.random(n) < 0.5)
    stock_cols = np.flatnonzero(changer & ~u.is_etf)
    etf_cols = np.flatnonzero(changer & u.is_etf)
    sc_t1, sc_j1 = _periodic_cells(stock_cols, _DIVIDEND_PERIOD, shares_phase, u, present)
    sc_t2, sc_j2 = _periodic_cells(etf_cols, _ETF_UNIT_PERIOD, shares_phase, u, present)
    sc_t = np.concatenate([sc_t1, sc_t2])
    sc_j = np.concatenate([sc_j1, sc_j2])
    sc_delta = np.concatenate(
        [
            rng.uniform(-0.02, 0.012, sc_t1.size),
            np.clip(rng.normal(0.003, 0.03, sc_t2.size), -0.1, 0.1),
        ]
    )

    # Adjustment log factors e = log(1 - q) - log(s) on event cells; close increments g + e.
    adj = np.zeros((n_days, n))
    adj[div_t, div_j] += np.log1p(-div_q)
    adj[split_t, split_j] -= np.log(split_r)
    g += adj

    # Close = close0 * exp(cumsum(g)).
    np.cumsum(g, axis=0, out=g)
    g += np.log(u.close0)[None, :]
    np.exp(g, out=g)
    close = g

    # Dividend cash: d = close(t) * s(t) * q / (1 - q), s(t) the split ratio on that day.
    split_day_by_col = np.full(n, -1, dtype=np.int64)
    split_day_by_col[split_j] = split_t
    s_on_div = np.where(split_day_by_col[div_j] == div_t, ratio_by_col[div_j], 1.0)
    div_cash = close[div_t, div_j] * s_on_div * div_q / (1.0 - div_q)

    # adj_close = close * exp(sum of e over later days): e's reverse exclusive cumsum.
    np.cumsum(adj, axis=0, out=adj)
    total = adj[-1].copy()
    np.subtract(total[None, :], adj, out=adj)
    np.exp(adj, out=adj)
    adj *= close

    # Shares outstanding: point-in-time changes and splits.
    shares = np.zeros((n_days, n))
    shares[sc_t, sc_j] += np.log1p(sc_delta)
    shares[split_t, split_j] += np.log(split_r)
    np.cumsum(shares, axis=0, out=shares)
    shares += np.log(u.shares0)[None, :]
    np.exp(shares, out=shares)

    # Row positions of event cells in the (date, symbol) ordered output.
    rows_per_day = present.sum(axis=1)
    day_offset = np.concatenate([[0], np.cumsum(rows_per_day)[:-1]]).astype(np.int64)
    within = np.cumsum(present, axis=1, dtype=np.int32)
    div_pos = day_offset[div_t] + within[div_t, div_j] - 1
    split_pos = day_offset[split_t] + within[split_t, split_j] - 1
    del within

    # Flatten to rows (row-major = date then symbol, symbols are sorted).
    col_idx = np.broadcast_to(np.arange(n, dtype=np.int32)[None, :], (n_days, n))[present]
    dates = np.repeat(day_numbers, rows_per_day)
    adj_rows = adj[present]
    del adj
    shares_rows = shares[present]
    del shares
    close_rows = close[present]
    del close, g
    activity_rows = activity[present]
    del activity, present
    n_rows = close_rows.size

    volume = shares_rows * u.turnover[col_idx]
    volume *= activity_rows
    del activity_rows
    np.round(volume, out=volume)
    np.maximum(volume, 1.0, out=volume)
    market_cap = close_rows * shares_rows

    dividend = np.zeros(n_rows)
    dividend[div_pos] = div_cash
    dividend_null = np.ones(n_rows, dtype=np.bool_)
    dividend_null[div_pos] = False
    split = np.zeros(n_rows)
    split[split_pos] = split_r
    split_null = np.ones(n_rows, dtype=np.bool_)
    split_null[split_pos] = False

    symbol_col = pa.array(u.symbols, type=pa.string()).take(pa.array(col_idx))
    del col_idx
    arrays = [
        pa.array(dates, type=pa.date32()),
        symbol_col,
        pa.array(close_rows),
        pa.array(adj_rows),
        pa.array(volume),
        pa.array(shares_rows),
        pa.array(market_cap),
        pa.array(dividend, mask=dividend_null),
        pa.array(split, mask=split_null),
        # provenance: storage records the provider, the run's start and point_in_time
        pa.nulls(n_rows, pa.string()),
        pa.nulls(n_rows, pa.timestamp("us", tz="UTC")),
        pa.nulls(n_rows, pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=PRICES_SCHEMA)
