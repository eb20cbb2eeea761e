"""The streaming jobs unchanged on a Spark standalone cluster: a master and a worker on 127.0.0.1 started from the
pip-installed Spark, `arb stream gold --available-now --master spark://...` as a child process, and the same gold
windows as the local[2] run of the same Kafka topics (and as the injected truth).

    with SparkCluster(tmp_path, cores=1) as cluster:      # master + one worker, stopped (and checked gone) on exit
        cluster.url                                       # spark://127.0.0.1:<free port>
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import arb_env, free_port, make_data_dir

pytestmark = pytest.mark.integration

SECOND = 1_000_000
BIN = Path(sys.executable).parent
# Everything the JVMs open binds here (master, worker, executors, the driver's RPC and block manager).
LOCAL_IP = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_HOST": "127.0.0.1"}


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


class SparkCluster:
    """A standalone master and one worker (`cores`, 1g) on free ports, with their logs under `home`."""

    def __init__(self, home: Path, cores: int = 1, memory: str = "1g") -> None:
        self.home = home
        self.cores, self.memory = cores, memory
        self.port, self.ui_port, self.worker_ui_port = free_port(), free_port(), free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **LOCAL_IP, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
                "SPARK_LOG_DIR": str(self.home), "SPARK_WORKER_DIR": str(self.home / "work"),
                "PYSPARK_PYTHON": sys.executable}

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.home / f"{name}.log").open("w")
        # Its own process group: stop() can end the JVM and anything it forked (executors) without touching others.
        process = subprocess.Popen([str(BIN / "spark-class"), *args], env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def state(self) -> dict:
        return _json(f"http://127.0.0.1:{self.ui_port}/json/")

    def spawn(self) -> "SparkCluster":
        """Start the master and the worker without waiting for them (`wait_ready`)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui_port))
        self._spawn("worker", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                    "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(self.worker_ui_port),
                    "--work-dir", str(self.home / "work"))
        return self

    def start(self, timeout_s: float = 180.0) -> "SparkCluster":
        return self.spawn().wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 180.0) -> "SparkCluster":
        """Block until the master lists the worker as ALIVE with its cores."""
        deadline = time.monotonic() + timeout_s
        while True:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise AssertionError(f"a Spark daemon exited: {self.logs()}")
            try:
                workers = [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]
                if workers and workers[0]["cores"] == self.cores:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the Spark cluster did not come up in {timeout_s:.0f}s: {self.logs()}")
            time.sleep(1.0)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the worker (it ends its executors), then the master; SIGKILL whatever is left of their groups."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            try:
                os.killpg(process.pid, signal.SIGKILL)  # an executor left behind in the group
            except ProcessLookupError:
                pass

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(self.home.glob("*.log")))

    def __enter__(self) -> "SparkCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_delta(path: str) -> pl.DataFrame:
    from deltalake import DeltaTable

    return pl.from_arrow(DeltaTable(path).to_pyarrow_table())  # type: ignore[return-value]


def window_events(gold: pl.DataFrame) -> list[dict]:
    """Gold rows without the wall-clock column, in a stable order."""
    columns = [c for c in gold.columns if c != "emitted_ts"]
    return gold.select(columns).sort("window_id", "event").to_dicts()


def short_scenario(rules, start_us: int, duration_s: float = 10, quotes_per_s: float = 60):
    from streaming.synthetic import Injected, Scenario

    t0 = start_us
    return Scenario(rules, t0, duration_s=duration_s, quotes_per_s=quotes_per_s, windows=[
        Injected("BTC/USD", "buy_coinbase_sell_binance", t0 + 2 * SECOND, t0 + 4 * SECOND),
        Injected("ETH/USD", "buy_binance_sell_coinbase", t0 + 5 * SECOND, t0 + 8 * SECOND),
        Injected("ETH/BTC", "buy_coinbase_sell_binance", t0 + 3 * SECOND, t0 + 9 * SECOND, gap_at_us=t0 + 6 * SECOND),
    ])


