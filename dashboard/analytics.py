"""Market analytics panels: hourly-change tiles, price vs 5-minute moving average, 1-minute candles with VWAP, the
Coinbase premium and the latest trades, for the selected pair and time range.

Readers take the gold tables of `streaming.analytics` (and silver/trades); the figure builders are pure (data in,
Plotly figure or table rows out); one thin callback on a slower tick of its own joins them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
import polars as pl
from dash import Input, Output, dcc, html

from arbitrage.pairs import Pair
from arbitrage.symbols import split
from dashboard import ids
from dashboard.config import TIME_RANGES, DashboardConfig
from dashboard.data import US, Lake
from dashboard.figures import empty_figure, fmt_price
from dashboard.sections.common import card, table

CANDLES = "gold/candles_1m"
MOVING_AVERAGE = "gold/mid_ma_5m"
PRICE = "gold/crash_bars"  # 1-second mid bars: the live price line
CHANGE = "gold/hourly_change"
PREMIUM = "gold/premium"
TRADES = "silver/trades"

# Component ids (kept here: this section is added beside the others, not inside them).
TICK = "analytics-tick"
TILES = "analytics-change-tiles"
PRICE_GRAPH = "analytics-price-graph"
CANDLES_GRAPH = "analytics-candles-graph"
CANDLES_EXCHANGE = "analytics-candles-exchange"
PREMIUM_GRAPH = "analytics-premium-graph"
TRADES_TABLE = "analytics-trades-table"

REFRESH_MS = 5000  # minute bars: no need to redraw every second
TRADE_LIMIT = 20
COLORS = {"coinbase": "#1f77b4", "binance": "#ff7f0e"}
TRADE_COLUMNS = [("time", "time (UTC)"), ("exchange", "exchange"), ("symbol", "symbol"), ("side", "side"),
                 ("price", "price"), ("size", "size")]


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _floats(series: pl.Series) -> list[float]:
    return [float(v) for v in series.to_list()]


def _of_pair(pair: Pair) -> pl.Expr:
    return (((pl.col("exchange") == "coinbase") & (pl.col("symbol") == pair.coinbase))
            | ((pl.col("exchange") == "binance") & (pl.col("symbol") == pair.binance)))


# ---- pure builders -----------------------------------------------------------------------------------------------

def tile_label(pair: Pair) -> str:
    """`BTC` for a USD pair (what a ticker shows), the pair name otherwise."""
    base, quote = split(pair.name)
    return base if quote in ("USD", "USDT", "USDC") else pair.name


def change_tiles(changes: pl.DataFrame | None, pairs: tuple[Pair, ...]) -> list[dict[str, str]]:
    """One tile per pair from its latest hourly change (Coinbase first, Binance if Coinbase has none):
    `{"pair", "text": "BTC ▲ 1.20%", "trend": "up" | "down" | "flat" | "none", "note"}`."""
    latest: dict[tuple[str, str], dict] = {}
    if changes is not None:
        for row in changes.sort("ts").iter_rows(named=True):
            latest[(row["pair"], row["exchange"])] = row
    tiles = []
    for pair in pairs:
        row = latest.get((pair.name, "coinbase")) or latest.get((pair.name, "binance"))
        label = tile_label(pair)
        if row is None:
            tiles.append({"pair": pair.name, "text": f"{label} –", "trend": "none", "note": "no data yet"})
            continue
        change = Decimal(str(row["change_pct"]))
        trend = "up" if change > 0 else "down" if change < 0 else "flat"
        arrow = {"up": "▲", "down": "▼", "flat": "■"}[trend]
        minutes = round((row["ts"] - row["base_ts"]).total_seconds() / 60)
        tiles.append({"pair": pair.name, "text": f"{label} {arrow} {abs(change):.2f}%", "trend": trend,
                      "note": f"{row['exchange']} mid, last {minutes} min"})
    return tiles


def price_ma_figure(prices: pl.DataFrame | None, averages: pl.DataFrame | None, pair: Pair) -> go.Figure:
    """Each exchange's mid (1-second closes) against its 5-minute moving average (stepping each minute).

    `prices`: `exchange, bucket_ts, close`; `averages`: `exchange, window_end, ma_mid` (Binance in its own quote
    currency, as quoted)."""
    title = f"{pair.name}: mid price vs 5-minute moving average"
    if (prices is None or prices.height == 0) and (averages is None or averages.height == 0):
        return empty_figure(f"No prices for {pair.name} yet: is `arb stream analytics` running?", title)
    fig = go.Figure()
    for exchange in ("coinbase", "binance"):
        symbol = pair.symbol_on(exchange)
        if prices is not None:
            rows = prices.filter(pl.col("exchange") == exchange).sort("bucket_ts")
            if rows.height:
                fig.add_trace(go.Scatter(x=[_naive(t) for t in rows["bucket_ts"]], y=_floats(rows["close"]),
                                         mode="lines", name=f"{exchange} {symbol} mid",
                                         line={"color": COLORS[exchange], "width": 1.2}))
        if averages is not None:
            rows = averages.filter(pl.col("exchange") == exchange).sort("window_end")
            if rows.height:
                fig.add_trace(go.Scatter(x=[_naive(t) for t in rows["window_end"]], y=_floats(rows["ma_mid"]),
                                         mode="lines+markers", name=f"{exchange} 5-min average",
                                         line={"color": COLORS[exchange], "width": 2.5, "dash": "dash"},
                                         line_shape="hv"))
    fig.update_layout(title=title, template="plotly_white", height=380, uirevision=pair.name,
                      xaxis_title="time (UTC)", yaxis_title="price", legend={"orientation": "h", "y": -0.2},
                      margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def candles_figure(candles: pl.DataFrame | None, pair: Pair, exchange: str) -> go.Figure:
    """1-minute candlesticks of one exchange with the VWAP of each minute; volume in the hover text.

    `candles`: `window_start, open, high, low, close, volume, vwap, trades`."""
    symbol = pair.symbol_on(exchange)
    title = f"{exchange} {symbol}: 1-minute candles with VWAP"
    if candles is None or candles.height == 0:
        return empty_figure(f"No closed 1-minute candle for {exchange} {symbol} yet.", title)
    rows = candles.sort("window_start")
    xs = [_naive(t) for t in rows["window_start"]]
    hover = [f"volume {v}<br>trades {n}" for v, n in zip(rows["volume"].to_list(), rows["trades"].to_list())]
    fig = go.Figure([
        go.Candlestick(x=xs, open=_floats(rows["open"]), high=_floats(rows["high"]), low=_floats(rows["low"]),
                       close=_floats(rows["close"]), name="OHLC", text=hover),
        go.Scatter(x=xs, y=_floats(rows["vwap"]), mode="lines+markers", name="VWAP",
                   line={"color": "#7c3aed", "width": 2}),
    ])
    fig.update_layout(title=title, template="plotly_white", height=380, uirevision=f"{pair.name}|{exchange}",
                      xaxis_rangeslider_visible=False, xaxis_title="minute (UTC)", yaxis_title="price",
                      legend={"orientation": "h", "y": -0.2}, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def premium_figure(premium: pl.DataFrame | None, pair: Pair) -> go.Figure:
    """The Coinbase premium per hour (bars) and per UTC day (line), each period's latest value.

    `premium`: `granularity, period_start, premium_bps, as_of_ts`."""
    title = f"{pair.name}: Coinbase premium over Binance (bps of mean mids)"
    if premium is None or premium.height == 0:
        return empty_figure(f"No premium for {pair.name} yet (needs quotes on both exchanges).", title)
    latest = premium.sort("as_of_ts").group_by(["granularity", "period_start"], maintain_order=True).last()
    fig = go.Figure()
    hourly = latest.filter(pl.col("granularity") == "hour").sort("period_start")
    daily = latest.filter(pl.col("granularity") == "day").sort("period_start")
    if hourly.height:
        fig.add_trace(go.Bar(x=[_naive(t) for t in hourly["period_start"]], y=_floats(hourly["premium_bps"]),
                             name="hourly", marker_color="#10b981"))
    if daily.height:
        fig.add_trace(go.Scatter(x=[_naive(t) for t in daily["period_start"]], y=_floats(daily["premium_bps"]),
                                 mode="lines+markers", name="daily", line={"color": "#111827", "width": 2}))
    fig.add_hline(y=0, line={"color": "#9ca3af", "width": 1})
    fig.update_layout(title=title, template="plotly_white", height=320, uirevision=pair.name,
                      xaxis_title="period start (UTC)", yaxis_title="bps", legend={"orientation": "h", "y": -0.25},
                      margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def trade_rows(trades: pl.DataFrame | None, limit: int = TRADE_LIMIT) -> list[dict[str, str]]:
    """The newest `limit` trades, newest first, as table rows."""
    if trades is None or trades.height == 0:
        return []
    newest = trades.sort(["event_ts", "exchange"], descending=True).head(limit)
    return [{"time": _naive(r["event_ts"]).strftime("%H:%M:%S.%f")[:-3], "exchange": r["exchange"],
             "symbol": r["symbol"], "side": r["side"], "price": fmt_price(r["price"]),
             "size": format(Decimal(str(r["size"])).normalize(), "f")} for r in newest.iter_rows(named=True)]


# ---- readers -----------------------------------------------------------------------------------------------------

def read_panels(lake: Lake, config: DashboardConfig, pair: Pair, exchange: str, range_s: int,
                now_us: int) -> dict[str, pl.DataFrame | None]:
    """Everything the panels draw, bounded by the time range (the premium's day and the tiles' hour excepted)."""
    since = now_us - range_s * US
    day_start = now_us - now_us % (86400 * US)
    mine = _of_pair(pair)
    return {
        "prices": lake.read(PRICE, "bucket_ts", since, ["exchange", "bucket_ts", "close"], where=mine),
        "averages": lake.read(MOVING_AVERAGE, "window_end", since, ["exchange", "window_end", "ma_mid"],
                              where=mine),
        "candles": lake.read(CANDLES, "window_start", since,
                             ["window_start", "open", "high", "low", "close", "volume", "vwap", "trades"],
                             where=(pl.col("exchange") == exchange) & (pl.col("symbol") == pair.symbol_on(exchange))),
        "changes": lake.read(CHANGE, "ts", now_us - 3600 * US, ["pair", "exchange", "ts", "base_ts", "change_pct"]),
        "premium": lake.read(PREMIUM, "period_start", min(since, day_start - 86400 * US),
                             ["granularity", "period_start", "premium_bps", "as_of_ts"],
                             where=pl.col("pair") == pair.name),
        "trades": lake.read(TRADES, "event_ts", now_us - 600 * US,
                            ["exchange", "symbol", "side", "price", "size", "event_ts"], where=mine),
    }


# ---- layout and callback -----------------------------------------------------------------------------------------

def layout(config: DashboardConfig) -> html.Div:
    exchange_picker = dcc.RadioItems(id=CANDLES_EXCHANGE, options=["coinbase", "binance"], value="coinbase",
                                     inline=True)
    return html.Div([
        dcc.Interval(id=TICK, interval=REFRESH_MS),
        card("Hourly change", html.Div(id=TILES, className="tiles", style={"display": "flex", "gap": "12px",
                                                                           "flexWrap": "wrap"}), class_name="wide"),
        card("Price vs 5-minute average", dcc.Graph(id=PRICE_GRAPH, config={"displaylogo": False})),
        card("1-minute candles", dcc.Graph(id=CANDLES_GRAPH, config={"displaylogo": False}), note=exchange_picker),
        card("Coinbase premium", dcc.Graph(id=PREMIUM_GRAPH, config={"displaylogo": False})),
        card("Latest trades", table(TRADES_TABLE, TRADE_COLUMNS)),
    ], className="grid analytics", style={"gridColumn": "1 / -1"})


TREND_COLORS = {"up": "#059669", "down": "#dc2626", "flat": "#4b5563", "none": "#9ca3af"}
TILE_STYLE = {"display": "flex", "flexDirection": "column", "padding": "6px 14px", "borderRadius": "6px",
              "background": "#f9fafb", "minWidth": "140px"}


def tile_children(tiles: list[dict[str, str]]) -> list[html.Div]:
    return [html.Div([html.Span(t["text"], className="tile-value",
                                style={"fontSize": "22px", "fontWeight": "600", "color": TREND_COLORS[t["trend"]]}),
                      html.Span(t["note"], className="note")],
                     className=f"tile {t['trend']}", title=t["pair"], style=TILE_STYLE) for t in tiles]


def panels_update(config: DashboardConfig, lake: Lake, pair_name: str, range_label: str, exchange: str,
                  now_us: int) -> tuple[Any, ...]:
    pair = config.pair(pair_name)
    data = read_panels(lake, config, pair, exchange, TIME_RANGES.get(range_label, 900), now_us)
    return (
        tile_children(change_tiles(data["changes"], config.pairs)),
        price_ma_figure(data["prices"], data["averages"], pair),
        candles_figure(data["candles"], pair, exchange),
        premium_figure(data["premium"], pair),
        trade_rows(data["trades"]),
    )


def register_callbacks(app, config: DashboardConfig, lake: Lake) -> None:
    @app.callback(
        Output(TILES, "children"),
        Output(PRICE_GRAPH, "figure"),
        Output(CANDLES_GRAPH, "figure"),
        Output(PREMIUM_GRAPH, "figure"),
        Output(TRADES_TABLE, "data"),
        Input(ids.PAIR, "value"),
        Input(ids.RANGE, "value"),
        Input(CANDLES_EXCHANGE, "value"),
        Input(TICK, "n_intervals"),
    )
    def refresh_analytics(pair_name, range_label, exchange, _tick):
        return panels_update(config, lake, pair_name, range_label, exchange, int(config.clock() * US))
