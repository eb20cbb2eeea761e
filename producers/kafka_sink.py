"""Publish normalized events to Kafka: quotes and trades keyed by canonical symbol, feed status, dead letters.

One idempotent confluent-kafka producer per process (`enable.idempotence=true`, `acks=all`): with idempotence the
broker drops librdkafka's retried duplicates and keeps per-partition order, so a broker restart costs latency, not
data. Delivery reports are served by a small thread calling `poll()`, so acks are counted (and their latency measured)
even while the event loop waits on the socket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from arb.logs import log_event
from arb.settings import KafkaSettings
from arbitrage.events import DeadLetter, Event, FeedState, FeedStatus, to_json
from producers.metrics import ProducerMetrics

log = logging.getLogger("producers.kafka")

# Batching: a few ms of linger fills batches at 20k msg/s while keeping receive->ack p99 well under 20 ms at 2k msg/s.
DEFAULT_PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "compression.type": "lz4",
    # Keep retrying through a broker restart: a message only fails after this long without an ack.
    "message.timeout.ms": 300_000,
    "socket.keepalive.enable": True,
    "socket.nagle.disable": True,  # small produce requests go out at once (receive->ack latency)
}


class KafkaSink:
    """Routes each event to its topic; counts deliveries and failures into `metrics`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        exchange: str,
        metrics: ProducerMetrics,
        *,
        overrides: dict | None = None,
        record_latency: bool = False,
    ) -> None:
        from confluent_kafka import Producer  # C extension: loaded only by processes that publish

        topics = kafka.topics
        self.exchange = exchange
        self.metrics = metrics
        self._topic = {"quote": topics.quotes(exchange), "trade": topics.trades(exchange)}
        self._status_topic = topics.feed_status
        self._dead_letter_topic = topics.dead_letter
        conf = {**kafka.client_config(), **DEFAULT_PRODUCER_CONFIG, "client.id": f"arb-producer-{exchange}"}
        if not record_latency:
            # Delivery reports for failures only: a report per message would make the poll thread take the GIL
            # tens of thousands of times a second, which halves the hot path's throughput. Acks are counted from
            # what was produced minus what is still in flight (see _poll_loop).
            conf["delivery.report.only.error"] = True
        conf.update(overrides or {})
        conf["error_cb"] = self._on_error
        # librdkafka's own log lines (refused connections while a broker restarts, ...) go to our logger, not stderr.
        conf["logger"] = logging.getLogger("producers.kafka.librdkafka")
        self._producer = Producer(conf)
        # receive -> ack latencies in microseconds (for `arb bench ingest`); None when not measuring
        self.ack_latencies_us: list[int] | None = [] if record_latency else None
        self._last_failure_log = 0.0
        self._failures_since_log = 0
        self._produced = 0
        self._running = True
        self._poller = threading.Thread(target=self._poll_loop, name=f"kafka-poll-{exchange}", daemon=True)
        self._poller.start()

    # -- hot path -------------------------------------------------------------------------------------------------

    def publish(self, events: Iterable[Event]) -> None:
        """Quotes and trades to the exchange's topics (key: symbol); feed status to the status topic."""
        metrics = self.metrics
        for event in events:
            kind = event.type
            if kind == "quote":
                metrics.quotes += 1
            elif kind == "trade":
                metrics.trades += 1
            else:
                self.status(event)  # type: ignore[arg-type]
                continue
            self._produce(self._topic[kind], to_json(event), event.symbol, event.ts_recv_us)

    def _produce(self, topic: str, value: bytes, key: str, recv_ts_us: int | None) -> None:
        if self.ack_latencies_us is not None and recv_ts_us is not None:
            callback = lambda err, msg, t=recv_ts_us: self._on_delivery_timed(err, msg, t)  # noqa: E731
        else:
            callback = self._on_delivery
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=callback)
                self._produced += 1
                return
            except BufferError:
                # Local queue full (broker unreachable for long): wait for room rather than drop.
                time.sleep(0.01)

    # -- other topics ---------------------------------------------------------------------------------------------

    def status(self, status: FeedStatus) -> None:
        self.metrics.statuses += 1
        if status.state is FeedState.GAP:
            self.metrics.gaps += 1
            self.metrics.missed_trades += status.missed_trades or 0
            log_event(log, "gap", logging.WARNING, exchange=status.exchange, symbol=status.symbol,
                      missed_trades=status.missed_trades, first_missed=status.first_missed_trade_id,
                      last_missed=status.last_missed_trade_id, detail=status.detail)
        self._produce(self._status_topic, to_json(status), status.exchange, None)

    def dead_letter(self, letter: DeadLetter) -> None:
        self._produce(self._dead_letter_topic, letter.to_json(), letter.source, None)

    # -- delivery reports (poll thread) ---------------------------------------------------------------------------

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._failed(err, msg)

    def _on_delivery_timed(self, err, msg, recv_ts_us: int) -> None:
        if err is None:
            self.ack_latencies_us.append(time.time_ns() // 1000 - recv_ts_us)  # type: ignore[union-attr]
        else:
            self._failed(err, msg)

    def _failed(self, err, msg) -> None:
        self.metrics.delivery_failures += 1
        self._failures_since_log += 1
        now = time.monotonic()
        if now - self._last_failure_log >= 1.0:  # at most one line a second, with the count since the last one
            log_event(log, "delivery_failed", logging.WARNING, exchange=self.exchange, topic=msg.topic(),
                      error=str(err), failures=self._failures_since_log)
            self._last_failure_log = now
            self._failures_since_log = 0

    def _on_error(self, err) -> None:
        log_event(log, "kafka_error", logging.WARNING, exchange=self.exchange, error=str(err))

    def _poll_loop(self) -> None:
        producer, metrics = self._producer, self.metrics
        while self._running:
            producer.poll(0.05)
            metrics.acked = self._produced - len(producer) - metrics.delivery_failures

    # -- shutdown -------------------------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait for outstanding messages; returns how many are still undelivered."""
        return self._producer.flush(timeout_s)

    def pending(self) -> int:
        """Messages produced but not yet acknowledged (0 after close)."""
        return len(self._producer) if self._producer is not None else 0

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush, stop the poll thread; returns the number of messages that could not be delivered in time."""
        remaining = self.flush(timeout_s)
        self._running = False
        self._poller.join(timeout=1.0)
        self._producer = None  # drop librdkafka's handle now: no reconnect attempts after close
        if remaining:
            log_event(log, "flush_incomplete", logging.WARNING, exchange=self.exchange, undelivered=remaining)
        return remaining
