"""`arb up --source emulator --no-stream --no-dashboard` as a user runs it: real broker, emulator, producers.

One stack is started for the module (it costs a broker start); the tests run in file order and the last one stops it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from arb.settings import KafkaSettings, Settings
from tests.conftest import arb_env, consume_all, free_port, make_data_dir

pytestmark = pytest.mark.integration

STARTED = re.compile(r"event=started component=(\S+) pid=(\d+)")


@dataclass
class Stack:
    process: subprocess.Popen
    settings: Settings
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text()

    def pids(self) -> dict[str, list[int]]:
        """Every pid each component has had, in start order."""
        pids: dict[str, list[int]] = {}
        for name, pid in STARTED.findall(self.stderr.read_text()):
            pids.setdefault(name, []).append(int(pid))
        return pids

    def metrics(self, name: str) -> dict | None:
        try:
            return json.loads((self.settings.run_dir / "metrics" / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None


def _wait(predicate, timeout_s: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if stack.process.poll() is not None:
            pytest.fail(f"arb up exited ({stack.process.returncode}) waiting for {what}:\n{stack.out()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{stack.out()[-3000:]}\n{stack.stderr.read_text()[-2000:]}")
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data_dir = make_data_dir(tmp_path_factory.mktemp("up") / "data")
    settings = Settings(data_dir=data_dir, kafka=KafkaSettings(embedded_port=free_port(),
                                                               embedded_controller_port=free_port()))
    stdout, stderr = data_dir / "up.out", data_dir / "up.err"
    argv = [sys.executable, "-m", "arb.cli", "up", "--source", "emulator", "--no-stream", "--no-dashboard",
            "--coinbase-port", str(free_port()), "--binance-port", str(free_port()),
            "--control-port", str(free_port()), "--status-interval", "2"]
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=arb_env(settings), start_new_session=True)
    stack = Stack(process, settings, stdout, stderr)
    try:
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for pids in stack.pids().values():  # never leave a broker or producer behind
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_up_starts_kafka_emulator_and_both_producers_and_quotes_reach_kafka(stack):
    _wait(lambda: "producer-binance   up" in stack.out(), 180, "all components up", stack)
    _wait(lambda: all((stack.metrics(f"producer-{x}") or {}).get("quotes", 0) > 0 for x in ("coinbase", "binance")),
          90, "quotes counted by both producers", stack)

    topics = stack.settings.kafka.topics
    quotes = {x: consume_all(stack.settings, topics.quotes(x), min_count=1, timeout_s=30)
              for x in ("coinbase", "binance")}

    assert set(stack.pids()) == {"kafka", "emulator", "producer-coinbase", "producer-binance"}
    assert all(len(records) > 0 for records in quotes.values())
    assert f"kafka       127.0.0.1:{stack.settings.kafka.embedded_port} (embedded)" in stack.out()
    rates = re.compile(r"topics +coinbase\.quotes [1-9][\d,]*/s")
    _wait(lambda: rates.search(stack.out()), 30, "a status line with topic rates", stack)


def test_a_killed_producer_is_restarted_with_a_new_pid(stack):
    first = stack.pids()["producer-binance"][-1]

    os.kill(first, signal.SIGKILL)
    _wait(lambda: len(stack.pids()["producer-binance"]) == 2, 30, "producer-binance restarted", stack)

    second = stack.pids()["producer-binance"][-1]
    assert second != first and _alive(second)
    assert "producer-binance exited (code -9)" in stack.out()


def test_sigterm_stops_every_component_in_reverse_order_and_exits_0(stack):
    pids = [pid for history in stack.pids().values() for pid in history]

    stack.process.send_signal(signal.SIGTERM)
    code = stack.process.wait(120)

    stopped = re.findall(r"^\S+ (\S+)\s+stopped", stack.out(), flags=re.M)
    assert code == 0
    assert stopped == ["producer-binance", "producer-coinbase", "emulator", "kafka"]
    assert [pid for pid in pids if _alive(pid)] == []
    assert not (stack.settings.run_dir / "up.pid").exists()


def test_up_refuses_to_start_when_a_port_is_taken_and_starts_nothing(tmp_path):
    import socket

    settings = Settings(data_dir=make_data_dir(tmp_path / "data"),
                        kafka=KafkaSettings(embedded_port=free_port(), embedded_controller_port=free_port()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "arb.cli", "up", "--no-stream", "--dashboard-port", str(port)],
            env=arb_env(settings), capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"arb up: port already in use: {port} (dashboard)"
    assert not (settings.data_dir / "kafka").exists()


def test_up_with_an_external_cluster_starts_no_broker_and_produces_to_that_cluster(kafka_topics, tmp_path):
    kafka = dataclasses.replace(kafka_topics.kafka, bootstrap_servers=kafka_topics.kafka.bootstrap,
                                embedded_port=free_port(), embedded_controller_port=free_port())
    settings = Settings(data_dir=make_data_dir(tmp_path / "data"), kafka=kafka)
    argv = [sys.executable, "-m", "arb.cli", "up", "--no-stream", "--no-dashboard", "--status-interval", "1",
            "--coinbase-port", str(free_port()), "--binance-port", str(free_port()), "--control-port", str(free_port())]
    with open(tmp_path / "up.out", "w") as out, open(tmp_path / "up.err", "w") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=arb_env(settings), start_new_session=True)
    stack = Stack(process, settings, tmp_path / "up.out", tmp_path / "up.err")
    try:
        _wait(lambda: "producer-binance   up" in stack.out(), 120, "all components up", stack)
        quotes = consume_all(settings, settings.kafka.topics.quotes("binance"), min_count=1, timeout_s=60)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)

    assert code == 0
    assert len(quotes) > 0
    assert set(stack.pids()) == {"emulator", "producer-coinbase", "producer-binance"}
    assert f"kafka       {kafka_topics.kafka.bootstrap} (external)" in stack.out()
    assert not (settings.data_dir / "kafka").exists()


def test_up_uses_an_embedded_broker_that_already_runs_and_leaves_it_running(kafka_broker):
    # The session broker's data dir, so its pid file: as if `arb kafka start` had been run before. Own topics.
    settings = kafka_broker.with_topics("reuse.")
    argv = [sys.executable, "-m", "arb.cli", "up", "--no-stream", "--no-dashboard", "--status-interval", "1",
            "--coinbase-port", str(free_port()), "--binance-port", str(free_port()), "--control-port", str(free_port())]
    out_path, err_path = settings.data_dir / "reuse.out", settings.data_dir / "reuse.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=arb_env(settings), start_new_session=True)
    stack = Stack(process, settings, out_path, err_path)
    try:
        _wait(lambda: "producer-binance   up" in stack.out(), 120, "all components up", stack)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)

    assert code == 0
    assert "using the embedded broker already running" in err_path.read_text()
    assert "kafka" not in stack.pids()
    assert kafka_broker.broker.is_running()
