"""Security: no secret in the repo or in what a run leaves behind, 127.0.0.1 by default, the dashboard login, and
hostile frames that must not take a producer down.

The leak tests run the real commands (`arb kafka status`, `arb emulate`, `arb produce`, `arb dashboard`) with fake
secrets in the environment and scan everything they print and everything they write under the data dir.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from arb.settings import REPO_ROOT, KafkaSettings, Settings, from_env
from tests.conftest import arb_env, free_port, make_data_dir

ARB = str(Path(sys.executable).with_name("arb"))

# Key-like strings: cloud keys, private keys, tokens, webhooks, and `password = "literal"` assignments (a template
# such as password="{password}" is not a literal).
SECRET_PATTERNS = {
    "aws access key": r"AKIA[0-9A-Z]{16}",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "github token": r"gh[pousr]_[A-Za-z0-9]{36}",
    "slack token": r"xox[baprs]-[A-Za-z0-9-]{10,}",
    "slack webhook": r"hooks\.slack\.com/services/T[A-Z0-9]+/",
    "stripe key": r"sk_live_[0-9a-zA-Z]{10,}",
    "google api key": r"AIza[0-9A-Za-z_-]{35}",
    "literal credential": r"(?i)(password|passwd|secret|token|api_?key)[\"']?\s*[:=]\s*[\"'][^\"'\s{$<]{8,}[\"']",
}

FAKE_SASL_PASSWORD = "fake-" "sasl-pw-7Qx3Vb9Lm2"  # split: the repo scan must not flag its own fakes
FAKE_WEBHOOK_TOKEN = "fake" "hooktoken8Zp4Kd1Wq6"
FAKE_WEBHOOK_URL = f"http://127.0.0.1:{{port}}/services/T0FAKE/B0FAKE/{FAKE_WEBHOOK_TOKEN}"
FAKE_DASHBOARD_PASSWORD = "fake-" "dash-pw-3Rt8Yn5Hc0"
FAKE_SECRETS = (FAKE_SASL_PASSWORD, FAKE_WEBHOOK_TOKEN, FAKE_DASHBOARD_PASSWORD)


# -- no secret in the repository ----------------------------------------------------------------------------------


def tracked_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return [REPO_ROOT / name for name in names.decode().split("\0") if name]


def find_secrets(text: str) -> list[str]:
    return [kind for kind, pattern in SECRET_PATTERNS.items() if re.search(pattern, text)]


def test_secret_patterns_catch_key_like_strings_and_spare_templates():
    assert find_secrets('aws_key = "AKIA' + "ABCDEFGHIJKLMNOP" + '"') == ["aws access key"]
    assert find_secrets("-----BEGIN RSA " + "PRIVATE KEY-----") == ["private key"]
    assert find_secrets('KAFKA_SASL_PASSWORD="' + "hunter2hunter2" + '"') == ["literal credential"]
    assert find_secrets('password="{password}";') == []
    assert find_secrets("# KAFKA_SASL_PASSWORD=") == []


def test_no_tracked_file_holds_a_key_like_string():
    hits = []
    for path in tracked_files():
        if not path.is_file():
            continue
        text = path.read_bytes()
        if b"\0" in text[:4096]:  # binary
            continue
        for kind in find_secrets(text.decode("utf-8", "replace")):
            hits.append(f"{path.relative_to(REPO_ROOT)}: {kind}")
    assert hits == []


def test_dotenv_is_ignored_and_not_tracked():
    tracked = {p.relative_to(REPO_ROOT).as_posix() for p in tracked_files()}
    assert ".env" not in tracked
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT).returncode
    assert ignored == 0


def test_settings_repr_hides_the_sasl_password():
    settings = from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "KAFKA_SASL_PASSWORD": FAKE_SASL_PASSWORD})
    assert FAKE_SASL_PASSWORD not in repr(settings)
    assert FAKE_SASL_PASSWORD not in repr(settings.kafka)


# -- 127.0.0.1 unless told otherwise ------------------------------------------------------------------------------


def test_every_server_defaults_to_127_0_0_1(tmp_path):
    from arb.cli import build_parser
    from arb.kafka import EmbeddedKafkaConfig, _server_properties
    from producers.emulator.cli import build_config

    settings = from_env({})
    assert settings.host == "127.0.0.1" and Settings().host == "127.0.0.1"
    kafka = EmbeddedKafkaConfig.from_settings(Settings(data_dir=tmp_path))
    properties = _server_properties(kafka).splitlines()
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in properties
    parser = build_parser()
    emulate = parser.parse_args(["emulate", "--scenario", "windows"])
    assert build_config(emulate, Settings(data_dir=tmp_path)).host == "127.0.0.1"
    dashboard = parser.parse_args(["dashboard"])
    assert (dashboard.host or settings.host) == "127.0.0.1"


def test_a_local_spark_driver_binds_127_0_0_1():
    from streaming.config import SparkConfig
    from streaming.session import spark_conf

    conf = spark_conf(SparkConfig(master="local[2]", jars_dir=str(REPO_ROOT / "data" / "jars" / "spark")))
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1" and conf.get("spark.driver.host") == "127.0.0.1"


@pytest.mark.integration
def test_the_embedded_broker_listens_on_127_0_0_1_only(kafka_broker):
    assert listening_addresses(kafka_broker.broker.pid()) == {"127.0.0.1"}


def listening_addresses(pid: int) -> set[str]:
    """The local addresses `pid` listens on (TCP, from /proc), e.g. {"127.0.0.1"}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(local.split(":")[0])
            if width == 8:
                addresses.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                address = socket.inet_ntop(socket.AF_INET6, words)
                addresses.add(address.removeprefix("::ffff:"))  # an IPv4-mapped socket (Java) binds IPv4
    return addresses


