"""Pure builders: data in, Plotly figures or table rows out. No I/O, no clock (callers pass `now_us`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import plotly.graph_objects as go
import polars as pl

from arbitrage.fees import FeeSchedule
from arbitrage.spread import BUY_BINANCE_SELL_COINBASE, BUY_COINBASE_SELL_BINANCE, break_even_gross_bps

# Trace order on the spread chart; `extend_spread` relies on it.
SERIES = (
    ("cb_bn", "buy Coinbase → sell Binance", "#1f77b4"),
    ("bn_cb", "buy Binance → sell Coinbase", "#ff7f0e"),
)
DIRECTION_LABEL = {
    BUY_COINBASE_SELL_BINANCE: "buy CB → sell BN",
    BUY_BINANCE_SELL_COINBASE: "buy BN → sell CB",
}
EMPTY_COLOR = "#6c757d"


def _naive_utc(ts: datetime) -> datetime:
    # Plotly.js has no time zones: hand it UTC wall-clock times and say "UTC" on the axis.
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def empty_figure(message: str, title: str = "") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"size": 16, "color": EMPTY_COLOR})
    fig.update_layout(title=title, template="plotly_white", height=420,
                      xaxis={"visible": False}, yaxis={"visible": False}, margin={"l": 40, "r": 20, "t": 50, "b": 40})
    return fig


def spread_figure(series: pl.DataFrame, pair: str, threshold_bps: Decimal, fees: FeeSchedule,
                  empty_message: str | None = None) -> go.Figure:
    """Net spread of both directions over time (best per bucket), with the tradable threshold and break-even.

    `series` has columns `ts` (UTC datetime), `cb_bn`, `bn_cb` (net bps, float). Net bps already pay both taker
    fees, so break-even is net 0; the legend tells the gross spread that takes (`break_even_gross_bps`).
    """
    title = f"{pair}: net spread after taker fees (bps, best per bucket)"
    if series.height == 0:
        return empty_figure(empty_message or f"No spreads for {pair} in this time range yet.", title)
    fig = go.Figure()
    xs = [_naive_utc(t) for t in series["ts"].to_list()]
    for column, label, color in SERIES:
        fig.add_trace(go.Scatter(x=xs, y=series[column].to_list(), mode="lines", name=label,
                                   line={"color": color, "width": 1.5}, connectgaps=False))
    be_cb_bn = break_even_gross_bps(fees.coinbase, fees.binance)
    be_bn_cb = break_even_gross_bps(fees.binance, fees.coinbase)
    fig.add_hline(y=float(threshold_bps), line={"color": "#2ca02c", "dash": "dash", "width": 1.5},
                  annotation_text=f"threshold {threshold_bps} bps net", annotation_position="top left")
    fig.add_hline(y=0, line={"color": "#d62728", "dash": "dot", "width": 1.5},
                  annotation_text=(f"break-even after fees (gross {be_cb_bn:.1f} / {be_bn_cb:.1f} bps)"),
                  annotation_position="bottom left")
    fig.update_layout(
        title=title, template="plotly_white", height=420, uirevision=pair,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.15},
        xaxis={"title": "time (UTC)"},
        yaxis={"title": "net bps"},
    )
    return fig


def extend_spread(series: pl.DataFrame, max_points: int) -> tuple[dict[str, list], list[int], int] | None:
    """`extendData` for the spread chart's two traces, or None when there is nothing new."""
    if series.height == 0:
        return None
    xs = [_naive_utc(t) for t in series["ts"].to_list()]
    data = {"x": [xs, xs], "y": [series[column].to_list() for column, _, _ in SERIES]}
    return data, [0, 1], max_points


# ---- tables --------------------------------------------------------------------------------------------------

def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def fmt_num(value: Any, places: int = 2) -> str:
    number = _dec(value)
    if number is None:
        return "–"
    return f"{number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,.{places}f}"


def fmt_price(value: Any) -> str:
    """Prices keep the precision they need: 2 to 8 decimals, trailing zeros dropped."""
    number = _dec(value)
    if number is None:
        return "–"
    whole, _, frac = f"{number:,.8f}".partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 0:
        seconds = 0.0
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_duration_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    return fmt_age(ms / 1000)


