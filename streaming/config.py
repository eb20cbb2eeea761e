"""Streaming configuration: one frozen object per run, built from `Settings` in `main()` or a test fixture.

Lake and checkpoint locations are plain strings joined with "/", never `pathlib`, so that an `s3a://bucket/lake` or
`abfss://...` location works exactly like the local default (`data/lake`, `data/checkpoints/<job>`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from arb.settings import ConfigError, Settings

ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
HDFS = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"
STATE_STORES = {"rocksdb": ROCKSDB, "hdfs": HDFS}
ALIGNMENTS = ("asof", "join")


def join_path(base: str, *parts: str) -> str:
    """`base/part/part` for any Hadoop URI or local path (no pathlib: `s3a://b/x` must stay `s3a://b/x`)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass(frozen=True, slots=True)
class SparkConfig:
    """How the Spark session is made. Every field can be overridden; `extra` wins over everything."""

    master: str = "local[*]"
    app_name: str = "arb-stream"
    jars_dir: str = "data/jars/spark"
    shuffle_partitions: int = 0  # 0: the number of cores of the local master (2 on the dev machine)
    driver_memory: str = "2g"
    ui_enabled: bool = False
    log_level: str = "WARN"
    driver_host: str = "127.0.0.1"  # where a local driver listens (ARB_HOST); a cluster's executors need a reachable one
    extra: Mapping[str, str] = field(default_factory=dict)


# The most Kafka records a lake job (bronze, silver) reads per micro-batch: a catch-up after downtime comes in slices
# this big, each collected into the driver's memory in Arrow when the lake is local (streaming.sinks.LakeSink).
LAKE_BATCH_RECORDS = 500_000


# How often the queries beside the hot path run a micro-batch, in seconds. Spark starts a processing-time batch at the
# multiples of its interval since the epoch, so queries with one interval start their batches at the same instant:
# with bronze, silver and the analytics all every 10 s, the hot path's batches took twice as long in the 6 s after each
# 10 s mark as in the 4 s before the next (docs/BENCHMARKS.md). Intervals co-prime with each other rarely meet.
TIMER_INTERVALS_S = {"analytics_crash": 7, "silver": 10, "analytics_mid": 11, "bronze": 13, "analytics_candles": 17}


def every(job: str) -> str:
    """The processing-time trigger of a query beside the hot path."""
    return f"{TIMER_INTERVALS_S[job]} seconds"


@dataclass(frozen=True, slots=True)
class JobConfig:
    """Per-query knobs: trigger interval ("0 seconds" = run batches back to back), state store, and the number of
    partitions (state store instances) of its stateful operator (None: the session's, sized to the cores)."""

    trigger: str = "0 seconds"
    state_store: str = "rocksdb"  # rocksdb | hdfs (transformWithState requires rocksdb)
    max_offsets_per_trigger: int | None = None
    shuffle_partitions: int | None = None  # pinned in the checkpoint by its first batch, as Spark does

    def __post_init__(self) -> None:
        if self.state_store not in STATE_STORES:
            raise ConfigError(f"state store must be one of {sorted(STATE_STORES)}, got {self.state_store!r}")
        if self.shuffle_partitions is not None and self.shuffle_partitions < 1:
            raise ConfigError(f"shuffle partitions must be at least 1, got {self.shuffle_partitions}")


@dataclass(frozen=True, slots=True)
class StreamingConfig:
    """Where the lake and checkpoints live, which topics to read, and the event-time rules of the jobs."""

    lake: str
    checkpoints: str
    alert_log: str
    metrics_dir: str
    kafka_options: Mapping[str, str]  # `kafka.bootstrap.servers` etc., passed to every Kafka source/sink
    topics: Any  # arb.settings.Topics
    rules: Any  # arbitrage.rules.RulesConfig
    spark: SparkConfig = SparkConfig()
    # The hot path's watermark delay D: against a venue that brings nothing in a micro-batch (silent, or its partition
    # behind), the other venue's ticks become final D behind that venue's estimated clock (hotpath.PairState.final_us).
    watermark_delay_ms: int = 300
    # How far a venue's own ticks may arrive behind its latest quote's event time and still be compared: the hot path
    # treats a tick as final once both venues have ticked past it by this much (streaming/hotpath.py, final_us).
    venue_reorder_ms: int = 20
    # How the hot path aligns the two venues: "asof" (one operator keeps each side's latest quote) or "join" (a
    # stream-stream join within the staleness bound in front of it): streaming/quotejoin.py, docs/RULES.md.
    alignment: str = "asof"
    # How often `arb stream` compacts the recent partitions of the local Delta tables it appends to (0: never):
    # streaming/compaction.py.
    compact_every_s: float = 600.0
    # Lateness tolerated by the silver dedupe (exchange, symbol, seq) and the bronze/silver jobs.
    dedupe_watermark: str = "1 minute"
    # The hot path's partitions default to the session's (the cores): 1 instead of 2 measured no faster here
    # (docs/BENCHMARKS.md "Pipeline"); ARB_HOTPATH_PARTITIONS sets it. The other queries': `jobs.shuffle_partitions`.
    hotpath: JobConfig = JobConfig(trigger="0 seconds", state_store="rocksdb")
    # The lake jobs run fewer, larger batches: each batch has fixed costs, and on a small machine every second they
    # spend is taken from the hot path (docs/BENCHMARKS.md "Pipeline"). RocksDB: faster than hdfs for the dedupe here.
    # A batch is at most LAKE_BATCH_RECORDS records: a local lake's batch is collected into the driver (delta-rs).
    silver: JobConfig = JobConfig(trigger=every("silver"), state_store="rocksdb",
                                  max_offsets_per_trigger=LAKE_BATCH_RECORDS)
    bronze: JobConfig = JobConfig(trigger=every("bronze"), state_store="rocksdb",  # stateless
                                  max_offsets_per_trigger=LAKE_BATCH_RECORDS)
    starting_offsets: str = "earliest"
    # A timestamp more than this far ahead of the receive time, or this far behind it, is rejected to dead letter.
    max_future_ms: int = 5_000
    max_age_ms: int = 7 * 24 * 3600 * 1000
    alert_webhook_url: str | None = field(default=None, repr=False)  # ARB_ALERT_WEBHOOK_URL: a secret

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENTS:
            raise ConfigError(f"alignment must be one of {list(ALIGNMENTS)}, got {self.alignment!r}")

    def table(self, name: str) -> str:
        """Location of a Delta table, e.g. `table("silver/quotes")`."""
        return join_path(self.lake, name)

    def checkpoint(self, job: str) -> str:
        return join_path(self.checkpoints, job)

    def replace(self, **changes: Any) -> "StreamingConfig":
        return dataclasses.replace(self, **changes)


