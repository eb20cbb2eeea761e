"""The Polars reference of the market analytics (`arbitrage.analytics`), computed from raw silver-shaped trades and
quotes in one pass each. The Spark gold tables are tested against it.

It is written apart from the streaming path: candles straight from trades (no price levels), moving averages,
hourly change and premium straight from quotes (no mid bars), crashes by a self-join of buckets (no incremental
detector). Polars groups, sorts and sums; the few divisions run in Python `Decimal` (Polars keeps a quotient at the
input scale) with the same rounding helpers as every other engine.

Inputs: `exchange`, `symbol`, `event_ts` (datetime[us, UTC]), `seq` and
- trades: `price`, `size` (pl.Decimal), `trade_id`;
- quotes: `bid`, `ask` (pl.Decimal), `is_crossed` and `offset` (the Kafka offset, optional: the last tie-break).
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from arbitrage.analytics import (
    SECOND_US,
    AnalyticsConfig,
    FlashCrash,
    PREMIUM_PERIODS,
    _exact,
    crash_floor,
    pct_change,
    premium_bps,
)
from arbitrage.rules import round_bps, round_money

WORK = pl.Decimal(38, 18)
MONEY = pl.Decimal(30, 12)


def _us(column: str = "event_ts") -> pl.Expr:
    return pl.col(column).dt.epoch("us")


def mids(quotes: pl.DataFrame) -> pl.DataFrame:
    """Valid, uncrossed quotes -> `exchange, symbol, t_us, seq, offset, mid` (mid rounded HALF_UP to 12 places)."""
    frame = quotes
    if "is_crossed" in frame.columns:
        frame = frame.filter(~pl.col("is_crossed"))
    frame = frame.filter(pl.col("bid") <= pl.col("ask"))
    mid = ((pl.col("bid").cast(WORK) + pl.col("ask").cast(WORK)) / 2).round(12, mode="half_away_from_zero")
    offset = pl.col("offset") if "offset" in frame.columns else pl.lit(0, pl.Int64).alias("offset")
    return frame.select("exchange", "symbol", _us().alias("t_us"), "seq", offset, mid.cast(MONEY).alias("mid"))


def candles(trades: pl.DataFrame, config: AnalyticsConfig) -> pl.DataFrame:
    """One row per (exchange, symbol, candle) with trades: the gold/candles_1m columns (times as µs)."""
    width = config.candle_s * SECOND_US
    frame = trades.select(
        "exchange", "symbol", "price", "size", _us().alias("t_us"), "seq", "trade_id",
    ).with_columns((pl.col("t_us") - pl.col("t_us") % width).alias("window_start_us"))
    ordered = frame.sort(["exchange", "symbol", "window_start_us", "t_us", "seq", "trade_id"], nulls_last=False)
    grouped = ordered.group_by(["exchange", "symbol", "window_start_us"], maintain_order=True).agg(
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("size").sum().alias("volume"),
        pl.len().alias("trades"),
        pl.col("price").alias("_prices"),
        pl.col("size").alias("_sizes"),
    )
    rows = []
    for row in grouped.to_dicts():
        notional = _exact(lambda: sum((p * s for p, s in zip(row.pop("_prices"), row.pop("_sizes"))), Decimal(0)))
        volume = row["volume"]
        rows.append({**row, "window_end_us": row["window_start_us"] + width,
                     "vwap": round_money(_exact(lambda: notional / volume))})
    columns = ["exchange", "symbol", "window_start_us", "window_end_us", "open", "high", "low", "close", "volume",
               "vwap", "trades"]
    return pl.DataFrame(rows, schema_overrides={"volume": pl.Decimal(38, 12)}).select(columns).sort(columns[:3]) \
        if rows else pl.DataFrame(schema={c: pl.Int64 for c in columns})


def _bar_ends(m: pl.DataFrame, config: AnalyticsConfig) -> pl.DataFrame:
    bar = config.bar_s * SECOND_US
    return m.select("exchange", "symbol", (pl.col("t_us") - pl.col("t_us") % bar + bar).alias("end_us")).unique()


def moving_averages(quotes: pl.DataFrame, config: AnalyticsConfig) -> pl.DataFrame:
    """At the end of every bar with quotes: the mean mid over [end - ma_window_s, end) and the bar's last mid."""
    m = mids(quotes)
    width = config.ma_window_s * SECOND_US
    bar = config.bar_s * SECOND_US
    joined = _bar_ends(m, config).join(m, on=["exchange", "symbol"], how="inner").filter(
        (pl.col("t_us") >= pl.col("end_us") - width) & (pl.col("t_us") < pl.col("end_us")))
    ordered = joined.sort(["exchange", "symbol", "end_us", "t_us", "seq", "offset"], nulls_last=False)
    grouped = ordered.group_by(["exchange", "symbol", "end_us"], maintain_order=True).agg(
        pl.col("mid").sum().alias("_sum"), pl.len().alias("quotes"),
        pl.col("mid").filter(pl.col("t_us") >= pl.col("end_us") - bar).last().alias("last_mid"),
    )
    rows = []
    for row in grouped.to_dicts():
        total, count = row.pop("_sum"), row["quotes"]
        rows.append({**row, "window_start_us": row["end_us"] - width,
                     "ma_mid": round_money(_exact(lambda: total / count))})
    return pl.DataFrame(rows).rename({"end_us": "window_end_us"}).select(
        "exchange", "symbol", "window_start_us", "window_end_us", "ma_mid", "last_mid", "quotes",
    ).sort(["exchange", "symbol", "window_end_us"])


