"""Settings from the environment: defaults, overrides, .env, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from arb.settings import REPO_ROOT, ConfigError, KafkaSettings, Topics, from_env, load_dotenv


def test_empty_environment_gives_embedded_defaults():
    settings = from_env({})

    assert settings.kafka.embedded
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.kafka.embedded_controller_port == 9093
    assert settings.data_dir == (REPO_ROOT / "data").resolve()
    assert settings.host == "127.0.0.1"
    assert settings.lake_dir == str(settings.data_dir / "lake")
    assert settings.checkpoint_dir == str(settings.data_dir / "checkpoints")
    assert settings.alert_log == settings.data_dir / "alerts" / "alerts.jsonl"
    assert settings.run_dir == settings.data_dir / "run"
    assert settings.jars_dir == settings.data_dir / "jars"


def test_environment_overrides_ports_data_dir_host_and_topic_prefix(tmp_path):
    settings = from_env({"ARB_KAFKA_PORT": "19092", "ARB_KAFKA_CONTROLLER_PORT": "19093",
                         "ARB_DATA_DIR": str(tmp_path), "ARB_HOST": "0.0.0.0", "ARB_TOPIC_PREFIX": "dev."})

    assert (settings.kafka.bootstrap, settings.kafka.embedded_controller_port) == ("127.0.0.1:19092", 19093)
    assert settings.data_dir == tmp_path.resolve()
    assert settings.host == "0.0.0.0"
    assert settings.kafka.topics.quotes("binance") == "dev.binance.quotes"


def test_external_bootstrap_turns_off_the_embedded_broker_and_carries_sasl_settings():
    settings = from_env({"KAFKA_BOOTSTRAP_SERVERS": "b1.example.com:9092,b2.example.com:9092",
                         "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
                         "KAFKA_SASL_USERNAME": "user", "KAFKA_SASL_PASSWORD": "s3cret"})

    assert not settings.kafka.embedded
    assert settings.kafka.client_config() == {
        "bootstrap.servers": "b1.example.com:9092,b2.example.com:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "user",
        "sasl.password": "s3cret",
    }


def test_sasl_password_is_not_in_the_repr():
    kafka = KafkaSettings(bootstrap_servers="b:9092", sasl_username="user", sasl_password="s3cret")

    assert "s3cret" not in repr(kafka)


def test_empty_bootstrap_means_embedded():
    assert from_env({"KAFKA_BOOTSTRAP_SERVERS": ""}).kafka.embedded


def test_non_integer_port_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError, match="ARB_KAFKA_PORT must be an integer, got 'abc'"):
        from_env({"ARB_KAFKA_PORT": "abc"})


def test_topic_names_follow_the_data_model():
    assert Topics().all() == ["coinbase.quotes", "coinbase.trades", "binance.quotes", "binance.trades",
                              "feed.status", "deadletter", "arb.alerts"]


def test_dotenv_fills_missing_keys_without_overriding_the_environment(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nARB_KAFKA_PORT=19092\nARB_HOST='0.0.0.0'\n\nNOT A SETTING\nARB_TOPIC_PREFIX=\"x.\"\n")
    env = {"ARB_KAFKA_PORT": "29092"}

    load_dotenv(dotenv, env)

    assert env == {"ARB_KAFKA_PORT": "29092", "ARB_HOST": "0.0.0.0", "ARB_TOPIC_PREFIX": "x."}


def test_missing_dotenv_is_ignored(tmp_path: Path):
    env: dict[str, str] = {}

    load_dotenv(tmp_path / "absent.env", env)

    assert env == {}


def test_ssl_ca_location_reaches_the_confluent_config_and_the_spark_kafka_options(tmp_path: Path):
    from streaming.config import kafka_options

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    settings = from_env({"KAFKA_BOOTSTRAP_SERVERS": "b1.example.com:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                         "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "user",
                         "KAFKA_SASL_PASSWORD": "s3cret", "KAFKA_SSL_CA_LOCATION": str(ca)})

    assert settings.kafka.client_config()["ssl.ca.location"] == str(ca)
    options = kafka_options(settings)
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["kafka.ssl.truststore.location"] == str(ca)
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert "kafka.ssl.ca.location" not in options  # unknown to the JVM client: it would only warn and ignore it


def test_librdkafka_reads_the_ca_file_named_by_the_setting(tmp_path: Path):
    from confluent_kafka import Producer

    ca = tmp_path / "ca.pem"
    ca.write_text("")
    settings = from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KAFKA_SECURITY_PROTOCOL": "SSL",
                         "KAFKA_SSL_CA_LOCATION": str(ca)})
    with pytest.raises(Exception, match="ssl.ca.location|CA|certificate") as failure:
        Producer(settings.kafka.client_config())  # the key is known to librdkafka: it reads the (empty) file
    assert "No such configuration property" not in str(failure.value)


def test_missing_ssl_ca_file_is_a_config_error_naming_the_variable(tmp_path: Path):
    with pytest.raises(ConfigError, match="KAFKA_SSL_CA_LOCATION"):
        from_env({"KAFKA_SSL_CA_LOCATION": str(tmp_path / "nope.pem")})
