"""The analytics Spark transforms on 3-5-row frames, compared whole (one local Spark session for the module)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D

import pytest

from arb.settings import REPO_ROOT
from arbitrage.analytics import AnalyticsConfig

T0 = 1_795_305_600_000_000  # 2026-11-22T00:00:00Z in µs
S = 1_000_000
KAFKA_TS = datetime(2026, 11, 22, 0, 5)  # naive UTC: after every event below


@pytest.fixture(scope="module")
def spark():
    from streaming.config import SparkConfig
    from streaming.session import create_session

    session = create_session(SparkConfig(master="local[1]", app_name="test-analytics-transforms",
                                         shuffle_partitions=1, jars_dir=str(REPO_ROOT / "data" / "jars" / "spark"),
                                         driver_memory="1g"))
    yield session
    session.stop()


def quote(exchange: str, symbol: str, t_us: int, bid: str, ask: str, seq: int | None) -> str:
    seq_text = "null" if seq is None else str(seq)
    return (f'{{"v":1,"type":"quote","exchange":"{exchange}","symbol":"{symbol}","venue_symbol":"X","bid":"{bid}",'
            f'"bid_size":"1","ask":"{ask}","ask_size":"1","ts_event_us":{t_us},"ts_recv_us":{t_us + 1000},'
            f'"seq":{seq_text}}}')


def trade(t_us: int, price: str, size: str, trade_id: str, seq: int) -> str:
    return (f'{{"v":1,"type":"trade","exchange":"binance","symbol":"BTC/USDT","venue_symbol":"BTCUSDT",'
            f'"price":"{price}","size":"{size}","side":"buy","trade_id":"{trade_id}","ts_event_us":{t_us},'
            f'"ts_recv_us":{t_us + 1000},"seq":{seq}}}')


def events(spark, rows: list[tuple[str, str]]):
    from streaming import transforms

    records = spark.createDataFrame(
        [(None, value, topic, 0, offset, KAFKA_TS) for offset, (topic, value) in enumerate(rows)],
        "key string, value string, topic string, partition int, offset long, kafka_ts timestamp")
    return transforms.parse_events(records, {"coinbase": ["BTC/USD"], "binance": ["BTC/USDT"]},
                                   max_future_ms=5_000, max_age_ms=86_400_000)


def mids_of(parsed):
    from streaming import transforms
    from streaming.analytics import quote_mids

    return quote_mids(transforms.silver_quotes(parsed))


def test_the_mids_of_silver_quotes_round_half_up_and_skip_crossed_and_bad_quotes(spark):
    frame = mids_of(events(spark, [
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0, "100.000000000001", "100.000000000002", None)),
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0 + 1, "101", "100", None)),  # crossed: in silver, no mid
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0 + 2, "-1", "100", None)),  # rejected by the parse
        ("binance.quotes", quote("binance", "BTC/USDT", T0 + 3, "99", "100", 42)),
    ]))
    got = [tuple(r) for r in frame.select("exchange", "mid", "seq", "offset").collect()]
    assert got == [("coinbase", D("100.000000000002"), None, 0),  # .0000000000015 -> up
                   ("binance", D("99.500000000000"), 42, 3)]


def test_trade_levels_sum_each_price_of_each_minute_with_its_first_and_last_trade(spark):
    from streaming import transforms
    from streaming.analytics import trade_levels

    frame = trade_levels(transforms.silver_trades(events(spark, [
        ("binance.trades", trade(T0 + 1 * S, "100", "1", "a", 1)),
        ("binance.trades", trade(T0 + 2 * S, "100", "0.5", "b", 2)),
        ("binance.trades", trade(T0 + 3 * S, "101", "2", "c", 3)),
        ("binance.trades", trade(T0 + 60 * S, "99", "1", "d", 4)),  # the next minute
    ])), AnalyticsConfig())
    got = sorted(tuple(r) for r in frame.select("window_start_us", "price", "size", "trades", "first", "last")
                 .collect())
    assert [(w, p, z, n, tuple(f), tuple(last)) for w, p, z, n, f, last in got] == [
        (T0, D("100"), D("1.5"), 2, (T0 + 1 * S, 1, "a"), (T0 + 2 * S, 2, "b")),
        (T0, D("101"), D("2"), 1, (T0 + 3 * S, 3, "c"), (T0 + 3 * S, 3, "c")),
        (T0 + 60 * S, D("99"), D("1"), 1, (T0 + 60 * S, 4, "d"), (T0 + 60 * S, 4, "d")),
    ]


def test_mid_bars_and_crash_bars_order_equal_times_by_offset(spark):
    from streaming.analytics import crash_bars, mid_bars

    mids = mids_of(events(spark, [
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0 + 5, "100", "100", None)),
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0 + 5, "102", "102", None)),  # same time, later offset
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0 + 2 * S, "99", "99", None)),
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0 + 2 * S, "98", "98", None)),
    ]))
    bars = [tuple(r) for r in mid_bars(mids, 60).drop("exchange", "symbol").collect()]
    assert bars == [(T0, T0 + 60 * S, D("100"), D("102"), D("98"), D("98"), D("399"), 4)]
    crash = sorted(tuple(r) for r in crash_bars(mids, AnalyticsConfig()).drop("exchange", "symbol").collect())
    assert crash == [(T0, D("102"), D("100"), D("102")), (T0 + 2 * S, D("99"), D("98"), D("98"))]


def test_silver_tables_created_empty_then_appended_by_silver_stream_their_rows_into_the_mids(spark, tmp_path):
    from deltalake import DeltaTable

    from arb.settings import Settings
    from streaming import jobs, sinks, transforms
    from streaming.analytics import quote_mids
    from streaming.config import from_settings

    config = from_settings(Settings(data_dir=tmp_path / "data"), environ={})
    jobs.create_silver_tables(spark, config)
    tables = {name: DeltaTable(config.table(name)) for name in transforms.silver_tables()}
    assert {name: (t.version(), t.to_pyarrow_table().num_rows) for name, t in tables.items()} == \
        {name: (0, 0) for name in tables}
    jobs.create_silver_tables(spark, config)  # there already: nothing written
    assert [DeltaTable(config.table(name)).version() for name in tables] == [0, 0, 0, 0]

    # Act: silver's own sink appends a batch (delta-rs) to the tables it did not create; read them as a stream
    parsed = events(spark, [
        ("coinbase.quotes", quote("coinbase", "BTC/USD", T0, "100", "100.5", None)),
        ("binance.quotes", quote("binance", "BTC/USDT", T0 + 3, "99", "100", 42)),
    ])
    query_id = sinks.QueryId()
    query_id.set("silver-query")
    sinks.silver_sink(config, query_id)(transforms.dedupe_key(parsed), 0)
    stream = quote_mids(spark.readStream.format("delta").load(config.table("silver/quotes")))
    query = (stream.writeStream.format("memory").queryName("silver_mids").trigger(availableNow=True)
             .option("checkpointLocation", str(tmp_path / "checkpoint")).start())
    query.awaitTermination(120)

    # Assert: the streamed mids are those of the same rows as a static frame, typed alike
    got = spark.sql("select * from silver_mids order by offset")
    assert got.schema == mids_of(parsed).schema
    assert [tuple(r) for r in got.collect()] == [tuple(r) for r in mids_of(parsed).collect()]
    assert got.count() == 2
