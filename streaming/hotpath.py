"""The hot path: Kafka quotes + feed status -> spreads -> arbitrage windows -> alerts, in one streaming query.

Alignment rule (docs/RULES.md, "as-of, one row per tick"): for each quote tick q of exchange X at event time t, take
the latest quote r of the other exchange at or before q in the order (t, status before quote, exchange, seq); if r
exists, was not invalidated by a feed gap/disconnect/stale, and t - t_r <= S (the staleness bound), emit ONE row of
silver/spreads comparing q and r in both directions. A row is one tradable comparison at the moment the newer quote
arrived, never a cross product of ticks.

Query layout: one Kafka source reads both quote topics and the feed-status topic; the shared silver parse types and
validates them; one watermark (`watermark_delay_ms`) runs on the union's event time; a static map sends each quote
(and each feed status) to its pair(s); `transformWithStateInPandas` keyed by pair runs `ArbProcessor`. The processor
buffers a pair's ticks in the state store until they are final, feeds them to `arbitrage.windows.PairTracker` in the
RULES.md order (deterministic, as the Polars oracle), keeps the tracker in the state store, and sets an event-time
timer for the next stale deadline or buffered tick. A tick is final once both venues' latest quotes have passed it
(less a small reorder allowance); a venue that brings nothing in a micro-batch is idle, and the other venue's ticks
then go on the watermark delay D behind an estimate of its clock (`PairState.final_us`, docs/RULES.md). Most ticks
are therefore final in the micro-batch that brings them, and the spread rows and OPEN/CLOSE events go out in that
same micro-batch; `streaming.sinks.HotPathSink` writes the alerts first, then silver/spreads and gold/arb_windows.
Spark's watermark drives the timers but drops nothing (the operator's input has no watermarked column): the processor
decides what is late per pair, drops ticks that arrive below a line it already released and counts them (an output
row of kind "late"); the sink logs them.

Why the stream-stream join in front (the design the issue sketched; streaming/quotejoin.py, ARB_ALIGNMENT=join) is not
the default: a range join on (pair, time bucket) with |t_cb - t_bn| <= S emits every pair of ticks within S, i.e.
rate_cb * rate_bn * 2S rows per second per pair (~110,000 rows/s at 333 ticks/s per side and S = 500 ms) which the
processor then collapses back to one row per tick; `arb bench alignment` measured half the as-of drain rate at 400
quotes/s (docs/BENCHMARKS.md "Join vs as-of"). The as-of rule needs only the latest quote per side, which the
processor keeps anyway.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Iterator

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import (
    DecimalType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from arbitrage.events import FeedState
from arbitrage.rules import RulesConfig
from arbitrage.windows import (
    SPREAD_COLUMNS,
    PairTracker,
    QuoteTick,
    SpreadRow,
    StatusTick,
    WindowEvent,
    sort_key,
)

MONEY = DecimalType(30, 12)

TICK_COLUMNS = ("pair", "kind", "exchange", "symbol", "bid", "bid_size", "ask", "ask_size", "t_us", "seq", "state")

_LONG_FIELDS = ("event_ts_us", "coinbase_ts_us", "binance_ts_us", "coinbase_age_ms", "binance_age_ms",
                "coinbase_seq", "binance_seq", "start_ts_us", "end_ts_us", "duration_ms", "ticks", "emitted_ts_us")
_TEXT_FIELDS = ("kind", "pair", "window_id", "direction", "event", "close_reason")
_WINDOW_COLUMNS = ("window_id", "direction", "event", "start_ts_us", "end_ts_us", "duration_ms", "peak_net_bps",
                   "mean_net_bps", "size_at_peak", "profit_at_peak", "ticks", "close_reason", "emitted_ts_us")
# One output type for both kinds of rows: `kind` says which half is filled. Decimals cross the Arrow boundary as
# exact decimal strings and become decimal(30,12) again in the sink's Arrow tables (spreads_arrow, windows_arrow).
OUTPUT_COLUMNS = ("kind", "pair", *(c for c in SPREAD_COLUMNS if c != "pair"), *_WINDOW_COLUMNS)
OUTPUT_SCHEMA = StructType([
    StructField(c, LongType() if c in _LONG_FIELDS else StringType()) for c in OUTPUT_COLUMNS
])
STATE_SCHEMA = StructType([StructField("json", StringType())])


def pair_routes(rules: RulesConfig) -> dict[str, list[str]]:
    """`exchange|symbol` -> the configured pairs that tick concerns; `exchange|` (a feed status without a symbol)
    -> every pair of that exchange."""
    routes: dict[str, list[str]] = {}
    for pair in rules.pairs:
        for exchange in ("coinbase", "binance"):
            routes.setdefault(f"{exchange}|{pair.symbol_on(exchange)}", []).append(pair.name)
            routes.setdefault(f"{exchange}|", []).append(pair.name)
    return routes


def pair_ticks(events: DataFrame, rules: RulesConfig) -> DataFrame:
    """Valid quotes (crossed ones too: the tracker skips them) and feed statuses -> one tick row per pair concerned.

    A feed status without a symbol concerns every pair of its exchange. The routes are a literal map in the plan,
    not a join with a static frame: a broadcast join would be planned and broadcast again in every micro-batch.
    """
    routes = F.create_map(*[v for key, pairs in sorted(pair_routes(rules).items())
                            for v in (F.lit(key), F.array(*map(F.lit, pairs)))])
    route_key = F.concat(F.col("exchange"), F.lit("|"), F.coalesce(F.col("symbol"), F.lit("")))
    usable = events.where(F.col("reason").isNull() & F.col("kind").isin("quote", "status"))
    routed = usable.select("*", F.explode(F.element_at(routes, route_key)).alias("pair"))
    # A status names its pair's symbol on that exchange (the tracker keys statuses by exchange only).
    pair_symbols = F.create_map(*[v for pair in rules.pairs for exchange in ("coinbase", "binance")
                                  for v in (F.lit(f"{pair.name}|{exchange}"), F.lit(pair.symbol_on(exchange)))])
    return routed.select(
        "pair", "kind", "exchange",
        F.element_at(pair_symbols, F.concat(F.col("pair"), F.lit("|"), F.col("exchange"))).alias("symbol"),
        "bid", "bid_size", "ask", "ask_size", F.unix_micros("event_ts").alias("t_us"), "seq", "state", "event_ts",
    )


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _opt_int(value: Any) -> int | None:
    """A nullable long as Arrow hands it over: int, or float / NaN when the column has nulls."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if value != value else int(value)
    return None if pd.isna(value) else int(value)


