"""`arb up`: every component of the service as a supervised child process, in one terminal.

The components are a declarative list (`components()`): each is an `arb` sub-command with a readiness check, a
metrics file and a stop timeout. `arb up` starts them in order (each one ready before the next), prints where things
are and their live rates, restarts a crashed one with exponential backoff, and on Ctrl-C or SIGTERM stops them in
reverse order. Each child writes its output to `data/run/logs/<component>.log`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arb.argtypes import port
from arb.kafka import set_parent_death_signal
from arb.logs import log_event, setup_logging
from arb.settings import ConfigError, Settings
from streaming.cli import add_rules_arguments, rules_argv

log = logging.getLogger("arb.up")

SOURCES = ("emulator", "live")
DEFAULT_COINBASE_PORT = 8701  # the emulator's own defaults (`arb emulate`)
DEFAULT_BINANCE_PORT = 8702
DEFAULT_CONTROL_PORT = 8703
DEFAULT_DASHBOARD_PORT = 8050


@dataclass(frozen=True, slots=True)
class Component:
    """One supervised child: `arb <argv...>`."""

    name: str
    argv: tuple[str, ...]
    ready: Callable[[], bool] | None = None  # polled after a (re)start; the next component waits for True
    ready_timeout_s: float = 90.0
    stop_signal: int = signal.SIGINT  # Python children clean up on KeyboardInterrupt; the JVM on either
    stop_timeout_s: float = 20.0
    metrics: str | None = None  # glob under run/metrics/ for the status line
    where: str = ""  # what to tell the user (URL, ports)
    ports: tuple[int, ...] = ()  # ports it listens on: checked free before anything starts

    @property
    def command(self) -> str:
        return self.argv[0]


@dataclass(frozen=True, slots=True)
class UpOptions:
    source: str = "emulator"
    symbols: str | None = None
    scenario: str = "demo"
    stream: bool = True
    dashboard: bool = True
    coinbase_port: int = DEFAULT_COINBASE_PORT
    binance_port: int = DEFAULT_BINANCE_PORT
    control_port: int = DEFAULT_CONTROL_PORT
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    status_interval_s: float = 5.0
    stream_args: tuple[str, ...] = ()  # the rules flags, handed to `arb stream all`


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _kafka_ready(settings: Settings) -> Callable[[], bool]:
    def ready() -> bool:
        from arb.kafka import KafkaError, ensure_topics

        if not accepts_connections(settings.host, settings.kafka.embedded_port):
            return False
        try:
            ensure_topics(settings, timeout_s=10.0)
        except KafkaError:
            return False
        return True

    return ready


def components(opts: UpOptions, settings: Settings) -> list[Component]:
    """What `arb up` runs, in start order. Adding a component is adding one entry."""
    host = settings.host
    emulated = opts.source == "emulator"
    symbols = ("--symbols", opts.symbols) if opts.symbols else ()

    def produce(exchange: str, port: int) -> Component:
        url = ("--url", f"ws://{host}:{port}") if emulated else ()
        return Component(f"producer-{exchange}", ("produce", "--exchange", exchange, *symbols, *url),
                         metrics=f"producer-{exchange}.json")

    entries: list[tuple[bool, Component]] = [
        (settings.kafka.embedded, Component(
            "kafka", ("kafka", "start", "--foreground"), ready=_kafka_ready(settings), stop_signal=signal.SIGTERM,
            stop_timeout_s=40.0, where=f"bootstrap {settings.kafka.bootstrap}",
            ports=(settings.kafka.embedded_port, settings.kafka.embedded_controller_port))),
        (emulated, Component(
            "emulator", ("emulate", "--scenario", opts.scenario, "--coinbase-port", str(opts.coinbase_port),
                         "--binance-port", str(opts.binance_port), "--control-port", str(opts.control_port)),
            ready=lambda: all(accepts_connections(host, p) for p in (opts.coinbase_port, opts.binance_port)),
            metrics="emulator.json", ports=(opts.coinbase_port, opts.binance_port, opts.control_port),
            where=f"coinbase ws://{host}:{opts.coinbase_port}  binance ws://{host}:{opts.binance_port}  "
                  f"control http://{host}:{opts.control_port}")),
        (True, produce("coinbase", opts.coinbase_port)),
        (True, produce("binance", opts.binance_port)),
        # SIGTERM: `arb stream` stops its queries on it; SIGINT would also go through pyspark's job-cancelling handler.
        (opts.stream, Component("stream", ("stream", "all", *opts.stream_args), stop_signal=signal.SIGTERM,
                                stop_timeout_s=60.0, metrics="stream-*.json")),
        (opts.dashboard, Component(
            "dashboard", ("dashboard", "--host", host, "--port", str(opts.dashboard_port)),
            ready=lambda: accepts_connections(host, opts.dashboard_port),
            where=f"http://{host}:{opts.dashboard_port}", ports=(opts.dashboard_port,))),
    ]
    return [component for wanted, component in entries if wanted]


def available_commands() -> set[str]:
    """The `arb` sub-commands this installation has."""
    from arb.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-commands only here
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


# --- running children -------------------------------------------------------------------------------------------


@dataclass
class Child:
    component: Component
    log_path: Path
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive quick crashes, for the backoff
    restart_at: float | None = None
    ready: bool = False
    last_exit: int | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Backoff:
    base_s: float = 1.0
    max_s: float = 60.0
    healthy_after_s: float = 60.0  # a child that ran this long before crashing starts the backoff again

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.base_s * 2 ** max(0, failures - 1))


class Supervisor:
    def __init__(self, settings: Settings, plan: list[Component], opts: UpOptions,
                 backoff: Backoff | None = None, out=None) -> None:
        self.settings = settings
        self.opts = opts
        self.backoff = backoff or Backoff()
        self.out = out or sys.stdout
        self.logs_dir = settings.run_dir / "logs"
        self.metrics_dir = settings.run_dir / "metrics"
        self.children = [Child(c, self.logs_dir / f"{c.name}.log") for c in plan]
        self.stopping = False
        self._offsets: tuple[float, dict[str, int]] | None = None

    # signals

    def request_stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            self._say(f"{signal.Signals(signum).name}: stopping {len(self.children)} components")
        self.stopping = True

    # lifecycle

    def spawn(self, child: Child) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "arb.cli", *child.component.argv]
        with open(child.log_path, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} arb "
                      f"{' '.join(child.component.argv)}\n".encode())
            out.flush()
            child.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=os.getcwd(),
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                preexec_fn=set_parent_death_signal,
            )
        child.started_at = time.monotonic()
        child.restart_at = None
        child.ready = child.component.ready is None
        log_event(log, "started", component=child.component.name, pid=child.process.pid, log=child.log_path)

    def wait_ready(self, child: Child) -> bool:
        """Poll the child's readiness; False if it died, timed out or a stop was requested."""
        deadline = time.monotonic() + child.component.ready_timeout_s
        while not child.ready:
            if self.stopping or not child.running:
                return False
            if time.monotonic() > deadline:
                log_event(log, "not_ready", logging.WARNING, component=child.component.name,
                          after_s=child.component.ready_timeout_s)
                return False
            child.ready = bool(child.component.ready())
            if not child.ready:
                time.sleep(0.25)
        return True

    def start_all(self) -> bool:
        for child in self.children:
            if self.stopping:
                return False
            self.spawn(child)
            if not self.wait_ready(child):
                if self.stopping:
                    return False
                self._say(f"{child.component.name} did not become ready: {self._last_line(child)}")
                return False
            self._say(f"{child.component.name:<18} up   {child.component.where}".rstrip())
        return True

    def supervise_once(self, now: float) -> None:
        """Notice exits, schedule and perform restarts."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None and child.restart_at is None:
                code = child.process.returncode
                ran_s = now - child.started_at
                child.last_exit = code
                child.failures = 1 if ran_s >= self.backoff.healthy_after_s else child.failures + 1
                delay = self.backoff.delay(child.failures)
                child.restart_at = now + delay
                child.ready = False
                self._say(f"{child.component.name} exited (code {code}) after {ran_s:.1f}s; restart in "
                          f"{delay:.0f}s. Last log line: {self._last_line(child)}")
                log_event(log, "exited", logging.WARNING, component=child.component.name, code=code,
                          ran_s=round(ran_s, 1), restart_in_s=delay)
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.spawn(child)
            elif child.running and not child.ready and child.component.ready is not None:
                child.ready = bool(child.component.ready())

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self.stop_child(child)

    def stop_child(self, child: Child) -> None:
        child.restart_at = None
        process = child.process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.kill(process.pid, child.component.stop_signal)
            except ProcessLookupError:
                pass
            try:
                process.wait(child.component.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log_event(log, "kill", logging.WARNING, component=child.component.name,
                          after_s=child.component.stop_timeout_s)
        # Whatever the child started in its process group (a Spark JVM, ...) goes with it.
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(process.pid):
                time.sleep(0.1)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._say(f"{child.component.name:<18} stopped (code {process.returncode})")
        log_event(log, "stopped", component=child.component.name, code=process.returncode)

    def run(self) -> int:
        self._say_where()
        try:
            if self.start_all():
                next_status = time.monotonic() + self.opts.status_interval_s
                while not self.stopping:
                    now = time.monotonic()
                    self.supervise_once(now)
                    if now >= next_status:
                        self.print_status()
                        next_status = now + self.opts.status_interval_s
                    time.sleep(0.2)
                return 0
            return 0 if self.stopping else 1
        finally:
            self.stop_all()

    # reporting

    def _say(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=self.out, flush=True)

    def _last_line(self, child: Child) -> str:
        try:
            with open(child.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "(no log)"
        return lines[-1][:300] if lines else "(empty log)"

    def _say_where(self) -> None:
        s = self.settings
        kafka = f"{s.kafka.bootstrap} ({'embedded' if s.kafka.embedded else 'external'})"
        lines = [
            f"arb up: source {self.opts.source}, {len(self.children)} components",
            f"  kafka       {kafka}",
            f"  lake        {s.lake_dir}",
            f"  checkpoints {s.checkpoint_dir}",
            f"  alert log   {s.alert_log}",
            f"  logs        {self.logs_dir}/<component>.log",
            f"  metrics     {self.metrics_dir}",
        ]
        if any(c.component.name == "dashboard" for c in self.children):
            lines.append(f"  dashboard   http://{s.host}:{self.opts.dashboard_port}")
        print("\n".join(lines), file=self.out, flush=True)

    def print_status(self) -> None:
        now = time.time()
        rows = []
        for child in self.children:
            state = "up" if child.running else f"restarting (exit {child.last_exit})" if child.restart_at else "down"
            pid = child.process.pid if child.running else "-"
            rows.append(f"  {child.component.name:<18} {state:<8} pid {pid:<7} restarts {child.restarts:<3} "
                        f"{self._metrics_summary(child.component, now)}".rstrip())
        topics = self._topic_rates()
        if topics:
            rows.append("  topics             " + "  ".join(f"{t} {r:,.0f}/s" for t, r in topics.items()))
        print(f"{time.strftime('%H:%M:%S')} status\n" + "\n".join(rows), file=self.out, flush=True)

    def _metrics_summary(self, component: Component, now: float) -> str:
        if component.metrics is None:
            return component.where
        parts = []
        for path in sorted(self.metrics_dir.glob(component.metrics)):
            try:
                m = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            parts.append(summarize_metrics(path.stem, m, now))
        return "  ".join(parts) or "(no metrics yet)"

    def _topic_rates(self) -> dict[str, float]:
        """Messages per second per topic, from the change of the end offsets since the last status."""
        if not all(c.ready for c in self.children if c.component.name == "kafka"):
            return {}
        try:
            totals = end_offsets(self.settings)
        except Exception as exc:  # the status line must never take the supervisor down
            log_event(log, "offsets_failed", logging.DEBUG, error=exc)
            return {}
        now = time.monotonic()
        previous, self._offsets = self._offsets, (now, totals)
        if previous is None or now <= previous[0]:
            return {}
        elapsed = now - previous[0]
        return {t: max(0, n - previous[1].get(t, n)) / elapsed for t, n in totals.items()}


def summarize_metrics(stem: str, m: dict, now: float) -> str:
    """One short text from a metrics file (docs/DATA_MODEL.md, 'Live metrics files'); missing or odd values read 0."""
    updated = epoch_seconds(m.get("updated_ts"))
    stale = updated is not None and now - updated > 10
    if stem.startswith("producer-"):
        state = "connected" if m.get("connected") else "DISCONNECTED"
        text = (f"{state} {_num(m.get('frames_per_s')):,.0f} frames/s "
                f"{_num(m.get('events_per_s')):,.0f} events/s invalid {_num(m.get('invalid')):,.0f} "
                f"gaps {_num(m.get('gaps')):,.0f} reconnects {_num(m.get('reconnects')):,.0f}")
    elif stem.startswith("stream-"):
        text = (f"{stem[len('stream-'):]}: batch {m.get('batch_id')} {_num(m.get('input_rows_per_s')):,.0f} rows/s "
                f"{_num(m.get('batch_duration_ms')):,.0f} ms")
        if m.get("detection_p99_ms") is not None:
            text += f" detection p99 {_num(m.get('detection_p99_ms')):,.0f} ms"
        if m.get("late_ticks"):
            text += f" late ticks {_num(m.get('late_ticks')):,.0f}"
    elif stem == "emulator":
        clients = m.get("clients")
        if isinstance(clients, dict):  # per exchange
            clients = sum(_num(n) for n in clients.values())
        text = f"{_num(m.get('frames_sent')):,.0f} frames sent, {_num(clients):,.0f} clients"
    else:
        text = stem
    return text + (" (stale)" if stale else "")


def _num(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def epoch_seconds(value: object) -> float | None:
    """`updated_ts` as epoch seconds: the metrics files write it as epoch seconds or as an ISO-8601 UTC string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def end_offsets(settings: Settings) -> dict[str, int]:
    """Sum of the end offsets of each of our topics (what has ever been written to it)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.client_config(), "group.id": "arb-up-status",
                         "logger": logging.getLogger("arb.up.librdkafka")})
    try:
        metadata = consumer.list_topics(timeout=2)
        totals = {}
        for topic in settings.kafka.topics.all():
            if topic not in metadata.topics:
                continue
            totals[topic] = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1]
                                for p in metadata.topics[topic].partitions)
        return totals
    finally:
        consumer.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies of the group still answer: only count processes that are not zombies.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# --- CLI --------------------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "up", help="start the whole service (Kafka, emulator or live feeds, producers, streaming, dashboard)",
        description="Start every component as a supervised child process; Ctrl-C or SIGTERM stops them all. "
                    "Children log to data/run/logs/<component>.log.",
    )
    parser.add_argument("--source", choices=SOURCES, default="emulator",
                        help="market data from the local exchange emulator (default) or the live exchanges")
    parser.add_argument("--symbols", help="comma-separated canonical symbols for the producers, e.g. BTC/USDT,ETH/USDT "
                                          "(default: the producers' own)")
    parser.add_argument("--scenario", default="demo", help="emulator scenario name or file (default: demo)")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="do not start the streaming jobs")
    add_rules_arguments(parser, keep_text=True)
    parser.add_argument("--no-dashboard", dest="dashboard", action="store_false", help="do not start the dashboard")
    parser.add_argument("--coinbase-port", type=port, default=DEFAULT_COINBASE_PORT,
                        help=f"emulator's Coinbase port (default {DEFAULT_COINBASE_PORT})")
    parser.add_argument("--binance-port", type=port, default=DEFAULT_BINANCE_PORT,
                        help=f"emulator's Binance port (default {DEFAULT_BINANCE_PORT})")
    parser.add_argument("--control-port", type=port, default=DEFAULT_CONTROL_PORT,
                        help=f"emulator's HTTP control port, for faults on demand (default {DEFAULT_CONTROL_PORT})")
    parser.add_argument("--dashboard-port", type=port, default=DEFAULT_DASHBOARD_PORT,
                        help=f"dashboard port (default {DEFAULT_DASHBOARD_PORT})")
    parser.add_argument("--status-interval", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between status lines (default 5)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, settings: Settings) -> int:
    setup_logging()
    if args.source == "emulator" and len({args.coinbase_port, args.binance_port, args.control_port}) < 3:
        raise ConfigError("--coinbase-port, --binance-port and --control-port must differ")
    if args.status_interval <= 0:
        raise ConfigError("--status-interval must be positive")
    opts = UpOptions(source=args.source, symbols=args.symbols, scenario=args.scenario, stream=args.stream,
                     dashboard=args.dashboard, coinbase_port=args.coinbase_port, binance_port=args.binance_port,
                     control_port=args.control_port, dashboard_port=args.dashboard_port,
                     status_interval_s=args.status_interval, stream_args=rules_argv(args))
    lock = settings.run_dir / "up.pid"
    other = _read_live_pid(lock)
    if other is not None:
        print(f"arb up: already running (pid {other}, {settings.data_dir})", file=sys.stderr)
        return 1
    try:
        plan = _preflight(components(opts, settings), settings)
    except PreflightError as exc:
        print(f"arb up: {exc}", file=sys.stderr)
        return 1
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{os.getpid()}\n")

    supervisor = Supervisor(settings, plan, opts)
    previous = {sig: signal.signal(sig, supervisor.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.unlink(missing_ok=True)


class PreflightError(RuntimeError):
    pass


def _preflight(plan: list[Component], settings: Settings) -> list[Component]:
    """Drop what cannot or need not run (a command this build lacks, a broker already running); fail on busy ports
    or an external cluster that does not answer, before anything starts."""
    from arb.kafka import (EmbeddedKafka, EmbeddedKafkaConfig, KafkaError, ensure_topics, port_in_use,
                           wait_until_reachable)

    commands = available_commands()
    for component in plan:
        if component.command not in commands:
            print(f"arb up: skipping {component.name}: `arb {component.command}` is not available in this build",
                  file=sys.stderr)
    plan = [c for c in plan if c.command in commands]
    if settings.kafka.embedded:
        running = EmbeddedKafka(EmbeddedKafkaConfig.from_settings(settings)).pid()
        if running is not None:  # started earlier with `arb kafka start`: use it, and leave it running
            print(f"arb up: using the embedded broker already running (pid {running}, {settings.kafka.bootstrap})",
                  file=sys.stderr)
            plan = [c for c in plan if c.name != "kafka"]
    busy = [f"{port} ({c.name})" for c in plan for port in c.ports if port_in_use(settings.host, port)]
    if busy:
        raise PreflightError(f"port already in use: {', '.join(busy)}")
    if all(c.name != "kafka" for c in plan):
        try:
            wait_until_reachable(settings.kafka, 30.0)
            ensure_topics(settings)
        except KafkaError as exc:
            raise PreflightError(f"error: {exc}") from None
    return plan


def _read_live_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"up" in cmdline.split(b"\0") else None
