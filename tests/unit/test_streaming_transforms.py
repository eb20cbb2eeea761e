"""The streaming transforms on 3-5-row frames, compared whole (one local Spark session for the module)."""

from __future__ import annotations

import json
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


def utc(offset_us: int = 0) -> datetime:
    return datetime.fromtimestamp((T0 + offset_us) / 1e6, tz=UTC)


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
    ticks = hotpath.pair_ticks(frame, rules)
    got = sorted((r.pair, r.kind, r.exchange, r.symbol, r.t_us) for r in ticks.collect())
    assert got == [
        ("BTC/USD", "quote", "coinbase", "BTC/USD", T0),
        ("BTC/USD", "status", "coinbase", "BTC/USD", T0),
        ("ETH/BTC", "status", "coinbase", "ETH/BTC", T0),
        ("ETH/USD", "status", "coinbase", "ETH/USD", T0),
    ]


def test_windows_table_dates_an_open_by_its_start_and_a_close_by_its_end():
    import pyarrow as pa

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
    out = pa.Table.from_pandas(hotpath.output_frame(rows), preserve_index=False)
    got = [(r["event"], r["start_ts"], r["end_ts"], r["peak_net_bps"], r["date"])
           for r in hotpath.windows_arrow(out).to_pylist()]
    assert got == [
        ("OPEN", utc(-1_000_000), None, D("12.5"), date(2026, 11, 22)),
        ("CLOSE", utc(-86_400_000_000), utc(), D("13"), date(2026, 11, 22)),
    ]


def _processor_output():
    """One spread row and one OPEN event as the processor emits them (money as exact decimal strings), in Arrow."""
    import pyarrow as pa

    from streaming import hotpath

    rows = [
        {"kind": "spread", "pair": "BTC/USD", "event_ts_us": T0, "coinbase_bid": D("87000.123456789012"),
         "coinbase_bid_size": D("0.5"), "coinbase_ask": D("87000.2"), "coinbase_ask_size": D("1"),
         "binance_bid": D("87010.01"), "binance_bid_size": D("0.25"), "binance_ask": D("87010.02"),
         "binance_ask_size": D("2"), "coinbase_ts_us": T0 - 1_000, "binance_ts_us": T0, "coinbase_age_ms": 1,
         "binance_age_ms": 0, "coinbase_seq": 7, "binance_seq": None, "cb_bn_gross_bps": D("1.123456"),
         "cb_bn_net_bps": D("-18.876544"), "cb_bn_size": D("0.25"), "cb_bn_profit": D("-41.000000000001"),
         "bn_cb_gross_bps": D("-1.2"), "bn_cb_net_bps": D("-21.2"), "bn_cb_size": D("0.5"), "bn_cb_profit": D("-92")},
        {"kind": "window", "pair": "BTC/USD", "window_id": "w", "direction": "d", "event": "OPEN",
         "start_ts_us": T0, "ticks": 1, "emitted_ts_us": T0, "peak_net_bps": D("12.5")},
    ]
    return pa.Table.from_pandas(hotpath.output_frame(rows), preserve_index=False)


def test_spreads_and_windows_arrow_keep_the_lake_types_and_exact_money():
    """The hot path's tables are typed in Arrow (delta-rs appends them): the columns and types must stay those of
    docs/DATA_MODEL.md that Spark reads, and money must arrive digit for digit."""
    import pyarrow as pa

    from streaming import hotpath

    out = _processor_output()
    spreads, windows = hotpath.spreads_arrow(out), hotpath.windows_arrow(out)

    money, stamp = pa.decimal128(30, 12), pa.timestamp("us", tz="UTC")
    assert spreads.schema == pa.schema(
        [("pair", pa.string()), ("event_ts", stamp)]
        + [(f"{v}_{s}", money) for v in ("coinbase", "binance") for s in ("bid", "bid_size", "ask", "ask_size")]
        + [("coinbase_ts", stamp), ("binance_ts", stamp)]
        + [(c, pa.int64()) for c in ("coinbase_age_ms", "binance_age_ms", "coinbase_seq", "binance_seq")]
        + [(f"{d}{c}", money) for d in ("cb_bn_", "bn_cb_") for c in ("gross_bps", "net_bps", "size", "profit")]
        + [("date", pa.date32())])
    assert windows.schema == pa.schema(
        [("window_id", pa.string()), ("pair", pa.string()), ("direction", pa.string()), ("event", pa.string()),
         ("start_ts", stamp), ("end_ts", stamp), ("duration_ms", pa.int64())]
        + [(c, money) for c in ("peak_net_bps", "mean_net_bps", "size_at_peak", "profit_at_peak")]
        + [("ticks", pa.int64()), ("close_reason", pa.string()), ("emitted_ts", stamp), ("date", pa.date32())])
    row = spreads.to_pylist()[0]
    assert (row["coinbase_bid"], row["cb_bn_profit"], row["coinbase_ts"], row["binance_seq"], row["date"]) == (
        D("87000.123456789012"), D("-41.000000000001"), utc(-1_000), None, date(2026, 11, 22))
    assert windows.num_rows == 1 and spreads.num_rows == 1


