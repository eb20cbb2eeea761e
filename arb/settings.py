"""Service configuration: one frozen object, read from the environment (and an untracked `.env`) in `main()`.

Nothing is read at import time. Every field has an embedded default so `make demo` needs no configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A bad setting; the CLI reports it in one line and exits 2."""


@dataclass(frozen=True, slots=True)
class Topics:
    """Kafka topic names: one quotes and one trades topic per exchange, plus status, dead letters and alerts."""

    prefix: str = ""

    def quotes(self, exchange: str) -> str:
        return f"{self.prefix}{exchange}.quotes"

    def trades(self, exchange: str) -> str:
        return f"{self.prefix}{exchange}.trades"

    @property
    def feed_status(self) -> str:
        return f"{self.prefix}feed.status"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}arb.alerts"

    def all(self) -> list[str]:
        names = []
        for exchange in ("coinbase", "binance"):
            names += [self.quotes(exchange), self.trades(exchange)]
        return names + [self.feed_status, self.dead_letter, self.alerts]


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where Kafka is. `bootstrap_servers=None` means: use (and start) the embedded broker."""

    bootstrap_servers: str | None = None
    embedded_port: int = 9092
    embedded_controller_port: int = 9093
    security_protocol: str | None = None  # e.g. SASL_SSL for a managed cluster
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    # PEM file of the CA(s) that signed the brokers' certificates, for a cluster whose CA is not in the system store
    ssl_ca_location: str | None = None
    topics: Topics = Topics()

    @property
    def embedded(self) -> bool:
        return self.bootstrap_servers is None

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.embedded_port}"

    def client_config(self) -> dict[str, str]:
        """librdkafka / confluent-kafka settings (the JVM clients use the same keys with a `kafka.` prefix)."""
        conf = {"bootstrap.servers": self.bootstrap}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = REPO_ROOT / "data"
    kafka: KafkaSettings = KafkaSettings()
    host: str = "127.0.0.1"  # every service binds here unless told otherwise

    @property
    def jars_dir(self) -> Path:
        return self.data_dir / "jars"

    @property
    def lake_dir(self) -> str:
        return str(self.data_dir / "lake")

    @property
    def checkpoint_dir(self) -> str:
        return str(self.data_dir / "checkpoints")

    @property
    def alert_log(self) -> Path:
        return self.data_dir / "alerts" / "alerts.jsonl"

    @property
    def run_dir(self) -> Path:
        """pid files, logs and status files of the processes `arb` starts."""
        return self.data_dir / "run"


def load_dotenv(path: Path, environ: dict[str, str]) -> None:
    """Fill `environ` from a KEY=VALUE file without overriding what the environment already says."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        environ.setdefault(key.strip(), value.strip().strip("'\""))


def _int(environ: dict[str, str], key: str, default: int) -> int:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from None


def _existing_file(environ: dict[str, str], key: str) -> str | None:
    raw = environ.get(key) or None
    if raw is not None and not Path(raw).is_file():
        raise ConfigError(f"{key} must name a readable file, got {raw!r}")
    return raw


def from_env(environ: dict[str, str] | None = None) -> Settings:
    """Build Settings from the environment (and `.env` at the repo root)."""
    env = dict(os.environ if environ is None else environ)
    if environ is None:
        load_dotenv(REPO_ROOT / ".env", env)
    kafka = KafkaSettings(
        bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        embedded_port=_int(env, "ARB_KAFKA_PORT", 9092),
        embedded_controller_port=_int(env, "ARB_KAFKA_CONTROLLER_PORT", 9093),
        security_protocol=env.get("KAFKA_SECURITY_PROTOCOL") or None,
        sasl_mechanism=env.get("KAFKA_SASL_MECHANISM") or None,
        sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
        sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
        ssl_ca_location=_existing_file(env, "KAFKA_SSL_CA_LOCATION"),
        topics=Topics(prefix=env.get("ARB_TOPIC_PREFIX", "")),
    )
    data_dir = Path(env.get("ARB_DATA_DIR") or REPO_ROOT / "data").resolve()
    return Settings(data_dir=data_dir, kafka=kafka, host=env.get("ARB_HOST", "127.0.0.1"))