def kafka_options(settings: Settings) -> dict[str, str]:
    """The Spark Kafka source/sink options for `settings.kafka` (same keys as librdkafka, `kafka.`-prefixed)."""
    conf = settings.kafka.client_config()
    options = {f"kafka.{key}": value for key, value in conf.items()}
    if "kafka.sasl.username" in options:  # the JVM client wants a JAAS line instead of username/password
        user = options.pop("kafka.sasl.username")
        password = options.pop("kafka.sasl.password", "")
        module = "org.apache.kafka.common.security.plain.PlainLoginModule"
        if options.get("kafka.sasl.mechanism", "").upper().startswith("SCRAM"):
            module = "org.apache.kafka.common.security.scram.ScramLoginModule"
        options["kafka.sasl.jaas.config"] = f'{module} required username="{user}" password="{password}";'
    ca_location = options.pop("kafka.ssl.ca.location", None)
    if ca_location:  # librdkafka's CA file is, for the JVM client, a truststore of type PEM (Kafka 2.7+, KIP-651)
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = ca_location
    return options


def spark_conf_from_env(text: str) -> dict[str, str]:
    """`ARB_SPARK_CONF`: Spark settings as `key=value` pairs separated by whitespace or `;` (they win over ours)."""
    conf = {}
    for item in text.replace(";", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("spark."):
            raise ConfigError(f"ARB_SPARK_CONF takes spark.key=value pairs, got {item!r}")
        conf[key] = value
    return conf


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name) or default)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {env.get(name)!r}") from None


def from_settings(settings: Settings, rules: Any = None, environ: Mapping[str, str] | None = None,
                  **overrides: Any) -> StreamingConfig:
    """The embedded defaults under `settings.data_dir`; `ARB_SPARK_MASTER`, `ARB_LAKE_DIR`, `ARB_CHECKPOINT_DIR`,
    `ARB_STATE_STORE` and `ARB_HOTPATH_PARTITIONS` (hot path), `ARB_WATERMARK_MS`, `ARB_REORDER_MS`,
    `ARB_COMPACT_EVERY_S`, `ARB_ALIGNMENT` and
    `ARB_SPARK_CONF` override them; keyword arguments override everything."""
    env = os.environ if environ is None else environ
    if rules is None:
        from arbitrage.rules import RulesConfig

        rules = RulesConfig()
    spark = SparkConfig(
        master=env.get("ARB_SPARK_MASTER") or "local[*]",
        jars_dir=str(settings.jars_dir / "spark"),
        driver_host=settings.host,
        extra=spark_conf_from_env(env.get("ARB_SPARK_CONF") or ""),
    )
    hotpath = JobConfig(trigger="0 seconds", state_store=env.get("ARB_STATE_STORE") or "rocksdb",
                        shuffle_partitions=_int_env(env, "ARB_HOTPATH_PARTITIONS", 0)
                        if env.get("ARB_HOTPATH_PARTITIONS") else None)
    watermark_ms = _int_env(env, "ARB_WATERMARK_MS", 300)
    reorder_ms = _int_env(env, "ARB_REORDER_MS", 20)
    compact_every_s = _int_env(env, "ARB_COMPACT_EVERY_S", 600)
    config = StreamingConfig(
        lake=env.get("ARB_LAKE_DIR") or settings.lake_dir,
        checkpoints=env.get("ARB_CHECKPOINT_DIR") or settings.checkpoint_dir,
        alert_log=str(settings.alert_log),
        alert_webhook_url=env.get("ARB_ALERT_WEBHOOK_URL") or None,
        metrics_dir=str(settings.run_dir / "metrics"),
        kafka_options=kafka_options(settings),
        topics=settings.kafka.topics,
        rules=rules,
        spark=spark,
        hotpath=hotpath,
        watermark_delay_ms=watermark_ms,
        venue_reorder_ms=reorder_ms,
        compact_every_s=compact_every_s,
        alignment=env.get("ARB_ALIGNMENT") or "asof",
    )
    return config.replace(**overrides) if overrides else config
