"""The one reconnect loop every producer runs: connect, subscribe, read frames, survive.

Per connection: publish `connected`, send the feed's subscribe messages (`subscribed` once the URL itself subscribes
or the venue confirms), then per frame: stamp the receive time, record it if asked, `feed.parse`, publish. A bad frame
is counted, logged and dead-lettered; the loop goes on.

Reconnects happen on: a closed or failed socket (exponential backoff with jitter, reset after a healthy connection),
silence longer than `silence_timeout_s` (`stale`), the feed asking for it (Binance `serverShutdown`), the connection
reaching `max_age_s` (Binance cuts at 24 h; we leave first), and a gap resync that got no snapshot in time.
Protocol pings are answered by the websockets library itself (it replies to every ping frame with a pong carrying the
same payload, as Binance requires).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

import orjson
import websockets

from arb.logs import log_event
from arbitrage.events import DeadLetter, FeedState, FeedStatus
from producers.feed import BadFrame, Feed
from producers.metrics import ProducerMetrics

log = logging.getLogger("producers.connection")


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """How one producer connects and when it gives a connection up."""

    url: str  # the full WebSocket URL (the feed's `url()`)
    silence_timeout_s: float = 10.0  # no frame for this long: the feed is stale, reconnect
    max_age_s: float | None = None  # reconnect proactively after this long (Binance: before its 24 h cut)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    healthy_after_s: float = 10.0  # a connection that lived this long resets the backoff
    resync_timeout_s: float = 10.0  # a resubscribe that brought no snapshot by then: reconnect
    open_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.silence_timeout_s <= 0:
            raise ValueError("silence timeout must be positive")


class Publisher(Protocol):
    """Where events go (KafkaSink implements this; tests use a list)."""

    def publish(self, events: list) -> None: ...

    def status(self, status: FeedStatus) -> None: ...

    def dead_letter(self, letter: DeadLetter) -> None: ...


class Recorder:
    """`--record FILE`: every received frame as `{"recv_ts": <epoch seconds>, "raw": "<frame>"}`, one a line."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def write(self, frame: str, recv_ts_us: int) -> None:
        self._stream.write(orjson.dumps({"recv_ts": recv_ts_us / 1_000_000, "raw": frame}) + b"\n")

    def flush(self) -> None:
        self._stream.flush()


