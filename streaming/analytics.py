"""Market analytics jobs (`arb stream analytics`): three small streaming queries beside the hot path, each reading a
silver table as a Delta stream (rows silver has parsed, validated and deduplicated).

    analytics_candles  silver/trades -> price levels per 1-minute event-time window -> gold/candles_1m (open, high,
                       low, close, volume, VWAP, trades)
    analytics_mid      silver/quotes -> mid bars per minute -> gold/mid_bars, then gold/mid_ma_5m,
                       gold/hourly_change and gold/premium from those bars
    analytics_crash    silver/quotes -> 1-second high/low mid bars (short watermark) -> gold/crash_bars and
                       `flash_crash` alerts (alert log + alerts topic)

They count exactly what silver keeps. Until 2026-12-03 they read the quote and trade topics and ran the silver parse
(and dedupe) themselves: the same quotes read from Kafka and parsed twice more beside the hot path, whose batches
that work slowed (docs/BENCHMARKS.md). Reading silver costs the flash-crash alert silver's own delay (a batch every
10 s) on top of its bucket, watermark and trigger; the rule looks back 2 minutes. The rules are
`arbitrage.analytics`.

Lateness (event time, per query): the watermark is the latest event time seen minus `watermark_s` (10 s; 2 s for the
crash bars). A record within it lands in its own bar, however late it arrives; a record older than the watermark
is dropped by Spark, logged and counted (`LateRowsListener`: `late_rows_dropped` in `analytics-late.json` under
the metrics dir). A bar is written once, when the watermark passes its end: candles appear ~10 s after their minute,
plus the time their trades take to reach silver and the next batch.

Exactness: Spark only groups, orders and sums (a price level keeps its trades' sizes; a mid bar keeps the exact sum
of its mids); the divisions (VWAP, means, percentages, bps) run in the driver on those few rows, in `Decimal`, with
the shared rounding. Writes are idempotent per micro-batch (`txnAppId`/`txnVersion`), so a replayed batch is skipped
by Delta; alerts are deduplicated on `alert_id` against the alert log.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DecimalType

from arb.logs import log_event
from arbitrage.analytics import (
    SECOND_US,
    AnalyticsConfig,
    CrashBar,
    CrashDetector,
    MidBar,
    TradeLevel,
    candles_from_levels,
    crash_alert,
    hourly_changes,
    iso_ms,
    moving_averages,
    premium_periods,
    premiums,
)
from streaming import jobs
from streaming.config import JobConfig, StreamingConfig, every
from streaming.metrics import ProgressListener, add_listener
from streaming.sinks import QueryId, append_table, is_local

log = logging.getLogger("streaming.analytics")

MONEY = DecimalType(30, 12)
SUM = DecimalType(38, 12)
JOBS = ("analytics_candles", "analytics_mid", "analytics_crash")
JOB_CONFIG = {
    # Minute bars: a batch every 11-17 s is plenty. The crash rule looks back 2 minutes, so an alert ~10-20 s after
    # the quote (silver's batch, then this one's) loses nothing; a batch every second kept the crash query running a
    # batch all the time beside the hot path.
    # The intervals: streaming.config.TIMER_INTERVALS_S.
    name: JobConfig(trigger=every(name), state_store="rocksdb")
    for name in JOBS
}


# ---- pure transforms -------------------------------------------------------------------------------------------

def quote_mids(quotes: DataFrame) -> DataFrame:
    """silver/quotes rows -> the mid of every uncrossed quote (rounded HALF_UP to 12 places), with its order keys
    (event_ts, seq, Kafka offset: the tie-break where the exchange gives no sequence)."""
    return quotes.where(~F.col("is_crossed")).select(
        "exchange", "symbol", "event_ts", "seq", "offset",
        F.round((F.col("bid") + F.col("ask")) / 2, 12).cast(MONEY).alias("mid"),
    )


def trade_levels(trades: DataFrame, config: AnalyticsConfig) -> DataFrame:
    """Watermarked trades -> one row per (exchange, symbol, minute, price): summed size, count, first/last trade key.

    The candle is finished from its levels in the driver (`arbitrage.analytics.candles_from_levels`): the exact
    notional sum(price * size) needs more digits than a Spark decimal product keeps.
    """
    order = F.struct(F.unix_micros("event_ts").alias("t"), F.col("seq"), F.col("trade_id"))
    grouped = trades.groupBy("exchange", "symbol", F.window("event_ts", f"{config.candle_s} seconds"), "price")
    levels = grouped.agg(F.sum("size").alias("size"), F.count(F.lit(1)).alias("trades"),
                         F.min(order).alias("first"), F.max(order).alias("last"))
    return levels.select(
        "exchange", "symbol",
        F.unix_micros(F.col("window.start")).alias("window_start_us"),
        F.unix_micros(F.col("window.end")).alias("window_end_us"),
        "price", F.col("size").cast(SUM).alias("size"), "trades", "first", "last",
    )


def mid_bars(mids: DataFrame, width_s: int) -> DataFrame:
    """Watermarked mids -> one bar per (exchange, symbol, window): open/close mid (by time, seq, offset), high, low,
    exact sum of mids and count."""
    order = F.struct(F.col("event_ts"), F.col("seq"), F.col("offset"))
    grouped = mids.groupBy("exchange", "symbol", F.window("event_ts", f"{width_s} seconds"))
    bars = grouped.agg(
        F.min_by("mid", order).alias("open"), F.max("mid").alias("high"), F.min("mid").alias("low"),
        F.max_by("mid", order).alias("close"), F.sum("mid").alias("mid_sum"), F.count(F.lit(1)).alias("quotes"),
    )
    return bars.select(
        "exchange", "symbol",
        F.unix_micros(F.col("window.start")).alias("window_start_us"),
        F.unix_micros(F.col("window.end")).alias("window_end_us"),
        "open", "high", "low", "close", F.col("mid_sum").cast(SUM).alias("mid_sum"), "quotes",
    )


def crash_bars(mids: DataFrame, config: AnalyticsConfig) -> DataFrame:
    """Watermarked mids -> high, low and last mid per (exchange, symbol, crash bucket); the last is the dashboard's
    live price line."""
    grouped = mids.groupBy("exchange", "symbol", F.window("event_ts", f"{config.crash_bucket_s} seconds"))
    bars = grouped.agg(F.max("mid").alias("high"), F.min("mid").alias("low"),
                       F.max_by("mid", F.struct(F.col("event_ts"), F.col("seq"), F.col("offset"))).alias("close"))
    return bars.select("exchange", "symbol", F.unix_micros(F.col("window.start")).alias("bucket_us"), "high", "low",
                       "close")


# ---- tables: rows computed in the driver -> Arrow -> Delta ---------------------------------------------------------

MONEY_PL = pl.Decimal(30, 12)
SUM_PL = pl.Decimal(38, 12)
# Per table: the driver-side row fields in column order (`*_us` fields become `timestamp` columns without the
# suffix) and the field whose date is the `date` partition.
TABLE_COLUMNS: dict[str, tuple[dict[str, Any], str]] = {
    "gold/candles_1m": ({"exchange": pl.String, "symbol": pl.String, "window_start_us": pl.Int64,
                         "window_end_us": pl.Int64, "open": MONEY_PL, "high": MONEY_PL, "low": MONEY_PL,
                         "close": MONEY_PL, "volume": SUM_PL, "vwap": MONEY_PL, "trades": pl.Int64},
                        "window_start_us"),
    "gold/mid_bars": ({"exchange": pl.String, "symbol": pl.String, "window_start_us": pl.Int64,
                       "window_end_us": pl.Int64, "open": MONEY_PL, "high": MONEY_PL, "low": MONEY_PL,
                       "close": MONEY_PL, "mid_sum": SUM_PL, "quotes": pl.Int64}, "window_start_us"),
    "gold/mid_ma_5m": ({"exchange": pl.String, "symbol": pl.String, "window_start_us": pl.Int64,
                        "window_end_us": pl.Int64, "ma_mid": MONEY_PL, "last_mid": MONEY_PL, "quotes": pl.Int64},
                       "window_end_us"),
    "gold/hourly_change": ({"pair": pl.String, "exchange": pl.String, "symbol": pl.String, "ts_us": pl.Int64,
                            "base_ts_us": pl.Int64, "base": MONEY_PL, "last": MONEY_PL, "change_pct": MONEY_PL},
                           "ts_us"),
    # append-only: a period's current value is its row with the latest `as_of_ts`
    "gold/premium": ({"pair": pl.String, "granularity": pl.String, "period_start_us": pl.Int64,
                      "period_end_us": pl.Int64, "coinbase_mid": MONEY_PL, "binance_mid": MONEY_PL,
                      "premium_bps": MONEY_PL, "coinbase_quotes": pl.Int64, "binance_quotes": pl.Int64,
                      "as_of_ts_us": pl.Int64}, "period_start_us"),
    "gold/crash_bars": ({"exchange": pl.String, "symbol": pl.String, "bucket_ts_us": pl.Int64, "high": MONEY_PL,
                         "low": MONEY_PL, "close": MONEY_PL}, "bucket_ts_us"),
}


def table_frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Driver rows -> the table's columns: µs fields as UTC timestamps, plus the `date` partition."""
    columns, date_field = TABLE_COLUMNS[table]
    frame = pl.DataFrame(rows, schema=columns)
    out = [pl.from_epoch(pl.col(c), time_unit="us").dt.replace_time_zone("UTC").alias(c.removesuffix("_us"))
           if c.endswith("_us") else pl.col(c) for c in columns]
    date = pl.from_epoch(pl.col(date_field), time_unit="us").dt.date().alias("date")
    return frame.select(*out, date)


