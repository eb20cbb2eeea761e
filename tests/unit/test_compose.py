"""docker-compose.yml and the Dockerfile against the code (no Docker engine here: the file is read, not run)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from arb.cli import build_parser
from arb.settings import REPO_ROOT, KafkaSettings, Settings, Topics, from_env
from producers.cli import default_symbols, feed_class, load_markets
from producers.emulator.scenario import load_scenario

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ARB_SERVICES = {name: s for name, s in SERVICES.items() if s.get("image") == "arb:latest"}
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def defaults(text: str) -> str:
    """`${VAR:-default}` -> default: the value compose uses when .env sets nothing."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", str(text))


def container_env(service: dict) -> dict[str, str]:
    return {k: defaults(v) for k, v in (service.get("environment") or {}).items()}


def published(service: dict) -> dict[int, int]:
    """container port -> host port, checking that each is published on 127.0.0.1 only."""
    ports = {}
    for spec in service.get("ports", []):
        host_ip, host_port, container_port = defaults(spec).split(":")
        assert host_ip == "127.0.0.1", f"{spec} must bind 127.0.0.1"
        ports[int(container_port)] = int(host_port)
    return ports


def test_services_are_kafka_topics_a_producer_per_exchange_stream_and_dashboard_plus_the_demo_emulator():
    assert set(SERVICES) == {"kafka", "topics", "producer-coinbase", "producer-binance", "stream", "dashboard",
                             "emulator"}
    assert {name: s["profiles"] for name, s in SERVICES.items() if "profiles" in s} == {"emulator": ["demo"]}


@pytest.mark.parametrize("name", sorted(ARB_SERVICES))
def test_every_service_command_is_a_real_arb_command(name):
    command = [defaults(part) for part in ARB_SERVICES[name]["command"]]

    args = build_parser().parse_args(command)

    assert args.command == command[0]
    assert callable(args.handler)


def test_producers_cover_each_exchange_once():
    exchanges = [build_parser().parse_args(s["command"]).exchange
                 for s in ARB_SERVICES.values() if s["command"][0] == "produce"]

    assert sorted(exchanges) == ["binance", "coinbase"]


def test_long_running_services_have_health_checks_and_restart_policies():
    long_running = {name: s for name, s in SERVICES.items() if name != "topics"}

    assert {n for n, s in long_running.items() if "healthcheck" not in s} == set()
    assert {n: s["restart"] for n, s in long_running.items()} == {n: "unless-stopped" for n in long_running}
    assert SERVICES["topics"]["restart"] == "on-failure"


