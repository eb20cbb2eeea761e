"""Producers against the exchange emulator over real WebSockets, publishing to a real Kafka broker.

Each test runs the emulator's synthetic market (the demo pairs) and one producer per exchange on background threads,
then reads the topics back. The emulator counts every quote and trade event it wrote per connection and symbol
(producers/emulator/wire.py); the producers record every frame they received (`--record`), so what Kafka holds can be
checked both against the emulator's counts and, value by value, against `arb normalize` of the recording.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from arbitrage.events import FeedState
from producers.cli import default_symbols, load_markets, make_feed, normalize_lines
from producers.emulator.emulator import BackgroundEmulator, EmulatorConfig
from producers.emulator.scenario import load_scenario
from producers.service import BackgroundProducer, ProducerSpec

pytestmark = pytest.mark.integration

EXCHANGES = ("coinbase", "binance")


def emulator(rate_quotes: float = 20, rate_trades: float = 3) -> BackgroundEmulator:
    scenario = load_scenario("demo").with_rates(quotes_per_s=rate_quotes, trades_per_s=rate_trades)
    config = EmulatorConfig(coinbase_port=0, binance_port=0, scenario=scenario, heartbeat_interval_s=1.0)
    return BackgroundEmulator(config).start()


def producer(exchange: str, emu: BackgroundEmulator, settings, tmp_path: Path, **kw) -> BackgroundProducer:
    url = emu.coinbase_url if exchange == "coinbase" else emu.binance_url
    spec = ProducerSpec(exchange=exchange, symbols=default_symbols(exchange), url=url,
                        record=tmp_path / f"{exchange}.capture.jsonl", backoff_initial_s=0.2, **kw)
    return BackgroundProducer(spec, settings).start()


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def emulator_events(emu: BackgroundEmulator, exchange: str) -> dict[str, Counter]:
    """venue symbol -> Counter(quotes=n, trades=n) the emulator wrote."""
    return {sym: Counter(c) for sym, c in emu.counts()["events"][exchange].items()}


def quiesce(emu: BackgroundEmulator, producers: dict[str, BackgroundProducer]) -> None:
    """Silence the market and wait until each producer received every frame the emulator wrote."""
    for exchange in EXCHANGES:
        emu.silence(exchange, 600)
    time.sleep(0.5)
    sent = emu.counts()["frames"]
    for exchange, prod in producers.items():
        wait_for(lambda: prod.metrics.frames >= sent[exchange], 20, f"{exchange} producer to read {sent[exchange]}")


def kafka_events(kafka_broker, settings, exchange: str) -> dict[str, list[dict]]:
    """venue symbol -> the quotes and trades in Kafka, each topic partition in offset order."""
    topics = settings.kafka.topics
    out: dict[str, list[dict]] = defaultdict(list)
    for topic in (topics.quotes(exchange), topics.trades(exchange)):
        for record in kafka_broker.consume_all(topic):
            event = orjson.loads(record.value)
            assert record.key == event["symbol"]
            out[event["venue_symbol"]].append(event)
    return out


def statuses(kafka_broker, settings, exchange: str) -> list[dict]:
    records = kafka_broker.consume_all(settings.kafka.topics.feed_status)
    return [e for e in (orjson.loads(r.value) for r in records) if e["exchange"] == exchange]


def normalized(exchange: str, capture: Path) -> dict[str, list[dict]]:
    """What `arb normalize` makes of the producer's own recording, per venue symbol."""
    import io

    feed = make_feed(exchange, load_markets(exchange, None, offline_default=True), [])
    out = io.BytesIO()
    normalize_lines(feed, capture.read_bytes().splitlines(True), out, io.StringIO())
    by_symbol: dict[str, list[dict]] = defaultdict(list)
    for line in out.getvalue().splitlines():
        event = orjson.loads(line)
        by_symbol[event["venue_symbol"]].append(event)
    return by_symbol


