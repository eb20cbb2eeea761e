"""`streaming.synthetic.publish`: a full local queue holds the publisher back, nothing is dropped or reordered."""

from __future__ import annotations

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