def test_a_hadoop_lake_gets_through_spark_what_a_local_one_gets_through_delta_rs(spark, tmp_path):
    """The sink writes an s3a:// (any non-local) lake with Spark's Delta writer from the same Arrow tables."""
    from deltalake import DeltaTable

    from streaming import hotpath
    from streaming.sinks import append_arrow, write_delta

    spreads = hotpath.spreads_arrow(_processor_output())
    append_arrow(spreads, str(tmp_path / "rs"), "q/spreads", 0, ["date"])
    write_delta(spark.createDataFrame(spreads), str(tmp_path / "spark"), "q/spreads", 0)

    by_rs, by_spark = (DeltaTable(str(tmp_path / name)).to_pyarrow_table() for name in ("rs", "spark"))
    assert by_spark.select(by_rs.column_names).to_pylist() == by_rs.to_pylist()
    assert by_spark.schema.field("cb_bn_profit").type == by_rs.schema.field("cb_bn_profit").type


def test_a_kept_delta_table_sees_other_writers_commits_and_a_table_re_created_under_it(tmp_path):
    """append_arrow keeps tables open between batches: still once per (app, version) when another process commits
    in between, and a table deleted and re-created at the same path is written, not skipped as already done."""
    import shutil

    import pyarrow as pa
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

    from streaming.sinks import append_arrow

    path = str(tmp_path / "t")

    def rows(*values):
        return pa.table({"x": pa.array(values, pa.int64()), "date": pa.array([date(2026, 12, 2)] * len(values))})

    assert append_arrow(rows(1), path, "q/t", 0, ["date"])
    assert not append_arrow(rows(1), path, "q/t", 0, ["date"])  # a replayed batch
    write_deltalake(path, rows(2), partition_by=["date"], mode="append",  # another process commits batch 1
                    commit_properties=CommitProperties(app_transactions=[Transaction("q/t", 1)]))
    assert not append_arrow(rows(2), path, "q/t", 1, ["date"])
    assert append_arrow(rows(3), path, "q/t", 2, ["date"])
    assert sorted(DeltaTable(path).to_pyarrow_table()["x"].to_pylist()) == [1, 2, 3]

    shutil.rmtree(path)
    for version, value in enumerate((7, 8, 9)):  # the same path again, up to and past the kept table's version
        assert append_arrow(rows(value), path, "q/t", version, ["date"])
    assert sorted(DeltaTable(path).to_pyarrow_table()["x"].to_pylist()) == [7, 8, 9]


