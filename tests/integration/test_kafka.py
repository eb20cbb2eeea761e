"""The embedded broker and the topics, against a real Apache Kafka (KRaft)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from arb.kafka import AlreadyRunning, EmbeddedKafka, EmbeddedKafkaConfig, ensure_topics, topic_specs
from arb.settings import KafkaSettings, Settings
from tests.conftest import arb_env, free_port

pytestmark = pytest.mark.integration

ARB = [sys.executable, "-m", "arb.cli"]


def _arb(args: list[str], settings: Settings, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(ARB + args, env=arb_env(settings), capture_output=True, text=True, timeout=timeout)


def test_session_broker_round_trips_a_keyed_record(kafka_topics):
    from confluent_kafka import Producer

    topic = kafka_topics.kafka.topics.quotes("binance")
    producer = Producer({**kafka_topics.kafka.client_config(), "enable.idempotence": True, "acks": "all"})
    for i in range(5):
        producer.produce(topic, key="BTC/USDT", value=f'{{"n": {i}}}')
    assert producer.flush(10) == 0

    from tests.conftest import consume_all

    records = consume_all(kafka_topics, topic, min_count=5)

    assert [r.value for r in records] == [f'{{"n": {i}}}' for i in range(5)]
    assert {r.key for r in records} == {"BTC/USDT"}
    assert len({r.partition for r in records}) == 1  # one key, one partition: order kept


def test_every_topic_is_created_with_documented_partitions_and_retention(kafka_topics):
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(kafka_topics.kafka.client_config())
    topics = kafka_topics.kafka.topics
    metadata = admin.list_topics(timeout=10).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics.all()]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}

    actual = {name: (len(metadata[name].partitions), int(configs[name]["retention.ms"].value)) for name in topics.all()}

    day = 24 * 3600 * 1000
    assert actual == {
        topics.quotes("coinbase"): (2, 7 * day),
        topics.trades("coinbase"): (2, 7 * day),
        topics.quotes("binance"): (2, 7 * day),
        topics.trades("binance"): (2, 7 * day),
        topics.feed_status: (1, 7 * day),
        topics.dead_letter: (1, 30 * day),
        topics.alerts: (1, 30 * day),
    }


def test_ensure_topics_twice_creates_nothing_the_second_time(kafka_broker):
    settings = kafka_broker.with_topics("twice.")

    assert ensure_topics(settings) == []


def test_topic_specs_cover_every_topic_name():
    topics = KafkaSettings().topics

    assert [s.name for s in topic_specs(topics)] == topics.all()


def test_producing_to_an_unknown_topic_fails_instead_of_creating_it(kafka_broker):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    producer = Producer({**kafka_broker.settings.kafka.client_config(), "message.timeout.ms": 3000})
    errors = []
    producer.produce("no.such.topic", value="x", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    del producer

    assert len(errors) == 1 and errors[0] is not None
    admin = AdminClient(kafka_broker.settings.kafka.client_config())
    assert "no.such.topic" not in admin.list_topics(timeout=10).topics


def test_start_twice_is_refused_and_the_first_broker_keeps_running(kafka_broker):
    second = EmbeddedKafka(kafka_broker.broker.config)

    with pytest.raises(AlreadyRunning):
        second.start()
    assert kafka_broker.broker.is_running()


def test_start_on_a_busy_port_is_refused(data_dir, kafka_broker):
    settings = Settings(data_dir=data_dir, kafka=KafkaSettings(
        embedded_port=kafka_broker.settings.kafka.embedded_port, embedded_controller_port=free_port()))

    with pytest.raises(AlreadyRunning, match="already in use"):
        EmbeddedKafka(EmbeddedKafkaConfig.from_settings(settings)).start()


def test_cli_start_status_stop_lifecycle(data_dir):
    settings = Settings(data_dir=data_dir, kafka=KafkaSettings(
        embedded_port=free_port(), embedded_controller_port=free_port()))
    try:
        started = _arb(["kafka", "start"], settings)
        assert started.returncode == 0, started.stderr
        assert f"bootstrap 127.0.0.1:{settings.kafka.embedded_port}" in started.stdout
        assert "topics created 7" in started.stdout

        again = _arb(["kafka", "start"], settings)
        status = _arb(["kafka", "status"], settings)
        assert (again.returncode, status.returncode) == (1, 0)
        assert "already running" in again.stderr

        stopped = _arb(["kafka", "stop"], settings)
        after = _arb(["kafka", "status"], settings)
        assert (stopped.returncode, after.returncode) == (0, 1)
        assert "kafka not running" in after.stdout
        assert not (data_dir / "kafka" / "kafka.pid").exists()

        restarted = _arb(["kafka", "start"], settings)  # formatted storage is reused, topics survive
        assert restarted.returncode == 0, restarted.stderr
        assert "topics created 0" in restarted.stdout
    finally:
        _arb(["kafka", "stop"], settings)


def test_external_bootstrap_starts_nothing_and_uses_that_cluster(data_dir, kafka_broker):
    kafka = dataclasses.replace(kafka_broker.settings.kafka, bootstrap_servers=kafka_broker.bootstrap,
                                embedded_port=free_port(), embedded_controller_port=free_port())
    settings = Settings(data_dir=data_dir, kafka=kafka)

    started = _arb(["kafka", "start"], settings)
    status = _arb(["kafka", "status"], settings)
    stopped = _arb(["kafka", "stop"], settings)

    assert (started.returncode, status.returncode, stopped.returncode) == (0, 0, 0), started.stderr
    assert "nothing started" in started.stdout
    assert f"external Kafka reachable: {kafka_broker.bootstrap}" in status.stdout
    assert not (data_dir / "kafka").exists()
    assert kafka_broker.broker.is_running()


def test_external_bootstrap_that_does_not_answer_fails_in_one_line(data_dir):
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    settings = Settings(data_dir=data_dir, kafka=kafka)

    status = _arb(["kafka", "status"], settings, timeout=60)

    assert status.returncode == 1
    assert status.stderr.strip().count("\n") == 0 and "did not answer" in status.stderr
