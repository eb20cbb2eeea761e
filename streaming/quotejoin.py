"""The hot path's other alignment: a stream-stream join of the Coinbase and Binance quote streams in front of the
processor (`arb stream ... --align join`, the user's original design; the default is `asof`, streaming/hotpath.py).

    Coinbase quotes + feed status (one Kafka source) -> pair ticks, watermark D  \
    Binance quotes + feed status (another source)    -> pair ticks, watermark D  /
      -> inner join on (pair, time bucket) AND |t_bn - t_cb| <= S (S = the staleness bound)
      -> ArbProcessor, fed the distinct ticks of the joined rows -> spread rows, window events

A joined row is a pair of ticks less than S apart, so it is NOT a tradable comparison: ticks within S of each other
make a cross product (rate_cb x rate_bn x 2S rows/s per pair). The processor collapses it back with the as-of rule of
docs/RULES.md (the latest quote of the other side at or before a tick), so silver/spreads still holds one row per
tick and equals the Polars oracle. A tick without any partner within S never reaches the processor; that changes
nothing, because such a tick faces a stale other side (no comparison) and is superseded as "latest quote" before the
other side comes back. A feed status rides the join the same way: it matters only while the other side is fresh.

Bucketed key: bucket = floor(t / S). A Coinbase tick in bucket k can only match Binance ticks in buckets k-1..k+1, so
each Binance tick is stored under those three keys: the rows scanned per probe stay those within ~3S of one pair
instead of everything the watermark keeps. Both sides carry a watermark; the query runs with the `max` multiple-
watermark policy, so one silent venue does not hold the other's state and timers back (the same event-time clock as
the single-watermark as-of query). The join and `transformWithStateInPandas` share one query, hence one state store:
RocksDB (the processor cannot run on another). See docs/BENCHMARKS.md "Join vs as-of" for what the fan-out costs.
"""

from __future__ import annotations

from typing import Any, Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from arbitrage.rules import RulesConfig
from streaming.hotpath import OUTPUT_SCHEMA, TICK_COLUMNS, ArbProcessor, ticks_from_frame

SIDES = {"coinbase": "cb_", "binance": "bn_"}
# Spark reads it when a query first starts and keeps it in the checkpoint.
WATERMARK_POLICY = "spark.sql.streaming.multipleWatermarkPolicy"


def _side(ticks: DataFrame, exchange: str, watermark_delay_ms: int) -> DataFrame:
    prefix = SIDES[exchange]
    side = ticks.where(F.col("exchange") == exchange).withWatermark(
        "event_ts", f"{watermark_delay_ms} milliseconds")
    return side.select(*[F.col(c).alias(prefix + c) for c in (*TICK_COLUMNS, "event_ts")])


def _bucket(t_us: Column, staleness_us: int) -> Column:
    return F.floor(t_us / F.lit(staleness_us))


def join_sides(coinbase: DataFrame, binance: DataFrame, rules: RulesConfig, watermark_delay_ms: int) -> DataFrame:
    """Each venue's pair ticks (hotpath.pair_ticks of its own Kafka source, not yet watermarked) -> every
    (Coinbase tick, Binance tick) of a pair at most S apart, with `pair` and `event_ts` (the Coinbase side's)."""
    s_us = rules.staleness_us
    cb = _side(coinbase, "coinbase", watermark_delay_ms).withColumn("cb_bucket", _bucket(F.col("cb_t_us"), s_us))
    bn = _side(binance, "binance", watermark_delay_ms).withColumn(
        "bn_bucket", F.explode(F.array(*[_bucket(F.col("bn_t_us"), s_us) + k for k in (-1, 0, 1)])))
    within = (f"bn_event_ts BETWEEN cb_event_ts - INTERVAL {s_us} MICROSECONDS"
              f" AND cb_event_ts + INTERVAL {s_us} MICROSECONDS")
    joined = cb.join(bn, (F.col("cb_pair") == F.col("bn_pair")) & (F.col("cb_bucket") == F.col("bn_bucket"))
                     & F.expr(within))
    return joined.select(F.col("cb_pair").alias("pair"), F.col("cb_event_ts").alias("event_ts"),
                         *[p + c for p in SIDES.values() for c in TICK_COLUMNS if c != "pair"])


