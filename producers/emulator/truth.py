"""The ground truth file: what the emulator injected, so later stages can be checked against it.

    {"v": 1, "scenario": "windows", "seed": 7, "speed": 1.0, "started_us": 1763771200000000, "started_iso": "...Z",
     "updated_us": ..., "ended_us": null, "fees": {"coinbase": "0.006", "binance": "0.001"},
     "break_even_gross_bps": {"buy_coinbase_sell_binance": "70.07...", "buy_binance_sell_coinbase": "70.42..."},
     "pairs": [{"name": "BTC/USD", "coinbase": "BTC-USD", "binance": "BTCUSDT", "binance_rate": "1.0"}],
     "windows": [{"id": "w1", "pair": "BTC/USD", "direction": "buy_coinbase_sell_binance",
                  "planned_start_us": ..., "planned_end_us": ..., "start_us": ..., "start_iso": "...",
                  "end_us": ..., "end_iso": "...", "duration_ms": 5012,
                  "gross_bps_target": "100", "gross_peak_bps": "100.03", "net_peak_bps": "29.7",
                  "size": "0.4", "buy_ask": "65010.02", "sell_bid": "65660.13", "status": "closed"}],
     "faults": [{"kind": "silence", "exchange": "binance", "seconds": 8, "source": "scenario",
                 "start_us": ..., "start_iso": "...", "end_us": ..., "end_iso": "..."}],
     "crashes": [{"pair": "BTC/USD", "pct": -3.0, "start_us": ..., "end_us": ..., "label": "..."}],
     "moves": [...same shape as crashes...]}

A window's `start_us` is when both venues' latest published quotes first showed it, `end_us` when either stopped
showing it (null while open); `planned_*` are the scheduled times (scenario offsets / `speed`, from `started_us`).
Prices `buy_ask` / `sell_bid` are in the pair's quote currency; gross and net come from `arbitrage.spread` with
default taker fees (`fees`). The emulator rewrites the file (atomically) within a second of every change.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from arbitrage import spread
from arbitrage.fees import FeeSchedule
from producers.emulator.faults import Fault
from producers.emulator.market import Instrument, Move, Window, WindowAnchor


def now_us() -> int:
    return time.time_ns() // 1000


def iso_us(us: int) -> str:
    """`1618677810244075` -> `2021-04-17T16:43:30.244075Z` (Coinbase's time format)."""
    return dt.datetime.fromtimestamp(us / 1_000_000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bps(value: Decimal) -> str:
    return str(round(value, 4))


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class GroundTruth:
    """Collects injected windows (planned and as observed on the wire), faults and moves; `write()` saves them."""

    def __init__(self, scenario: str, seed: int | None, started_us: int, instruments: tuple[Instrument, ...],
                 fees: FeeSchedule = FeeSchedule(), speed: float = 1.0) -> None:
        self.started_us = started_us
        self.speed = speed  # scenario seconds per wall-clock second
        self.fees = fees
        self._head: dict[str, Any] = {
            "v": 1,
            "scenario": scenario,
            "seed": seed,
            "speed": speed,
            "started_us": started_us,
            "started_iso": iso_us(started_us),
            "fees": {"coinbase": str(fees.coinbase), "binance": str(fees.binance)},
            "break_even_gross_bps": {
                spread.BUY_COINBASE_SELL_BINANCE: _bps(spread.break_even_gross_bps(fees.coinbase, fees.binance)),
                spread.BUY_BINANCE_SELL_COINBASE: _bps(spread.break_even_gross_bps(fees.binance, fees.coinbase)),
            },
            "pairs": [
                {"name": i.name, "coinbase": i.coinbase_id, "binance": i.binance_id,
                 "binance_rate": str(i.pair.binance_rate)}
                for i in instruments
            ],
        }
        self.ended_us: int | None = None
        self.windows: dict[str, dict[str, Any]] = {}
        self.faults: list[dict[str, Any]] = []
        self.crashes: list[dict[str, Any]] = []
        self.moves: list[dict[str, Any]] = []
        self._showing: dict[tuple[str, str], str | None] = {}  # (pair, exchange) -> window id of its last quote
        self.changed = True

    def _at(self, offset_s: float) -> int:
        """Wall-clock microseconds of a scenario offset."""
        return self.started_us + round(offset_s / self.speed * 1_000_000)

    def plan_window(self, window: Window) -> dict[str, Any]:
        record = self.windows.get(window.id)
        if record is None:
            record = {
                "id": window.id,
                "pair": window.pair,
                "direction": window.direction,
                "planned_start_us": self._at(window.start_s),
                "planned_start_iso": iso_us(self._at(window.start_s)),
                "planned_end_us": self._at(window.end_s),
                "planned_end_iso": iso_us(self._at(window.end_s)),
                "start_us": None, "start_iso": None, "end_us": None, "end_iso": None, "duration_ms": None,
                "gross_bps_target": str(window.gross_bps),
                "expected_net_bps_target": str(window.expected_net_bps(self.fees)),
                "gross_peak_bps": None, "net_peak_bps": None,
                "size": str(window.size), "buy_ask": None, "sell_bid": None,
                "status": "planned",
            }
            self.windows[window.id] = record
            self.changed = True
        return record

    def observe_quote(self, window: Window | None, pair: str, exchange: str, shown: str | None, ts_us: int,
                      anchor: WindowAnchor | None, inst: Instrument | None) -> None:
        """Record which window (if any) a just-published quote shows; opens and closes windows as observed."""
        before = self._showing.get((pair, exchange))
        self._showing[(pair, exchange)] = shown
        if before == shown:
            return
        other = "binance" if exchange == "coinbase" else "coinbase"
        other_shown = self._showing.get((pair, other))
        if before is not None and before in self.windows:
            record = self.windows[before]
            if record["status"] == "open":
                record.update(end_us=ts_us, end_iso=iso_us(ts_us), status="closed",
                              duration_ms=(ts_us - record["start_us"]) // 1000)
                self.changed = True
        if shown is not None and shown == other_shown and window is not None:
            record = self.plan_window(window)
            if record["status"] == "planned" and anchor is not None and inst is not None:
                buy_rate, sell_rate = inst.rate(window.buy_exchange), inst.rate(window.sell_exchange)
                record.update(
                    start_us=ts_us, start_iso=iso_us(ts_us), status="open",
                    gross_peak_bps=str(round(anchor.gross_bps, 4)), net_peak_bps=str(round(anchor.net_bps, 4)),
                    buy_ask=str(anchor.buy_ask * buy_rate), sell_bid=str(anchor.sell_bid * sell_rate),
                )
                self.changed = True

    def record_fault(self, fault: Fault, start_us: int, source: str) -> dict[str, Any]:
        record = {**fault.describe(), "source": source, "start_us": start_us, "start_iso": iso_us(start_us)}
        if fault.seconds:
            end = start_us + round(fault.seconds * 1_000_000)
            record.update(end_us=end, end_iso=iso_us(end))
        self.faults.append(record)
        self.changed = True
        return record

    def record_move(self, move: Move) -> None:
        start, end = self._at(move.start_s), self._at(move.start_s + move.duration_s)
        record = {"pair": move.pair, "pct": move.pct, "label": move.label, "start_us": start,
                  "start_iso": iso_us(start), "end_us": end, "end_iso": iso_us(end), "duration_s": move.duration_s}
        (self.crashes if move.kind == "crash" else self.moves).append(record)
        self.changed = True

    def finish(self, ts_us: int) -> None:
        self.ended_us = ts_us
        for record in self.windows.values():
            if record["status"] == "open":
                record.update(end_us=ts_us, end_iso=iso_us(ts_us), status="closed",
                              duration_ms=(ts_us - record["start_us"]) // 1000)
        self.changed = True

    def to_dict(self) -> dict[str, Any]:
        windows = sorted(self.windows.values(), key=lambda r: r["planned_start_us"])
        return {
            **self._head,
            "updated_us": now_us(),
            "ended_us": self.ended_us,
            "windows": windows,
            "faults": list(self.faults),
            "crashes": list(self.crashes),
            "moves": list(self.moves),
        }

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())
        self.changed = False