def append_rows(spark: SparkSession, config: StreamingConfig, table: str, rows: list[dict[str, Any]], app_id: str,
                batch_id: int) -> None:
    """Append once per (app_id, batch_id): delta-rs from the driver on a local lake (tens of ms instead of seconds
    for a Spark write on this machine), a Spark Delta write on any other location."""
    if not rows:
        return
    append_table(spark, table_frame(table, rows).to_arrow(), config.table(table), app_id, batch_id)


def read_rows(spark: SparkSession, config: StreamingConfig, table: str, ts_field: str, since_us: int,
              until_us: int | None = None) -> list[dict[str, Any]]:
    """Rows of `table` with `since_us <= ts_field (< until_us)`, with the driver-side field names; [] if none yet."""
    columns, _ = TABLE_COLUMNS[table]
    path = config.table(table)
    since = datetime.fromtimestamp(since_us / 1e6, tz=UTC)
    ts = ts_field.removesuffix("_us")
    if is_local(path):
        if not (Path(path.removeprefix("file://")) / "_delta_log").is_dir():
            return []
        lf = pl.scan_delta(path)
        lf = lf.filter(pl.col("date") >= since.date(), pl.col(ts).dt.epoch("us") >= since_us)
        if until_us is not None:
            lf = lf.filter(pl.col(ts).dt.epoch("us") < until_us)
        selected = [pl.col(c.removesuffix("_us")).dt.epoch("us").alias(c) if c.endswith("_us") else pl.col(c)
                    for c in columns]
        return lf.select(selected).collect().to_dicts()
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return []
    frame = spark.read.format("delta").load(path).where(
        (F.col("date") >= F.lit(since.date())) & (F.unix_micros(ts) >= since_us))
    if until_us is not None:
        frame = frame.where(F.unix_micros(ts) < until_us)
    selected = [F.unix_micros(c.removesuffix("_us")).alias(c) if c.endswith("_us") else F.col(c) for c in columns]
    return [r.asDict() for r in frame.select(*selected).collect()]


