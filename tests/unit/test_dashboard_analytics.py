"""The market analytics panels' pure builders: tiles, price vs moving average, candles with VWAP, premium, trades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import polars as pl

from arbitrage.pairs import parse_pairs
from dashboard import analytics as panels

PAIRS = parse_pairs("BTC/USD=BTC/USD~BTC/USDT@1.0,ETH/USD=ETH/USD~ETH/USDT@1.0,ETH/BTC")
BTC = PAIRS[0]
T = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def changes(rows: list[tuple]) -> pl.DataFrame:
    """rows: (pair, exchange, minutes after T, change_pct)"""
    return pl.DataFrame([{"pair": p, "exchange": e, "ts": T + timedelta(minutes=m), "base_ts": T,
                          "change_pct": D(c)} for p, e, m, c in rows])


def test_tiles_show_the_latest_coinbase_change_with_an_arrow_per_pair():
    frame = changes([("BTC/USD", "coinbase", 1, "0.5"), ("BTC/USD", "coinbase", 60, "1.2"),
                     ("BTC/USD", "binance", 61, "9"), ("ETH/USD", "binance", 30, "-0.345"),
                     ("ETH/BTC", "coinbase", 30, "0")])
    tiles = panels.change_tiles(frame, PAIRS)
    assert [(t["text"], t["trend"]) for t in tiles] == [
        ("BTC ▲ 1.20%", "up"), ("ETH ▼ 0.34%", "down"), ("ETH/BTC ■ 0.00%", "flat")]
    assert tiles[0]["note"] == "coinbase mid, last 60 min" and tiles[1]["note"].startswith("binance")


def test_tiles_without_data_say_so():
    assert [t["text"] for t in panels.change_tiles(None, PAIRS[:1])] == ["BTC –"]


def test_candles_figure_draws_ohlc_and_vwap_of_the_chosen_exchange():
    candles = pl.DataFrame([{"window_start": T + timedelta(minutes=i), "open": D("100"), "high": D("102"),
                             "low": D("99"), "close": D("101"), "volume": D("3"), "vwap": D("100.5") + i,
                             "trades": 4} for i in range(3)])
    fig = panels.candles_figure(candles, BTC, "binance")
    kinds = [trace.type for trace in fig.data]
    assert kinds == ["candlestick", "scatter"]
    assert list(fig.data[1].y) == [100.5, 101.5, 102.5]
    assert "binance BTC/USDT" in fig.layout.title.text


def test_empty_panels_explain_what_is_missing():
    assert "No closed 1-minute candle" in panels.candles_figure(None, BTC, "coinbase").layout.annotations[0].text
    assert "arb stream analytics" in panels.price_ma_figure(None, None, BTC).layout.annotations[0].text
    assert "both exchanges" in panels.premium_figure(pl.DataFrame(), BTC).layout.annotations[0].text


def test_price_figure_has_a_mid_line_and_an_average_line_per_exchange():
    prices = pl.DataFrame([{"exchange": ex, "bucket_ts": T + timedelta(seconds=s), "close": D("100") + s}
                           for ex in ("coinbase", "binance") for s in range(3)])
    averages = pl.DataFrame([{"exchange": "coinbase", "window_end": T, "ma_mid": D("99.5")}])
    fig = panels.price_ma_figure(prices, averages, BTC)
    assert [t.name for t in fig.data] == ["coinbase BTC/USD mid", "coinbase 5-min average", "binance BTC/USDT mid"]


def test_premium_figure_uses_each_periods_latest_value():
    rows = [("hour", T, "3", 1), ("hour", T, "4", 2), ("day", T.replace(hour=0), "2.5", 2)]
    frame = pl.DataFrame([{"granularity": g, "period_start": s, "premium_bps": D(b),
                           "as_of_ts": T + timedelta(minutes=a)} for g, s, b, a in rows])
    fig = panels.premium_figure(frame, BTC)
    assert [(t.name, list(t.y)) for t in fig.data] == [("hourly", [4.0]), ("daily", [2.5])]


def test_trade_rows_are_newest_first_and_capped():
    trades = pl.DataFrame([{"exchange": "coinbase", "symbol": "BTC/USD", "side": "buy", "price": D("65000.5"),
                            "size": D("0.0100"), "event_ts": T + timedelta(seconds=i)} for i in range(30)])
    rows = panels.trade_rows(trades, limit=3)
    assert [r["time"] for r in rows] == ["01:00:29.000", "01:00:28.000", "01:00:27.000"]
    assert rows[0]["size"] == "0.01" and rows[0]["side"] == "buy"
