"""Tiny Delta lakes in the shapes of docs/DATA_MODEL.md, written with `deltalake.write_deltalake` (no Spark).

    from tests.lakefixtures import build_demo_lake, write_spreads, spread_row
    lake = build_demo_lake(tmp_path / "data", now=datetime(2026, 11, 22, 12, tzinfo=UTC))
    lake.lake_dir      # data/lake with silver/quotes, silver/spreads, gold/arb_windows, silver/feed_status
    lake.metrics_dir   # data/run/metrics with producer-*.json and stream-*.json
    lake.alert_log     # data/alerts/alerts.jsonl

Rows are plain dicts (Decimals for money, aware UTC datetimes for times); missing columns are null and `date` is
derived from the row's event time. The schemas here are the contract the streaming jobs write, so other tests can
reuse them (`SCHEMAS["silver/spreads"]`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
from deltalake import write_deltalake

from arbitrage import spread
from arbitrage.fees import FeeSchedule

MONEY = pa.decimal128(30, 12)
TS = pa.timestamp("us", tz="UTC")


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, dtype, nullable=True) for name, dtype in fields])


_DIRECTION_COLS = [
    (f"{p}{c}", MONEY) for p in ("cb_bn_", "bn_cb_") for c in ("gross_bps", "net_bps", "size", "profit")
]

SCHEMAS: dict[str, pa.Schema] = {
    "silver/quotes": _schema(
        ("exchange", pa.string()), ("symbol", pa.string()), ("venue_symbol", pa.string()),
        ("bid", MONEY), ("bid_size", MONEY), ("ask", MONEY), ("ask_size", MONEY),
        ("ts_event", TS), ("ts_recv", TS), ("event_ts", TS), ("seq", pa.int64()), ("is_crossed", pa.bool_()),
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("year", pa.int32()), ("month", pa.int32()), ("day", pa.int32()), ("hour", pa.int32()), ("date", pa.date32()),
    ),
    "silver/spreads": _schema(
        ("pair", pa.string()), ("event_ts", TS),
        *[(f"{ex}_{c}", MONEY) for ex in ("coinbase", "binance") for c in ("bid", "bid_size", "ask", "ask_size")],
        ("coinbase_ts", TS), ("binance_ts", TS), ("coinbase_age_ms", pa.int64()), ("binance_age_ms", pa.int64()),
        ("coinbase_seq", pa.int64()), ("binance_seq", pa.int64()),
        *_DIRECTION_COLS,
        ("date", pa.date32()),
    ),
    "gold/arb_windows": _schema(
        ("window_id", pa.string()), ("pair", pa.string()), ("direction", pa.string()), ("event", pa.string()),
        ("start_ts", TS), ("end_ts", TS), ("duration_ms", pa.int64()), ("peak_net_bps", MONEY),
        ("mean_net_bps", MONEY), ("size_at_peak", MONEY), ("profit_at_peak", MONEY), ("ticks", pa.int64()),
        ("close_reason", pa.string()), ("emitted_ts", TS), ("date", pa.date32()),
    ),
    "silver/feed_status": _schema(
        ("exchange", pa.string()), ("symbol", pa.string()), ("state", pa.string()), ("detail", pa.string()),
        ("ts_recv", TS), ("date", pa.date32()),
    ),
}

# The column whose date is the row's `date` partition.
_DATE_FROM = {
    "silver/quotes": "event_ts",
    "silver/spreads": "event_ts",
    "gold/arb_windows": "start_ts",
    "silver/feed_status": "ts_recv",
}

Q12 = Decimal("0.000000000001")


def _money(value: Any) -> Any:
    if value is None:
        return None
    return Decimal(value).quantize(Q12)


def write_table(lake_dir: Path | str, name: str, rows: Iterable[dict[str, Any]], mode: str = "append") -> None:
    """Append `rows` to the Delta table `name` (e.g. "silver/spreads") under `lake_dir`, partitioned by date."""
    schema = SCHEMAS[name]
    rows = [dict(r) for r in rows]
    for row in rows:
        if row.get("date") is None and row.get(_DATE_FROM[name]) is not None:
            row["date"] = row[_DATE_FROM[name]].date()
        for field in schema:
            if pa.types.is_decimal(field.type):
                row[field.name] = _money(row.get(field.name))
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    table = pa.Table.from_pydict(columns, schema=schema)
    write_deltalake(str(Path(lake_dir) / name), table, mode=mode, partition_by=["date"])


def quote_row(exchange: str, symbol: str, ts: datetime, bid: str, ask: str, size: str = "1", seq: int = 0) -> dict:
    venue = symbol.replace("/", "") if exchange == "binance" else symbol.replace("/", "-")
    return {
        "exchange": exchange, "symbol": symbol, "venue_symbol": venue, "bid": Decimal(bid), "bid_size": Decimal(size),
        "ask": Decimal(ask), "ask_size": Decimal(size), "ts_event": ts, "ts_recv": ts, "event_ts": ts, "seq": seq,
        "is_crossed": Decimal(bid) > Decimal(ask), "topic": f"{exchange}.quotes", "partition": 0, "offset": seq,
        "year": ts.year, "month": ts.month, "day": ts.day, "hour": ts.hour,
    }


def spread_row(pair: str, ts: datetime, cb_bid: str, cb_ask: str, bn_bid: str, bn_ask: str, size: str = "1",
               fees: FeeSchedule = FeeSchedule()) -> dict:
    """One silver/spreads row with both directions computed by `arbitrage.spread` (same-size books)."""
    cb_bid_d, cb_ask_d, bn_bid_d, bn_ask_d, size_d = map(Decimal, (cb_bid, cb_ask, bn_bid, bn_ask, size))
    row: dict[str, Any] = {
        "pair": pair, "event_ts": ts,
        "coinbase_bid": cb_bid_d, "coinbase_bid_size": size_d, "coinbase_ask": cb_ask_d, "coinbase_ask_size": size_d,
        "binance_bid": bn_bid_d, "binance_bid_size": size_d, "binance_ask": bn_ask_d, "binance_ask_size": size_d,
        "coinbase_ts": ts, "binance_ts": ts, "coinbase_age_ms": 0, "binance_age_ms": 0,
        "coinbase_seq": 1, "binance_seq": 1,
    }
    for prefix, buy_ask, sell_bid, buy_fee, sell_fee in (
        ("cb_bn_", cb_ask_d, bn_bid_d, fees.coinbase, fees.binance),
        ("bn_cb_", bn_ask_d, cb_bid_d, fees.binance, fees.coinbase),
    ):
        edge = spread.net_edge(buy_ask, sell_bid, buy_fee, sell_fee)
        row[f"{prefix}gross_bps"] = spread.gross_bps(buy_ask, sell_bid).quantize(Decimal("0.000001"))
        row[f"{prefix}net_bps"] = spread.net_bps(buy_ask, sell_bid, buy_fee, sell_fee).quantize(Decimal("0.000001"))
        row[f"{prefix}size"] = size_d
        row[f"{prefix}profit"] = spread.estimated_profit(edge, size_d)
    return row


def window_row(pair: str, direction: str, event: str, start: datetime, peak: str, size: str, profit: str,
               end: datetime | None = None, emitted: datetime | None = None, ticks: int = 1,
               close_reason: str | None = None) -> dict:
    start_us = int(start.timestamp() * 1_000_000)
    duration = None if end is None else int((end - start) / timedelta(milliseconds=1))
    return {
        "window_id": f"{pair}|{direction}|{start_us}", "pair": pair, "direction": direction, "event": event,
        "start_ts": start, "end_ts": end, "duration_ms": duration, "peak_net_bps": Decimal(peak),
        "mean_net_bps": Decimal(peak), "size_at_peak": Decimal(size), "profit_at_peak": Decimal(profit),
        "ticks": ticks, "close_reason": close_reason, "emitted_ts": emitted or end or start,
    }


def status_row(exchange: str, state: str, ts: datetime, detail: str = "", symbol: str | None = None) -> dict:
    return {"exchange": exchange, "symbol": symbol, "state": state, "detail": detail, "ts_recv": ts}


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert(event: str, pair: str, direction: str, start: datetime, net_bps: str, size: str, profit: str,
          emitted: datetime, end: datetime | None = None, close_reason: str | None = None, ticks: int = 1) -> dict:
    """One alert object as docs/DATA_MODEL.md writes it to the alert log."""
    start_us = int(start.timestamp() * 1_000_000)
    return {
        "v": 1, "type": "arb_window", "event": event, "window_id": f"{pair}|{direction}|{start_us}", "pair": pair,
        "direction": direction, "net_bps": net_bps, "peak_net_bps": net_bps, "size": size, "est_profit": profit,
        "start_ts": iso(start), "end_ts": None if end is None else iso(end),
        "duration_ms": None if end is None else int((end - start) / timedelta(milliseconds=1)),
        "ticks": ticks, "close_reason": close_reason, "emitted_ts": iso(emitted),
    }


def write_metrics(metrics_dir: Path, name: str, payload: dict) -> Path:
    """Write `metrics/<name>.json` as the services do (atomic rename)."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    path = metrics_dir / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)
    return path


