"""The reconnect loop over real WebSockets against a scripted local server (no Kafka: a list sink records what
would be published)."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.server import serve

from arbitrage.events import FeedState
from producers.binance import Binance
from producers.connection import ConnectionConfig, FeedConnection
from producers.metrics import ProducerMetrics
from tests.unit.producer_helpers import binance_markets

pytestmark = pytest.mark.integration

TICK = ('{"stream":"nknusdt@bookTicker","data":{"u":%d,"s":"NKNUSDT","b":"0.35210000","B":"672.00000000",'
        '"a":"0.35260000","A":"3199.00000000"}}')


async def hold(ws, seconds: float = 5.0) -> None:
    """Keep the connection open (sending nothing) until the client leaves or `seconds` pass."""
    try:
        await asyncio.wait_for(ws.wait_closed(), seconds)
    except TimeoutError:
        pass


class ListSink:
    def __init__(self) -> None:
        self.events, self.statuses, self.letters = [], [], []

    def publish(self, events) -> None:
        for event in events:
            (self.statuses if event.type == "status" else self.events).append(event)

    def status(self, status) -> None:
        self.statuses.append(status)

    def dead_letter(self, letter) -> None:
        self.letters.append(letter)


async def run_against(script, config_kw: dict, until, timeout_s: float = 20.0):
    """Serve `script(ws, connection_number)` on a free port, run a Binance FeedConnection until `until(sink)`."""
    connections = []

    async def handler(ws):
        connections.append(ws.request.path)
        await script(ws, len(connections))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        feed = Binance(binance_markets(), ["NKN/USDT"])
        sink, metrics = ListSink(), ProducerMetrics("binance")
        config = ConnectionConfig(url=feed.url(f"ws://127.0.0.1:{port}"), backoff_initial_s=0.05, **config_kw)
        stop = asyncio.Event()
        task = asyncio.create_task(FeedConnection(feed, sink, metrics, config).run(stop))
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not until(sink) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)
    return sink, metrics, connections


def states(sink) -> list[str]:
    return [s.state.value for s in sink.statuses]


def test_bad_frames_are_dead_lettered_counted_and_the_stream_goes_on():
    async def script(ws, n):
        await ws.send(TICK % 1)
        await ws.send("{broken")
        await ws.send(TICK.replace("0.35210000", "-1") % 2)
        await ws.send(TICK % 3)
        await hold(ws)

    sink, metrics, _ = asyncio.run(run_against(script, {}, lambda s: len(s.events) >= 2))
    assert [e.seq for e in sink.events] == [1, 3]
    assert [(d.reason, d.source) for d in sink.letters] == [("malformed JSON", "binance"),
                                                            ("non-positive bid '-1'", "binance")]
    assert sink.letters[0].raw == "{broken"
    assert metrics.invalid == 2 and metrics.reconnects == 0


def test_server_shutdown_notice_reconnects_at_once_and_resyncs():
    async def script(ws, n):
        await ws.send(TICK % (10 * n))
        if n == 1:
            await ws.send('{"e":"serverShutdown","E":1770123456789}')
        await hold(ws)

    sink, metrics, connections = asyncio.run(run_against(script, {}, lambda s: len(s.events) >= 2))
    assert len(connections) == 2 and connections[0].startswith("/stream?streams=nknusdt@bookTicker/nknusdt@trade")
    assert states(sink)[:6] == ["connected", "subscribed", "disconnected", "connected", "subscribed", "resynced"]
    assert "planned: serverShutdown" in sink.statuses[2].detail


def test_silence_reports_stale_then_reconnects():
    async def script(ws, n):
        await ws.send(TICK % n)
        await hold(ws)

    sink, metrics, connections = asyncio.run(
        run_against(script, {"silence_timeout_s": 0.3}, lambda s: len(s.events) >= 2))
    assert states(sink)[2:5] == ["stale", "disconnected", "connected"]
    assert metrics.reconnects >= 1


def test_connection_older_than_max_age_is_replaced_without_backoff():
    async def script(ws, n):
        for i in range(100):
            if ws.close_code is not None:
                return
            await ws.send(TICK % (1000 * n + i))
            await asyncio.sleep(0.05)

    sink, metrics, connections = asyncio.run(
        run_against(script, {"max_age_s": 0.5}, lambda s: sum(x.state == FeedState.CONNECTED for x in s.statuses) >= 2))
    assert len(connections) >= 2
    assert any(s.state == FeedState.DISCONNECTED and "max connection age" in s.detail for s in sink.statuses)


def test_refused_connection_is_retried_with_backoff_until_stopped():
    async def main():
        feed = Binance(binance_markets(), ["NKN/USDT"])
        sink, metrics = ListSink(), ProducerMetrics("binance")
        config = ConnectionConfig(url=feed.url("ws://127.0.0.1:9"), backoff_initial_s=0.05, backoff_max_s=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(FeedConnection(feed, sink, metrics, config).run(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 5)
        return metrics

    metrics = asyncio.run(main())
    assert metrics.reconnects >= 3 and not metrics.connected