def fmt_time(us: int | None) -> str:
    if us is None:
        return "–"
    ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return ts.strftime("%H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def parse_ts_us(value: Any) -> int | None:
    """A metrics-file time -> µs since the epoch (None for None or garbage).

    Accepts ISO 8601 (`2026-11-22T00:40:34.912Z`, UTC when no zone) and epoch numbers: the producers write
    `time.time()` seconds; numbers past 1e11 / 1e14 are read as milliseconds / microseconds.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if value > 1e14:
            return int(value)
        return int(value * 1_000) if value > 1e11 else int(round(value * 1_000_000))
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1_000_000)


def quote_rows(quotes: list[dict], now_us: int) -> list[dict[str, str]]:
    """Best bid/ask per exchange (rows from `data.latest_quotes`)."""
    rows = []
    for q in sorted(quotes, key=lambda r: r["exchange"]):
        rows.append({
            "exchange": q["exchange"], "symbol": q["symbol"],
            "bid": fmt_price(q["bid"]), "bid_size": fmt_price(q["bid_size"]),
            "ask": fmt_price(q["ask"]), "ask_size": fmt_price(q["ask_size"]),
            "age": fmt_age((now_us - q["event_ts"]) / 1e6),
        })
    return rows


def window_rows(windows: list[dict], now_us: int) -> list[dict[str, str]]:
    """Open windows first (duration so far), then closed ones, newest first."""
    def sort_key(w: dict) -> tuple[int, int]:
        return (0 if w["event"] == "OPEN" else 1, -w["start_ts"])

    rows = []
    for w in sorted(windows, key=sort_key):
        is_open = w["event"] == "OPEN"
        duration = (now_us - w["start_ts"]) / 1000 if is_open else w.get("duration_ms")
        rows.append({
            "state": "OPEN" if is_open else f"closed ({w.get('close_reason') or '?'})",
            "pair": w["pair"], "direction": DIRECTION_LABEL.get(w["direction"], w["direction"]),
            "start": fmt_time(w["start_ts"]), "duration": fmt_duration_ms(duration),
            "peak_bps": fmt_num(w["peak_net_bps"]), "size": fmt_price(w["size_at_peak"]),
            "profit": fmt_num(w["profit_at_peak"]), "ticks": str(w.get("ticks") or "–"),
        })
    return rows


def _status_by_exchange(statuses: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for s in sorted(statuses, key=lambda r: r["ts_recv"]):
        latest[s["exchange"]] = s
    return latest


def feed_rows(producers: list[dict], statuses: list[dict], now_us: int, stale_after_s: float = 5.0) -> list[dict]:
    """Feed health per exchange from the producer metrics files and the latest silver/feed_status event.

    A metrics file older than `stale_after_s` means the producer is not running: shown as not connected.
    """
    by_exchange = {p.get("exchange"): p for p in producers if p.get("exchange")}
    latest_status = _status_by_exchange(statuses)
    rows = []
    for exchange in sorted(set(by_exchange) | set(latest_status)):
        p = by_exchange.get(exchange, {})
        updated = parse_ts_us(p.get("updated_ts"))
        metrics_age = None if updated is None else (now_us - updated) / 1e6
        running = metrics_age is not None and metrics_age <= stale_after_s
        if not p:
            connected = "no metrics"
        elif not running:
            connected = f"✖ producer silent {fmt_age(metrics_age)}"
        else:
            connected = "✔ connected" if p.get("connected") else "✖ disconnected"
        status = latest_status.get(exchange)
        last_status = "–"
        if status:
            where = f" {status['symbol']}" if status.get("symbol") else ""
            last_status = f"{status['state']}{where} {fmt_age((now_us - status['ts_recv']) / 1e6)} ago"
        msg_age = p.get("last_frame_age_s")
        if not isinstance(msg_age, (int, float)) or isinstance(msg_age, bool):
            msg_age = None
        if msg_age is not None and metrics_age is not None:
            msg_age = msg_age + max(metrics_age, 0)  # the file itself may be a little old
        rows.append({
            "exchange": exchange, "connected": connected, "last_msg": fmt_age(msg_age),
            "msgs_per_s": fmt_num(p.get("frames_per_s"), 1), "events_per_s": fmt_num(p.get("events_per_s"), 1),
            "gaps": str(p.get("gaps", "–")), "reconnects": str(p.get("reconnects", "–")), "last_status": last_status,
        })
    return rows


def pipeline_rows(streams: list[dict], now_us: int) -> list[dict]:
    """Pipeline health per streaming job from `stream-*.json`."""
    rows = []
    for s in sorted(streams, key=lambda r: str(r.get("job"))):
        updated = parse_ts_us(s.get("updated_ts"))
        rows.append({
            "job": str(s.get("job", "?")), "events_per_s": fmt_num(s.get("input_rows_per_s"), 1),
            "processed_per_s": fmt_num(s.get("processed_rows_per_s"), 1),
            "p50_ms": fmt_num(s.get("detection_p50_ms"), 0), "p99_ms": fmt_num(s.get("detection_p99_ms"), 0),
            "late_ticks": fmt_num(s.get("late_ticks"), 0),
            "batch": str(s.get("batch_id", "–")), "batch_ms": fmt_num(s.get("batch_duration_ms"), 0),
            "last_batch": "–" if updated is None else f"{fmt_age((now_us - updated) / 1e6)} ago",
        })
    return rows
