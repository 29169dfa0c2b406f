"""Tests for the deterministic synthetic market generator."""

from __future__ import annotations

import datetime
import io
import re
import warnings

import exchange_calendars
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from index_builder.providers.schema import (
    COMMON_STOCK,
    GICS_SECTORS,
    PRICES_SCHEMA,
    SECURITIES_SCHEMA,
    MarketData,
)
from index_builder.providers.synthetic_market import generate_market

START = datetime.date(2023, 1, 3)


def _xnys_sessions(start: datetime.date, n_days: int) -> list[datetime.date]:
    end = start + datetime.timedelta(days=int(n_days * 1.6) + 60)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        cal = exchange_calendars.get_calendar("XNYS", start=start, end=end)
    days = [d.date() for d in cal.sessions if d.date() >= start]
    return days[:n_days]


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _by_security(market: MarketData) -> pd.DataFrame:
    """Price rows sorted by (symbol, date) with previous-row columns of the same security."""
    df = market.prices.to_pandas()
    df = df.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    grouped = df.groupby("symbol", sort=False)
    for col in ("close", "adj_close", "market_cap", "shares_outstanding", "date"):
        df[f"prev_{col}"] = grouped[col].shift()
    df["is_last"] = grouped.cumcount(ascending=False) == 0
    df["s"] = df["split_ratio"].fillna(1.0)
    df["d"] = df["dividend"].fillna(0.0)
    return df


@pytest.fixture(scope="module")
def small() -> MarketData:
    return generate_market(seed=7, n_symbols=300, n_days=120)


@pytest.fixture(scope="module")
def medium() -> MarketData:
    return generate_market(seed=42, n_symbols=1000, n_days=504)


@pytest.fixture(scope="module")
def medium_rows(medium: MarketData) -> pd.DataFrame:
    return _by_security(medium)


@pytest.fixture(scope="module")
def medium_sessions() -> list[datetime.date]:
    return _xnys_sessions(START, 504)


# --------------------------------------------------------------------------- structure


def test_schemas_are_exact(small: MarketData) -> None:
    assert small.securities.schema.equals(SECURITIES_SCHEMA)
    assert small.prices.schema.equals(PRICES_SCHEMA)
    assert small.securities.num_rows == 300


def test_deterministic_for_same_seed_and_differs_across_seeds(small: MarketData) -> None:
    again = generate_market(seed=7, n_symbols=300, n_days=120)
    assert again.securities.equals(small.securities)
    assert again.prices.equals(small.prices)
    assert _ipc_bytes(again.securities) == _ipc_bytes(small.securities)
    assert _ipc_bytes(again.prices) == _ipc_bytes(small.prices)
    other = generate_market(seed=8, n_symbols=300, n_days=120)
    assert not other.securities.equals(small.securities)
    assert not other.prices.equals(small.prices)


def test_dates_are_the_xnys_sessions(
    medium: MarketData, medium_sessions: list[datetime.date]
) -> None:
    dates = sorted(pc.unique(medium.prices.column("date")).to_pylist())
    assert dates == medium_sessions
    assert dates[0] == START


def test_start_on_a_holiday_rolls_to_next_session() -> None:
    market = generate_market(seed=1, n_symbols=20, n_days=5, start=datetime.date(2023, 1, 1))
    dates = sorted(set(market.prices.column("date").to_pylist()))
    assert dates == _xnys_sessions(datetime.date(2023, 1, 1), 5)
    assert dates[0] == datetime.date(2023, 1, 3)