def _fields(item: Any, **extra: Any) -> dict[str, Any]:
    return {**{name: getattr(item, name) for name in item.__slots__}, **extra}


# ---- sinks -----------------------------------------------------------------------------------------------------

class CandleSink:
    """Price levels of closed minutes -> candles -> gold/candles_1m."""

    def __init__(self, config: StreamingConfig, analytics: AnalyticsConfig, query_id: QueryId) -> None:
        self.config, self.analytics, self.query_id = config, analytics, query_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        levels = [TradeLevel(r.exchange, r.symbol, r.window_start_us, r.window_end_us, r.price, r.size, r.trades,
                             tuple(r.first), tuple(r.last)) for r in batch.collect()]
        if not levels:
            return
        candles = candles_from_levels(levels)
        append_rows(batch.sparkSession, self.config, "gold/candles_1m", [_fields(c) for c in candles],
                    f"{self.query_id.get()}/candles_1m", batch_id)
        log_event(log, "candles", batch_id=batch_id, count=len(candles))


class MidSink:
    """Closed mid bars -> gold/mid_bars, then the moving averages and hourly changes ending at those bars and the
    premium of every hour and day they touch, computed over the bars stored so far (a replayed batch sees the same
    bars: its own were written first, later ones do not exist yet)."""

    def __init__(self, config: StreamingConfig, analytics: AnalyticsConfig, query_id: QueryId) -> None:
        self.config, self.analytics, self.query_id = config, analytics, query_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        new = [MidBar(**r.asDict()) for r in batch.collect()]
        if not new:
            return
        spark, qid, cfg = batch.sparkSession, self.query_id.get(), self.analytics
        append_rows(spark, self.config, "gold/mid_bars", [_fields(b) for b in new], f"{qid}/mid_bars", batch_id)
        periods = premium_periods(new)
        look_back = max(cfg.ma_window_s, cfg.change_window_s) * SECOND_US
        since = min([min(b.window_start_us for b in new) - look_back] + [start for _, start in periods])
        history = [MidBar(**r) for r in read_rows(spark, self.config, "gold/mid_bars", "window_start_us", since)]
        ends = [(b.exchange, b.symbol, b.window_end_us) for b in new]
        as_of = max(b.window_end_us for b in new)
        outputs = {
            "gold/mid_ma_5m": [_fields(m) for m in moving_averages(history, ends, cfg)],
            "gold/hourly_change": [_fields(h) for h in hourly_changes(history, ends, cfg)],
            "gold/premium": [_fields(p, as_of_ts_us=as_of) for p in premiums(history, periods, cfg)],
        }
        for table, rows in outputs.items():
            append_rows(spark, self.config, table, rows, f"{qid}/{table.removeprefix('gold/')}", batch_id)
        log_event(log, "mid_bars", batch_id=batch_id, bars=len(new))


