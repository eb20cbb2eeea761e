"""Trades in flight on a cut connection: lost, as with a real exchange, but never silently.

The emulator writes frames into a connection that then swallows them (counted as written, never delivered: what a
dying TCP connection does to frames in flight) and is then dropped. Each producer must report every lost trade id in
a `gap` status when it is back, from the first trade on the new connection (Coinbase: the `last_match` it sends on
subscribe). No Kafka and no Spark here: the producers' real connection loop publishes into a list.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from arbitrage.events import FeedState, FeedStatus, Trade
from producers.cli import default_symbols, feed_class, load_markets
from producers.connection import ConnectionConfig, FeedConnection
from producers.emulator.emulator import BackgroundEmulator, EmulatorConfig
from producers.emulator.scenario import parse_scenario
from producers.metrics import ProducerMetrics

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(300)]

EXCHANGES = ("coinbase", "binance")


class ListSink:
    def __init__(self) -> None:
        self.events: list = []
        self.trades = 0

    def publish(self, events: list) -> None:
        self.events += events
        self.trades += sum(isinstance(e, Trade) for e in events)

    def status(self, status: FeedStatus) -> None:
        self.events.append(status)

    def dead_letter(self, letter) -> None:
        raise AssertionError(f"dead letter: {letter}")


class RunningFeed:
    """One producer's connection loop on its own thread, publishing into a ListSink."""

    def __init__(self, exchange: str, url: str) -> None:
        symbols = default_symbols(exchange)
        self.feed = feed_class(exchange)(load_markets(exchange, None, offline_default=True), symbols)
        self.sink = ListSink()
        self.metrics = ProducerMetrics(exchange)
        config = ConnectionConfig(url=self.feed.url(url), backoff_initial_s=0.1)
        self.connection = FeedConnection(self.feed, self.sink, self.metrics, config)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        await self.connection.run(self._stop)

    def start(self) -> RunningFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


def _swallow_everything(emulator, exchange: str) -> int:
    """From now on, frames written to the exchange's connections are counted as written and never delivered."""
    server = emulator.coinbase if exchange == "coinbase" else emulator.binance

    async def swallow(_text) -> None:
        return None

    for client in server.clients:
        client.ws.send = swallow
    return len(server.clients)


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_trades_lost_in_flight_at_a_cut_are_each_reported_in_a_gap_after_the_reconnect(figures):
    market = parse_scenario({
        "name": "trade-gaps", "seed": 11, "duration_s": None,
        "venues": {
            "coinbase": {"quotes_per_s": 4, "trades_per_s": 20, "noise_bps": 1.0, "lag_s": 0.1,
                         "half_spread_bps": 1.0, "max_deviation_bps": 10},
            "binance": {"quotes_per_s": 4, "trades_per_s": 20, "noise_bps": 1.0, "lag_s": 0.1,
                        "half_spread_bps": 1.0, "max_deviation_bps": 10},
        },
        "windows": [],
    }, default_name="trade-gaps")
    config = EmulatorConfig(coinbase_port=0, binance_port=0, scenario=market)
    with BackgroundEmulator(config) as emu:
        feeds = {ex: RunningFeed(ex, emu.coinbase_url if ex == "coinbase" else emu.binance_url).start()
                 for ex in EXCHANGES}
        try:
            for exchange, running in feeds.items():
                _wait(lambda: running.sink.trades > 20, 60, f"{exchange} trades")
                written_before = sum(c["trades"] for c in emu.counts()["events"][exchange].values())
                assert emu.call(_swallow_everything, emu.emulator, exchange) == 1
                time.sleep(1.0)  # ~20 trades written into the connection and lost on the way
                lost_in_flight = sum(c["trades"] for c in emu.counts()["events"][exchange].values()) - written_before
                assert lost_in_flight > 5, lost_in_flight
                reconnects = running.metrics.reconnects
                emu.drop(exchange)
                _wait(lambda: running.metrics.reconnects > reconnects and running.metrics.connected, 30, "reconnect")
                published = running.sink.trades
                _wait(lambda: running.sink.trades > published + 20, 60, f"{exchange} trades after the reconnect")
            time.sleep(0.5)
            written = emu.counts()["trade_ids"]
        finally:
            for running in feeds.values():
                running.stop()

    for exchange, running in feeds.items():
        trades = [e for e in running.sink.events if isinstance(e, Trade)]
        gaps = [e for e in running.sink.events if isinstance(e, FeedStatus) and e.state is FeedState.GAP]
        lost_total = 0
        for venue_symbol, runs in written[exchange].items():
            symbol = running.feed.canonical(venue_symbol)
            ids = {i for first, last in runs for i in range(first, last + 1)}
            published = {int(t.trade_id) for t in trades if t.symbol == symbol}
            announced = {i for g in gaps if g.symbol == symbol
                         for i in range(g.first_missed_trade_id, g.last_missed_trade_id + 1)}
            lost = ids - published
            # Trades written before the stop may still have been on their way: only the ids below the last one
            # published can be judged.
            lost = {i for i in lost if published and i < max(published)}
            assert lost <= announced, (exchange, venue_symbol, sorted(lost - announced))
            assert not published & announced, (exchange, venue_symbol, sorted(published & announced))
            lost_total += len(lost)
        assert lost_total > 5, (exchange, lost_total)
        assert gaps and all("while disconnected" in g.detail for g in gaps), gaps
        assert running.metrics.reconnects == 1
        figures[f"{exchange}_trades_lost_in_flight"] = lost_total
        figures[f"{exchange}_gaps"] = len(gaps)
        figures[f"{exchange}_trade_ids_reported_missed"] = sum(g.missed_trades for g in gaps)
