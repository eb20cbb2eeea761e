"""What both protocol servers share: per-connection outboxes, what was sent (counted per exchange and symbol),
and the websockets server they run on."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from arb.logs import log_event

log = logging.getLogger("emulator")

QUOTE, TRADE, MALFORMED = "quote", "trade", "malformed"


@dataclass
class Counters:
    """Frames sent per exchange, and quote / trade events sent per exchange and venue symbol.

    A quote event is a frame from which a producer derives one quote (a Binance bookTicker; a Coinbase snapshot or
    an l2update that changed the top of the book); a trade event is a Binance trade/aggTrade or a Coinbase match /
    last_match with a new trade id (the last_match a reconnecting client gets again is not counted twice). Counted
    once per connection the frame was written to: with one producer per exchange, exactly what it should publish.
    `trade_ids` keeps the ids of the trade events written, per exchange and venue symbol, as inclusive runs
    `[first, last]` (the ids a producer reads: Coinbase `trade_id`, Binance `t` or `a`).
    """

    frames: dict[str, int] = field(default_factory=lambda: {"coinbase": 0, "binance": 0})
    malformed: dict[str, int] = field(default_factory=lambda: {"coinbase": 0, "binance": 0})
    events: dict[str, dict[str, dict[str, int]]] = field(default_factory=lambda: {"coinbase": {}, "binance": {}})
    trade_ids: dict[str, dict[str, list[list[int]]]] = field(default_factory=lambda: {"coinbase": {}, "binance": {}})

    def count(self, exchange: str, kind: str | None, symbol: str | None, trade_id: int | None = None) -> None:
        self.frames[exchange] += 1
        if kind == MALFORMED:
            self.malformed[exchange] += 1
        elif kind is not None and symbol is not None:
            per_symbol = self.events[exchange].setdefault(symbol, {"quotes": 0, "trades": 0})
            per_symbol["quotes" if kind == QUOTE else "trades"] += 1
            if trade_id is not None:
                runs = self.trade_ids[exchange].setdefault(symbol, [])
                if runs and runs[-1][1] + 1 == trade_id:
                    runs[-1][1] = trade_id
                else:
                    runs.append([trade_id, trade_id])

    def snapshot(self) -> dict[str, Any]:
        return {
            "frames": dict(self.frames),
            "malformed": dict(self.malformed),
            "events": {ex: {sym: dict(c) for sym, c in syms.items()} for ex, syms in self.events.items()},
            "trade_ids": {ex: {sym: [list(r) for r in runs] for sym, runs in syms.items()}
                          for ex, syms in self.trade_ids.items()},
        }


class Client:
    """One connection: frames are queued here and written by the connection's own task, so a slow reader never
    holds up the market (real exchanges drop such readers too: past `max_queue` frames the connection is closed)."""

    def __init__(self, ws: ServerConnection, exchange: str, counters: Counters, max_queue: int = 50_000) -> None:
        self.ws = ws
        self.exchange = exchange
        self.counters = counters
        self.max_queue = max_queue
        self._queue: deque[tuple[str, str | None, str | None, int | None]] = deque()
        self._wakeup = asyncio.Event()
        self.closed = False

    @property
    def peer(self) -> str:
        addr = self.ws.remote_address
        return f"{addr[0]}:{addr[1]}" if addr else "?"

    @property
    def pending(self) -> int:
        return len(self._queue)

    def send(self, text: str, kind: str | None = None, symbol: str | None = None, trade_id: int | None = None) -> None:
        if self.closed:
            return
        if len(self._queue) >= self.max_queue:
            log_event(log, "slow_client_dropped", logging.WARNING, exchange=self.exchange, peer=self.peer)
            self.abort()
            return
        self._queue.append((text, kind, symbol, trade_id))
        self._wakeup.set()

    async def write_loop(self) -> None:
        try:
            while not self.closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and not self.closed:
                    text, kind, symbol, trade_id = self._queue.popleft()
                    await self.ws.send(text)
                    self.counters.count(self.exchange, kind, symbol, trade_id)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (what a network failure looks like to the client)."""
        self.closed = True
        self._wakeup.set()
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    async def close(self, code: int = 1001, reason: str = "") -> None:
        self.closed = True
        self._wakeup.set()
        await self.ws.close(code, reason)