def test_a_kept_delta_table_is_opened_afresh_every_reopen_commits_commits(tmp_path):
    """A delta-rs table updated commit by commit appends ever more slowly, so OpenTables reopens it from the log
    every `reopen_commits` commits, in between handing back the same updated object."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from streaming.sinks import OpenTables

    path = str(tmp_path / "t")
    tables = OpenTables(reopen_commits=3)
    write_deltalake(path, pa.table({"x": [0]}))
    seen = []
    for value in range(1, 11):
        delta = tables.open(path)
        seen.append(delta)
        write_deltalake(delta, pa.table({"x": [value]}), mode="append")
        tables.keep(path, delta)

    fresh = [i for i in range(1, len(seen)) if seen[i] is not seen[i - 1]]
    assert fresh == [4, 8]  # kept at version 1 (its first write), reused up to version 3, afresh at 4; kept at 5...
    assert seen[-1].version() == 10 and sorted(DeltaTable(path).to_pyarrow_table()["x"].to_pylist()) == list(range(11))


def _silver_events(spark):
    return parse(spark, [
        ("coinbase.quotes", quote_json(bid="100.7", ask="100.6")),
        ("binance.quotes", quote_json()),  # a Coinbase quote on the Binance topic: dead letter
        ("coinbase.trades", '{"v":1,"type":"trade","exchange":"coinbase","symbol":"BTC/USD","venue_symbol":"X",'
                            f'"price":"100.5","size":"0.1","side":"buy","trade_id":"7","ts_recv_us":{T0}}}'),
        ("feed.status", '{"v":1,"type":"status","exchange":"binance","state":"gap","detail":"x","ts_recv_us":'
                        f'{T0}}}'),
        ("coinbase.quotes", quote_json(seq=6)),
    ])


def test_split_arrow_collects_each_table_as_its_own_frame_would_in_one_job(spark):
    """One collect for the four silver tables equals four `toArrow()`s: rows, order, types and nullability."""
    from streaming import sinks, transforms

    frame = _silver_events(spark)
    tables = transforms.silver_tables()
    splitter = sinks.ArrowSplit(tables)
    before = datetime.now(UTC)
    split = splitter.collect(frame)
    assert list(split) == list(tables)
    for name, rows in tables.items():
        alone = rows.of(frame).toArrow()
        assert split[name].schema == alone.schema, name
        got, want = split[name].to_pylist(), alone.to_pylist()
        if name == "silver/dead_letter":  # ingest_ts is the clock of each collect (the driver's in the split)
            assert all(before <= r["ingest_ts"] <= datetime.now(UTC) for r in got)
            got, want = ([{k: v for k, v in r.items() if k != "ingest_ts"} for r in t] for t in (got, want))
        assert got == want, name
    assert [split[name].num_rows for name in tables] == [2, 1, 1, 1]
    # The same splitter (its columns and schemas kept) on the next micro-batch: the same tables.
    again = splitter.collect(frame)
    assert {name: t.drop_columns(["ingest_ts"]) if name == "silver/dead_letter" else t for name, t in again.items()} \
        == {name: t.drop_columns(["ingest_ts"]) if name == "silver/dead_letter" else t for name, t in split.items()}


def test_bronze_keeps_each_record_as_it_arrived_in_its_exchange_s_table_stamped_at_the_write(spark):
    from streaming import sinks, transforms

    frame = transforms.bronze(records(spark, [
        ("coinbase.quotes", "not json at all"),
        ("binance.trades", '{"e":"trade"}'),
        ("feed.status", "{}"),
        ("coinbase.trades", ""),
    ]))
    tables = transforms.bronze_tables({"bronze/coinbase": ["coinbase.quotes", "coinbase.trades"],
                                       "bronze/binance": ["binance.quotes", "binance.trades"],
                                       "bronze/feed_status": ["feed.status"]})
    before = datetime.now(UTC)
    split = sinks.ArrowSplit(tables).collect(frame)
    after = datetime.now(UTC)
    got = {name: table.to_pylist() for name, table in split.items()}
    for rows in got.values():
        for row in rows:
            assert before <= row.pop("ingest_ts") <= after

    def record(value, topic, offset):
        return {"key": None, "value": value, "topic": topic, "partition": 0, "offset": offset, "kafka_ts": TS0,
                "date": date(2026, 11, 22)}

    assert got == {
        "bronze/coinbase": [record("not json at all", "coinbase.quotes", 0), record("", "coinbase.trades", 3)],
        "bronze/binance": [record('{"e":"trade"}', "binance.trades", 1)],
        "bronze/feed_status": [record("{}", "feed.status", 2)],
    }
    assert split["bronze/binance"].column_names == list(transforms.BRONZE_COLUMNS)


def test_the_lake_sink_commits_each_table_once_per_batch_and_skips_a_replay(spark, tmp_path):
    from deltalake import DeltaTable

    from arb.settings import Topics
    from streaming import sinks, transforms
    from streaming.config import StreamingConfig

    config = StreamingConfig(lake=str(tmp_path / "lake"), checkpoints=str(tmp_path / "cp"),
                             alert_log=str(tmp_path / "alerts.jsonl"), metrics_dir=str(tmp_path / "m"),
                             kafka_options={}, topics=Topics(), rules=RulesConfig())
    query_id = sinks.QueryId()
    query_id.set("q")
    sink = sinks.silver_sink(config, query_id)
    frame = _silver_events(spark)
    sink(frame, 0)
    sink(frame, 0)  # a replay after a crash: skipped
    sink(frame.where("offset < 1"), 1)  # a batch with quotes only: the other tables get no empty commit
    counts = {name: DeltaTable(config.table(name)).to_pyarrow_table().num_rows for name in transforms.silver_tables()}
    assert counts == {"silver/quotes": 3, "silver/trades": 1, "silver/feed_status": 1, "silver/dead_letter": 1}
    assert DeltaTable(config.table("silver/quotes")).transaction_version("q/silver/quotes") == 1
    assert DeltaTable(config.table("silver/trades")).transaction_version("q/silver/trades") == 0


def test_progress_listeners_get_each_query_s_progress_as_spark_s_json_and_metrics_land_in_a_file(spark, tmp_path):
    import time as clock

    from streaming.metrics import MetricsListener, ProgressListener, add_listener

    class Recorder(ProgressListener):
        def __init__(self):
            self.seen = []

        def on_progress(self, progress):
            self.seen.append(progress)

    recorder, metrics = Recorder(), MetricsListener(str(tmp_path / "metrics"))
    add_listener(spark, recorder)
    add_listener(spark, metrics)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_text('{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    query = (spark.readStream.schema("x long").json(str(tmp_path / "in")).writeStream.queryName("listened")
             .format("noop").option("checkpointLocation", str(tmp_path / "cp")).trigger(availableNow=True).start())
    query.awaitTermination()
    metrics_file = tmp_path / "metrics" / "stream-listened.json"
    deadline = clock.monotonic() + 30
    while clock.monotonic() < deadline and not (any(p["numInputRows"] == 3 for p in recorder.seen)
                                                and metrics_file.exists()):
        clock.sleep(0.1)  # the listener bus delivers asynchronously, to one listener after the other

    progress = next(p for p in recorder.seen if p["numInputRows"] == 3)
    assert progress["name"] == "listened" and progress["id"] == str(query.id) and "triggerExecution" in \
        progress["durationMs"]
    doc = json.loads(metrics_file.read_text())
    assert doc["job"] == "listened" and doc["batch_id"] >= 0