def producer_metrics(exchange: str, updated: datetime, connected: bool = True, gaps: int = 0) -> dict:
    return {
        "exchange": exchange, "connected": connected, "url": f"ws://127.0.0.1/{exchange}", "last_frame_age_s": 0.2,
        "frames_per_s": 42.0, "events_per_s": 40.0, "quotes": 1000, "trades": 50, "invalid": 0, "gaps": gaps,
        "reconnects": 0, "delivery_failures": 0, "updated_ts": iso(updated),
    }


def stream_metrics(job: str, updated: datetime, batch_id: int = 7) -> dict:
    return {
        "job": job, "batch_id": batch_id, "input_rows_per_s": 80.0, "processed_rows_per_s": 120.0,
        "batch_duration_ms": 640, "durations_ms": {"addBatch": 500, "triggerExecution": 640},
        "watermark": iso(updated - timedelta(seconds=2)), "detection_p50_ms": 850.0, "detection_p99_ms": 1900.0,
        "updated_ts": iso(updated),
    }


@dataclass(frozen=True)
class DemoLake:
    data_dir: Path
    now: datetime

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def metrics_dir(self) -> Path:
        return self.data_dir / "run" / "metrics"

    @property
    def alert_log(self) -> Path:
        return self.data_dir / "alerts" / "alerts.jsonl"


