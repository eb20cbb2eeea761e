"""`arb bench pipeline --rate N --duration S [--json]`: the streaming chain under a synthetic market, measured.

Embedded defaults: its own Kafka broker (free ports) and data dir in a temp dir, one local Spark application running
what `arb stream all` (and so `arb up`) runs: bronze, silver, the hot path and the three analytics queries (`--jobs`
picks others, e.g. `bronze,silver,hotpath`, the default until 2026-12-02). The market, `--source`:

- `emulator` (default): the whole chain. The exchange emulator (`arb emulate`, a child process) runs a copy of the
  `bench` scenario at N quotes/s across both venues with a window injected every 6 s, and the two real producers
  (`arb produce`, child processes, as `arb up` starts them) read its Coinbase and Binance WebSockets and publish to
  Kafka. The emulator's ground truth says when each window's opening tick was sent.
- `direct`: a synthetic market (streaming.synthetic) published in real time straight to the quote topics (no
  WebSocket, no producer: the emulator's socket throughput, ~3-8k frames/s per client here, caps `emulator`), by a
  child process (`MarketPublisher`); the measured period starts with its first record.

Measured after a warm-up (`--warmup`, 120 s by default, and until the hot path has caught up): in a JVM's first
minutes the JIT compiler takes up to half a core and batches run twice as long (docs/BENCHMARKS.md), which is not
the steady state of a long-running service. `--lake-nice N` runs the queries other than the hot path in a second,
niced `arb stream` process instead of the bench's own Spark application.

Reported:

- detection latency: alert line written minus the send time of the window's opening tick (emulator: its ground
  truth `start_us`; direct: the tick's scheduled publish time);
- quote -> silver latency: when a silver/quotes Delta file became visible minus the oldest event time in it;
- sustained input: hot-path rows/s over the measured period and what reached the broker, and the hot path's Kafka lag
  (the broker's end offsets minus the offsets the last micro-batch processed, sampled every 0.5 s): start, end,
  max and its growth as a least-squares slope in records/s (`lag_flat` when below 5 % of the input rate);
- micro-batch durations (p50/p99 and where the time goes, from Spark's progress events), peak RSS of the process
  tree (driver, JVM, Python workers, broker, emulator, producers), detection accuracy against the injected truth;
- per query, how much of the period it spent running batches (`queries`), the sinks' own split (`hotpath_sink_mean_ms`,
  `lake_sink_mean_ms`), each window found with its latency (`detections`), and the ticks the hot path dropped as
  late (`late_ticks`: they arrived below a line it had already released).
"""

from __future__ import annotations

import argparse
import logging
import dataclasses
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from arb.argtypes import positive_float
from arb.settings import Settings
from arbitrage.analytics import iso_ms
from streaming.cli import job_list