def _tick_to_json(tick: QuoteTick | StatusTick) -> list:
    if isinstance(tick, StatusTick):
        return ["s", tick.exchange, str(tick.state), tick.ts_us, tick.symbol]
    return ["q", tick.exchange, tick.symbol, str(tick.bid), str(tick.bid_size), str(tick.ask), str(tick.ask_size),
            tick.event_ts_us, tick.seq]


def _tick_from_json(v: list) -> QuoteTick | StatusTick:
    if v[0] == "s":
        return StatusTick(v[1], FeedState(v[2]), v[3], v[4])
    return QuoteTick(v[1], v[2], Decimal(v[3]), Decimal(v[4]), Decimal(v[5]), Decimal(v[6]), v[7], v[8])


_FRAME_COLUMNS = ("kind", "exchange", "symbol", "bid", "bid_size", "ask", "ask_size", "t_us", "seq", "state")


def ticks_from_frame(pdf: pd.DataFrame) -> list[QuoteTick | StatusTick]:
    """Input rows of one pair (TICK_COLUMNS) -> rule ticks."""
    out: list[QuoteTick | StatusTick] = []
    # Whole columns as Python lists (one conversion each), not a pandas row object per tick.
    for kind, exchange, symbol, bid, bid_size, ask, ask_size, t_us, seq, state in zip(
        *(pdf[name].tolist() for name in _FRAME_COLUMNS)
    ):
        if kind == "status":
            out.append(StatusTick(exchange, FeedState(state), int(t_us), None))
        else:
            out.append(QuoteTick(exchange, symbol, _decimal(bid), _decimal(bid_size), _decimal(ask),
                                 _decimal(ask_size), int(t_us), _opt_int(seq)))
    return out


def _identity(tick: QuoteTick | StatusTick) -> tuple:
    """Two deliveries of the same tick (a producer resend) have the same identity."""
    if isinstance(tick, StatusTick):
        return ("s", tick.exchange, str(tick.state), tick.ts_us)
    return ("q", tick.exchange, tick.seq, tick.event_ts_us)


