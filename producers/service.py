"""One producer assembled: feed + Kafka sink + metrics file + reconnect loop, runnable in the foreground
(`arb produce`) or on a background thread (tests, `arb bench ingest`).

    with BackgroundProducer(ProducerSpec("binance", ["BTC/USDT"], url=emu.binance_url), settings) as producer:
        ...
    producer.metrics.quotes, producer.undelivered
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

from arb.settings import Settings
from producers.connection import ConnectionConfig, FeedConnection, Recorder
from producers.feed import Feed
from producers.kafka_sink import KafkaSink
from producers.metrics import ProducerMetrics, metrics_path, write_periodically


@dataclass(frozen=True)
class ProducerSpec:
    """What to run: exchange, symbols, endpoint and the knobs of the reconnect loop."""

    exchange: str
    symbols: tuple[str, ...] | list[str]
    url: str | None = None  # None: the real endpoint
    markets: Path | None = None  # None: committed snapshot (tests) / live (CLI decides before building the spec)
    record: Path | None = None
    silence_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    kafka_overrides: dict = field(default_factory=dict)
    record_latency: bool = False
    write_metrics: bool = True


class Producer:
    """Everything one `arb produce` process runs."""

    def __init__(self, spec: ProducerSpec, settings: Settings, feed: Feed | None = None) -> None:
        from producers.cli import load_markets, make_feed

        self.spec = spec
        self.settings = settings
        if feed is None:
            symbol_map = load_markets(spec.exchange, spec.markets, offline_default=True)
            feed = make_feed(spec.exchange, symbol_map, list(spec.symbols))
        self.feed = feed
        self.url = feed.url(spec.url)
        self.config = ConnectionConfig(
            url=self.url,
            silence_timeout_s=spec.silence_timeout_s,
            max_age_s=getattr(feed, "max_connection_age_s", None),
            backoff_initial_s=spec.backoff_initial_s,
        )
        self.metrics = ProducerMetrics(spec.exchange, self.url)
        self._record_file = open(spec.record, "ab") if spec.record else None  # noqa: SIM115 - closed in close()
        self.recorder = Recorder(self._record_file) if self._record_file else None
        self.sink = KafkaSink(settings.kafka, spec.exchange, self.metrics, overrides=spec.kafka_overrides,
                              record_latency=spec.record_latency)
        self.connection = FeedConnection(feed, self.sink, self.metrics, self.config, self.recorder)
        self.undelivered: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        writer = None
        if self.spec.write_metrics:
            path = metrics_path(self.settings.run_dir, self.spec.exchange)
            writer = asyncio.create_task(write_periodically(self.metrics, path))
        try:
            await self.connection.run(stop)
        finally:
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)

    def close(self, timeout_s: float = 15.0) -> int:
        """Flush Kafka (returns what is still undelivered) and close the recording."""
        self.undelivered = self.sink.close(timeout_s)
        if self._record_file is not None:
            self._record_file.close()
        return self.undelivered


class BackgroundProducer:
    """A Producer on its own thread and event loop."""

    def __init__(self, spec: ProducerSpec, settings: Settings) -> None:
        self.producer = Producer(spec, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"producer-{spec.exchange}", daemon=True)
        self.error: BaseException | None = None

    @property
    def metrics(self) -> ProducerMetrics:
        return self.producer.metrics

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self.producer.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._started.set()

    def start(self) -> BackgroundProducer:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self, timeout_s: float = 15.0) -> int:
        """Stop reading, flush Kafka; returns the number of undelivered messages."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        undelivered = self.producer.close(timeout_s)
        if self.error is not None:
            raise self.error
        return undelivered

    def __enter__(self) -> BackgroundProducer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
