"""Pure `DataFrame -> DataFrame` transforms shared by the bronze, silver and hot-path jobs.

Each starts and ends with a `select` that states its schema. Validation conditions are named columns, and a record's
rejection reason is the first failing one, so every rejected record lands in silver/dead_letter with a reason.

A Kafka value is the wire form of `arbitrage.events`:

    {"v": 1, "type": "quote", "exchange": "coinbase", "symbol": "BTC/USD", "venue_symbol": "BTC-USD",
     "bid": "64000.01", "bid_size": "0.5", "ask": "64000.02", "ask_size": "1.2",
     "ts_event_us": 1763771234567000, "ts_recv_us": 1763771234569120, "seq": 81234}
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DecimalType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

MONEY = DecimalType(30, 12)
EXCHANGES = ("coinbase", "binance")

WIRE_SCHEMA = StructType([
    StructField("v", LongType()),
    StructField("type", StringType()),
    StructField("exchange", StringType()),
    StructField("symbol", StringType()),
    StructField("venue_symbol", StringType()),
    StructField("bid", StringType()),
    StructField("bid_size", StringType()),
    StructField("ask", StringType()),
    StructField("ask_size", StringType()),
    StructField("price", StringType()),
    StructField("size", StringType()),
    StructField("side", StringType()),
    StructField("trade_id", StringType()),
    StructField("state", StringType()),
    StructField("detail", StringType()),
    StructField("ts_event_us", LongType()),
    StructField("ts_recv_us", LongType()),
    StructField("seq", LongType()),
])

FEED_STATES = ("connected", "subscribed", "disconnected", "gap", "resynced", "stale")
REQUIRED = {
    "quote": ("exchange", "symbol", "venue_symbol", "bid", "bid_size", "ask", "ask_size", "ts_recv_us"),
    "trade": ("exchange", "symbol", "venue_symbol", "price", "size", "side", "trade_id", "ts_recv_us"),
    "status": ("exchange", "state", "ts_recv_us"),
}


# What `kafka_records` makes of a Kafka source row (an empty frame of it stands for "no records yet").
KAFKA_RECORD_SCHEMA = "key string, value string, topic string, partition int, offset long, kafka_ts timestamp"


def kafka_records(raw: DataFrame) -> DataFrame:
    """Kafka source rows -> `key, value` as text plus where the record came from."""
    return raw.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.col("topic"),
        F.col("partition").cast(IntegerType()).alias("partition"),
        F.col("offset").cast(LongType()).alias("offset"),
        F.col("timestamp").alias("kafka_ts"),
    )


BRONZE_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_ts", "ingest_ts", "date")


def bronze(records: DataFrame) -> DataFrame:
    """The record exactly as it arrived, with a date partition (of the Kafka timestamp). The ingest time is added at
    the write (`bronze_tables`)."""
    return records.select("key", "value", "topic", "partition", "offset", "kafka_ts",
                          F.to_date("kafka_ts").alias("date"))


def _micros(name: str) -> Column:
    return F.timestamp_micros(F.col(f"w.{name}"))


MONEY_FIELDS = ("bid", "bid_size", "ask", "ask_size", "price", "size")


def parse_events(records: DataFrame, known_symbols: dict[str, list[str]], max_future_ms: int,
                 max_age_ms: int) -> DataFrame:
    """Kafka records -> one typed row per record (`kind` quote/trade/status) with `reason` set when it is rejected.

    Checks are deterministic on replay: times are judged against the record's Kafka timestamp, not the clock.
    `known_symbols` maps exchange -> canonical symbols the configured pairs use.
    """
    w = records.select(
        "*",
        F.from_json(F.col("value"), WIRE_SCHEMA, {"mode": "PERMISSIVE"}).alias("w"),
        F.when(F.col("value").rlike(r"^\s*\{"), F.lit(True)).otherwise(F.lit(False)).alias("_is_object"),
    )
    # What several checks use, computed once in a projection of its own. Spark does not share a subexpression between
    # the branches of a `when` / `coalesce`, so inside the checks each decimal cast ran once per check that names it:
    # the checks cost twice the rest of the parse (docs/BENCHMARKS.md). Spark keeps the projections apart because
    # inlining these into the next would repeat them.
    w = w.select(
        "*",
        *[F.col(f"w.{name}").try_cast(MONEY).alias(f"_{name}") for name in MONEY_FIELDS],
        F.unix_micros(F.col("kafka_ts")).alias("_kafka_us"),
        F.element_at(F.split(F.col("topic"), r"\."), -2).alias("_topic_exchange"),
    )
    kind = F.col("w.type")
    kafka_us = F.col("_kafka_us")
    topic_exchange = F.col("_topic_exchange")
    money = {name: F.col(f"_{name}") for name in MONEY_FIELDS}
    symbol_known = F.lit(False)
    for exchange, symbols in known_symbols.items():
        symbol_known = symbol_known | ((F.col("w.exchange") == exchange) & F.col("w.symbol").isin(list(symbols)))

    def missing(k: str) -> Column:
        return F.coalesce(*[F.when(F.col(f"w.{f}").isNull(), F.lit(f)) for f in REQUIRED[k]])

    missing_field = (F.when(kind == "quote", missing("quote"))
                     .when(kind == "trade", missing("trade"))
                     .when(kind == "status", missing("status")))
    is_quote, is_trade = kind == "quote", kind == "trade"
    checks = [
        (~F.col("_is_object") | F.col("w").isNull() | F.col("w.type").isNull(), "not a JSON event object"),
        (F.col("w.v").isNull() | (F.col("w.v") != 1), "unsupported schema version"),
        (~kind.isin("quote", "trade", "status"), "unknown event type"),
        (missing_field.isNotNull(), F.concat(F.lit("missing field "), missing_field)),
        (~F.col("w.exchange").isin(*EXCHANGES), "unknown exchange"),
        (F.col("topic").rlike(r"\.(quotes|trades)$") & (F.col("w.exchange") != topic_exchange),
         "exchange does not match topic"),
        (F.col("topic").endswith(".quotes") & ~is_quote, "not a quote on a quotes topic"),
        (F.col("topic").endswith(".trades") & ~is_trade, "not a trade on a trades topic"),
        ((is_quote | is_trade) & ~symbol_known, "unknown symbol"),
        (is_quote & (money["bid"].isNull() | money["ask"].isNull()
                     | money["bid_size"].isNull() | money["ask_size"].isNull()), "price or size is not a decimal"),
        (is_quote & ((money["bid"] <= 0) | (money["ask"] <= 0)), "non-positive price"),
        (is_quote & ((money["bid_size"] < 0) | (money["ask_size"] < 0)), "negative size"),
        (is_trade & (money["price"].isNull() | money["size"].isNull()), "price or size is not a decimal"),
        (is_trade & ((money["price"] <= 0) | (money["size"] <= 0)), "non-positive price or size"),
        (is_trade & ~F.col("w.side").isin("buy", "sell"), "unknown trade side"),
        ((kind == "status") & ~F.col("w.state").isin(*FEED_STATES), "unknown feed state"),
        (F.col("w.ts_recv_us") > kafka_us + max_future_ms * 1000, "receive time in the future"),
        (F.col("w.ts_event_us") > F.col("w.ts_recv_us") + max_future_ms * 1000, "event time in the future"),
        (F.coalesce(F.col("w.ts_event_us"), F.col("w.ts_recv_us")) < kafka_us - max_age_ms * 1000,
         "timestamp absurdly old"),
    ]
    reason = F.coalesce(*[F.when(failed, reason if isinstance(reason, Column) else F.lit(reason))
                          for failed, reason in checks])
    ts_event = _micros("ts_event_us")
    ts_recv = _micros("ts_recv_us")
    return w.select(
        kind.alias("kind"),
        F.col("w.exchange").alias("exchange"),
        F.col("w.symbol").alias("symbol"),
        F.col("w.venue_symbol").alias("venue_symbol"),
        money["bid"].alias("bid"),
        money["bid_size"].alias("bid_size"),
        money["ask"].alias("ask"),
        money["ask_size"].alias("ask_size"),
        money["price"].alias("price"),
        money["size"].alias("size"),
        F.col("w.side").alias("side"),
        F.col("w.trade_id").alias("trade_id"),
        F.col("w.state").alias("state"),
        F.col("w.detail").alias("detail"),
        ts_event.alias("ts_event"),
        ts_recv.alias("ts_recv"),
        F.coalesce(ts_event, ts_recv).alias("event_ts"),
        F.col("w.seq").alias("seq"),
        is_crossed(money["bid"], money["ask"]).alias("is_crossed"),
        "key", "value", "topic", "partition", "offset", "kafka_ts",
        reason.alias("reason"),
    )


def is_crossed(bid: Column, ask: Column) -> Column:
    """A book whose best bid is above its best ask: kept in silver, never compared."""
    return F.coalesce(bid > ask, F.lit(False))


def is_valid(events: DataFrame) -> Column:
    return F.col("reason").isNull()


def dedupe_key(events: DataFrame) -> DataFrame:
    """Add `dedupe_id`: seq for quotes, trade id for trades, the Kafka position for anything else (never a dup)."""
    position = F.concat_ws(":", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string"))
    valid_quote = (F.col("kind") == "quote") & F.col("reason").isNull() & F.col("seq").isNotNull()
    valid_trade = (F.col("kind") == "trade") & F.col("reason").isNull()
    return events.select(
        "*",
        F.when(valid_quote, F.concat(F.lit("q:"), F.col("seq").cast("string")))
        .when(valid_trade, F.concat(F.lit("t:"), F.col("trade_id")))
        .otherwise(position).alias("dedupe_id"),
    )


@dataclass(frozen=True)
class TableRows:
    """The rows of a frame one table takes (`where`) and the columns it makes of them (name -> expression).

    A sink feeding several tables from one micro-batch collects them all in one Spark job (`streaming.sinks.
    ArrowSplit`); `of` is the same table as a frame of its own. `stamped` names columns that are the time of the
    write (`current_timestamp()` here): collected to Arrow, the driver stamps them instead, since a per-batch
    literal in the projection would make Spark generate and compile its code again in every micro-batch.
    """

    where: Column
    columns: dict[str, Column]
    stamped: tuple[str, ...] = ()

    def of(self, frame: DataFrame) -> DataFrame:
        return frame.where(self.where).select(*(column.alias(name) for name, column in self.columns.items()))


def _columns(*names: str) -> dict[str, Column]:
    return {name: F.col(name) for name in names}


def bronze_tables(topics_by_table: dict[str, list[str]]) -> dict[str, TableRows]:
    """Bronze records -> one table per exchange (and feed status), by the topic they came from, stamped with the
    time of the write."""
    columns = {name: F.current_timestamp() if name == "ingest_ts" else F.col(name) for name in BRONZE_COLUMNS}
    return {table: TableRows(F.col("topic").isin(topics), columns, stamped=("ingest_ts",))
            for table, topics in topics_by_table.items()}


def _time_parts(ts: Column) -> dict[str, Column]:
    return {"year": F.year(ts), "month": F.month(ts), "day": F.dayofmonth(ts), "hour": F.hour(ts),
            "date": F.to_date(ts)}


def silver_quotes_rows() -> TableRows:
    """Valid quotes in the silver/quotes schema (docs/DATA_MODEL.md)."""
    return TableRows((F.col("kind") == "quote") & F.col("reason").isNull(), {
        **_columns("exchange", "symbol", "venue_symbol", "bid", "bid_size", "ask", "ask_size", "ts_event", "ts_recv",
                   "event_ts", "seq", "is_crossed", "topic", "partition", "offset"),
        **_time_parts(F.col("event_ts")),
    })


def silver_trades_rows() -> TableRows:
    """Valid trades in the silver/trades schema."""
    return TableRows((F.col("kind") == "trade") & F.col("reason").isNull(), {
        **_columns("exchange", "symbol", "venue_symbol", "price", "size", "side", "trade_id", "ts_event", "ts_recv",
                   "event_ts", "seq", "topic", "partition", "offset"),
        **_time_parts(F.col("event_ts")),
    })


def silver_feed_status_rows() -> TableRows:
    """Valid feed-status events in the silver/feed_status schema."""
    return TableRows((F.col("kind") == "status") & F.col("reason").isNull(), {
        **_columns("exchange", "symbol", "state", "detail", "ts_recv"), "date": F.to_date("ts_recv"),
    })


def dead_letter_rows() -> TableRows:
    """Every rejected record: where it came from, its raw text and why."""
    return TableRows(F.col("reason").isNotNull(), {
        "source": F.col("topic"), **_columns("topic", "partition", "offset"), "raw": F.col("value"),
        "reason": F.col("reason"), "ingest_ts": F.current_timestamp(), "date": F.to_date("kafka_ts"),
    }, stamped=("ingest_ts",))


def silver_tables() -> dict[str, TableRows]:
    """Parsed, deduplicated events -> the four silver tables; every event lands in exactly one of them."""
    return {"silver/quotes": silver_quotes_rows(), "silver/trades": silver_trades_rows(),
            "silver/feed_status": silver_feed_status_rows(), "silver/dead_letter": dead_letter_rows()}


def silver_quotes(events: DataFrame) -> DataFrame:
    return silver_quotes_rows().of(events)


def silver_trades(events: DataFrame) -> DataFrame:
    return silver_trades_rows().of(events)


def silver_feed_status(events: DataFrame) -> DataFrame:
    return silver_feed_status_rows().of(events)


def dead_letter(events: DataFrame) -> DataFrame:
    return dead_letter_rows().of(events)