def test_every_emitted_quote_and_trade_lands_exactly_once_in_order_per_symbol(kafka_broker, kafka_topics, tmp_path):
    emu = emulator()
    producers = {ex: producer(ex, emu, kafka_topics, tmp_path, silence_timeout_s=60) for ex in EXCHANGES}
    try:
        wait_for(lambda: all(p.metrics.quotes > 100 and p.metrics.trades > 5 for p in producers.values()), 60,
                 "100 quotes and 5 trades per exchange")
        quiesce(emu, producers)
        sent = {ex: emulator_events(emu, ex) for ex in EXCHANGES}
    finally:
        undelivered = {ex: p.stop() for ex, p in producers.items()}
        emu.stop()
    assert undelivered == {"coinbase": 0, "binance": 0}
    for exchange in EXCHANGES:
        landed = kafka_events(kafka_broker, kafka_topics, exchange)
        # exactly once: per symbol, as many quotes and trades as the emulator wrote
        assert {sym: Counter(quotes=sum(e["type"] == "quote" for e in evs), trades=sum(e["type"] == "trade" for e in evs))
                for sym, evs in landed.items()} == sent[exchange]
        # in order, value by value: each symbol's Kafka records equal `normalize` of the frames as received
        expected = normalized(exchange, tmp_path / f"{exchange}.capture.jsonl")
        for symbol, events in landed.items():
            for kind in ("quote", "trade"):
                assert [e for e in events if e["type"] == kind] == [e for e in expected[symbol] if e["type"] == kind]
            trade_ids = [int(e["trade_id"]) for e in events if e["type"] == "trade"]
            assert trade_ids == sorted(set(trade_ids))
            recv = [e["ts_recv_us"] for e in events if e["type"] == "quote"]
            assert recv == sorted(recv)


def test_dropped_connection_is_followed_by_reconnect_and_resync(kafka_broker, kafka_topics, tmp_path):
    emu = emulator()
    producers = {ex: producer(ex, emu, kafka_topics, tmp_path, silence_timeout_s=60) for ex in EXCHANGES}
    try:
        wait_for(lambda: all(p.metrics.quotes > 20 for p in producers.values()), 60, "first quotes")
        for exchange in EXCHANGES:
            emu.drop(exchange)
        wait_for(lambda: all(p.metrics.reconnects >= 1 and p.metrics.connected for p in producers.values()), 30,
                 "reconnects")
        quotes_after = {ex: p.metrics.quotes for ex, p in producers.items()}
        wait_for(lambda: all(p.metrics.quotes > quotes_after[ex] + 20 for ex, p in producers.items()), 30,
                 "quotes after the reconnect")
    finally:
        for p in producers.values():
            p.stop()
        emu.stop()
    for exchange in EXCHANGES:
        states = [s["state"] for s in statuses(kafka_broker, kafka_topics, exchange)]
        first_drop = states.index(FeedState.DISCONNECTED)
        after = states[first_drop:]
        assert states[:2] == ["connected", "subscribed"]
        assert after[:3] == ["disconnected", "connected", "subscribed"]
        resynced = {s["symbol"] for s in statuses(kafka_broker, kafka_topics, exchange)[first_drop:]
                    if s["state"] == "resynced"}
        assert resynced == set(default_symbols(exchange))  # every symbol's book / top came back


def test_coinbase_trade_id_gap_resubscribes_and_resyncs_the_book(kafka_broker, kafka_topics, tmp_path):
    emu = emulator(rate_trades=5)
    prod = producer("coinbase", emu, kafka_topics, tmp_path, silence_timeout_s=60)
    try:
        wait_for(lambda: prod.metrics.trades > 5, 60, "trades")
        emu.skip_sequence("coinbase", pair="BTC/USD", by=10)
        wait_for(lambda: prod.metrics.gaps >= 1, 30, "the gap")
        quotes = prod.metrics.quotes
        wait_for(lambda: prod.metrics.quotes > quotes + 10, 30, "quotes after the resync")
    finally:
        prod.stop()
        emu.stop()
    events = statuses(kafka_broker, kafka_topics, "coinbase")
    gap = next(i for i, s in enumerate(events) if s["state"] == "gap")
    assert events[gap]["symbol"] == "BTC/USD"
    assert "(10 missed)" in events[gap]["detail"]
    assert {"state": "resynced", "symbol": "BTC/USD"}.items() <= next(
        s for s in events[gap:] if s["state"] == "resynced").items()
    # resubscribed on the same connection: the only disconnect is the one at the end of the test
    assert [(s["state"], s["detail"]) for s in events if s["state"] == "disconnected"] == [("disconnected", "stopped")]