def distinct_ticks(joined: pd.DataFrame) -> pd.DataFrame:
    """Joined rows of one pair -> each side's distinct ticks, as TICK_COLUMNS rows."""
    halves = []
    for prefix in SIDES.values():
        half = joined[[prefix + c for c in TICK_COLUMNS if c != "pair"]]
        halves.append(half.set_axis([c for c in TICK_COLUMNS if c != "pair"], axis=1))
    ticks = pd.concat(halves, ignore_index=True)
    # Decimals hash by value; the identity of a tick is all of its fields.
    return ticks.drop_duplicates(ignore_index=True)


class JoinedArbProcessor(ArbProcessor):
    """ArbProcessor fed by the join: the same tick reaches it once per partner, across micro-batches.

    A tick at or below the line up to which the pair was already released (final) has been fed before, or is late;
    either way the tracker must not see it again, so it is dropped here and not counted as late. No venue frontier:
    the join hands a tick over when its partners arrive, so a venue's ticks do not come in their event-time order.
    """

    def __init__(self, rules: RulesConfig, watermark_delay_ms: int) -> None:
        super().__init__(rules, watermark_delay_ms, venue_reorder_ms=None)

    def init(self, handle: Any) -> None:
        super().init(handle)
        from pyspark.sql.types import LongType, StructField, StructType

        self.released = handle.getValueState("released_us", StructType([StructField("us", LongType())]))
        self.seen_max = handle.getValueState("seen_max_us", StructType([StructField("us", LongType())]))

    def _value(self, state: Any) -> int:
        return state.get()[0] if state.exists() else -1

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Iterator[pd.DataFrame]:
        watermark_ms = timerValues.getCurrentWatermarkInMs()
        released = self._value(self.released)
        frames = [distinct_ticks(pdf) for pdf in rows]
        ticks = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True) if frames else None
        new_ticks = []
        seen_max = self._value(self.seen_max)
        if ticks is not None and len(ticks):
            fresh = ticks[ticks["t_us"] > released]
            new_ticks = ticks_from_frame(fresh)
            if len(fresh):
                seen_max = max(seen_max, int(fresh["t_us"].max()))
                self.seen_max.update((seen_max,))
        yield from self._run(key[0], new_ticks, watermark_ms, timerValues.getCurrentProcessingTimeInMs())
        self._mark_released(watermark_ms, seen_max)

    def handleExpiredTimer(self, key: Any, timerValues: Any, expiredTimerInfo: Any) -> Iterator[pd.DataFrame]:
        yield from super().handleExpiredTimer(key, timerValues, expiredTimerInfo)
        self._mark_released(timerValues.getCurrentWatermarkInMs(), self._value(self.seen_max))

    def _mark_released(self, watermark_ms: int, seen_max_us: int) -> None:
        # The same line ArbProcessor._run releases up to.
        line = max(watermark_ms * 1000 if watermark_ms > 0 else 0, seen_max_us - self.delay_us)
        if line > self._value(self.released):
            self.released.update((line,))


def arb_stream(coinbase: DataFrame, binance: DataFrame, rules: RulesConfig, watermark_delay_ms: int) -> DataFrame:
    """Each venue's pair ticks -> join -> spread rows and window events (hotpath.OUTPUT_SCHEMA, money as exact decimal
    strings like the as-of query's)."""
    joined = join_sides(coinbase, binance, rules, watermark_delay_ms)
    return joined.groupBy("pair").transformWithStateInPandas(
        statefulProcessor=JoinedArbProcessor(rules, watermark_delay_ms),
        outputStructType=OUTPUT_SCHEMA,
        outputMode="Append",
        timeMode="EventTime",
    )
