"""`streaming.synthetic`: the truth of a market's injected windows, and a publisher that a full queue holds back."""

from __future__ import annotations

import json

import confluent_kafka

from arb.settings import Topics
from streaming import synthetic


class QueueOf2:
    """A producer whose local queue holds 2 messages; `poll` lets the broker take them."""

    instances: list["QueueOf2"] = []

    def __init__(self, config: dict) -> None:
        self.config, self.queue, self.delivered, self.full = config, [], [], 0
        QueueOf2.instances.append(self)

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        if len(self.queue) == 2:
            self.full += 1
            raise BufferError("Local: Queue full")
        self.queue.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        self.delivered += self.queue
        self.queue = []
        return 0

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0


def test_a_full_local_queue_makes_the_publisher_wait_and_every_record_goes_out_in_order(monkeypatch):
    monkeypatch.setattr(confluent_kafka, "Producer", QueueOf2)
    records = [synthetic.Record(i, "quotes:coinbase" if i % 2 else "quotes:binance", f"k{i}", b"v%d" % i)
               for i in range(7)]

    sent = synthetic.publish(records, {"bootstrap.servers": "127.0.0.1:1"}, Topics())

    producer = QueueOf2.instances[-1]
    assert sent == 7
    assert [value for _, _, value in producer.delivered] == [b"v%d" % i for i in range(7)]
    assert producer.full > 0
    # The producers' own settings (a deep queue, idempotence), the caller's client settings on top.
    assert producer.config["queue.buffering.max.messages"] == 1_000_000
    assert producer.config["enable.idempotence"] is True
    assert producer.config["bootstrap.servers"] == "127.0.0.1:1"


def test_the_truth_of_a_window_is_the_sell_venue_s_first_quotes_at_its_start_and_end_or_its_gap():
    from arbitrage.rules import RulesConfig

    t0 = 1_796_000_000_000_000
    second = 1_000_000
    scenario = synthetic.Scenario(RulesConfig(), t0, 12.0, 60.0, windows=[
        synthetic.Injected("BTC/USD", "buy_coinbase_sell_binance", t0 + 2 * second + 1, t0 + 5 * second),
        synthetic.Injected("ETH/USD", "buy_binance_sell_coinbase", t0 + 4 * second, t0 + 9 * second,
                           gap_at_us=t0 + 7 * second),
    ])
    records = scenario.records()

    def sell_quotes(exchange, symbol):
        return [r.t_us for r in records
                if r.topic_kind == f"quotes:{exchange}" and json.loads(r.value)["symbol"] == symbol]

    btc, eth = sell_quotes("binance", "BTC/USDT"), sell_quotes("coinbase", "ETH/USD")
    assert scenario.truth(records) == [
        {"pair": "BTC/USD", "direction": "buy_coinbase_sell_binance", "close_reason": "spread",
         "start_us": min(t for t in btc if t > t0 + 2 * second), "end_us": min(t for t in btc if t >= t0 + 5 * second)},
        {"pair": "ETH/USD", "direction": "buy_binance_sell_coinbase", "close_reason": "feed_gap",
         "start_us": min(t for t in eth if t >= t0 + 4 * second), "end_us": t0 + 7 * second},
    ]
