"""The market analytics panels in a real headless Chromium: `arb dashboard` over a lake holding the analytics gold
tables must show the hourly-change tiles, the price vs moving-average lines, candles with VWAP, the premium chart
and the latest trades, and switch them with the pair."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import polars as pl
import pytest

from tests.integration.test_dashboard_browser import Dashboard, browser, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

TS = pl.Datetime("us", "UTC")
MONEY = pl.Decimal(30, 12)


def write(lake: Path, name: str, rows: list[dict], schema: dict) -> None:
    frame = pl.DataFrame(rows, schema=schema)
    frame.with_columns(pl.col(next(iter(c for c, t in schema.items() if t == TS))).dt.date().alias("date")) \
        .write_delta(str(lake / name), mode="append")


def build_analytics_lake(data_dir: Path, now: datetime) -> Path:
    lake = data_dir / "lake"
    minute = now.replace(second=0, microsecond=0)
    symbols = {"coinbase": "BTC/USD", "binance": "BTC/USDT"}
    candles = [{"exchange": ex, "symbol": sym, "window_start": minute - timedelta(minutes=10 - i),
                "window_end": minute - timedelta(minutes=9 - i), "open": D(65000 + 10 * i), "high": D(65050 + 10 * i),
                "low": D(64950 + 10 * i), "close": D(65020 + 10 * i), "volume": D("1.5"), "vwap": D(65010 + 10 * i),
                "trades": 12} for ex, sym in symbols.items() for i in range(10)]
    write(lake, "gold/candles_1m", candles, {
        "exchange": pl.String, "symbol": pl.String, "window_start": TS, "window_end": TS, "open": MONEY,
        "high": MONEY, "low": MONEY, "close": MONEY, "volume": pl.Decimal(38, 12), "vwap": MONEY,
        "trades": pl.Int64})
    prices = [{"exchange": ex, "symbol": sym, "bucket_ts": now - timedelta(seconds=120 - s), "high": D(65000 + s),
               "low": D(65000 + s), "close": D(65000 + s)} for ex, sym in symbols.items() for s in range(120)]
    write(lake, "gold/crash_bars", prices, {"exchange": pl.String, "symbol": pl.String, "bucket_ts": TS,
                                            "high": MONEY, "low": MONEY, "close": MONEY})
    averages = [{"exchange": ex, "symbol": sym, "window_start": minute - timedelta(minutes=15 - i),
                 "window_end": minute - timedelta(minutes=10 - i), "ma_mid": D(65030 + i), "last_mid": D(65040 + i),
                 "quotes": 600} for ex, sym in symbols.items() for i in range(10)]
    write(lake, "gold/mid_ma_5m", averages, {"exchange": pl.String, "symbol": pl.String, "window_start": TS,
                                             "window_end": TS, "ma_mid": MONEY, "last_mid": MONEY,
                                             "quotes": pl.Int64})
    changes = [{"pair": p, "exchange": "coinbase", "symbol": p, "ts": minute, "base_ts": minute - timedelta(hours=1),
                "base": D(100), "last": D(100) + D(c), "change_pct": D(c)}
               for p, c in (("BTC/USD", "1.2"), ("ETH/USD", "-0.5"))]
    write(lake, "gold/hourly_change", changes, {"pair": pl.String, "exchange": pl.String, "symbol": pl.String,
                                                "ts": TS, "base_ts": TS, "base": MONEY, "last": MONEY,
                                                "change_pct": MONEY})
    hour = now.replace(minute=0, second=0, microsecond=0)
    premium = [{"pair": "BTC/USD", "granularity": g, "period_start": start, "period_end": start + width,
                "coinbase_mid": D(65010), "binance_mid": D(65000), "premium_bps": D(b), "coinbase_quotes": 100,
                "binance_quotes": 200, "as_of_ts": now}
               for g, start, width, b in (("hour", hour - timedelta(hours=1), timedelta(hours=1), "1.5"),
                                          ("hour", hour, timedelta(hours=1), "2.25"),
                                          ("day", datetime.combine(now.date(), datetime.min.time(), UTC),
                                           timedelta(days=1), "1.75"))]
    write(lake, "gold/premium", premium, {"pair": pl.String, "granularity": pl.String, "period_start": TS,
                                          "period_end": TS, "coinbase_mid": MONEY, "binance_mid": MONEY,
                                          "premium_bps": MONEY, "coinbase_quotes": pl.Int64,
                                          "binance_quotes": pl.Int64, "as_of_ts": TS})
    trades = [{"exchange": ex, "symbol": sym, "price": D("65001.5") + i, "size": D("0.25"),
               "side": "buy" if i % 2 else "sell", "trade_id": f"{ex}-{i}", "event_ts": now - timedelta(seconds=30 - i)}
              for ex, sym in symbols.items() for i in range(5)]
    write(lake, "silver/trades", trades, {"exchange": pl.String, "symbol": pl.String, "price": MONEY,
                                          "size": MONEY, "side": pl.String, "trade_id": pl.String, "event_ts": TS})
    return data_dir


def trace_types(page, graph_id: str) -> list[str]:  # noqa: F811
    return page.evaluate("""id => {
        const gd = document.querySelector('#' + id + ' .js-plotly-plot');
        return (gd && gd.data ? gd.data : []).map(t => t.type || 'scatter');
    }""", graph_id)


def test_analytics_panels_render_tiles_lines_candles_premium_and_trades(tmp_path, page):  # noqa: F811
    data_dir = build_analytics_lake(tmp_path / "data", datetime.now(UTC))
    server = Dashboard(data_dir, tmp_path / "dashboard.log")
    try:
        page.goto(server.url)

        # Assert: every panel shows the lake's analytics
        page.wait_for_selector("#analytics-change-tiles :text('BTC ▲ 1.20%')", timeout=30_000)
        assert "ETH ▼ 0.50%" in page.inner_text("#analytics-change-tiles")
        page.wait_for_function("() => { const gd = document.querySelector('#analytics-candles-graph .js-plotly-plot');"
                               " return !!(gd && gd.data && gd.data.length == 2); }", timeout=30_000)
        assert trace_types(page, "analytics-candles-graph") == ["candlestick", "scatter"]
        assert trace_types(page, "analytics-price-graph") == ["scatter"] * 4
        assert trace_types(page, "analytics-premium-graph") == ["bar", "scatter"]
        page.wait_for_selector("#analytics-trades-table td:has-text('65,005.50')", timeout=30_000)
        assert "coinbase BTC/USD: 1-minute candles with VWAP" in page.inner_text("#analytics-candles-graph")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "dashboard-analytics.png"), full_page=True)

        # Act: Binance candles, then another pair (no data: clear empty states)
        page.get_by_role("radio", name="binance").check()
        page.wait_for_selector("#analytics-candles-graph :text('binance BTC/USDT: 1-minute candles')",
                               timeout=30_000)
        page.click("#pair-picker")
        page.get_by_role("option", name="ETH/BTC").click()
        page.wait_for_selector("#analytics-candles-graph :text('No closed 1-minute candle for binance ETH/BTC')",
                               timeout=30_000)
        assert "No premium for ETH/BTC" in page.inner_text("#analytics-premium-graph")
        assert page.server_errors == []
    finally:
        server.stop()
    print(f"screenshot: {tmp_path / 'dashboard-analytics.png'}")