def hourly_changes(quotes: pl.DataFrame, config: AnalyticsConfig) -> pl.DataFrame:
    """At the end of every bar with quotes: its last mid against the first mid of the earliest bar that starts in
    the look-back, per pair of the symbol."""
    m = mids(quotes)
    bar = config.bar_s * SECOND_US
    look_back = config.change_window_s * SECOND_US
    joined = _bar_ends(m, config).join(m, on=["exchange", "symbol"], how="inner").with_columns(
        (pl.col("t_us") - pl.col("t_us") % bar).alias("bar_start")
    ).filter((pl.col("bar_start") >= pl.col("end_us") - look_back) & (pl.col("t_us") < pl.col("end_us")))
    ordered = joined.sort(["exchange", "symbol", "end_us", "t_us", "seq", "offset"], nulls_last=False)
    grouped = ordered.group_by(["exchange", "symbol", "end_us"], maintain_order=True).agg(
        pl.col("mid").first().alias("base"), pl.col("bar_start").first().alias("base_ts_us"),
        pl.col("mid").last().alias("last"),
    )
    rows = []
    for row in grouped.to_dicts():
        change = round_bps(_exact(lambda: pct_change(row["base"], row["last"])))
        for pair in config.pairs_of(row["exchange"], row["symbol"]):
            rows.append({"pair": pair.name, "exchange": row["exchange"], "symbol": row["symbol"],
                         "ts_us": row["end_us"], "base_ts_us": row["base_ts_us"], "base": row["base"],
                         "last": row["last"], "change_pct": change})
    return pl.DataFrame(rows).sort(["pair", "exchange", "ts_us"])


def premiums(quotes: pl.DataFrame, config: AnalyticsConfig) -> pl.DataFrame:
    """Per pair, hour and UTC day with quotes on both exchanges: mean mids and the Coinbase premium in bps."""
    m = mids(quotes)
    rows = []
    for granularity, width in PREMIUM_PERIODS.items():
        sums = m.with_columns((pl.col("t_us") - pl.col("t_us") % width).alias("start")).group_by(
            ["exchange", "symbol", "start"]).agg(pl.col("mid").sum().alias("s"), pl.len().alias("n"))
        by_key = {(r["exchange"], r["symbol"], r["start"]): (r["s"], r["n"]) for r in sums.to_dicts()}
        for start in sorted({r["start"] for r in sums.to_dicts()}):
            for pair in config.pairs:
                cb = by_key.get(("coinbase", pair.coinbase, start))
                bn = by_key.get(("binance", pair.binance, start))
                if cb is None or bn is None:
                    continue
                cb_mean = _exact(lambda: cb[0] / cb[1])
                bn_mean = _exact(lambda: bn[0] / bn[1] * pair.binance_rate)
                rows.append({"pair": pair.name, "granularity": granularity, "period_start_us": start,
                             "period_end_us": start + width, "coinbase_mid": round_money(cb_mean),
                             "binance_mid": round_money(bn_mean),
                             "premium_bps": round_bps(_exact(lambda: premium_bps(cb_mean, bn_mean))),
                             "coinbase_quotes": cb[1], "binance_quotes": bn[1]})
    return pl.DataFrame(rows).sort(["pair", "granularity", "period_start_us"])


def crash_buckets(quotes: pl.DataFrame, config: AnalyticsConfig) -> pl.DataFrame:
    """`exchange, symbol, bucket_us, high, low` of every crash bucket with quotes."""
    width = config.crash_bucket_s * SECOND_US
    return mids(quotes).with_columns((pl.col("t_us") - pl.col("t_us") % width).alias("bucket_us")).group_by(
        ["exchange", "symbol", "bucket_us"]).agg(pl.col("mid").max().alias("high"), pl.col("mid").min().alias("low"))


def flash_crashes(quotes: pl.DataFrame, config: AnalyticsConfig) -> list[FlashCrash]:
    """The first crash bucket of every episode, in time order."""
    bars = crash_buckets(quotes, config)
    window = config.crash_window_s * SECOND_US
    before = bars.join(bars.select("exchange", "symbol", pl.col("bucket_us").alias("h_us"), pl.col("high").alias("h")),
                       on=["exchange", "symbol"], how="inner").filter(
        (pl.col("h_us") >= pl.col("bucket_us") - window) & (pl.col("h_us") < pl.col("bucket_us")))
    best = before.sort(["h", "h_us"], descending=[True, False]).group_by(
        ["exchange", "symbol", "bucket_us"]).agg(pl.col("h").first(), pl.col("h_us").first(), pl.col("low").first())
    crashes = [r for r in best.to_dicts() if r["low"] < crash_floor(r["h"], config.crash_drop_pct)]
    pair_rows = [{**r, "pair": p.name} for r in crashes for p in config.pairs_of(r["exchange"], r["symbol"])]
    if not pair_rows:
        return []
    cooldown = config.crash_cooldown_s * SECOND_US
    episodes = pl.DataFrame(pair_rows).sort(["pair", "bucket_us", "exchange", "symbol"]).with_columns(
        (pl.col("bucket_us") - pl.col("bucket_us").shift(1).over("pair")).alias("gap"))
    firsts = episodes.filter(pl.col("gap").is_null() | (pl.col("gap") > cooldown))
    out = [FlashCrash(r["pair"], r["exchange"], r["symbol"], r["bucket_us"], r["h"], r["h_us"], r["low"],
                      round_bps(_exact(lambda: -pct_change(r["h"], r["low"]))))
           for r in firsts.to_dicts()]
    return sorted(out, key=lambda c: (c.bucket_us, c.pair))
