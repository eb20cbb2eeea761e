"""A real Apache Kafka broker (KRaft, one combined broker+controller node) on this machine, and the project's topics.

`arb kafka start|stop|status`. The broker runs from the jars `make setup` fetched (`data/jars/kafka/`), keeps its
log under `data/kafka/` and binds 127.0.0.1 on `ARB_KAFKA_PORT` / `ARB_KAFKA_CONTROLLER_PORT`. With
`KAFKA_BOOTSTRAP_SERVERS` set, nothing is started: every command talks to that cluster (with its SASL/SSL settings).
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from arb.logs import log_event, setup_logging
from arb.settings import ConfigError, KafkaSettings, Settings, Topics

log = logging.getLogger("arb.kafka")

DAY_MS = 24 * 3600 * 1000


class KafkaError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says why in one line."""


class AlreadyRunning(KafkaError):
    pass


# --- topics -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int

    @property
    def configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": "delete"}


def topic_specs(topics: Topics) -> list[TopicSpec]:
    """Every topic the service uses, with the partitions and retention of docs/DATA_MODEL.md."""
    specs = []
    for exchange in ("coinbase", "binance"):
        specs.append(TopicSpec(topics.quotes(exchange), partitions=2, retention_ms=7 * DAY_MS))
        specs.append(TopicSpec(topics.trades(exchange), partitions=2, retention_ms=7 * DAY_MS))
    specs.append(TopicSpec(topics.feed_status, partitions=1, retention_ms=7 * DAY_MS))
    specs.append(TopicSpec(topics.dead_letter, partitions=1, retention_ms=30 * DAY_MS))
    specs.append(TopicSpec(topics.alerts, partitions=1, retention_ms=30 * DAY_MS))
    return specs


def _admin(kafka: KafkaSettings):
    from confluent_kafka.admin import AdminClient

    # librdkafka logs every refused connection on stderr; route it to our (quieter) logger instead.
    return AdminClient({**kafka.client_config(), "logger": logging.getLogger("arb.kafka.librdkafka")})


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every missing topic of `settings.kafka.topics`; return the names created.

    Existing topics are left as they are (a partition count that differs from the spec is logged, not changed:
    changing it would move keys between partitions).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    admin = _admin(settings.kafka)
    specs = topic_specs(settings.kafka.topics)
    # The embedded broker has one node; on a cluster, -1 takes the cluster's default replication factor.
    replication = 1 if settings.kafka.embedded else -1
    created: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            existing = admin.list_topics(timeout=max(1.0, deadline - time.monotonic())).topics
        except KafkaException as exc:
            raise KafkaError(f"cannot reach Kafka at {settings.kafka.bootstrap}: {exc}") from None
        for spec in specs:
            if spec.name in existing and len(existing[spec.name].partitions) != spec.partitions:
                log_event(log, "topic_partitions_differ", logging.WARNING, topic=spec.name,
                          partitions=len(existing[spec.name].partitions), expected=spec.partitions)
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            _wait_for_leaders(admin, created, deadline)
            return created
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication, config=s.configs)
             for s in missing],
            operation_timeout=10,
        )
        retry = False
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
                log_event(log, "topic_created", topic=name)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == error.TOPIC_ALREADY_EXISTS:
                    continue
                # A broker that has just started may not have registered itself yet: try again shortly.
                if not error.retriable() and error.name() not in ("INVALID_REPLICATION_FACTOR", "BROKER_NOT_AVAILABLE"):
                    raise KafkaError(f"cannot create topic {name}: {error.str()}") from None
                retry = True
        if not retry:
            _wait_for_leaders(admin, created, deadline)
            return created
        if time.monotonic() > deadline:
            raise KafkaError(f"timed out creating topics on {settings.kafka.bootstrap}")
        time.sleep(0.5)


def _wait_for_leaders(admin, names: list[str], deadline: float) -> None:
    """Block until every partition of `names` has a leader in the broker's metadata (which may lag the controller's
    answer to CreateTopics): then the topics can be used at once."""
    while names:
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and topics[n].partitions and all(p.leader >= 0 for p in topics[n].partitions.values())
               for n in names):
            return
        if time.monotonic() > deadline:
            raise KafkaError(f"topics {', '.join(names)} created but without partition leaders")
        time.sleep(0.1)


def wait_until_reachable(kafka: KafkaSettings, timeout_s: float) -> int:
    """Block until the cluster answers a metadata request; return its number of brokers."""
    from confluent_kafka import KafkaException

    admin = _admin(kafka)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata = admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            if metadata.brokers:
                return len(metadata.brokers)
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise KafkaError(f"Kafka at {kafka.bootstrap} did not answer within {timeout_s:.0f}s")
        time.sleep(0.2)