def test_custom_sessions_are_used() -> None:
    days = [datetime.date(2024, 3, 1) + datetime.timedelta(days=i) for i in range(40)]
    weekdays = [d for d in days if d.weekday() < 5]
    market = generate_market(
        seed=3, n_symbols=50, n_days=10, start=datetime.date(2024, 3, 5), sessions=weekdays
    )
    dates = sorted(set(market.prices.column("date").to_pylist()))
    expected = [d for d in weekdays if d >= datetime.date(2024, 3, 5)][:10]
    assert dates == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_symbols": 0}, "n_symbols"),
        ({"n_symbols": -5}, "n_symbols"),
        ({"n_days": 0}, "n_days"),
        ({"sessions": [START], "n_days": 2}, "sessions"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_market(**kwargs)  # type: ignore[arg-type]


def test_tiny_markets_work() -> None:
    one = generate_market(seed=0, n_symbols=1, n_days=1)
    assert one.securities.num_rows == 1
    assert one.prices.num_rows == 1
    assert one.prices.schema.equals(PRICES_SCHEMA)
    two = generate_market(seed=0, n_symbols=3, n_days=2)
    assert two.prices.num_rows >= 3


def test_rows_sorted_unique_and_symbols_valid(medium: MarketData) -> None:
    sec = medium.securities.to_pandas()
    prices = medium.prices.to_pandas()
    symbols = sec["symbol"].tolist()
    assert symbols == sorted(symbols)
    assert len(set(symbols)) == len(symbols)
    assert all(re.fullmatch(r"[A-Z]{1,5}", s) for s in symbols)
    assert not prices.duplicated(["date", "symbol"]).any()
    order = prices.sort_values(["date", "symbol"], kind="stable").index
    assert (order == prices.index).all()
    assert set(prices["symbol"]) == set(symbols)  # every security trades at least once


def test_six_thousand_symbol_shape() -> None:
    market = generate_market(seed=11, n_symbols=6000, n_days=60)
    sec = market.securities
    prices = market.prices
    assert sec.num_rows == 6000
    assert len(set(sec.column("symbol").to_pylist())) == 6000
    assert len(pc.unique(prices.column("date"))) == 60
    assert 0.9 * 6000 * 60 < prices.num_rows < 6000 * 60
    assert sec.schema.equals(SECURITIES_SCHEMA)
    assert prices.schema.equals(PRICES_SCHEMA)
    types = pd.Series(sec.column("type").to_pylist()).value_counts(normalize=True)
    assert 0.9 < types[COMMON_STOCK] < 0.96
    assert 0.03 < types["ETF"] < 0.07
    assert 0.01 < types["ADR"] < 0.03


# --------------------------------------------------------------------------- values


def test_prices_positive_and_market_cap_consistent(medium: MarketData) -> None:
    df = medium.prices.to_pandas()
    for col in ("close", "adj_close", "market_cap", "shares_outstanding", "volume"):
        values = df[col].to_numpy()
        assert np.isfinite(values).all(), col
        assert (values > 0).all(), col
    np.testing.assert_allclose(df["market_cap"], df["close"] * df["shares_outstanding"], rtol=1e-12)
    volume = df["volume"].to_numpy()
    assert (volume == np.round(volume)).all()


def test_adj_close_backward_adjusted(medium_rows: pd.DataFrame) -> None:
    df = medium_rows
    last = df[df["is_last"]]
    assert (last["adj_close"] == last["close"]).all()
    cont = df[df["prev_close"].notna()]
    lhs = cont["adj_close"] / cont["prev_adj_close"]
    rhs = (cont["close"] * cont["s"] + cont["d"]) / cont["prev_close"]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9)
    # adjustment actually happened somewhere (dividends make adj < close earlier on)
    assert (df["adj_close"] < df["close"] * (1 - 1e-6)).any()


def test_adj_close_identity_small(small: MarketData) -> None:
    df = _by_security(small)
    cont = df[df["prev_close"].notna()]
    lhs = cont["adj_close"] / cont["prev_adj_close"]
    rhs = (cont["close"] * cont["s"] + cont["d"]) / cont["prev_close"]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9)