def run_stream(settings, master: str, log: Path, job: str = "gold", timeout_s: float = 600) -> float:
    """`arb stream <job> --available-now --master <master>` as a child process; returns its wall time in s."""
    env = {**arb_env(settings), **LOCAL_IP, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run([str(BIN / "arb"), "stream", job, "--available-now", "--master", master], env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
    assert done.returncode == 0, log.read_text()[-5000:]
    return time.monotonic() - started


@pytest.mark.timeout(1200)  # three JVMs and a Spark application on 2 shared cores
def test_gold_windows_on_a_standalone_cluster_equal_the_local_run_and_the_truth(spark, kafka_broker, tmp_path):
    from streaming import jobs, synthetic
    from streaming.config import from_settings

    # Arrange: one scenario in Kafka; a local[2] run of the hot path in this process is the reference. The cluster
    # boots meanwhile.
    timings: dict[str, float] = {}
    cluster = SparkCluster(tmp_path / "spark", cores=1).spawn()
    try:
        started = time.monotonic()
        topics = kafka_broker.with_topics(f"c{os.getpid()}{int(time.time()) % 100000}.")
        local = dataclasses.replace(topics, data_dir=make_data_dir(tmp_path / "local"))
        cluster_settings = dataclasses.replace(topics, data_dir=make_data_dir(tmp_path / "cluster"))
        local_config = from_settings(local, environ={})
        scenario = short_scenario(local_config.rules, start_us=time.time_ns() // 1000 - 30 * SECOND)
        records = scenario.records()
        synthetic.publish(records, topics.kafka.client_config(), topics.kafka.topics)
        query = jobs.start(spark, local_config, "hotpath", available_now=True)
        query.awaitTermination(timeout=600)
        assert query.exception() is None, query.exception()
        want = window_events(read_delta(local_config.table("gold/arb_windows")))
        timings["local_run_s"] = time.monotonic() - started

        # Act: the same job, unchanged, on a master + 1-core worker.
        started = time.monotonic()
        cluster.wait_ready()
        timings["cluster_ready_after_local_s"] = time.monotonic() - started
        timings["cluster_run_s"] = run_stream(cluster_settings, cluster.url, tmp_path / "stream-cluster.log")
        state = cluster.state()
        apps = state.get("completedapps", []) + state.get("activeapps", [])
    finally:
        started = time.monotonic()
        cluster.stop()
        timings["cluster_stop_s"] = time.monotonic() - started
    print("timings", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    assert all(p.poll() is not None for p in cluster.processes)  # stopped

    # Assert: the application ran on the cluster, and found exactly the local run's windows, as injected.
    assert [app["name"] for app in apps] == ["arb-stream"]
    got = window_events(read_delta(from_settings(cluster_settings, environ={}).table("gold/arb_windows")))
    assert got == want
    truth = sorted((t["pair"], t["direction"], t["close_reason"]) for t in scenario.truth(records))
    closes = sorted((r["pair"], r["direction"], r["close_reason"]) for r in got if r["event"] == "CLOSE")
    assert closes == truth and len(truth) == 3


def measure_scaling(quotes: tuple[int, ...] = (1_000, 40_000), cores: tuple[int, ...] = (1, 2)) -> list[dict]:
    """docs/SCALING.md: wall time of `arb stream gold --available-now` on a 1- and a 2-core worker for a small and a
    large backlog; the difference gives the marginal hot-path rate without the fixed start-up cost.

        .venv/bin/python -m tests.integration.test_cluster
    """
    import tempfile

    from arb.kafka import EmbeddedKafka, EmbeddedKafkaConfig, ensure_topics
    from arb.settings import KafkaSettings, Settings, Topics
    from streaming import synthetic
    from streaming.config import from_settings

    home = Path(tempfile.mkdtemp(prefix="arb-scaling-"))
    base = Settings(data_dir=make_data_dir(home / "kafka"),
                    kafka=KafkaSettings(embedded_port=free_port(), embedded_controller_port=free_port()))
    broker = EmbeddedKafka(dataclasses.replace(EmbeddedKafkaConfig.from_settings(base), tie_to_parent=True))
    broker.start()
    results = []
    try:
        for n in quotes:
            topics = dataclasses.replace(base.kafka, topics=Topics(prefix=f"s{n}."))
            settings = dataclasses.replace(base, kafka=topics)
            ensure_topics(settings)
            rules = from_settings(settings, environ={}).rules
            rate = 400.0
            scenario = short_scenario(rules, start_us=time.time_ns() // 1000 - int(n / rate * SECOND) - 60 * SECOND,
                                      duration_s=n / rate, quotes_per_s=rate)
            records = scenario.records()
            synthetic.publish(records, settings.kafka.client_config(), settings.kafka.topics)
            for core_count in cores:
                run = dataclasses.replace(settings, data_dir=make_data_dir(home / f"run-{n}-{core_count}"))
                with SparkCluster(home / f"spark-{n}-{core_count}", cores=core_count) as cluster:
                    wall = run_stream(run, cluster.url, home / f"stream-{n}-{core_count}.log")
                results.append({"quotes": len(records), "cores": core_count, "wall_s": round(wall, 1)})
                print(json.dumps(results[-1]), flush=True)
    finally:
        broker.stop()
    return results


if __name__ == "__main__":
    measure_scaling()