# A spread row fills the spread half of an output row, a window event the window half; the rest is null.
_NO_SPREAD = (None,) * (len(SPREAD_COLUMNS) - 1)
_NO_WINDOW = (None,) * len(_WINDOW_COLUMNS)


def output_rows(items: list[SpreadRow | WindowEvent], emitted_us: int) -> list[tuple]:
    """Processor items -> output rows as tuples in OUTPUT_COLUMNS order (`emitted_us` stamps the window events)."""
    rows: list[tuple] = []
    for item in items:
        if isinstance(item, SpreadRow):
            rows.append(("spread", *item, *_NO_WINDOW))  # SpreadRow's fields are SPREAD_COLUMNS, "pair" first
        else:
            rows.append((
                "window", item.pair, *_NO_SPREAD, item.window_id, item.direction, item.event, item.start_ts_us,
                item.end_ts_us, item.duration_ms, item.peak_net_bps, item.mean_net_bps, item.size_at_peak,
                item.profit_at_peak, item.ticks, item.close_reason, emitted_us,
            ))
    return rows


def late_row(pair: str, count: int, emitted_us: int) -> tuple:
    """An output row that says how many ticks of `pair` arrived below its final line and were dropped: late, or a
    resend of a tick already compared (`kind` "late", the count in `ticks`)."""
    row = dict.fromkeys(OUTPUT_COLUMNS)
    row.update(kind="late", pair=pair, ticks=count, emitted_ts_us=emitted_us)
    return tuple(row.values())


def late_counts(out: pa.Table) -> dict[str, int]:
    """Processor output (Arrow) -> ticks dropped as late, per pair."""
    rows = out.filter(pc.equal(out["kind"], "late"))
    counts: dict[str, int] = {}
    for pair, count in zip(rows["pair"].to_pylist(), rows["ticks"].to_pylist()):
        counts[pair] = counts.get(pair, 0) + count
    return counts


def _plain(values: tuple) -> list[str | None]:
    """Decimals -> exact plain strings (never an exponent); a repeated object reuses its string."""
    # The window half of spread rows (and vice versa) is all null. Checked ends first: tuple.count compares a Decimal
    # with None the slow way.
    if values and values[0] is None and values[-1] is None and values.count(None) == len(values):
        return list(values)
    out: list[str | None] = []
    last: Any = None
    text: str | None = None
    for value in values:
        if value is not last:
            last = value
            if value is None:
                text = None
            else:
                # str() is twice as fast as format(value, "f") and gives the same text unless it picks exponent
                # notation (tiny values, positive exponents).
                text = str(value)
                if "E" in text:
                    text = format(value, "f")
        out.append(text)
    return out


def _longs(values: tuple) -> pd.arrays.IntegerArray:
    """Python ints and None -> a nullable Int64 array."""
    nulls = values.count(None)
    if nulls == 0:
        return pd.arrays.IntegerArray(np.array(values, dtype=np.int64), np.zeros(len(values), dtype=bool))
    if nulls == len(values):
        return pd.arrays.IntegerArray(np.zeros(len(values), dtype=np.int64), np.ones(len(values), dtype=bool))
    return pd.arrays.IntegerArray(np.array([0 if v is None else v for v in values], dtype=np.int64),
                                  np.array([v is None for v in values], dtype=bool))