def test_kafka_is_the_official_image_at_the_version_of_the_embedded_broker():
    pom = ET.parse(REPO_ROOT / "jvm" / "pom.xml")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    versions = [d.findtext("m:version", namespaces=ns) for d in pom.iterfind(".//m:dependency", ns)
                if d.findtext("m:artifactId", namespaces=ns) == "kafka_2.13"]

    assert SERVICES["kafka"]["image"] == f"apache/kafka:{versions[0]}"
    assert container_env(SERVICES["kafka"])["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_kafka_host_port_is_the_code_default_and_is_the_advertised_external_listener():
    kafka = SERVICES["kafka"]
    env = container_env(kafka)
    external = re.search(r"EXTERNAL://([^,]+)", env["KAFKA_ADVERTISED_LISTENERS"]).group(1)

    assert published(kafka) == {9092: KafkaSettings().embedded_port}
    assert external == KafkaSettings().bootstrap


def test_every_arb_service_reaches_the_internal_listener_with_the_default_topics():
    kafka_env = container_env(SERVICES["kafka"])
    internal = re.search(r"INTERNAL://([^,]+)", kafka_env["KAFKA_ADVERTISED_LISTENERS"]).group(1)

    for name, service in ARB_SERVICES.items():
        settings = from_env(container_env(service))
        assert settings.kafka.bootstrap == internal, name
        assert settings.kafka.topics.all() == Topics().all(), name
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert ARB_SERVICES["topics"]["command"] == ["kafka", "topics"]


def test_dashboard_port_matches_its_command_and_the_code_default():
    dashboard = SERVICES["dashboard"]
    args = build_parser().parse_args(dashboard["command"])
    default_port = build_parser().parse_args(["dashboard"]).port

    assert published(dashboard) == {args.port: default_port}
    assert args.host == "0.0.0.0"  # inside the container; published on 127.0.0.1 only


def test_volumes_are_mounted_where_the_code_keeps_lake_checkpoints_alerts_and_run_files():
    settings = from_env(container_env(ARB_SERVICES["stream"]))
    mounts = {}
    for service in ARB_SERVICES.values():
        for spec in service.get("volumes", []):
            volume, target = spec.split(":")[:2]
            assert mounts.setdefault(volume, target) == target, f"{volume} mounted at two paths"

    assert mounts == {
        "lake": settings.lake_dir,
        "checkpoints": settings.checkpoint_dir,
        "alerts": str(settings.alert_log.parent),
        "run": str(settings.run_dir),
    }
    assert set(COMPOSE["volumes"]) == {"kafka-data", *mounts}
    assert SERVICES["kafka"]["volumes"] == [f"kafka-data:{container_env(SERVICES['kafka'])['KAFKA_LOG_DIRS']}"]


def test_the_image_data_dir_is_the_code_default_beside_the_installed_code():
    workdir = Path(re.findall(r"^WORKDIR (\S+)", DOCKERFILE, flags=re.M)[-1])
    data_dir = re.search(r"ARB_DATA_DIR=(\S+)", DOCKERFILE).group(1)

    assert data_dir == str(workdir / "data") == str(Settings(data_dir=workdir / "data").data_dir)
    assert {container_env(s)["ARB_DATA_DIR"] for s in ARB_SERVICES.values()} == {data_dir}
    assert "pip install -e ." in DOCKERFILE  # editable: REPO_ROOT (and so data/markets, data/scenarios) is WORKDIR
    assert re.search(r'^ENTRYPOINT \["arb"\]', DOCKERFILE, flags=re.M)


def test_health_checks_read_the_metrics_files_the_code_writes():
    run_dir = str(from_env(container_env(ARB_SERVICES["stream"])).run_dir)
    expected = {"producer-coinbase": "producer-coinbase.json", "producer-binance": "producer-binance.json",
                "stream": "stream-*.json", "emulator": "emulator.json"}

    for name, metrics_file in expected.items():
        assert f"'{run_dir}/metrics/{metrics_file}'" in " ".join(SERVICES[name]["healthcheck"]["test"]), name


def _producer_url(exchange: str, environ: dict[str, str] | None = None) -> str:
    """The URL the exchange's producer container connects to, with compose's interpolation of `environ`."""
    command = SERVICES[f"producer-{exchange}"]["command"]
    environ = environ or {}
    resolved = [INTERPOLATION.sub(lambda m: environ.get(m.group(1)) or m.group(2) or "", part) for part in command]
    args = build_parser().parse_args(resolved)
    return feed_class(exchange)(load_markets(exchange, None, offline_default=True), default_symbols(exchange)).url(
        args.url)


@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
def test_producers_use_the_real_endpoints_unless_told_otherwise(exchange):
    real = feed_class(exchange)(load_markets(exchange, None, offline_default=True), default_symbols(exchange)).url()

    assert _producer_url(exchange) == real


def test_the_demo_overrides_point_the_producers_at_the_emulator_ports():
    emulator = SERVICES["emulator"]
    args = build_parser().parse_args(emulator["command"])
    defaults_ = build_parser().parse_args(["emulate", "--scenario", "demo"])
    overrides = {"ARB_COINBASE_URL": "ws://emulator:8701", "ARB_BINANCE_URL": "ws://emulator:8702"}

    assert (args.coinbase_port, args.binance_port, args.control_port) == (
        defaults_.coinbase_port, defaults_.binance_port, defaults_.control_port)
    assert args.host == "0.0.0.0"  # reached by the producers on the compose network; only control is published
    assert load_scenario(args.scenario).duration_s is None  # runs until stopped
    assert published(emulator) == {args.control_port: defaults_.control_port}
    assert _producer_url("coinbase", overrides) == f"ws://emulator:{args.coinbase_port}"
    assert _producer_url("binance", overrides).startswith(f"ws://emulator:{args.binance_port}/stream?streams=")
    assert build_parser().parse_args(["produce", "--exchange", "coinbase"]).url is None  # the CLI itself: live
    assert "emulator" not in {d for s in SERVICES.values() for d in (s.get("depends_on") or {})}
    for name in ("ARB_COINBASE_URL", "ARB_BINANCE_URL", "COMPOSE_PROFILES"):
        assert name in (REPO_ROOT / ".env.example").read_text(), name