SOURCES = ("emulator", "direct")
LAG_SAMPLE_S = 0.5
LAG_FLAT_FRACTION = 0.05  # lag growth below this share of the input rate counts as flat
MAX_CATCH_UP_S = 300.0  # how long the warm-up may wait for the hot path to catch up
WINDOW_EVERY_S = 6.0
WINDOW_LENGTH_S = 2.0


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser("pipeline", help="streaming chain: detection latency, silver latency, throughput")
    parser.add_argument("--rate", type=positive_float, default=2000, help="quotes per second across both exchanges")
    parser.add_argument("--duration", type=positive_float, default=60, help="measured seconds (after warm-up)")
    parser.add_argument("--warmup", type=positive_float, default=120,
                        help="seconds of traffic before measuring (default 120: a JVM's first ~2 minutes are JIT "
                        "compilation, docs/BENCHMARKS.md)")
    parser.add_argument("--source", choices=SOURCES, default="emulator",
                        help="emulator -> producers -> Kafka (default), or direct: publish wire events to Kafka")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--jobs", type=job_list, default="all", metavar="JOB[,JOB...]",
                        help="queries to run, as `arb stream` names them (default: all, as `arb up` runs them)")
    parser.add_argument("--lake-nice", type=int, default=None, metavar="N",
                        help="run the queries other than the hot path in a second `arb stream` process at nice N "
                        "(default: all in the bench's Spark application, as `arb up` runs them)")
    parser.add_argument("--silver-state-store", choices=("hdfs", "rocksdb"), default=None)
    parser.add_argument("--watermark-ms", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temp data dir")
    parser.add_argument("--compare-state-stores", action="store_true",
                        help="instead: the silver dedupe over the same backlog with the hdfs and the rocksdb store")
    parser.set_defaults(handler=run)


def _tree(root_pid: int) -> list[list[str]]:
    """/proc/<pid>/stat fields (after the command) of a process and all its descendants."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stats[int(entry)] = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    out, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        if pid in stats:
            out.append(stats[pid])
        stack.extend(children.get(pid, []))
    return out


def _publish_market(rules: Any, start_us: int, duration_s: float, rate: float, client: dict[str, str], topics: Any,
                    results: Any) -> None:
    """The direct market's publisher, in a child process: generate, publish in real time, then the ground truth."""
    import resource

    from streaming import synthetic

    scenario = _scenario(rules, start_us, duration_s, rate)
    records = scenario.records()
    start_late_ms = max(0, (time.time_ns() // 1000 - start_us) // 1000)
    before = resource.getrusage(resource.RUSAGE_SELF)
    synthetic.publish(records, client, topics, realtime=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # After the publish: it reads the records again (~2 s for 1.5 million).
    results.put({"truth": scenario.truth(records), "sent": len(records), "start_late_ms": start_late_ms,
                 "cpu_s": cpu_s})


class MarketPublisher:
    """The direct market's publisher in a child process, so that its schedule does not depend on the bench's own
    process: that is the Spark driver, whose GIL the sinks hold for their Arrow and delta-rs work.

    `start()` spawns it (it generates the market until `start_us`); `result()` waits for the end of the publish and
    returns the truth, the records sent, how late the first went out and the CPU seconds the publishing took."""

    def __init__(self, rules: Any, start_us: int, duration_s: float, rate: float, client: dict[str, str],
                 topics: Any) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # not fork: the driver has a JVM gateway and threads
        self.results = context.Queue()
        self.child = context.Process(target=_publish_market, name="arb-bench-publisher", daemon=True,
                                     args=(rules, start_us, duration_s, rate, client, topics, self.results))
        self.start_us, self.duration_s = start_us, duration_s

    def start(self) -> "MarketPublisher":
        self.child.start()
        return self

    def result(self, timeout_s: float) -> dict[str, Any]:
        import queue

        deadline = time.monotonic() + timeout_s + max(0.0, self.start_us / 1e6 + self.duration_s - time.time())
        try:
            while self.child.is_alive() and time.monotonic() < deadline:
                try:
                    return self.results.get(timeout=1)
                except queue.Empty:
                    pass
            try:
                return self.results.get(timeout=5)  # put just before it exited
            except queue.Empty:
                raise RuntimeError(f"the direct publisher gave no result (exit code {self.child.exitcode})") from None
        finally:
            self.child.join(timeout=10)
            if self.child.is_alive():
                self.child.kill()


def _cpu_s(root_pid: int) -> float:
    """User + system CPU seconds of a process tree (the stable figure on a shared machine)."""
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f[11]) + int(f[12]) for f in _tree(root_pid)) / ticks


def _rss_mb(root_pid: int) -> float:
    """RSS of a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pct(values: list[float], q: float) -> float | None:
    from streaming.metrics import percentile

    v = percentile(values, q)
    return None if v is None else round(v, 1)


class SinkTimings(logging.Handler):
    """Collects the sinks' per-batch timings: the hot path's DEBUG `batch` log events, and the lake sinks'
    `lake_batch` (per job: Arrow collect and Delta writes)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.rows: list[dict[str, int]] = []
        self.lake: dict[str, list[dict[str, int]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = record.getMessage()
        if event == "batch":
            self.rows.append({k: v for k, v in record.__dict__.items() if k.endswith("_ms")})
        elif event == "lake_batch":
            fields = {k: v for k, v in record.__dict__.items() if k.endswith("_ms") or k == "rows"}
            self.lake.setdefault(record.__dict__.get("job", "?"), []).append(fields)

    @staticmethod
    def _mean(rows: list[dict[str, int]]) -> dict[str, int]:
        keys = sorted({k for row in rows for k in row})
        return {k: round(sum(r.get(k, 0) for r in rows) / max(1, len(rows))) for k in keys}

    def mean(self) -> dict[str, int]:
        return self._mean(self.rows)

    def lake_mean(self) -> dict[str, dict[str, int]]:
        return {job: self._mean(rows) for job, rows in sorted(self.lake.items())}


class SilverLatency:
    """Polls silver/quotes' Delta log; each new file's visibility time minus its oldest event time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.samples: list[float] = []
        self._seen: set[str] = set()

    def poll(self) -> None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            actions = DeltaTable(self.path).get_add_actions(flatten=True)
        except TableNotFoundError:
            return
        now_us = time.time_ns() // 1000
        columns = actions.column_names
        if "min.event_ts" not in columns:
            return
        for path, oldest in zip(actions.column("path").to_pylist(), actions.column("min.event_ts").to_pylist()):
            if path in self._seen or oldest is None:
                continue
            self._seen.add(path)
            self.samples.append((now_us - int(oldest.timestamp() * 1_000_000)) / 1000)

    def prime(self) -> None:
        """Forget the files written before the measured period."""
        self.poll()
        self.samples.clear()


def _scenario(rules: Any, start_us: int, duration_s: float, rate: float, every_s: float = 6.0):
    from arbitrage.spread import DIRECTIONS
    from streaming.synthetic import Injected, Scenario

    windows = []
    pairs = [p.name for p in rules.pairs]
    k = 0
    t = 3.0
    while t + 2.5 < duration_s:
        windows.append(Injected(pairs[k % len(pairs)], DIRECTIONS[k % 2], start_us + int(t * 1e6),
                                start_us + int((t + 2.0) * 1e6)))
        k += 1
        t += every_s
    return Scenario(rules, start_us, duration_s, rate, windows=windows, tail_s=0.0)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from arb.logs import setup_logging

    setup_logging("WARNING")
    result = compare_state_stores(args, settings) if args.compare_state_stores else measure(args, settings)
    print_result(result, args.json)
    return 0


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """A bench's figures: one JSON object, or a key per line."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


def bench_environ() -> dict[str, str]:
    """The environment a bench's streaming config reads: none of the user's `ARB_*` settings (a bench makes its own
    broker, lake and rules) except the knobs that can be measured: `ARB_SPARK_CONF`, `ARB_HOTPATH_PARTITIONS`,
    `ARB_REORDER_MS`."""
    return {key: os.environ[key] for key in ("ARB_SPARK_CONF", "ARB_HOTPATH_PARTITIONS", "ARB_REORDER_MS")
            if key in os.environ}


def bench_data(settings: Settings, prefix: str) -> tuple[Path, Settings]:
    """A temp dir with a data dir of its own (the jars linked in) and free broker ports: a bench never touches the
    user's lake, checkpoints or broker."""
    from arb.settings import KafkaSettings

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    data_dir = tmp / "data"
    data_dir.mkdir()
    (data_dir / "jars").symlink_to(settings.jars_dir.resolve(), target_is_directory=True)
    kafka = KafkaSettings(embedded_port=_free_port(), embedded_controller_port=_free_port())
    return tmp, dataclasses.replace(settings, data_dir=data_dir, kafka=kafka)


def start_broker(bench_settings: Settings) -> Any:
    """The bench's own embedded broker, which dies with this process."""
    from arb.kafka import EmbeddedKafka, EmbeddedKafkaConfig

    broker = EmbeddedKafka(dataclasses.replace(EmbeddedKafkaConfig.from_settings(bench_settings), tie_to_parent=True))
    broker.start()
    return broker


def bench_session(spark_config: Any) -> Any:
    """The bench's Spark session: every progress event kept, and the `ARB_SPARK_CONF` settings as well."""
    from streaming.session import create_session

    return create_session(dataclasses.replace(spark_config, extra={
        **spark_config.extra, "spark.sql.streaming.numRecentProgressUpdates": "10000"}))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Kafka lag: the broker's end offsets against what the hot path has processed -----------------------------------


def processed_offsets(progress: dict) -> dict[tuple[str, int], int]:
    """(topic, partition) -> next offset to read, from a progress event's `sources[].endOffset`."""
    out: dict[tuple[str, int], int] = {}
    for source in progress.get("sources", []):
        end = source.get("endOffset")
        if not end:
            continue
        end = json.loads(end) if isinstance(end, str) else end
        if not isinstance(end, dict):
            continue
        for topic, parts in end.items():
            if isinstance(parts, dict):
                out.update({(topic, int(part)): int(offset) for part, offset in parts.items()})
    return out


def lag_of(end_offsets: dict[tuple[str, int], int], processed: dict[tuple[str, int], int]) -> int:
    """Records in the broker that the query has not processed yet, over every partition it reads."""
    return sum(max(0, end - processed.get(tp, 0)) for tp, end in end_offsets.items())


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def lag_trend(samples: list[tuple[float, int, int]], flat_fraction: float = LAG_FLAT_FRACTION) -> dict[str, Any]:
    """Lag figures from `(seconds, lag, broker end offsets summed)` samples of the measured period.

    `lag_growth` is the lag's least-squares slope in records/s; `broker_in_per_s` the end offsets' slope (the input
    rate the broker saw). The lag is flat when it grows by less than `flat_fraction` of the input rate (at least
    1 record/s): a micro-batch pipeline's lag is a saw-tooth, only its trend says whether it keeps up.
    """
    if not samples:
        return {"lag_start": None, "lag_end": None, "lag_max": None, "lag_growth": None, "broker_in_per_s": None,
                "lag_tolerance_per_s": None, "lag_flat": None, "lag_samples": 0}
    growth = slope([(t, lag) for t, lag, _ in samples])
    rate = slope([(t, end) for t, _, end in samples])
    tolerance = max(1.0, flat_fraction * (rate or 0.0))
    return {
        "lag_start": samples[0][1],
        "lag_end": samples[-1][1],
        "lag_max": max(lag for _, lag, _ in samples),
        "lag_growth": None if growth is None else round(growth, 1),
        "broker_in_per_s": None if rate is None else round(rate, 1),
        "lag_tolerance_per_s": round(tolerance, 1),
        "lag_flat": None if growth is None else growth < tolerance,
        "lag_samples": len(samples),
    }


class BrokerLag:
    """Samples the broker's end offsets of the partitions the hot path reads, against its last processed offsets."""

    def __init__(self, kafka_client: dict[str, str]) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer({**kafka_client, "group.id": "arb-bench-lag", "enable.auto.commit": False,
                                   "logger": logging.getLogger("arb.bench.librdkafka")})
        self.samples: list[tuple[float, int, int]] = []

    def lag(self, progress: dict | None) -> tuple[int, int] | None:
        """(lag, sum of end offsets) now, or None before the query's first batch."""
        from confluent_kafka import TopicPartition

        processed = processed_offsets(progress) if progress else {}
        if not processed:
            return None
        ends = {tp: self._consumer.get_watermark_offsets(TopicPartition(*tp), timeout=2, cached=False)[1]
                for tp in processed}
        return lag_of(ends, processed), sum(ends.values())

    def sample(self, progress: dict | None) -> None:
        now = self.lag(progress)
        if now is not None:
            self.samples.append((time.monotonic(), *now))

    def close(self) -> None:
        self._consumer.close()


# -- detection accuracy and latency against the injected truth --------------------------------------------------------


def match_alerts(opened: list[dict], truth: list[dict], period_us: tuple[int, int], slack_us: int,
                 parse_iso_us: Any) -> dict[str, Any]:
    """Match OPEN alert lines (with `_seen_us`, when the line was written) to injected windows.

    `truth`: every injected window (`pair`, `direction`, `start_us` = send time of its opening tick, `end_us` or
    None while open). Only windows whose opening tick was sent inside `period_us` count; an alert opening within
    `slack_us` of such a window (or inside it) finds it, and its detection latency is `_seen_us - start_us`. An alert
    matching no window at all and opening after the period began is false; alerts of windows outside the period are
    ignored (warm-up, catch-up).
    """
    start, end = period_us
    injected = [i for i, w in enumerate(truth) if w.get("start_us") is not None and start <= w["start_us"] < end]
    found: dict[int, float] = {}
    false = 0
    for line in opened:
        at = parse_iso_us(line["start_ts"])
        hits = [i for i, w in enumerate(truth) if w.get("start_us") is not None
                and w["pair"] == line["pair"] and w["direction"] == line["direction"]
                and w["start_us"] - slack_us <= at <= (w.get("end_us") or at) + slack_us]
        if not hits:
            false += at >= start
            continue
        hit = min(hits, key=lambda i: abs(truth[i]["start_us"] - at))
        if hit in injected and hit not in found:
            found[hit] = (line["_seen_us"] - truth[hit]["start_us"]) / 1000
    return {"windows_injected": len(injected), "windows_found": len(found), "windows_false": false,
            "detections": [(truth[i]["start_us"], found[i]) for i in sorted(found)]}


# -- the chain: emulator -> producers (child processes, as `arb up` runs them) -----------------------------------------


def emulator_scenario(rules: Any, rate: float, first_window_s: float, horizon_s: float) -> dict[str, Any]:
    """The `bench` scenario at `rate` quotes/s across both venues and every pair, with a 2 s, 100 gross bps window
    every 6 s from `first_window_s` to `horizon_s` (pairs and directions in turn), as a scenario file's JSON."""
    from arbitrage.spread import DIRECTIONS
    from producers.emulator.scenario import SCENARIO_DIR

    data = json.loads((SCENARIO_DIR / "bench.json").read_text())
    pairs = [p.name for p in rules.pairs]
    per_stream = rate / (2 * len(pairs))
    for venue in data["venues"].values():
        venue.update(quotes_per_s=per_stream, trades_per_s=1)  # trades do not reach the hot path
    data.pop("window_schedule", None)
    windows, k, t = [], 0, first_window_s
    while t + WINDOW_LENGTH_S < horizon_s:
        windows.append({"id": f"b{k + 1}", "pair": pairs[k % len(pairs)], "direction": DIRECTIONS[k % 2],
                        "start_s": round(t, 3), "duration_s": WINDOW_LENGTH_S, "gross_bps": "100", "size": "0.5"})
        k += 1
        t += WINDOW_EVERY_S
    return {**data, "name": "bench-pipeline", "duration_s": None, "windows": windows,
            "description": f"arb bench pipeline: {rate:g} quotes/s, a window every {WINDOW_EVERY_S:g} s"}


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for an `arb ...` child that sees exactly `settings` (the bench's broker and data dir)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update({
        "ARB_DATA_DIR": str(settings.data_dir),
        "ARB_KAFKA_PORT": str(settings.kafka.embedded_port),
        "ARB_KAFKA_CONTROLLER_PORT": str(settings.kafka.embedded_controller_port),
        "ARB_TOPIC_PREFIX": settings.kafka.topics.prefix,
        "ARB_HOST": settings.host,
        "PYTHONUNBUFFERED": "1",
    })
    return env


class Children:
    """`arb ...` child processes that see the bench's settings, each logging to `<logs>/<name>.log`."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.processes: dict[str, Any] = {}
        self.stopping: dict[str, tuple[int, float]] = {}  # name -> (stop signal, seconds before SIGKILL)

    def _spawn(self, name: str, *argv: str, stop_signal: int = signal.SIGINT, stop_timeout_s: float = 20.0) -> None:
        import subprocess

        from arb.kafka import set_parent_death_signal

        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "arb.cli", *argv], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=child_env(self.settings), start_new_session=True,
                preexec_fn=set_parent_death_signal)
        self.stopping[name] = (stop_signal, stop_timeout_s)

    def check(self) -> None:
        """Raise if a child has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{name} exited with {process.returncode}: {' | '.join(tail)[:500]}")

    def stop(self) -> None:
        """Signal the children, the last started first (producers before the emulator they read), then wait."""
        import subprocess

        for name in reversed(self.processes):
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(self.stopping[name][0])
        for name, process in self.processes.items():
            try:
                process.wait(self.stopping[name][1])
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class Chain(Children):
    """`arb emulate` and the two `arb produce` processes, started the way `arb up` starts them."""

    def __init__(self, settings: Settings, scenario_file: Path, logs: Path) -> None:
        super().__init__(settings, logs)
        self.scenario_file = scenario_file
        self.truth_path = settings.run_dir / "emulator-truth.json"
        self.metrics_path = settings.run_dir / "metrics" / "emulator.json"
        self.ports = {"coinbase": _free_port(), "binance": _free_port()}

    def start(self, timeout_s: float = 60.0) -> None:
        from arb.supervisor import accepts_connections
        from producers.markets import DEFAULT_SNAPSHOTS

        host = self.settings.host
        self._spawn("emulator", "emulate", "--scenario", str(self.scenario_file), "--no-control",
                    "--coinbase-port", str(self.ports["coinbase"]), "--binance-port", str(self.ports["binance"]),
                    "--truth", str(self.truth_path))
        deadline = time.monotonic() + timeout_s
        while not all(accepts_connections(host, port) for port in self.ports.values()):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not listen within {timeout_s:.0f} s (see {self.logs})")
            time.sleep(0.25)
        for exchange, port in self.ports.items():
            self._spawn(f"producer-{exchange}", "produce", "--exchange", exchange, "--url", f"ws://{host}:{port}",
                        "--markets", str(DEFAULT_SNAPSHOTS[exchange]))

    def truth(self) -> list[dict]:
        try:
            return json.loads(self.truth_path.read_text())["windows"]
        except (OSError, ValueError, KeyError):
            return []

    def emulator_quotes(self) -> tuple[int, int] | None:
        """(quotes sent so far over both venues, when in µs) from the emulator's metrics file."""
        try:
            status = json.loads(self.metrics_path.read_text())
        except (OSError, ValueError):
            return None
        return sum(status.get("quotes", {}).values()), int(status["updated_us"])


class LakeProcess(Children):
    """The lake queries in their own `arb stream` process (own Spark application) at a lower CPU priority."""

    def __init__(self, settings: Settings, jobs: list[str], nice: int, logs: Path) -> None:
        super().__init__(settings, logs)
        # SIGTERM: `arb stream` stops its queries on it (as `arb up` stops it).
        self._spawn("stream-lake", "stream", ",".join(jobs), "--nice", str(nice), stop_signal=signal.SIGTERM,
                    stop_timeout_s=60.0)


def is_caught_up(batch_ms: list[int], lag: int, rate: float) -> bool:
    """Whether the warm-up is over: the hot path's Kafka lag is at most one batch (+ 2 s) of input, and its batches
    are fast (< 5 s) or, on a busy machine, steady: the last of at least 3 is no slower than 1.5x the one before."""
    if not batch_ms:
        return False
    last = batch_ms[-1]
    fast = last < 5000
    steady = len(batch_ms) >= 3 and last <= 1.5 * batch_ms[-2]
    return (fast or steady) and lag <= rate * (max(5000, last) / 1000 + 2)


def _last(progress: list[dict], name: str) -> dict | None:
    return next((p for p in reversed(progress) if p.get("name") == name), None)


def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from arb.kafka import ensure_topics
    from streaming import jobs, synthetic
    from streaming.config import from_settings
    from streaming.metrics import HotPathStats, MetricsListener, add_listener, parse_iso_us

    tmp, bench_settings = bench_data(settings, "arb-bench-pipeline-")
    broker = start_broker(bench_settings)
    spark = None
    chain: Chain | None = None
    lag: BrokerLag | None = None
    queries: list[Any] = []
    lake: LakeProcess | None = None
    try:
        ensure_topics(bench_settings)
        config = from_settings(bench_settings, environ=bench_environ())
        if args.silver_state_store:
            config = config.replace(silver=dataclasses.replace(config.silver, state_store=args.silver_state_store))
        if args.watermark_ms is not None:
            config = config.replace(watermark_delay_ms=args.watermark_ms)
        spark = bench_session(config.spark)
        hotpath_stats = HotPathStats(size=100_000)
        listener = MetricsListener(config.metrics_dir, hotpath_stats, keep=True)
        add_listener(spark, listener)
        client = bench_settings.kafka.client_config()
        lag = BrokerLag(client)
        opened: list[dict] = []

        def on_alerts(lines: list[dict]) -> None:
            now_us = time.time_ns() // 1000
            opened.extend({**line, "_seen_us": now_us} for line in lines if line["event"] == "OPEN")
            hotpath_stats.on_alerts(lines)

        hot_jobs = list(args.jobs)
        if args.lake_nice is not None:
            lake_jobs = [job for job in hot_jobs if job != "hotpath"]
            hot_jobs = [job for job in hot_jobs if job == "hotpath"]
            if lake_jobs:
                lake = LakeProcess(bench_settings, lake_jobs, args.lake_nice, tmp / "logs")
        for job in hot_jobs:
            if job == "analytics":  # its three queries, as `arb stream all` starts them
                from streaming import analytics

                queries += analytics.start_all(spark, config, analytics.alert_sinks(bench_settings))
                continue
            # on_late looks hotpath_stats up when called: the measured period starts a fresh one (below).
            kwargs = ({"on_alerts": on_alerts, "on_late": lambda n: hotpath_stats.on_late(n), "kafka_client": client}
                      if job == "hotpath" else {})
            queries.append(jobs.start(spark, config, job, **kwargs))

        def check() -> None:
            failed = [q for q in queries if not q.isActive and q.exception() is not None]
            if failed:
                raise RuntimeError(f"query {failed[0].name} failed: {str(failed[0].exception())[:500]}")
            if chain is not None:
                chain.check()
            if lake is not None:
                lake.check()

        # Warm-up: market traffic without (counted) windows until the first slow batches are behind us ...
        rules = config.rules
        warm_t0 = time.monotonic()
        generate_us_per_record = 20.0
        if args.source == "direct":
            warm_start = time.time_ns() // 1000 + 2_000_000
            generating = time.monotonic()
            warm = _scenario(rules, warm_start, args.warmup, args.rate, every_s=1e9).records()
            # The measured market is generated before its clock starts: allow twice what this one took per record.
            generate_us_per_record = max(generate_us_per_record,
                                         2e6 * (time.monotonic() - generating) / max(1, len(warm)))
            synthetic.publish(warm, client, bench_settings.kafka.topics, realtime=True)
        else:
            # Windows all along (the emulator's clock cannot wait); only those sent in the measured period count.
            horizon = args.warmup + MAX_CATCH_UP_S + args.duration + 60
            scenario_file = tmp / "scenario.json"
            scenario_file.write_text(json.dumps(emulator_scenario(rules, args.rate, args.warmup, horizon), indent=1))
            chain = Chain(bench_settings, scenario_file, tmp / "logs")
            chain.start()
            while time.monotonic() < warm_t0 + args.warmup:
                check()
                time.sleep(0.5)
        # ... and until the hot path has caught up with it (first batches cost tens of seconds on a busy machine).
        caught_up_by = time.monotonic() + MAX_CATCH_UP_S
        caught_up = False
        while time.monotonic() < caught_up_by:
            hot = _last(listener.progress, "hotpath")
            now = lag.lag(hot)
            # Empty batches count too: with `direct` the warm-up traffic ends, and then only they show it is idle.
            batches = [p["durationMs"].get("triggerExecution", 0) for p in listener.progress
                       if p.get("name") == "hotpath"]
            if now is not None and is_caught_up(batches, now[0], args.rate):
                caught_up = True
                break
            check()
            time.sleep(1)
        warmup_s = time.monotonic() - warm_t0

        silver = SilverLatency(config.table("silver/quotes"))
        silver.prime()
        hotpath_stats = HotPathStats(size=100_000)  # measured period only
        sink_timings = SinkTimings()
        sink_log = logging.getLogger("streaming.sink")
        sink_log.setLevel(logging.DEBUG)
        sink_log.addHandler(sink_timings)
        listener.hotpath = hotpath_stats
        opened.clear()
        progress_from = len(listener.progress)
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb(os.getpid()))
                silver.poll()
                lag.sample(_last(listener.progress, "hotpath"))
                done.wait(LAG_SAMPLE_S)

        extra: dict[str, Any] = {}
        publisher_cpu_s = 0.0
        if args.source == "direct":
            start_us = time.time_ns() // 1000 + 3_000_000 + int(args.duration * args.rate * generate_us_per_record)
            publisher = MarketPublisher(rules, start_us, args.duration, args.rate, client,
                                        bench_settings.kafka.topics).start()
            # The period starts with the market: before it the pipeline only waits while the market is generated.
            time.sleep(max(0.0, start_us / 1e6 - time.time()))
            progress_from = len(listener.progress)
            sampler = threading.Thread(target=sample, daemon=True)
            t0 = time.monotonic()
            cpu0 = _cpu_s(os.getpid()) - _cpu_s(publisher.child.pid)  # the publisher counts its own (below)
            sampler.start()
            published = publisher.result(timeout_s=MAX_CATCH_UP_S)
            truth, sent, publisher_cpu_s = published["truth"], published["sent"], published["cpu_s"]
            # A market generated too slowly starts late: its first records then go out as one burst of backlog, which
            # would be measured as the pipeline's lag. Reported, so such a run can be told apart.
            extra["publish_start_late_ms"] = published["start_late_ms"]
            period_us = (start_us, start_us + int(args.duration * 1e6))
            send_s = time.monotonic() - t0
            extra["send_rate"] = round(sent / send_s, 1) if send_s else None
        else:
            sampler = threading.Thread(target=sample, daemon=True)
            t0 = time.monotonic()
            cpu0 = _cpu_s(os.getpid())
            sampler.start()
            start_us = time.time_ns() // 1000
            emulated0 = chain.emulator_quotes()
            while time.monotonic() < t0 + args.duration:
                check()
                time.sleep(0.5)
            period_us = (start_us, time.time_ns() // 1000)
            emulated1 = chain.emulator_quotes()
            sent = emulated1[0] - emulated0[0] if emulated0 and emulated1 else 0
            span = (emulated1[1] - emulated0[1]) / 1e6 if emulated0 and emulated1 else 0
            extra["send_rate"] = round(sent / span, 1) if span else None  # what the emulator achieved
        slack_us = rules.staleness_us + 300_000  # S, plus the venues' own lag behind each other

        def injected() -> list[dict]:
            return truth if args.source == "direct" else chain.truth()

        def accuracy() -> dict[str, Any]:
            return match_alerts(list(opened), injected(), period_us, slack_us, parse_iso_us)

        # Let the pipeline drain: until every window's OPEN is written, or the hot path has processed what the broker
        # held when the period closed and one batch more (a tick may be final only in the batch after a later one),
        # however slow its batches are; then the last silver files.
        measured_until = time.monotonic()
        at_close = lag.lag(_last(listener.progress, "hotpath"))
        drain_until = time.monotonic() + MAX_CATCH_UP_S
        batches_when_drained = None
        while time.monotonic() < drain_until:
            now = accuracy()
            if now["windows_found"] >= now["windows_injected"]:
                break
            hot = [p for p in listener.progress if p.get("name") == "hotpath"]
            if batches_when_drained is None:
                if at_close is None or (hot and sum(processed_offsets(hot[-1]).values()) >= at_close[1]):
                    batches_when_drained = len(hot)
            elif len(hot) > batches_when_drained:
                break
            check()
            time.sleep(0.5)
        time.sleep(3)
        done.set()
        sampler.join()
        silver.poll()
        cpu = _cpu_s(os.getpid()) - cpu0 + publisher_cpu_s  # the publisher has exited: its own count
        if chain is not None:
            chain.stop()  # the emulator writes its final truth
        matched = accuracy()
        measured_lag = [sample for sample in lag.samples if sample[0] <= measured_until]
        report = _report(args, listener.progress[progress_from:], matched, hotpath_stats, silver, measured_lag,
                         sent, peak[0], parse_iso_us)
        report.update(extra)
        report["warmup_s"] = round(warmup_s, 1)
        report["caught_up_before_measuring"] = caught_up
        report["cpu_s"] = round(cpu, 1)
        report["hotpath_sink_mean_ms"] = sink_timings.mean()
        report["lake_sink_mean_ms"] = sink_timings.lake_mean()  # only for jobs in the bench's own application
        report["cpu_ms_per_quote"] = round(cpu * 1000 / max(1, sent), 3)
        return report
    finally:
        if chain is not None:
            chain.stop()
        if lake is not None:
            lake.stop()
        if lag is not None:
            lag.close()
        for query in queries:
            try:
                query.stop()
            except Exception:  # noqa: BLE001 - best effort while tearing down a benchmark
                pass
        if spark is not None:
            spark.stop()
        broker.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def query_busy(progress: list[dict], span_s: float) -> dict[str, dict[str, Any]]:
    """Per query over the measured period: micro-batches, their p50, and the share of the wall time it was running a
    batch (`busy`: the queries of one application compete for the same cores, and this says which ones take them)."""
    by_name: dict[str, list[int]] = {}
    for p in progress:
        by_name.setdefault(p.get("name") or "?", []).append(p["durationMs"].get("triggerExecution", 0))
    return {name: {"batches": len(ms), "batch_p50_ms": _pct(ms, 50),
                   "busy": round(sum(ms) / 1000 / span_s, 2) if span_s else None}
            for name, ms in sorted(by_name.items())}


def _report(args, progress, matched, hotpath_stats, silver, lag_samples, sent, peak_rss, parse_iso_us):
    hot = [p for p in progress if p.get("name") == "hotpath"]
    durations = [p["durationMs"].get("triggerExecution", 0) for p in hot if p.get("numInputRows")]
    silver_batches = [p["durationMs"].get("triggerExecution", 0) for p in progress
                      if p.get("name") == "silver" and p.get("numInputRows")]
    state_ms = [op.get("allUpdatesTimeMs", 0) + op.get("commitTimeMs", 0)
                for p in progress if p.get("name") == "silver" for op in p.get("stateOperators", [])]
    rows = sum(p.get("numInputRows", 0) for p in hot)
    span_s = 0.0
    if hot:  # first batch's start to the last one's end
        span_s = (parse_iso_us(hot[-1]["timestamp"]) - parse_iso_us(hot[0]["timestamp"])) / 1e6
        span_s += hot[-1]["durationMs"].get("triggerExecution", 0) / 1000
    breakdown: dict[str, float] = {}
    for p in hot:
        for key, value in p["durationMs"].items():
            breakdown[key] = breakdown.get(key, 0) + value
    breakdown = {k: round(v / max(1, len(hot))) for k, v in sorted(breakdown.items())}
    latencies = [ms for _, ms in matched["detections"]]
    from_event = hotpath_stats.summary()
    per_query = query_busy(progress, span_s)
    silver_samples = silver.samples
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "source": args.source,
        "rate_target": args.rate,
        "duration_s": args.duration,
        "records_sent": sent,
        "detection_p50_ms": _pct(latencies, 50),
        "detection_p99_ms": _pct(latencies, 99),
        "detection_max_ms": round(max(latencies), 1) if latencies else None,
        # each window found: the send time of its opening tick and its detection latency
        "detections": [[iso_ms(start_us), round(ms)] for start_us, ms in matched["detections"]],
        "detection_from_event_time_p99_ms": from_event["detection_p99_ms"],
        "late_ticks": from_event["late_ticks"],  # dropped by the hot path as arriving below a line already final
        "silver_p50_ms": _pct(silver_samples, 50),
        "silver_p99_ms": _pct(silver_samples, 99),
        "silver_files": len(silver_samples),  # 0: no silver batch landed in the measured period (the lake lags)
        "quotes_per_s": round(rows / span_s, 1) if span_s else None,
        **lag_trend([(t - lag_samples[0][0], lag, end) for t, lag, end in lag_samples]),
        "batches": len(hot),
        "batch_p50_ms": _pct(durations, 50),
        "batch_p99_ms": _pct(durations, 99),
        "batch_mean_breakdown_ms": breakdown,
        "queries": per_query,
        "silver_state_store": args.silver_state_store or "rocksdb",
        "silver_batch_p50_ms": _pct(silver_batches, 50),
        "silver_batch_p99_ms": _pct(silver_batches, 99),
        "silver_dedupe_state_p50_ms": _pct(state_ms, 50),
        "windows_injected": matched["windows_injected"],
        "windows_found": matched["windows_found"],
        "windows_false": matched["windows_false"],
        "peak_rss_mb": round(peak_rss),
        "python": sys.version.split()[0],
    }


def compare_state_stores(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The silver query (parse + dropDuplicatesWithinWatermark + Delta) over one backlog, once per state store.

    `rate * duration` quotes are published first; each store then reads them with availableNow in batches of
    `rate` records. Reported per store: state operator time per batch (update + commit) and batch time.
    """
    from arb.kafka import ensure_topics
    from streaming import jobs, synthetic
    from streaming.config import from_settings

    tmp, bench_settings = bench_data(settings, "arb-bench-stores-")
    broker = start_broker(bench_settings)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "machine": f"{platform.node()} {os.cpu_count()} cores", "records": 0}
    try:
        ensure_topics(bench_settings)
        config = from_settings(bench_settings, environ=bench_environ())
        records = _scenario(config.rules, time.time_ns() // 1000 - int(args.duration * 1e6) - 5_000_000,
                            args.duration, args.rate).records()
        out["records"] = synthetic.publish(records, bench_settings.kafka.client_config(),
                                           bench_settings.kafka.topics)
        spark = bench_session(config.spark)
        for store in ("hdfs", "rocksdb"):
            job = dataclasses.replace(config.silver, state_store=store, max_offsets_per_trigger=int(args.rate))
            cfg = config.replace(silver=job, lake=f"{config.lake}-{store}", checkpoints=f"{config.checkpoints}-{store}")
            query = jobs.start(spark, cfg, "silver", available_now=True)
            query.awaitTermination()
            progress = [p for p in query.recentProgress if p.get("numInputRows")]
            state = [op.get("allUpdatesTimeMs", 0) + op.get("commitTimeMs", 0)
                     for p in progress[1:] for op in p.get("stateOperators", [])]
            batch = [p["durationMs"].get("triggerExecution", 0) for p in progress[1:]]
            out[store] = {"batches": len(progress), "state_ms_p50": _pct(state, 50), "state_ms_p99": _pct(state, 99),
                          "batch_ms_p50": _pct(batch, 50), "batch_ms_p99": _pct(batch, 99),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}
        spark.stop()
        return out
    finally:
        broker.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