BN_CB = "buy_binance_sell_coinbase"
CB_BN = "buy_coinbase_sell_binance"


def build_demo_lake(data_dir: Path, now: datetime, seconds: int = 120) -> DemoLake:
    """A small, consistent lake: two pairs over the last `seconds` (one comparison a second each), a BTC/USD
    window that opened and closed, an ETH/USD window still open, feed status, metrics and the alert log.

    BTC/USD net spreads (buy Binance) sit near -68 bps except a 10 s burst to ~+22 bps; ETH/USD sits near -70 bps and has been
    tradable (~+15 bps) for the last 5 s. The two pairs' charts therefore differ.
    """
    lake = DemoLake(data_dir, now)
    start = now - timedelta(seconds=seconds)
    spreads, quotes = [], []
    for i in range(seconds):
        ts = start + timedelta(seconds=i)
        burst = seconds - 40 <= i < seconds - 30
        # BTC/USD: Binance ask far below Coinbase bid in the burst (buy Binance, sell Coinbase)
        bn_ask = "49550" if burst else "50000"
        spreads.append(spread_row("BTC/USD", ts, "50010", "50011", "49999", bn_ask, size="0.5"))
        eth_open = i >= seconds - 5
        spreads.append(spread_row("ETH/USD", ts, "3000.5", "3001", "2999", "2975" if eth_open else "2999.5"))
        quotes.append(quote_row("coinbase", "BTC/USD", ts, "50010", "50011", "0.5", seq=i))
        quotes.append(quote_row("binance", "BTC/USDT", ts, "49999", bn_ask, "0.5", seq=i))
        quotes.append(quote_row("coinbase", "ETH/USD", ts, "3000.5", "3001", "1", seq=i))
        quotes.append(quote_row("binance", "ETH/USDT", ts, "2999", "2975" if eth_open else "2999.5", "1", seq=i))
    write_table(lake.lake_dir, "silver/spreads", spreads)
    write_table(lake.lake_dir, "silver/quotes", quotes)

    w_start = start + timedelta(seconds=seconds - 40)
    w_end = w_start + timedelta(seconds=10)
    e_start = start + timedelta(seconds=seconds - 5)
    write_table(lake.lake_dir, "gold/arb_windows", [
        window_row("BTC/USD", BN_CB, "OPEN", w_start, "22.25625", "0.5", "55.195", emitted=w_start + timedelta(seconds=1)),
        window_row("BTC/USD", BN_CB, "CLOSE", w_start, "22.25625", "0.5", "55.195", end=w_end, ticks=10,
                   close_reason="spread", emitted=w_end + timedelta(seconds=1)),
        window_row("ETH/USD", BN_CB, "OPEN", e_start, "15.184815", "1", "4.5225", emitted=e_start + timedelta(seconds=1)),
    ])
    write_table(lake.lake_dir, "silver/feed_status", [
        status_row("coinbase", "subscribed", start),
        status_row("binance", "subscribed", start),
        status_row("binance", "gap", start + timedelta(seconds=30), detail="seq 10 -> 14", symbol="BTC/USDT"),
        status_row("binance", "resynced", start + timedelta(seconds=31), symbol="BTC/USDT"),
    ])
    for exchange in ("coinbase", "binance"):
        write_metrics(lake.metrics_dir, f"producer-{exchange}", producer_metrics(exchange, now, gaps=int(exchange == "binance")))
    write_metrics(lake.metrics_dir, "stream-spreads", stream_metrics("spreads", now))
    write_metrics(lake.metrics_dir, "stream-windows", stream_metrics("windows", now, batch_id=9))

    lake.alert_log.parent.mkdir(parents=True, exist_ok=True)
    alerts = [
        alert("OPEN", "BTC/USD", BN_CB, w_start, "22.25625", "0.5", "55.195", emitted=w_start + timedelta(seconds=1)),
        alert("CLOSE", "BTC/USD", BN_CB, w_start, "22.25625", "0.5", "55.195", emitted=w_end + timedelta(seconds=1),
              end=w_end, close_reason="spread", ticks=10),
        alert("OPEN", "ETH/USD", BN_CB, e_start, "15.184815", "1", "4.5225", emitted=e_start + timedelta(seconds=1)),
    ]
    lake.alert_log.write_text("".join(json.dumps(a) + "\n" for a in alerts))
    return lake
