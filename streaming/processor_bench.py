"""`arb bench processor [--ticks N] [--json]`: the hot-path processor's Python cost per tick, without Spark.

Feeds a synthetic market (streaming.synthetic, windows injected) through `streaming.hotpath.ArbProcessor` exactly as
`transformWithStateInPandas` calls it: per micro-batch and pair, pandas frames typed as Spark's Arrow hands them over
(decimal(30,12) money as `Decimal`, longs as int64, a nullable long with nulls as float64), the state store round trip
(a JSON string per pair), event-time timers fired once the watermark passes them. The figure is the processor's CPU
time per input tick (process time, so that other load on a shared machine inflates it less than the wall clock; the
run is single-threaded); the frames are built before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

import pandas as pd

from arbitrage.events import FeedStatus, Quote, from_json
from arbitrage.rules import RulesConfig
from arbitrage.spread import DIRECTIONS
from streaming.synthetic import Injected, Scenario

_SCALE = Decimal("1e-12")  # decimal(30,12), as Spark's Arrow conversion gives it


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser("processor", help="hot-path processor: pure-Python µs per tick (no Spark)")
    parser.add_argument("--ticks", type=int, default=20_000, help="quote ticks across both exchanges and every pair")
    parser.add_argument("--rate", type=float, default=2000, help="market quotes per second (sets ticks per batch)")
    parser.add_argument("--batch-s", type=float, default=1.0, help="event-time seconds per micro-batch")
    parser.add_argument("--watermark-ms", type=int, default=300, help="watermark delay D")
    parser.add_argument("--reorder-ms", type=int, default=20, help="venue reorder allowance (hotpath.final_us)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best one is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


@dataclass
class Batch:
    watermark_ms: int
    frames: dict[str, pd.DataFrame]  # pair -> its input rows
    batch_ms: int  # the batch's (processing) time, as Spark stamps a micro-batch


def _money(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_SCALE)


def tick_frame(events: list[tuple[str, Quote | FeedStatus]]) -> pd.DataFrame:
    """(pair, event) -> the rows `pair_ticks` gives the processor (TICK_COLUMNS), Arrow-typed."""
    rows = []
    for pair, e in events:
        if isinstance(e, Quote):
            t = e.ts_event_us if e.ts_event_us is not None else e.ts_recv_us
            rows.append((pair, "quote", e.exchange, e.symbol, _money(e.bid), _money(e.bid_size), _money(e.ask),
                         _money(e.ask_size), t, e.seq, None))
        else:
            rows.append((pair, "status", e.exchange, e.symbol, None, None, None, None, e.ts_recv_us, None,
                         str(e.state)))
    frame = pd.DataFrame(rows, columns=["pair", "kind", "exchange", "symbol", "bid", "bid_size", "ask", "ask_size",
                                        "t_us", "seq", "state"])
    frame["t_us"] = frame["t_us"].astype("int64")
    frame["seq"] = frame["seq"].astype("float64" if frame["seq"].isna().any() else "int64")
    return frame


def market_batches(rules: RulesConfig, ticks: int, rate: float, batch_s: float, delay_ms: int) -> list[Batch]:
    """`ticks` quotes of the synthetic market at `rate` quotes/s (a 2 s window every 3 s) as micro-batches."""
    start_us = 1_795_308_000_000_000
    return scenario_batches(_scenario(rules, start_us, ticks / rate, rate), batch_s, delay_ms)


def scenario_batches(scenario: Scenario, batch_s: float, delay_ms: int,
                     quote_lag_ms: Mapping[str, int] | None = None, lag_ramp_s: float = 0.0) -> list[Batch]:
    """A scenario's quotes and feed statuses cut into micro-batches of `batch_s` seconds, a frame per pair.

    A batch holds what arrived in its time span: a record arrives at its event time, an exchange's quotes
    `quote_lag_ms[exchange]` later (a venue stamped by the exchange's clock, seen through a slower network, or a
    partition seconds behind the other), reached over the first `lag_ramp_s` seconds (a partition falling behind while
    it keeps delivering). A batch's watermark is the latest event time of the batches before it minus `delay_ms`,
    and its time the end of its span, as Spark sets them; the last batch brings no data.
    """
    lag_us = {exchange: ms * 1000 for exchange, ms in (quote_lag_ms or {}).items()}
    ramp_us = lag_ramp_s * 1e6

    def arrival_us(record: Any) -> int:
        lag = lag_us.get(record.topic_kind.removeprefix("quotes:"), 0)
        elapsed = record.t_us - scenario.start_us
        return record.t_us + (lag if elapsed >= ramp_us else int(lag * elapsed / ramp_us))

    batches: list[Batch] = []
    current: dict[str, list[tuple[str, Quote | FeedStatus]]] = {}
    step_us = int(batch_s * 1e6)
    batch_end = scenario.start_us + step_us
    max_t_us = 0
    watermark_ms = 0
    records = [r for r in scenario.records() if r.topic_kind.startswith(("quotes:", "status"))]
    for record in sorted(records, key=arrival_us):
        while arrival_us(record) >= batch_end:
            batches.append(Batch(watermark_ms, {p: tick_frame(rows) for p, rows in current.items()}, batch_end // 1000))
            current = {}
            watermark_ms = max(watermark_ms, max_t_us // 1000 - delay_ms)
            batch_end += step_us
        event = from_json(record.value)
        for pair in _pairs_of(scenario.rules, event):
            current.setdefault(pair, []).append((pair, event))
        max_t_us = max(max_t_us, record.t_us)
    batches.append(Batch(watermark_ms, {p: tick_frame(rows) for p, rows in current.items()}, batch_end // 1000))
    # Then the batch Spark runs without new data once the watermark has moved (it fires the timers it passes).
    batches.append(Batch(max(watermark_ms, max_t_us // 1000 - delay_ms), {}, (batch_end + step_us) // 1000))
    return batches


def _scenario(rules: RulesConfig, start_us: int, duration_s: float, rate: float) -> Scenario:
    """The market with a 2 s window every 3 s, pairs and directions in turn."""
    windows = []
    t = 1.0
    while t + 2.0 < duration_s:
        k = len(windows)
        windows.append(Injected(rules.pairs[k % len(rules.pairs)].name, DIRECTIONS[k % 2], start_us + int(t * 1e6),
                                start_us + int((t + 2.0) * 1e6)))
        t += 3.0
    return Scenario(rules, start_us, duration_s, rate, windows=windows, tail_s=0.0)


def _pairs_of(rules: RulesConfig, event: Quote | FeedStatus) -> list[str]:
    if isinstance(event, FeedStatus) and event.symbol is None:
        return [p.name for p in rules.pairs]
    return [p.name for p in rules.pairs_for(event.exchange, event.symbol)]


class _Driver:
    """Stands in for transformWithStateInPandas: a value state and event-time timers per key."""

    def __init__(self) -> None:
        self.key: str = ""
        self.values: dict[str, tuple] = {}
        self.timers: dict[str, set[int]] = {}

    # StatefulProcessorHandle
    def getValueState(self, name: str, schema: Any) -> "_Driver":
        return self

    def registerTimer(self, ms: int) -> None:
        self.timers.setdefault(self.key, set()).add(ms)

    def deleteTimer(self, ms: int) -> None:
        self.timers.get(self.key, set()).discard(ms)

    # ValueState
    def exists(self) -> bool:
        return self.key in self.values

    def get(self) -> tuple:
        return self.values[self.key]

    def update(self, value: tuple) -> None:
        self.values[self.key] = value


@dataclass
class _TimerValues:
    watermark_ms: int
    batch_ms: int

    def getCurrentWatermarkInMs(self) -> int:
        return self.watermark_ms

    def getCurrentProcessingTimeInMs(self) -> int:
        return self.batch_ms


@dataclass
class _Expired:
    expiry_ms: int

    def getExpiryTimeInMs(self) -> int:
        return self.expiry_ms


@dataclass
class Result:
    seconds: float  # CPU time
    wall_seconds: float
    ticks: int
    outputs: list[pd.DataFrame] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # pair -> its state store document at the end

    @property
    def us_per_tick(self) -> float:
        return self.seconds / self.ticks * 1e6


def run_processor(rules: RulesConfig, batches: list[Batch], delay_ms: int, reorder_ms: int | None) -> Result:
    """Every batch through a fresh ArbProcessor: input rows per pair, then the timers the watermark passed."""
    from streaming.hotpath import ArbProcessor

    driver = _Driver()
    processor = ArbProcessor(rules, delay_ms, reorder_ms)
    processor.init(driver)
    outputs: list[pd.DataFrame] = []
    ticks = sum(len(f) for b in batches for f in b.frames.values())
    started, started_wall = time.process_time(), time.perf_counter()
    for batch in batches:
        timer_values = _TimerValues(batch.watermark_ms, batch.batch_ms)
        for pair, frame in batch.frames.items():
            driver.key = pair
            outputs.extend(processor.handleInputRows((pair,), iter([frame]), timer_values))
        for pair in list(driver.timers):
            driver.key = pair
            for ms in sorted(m for m in driver.timers[pair] if m <= batch.watermark_ms):
                driver.timers[pair].discard(ms)
                outputs.extend(processor.handleExpiredTimer((pair,), timer_values, _Expired(ms)))
    seconds, wall_seconds = time.process_time() - started, time.perf_counter() - started_wall
    return Result(seconds, wall_seconds, ticks, outputs, {pair: value[0] for pair, value in driver.values.items()})


def measure(ticks: int = 20_000, rate: float = 2000, batch_s: float = 1.0, delay_ms: int = 300,
            reorder_ms: int = 20, repeat: int = 3) -> dict[str, Any]:
    rules = RulesConfig()
    batches = market_batches(rules, ticks, rate, batch_s, delay_ms)
    best = min((run_processor(rules, batches, delay_ms, reorder_ms) for _ in range(repeat)), key=lambda r: r.seconds)
    rows = pd.concat(best.outputs) if best.outputs else pd.DataFrame()
    return {
        "ticks": best.ticks,
        "batches": len(batches),
        "us_per_tick": round(best.us_per_tick, 1),  # CPU
        "wall_us_per_tick": round(best.wall_seconds / best.ticks * 1e6, 1),
        "cpu_seconds": round(best.seconds, 3),
        "spread_rows": int((rows["kind"] == "spread").sum()) if len(rows) else 0,
        "window_events": int((rows["kind"] == "window").sum()) if len(rows) else 0,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def run(args: argparse.Namespace, settings: Any) -> int:
    result = measure(args.ticks, args.rate, args.batch_s, args.watermark_ms, args.reorder_ms, args.repeat)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"processor: {result['us_per_tick']} µs CPU per tick, {result['wall_us_per_tick']} µs wall "
              f"({result['ticks']} ticks in {result['batches']} batches, "
              f"{result['spread_rows']} spread rows, {result['window_events']} window events, best of {args.repeat})")
    return 0