class CrashSink:
    """Closed crash buckets -> `flash_crash` alerts (through `CrashDetector`, one per episode) and gold/crash_bars.

    The detector lives in the driver. After a (re)start it is rebuilt, silently, from the stored bars of the
    `crash_window_s + crash_cooldown_s` before the first new bar: all the rule ever looks back at. A replayed batch
    therefore raises the same alerts with the same `alert_id`, and those already in the alert log are not sent again.
    """

    def __init__(self, config: StreamingConfig, analytics: AnalyticsConfig, query_id: QueryId, alerts: Any,
                 on_alerts: Callable[[list[dict]], None] | None = None) -> None:
        self.config, self.analytics, self.query_id = config, analytics, query_id
        self.alerts = alerts  # arb.alerts.AlertSinks (or anything with emit(dict))
        self.on_alerts = on_alerts
        self.detector: CrashDetector | None = None
        self.sent = logged_alert_ids(Path(config.alert_log))

    def _restore(self, spark: SparkSession, first_new_us: int) -> CrashDetector:
        cfg = self.analytics
        detector = CrashDetector(cfg)
        since = first_new_us - (cfg.crash_window_s + cfg.crash_cooldown_s) * SECOND_US
        rows = read_rows(spark, self.config, "gold/crash_bars", "bucket_ts_us", since, first_new_us)
        detector.run(CrashBar(r["exchange"], r["symbol"], r["bucket_ts_us"], r["high"], r["low"]) for r in rows)
        return detector

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        rows = [r.asDict() for r in batch.collect()]
        if not rows:
            return
        spark = batch.sparkSession
        bars = [CrashBar(r["exchange"], r["symbol"], r["bucket_us"], r["high"], r["low"]) for r in rows]
        if self.detector is None:
            self.detector = self._restore(spark, min(b.bucket_us for b in bars))
        lines = []
        emitted = iso_ms(time.time_ns() // 1000)
        for crash in self.detector.run(bars):
            if crash.alert_id in self.sent:
                continue
            alert = crash_alert(crash, self.analytics, emitted)
            self.alerts.emit(alert)
            self.sent.add(crash.alert_id)
            lines.append(alert)
        if lines:
            flush(self.alerts)
            log_event(log, "flash_crash_alerts", batch_id=batch_id, count=len(lines))
            if self.on_alerts is not None:
                self.on_alerts(lines)
        stored = [{"exchange": r["exchange"], "symbol": r["symbol"], "bucket_ts_us": r["bucket_us"], "high": r["high"],
                   "low": r["low"], "close": r["close"]} for r in rows]
        append_rows(spark, self.config, "gold/crash_bars", stored, f"{self.query_id.get()}/crash_bars", batch_id)


def alert_sinks(settings: Any) -> Any:
    """The alert log, the alerts topic and the webhook if configured: where arbitrage alerts go too."""
    from arb.alerts import AlertSinks

    return AlertSinks.from_settings(settings)


def flush(alerts: Any) -> None:
    """Deliver queued alerts to the topic now (`KafkaSink.close` only flushes: its producer stays usable)."""
    from arb.alerts import KafkaSink

    for sink in getattr(alerts, "sinks", ()):
        if isinstance(sink, KafkaSink):
            sink.close(timeout_s=5.0)


def logged_alert_ids(path: Path) -> set[str]:
    """`alert_id`s of the flash-crash alerts already in the alert log."""
    ids: set[str] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if isinstance(doc, dict) and doc.get("type") == "flash_crash":
                ids.add(doc.get("alert_id"))
    return ids


# ---- queries ---------------------------------------------------------------------------------------------------

def _silver(spark: SparkSession, config: StreamingConfig, table: str) -> DataFrame:
    """A silver table as a stream of the rows silver appends (`start_all` has created it if silver had not)."""
    return spark.readStream.format("delta").load(config.table(table))


def start_candles(spark: SparkSession, config: StreamingConfig, analytics: AnalyticsConfig,
                  available_now: bool = False) -> StreamingQuery:
    name = "analytics_candles"
    trades = _silver(spark, config, "silver/trades").withWatermark("event_ts", f"{analytics.watermark_s} seconds")
    return jobs.start_query(spark, config, name, JOB_CONFIG[name], trade_levels(trades, analytics),
                            lambda qid: CandleSink(config, analytics, qid), available_now)


def start_mid(spark: SparkSession, config: StreamingConfig, analytics: AnalyticsConfig,
              available_now: bool = False) -> StreamingQuery:
    name = "analytics_mid"
    mids = quote_mids(_silver(spark, config, "silver/quotes")).withWatermark("event_ts",
                                                                            f"{analytics.watermark_s} seconds")
    return jobs.start_query(spark, config, name, JOB_CONFIG[name], mid_bars(mids, analytics.bar_s),
                            lambda qid: MidSink(config, analytics, qid), available_now)


def start_crash(spark: SparkSession, config: StreamingConfig, analytics: AnalyticsConfig, alerts: Any,
                available_now: bool = False, on_alerts: Callable[[list[dict]], None] | None = None
                ) -> StreamingQuery:
    name = "analytics_crash"
    mids = quote_mids(_silver(spark, config, "silver/quotes")).withWatermark(
        "event_ts", f"{analytics.crash_watermark_ms} milliseconds")
    return jobs.start_query(spark, config, name, JOB_CONFIG[name], crash_bars(mids, analytics),
                            lambda qid: CrashSink(config, analytics, qid, alerts, on_alerts), available_now)


def start_all(spark: SparkSession, config: StreamingConfig, alerts: Any, analytics: AnalyticsConfig | None = None,
              available_now: bool = False) -> list[StreamingQuery]:
    """Start the three analytics queries; `alerts` receives the flash-crash alerts (`arb.alerts.AlertSinks`).
    Late records are counted by a `LateRowsListener` added to the session. The silver tables they read are created
    empty first if silver has not written them yet."""
    analytics = analytics or AnalyticsConfig(pairs=tuple(config.rules.pairs))
    jobs.create_silver_tables(spark, config)
    add_listener(spark, LateRowsListener(config.metrics_dir))
    return [
        start_candles(spark, config, analytics, available_now),
        start_mid(spark, config, analytics, available_now),
        start_crash(spark, config, analytics, alerts, available_now),
    ]


# ---- metrics ---------------------------------------------------------------------------------------------------

def late_rows_dropped(query: StreamingQuery) -> int:
    """Records dropped as later than the watermark, over the progress events the session retains
    (`spark.sql.streaming.numRecentProgressUpdates`, 100 by default)."""
    return sum(op.get("numRowsDroppedByWatermark", 0)
               for progress in query.recentProgress for op in progress.get("stateOperators", []))


class LateRowsListener(ProgressListener):
    """Counts the records each analytics query dropped as later than its watermark: logs them as they happen and
    keeps `<metrics>/analytics-late.json` (`{"analytics_candles": {"late_rows_dropped": n, "batch_id": ...,
    "watermark": ...}, ..., "updated_ts": ...}`)."""

    def __init__(self, metrics_dir: str) -> None:
        self.path = Path(metrics_dir) / "analytics-late.json"
        self.late: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def on_progress(self, progress: dict[str, Any]) -> None:
        name = progress.get("name")
        if name not in JOBS:
            return
        dropped = sum(op.get("numRowsDroppedByWatermark", 0) for op in progress.get("stateOperators", []))
        with self._lock:
            entry = self.late.setdefault(name, {"late_rows_dropped": 0})
            entry.update(late_rows_dropped=entry["late_rows_dropped"] + dropped, batch_id=progress.get("batchId"),
                         watermark=(progress.get("eventTime") or {}).get("watermark"))
            doc = {**{k: dict(v) for k, v in self.late.items()}, "updated_ts": iso_ms(time.time_ns() // 1000)}
        if dropped:
            log_event(log, "late_rows_dropped", logging.WARNING, job=name, count=dropped,
                      watermark=doc[name]["watermark"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)