# -- runs with fake secrets leave no trace -------------------------------------------------------------------------


def secret_env(settings: Settings, webhook_port: int) -> dict[str, str]:
    env = arb_env(settings)
    env.pop("ARB_DASHBOARD_USER", None)
    env.update({
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "fake-user",
        "KAFKA_SASL_PASSWORD": FAKE_SASL_PASSWORD,
        "ARB_ALERT_WEBHOOK_URL": FAKE_WEBHOOK_URL.format(port=webhook_port),
        "ARB_DASHBOARD_USER": "ops",
        "ARB_DASHBOARD_PASSWORD": FAKE_DASHBOARD_PASSWORD,
    })
    return env


def leaks(texts: dict[str, str]) -> list[str]:
    return [f"{where}: {secret}" for where, text in texts.items() for secret in FAKE_SECRETS if secret in text]


def files_under(path: Path) -> dict[str, str]:
    out = {}
    for file in path.rglob("*"):
        if file.is_file() and not file.is_symlink() and "jars" not in file.relative_to(path).parts[:1]:
            out[str(file)] = file.read_bytes().decode("utf-8", "replace")
    return out


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out, err


@pytest.mark.integration
def test_a_run_with_fake_secrets_leaves_no_trace_in_output_logs_or_metrics(tmp_path):
    # Arrange: an external "cluster" with SASL that nobody serves (a closed port), a webhook nobody answers.
    data_dir = make_data_dir(tmp_path / "data")
    dead_kafka = free_port()
    settings = Settings(data_dir=data_dir, kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{dead_kafka}"))
    env = secret_env(settings, webhook_port=free_port())
    outputs: dict[str, str] = {}

    # Act 1: arb kafka status against the SASL cluster (fails to connect; says so).
    status = subprocess.run([ARB, "kafka", "status"], env=env, capture_output=True, text=True, timeout=120)
    outputs["kafka status stdout"], outputs["kafka status stderr"] = status.stdout, status.stderr

    # Act 2: the emulator and a producer publishing to that cluster for a few seconds.
    ports = {"cb": free_port(), "bn": free_port(), "ctl": free_port()}
    emulator = subprocess.Popen(
        [ARB, "emulate", "--scenario", "windows", "--coinbase-port", str(ports["cb"]), "--binance-port",
         str(ports["bn"]), "--control-port", str(ports["ctl"]), "--duration", "60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    producer = None
    try:
        wait_for(lambda: all(_accepts(p) for p in ports.values()), what="the emulator's ports")
        assert listening_addresses(emulator.pid) == {"127.0.0.1"}
        producer = subprocess.Popen(
            [ARB, "produce", "--exchange", "binance", "--url", f"ws://127.0.0.1:{ports['bn']}",
             "--markets", str(REPO_ROOT / "data" / "markets" / "binance-exchangeInfo.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        metrics = data_dir / "run" / "metrics" / "producer-binance.json"
        wait_for(lambda: metrics.exists() and json.loads(metrics.read_text()).get("quotes", 0) > 20,
                 what="the producer's metrics file")
    finally:
        if producer is not None:
            outputs["produce stdout"], outputs["produce stderr"] = stop(producer)
        outputs["emulate stdout"], outputs["emulate stderr"] = stop(emulator)

    # Assert: the commands ran (the test cannot pass by running nothing), and no secret anywhere.
    assert "producer_start" in outputs["produce stderr"]
    assert status.returncode != 0 and status.stderr.strip()
    written = files_under(data_dir)
    assert any(name.endswith("producer-binance.json") for name in written)
    assert leaks(outputs) == [] and leaks(written) == []


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_arb_stream_with_a_fake_sasl_password_leaves_no_trace_in_logs_metrics_or_checkpoints(tmp_path):
    # The Spark Kafka source gets the password inside sasl.jaas.config; nobody serves the cluster, so the query
    # starts, plans and retries until it is stopped.
    data_dir = make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=data_dir, kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    env = {**secret_env(settings, webhook_port=free_port()), "ARB_SPARK_MASTER": "local[1]"}
    process = subprocess.Popen([ARB, "stream", "gold", "--log-level", "DEBUG"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (data_dir / "checkpoints" / "hotpath").exists() or process.poll() is not None, 600,
                 what="the hot-path query to start")
        time.sleep(20)  # a few rounds of the Kafka client failing to connect
    finally:
        out, err = stop(process)
    assert "query_started" in err
    assert leaks({"stdout": out, "stderr": err}) == [] and leaks(files_under(data_dir)) == []


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_webhook_failures_log_where_they_went_but_not_the_secret_path(tmp_path, caplog):
    from arb.alerts import AlertSinks

    url = FAKE_WEBHOOK_URL.format(port=free_port())  # nobody listens: every attempt fails and is logged
    sinks = AlertSinks.from_settings(Settings(data_dir=tmp_path), kafka=False,
                                     environ={"ARB_ALERT_WEBHOOK_URL": url, "ARB_ALERT_WEBHOOK_RETRIES": "1"})
    webhook = sinks.sinks[-1]
    webhook.backoff_s = 0.01
    with caplog.at_level("INFO"):
        sinks.emit({"v": 1, "type": "arb_window", "event": "OPEN", "pair": "BTC/USD"})
        sinks.close()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "webhook_failed" in logged and "127.0.0.1" in logged
    assert FAKE_WEBHOOK_TOKEN not in logged
    assert FAKE_WEBHOOK_TOKEN not in (tmp_path / "alerts" / "alerts.jsonl").read_text()


# -- the dashboard login ---------------------------------------------------------------------------------------------


def dashboard_client(tmp_path, monkeypatch, user: str | None, password: str | None):
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig

    for var, value in (("ARB_DASHBOARD_USER", user), ("ARB_DASHBOARD_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    config = DashboardConfig.from_settings(Settings(data_dir=tmp_path), environ={})
    return create_app(config).server.test_client()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_dashboard_without_login_variables_serves_everyone(tmp_path, monkeypatch):
    client = dashboard_client(tmp_path, monkeypatch, None, None)
    assert client.get("/").status_code == 200
    assert client.get("/_dash-layout").status_code == 200


def test_dashboard_with_login_refuses_missing_or_wrong_credentials_everywhere(tmp_path, monkeypatch):
    client = dashboard_client(tmp_path, monkeypatch, "ops", FAKE_DASHBOARD_PASSWORD)
    for path in ("/", "/_dash-layout", "/_dash-dependencies", "/assets/style.css"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="arb dashboard"')
    assert client.get("/", headers=basic("ops", "wrong")).status_code == 401
    assert client.get("/", headers=basic("root", FAKE_DASHBOARD_PASSWORD)).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer " + FAKE_DASHBOARD_PASSWORD}).status_code == 401
    answer = client.post("/_dash-update-component", json={})
    assert answer.status_code == 401 and FAKE_DASHBOARD_PASSWORD not in answer.get_data(as_text=True)


def test_dashboard_with_login_serves_the_right_credentials(tmp_path, monkeypatch):
    client = dashboard_client(tmp_path, monkeypatch, "ops", FAKE_DASHBOARD_PASSWORD)
    assert client.get("/", headers=basic("ops", FAKE_DASHBOARD_PASSWORD)).status_code == 200
    assert client.get("/_dash-layout", headers=basic("ops", FAKE_DASHBOARD_PASSWORD)).status_code == 200


@pytest.mark.parametrize("user, password", [("ops", None), (None, "pw"), ("a:b", "pw")])
def test_dashboard_login_half_configured_fails_at_start_with_one_line(user, password):
    from arb.settings import ConfigError
    from dashboard.auth import Credentials

    env = {k: v for k, v in (("ARB_DASHBOARD_USER", user), ("ARB_DASHBOARD_PASSWORD", password)) if v is not None}
    with pytest.raises(ConfigError) as error:
        Credentials.from_env(env)
    assert "\n" not in str(error.value) and "pw" not in str(error.value)


@pytest.mark.integration
def test_arb_dashboard_with_login_binds_127_0_0_1_asks_for_the_password_and_never_logs_it(tmp_path):
    data_dir = make_data_dir(tmp_path / "data")
    env = secret_env(Settings(data_dir=data_dir), webhook_port=free_port())
    port = free_port()
    process = subprocess.Popen([ARB, "dashboard", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _accepts(port), what="the dashboard")
        assert listening_addresses(process.pid) == {"127.0.0.1"}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30)
        assert refused.value.code == 401
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=basic("ops", FAKE_DASHBOARD_PASSWORD))
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
    finally:
        out, err = stop(process)
    assert "serving" in err
    assert leaks({"stdout": out, "stderr": err}) == [] and leaks(files_under(data_dir)) == []


# -- hostile frames --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange, frame", [
    ("coinbase", '{"type": [], "message": null}'),
    ("coinbase", '{"type": "l2update", "product_id": "NU-GBP", "changes": [["buy", [], "0.1"]], '
                 '"time": "2021-04-17T16:43:37.080304Z"}'),
    ("binance", '{"stream": "nknusdt@bookTicker", "data": {"u": 1, "s": [], "b": "1", "B": "1", "a": "2", "A": "1"}}'),
])
def test_frames_the_fuzzer_found_are_bad_frames_not_crashes(exchange, frame):
    """Each of these once raised TypeError/ValueError, which ends a producer's connection loop."""
    from producers.binance import Binance
    from producers.coinbase import Coinbase
    from producers.feed import BadFrame
    from tests.unit.producer_helpers import binance_markets, coinbase_markets

    feed = Coinbase(coinbase_markets(), ["NU/GBP"]) if exchange == "coinbase" else Binance(binance_markets(), [])
    with pytest.raises(BadFrame):
        feed.parse(frame, 1)