def test_silent_feed_is_reported_stale_and_reconnected(kafka_broker, kafka_topics, tmp_path):
    emu = emulator()
    prod = producer("binance", emu, kafka_topics, tmp_path, silence_timeout_s=1.0)
    try:
        wait_for(lambda: prod.metrics.quotes > 10, 60, "quotes")
        emu.silence("binance", 2.5)
        wait_for(lambda: prod.metrics.reconnects >= 1, 20, "a reconnect after the silence")
        quotes = prod.metrics.quotes
        wait_for(lambda: prod.metrics.quotes > quotes + 10, 30, "quotes after the silence")
    finally:
        prod.stop()
        emu.stop()
    states = [s["state"] for s in statuses(kafka_broker, kafka_topics, "binance")]
    stale = states.index("stale")
    assert states[stale:stale + 3] == ["stale", "disconnected", "connected"]


def test_malformed_frames_are_dead_lettered_and_the_producer_keeps_running(kafka_broker, kafka_topics, tmp_path):
    emu = emulator()
    producers = {ex: producer(ex, emu, kafka_topics, tmp_path, silence_timeout_s=60) for ex in EXCHANGES}
    try:
        wait_for(lambda: all(p.metrics.quotes > 10 for p in producers.values()), 60, "quotes")
        for exchange in EXCHANGES:
            emu.malformed(exchange, count=5)  # one of each: bad JSON, unknown type, bad price, negative, unknown symbol
        wait_for(lambda: all(p.metrics.invalid >= 5 for p in producers.values()), 20, "invalid frames counted")
        quotes = {ex: p.metrics.quotes for ex, p in producers.items()}
        wait_for(lambda: all(p.metrics.quotes > quotes[ex] + 10 for ex, p in producers.items()), 30, "more quotes")
    finally:
        for p in producers.values():
            p.stop()
        emu.stop()
    letters = [orjson.loads(r.value) for r in kafka_broker.consume_all(kafka_topics.kafka.topics.dead_letter)]
    for exchange in EXCHANGES:
        mine = [d for d in letters if d["source"] == exchange]
        assert len(mine) == 5
        reasons = " | ".join(d["reason"] for d in mine)
        for expected in ("malformed JSON", "unknown message type" if exchange == "coinbase" else "unknown stream",
                         "non-numeric", "non-positive", "unknown symbol"):
            assert expected in reasons
        assert all(d["raw"] for d in mine)


def test_broker_restart_mid_stream_loses_nothing(kafka_broker, kafka_topics, tmp_path):
    emu = emulator()
    producers = {ex: producer(ex, emu, kafka_topics, tmp_path, silence_timeout_s=60) for ex in EXCHANGES}
    try:
        wait_for(lambda: all(p.metrics.acked > 50 for p in producers.values()), 60, "first acks")
        kafka_broker.broker.stop()
        stopped_at = {ex: p.metrics.quotes + p.metrics.trades for ex, p in producers.items()}
        wait_for(lambda: all(p.metrics.quotes + p.metrics.trades > stopped_at[ex] + 30 for ex, p in producers.items()),
                 30, "events published while the broker is down")
        kafka_broker.broker.start()
        quiesce(emu, producers)
        sent = {ex: emulator_events(emu, ex) for ex in EXCHANGES}
        wait_for(lambda: all(p.producer.sink.pending() == 0 for p in producers.values()), 60,
                 "every message acknowledged after the restart")
    finally:
        undelivered = {ex: p.stop(timeout_s=60) for ex, p in producers.items()}
        emu.stop()
        if not kafka_broker.broker.is_running():
            kafka_broker.broker.start()
    assert undelivered == {"coinbase": 0, "binance": 0}
    for exchange in EXCHANGES:
        assert producers[exchange].metrics.delivery_failures == 0
        landed = kafka_events(kafka_broker, kafka_topics, exchange)
        counts = {sym: Counter(quotes=sum(e["type"] == "quote" for e in evs), trades=sum(e["type"] == "trade" for e in evs))
                  for sym, evs in landed.items()}
        assert counts == sent[exchange]