def test_splits_change_price_not_market_cap(medium_rows: pd.DataFrame) -> None:
    df = medium_rows
    splits = df[df["split_ratio"].notna()]
    assert len(splits) >= 10
    assert splits["prev_close"].notna().all()  # never on a security's first row
    ratios = splits["split_ratio"].to_numpy()
    assert set(np.unique(ratios)) <= {0.5, 2.0, 3.0, 4.0}
    log_ratio = np.log(ratios)
    price_move = np.log(splits["close"] / splits["prev_close"]).to_numpy()
    cap_move = np.log(splits["market_cap"] / splits["prev_market_cap"]).to_numpy()
    share_move = np.log(splits["shares_outstanding"] / splits["prev_shares_outstanding"])
    # close jumps by about 1/ratio, shares by about ratio, cap continuous-ish
    assert np.all(np.abs(price_move + log_ratio) < 0.35)
    assert np.all(np.abs(share_move.to_numpy() - log_ratio) < 0.05)
    assert np.all(np.abs(cap_move) < 0.5 * np.abs(log_ratio))
    assert (splits.groupby("symbol").size() == 1).all()  # at most one split each


def test_shares_outstanding_point_in_time(medium_rows: pd.DataFrame) -> None:
    df = medium_rows
    cont = df[df["prev_close"].notna() & df["split_ratio"].isna()]
    move = np.abs(np.log(cont["shares_outstanding"] / cont["prev_shares_outstanding"]))
    assert (move < 0.11).all()
    changed = cont.loc[move > 0, "symbol"].nunique()
    assert changed > 0.3 * df["symbol"].nunique()


def test_dividends(medium: MarketData, medium_rows: pd.DataFrame) -> None:
    df = medium_rows
    div = df[df["dividend"].notna()]
    assert len(div) > 100
    assert (div["dividend"] > 0).all()
    assert div["prev_close"].notna().all()
    # cash is a quarterly yield (1-5% per year) of the cum-dividend value
    q = div["dividend"] / (div["close"] * div["s"] + div["dividend"])
    assert q.between(0.01 / 4 - 1e-12, 0.05 / 4 + 1e-12).all()
    # paid every 63 sessions per security
    sessions = sorted(df["date"].unique())
    index = {d: i for i, d in enumerate(sessions)}
    pos = div["date"].map(index)
    gaps = pos.groupby(div["symbol"]).diff().dropna()
    assert (gaps % 63 == 0).all()
    sec = medium.securities.to_pandas().set_index("symbol")
    common = sec.index[sec["type"] == COMMON_STOCK]
    payers = set(div["symbol"]) & set(common)
    assert 0.25 < len(payers) / len(common) < 0.55


def test_life_cycle_and_halts(
    medium_rows: pd.DataFrame, medium_sessions: list[datetime.date]
) -> None:
    df = medium_rows
    index = {d: i for i, d in enumerate(medium_sessions)}
    pos = df["date"].map(index)
    life = pos.groupby(df["symbol"]).agg(["min", "max", "count"])
    n = len(life)
    ipo = (life["min"] > 0).mean()
    delist = (life["max"] < len(medium_sessions) - 1).mean()
    assert 0.04 < ipo < 0.12
    assert 0.03 < delist < 0.10
    expected_rows = life["max"] - life["min"] + 1
    missing = (expected_rows - life["count"]).sum()
    assert life["count"].le(expected_rows).all()
    cells = expected_rows.sum()
    assert 0.0005 < missing / cells < 0.01
    assert (expected_rows > life["count"]).sum() > 0.05 * n
    gaps = pos.groupby(df["symbol"]).diff().dropna()
    assert (gaps >= 1).all()
    assert (gaps > 2).any()  # a multi-day halt


def test_halted_security_keeps_price_level(medium_rows: pd.DataFrame) -> None:
    df = medium_rows
    # a gap in a security's rows is not a jump: the move after a halt is like any day's
    cont = df[df["prev_close"].notna()]
    total = np.log((cont["close"] * cont["s"] + cont["d"]) / cont["prev_close"])
    assert total.abs().max() < 2.5
    sessions = sorted(df["date"].unique())
    index = {d: i for i, d in enumerate(sessions)}
    gap = cont["date"].map(index) - cont["prev_date"].map(index)
    after_halt = total[gap > 1]
    assert len(after_halt) > 0
    assert after_halt.abs().median() < 0.05


