"""The embedded broker's configuration and the topic specs (no broker started here: tests/integration/test_kafka.py)."""

from __future__ import annotations

import pytest

from arb.kafka import EmbeddedKafka, EmbeddedKafkaConfig, KafkaError, _server_properties, topic_specs
from arb.settings import ConfigError, KafkaSettings, Settings, Topics

DAY_MS = 24 * 3600 * 1000


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_config_from_settings_keeps_state_under_the_data_dir_on_the_configured_ports(tmp_path):
    settings = Settings(data_dir=tmp_path, kafka=KafkaSettings(embedded_port=19092, embedded_controller_port=19093))

    config = EmbeddedKafkaConfig.from_settings(settings)

    assert (config.home, config.log_dir, config.jars_dir) == (tmp_path / "kafka", tmp_path / "kafka" / "log",
                                                               tmp_path / "jars" / "kafka")
    assert (config.bootstrap, config.controller_port) == ("127.0.0.1:19092", 19093)


def test_server_properties_describe_one_combined_kraft_node_formatted_standalone(tmp_path):
    config = EmbeddedKafkaConfig(home=tmp_path, jars_dir=tmp_path, port=19092, controller_port=19093)

    props = _properties(_server_properties(config))

    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert "controller.quorum.voters" not in props  # forbidden with `format --standalone`
    assert props["log.dirs"] == str(tmp_path / "log")
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == "1"


def test_broker_command_has_a_small_heap_and_our_log4j_config(tmp_path):
    command = EmbeddedKafka(EmbeddedKafkaConfig(home=tmp_path, jars_dir=tmp_path / "jars")).command()

    assert "-Xmx512m" in command
    assert f"-Dlog4j2.configurationFile={tmp_path / 'log4j2.properties'}" in command
    assert command[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]


def test_equal_ports_are_a_config_error():
    settings = Settings(kafka=KafkaSettings(embedded_port=9092, embedded_controller_port=9092))

    with pytest.raises(ConfigError, match="must differ"):
        EmbeddedKafkaConfig.from_settings(settings)


def test_external_cluster_has_no_embedded_config():
    settings = Settings(kafka=KafkaSettings(bootstrap_servers="broker:9092"))

    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS is set"):
        EmbeddedKafkaConfig.from_settings(settings)


def test_missing_jars_say_to_run_make_setup(tmp_path):
    broker = EmbeddedKafka(EmbeddedKafkaConfig(home=tmp_path / "kafka", jars_dir=tmp_path / "no-jars"))

    with pytest.raises(KafkaError, match="run `make setup`"):
        broker.prepare()


def test_no_pid_file_means_not_running(tmp_path):
    assert EmbeddedKafka(EmbeddedKafkaConfig(home=tmp_path, jars_dir=tmp_path)).pid() is None


def test_a_pid_file_naming_someone_elses_process_is_not_our_broker(tmp_path):
    import os

    config = EmbeddedKafkaConfig(home=tmp_path, jars_dir=tmp_path)
    config.pid_file.write_text(f"{os.getpid()}\n")  # alive, but pytest, not a broker on our properties file

    assert EmbeddedKafka(config).pid() is None


def test_topic_specs_follow_the_data_model_with_a_prefix():
    specs = {s.name: (s.partitions, s.retention_ms) for s in topic_specs(Topics(prefix="dev."))}

    assert specs == {
        "dev.coinbase.quotes": (2, 7 * DAY_MS), "dev.coinbase.trades": (2, 7 * DAY_MS),
        "dev.binance.quotes": (2, 7 * DAY_MS), "dev.binance.trades": (2, 7 * DAY_MS),
        "dev.feed.status": (1, 7 * DAY_MS), "dev.deadletter": (1, 30 * DAY_MS), "dev.arb.alerts": (1, 30 * DAY_MS),
    }