def backoff_delay(attempt: int, initial_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d] where d = min(max, initial * 2**attempt)."""
    ceiling = min(max_s, initial_s * (2 ** min(attempt, 30)))
    return ceiling / 2 + rand() * ceiling / 2


class _Reconnect(Exception):
    """Leave the current connection on purpose (not an error: no backoff)."""


class FeedConnection:
    """Runs one feed until `stop` is set."""

    def __init__(
        self,
        feed: Feed,
        sink: Publisher,
        metrics: ProducerMetrics,
        config: ConnectionConfig,
        recorder: Recorder | None = None,
    ) -> None:
        self.feed = feed
        self.sink = sink
        self.metrics = metrics
        self.config = config
        self.recorder = recorder
        self._ws = None
        self._close_reason: str | None = None
        self._connected_at = 0.0
        self._resync_deadline: float | None = None

    def _status(self, state: FeedState, detail: str) -> None:
        self.sink.status(FeedStatus(self.feed.name, state, detail, time.time_ns() // 1000))

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        first = True
        while not stop.is_set():
            if not first:
                self.metrics.reconnects += 1
            first = False
            started = time.monotonic()
            reason = await self._one_connection(stop)
            if stop.is_set():
                break
            if reason.startswith("planned:"):
                attempt = 0
                continue  # reconnect at once
            if time.monotonic() - started >= self.config.healthy_after_s:
                attempt = 0
            delay = backoff_delay(attempt, self.config.backoff_initial_s, self.config.backoff_max_s)
            attempt += 1
            log_event(log, "reconnect_wait", exchange=self.feed.name, attempt=attempt, delay_s=round(delay, 3),
                      reason=reason)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _one_connection(self, stop: asyncio.Event) -> str:
        """Connect, read until the connection ends; returns why it ended ("planned: ..." for our own reasons)."""
        cfg = self.config
        feed = self.feed
        try:
            ws = await websockets.connect(
                cfg.url, open_timeout=cfg.open_timeout_s, max_size=None, compression=None, close_timeout=2,
                ping_interval=20, ping_timeout=20,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            log_event(log, "connect_failed", logging.WARNING, exchange=feed.name, url=cfg.url, error=_describe(exc))
            return f"connect failed: {_describe(exc)}"
        self._ws = ws
        self._close_reason = None
        self._connected_at = time.monotonic()
        self.metrics.last_frame_monotonic = self._connected_at
        self._resync_deadline = None
        feed.on_connect()
        self.metrics.connected = True
        log_event(log, "connected", exchange=feed.name, url=cfg.url)
        self._status(FeedState.CONNECTED, cfg.url)
        watchdog = asyncio.create_task(self._watchdog(ws))
        stopper = asyncio.create_task(self._close_on_stop(ws, stop))
        reason = "closed"
        try:
            for message in feed.subscribe_messages():
                await ws.send(message)
            if feed.subscribes_by_url:
                self._status(FeedState.SUBSCRIBED, "streams in the URL")
            await self._read(ws)
            reason = self._close_reason or _close_description(ws)
        except _Reconnect as exc:
            reason = f"planned: {exc}"
        except websockets.ConnectionClosed as exc:
            reason = self._close_reason or _describe(exc)
        except OSError as exc:
            reason = _describe(exc)
        finally:
            watchdog.cancel()
            stopper.cancel()
            self.metrics.connected = False
            self._ws = None
            await ws.close()
        if self.recorder is not None:
            self.recorder.flush()
        log_event(log, "disconnected", logging.INFO if stop.is_set() else logging.WARNING, exchange=feed.name,
                  reason=reason)
        self._status(FeedState.DISCONNECTED, "stopped" if stop.is_set() else reason)
        return reason

    async def _read(self, ws) -> None:
        # The hot path: keep it free of logging and allocation beyond what parsing needs.
        feed, sink, metrics, recorder = self.feed, self.sink, self.metrics, self.recorder
        parse, publish = feed.parse, sink.publish
        clock_us, monotonic = time.time_ns, time.monotonic
        async for frame in ws:
            recv_ts_us = clock_us() // 1000
            metrics.frames += 1
            metrics.last_frame_monotonic = monotonic()
            if type(frame) is not str:
                frame = frame.decode("utf-8", "replace")
            if recorder is not None:
                recorder.write(frame, recv_ts_us)
            try:
                events = parse(frame, recv_ts_us)
            except BadFrame as exc:
                self.bad_frame(frame, exc.reason, recv_ts_us)
                continue
            if events:
                publish(events)
            if feed.pending:
                await self._act(ws, recv_ts_us)

    def bad_frame(self, frame: str, reason: str, recv_ts_us: int) -> None:
        self.metrics.invalid += 1
        log_event(log, "bad_frame", logging.WARNING, exchange=self.feed.name, reason=reason, raw=frame[:500])
        self.sink.dead_letter(DeadLetter(source=self.feed.name, reason=reason, raw=frame, ts_recv_us=recv_ts_us))

    async def _act(self, ws, recv_ts_us: int) -> None:
        """Do what the feed asked for: resubscribe products after a gap, or reconnect."""
        symbols, reconnect = self.feed.take_requests()
        if reconnect is not None:
            log_event(log, "reconnect_requested", exchange=self.feed.name, reason=reconnect)
            raise _Reconnect(reconnect)
        if symbols:
            log_event(log, "resubscribe", logging.WARNING, exchange=self.feed.name, symbols=",".join(symbols))
            if self.feed.subscribes_by_url:
                raise _Reconnect(f"resync {','.join(symbols)}")
            for message in self.feed.resubscribe_messages(symbols):
                await ws.send(message)
            self._resync_deadline = time.monotonic() + self.config.resync_timeout_s

    async def _watchdog(self, ws) -> None:
        """Close the connection on silence, on old age and on a resync that never came."""
        cfg = self.config
        tick = min(1.0, cfg.silence_timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            silent = now - (self.metrics.last_frame_monotonic or self._connected_at)
            if silent > cfg.silence_timeout_s:
                log_event(log, "stale", logging.WARNING, exchange=self.feed.name, silent_s=round(silent, 3))
                self._status(FeedState.STALE, f"no frame for {silent:.1f} s")
                self._close_reason = f"silent for {silent:.1f} s"
                await ws.close(code=1000, reason="silence")
                return
            if cfg.max_age_s is not None and now - self._connected_at > cfg.max_age_s:
                self._close_reason = "planned: max connection age"
                await ws.close(code=1000, reason="max age")
                return
            if self._resync_deadline is not None and now > self._resync_deadline:
                waiting = getattr(self.feed, "awaiting_snapshot", lambda: [])()
                if waiting:
                    self._close_reason = f"no snapshot for {','.join(waiting)} after resubscribe"
                    await ws.close(code=1000, reason="resync timeout")
                    return
                self._resync_deadline = None

    async def _close_on_stop(self, ws, stop: asyncio.Event) -> None:
        await stop.wait()
        self._close_reason = "stopped"
        await ws.close(code=1000, reason="shutdown")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close_description(ws) -> str:
    code = getattr(ws, "close_code", None)
    if code is not None:
        return f"closed ({code} {getattr(ws, 'close_reason', '') or ''})".replace(" )", ")")
    return "connection closed"
