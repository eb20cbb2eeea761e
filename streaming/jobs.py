"""Thin streaming jobs: read Kafka -> pure transforms -> foreachBatch sink. Each returns its started query.

    bronze   all input topics -> bronze/coinbase, bronze/binance, bronze/feed_status (records as they arrived)
    silver   all input topics -> parse, validate, dedupe (exchange, symbol, seq) within the watermark ->
             silver/quotes, silver/trades, silver/feed_status, silver/dead_letter
    hotpath  quote topics + feed status -> parse -> pair ticks [-> stream-stream join, `--align join`]
             -> ArbProcessor (PairTracker) ->
             alerts + silver/spreads + gold/arb_windows, in one micro-batch (`arb stream spreads` and
             `arb stream gold` both run it: spreads and windows come out of the same operator)

Bronze and silver run beside the hot path, not in front of it.
"""

from __future__ import annotations

from typing import Any, Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from arb.settings import ConfigError
from streaming import hotpath, quotejoin, sinks, transforms
from streaming.config import STATE_STORES, JobConfig, StreamingConfig
from streaming.session import HOTPATH_POOL

JOBS = ("bronze", "silver", "hotpath")


def input_topics(config: StreamingConfig, with_trades: bool = True) -> list[str]:
    topics = config.topics
    names = [topics.quotes("coinbase"), topics.quotes("binance")]
    if with_trades:
        names += [topics.trades("coinbase"), topics.trades("binance")]
    return names + [topics.feed_status]


def read_kafka(spark: SparkSession, config: StreamingConfig, topics: list[str], job: JobConfig) -> DataFrame:
    reader = (spark.readStream.format("kafka").options(**config.kafka_options)
              .option("subscribe", ",".join(topics))
              .option("startingOffsets", config.starting_offsets)
              .option("includeHeaders", "false"))
    if job.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(job.max_offsets_per_trigger))
    return transforms.kafka_records(reader.load())


def known_symbols(config: StreamingConfig) -> dict[str, list[str]]:
    return {ex: sorted({p.symbol_on(ex) for p in config.rules.pairs}) for ex in ("coinbase", "binance")}


def parse(config: StreamingConfig, records: DataFrame) -> DataFrame:
    return transforms.parse_events(records, known_symbols(config), config.max_future_ms, config.max_age_ms)


CHECKPOINT_MANAGER = "spark.sql.streaming.checkpointFileManagerClass"
FILESYSTEM_CHECKPOINTS = "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"


def shuffle_partitions(name: str, job: JobConfig, session_partitions: int, master: str) -> int:
    """Partitions of a query's stateful operator: its own setting, else the session's (the cores of a local master)
    for the hot path, and on a local master half of them (at least 1) for the queries beside it, whose tasks then
    leave cores to the hot path's (docs/BENCHMARKS.md); on a cluster, the session's for every query."""
    if job.shuffle_partitions:
        return job.shuffle_partitions
    if name == "hotpath" or not master.startswith("local"):
        return session_partitions
    return max(1, session_partitions // 2)


def start_query(spark: SparkSession, config: StreamingConfig, name: str, job: JobConfig, frame: DataFrame,
                sink_factory: Callable[[sinks.QueryId], Any], available_now: bool) -> StreamingQuery:
    """Start `frame` into a foreachBatch sink with the job's checkpoint, trigger, state store and partitions: every
    query of the service starts here (the analytics queries too)."""
    # Spark copies the session conf when a query starts and pins the provider in the checkpoint.
    spark.conf.set("spark.sql.streaming.stateStore.providerClass", STATE_STORES[job.state_store])
    session_partitions = int(spark.sparkContext.getConf().get("spark.sql.shuffle.partitions", "200"))
    spark.conf.set("spark.sql.shuffle.partitions",
                   str(shuffle_partitions(name, job, session_partitions, spark.sparkContext.master)))
    # A local checkpoint through the FileSystem API: without Hadoop's native library, FileContext's rename forks a
    # `readlink` per file (~0.2-0.4 s of every micro-batch's commits here: docs/BENCHMARKS.md). Not for HDFS, where
    # FileContext's atomic rename is the point; an ARB_SPARK_CONF choice wins.
    if CHECKPOINT_MANAGER not in config.spark.extra:
        if sinks.is_local(config.checkpoint(name)):
            spark.conf.set(CHECKPOINT_MANAGER, FILESYSTEM_CHECKPOINTS)
        else:
            spark.conf.unset(CHECKPOINT_MANAGER)
    # The join alignment's two watermarks follow the faster venue (quotejoin.py); the other queries have one.
    spark.conf.set(quotejoin.WATERMARK_POLICY, "max" if name == "hotpath" and config.alignment == "join" else "min")
    # A query's batches run in the scheduler pool of the thread that started it (streaming/session.py).
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", HOTPATH_POOL if name == "hotpath" else None)
    query_id = sinks.QueryId()
    writer = (frame.writeStream.queryName(name).outputMode("append")
              .option("checkpointLocation", config.checkpoint(name))
              .foreachBatch(sink_factory(query_id)))
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=job.trigger)
    query = writer.start()
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)
    query_id.set(str(query.id))
    return query