def _objects(values: tuple | list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def output_frame(rows: list[tuple] | list[dict]) -> pd.DataFrame:
    """Rows (tuples in OUTPUT_COLUMNS order, or dicts by column name) -> a pandas frame typed for OUTPUT_SCHEMA
    (nullable Int64 longs, decimals as plain strings)."""
    if rows and isinstance(rows[0], dict):
        rows = [tuple(row.get(name) for name in OUTPUT_COLUMNS) for row in rows]
    columns = list(zip(*rows)) if rows else [()] * len(OUTPUT_COLUMNS)
    frame: dict[str, Any] = {}
    for name, values in zip(OUTPUT_COLUMNS, columns):
        if name in _LONG_FIELDS:
            frame[name] = _longs(values)
        elif name in _TEXT_FIELDS:
            frame[name] = _objects(values)
        else:
            frame[name] = _objects(_plain(values))
    return pd.DataFrame(frame, copy=False)


class PairState:
    """A pair's tracker plus the ticks not yet final (above `final_us`), as one JSON document."""

    def __init__(self, tracker: PairTracker, buffer: list[QuoteTick | StatusTick], timer_ms: int | None,
                 max_t_us: int = 0, venue_max_us: dict[str, int] | None = None,
                 venue_batch_ms: dict[str, int] | None = None) -> None:
        self.tracker = tracker
        self.buffer = buffer
        self.timer_ms = timer_ms
        self.max_t_us = max_t_us  # the latest event time this pair has seen
        self.venue_max_us = venue_max_us or {}  # per exchange: its latest quote's event time
        self.venue_batch_ms = venue_batch_ms or {}  # per exchange: the micro-batch (its time) that last brought a quote

    @classmethod
    def load(cls, raw: str | None, pair: Any, rules: RulesConfig) -> "PairState":
        if raw is None:
            return cls(PairTracker(pair, rules), [], None)
        doc = orjson.loads(raw)
        return cls(PairTracker.from_state(pair, rules, doc["tracker"]),
                   [_tick_from_json(t) for t in doc["buffer"]], doc["timer_ms"], doc.get("max_t_us", 0),
                   doc.get("venue_max_us"), doc.get("venue_batch_ms"))

    def dump(self) -> str:
        return orjson.dumps({"tracker": self.tracker.to_state(), "buffer": [_tick_to_json(t) for t in self.buffer],
                             "timer_ms": self.timer_ms, "max_t_us": self.max_t_us,
                             "venue_max_us": self.venue_max_us, "venue_batch_ms": self.venue_batch_ms}).decode()

    def add(self, ticks: list[QuoteTick | StatusTick], batch_ms: int) -> None:
        """Buffer the ticks of the micro-batch stamped `batch_ms` (Spark's batch time: the same when it is replayed)."""
        seen = {_identity(t) for t in self.buffer}
        max_t_us = self.max_t_us
        venue_max_us = self.venue_max_us
        for tick in ticks:
            identity = _identity(tick)
            if identity not in seen:
                seen.add(identity)
                self.buffer.append(tick)
                t_us = _time(tick)
                max_t_us = max(max_t_us, t_us)
                if isinstance(tick, QuoteTick):
                    self.venue_batch_ms[tick.exchange] = batch_ms
                    if t_us > venue_max_us.get(tick.exchange, 0):
                        venue_max_us[tick.exchange] = t_us
        self.max_t_us = max_t_us

    def final_us(self, watermark_us: int, delay_us: int, reorder_us: int | None, batch_ms: int) -> int:
        """The event time up to which no tick of this pair can still come (or is late if it does).

        - The venue frontier: the older of the two venues' latest quotes, minus `reorder_us`. Each venue's quotes
          reach us in their own event-time order (one Kafka partition per symbol, the exchange's clock or our
          receive clock), so once both venues have passed t, nothing at or below t is still to come; `reorder_us`
          covers what breaks that order a little (a Coinbase snapshot quote stamped with our receive time before
          updates stamped by the exchange; a feed status on its own topic). A tick is then final in the micro-batch
          that brings it as soon as the other venue has ticked past it. None: no frontier (the join path).
        - While the venue behind (the older latest quote) brings quotes in this micro-batch, the frontier alone: its
          partition may be seconds of event time behind the other's (a producer's backlog flushed after an outage,
          a batch planned while a burst was half written), and neither the pair's latest tick minus D nor Spark's
          watermark (the whole stream's latest minus D) may pass quotes it has still to hand over.
        - When the venue behind brings nothing in this batch, it is idle (as an idle partition is to a per-partition
          watermark): silent, or its partition behind. Its clock is taken to run on at the wall clock's pace from its
          last delivery (micro-batch times, which a replayed batch keeps), and the other venue's ticks are final up to
          that less the watermark delay D (and never beyond the pair's latest tick less D): a silent venue goes stale
          about D after the staleness bound, and a venue behind that pauses is not overtaken.
        - When neither venue brings quotes (a batch that only fires timers), Spark's watermark too: a pair with no
          input moves with the rest of the stream, and the last ticks before the input ends are released.
        """
        pair_line = self.max_t_us - delay_us
        if reorder_us is None:
            return max(watermark_us, pair_line)
        delivering = [v for v, ms in self.venue_batch_ms.items() if ms == batch_ms]
        if len(self.venue_max_us) < 2:  # a venue yet to quote: nothing to compare with, no frontier
            return pair_line if delivering else max(pair_line, watermark_us)
        behind = min(self.venue_max_us, key=self.venue_max_us.__getitem__)
        frontier = self.venue_max_us[behind] - reorder_us
        if behind in delivering:
            return frontier
        if not delivering:
            return max(frontier, pair_line, watermark_us)
        idle_line = self.venue_max_us[behind] + (batch_ms - self.venue_batch_ms[behind]) * 1000 - delay_us
        return max(frontier, min(pair_line, idle_line))

    def release(self, watermark_us: int) -> list[SpreadRow | WindowEvent]:
        """Feed every buffered tick with t <= watermark in RULES.md order, then fire stale closes up to it."""
        ready: list[QuoteTick | StatusTick] = []
        kept: list[QuoteTick | StatusTick] = []
        for tick in self.buffer:
            (ready if _time(tick) <= watermark_us else kept).append(tick)
        ready.sort(key=sort_key)
        self.buffer = kept
        out = self.tracker.feed(ready)
        if watermark_us > 0:
            out.extend(self.tracker.advance_to(watermark_us))
        return out

    def wanted_timer_ms(self) -> int | None:
        """When the watermark next matters: the earliest buffered tick or the next stale deadline (ms, rounded up)."""
        times = [_time(t) for t in self.buffer]
        deadline = self.tracker.next_deadline_us()
        if deadline is not None:
            times.append(deadline)
        return -(-min(times) // 1000) if times else None


def _time(tick: QuoteTick | StatusTick) -> int:
    return tick.ts_us if isinstance(tick, StatusTick) else tick.event_ts_us


class ArbProcessor(StatefulProcessor):
    """Per pair: buffer ticks until they are final, run PairTracker, emit spread rows, window events and late counts."""

    def __init__(self, rules: RulesConfig, watermark_delay_ms: int, venue_reorder_ms: int | None) -> None:
        self.rules = rules
        self.delay_us = watermark_delay_ms * 1000
        self.reorder_us = None if venue_reorder_ms is None else venue_reorder_ms * 1000

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.state = handle.getValueState("pair_state", STATE_SCHEMA)

    def _run(self, pair_name: str, new_ticks: list, watermark_ms: int, batch_ms: int,
             expired_timer_ms: int | None = None) -> Iterator[pd.DataFrame]:
        raw = self.state.get()[0] if self.state.exists() else None
        state = PairState.load(raw, self.rules.pair(pair_name), self.rules)
        if expired_timer_ms is not None and state.timer_ms == expired_timer_ms:
            state.timer_ms = None  # the fired timer is gone; forget it so the next one is registered
        state.add(new_ticks, batch_ms)
        late_before = state.tracker.late_ticks
        line = state.final_us(max(watermark_ms, 0) * 1000, self.delay_us, self.reorder_us, batch_ms)
        items = state.release(line)
        late = state.tracker.late_ticks - late_before
        wanted = state.wanted_timer_ms()
        if wanted != state.timer_ms:
            if state.timer_ms is not None:
                self.handle.deleteTimer(state.timer_ms)
            if wanted is not None:
                # A timer at or below the watermark would fire at once, forever: the tick is released next batch.
                wanted = max(wanted, watermark_ms + 1)
                self.handle.registerTimer(wanted)
            state.timer_ms = wanted
        self.state.update((state.dump(),))
        if items or late:
            now_us = time.time_ns() // 1000
            rows = output_rows(items, now_us)
            if late:
                rows.append(late_row(pair_name, late, now_us))
            yield output_frame(rows)

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Iterator[pd.DataFrame]:
        ticks: list = []
        for pdf in rows:
            ticks.extend(ticks_from_frame(pdf))
        yield from self._run(key[0], ticks, timerValues.getCurrentWatermarkInMs(),
                             timerValues.getCurrentProcessingTimeInMs())

    def handleExpiredTimer(self, key: Any, timerValues: Any, expiredTimerInfo: Any) -> Iterator[pd.DataFrame]:
        yield from self._run(key[0], [], timerValues.getCurrentWatermarkInMs(),
                             timerValues.getCurrentProcessingTimeInMs(), expiredTimerInfo.getExpiryTimeInMs())

    def close(self) -> None:
        pass


def arb_stream(ticks: DataFrame, rules: RulesConfig, watermark_delay_ms: int, venue_reorder_ms: int) -> DataFrame:
    """Watermarked pair ticks -> spread rows and window events (OUTPUT_SCHEMA), via transformWithStateInPandas.

    Money stays in exact decimal strings: the sink takes the batch to Arrow once and types it there
    (`spreads_arrow`, `windows_arrow`), which costs less than Spark's string -> decimal -> Arrow conversions.
    """
    # Without the watermarked `event_ts` column in its input, the operator has no late-row filter of its own (Spark
    # would drop rows below the stream-wide watermark before the processor sees them, a lagging venue's among them):
    # the processor decides what is late, per pair, and counts it. The watermark still drives the timers.
    grouped = ticks.select(*TICK_COLUMNS).groupBy("pair")
    return grouped.transformWithStateInPandas(
        statefulProcessor=ArbProcessor(rules, watermark_delay_ms, venue_reorder_ms),
        outputStructType=OUTPUT_SCHEMA,
        outputMode="Append",
        timeMode="EventTime",
    )


MONEY_ARROW = pa.decimal128(MONEY.precision, MONEY.scale)
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _money(column: Any) -> Any:
    # Exact: the rules quantize every figure to at most MONEY's scale, so no digit is lost (Arrow refuses otherwise).
    return pc.cast(column, MONEY_ARROW)


def _timestamp(column: Any) -> Any:
    return pc.cast(column, pa.int64()).cast(_TIMESTAMP)


def _text(column: Any) -> Any:
    return pc.cast(column, pa.string())  # an all-null column may arrive as Arrow's null type


def _date(column: Any) -> Any:
    return pc.cast(_timestamp(column), pa.date32())  # UTC, as the session's time zone


def spreads_arrow(out: pa.Table) -> pa.Table:
    """Processor output (Arrow) -> silver/spreads rows (docs/DATA_MODEL.md)."""
    rows = out.filter(pc.equal(out["kind"], "spread"))
    money = [f"{venue}_{side}" for venue in ("coinbase", "binance") for side in ("bid", "bid_size", "ask", "ask_size")]
    directions = [f"{p}{c}" for p in ("cb_bn_", "bn_cb_") for c in ("gross_bps", "net_bps", "size", "profit")]
    columns = {
        "pair": _text(rows["pair"]),
        "event_ts": _timestamp(rows["event_ts_us"]),
        **{name: _money(rows[name]) for name in money},
        "coinbase_ts": _timestamp(rows["coinbase_ts_us"]),
        "binance_ts": _timestamp(rows["binance_ts_us"]),
        **{name: pc.cast(rows[name], pa.int64())
           for name in ("coinbase_age_ms", "binance_age_ms", "coinbase_seq", "binance_seq")},
        **{name: _money(rows[name]) for name in directions},
        "date": _date(rows["event_ts_us"]),
    }
    return pa.table(columns)


def windows_arrow(out: pa.Table) -> pa.Table:
    """Processor output (Arrow) -> gold/arb_windows events; `date` is the event's own date (start on OPEN, end on
    CLOSE)."""
    rows = out.filter(pc.equal(out["kind"], "window"))
    columns = {
        **{name: _text(rows[name]) for name in ("window_id", "pair", "direction", "event")},
        "start_ts": _timestamp(rows["start_ts_us"]),
        "end_ts": _timestamp(rows["end_ts_us"]),
        "duration_ms": pc.cast(rows["duration_ms"], pa.int64()),
        **{name: _money(rows[name]) for name in ("peak_net_bps", "mean_net_bps", "size_at_peak", "profit_at_peak")},
        "ticks": pc.cast(rows["ticks"], pa.int64()),
        "close_reason": _text(rows["close_reason"]),
        "emitted_ts": _timestamp(rows["emitted_ts_us"]),
        "date": _date(pc.coalesce(rows["end_ts_us"], rows["start_ts_us"])),
    }
    return pa.table(columns)
