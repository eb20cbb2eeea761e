"""`arb bench pipeline --rate N --duration S [--json]`: the streaming chain under a synthetic market, measured.

Embedded defaults: its own Kafka broker (free ports) and data dir in a temp dir, one local Spark application running
bronze, silver and the hot path (as `arb stream all`). A synthetic market (streaming.synthetic) with a window injected
every few seconds is published in real time at N quotes/s across both exchanges, straight to the quote topics (the
WebSocket -> producer hop is `arb bench ingest`). Reported:

- detection latency: alert line written minus the event time of the window's opening tick (= its send time);
- quote -> silver latency: when a silver/quotes Delta file became visible minus the oldest event time in it;
- sustained input: hot-path rows/s over the measured period, and Kafka lag (latest - processed offsets) growth;
- micro-batch durations (p50/p99 and where the time goes, from Spark's progress events), peak RSS of the process
  tree (driver, JVM, Python workers), detection accuracy against the injected truth.
"""

from __future__ import annotations

import argparse
import logging
import dataclasses
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from arb.settings import Settings


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser("pipeline", help="streaming chain: detection latency, silver latency, throughput")
    parser.add_argument("--rate", type=float, default=2000, help="quotes per second across both exchanges")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds (after warm-up)")
    parser.add_argument("--warmup", type=float, default=30, help="seconds of traffic before measuring")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--jobs", default="bronze,silver,hotpath", help="queries to run (comma-separated)")
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
    """Collects the hot-path sink's per-batch timings (its DEBUG `batch` log events)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.rows: list[dict[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "batch":
            self.rows.append({k: v for k, v in record.__dict__.items() if k.endswith("_ms")})

    def mean(self) -> dict[str, int]:
        keys = sorted({k for row in self.rows for k in row})
        return {k: round(sum(r.get(k, 0) for r in self.rows) / max(1, len(self.rows))) for k in keys}


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
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from arb.kafka import EmbeddedKafka, EmbeddedKafkaConfig, ensure_topics
    from arb.settings import KafkaSettings
    from streaming import jobs, synthetic
    from streaming.config import from_settings
    from streaming.metrics import DetectionLatency, MetricsListener, parse_iso_us
    from streaming.session import create_session

    tmp = Path(tempfile.mkdtemp(prefix="arb-bench-pipeline-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    (data_dir / "jars").symlink_to(settings.jars_dir.resolve(), target_is_directory=True)
    kafka = KafkaSettings(embedded_port=_free_port(), embedded_controller_port=_free_port())
    bench_settings = dataclasses.replace(settings, data_dir=data_dir, kafka=kafka)
    broker = EmbeddedKafka(dataclasses.replace(EmbeddedKafkaConfig.from_settings(bench_settings), tie_to_parent=True))
    broker.start()
    spark = None
    queries: list[Any] = []
    try:
        ensure_topics(bench_settings)
        config = from_settings(bench_settings, environ={})
        if args.silver_state_store:
            config = config.replace(silver=dataclasses.replace(config.silver, state_store=args.silver_state_store))
        if args.watermark_ms is not None:
            config = config.replace(watermark_delay_ms=args.watermark_ms)
        spark = create_session(dataclasses.replace(config.spark, extra={
            "spark.sql.streaming.numRecentProgressUpdates": "10000"}))
        detection = DetectionLatency(size=100_000)
        listener = MetricsListener(config.metrics_dir, detection, keep=True)
        spark.streams.addListener(listener)
        client = bench_settings.kafka.client_config()
        opened: list[dict] = []

        def on_alerts(lines: list[dict]) -> None:
            now_us = time.time_ns() // 1000
            opened.extend({**line, "_seen_us": now_us} for line in lines if line["event"] == "OPEN")
            detection.on_alerts(lines)

        for job in args.jobs.split(","):
            kwargs = {"on_alerts": on_alerts, "kafka_client": client} if job == "hotpath" else {}
            queries.append(jobs.start(spark, config, job, **kwargs))

        # Warm-up: the same market without windows until the first slow batches are behind us.
        rules = config.rules
        warm_start = time.time_ns() // 1000 + 2_000_000
        warm = _scenario(rules, warm_start, args.warmup, args.rate, every_s=1e9).records()
        synthetic.publish(warm, client, bench_settings.kafka.topics, realtime=True)
        # ... and until the hot path has caught up with it (first batches cost tens of seconds on a busy machine).
        caught_up_by = time.monotonic() + 300
        while time.monotonic() < caught_up_by:
            hot = [p for p in listener.progress if p.get("name") == "hotpath"]
            if hot and _lag(hot[-1]) == 0 and hot[-1]["durationMs"].get("triggerExecution", 1e9) < 5000:
                break
            failed = [q for q in queries if not q.isActive and q.exception() is not None]
            if failed:
                raise RuntimeError(f"query {failed[0].name} failed: {str(failed[0].exception())[:500]}")
            time.sleep(1)

        silver = SilverLatency(config.table("silver/quotes"))
        silver.prime()
        detection = DetectionLatency(size=100_000)  # measured period only
        sink_timings = SinkTimings()
        sink_log = logging.getLogger("streaming.sink")
        sink_log.setLevel(logging.DEBUG)
        sink_log.addHandler(sink_timings)
        listener.detection = detection
        opened.clear()
        start_us = time.time_ns() // 1000 + 3_000_000 + int(args.duration * args.rate * 20)  # generation time
        scenario = _scenario(rules, start_us, args.duration, args.rate)
        records = scenario.records()
        truth = scenario.truth(records)
        progress_from = len(listener.progress)
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb(os.getpid()))
                silver.poll()
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        cpu0 = _cpu_s(os.getpid())
        synthetic.publish(records, client, bench_settings.kafka.topics, realtime=True)
        publish_s = time.monotonic() - t0
        # Let the pipeline drain: the last window's OPEN and the last silver files.
        drain_until = time.monotonic() + 30
        while time.monotonic() < drain_until and len(opened) < len(truth):
            time.sleep(0.5)
        time.sleep(3)
        done.set()
        sampler.join()
        silver.poll()
        cpu = _cpu_s(os.getpid()) - cpu0
        report = _report(args, listener.progress[progress_from:], detection, silver, opened, truth, rules,
                         publish_s, len(records), peak[0], parse_iso_us)
        report["cpu_s"] = round(cpu, 1)
        report["hotpath_sink_mean_ms"] = sink_timings.mean()
        report["cpu_ms_per_quote"] = round(cpu * 1000 / max(1, len(records)), 3)
        return report
    finally:
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


def _lag(progress: dict) -> int | None:
    total = 0
    for source in progress.get("sources", []):
        latest, end = source.get("latestOffset"), source.get("endOffset")
        if not latest or not end:
            return None
        latest = json.loads(latest) if isinstance(latest, str) else latest
        end = json.loads(end) if isinstance(end, str) else end
        for topic, parts in latest.items():
            for part, offset in parts.items():
                total += int(offset) - int(end.get(topic, {}).get(part, 0))
    return total


def _report(args, progress, detection, silver, opened, truth, rules, publish_s, sent, peak_rss, parse_iso_us):
    hot = [p for p in progress if p.get("name") == "hotpath"]
    durations = [p["durationMs"].get("triggerExecution", 0) for p in hot if p.get("numInputRows")]
    silver_batches = [p["durationMs"].get("triggerExecution", 0) for p in progress
                      if p.get("name") == "silver" and p.get("numInputRows")]
    state_ms = [op.get("allUpdatesTimeMs", 0) + op.get("commitTimeMs", 0)
                for p in progress if p.get("name") == "silver" for op in p.get("stateOperators", [])]
    lags = [lag for lag in (_lag(p) for p in hot) if lag is not None]
    rows = sum(p.get("numInputRows", 0) for p in hot)
    span_s = 0.0
    if len(hot) >= 2:
        span_s = (parse_iso_us(hot[-1]["timestamp"]) - parse_iso_us(hot[0]["timestamp"])) / 1e6
        span_s += hot[-1]["durationMs"].get("triggerExecution", 0) / 1000
    breakdown: dict[str, float] = {}
    for p in hot:
        for key, value in p["durationMs"].items():
            breakdown[key] = breakdown.get(key, 0) + value
    breakdown = {k: round(v / max(1, len(hot))) for k, v in sorted(breakdown.items())}
    staleness = rules.staleness_us
    found, false = 0, 0
    matched: set[int] = set()
    for line in opened:
        start = parse_iso_us(line["start_ts"])
        hit = next((i for i, t in enumerate(truth) if i not in matched and t["pair"] == line["pair"]
                    and t["direction"] == line["direction"] and abs(t["start_us"] - start) <= staleness), None)
        if hit is None:
            false += 1
        else:
            matched.add(hit)
            found += 1
    summary = detection.summary()
    silver_samples = silver.samples
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "rate_target": args.rate,
        "duration_s": args.duration,
        "records_sent": sent,
        "send_rate": round(sent / publish_s, 1) if publish_s else None,
        "detection_p50_ms": summary["detection_p50_ms"],
        "detection_p99_ms": summary["detection_p99_ms"],
        "silver_p50_ms": _pct(silver_samples, 50),
        "silver_p99_ms": _pct(silver_samples, 99),
        "quotes_per_s": round(rows / span_s, 1) if span_s else None,
        "lag_start": lags[0] if lags else None,
        "lag_end": lags[-1] if lags else None,
        "lag_growth": (lags[-1] - lags[0]) if lags else None,
        "batches": len(hot),
        "batch_p50_ms": _pct(durations, 50),
        "batch_p99_ms": _pct(durations, 99),
        "batch_mean_breakdown_ms": breakdown,
        "silver_state_store": args.silver_state_store or "rocksdb",
        "silver_batch_p50_ms": _pct(silver_batches, 50),
        "silver_batch_p99_ms": _pct(silver_batches, 99),
        "silver_dedupe_state_p50_ms": _pct(state_ms, 50),
        "windows_injected": len(truth),
        "windows_found": found,
        "windows_false": false,
        "peak_rss_mb": round(peak_rss),
        "python": sys.version.split()[0],
    }


def compare_state_stores(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The silver query (parse + dropDuplicatesWithinWatermark + Delta) over one backlog, once per state store.

    `rate * duration` quotes are published first; each store then reads them with availableNow in batches of
    `rate` records. Reported per store: state operator time per batch (update + commit) and batch time.
    """
    from arb.kafka import EmbeddedKafka, EmbeddedKafkaConfig, ensure_topics
    from arb.settings import KafkaSettings
    from streaming import jobs, synthetic
    from streaming.config import from_settings
    from streaming.session import create_session

    tmp = Path(tempfile.mkdtemp(prefix="arb-bench-stores-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    (data_dir / "jars").symlink_to(settings.jars_dir.resolve(), target_is_directory=True)
    kafka = KafkaSettings(embedded_port=_free_port(), embedded_controller_port=_free_port())
    bench_settings = dataclasses.replace(settings, data_dir=data_dir, kafka=kafka)
    broker = EmbeddedKafka(dataclasses.replace(EmbeddedKafkaConfig.from_settings(bench_settings), tie_to_parent=True))
    broker.start()
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "machine": f"{platform.node()} {os.cpu_count()} cores", "records": 0}
    try:
        ensure_topics(bench_settings)
        config = from_settings(bench_settings, environ={})
        records = _scenario(config.rules, time.time_ns() // 1000 - int(args.duration * 1e6) - 5_000_000,
                            args.duration, args.rate).records()
        out["records"] = synthetic.publish(records, bench_settings.kafka.client_config(),
                                           bench_settings.kafka.topics)
        spark = create_session(config.spark)
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
