"""Shared fixtures: a real Kafka broker for the session, fresh topics per test, reading a topic back, free ports.

    def test_x(kafka_broker):                 # the session broker, default topics created
        settings = kafka_broker.settings      # Settings: data_dir in a tmp dir, Kafka on free ports
        ...produce to settings.kafka.topics.quotes("binance")...
        records = kafka_broker.consume_all(settings.kafka.topics.quotes("binance"), min_count=10)

    def test_y(kafka_topics):                 # same broker, a unique topic prefix, its topics created
        kafka_topics.kafka.topics.quotes("coinbase")   # e.g. "t3f9a1c.coinbase.quotes"

    subprocess.run(["arb", ...], env=arb_env(settings))   # the same settings for a child process
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from arb.kafka import EmbeddedKafka, EmbeddedKafkaConfig, ensure_topics
from arb.settings import REPO_ROOT, KafkaSettings, Settings, Topics


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_data_dir(path: Path) -> Path:
    """A data dir for tests: empty, except that `jars/` points at the jars `make setup` fetched."""
    path.mkdir(parents=True, exist_ok=True)
    jars = path / "jars"
    if not jars.exists():
        jars.symlink_to(REPO_ROOT / "data" / "jars", target_is_directory=True)
    return path


def arb_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an `arb ...` child process that sees exactly `settings` (the repo's .env is not consulted
    for keys set here)."""
    env = dict(os.environ if base is None else base)
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
                "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        env.pop(key, None)
    kafka = settings.kafka
    env.update({
        "ARB_DATA_DIR": str(settings.data_dir),
        "ARB_KAFKA_PORT": str(kafka.embedded_port),
        "ARB_KAFKA_CONTROLLER_PORT": str(kafka.embedded_controller_port),
        "ARB_TOPIC_PREFIX": kafka.topics.prefix,
        "ARB_HOST": settings.host,
        "PYTHONUNBUFFERED": "1",
    })
    if kafka.bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    return env


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    timestamp_ms: int


def consume_all(kafka: KafkaSettings | Settings, topic: str, min_count: int = 0,
                timeout_s: float = 30.0) -> list[Record]:
    """Every record in `topic` from the beginning, in (partition, offset) order.

    Reads up to the end offsets seen when called; with `min_count`, keeps waiting (up to `timeout_s`) until the topic
    holds at least that many records, for producers that are still sending.
    """
    from confluent_kafka import TopicPartition, Consumer

    if isinstance(kafka, Settings):
        kafka = kafka.kafka
    consumer = Consumer({
        **kafka.client_config(),
        "group.id": f"test-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
    })
    try:
        deadline = time.monotonic() + timeout_s
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise AssertionError(f"topic {topic} does not exist")
        partitions = sorted(metadata.topics[topic].partitions)
        while True:
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
            starts = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0] for p in partitions}
            if sum(ends[p] - starts[p] for p in partitions) >= min_count or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in partitions])
        remaining = {p for p in partitions if ends[p] > starts[p]}
        records: list[Record] = []
        while remaining:
            if time.monotonic() > deadline + 30:
                raise AssertionError(f"timed out reading {topic}: partitions {sorted(remaining)} not read to the end")
            message = consumer.poll(0.5)
            if message is None:  # the last offsets may be transaction markers, never delivered: ask the position
                positions = consumer.position([TopicPartition(topic, p) for p in remaining])
                remaining -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                continue
            if message.error():
                raise AssertionError(f"reading {topic}: {message.error()}")
            key = message.key()
            records.append(Record(
                topic=message.topic(), partition=message.partition(), offset=message.offset(),
                key=key.decode() if key is not None else None, value=message.value().decode(),
                timestamp_ms=message.timestamp()[1],
            ))
            if message.offset() + 1 >= ends[message.partition()]:
                remaining.discard(message.partition())
        records = [r for r in records if r.offset < ends[r.partition]]
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


@dataclass(frozen=True)
class KafkaBroker:
    """The session broker: its Settings (data dir in a tmp dir), bootstrap string and the EmbeddedKafka handle."""

    settings: Settings
    broker: EmbeddedKafka

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap

    def with_topics(self, prefix: str) -> Settings:
        """Settings whose topics carry `prefix` (created on the broker)."""
        kafka = dataclasses.replace(self.settings.kafka, topics=Topics(prefix=prefix))
        settings = dataclasses.replace(self.settings, kafka=kafka)
        ensure_topics(settings)
        return settings

    def consume_all(self, topic: str, min_count: int = 0, timeout_s: float = 30.0) -> list[Record]:
        return consume_all(self.settings, topic, min_count=min_count, timeout_s=timeout_s)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> KafkaBroker:
    """A real Apache Kafka broker (KRaft) on free ports for the whole session, with the default topics."""
    data_dir = make_data_dir(tmp_path_factory.mktemp("kafka-session") / "data")
    kafka = KafkaSettings(embedded_port=free_port(), embedded_controller_port=free_port())
    settings = Settings(data_dir=data_dir, kafka=kafka)
    # Tied to pytest: a killed test run takes its broker with it, also after a test restarted it.
    config = dataclasses.replace(EmbeddedKafkaConfig.from_settings(settings), stop_timeout_s=20.0, tie_to_parent=True)
    broker = EmbeddedKafka(config)
    try:
        broker.start()
    except Exception as exc:
        log = config.server_log.read_text()[-3000:] if config.server_log.exists() else ""
        pytest.fail(f"embedded Kafka did not start: {exc}\n{log}")
    try:
        ensure_topics(settings)
        yield KafkaBroker(settings=settings, broker=broker)
    finally:
        broker.stop()


@pytest.fixture
def kafka_topics(kafka_broker: KafkaBroker) -> Settings:
    """Settings on the session broker with a topic prefix of this test's own (`t<hex>.`), topics created."""
    return kafka_broker.with_topics(f"t{uuid.uuid4().hex[:8]}.")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data dir (lake, checkpoints, run files) whose `jars/` is the real jar cache."""
    return make_data_dir(tmp_path / "data")