def start_bronze(spark: SparkSession, config: StreamingConfig, available_now: bool = False) -> StreamingQuery:
    records = read_kafka(spark, config, input_topics(config), config.bronze)
    return start_query(spark, config, "bronze", config.bronze, transforms.bronze(records),
                       lambda qid: sinks.bronze_sink(config, qid), available_now)


def silver_frame(config: StreamingConfig, records: DataFrame) -> DataFrame:
    """Parsed events, deduplicated within the watermark on (kind, exchange, symbol, seq / trade id)."""
    events = transforms.dedupe_key(parse(config, records))
    return (events.withWatermark("kafka_ts", config.dedupe_watermark)
            .dropDuplicatesWithinWatermark(["kind", "exchange", "symbol", "dedupe_id"]))


def create_silver_tables(spark: SparkSession, config: StreamingConfig) -> None:
    """Create the silver tables that do not exist yet, empty, with the schema silver writes (its own sink, given an
    empty batch), so that a query reading one as a stream can start before silver's first batch. Silver calls it
    before it starts too, so in one process the two never race to create a table."""
    from delta.tables import DeltaTable

    def all_there() -> bool:
        return all(DeltaTable.isDeltaTable(spark, config.table(name)) for name in transforms.silver_tables())

    if all_there():
        return
    query_id = sinks.QueryId()
    query_id.set("create")
    try:
        records = spark.createDataFrame([], transforms.KAFKA_RECORD_SCHEMA)
        sinks.silver_sink(config, query_id)(transforms.dedupe_key(parse(config, records)), 0)
    except Exception:
        if not all_there():  # not another process creating them at the same moment
            raise


def start_silver(spark: SparkSession, config: StreamingConfig, available_now: bool = False) -> StreamingQuery:
    create_silver_tables(spark, config)
    records = read_kafka(spark, config, input_topics(config), config.silver)
    return start_query(spark, config, "silver", config.silver, silver_frame(config, records),
                       lambda qid: sinks.silver_sink(config, qid), available_now)


def hotpath_frame(spark: SparkSession, config: StreamingConfig, records: DataFrame) -> DataFrame:
    ticks = hotpath.pair_ticks(parse(config, records), config.rules)
    watermarked = ticks.withWatermark("event_ts", f"{config.watermark_delay_ms} milliseconds")
    return hotpath.arb_stream(watermarked, config.rules, config.watermark_delay_ms, config.venue_reorder_ms)


def joined_hotpath_frame(spark: SparkSession, config: StreamingConfig) -> DataFrame:
    """`--align join`: each venue's quote topic (+ feed status) is its own source, one side of the join."""
    sides = []
    for exchange in ("coinbase", "binance"):
        records = read_kafka(spark, config, [config.topics.quotes(exchange), config.topics.feed_status],
                             config.hotpath)
        sides.append(hotpath.pair_ticks(parse(config, records), config.rules))
    return quotejoin.arb_stream(*sides, config.rules, config.watermark_delay_ms)


def start_hotpath(spark: SparkSession, config: StreamingConfig, available_now: bool = False,
                  on_alerts: Callable[[list[dict]], None] | None = None,
                  kafka_client: dict[str, str] | None = None,
                  on_late: Callable[[int], None] | None = None) -> StreamingQuery:
    if config.hotpath.state_store != "rocksdb":
        raise ConfigError("the hot path runs transformWithStateInPandas, which needs the rocksdb state store")
    if config.alignment == "join":
        frame = joined_hotpath_frame(spark, config)
    else:
        records = read_kafka(spark, config, input_topics(config, with_trades=False), config.hotpath)
        frame = hotpath_frame(spark, config, records)
    alerts = sinks.AlertLog(config.alert_log, config.topics.alerts, kafka_client, config.alert_webhook_url)
    made: list[sinks.HotPathSink] = []

    def make_sink(query_id: sinks.QueryId) -> sinks.HotPathSink:
        made.append(sinks.HotPathSink(config, query_id, alerts, on_alerts, on_late))
        return made[0]

    query = start_query(spark, config, "hotpath", config.hotpath, frame, make_sink, available_now)
    spool = made[0].spool
    return query if spool is None else sinks.SpooledQuery(query, spool)


def start(spark: SparkSession, config: StreamingConfig, job: str, available_now: bool = False,
          **kwargs: Any) -> StreamingQuery:
    if job == "bronze":
        return start_bronze(spark, config, available_now)
    if job == "silver":
        return start_silver(spark, config, available_now)
    if job == "hotpath":
        return start_hotpath(spark, config, available_now, **kwargs)
    raise ValueError(f"unknown job {job!r}")