# --- the embedded broker ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbeddedKafkaConfig:
    """Where the embedded broker keeps its state and which ports it binds."""

    home: Path  # server.properties, pid file, logs; the Kafka log itself is in home/log
    jars_dir: Path
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    heap: str = "512m"
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 30.0
    tie_to_parent: bool = False  # tests, benchmarks: the broker gets SIGTERM when the process that started it dies

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedKafkaConfig:
        if not settings.kafka.embedded:
            raise ConfigError("KAFKA_BOOTSTRAP_SERVERS is set: the embedded broker is not used")
        if settings.kafka.embedded_port == settings.kafka.embedded_controller_port:
            raise ConfigError("ARB_KAFKA_PORT and ARB_KAFKA_CONTROLLER_PORT must differ")
        return cls(
            home=settings.data_dir / "kafka",
            jars_dir=settings.jars_dir / "kafka",
            port=settings.kafka.embedded_port,
            controller_port=settings.kafka.embedded_controller_port,
            host=settings.host,
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def server_log(self) -> Path:
        return self.home / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.home / "stdout.log"


def _server_properties(cfg: EmbeddedKafkaConfig) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # --standalone formatting records this node as the only voter; controller.quorum.voters must stay unset.
        "controller.quorum.bootstrap.servers": f"{cfg.host}:{cfg.controller_port}",
        "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(cfg.log_dir),
        # Topics are created explicitly with their documented partitions (ensure_topics); a typo must fail loudly.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.check.interval.ms": "300000",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _log4j_properties(cfg: EmbeddedKafkaConfig) -> str:
    return f"""status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {cfg.server_log}
appender.file.filePattern = {cfg.server_log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _random_cluster_id() -> str:
    """A Kafka cluster id (base64url of 16 random bytes, as `kafka-storage random-uuid` prints)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka's own generator avoids ids that read as command-line options
            return text


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class EmbeddedKafka:
    """One local KRaft broker: `start()` returns once it answers metadata requests, `stop()` shuts it down."""

    def __init__(self, config: EmbeddedKafkaConfig) -> None:
        self.config = config
        self._process = None  # the Popen when this object started the broker

    # state

    def pid(self) -> int | None:
        """The pid of our running broker, from the pid file; None when it is not running."""
        try:
            pid = int(self.config.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._process is not None and self._process.pid == pid:
            return pid if self._process.poll() is None else None
        # A recycled pid belongs to someone else: only a java running our properties file is ours.
        for _ in range(20):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return None
            if cmdline:  # empty for a moment while a process execs
                break
            time.sleep(0.05)
        if str(self.config.properties_file).encode() not in cmdline.split(b"\0"):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    # lifecycle

    def command(self) -> list[str]:
        cfg = self.config
        java = str(Path(os.environ["JAVA_HOME"], "bin", "java")) if os.environ.get("JAVA_HOME") else "java"
        return [
            java,
            f"-Xmx{cfg.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={cfg.log4j_file}",
            f"-Dkafka.logs.dir={cfg.home}",
            "-cp",
            str(cfg.jars_dir / "*"),
            "kafka.Kafka",
            str(cfg.properties_file),
        ]

    def prepare(self) -> None:
        """Write the configuration files and format the storage (once: a formatted log dir is kept)."""
        cfg = self.config
        if not any(cfg.jars_dir.glob("kafka_*.jar")):
            raise KafkaError(f"no Kafka jars in {cfg.jars_dir}: run `make setup`")
        if shutil.which(self.command()[0]) is None:
            raise KafkaError("java not found: install a JDK (17+) or set JAVA_HOME")
        running = self.pid()
        if running is not None:
            raise AlreadyRunning(f"Kafka already running (pid {running}, {cfg.bootstrap}, {cfg.home})")
        for port in (cfg.port, cfg.controller_port):
            if port_in_use(cfg.host, port):
                raise AlreadyRunning(f"port {cfg.host}:{port} is already in use (another broker?)")
        cfg.home.mkdir(parents=True, exist_ok=True)
        cfg.properties_file.write_text(_server_properties(cfg))
        cfg.log4j_file.write_text(_log4j_properties(cfg))
        if not (cfg.log_dir / "meta.properties").exists():
            self._format()

    def _format(self) -> None:
        import subprocess

        cfg = self.config
        shutil.rmtree(cfg.log_dir, ignore_errors=True)
        java, *jvm = self.command()[:-2]
        result = subprocess.run(
            [java, *jvm, "kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
             "-t", _random_cluster_id(), "-c", str(cfg.properties_file)],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            reason = (result.stderr or result.stdout).strip().splitlines()
            raise KafkaError(f"formatting {cfg.log_dir} failed: {reason[-1] if reason else result.returncode}")
        log_event(log, "storage_formatted", log_dir=cfg.log_dir)

    def start(self, wait: bool = True, tie_to_parent: bool | None = None) -> None:
        """Start the broker in the background and wait until it answers.

        The broker outlives this process, unless `tie_to_parent` (default: the config's; for tests and benchmarks):
        then it gets SIGTERM when this process dies, however it dies.
        """
        if tie_to_parent is None:
            tie_to_parent = self.config.tie_to_parent
        import subprocess

        self.prepare()
        cfg = self.config
        with open(cfg.stdout_log, "ab") as out:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=cfg.home, preexec_fn=set_parent_death_signal if tie_to_parent else None,
            )
        cfg.pid_file.write_text(f"{self._process.pid}\n")
        log_event(log, "starting", pid=self._process.pid, bootstrap=cfg.bootstrap, home=cfg.home)
        if wait:
            try:
                self.wait_until_ready()
            except BaseException:
                self.stop()
                raise

    def exec_foreground(self) -> None:
        """Replace this process with the broker (for `arb up`, which supervises it as a child)."""
        self.prepare()
        self.config.pid_file.write_text(f"{os.getpid()}\n")  # exec keeps the pid
        command = self.command()
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(self.config.home)
        os.execvp(command[0], command)

    def wait_until_ready(self, timeout_s: float | None = None) -> None:
        cfg = self.config
        deadline = time.monotonic() + (timeout_s or cfg.start_timeout_s)
        while not _accepts_connections(cfg.host, cfg.port):
            if not self.is_running():
                raise KafkaError(f"Kafka exited during start-up; see {cfg.server_log} and {cfg.stdout_log}")
            if time.monotonic() > deadline:
                raise KafkaError(f"Kafka did not open {cfg.bootstrap} within {cfg.start_timeout_s:.0f}s")
            time.sleep(0.2)
        wait_until_reachable(KafkaSettings(embedded_port=cfg.port), max(1.0, deadline - time.monotonic()))
        log_event(log, "ready", bootstrap=cfg.bootstrap)

    def stop(self) -> bool:
        """SIGTERM the broker, wait for its clean shutdown, SIGKILL it after a timeout; False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.config.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, self.config.stop_timeout_s):
            log_event(log, "kill", logging.WARNING, pid=pid, after_s=self.config.stop_timeout_s)
            os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.config.pid_file.unlink(missing_ok=True)
        log_event(log, "stopped", pid=pid)
        return True

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return True
            elif not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return True
            time.sleep(0.1)
        return False

    def __enter__(self) -> EmbeddedKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def set_parent_death_signal() -> None:
    """In a child process: receive SIGTERM when the parent dies (Linux `PR_SET_PDEATHSIG`), so no broker is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


# --- CLI --------------------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "kafka", help="run the embedded Kafka broker (KRaft)",
        description="Start, stop or inspect the embedded Kafka broker. With KAFKA_BOOTSTRAP_SERVERS set nothing is "
                    "started: `start` checks the external cluster and creates the topics.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start the broker in the background and create the topics")
    start.add_argument("--foreground", action="store_true",
                       help="run the broker in this process (as `arb up` does); topics are not created")
    actions.add_parser("stop", help="stop the broker (SIGTERM, then SIGKILL after a timeout)")
    actions.add_parser("status", help="say whether the broker runs and answers; exit 1 if not")
    actions.add_parser("topics", help="create any missing topic (partitions and retention of docs/DATA_MODEL.md)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, settings: Settings) -> int:
    setup_logging()
    logging.getLogger("arb.kafka.librdkafka").setLevel(logging.CRITICAL)
    try:
        if not settings.kafka.embedded:
            return _handle_external(args.action, settings)
        broker = EmbeddedKafka(EmbeddedKafkaConfig.from_settings(settings))
        if args.action == "start":
            if args.foreground:
                broker.exec_foreground()  # does not return
            broker.start()
            created = ensure_topics(settings)
            print(f"kafka running: pid {broker.pid()} bootstrap {broker.config.bootstrap} "
                  f"data {broker.config.home} topics created {len(created)}")
            return 0
        if args.action == "stop":
            print("kafka stopped" if broker.stop() else "kafka was not running")
            return 0
        if args.action == "topics":
            created = ensure_topics(settings)
            print(f"topics created: {', '.join(created) or 'none (all exist)'}")
            return 0
        pid = broker.pid()
        if pid is None:
            print(f"kafka not running (data {broker.config.home})")
            return 1
        wait_until_reachable(settings.kafka, 5.0)
        print(f"kafka running: pid {pid} bootstrap {broker.config.bootstrap} data {broker.config.home}")
        return 0
    except AlreadyRunning as exc:
        print(f"arb kafka {args.action}: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"arb kafka {args.action}: error: {exc}", file=sys.stderr)
        return 1


def _handle_external(action: str, settings: Settings) -> int:
    bootstrap = settings.kafka.bootstrap
    if action == "stop":
        print(f"external Kafka ({bootstrap}): nothing to stop")
        return 0
    brokers = wait_until_reachable(settings.kafka, 15.0 if action == "start" else 5.0)
    if action in ("start", "topics"):
        created = ensure_topics(settings)
        print(f"external Kafka ({bootstrap}, {brokers} brokers): nothing started; topics created {len(created)}")
        return 0
    print(f"external Kafka reachable: {bootstrap} ({brokers} brokers)")
    return 0
