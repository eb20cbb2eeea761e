"""The streaming transforms on 3-5-row frames, compared whole (one local Spark session for the module)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from arb.settings import REPO_ROOT
from arbitrage.rules import RulesConfig

T0 = 1_795_308_000_000_000  # 2026-11-22T00:40:00Z in µs
TS0 = datetime(2026, 11, 22, 0, 40, tzinfo=UTC)
D = Decimal


def ts(offset_us: int = 0) -> datetime:
    return datetime.fromtimestamp((T0 + offset_us) / 1e6, tz=UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def spark():
    from streaming.config import SparkConfig
    from streaming.session import create_session

    session = create_session(SparkConfig(master="local[1]", app_name="test-transforms", shuffle_partitions=1,
                                         jars_dir=str(REPO_ROOT / "data" / "jars" / "spark"), driver_memory="1g"))
    yield session
    session.stop()


def quote_json(exchange="coinbase", symbol="BTC/USD", bid="100.5", ask="100.6", seq=5, ts_event=T0, ts_recv=T0 + 1000):
    ts_event_text = "null" if ts_event is None else str(ts_event)
    return (f'{{"v":1,"type":"quote","exchange":"{exchange}","symbol":"{symbol}","venue_symbol":"X",'
            f'"bid":"{bid}","bid_size":"1","ask":"{ask}","ask_size":"2","ts_event_us":{ts_event_text},'
            f'"ts_recv_us":{ts_recv},"seq":{seq}}}')


def records(spark, rows):
    return spark.createDataFrame(
        [(None, value, topic, 0, offset, TS0.replace(tzinfo=None)) for offset, (topic, value) in enumerate(rows)],
        "key string, value string, topic string, partition int, offset long, kafka_ts timestamp",
    )


def parse(spark, rows):
    from streaming import transforms

    return transforms.parse_events(records(spark, rows), {"coinbase": ["BTC/USD"], "binance": ["BTC/USDT"]},
                                   max_future_ms=5_000, max_age_ms=86_400_000)


def test_parse_types_good_records_and_gives_each_bad_one_its_first_failing_reason(spark):
    frame = parse(spark, [
        ("coinbase.quotes", quote_json()),
        ("coinbase.quotes", "garbage"),
        ("coinbase.quotes", quote_json(bid="-1")),
        ("coinbase.quotes", quote_json(symbol="DOGE/USD")),
        ("binance.quotes", quote_json(exchange="binance", symbol="BTC/USDT", ts_event=None,
                                      ts_recv=T0 + 60_000_000)),
    ])
    got = [r.asDict() for r in frame.select("kind", "exchange", "bid", "event_ts", "seq", "reason").collect()]
    assert got == [
        {"kind": "quote", "exchange": "coinbase", "bid": D("100.500000000000"), "event_ts": ts(), "seq": 5,
         "reason": None},
        {"kind": None, "exchange": None, "bid": None, "event_ts": None, "seq": None,
         "reason": "not a JSON event object"},
        {"kind": "quote", "exchange": "coinbase", "bid": D("-1.000000000000"), "event_ts": ts(), "seq": 5,
         "reason": "non-positive price"},
        {"kind": "quote", "exchange": "coinbase", "bid": D("100.500000000000"), "event_ts": ts(), "seq": 5,
         "reason": "unknown symbol"},
        {"kind": "quote", "exchange": "binance", "bid": D("100.500000000000"), "event_ts": ts(60_000_000),
         "seq": 5, "reason": "receive time in the future"},
    ]


def test_silver_quotes_and_dead_letter_split_the_parsed_records(spark):
    from streaming import transforms

    frame = parse(spark, [
        ("coinbase.quotes", quote_json(bid="100.7", ask="100.6")),
        ("binance.quotes", quote_json()),  # a Coinbase quote on the Binance topic
        ("feed.status", '{"v":1,"type":"status","exchange":"binance","state":"gap","detail":"x","ts_recv_us":'
                        f'{T0}}}'),
    ])
    quotes = [r.asDict() for r in transforms.silver_quotes(frame).select(
        "exchange", "symbol", "bid", "ask", "is_crossed", "year", "month", "day", "hour", "date").collect()]
    assert quotes == [{"exchange": "coinbase", "symbol": "BTC/USD", "bid": D("100.700000000000"),
                       "ask": D("100.600000000000"), "is_crossed": True, "year": 2026, "month": 11, "day": 22,
                       "hour": 0, "date": date(2026, 11, 22)}]
    dead = [r.asDict() for r in transforms.dead_letter(frame).select("source", "offset", "reason").collect()]
    assert dead == [{"source": "binance.quotes", "offset": 1, "reason": "exchange does not match topic"}]
    status = [r.asDict() for r in transforms.silver_feed_status(frame).collect()]
    assert status == [{"exchange": "binance", "symbol": None, "state": "gap", "detail": "x", "ts_recv": ts(),
                       "date": date(2026, 11, 22)}]


def test_pair_ticks_route_quotes_to_their_pair_and_a_symbol_less_status_to_every_pair_of_its_exchange(spark):
    from streaming import hotpath
    from streaming import transforms

    rules = RulesConfig()
    frame = transforms.parse_events(records(spark, [
        ("coinbase.quotes", quote_json()),
        ("feed.status", f'{{"v":1,"type":"status","exchange":"coinbase","state":"gap","detail":"","ts_recv_us":{T0}}}'),
    ]), {"coinbase": ["BTC/USD"], "binance": []}, 5_000, 86_400_000)
    ticks = hotpath.pair_ticks(frame, hotpath.pair_map(spark, rules))
    got = sorted((r.pair, r.kind, r.exchange, r.symbol, r.t_us) for r in ticks.collect())
    assert got == [
        ("BTC/USD", "quote", "coinbase", "BTC/USD", T0),
        ("BTC/USD", "status", "coinbase", "BTC/USD", T0),
        ("ETH/BTC", "status", "coinbase", "ETH/BTC", T0),
        ("ETH/USD", "status", "coinbase", "ETH/USD", T0),
    ]


def test_windows_table_dates_an_open_by_its_start_and_a_close_by_its_end(spark):
    from streaming import hotpath

    rows = [
        {"kind": "window", "pair": "BTC/USD", "window_id": "BTC/USD|d|1", "direction": "d", "event": "OPEN",
         "start_ts_us": T0 - 1_000_000, "end_ts_us": None, "duration_ms": None, "peak_net_bps": D("12.5"),
         "mean_net_bps": D("12.5"), "size_at_peak": D("0.5"), "profit_at_peak": D("41"), "ticks": 1,
         "close_reason": None, "emitted_ts_us": T0},
        {"kind": "window", "pair": "BTC/USD", "window_id": "BTC/USD|d|1", "direction": "d", "event": "CLOSE",
         "start_ts_us": T0 - 86_400_000_000, "end_ts_us": T0, "duration_ms": 86_400_000, "peak_net_bps": D("13"),
         "mean_net_bps": D("12.75"), "size_at_peak": D("0.5"), "profit_at_peak": D("42"), "ticks": 2,
         "close_reason": "spread", "emitted_ts_us": T0},
    ]
    pdf = hotpath.output_frame(rows)
    out = spark.createDataFrame(pdf, schema=hotpath.OUTPUT_SCHEMA)
    got = [(r.event, r.start_ts, r.end_ts, r.peak_net_bps, r.date)
           for r in hotpath.windows_table(out).collect()]
    assert got == [
        ("OPEN", ts(-1_000_000), None, "12.5", date(2026, 11, 22)),
        ("CLOSE", ts(-86_400_000_000), ts(), "13", date(2026, 11, 22)),
    ]