def test_security_master_fields(medium: MarketData) -> None:
    sec = medium.securities.to_pandas()
    assert set(sec["sector"].dropna()) == set(GICS_SECTORS)
    assert set(sec["type"]) == {COMMON_STOCK, "ETF", "ADR"}
    etf = sec[sec["type"] == "ETF"]
    assert len(etf) > 0
    assert etf["sector"].isna().all()
    assert etf["industry"].isna().all()
    assert (etf["exchange"] == "ARCX").all()
    other = sec[sec["type"] != "ETF"]
    assert other["sector"].isin(GICS_SECTORS).all()
    assert other["industry"].notna().all()
    assert other["exchange"].isin(["XNAS", "XNYS", "XASE"]).all()
    assert (other["exchange"].isin(["XNAS", "XNYS"])).mean() > 0.9
    assert (sec["currency"] == "USD").all()
    assert sec["name"].notna().all()
    assert (sec["name"].str.len() > 3).all()
    counts = sec["sector"].value_counts()
    big = counts[["Information Technology", "Health Care", "Industrials", "Financials"]]
    small = counts[["Utilities", "Real Estate", "Materials"]]
    assert big.min() > small.max()


def test_all_sectors_present_in_small_market(small: MarketData) -> None:
    sec = small.securities.to_pandas()
    assert set(sec["sector"].dropna()) == set(GICS_SECTORS)
    assert (sec["type"] == "ETF").any()
    assert sec.loc[sec["type"] == "ETF", "sector"].isna().all()


def test_share_classes(medium: MarketData) -> None:
    sec = medium.securities.to_pandas()
    with_id = sec[sec["company_id"].notna()]
    assert len(with_id) > 0
    assert (with_id.groupby("company_id").size() == 2).all()
    assert with_id.groupby("company_id")["sector"].nunique().eq(1).all()
    assert (with_id["type"] == COMMON_STOCK).all()
    share = with_id["company_id"].nunique() / (len(sec) - with_id["company_id"].nunique())
    assert 0.01 < share < 0.03


def test_market_caps_heavy_tailed_and_initial_prices(
    medium_rows: pd.DataFrame, medium_sessions: list[datetime.date]
) -> None:
    df = medium_rows
    first_rows = df[df["prev_close"].isna()]
    assert first_rows["close"].between(5.0, 500.0).all()
    caps = df[df["date"] == medium_sessions[0]]["market_cap"].sort_values(ascending=False)
    assert caps.iloc[0] > 5e11
    assert caps.iloc[0] < 6e12
    assert caps.iloc[-1] < 3e8
    assert caps.iloc[-1] > 5e6
    assert caps.iloc[:10].sum() > 0.2 * caps.sum()
    assert caps.iloc[0] / caps.median() > 100


def test_volume_correlates_with_market_cap(medium_rows: pd.DataFrame) -> None:
    df = medium_rows
    by_symbol = df.groupby("symbol")[["market_cap"]].mean()
    by_symbol["dollar_volume"] = (df["volume"] * df["close"]).groupby(df["symbol"]).mean()
    ranks = by_symbol.rank()
    assert ranks["market_cap"].corr(ranks["dollar_volume"]) > 0.6


def test_return_dispersion_is_realistic(medium_rows: pd.DataFrame) -> None:
    df = medium_rows
    cont = df[df["prev_close"].notna()]
    total = (cont["close"] * cont["s"] + cont["d"]) / cont["prev_close"] - 1.0
    vol = total.groupby(cont["symbol"]).std() * np.sqrt(252)
    assert 0.2 < vol.median() < 0.6
    daily = total.groupby(cont["date"]).mean()
    assert 0.08 < daily.std() * np.sqrt(252) < 0.35
