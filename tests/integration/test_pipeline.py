"""The streaming lakehouse end to end: wire-form events in a real Kafka broker -> real Spark (silver + hot path) ->
real Delta tables, alert log and alerts topic; checked against the injected truth and the Polars oracle.

One synthetic scenario (streaming.synthetic) carries every case: two injected BTC/USD windows (one per direction),
an ETH/USD Binance silence while Coinbase moves +1.5% (a stale decoy), an ETH/BTC window cut by a Binance feed gap,
and two malformed records. It is run once per module with --available-now semantics (about 2 minutes on 2 cores);
the crash test runs `arb stream all` as a child process and SIGKILLs it mid-run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import polars as pl
import pytest

from arbitrage import oracle
from arbitrage.rules import RulesConfig
from tests.conftest import arb_env, consume_all, make_data_dir

pytestmark = pytest.mark.integration

SECOND = 1_000_000
BPS_TOLERANCE = Decimal("0.0001")


def read_delta(path: str) -> pl.DataFrame:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return pl.from_arrow(DeltaTable(path).to_pyarrow_table())  # type: ignore[return-value]
    except TableNotFoundError:
        return pl.DataFrame()


def us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000) if ts.tzinfo else int(ts.replace(tzinfo=UTC).timestamp() * 1_000_000)


def make_scenario(rules: RulesConfig, start_us: int, quotes_per_s: float = 120):
    from streaming.synthetic import Injected, Scenario, Silence

    t0 = start_us
    return Scenario(
        rules, t0, duration_s=16, quotes_per_s=quotes_per_s,
        windows=[
            Injected("BTC/USD", "buy_coinbase_sell_binance", t0 + 2 * SECOND, t0 + 5 * SECOND),
            Injected("BTC/USD", "buy_binance_sell_coinbase", t0 + 8 * SECOND, t0 + 10 * SECOND),
            Injected("ETH/BTC", "buy_coinbase_sell_binance", t0 + 4 * SECOND, t0 + 12 * SECOND,
                     gap_at_us=t0 + 7 * SECOND),
        ],
        silences=[Silence("ETH/USD", "binance", t0 + 3 * SECOND, t0 + 11 * SECOND)],
        malformed=[(t0 + 1 * SECOND, "coinbase", "not json at all"),
                   (t0 + 1 * SECOND + 7, "binance",
                    '{"v": 1, "type": "quote", "exchange": "binance", "symbol": "BTC/USDT", "venue_symbol": "BTCUSDT",'
                    ' "bid": "-5", "bid_size": "1", "ask": "1", "ask_size": "1", "ts_event_us": null,'
                    f' "ts_recv_us": {t0 + SECOND}, "seq": 1}}')],
    )


@dataclasses.dataclass
class Run:
    settings: object
    config: object
    scenario: object
    records: list
    truth: list[dict]
    operators: list[str]  # the hot-path query's stateful operators

    def table(self, name: str) -> pl.DataFrame:
        return read_delta(self.config.table(name))


@pytest.fixture(scope="module", params=["asof", "join"])
def synthetic_run(request, spark, kafka_broker, tmp_path_factory) -> Run:
    """The scenario through silver and the hot path, once per alignment (streaming/hotpath.py, quotejoin.py)."""
    from streaming import jobs, synthetic
    from streaming.config import from_settings

    settings = kafka_broker.with_topics(f"p{os.getpid()}{int(time.time()) % 100000}.")
    settings = dataclasses.replace(settings, data_dir=make_data_dir(tmp_path_factory.mktemp("pipeline") / "data"))
    # The join run also gives the hot path a partition count of its own (ARB_HOTPATH_PARTITIONS).
    config = from_settings(settings, environ={"ARB_HOTPATH_PARTITIONS": "1"} if request.param == "join" else {},
                           alignment=request.param)
    scenario = make_scenario(config.rules, start_us=(time.time_ns() // 1000) - 30 * SECOND)
    records = scenario.records()
    synthetic.publish(records, settings.kafka.client_config(), settings.kafka.topics)
    for job in ("silver", "hotpath"):
        kwargs = {"kafka_client": settings.kafka.client_config()} if job == "hotpath" else {}
        query = jobs.start(spark, config, job, available_now=True, **kwargs)
        query.awaitTermination(timeout=600)
        assert query.exception() is None, query.exception()
    operators = sorted({op["operatorName"] for p in query.recentProgress for op in p["stateOperators"]})
    return Run(settings, config, scenario, records, scenario.truth(records), operators)


def test_the_hot_path_aligns_with_the_configured_operator(synthetic_run):
    joins = [name for name in synthetic_run.operators if "Join" in name]
    assert "transformWithStateInPandasExec" in synthetic_run.operators
    assert joins == (["symmetricHashJoin"] if synthetic_run.config.alignment == "join" else []), synthetic_run.operators


def test_the_hot_path_runs_its_configured_partition_count_and_silver_half_the_local_cores(synthetic_run):
    """Pinned in each checkpoint's first offsets entry (the conf Spark resumes with). Silver, beside the hot path,
    takes half the cores of a local master (streaming.jobs.shuffle_partitions)."""
    from streaming.session import local_cores

    def partitions(job: str) -> str:
        lines = Path(synthetic_run.config.checkpoint(job), "offsets", "0").read_text().splitlines()
        return orjson.loads(lines[1])["conf"]["spark.sql.shuffle.partitions"]

    session = str(local_cores(synthetic_run.config.spark.master))
    assert partitions("hotpath") == str(synthetic_run.config.hotpath.shuffle_partitions or session)
    assert partitions("silver") == str(max(1, int(session) // 2))


def gold_closes(gold: pl.DataFrame) -> pl.DataFrame:
    return gold.filter(pl.col("event") == "CLOSE").sort("pair", "direction", "start_ts")


def test_every_injected_window_is_found_once_within_the_staleness_bound_and_nothing_else(synthetic_run):
    gold = synthetic_run.table("gold/arb_windows")
    closes = gold_closes(gold)
    staleness_us = synthetic_run.config.rules.staleness_us
    found = [(r["pair"], r["direction"], us(r["start_ts"]), us(r["end_ts"]), r["close_reason"])
             for r in closes.iter_rows(named=True)]
    expected = sorted((t["pair"], t["direction"], t["start_us"], t["end_us"], t["close_reason"])
                      for t in synthetic_run.truth)
    assert len(found) == len(expected), found
    for got, want in zip(sorted(found), expected):
        assert got[:2] == want[:2] and got[4] == want[4], (got, want)
        assert abs(got[2] - want[2]) <= staleness_us and abs(got[3] - want[3]) <= staleness_us, (got, want)
    opens = gold.filter(pl.col("event") == "OPEN")
    assert sorted(opens["window_id"].to_list()) == sorted(closes["window_id"].to_list())


def test_gold_and_spreads_equal_the_polars_oracle_on_the_silver_quotes(synthetic_run):
    quotes = synthetic_run.table("silver/quotes")
    status = synthetic_run.table("silver/feed_status")
    rules = synthetic_run.config.rules
    want_spreads = oracle.spreads(quotes, status, rules)
    want = oracle.windows(want_spreads, quotes, status, rules)
    got = gold_closes(synthetic_run.table("gold/arb_windows"))
    exact = ["window_id", "pair", "direction", "event", "start_ts", "end_ts", "duration_ms", "size_at_peak",
             "profit_at_peak", "ticks", "close_reason", "date"]
    assert got.select(exact).to_dicts() == want.select(exact).to_dicts()
    for column in ("peak_net_bps", "mean_net_bps"):
        for a, b in zip(got[column].to_list(), want[column].to_list()):
            assert abs(a - b) <= BPS_TOLERANCE, (column, a, b)

    spreads = synthetic_run.table("silver/spreads").sort("pair", "event_ts", "coinbase_seq", "binance_seq")
    want_spreads = want_spreads.sort("pair", "event_ts", "coinbase_seq", "binance_seq")
    assert spreads.select(want_spreads.columns).to_dicts() == want_spreads.to_dicts()


def test_a_stale_feed_while_the_other_venue_moves_gives_no_window(synthetic_run):
    gold = synthetic_run.table("gold/arb_windows")
    assert gold.filter(pl.col("pair") == "ETH/USD").height == 0
    # The decoy is real: Coinbase's ETH/USD mid moved 1.5% while Binance was silent (so the silence mattered).
    quotes = synthetic_run.table("silver/quotes").filter(pl.col("symbol") == "ETH/USD")
    assert quotes["bid"].max() / quotes["bid"].min() > Decimal("1.014")


def test_a_feed_gap_closes_the_open_window_at_the_gap(synthetic_run):
    closes = gold_closes(synthetic_run.table("gold/arb_windows")).filter(pl.col("pair") == "ETH/BTC")
    gap_us = synthetic_run.scenario.windows[2].gap_at_us
    assert closes.height == 1
    assert closes["close_reason"][0] == "feed_gap"
    assert us(closes["end_ts"][0]) == gap_us


def test_malformed_records_land_in_dead_letter_with_reasons_and_every_good_quote_reaches_silver(synthetic_run):
    dead = synthetic_run.table("silver/dead_letter").sort("raw")
    assert dead.select("raw", "reason").to_dicts() == [
        {"raw": "not json at all", "reason": "not a JSON event object"},
        {"raw": next(r for r in synthetic_run.scenario.malformed if r[1] == "binance")[2],
         "reason": "non-positive price"},
    ]
    quotes = synthetic_run.table("silver/quotes")
    published = sum(1 for r in synthetic_run.records if r.topic_kind.startswith("quotes:"))
    assert quotes.height == published
    assert quotes.select("exchange", "seq").n_unique() == published


def test_each_open_and_close_is_in_the_alert_log_and_on_the_alerts_topic_once(synthetic_run):
    lines = [orjson.loads(line) for line in Path(synthetic_run.config.alert_log).read_text().splitlines()]
    gold = synthetic_run.table("gold/arb_windows")
    keys = sorted((line["window_id"], line["event"]) for line in lines)
    assert keys == sorted(zip(gold["window_id"].to_list(), gold["event"].to_list()))
    topic = consume_all(synthetic_run.settings, synthetic_run.settings.kafka.topics.alerts, min_count=len(lines))
    assert sorted((orjson.loads(r.value)["window_id"], orjson.loads(r.value)["event"]) for r in topic) == keys


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1.0)


def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing_in_silver_spreads_and_gold(kafka_broker, tmp_path):
    from deltalake import DeltaTable

    from streaming import synthetic
    from streaming.config import from_settings

    # Arrange: a child `arb stream all` (compacting its tables every second), the first half of a scenario published
    # while it starts. The child's JVM outlives the SIGKILL by ~0.5 s and may plan one more hot-path batch over part
    # of the second half, which the restart replays: venues visible seconds of event time apart in one batch (what
    # hotpath.PairState.final_us waits for; a "stale" close here was that, before be89536).
    settings = kafka_broker.with_topics(f"k{os.getpid()}{int(time.time()) % 100000}.")
    settings = dataclasses.replace(settings, data_dir=make_data_dir(tmp_path / "data"))
    config = from_settings(settings, environ={})
    env = {**arb_env(settings), "ARB_SPARK_MASTER": "local[2]", "ARB_COMPACT_EVERY_S": "1"}
    scenario = make_scenario(config.rules, start_us=(time.time_ns() // 1000) - 40 * SECOND, quotes_per_s=80)
    records = scenario.records()
    half = len(records) // 2
    log = (tmp_path / "stream.log").open("w")
    child = subprocess.Popen([str(Path(os.sys.executable).parent / "arb"), "stream", "all"], env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        synthetic.publish(records[:half], settings.kafka.client_config(), settings.kafka.topics)
        wait_for(lambda: read_delta(config.table("silver/quotes")).height > 0
                 and read_delta(config.table("silver/spreads")).height > 0, 300, "the first batches")
        # Act: SIGKILL mid-run, publish the rest, restart and catch up.
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    synthetic.publish(records[half:], settings.kafka.client_config(), settings.kafka.topics)
    rerun = subprocess.run([str(Path(os.sys.executable).parent / "arb"), "stream", "all", "--available-now"],
                           env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    assert rerun.returncode == 0, (tmp_path / "stream.log").read_text()[-5000:]

    # Assert: silver and bronze hold each Kafka record once; gold holds each window event once, as injected.
    topics = settings.kafka.topics
    kafka_quotes = [r for ex in ("coinbase", "binance") for r in consume_all(settings, topics.quotes(ex))]
    quotes = read_delta(config.table("silver/quotes"))
    good = [orjson.loads(r.value) for r in kafka_quotes if r.key != "bad"]
    assert sorted(zip(quotes["exchange"], quotes["seq"])) == sorted((q["exchange"], q["seq"]) for q in good)
    bronze = pl.concat([read_delta(config.table("bronze/coinbase")), read_delta(config.table("bronze/binance"))])
    assert sorted(zip(bronze["topic"], bronze["partition"], bronze["offset"])) == sorted(
        (r.topic, r.partition, r.offset) for r in kafka_quotes)
    # The hot path's spreads reach Delta through a spool after each batch: a kill in between is replayed, once.
    spreads = read_delta(config.table("silver/spreads"))
    key = ["pair", "event_ts", "coinbase_seq", "binance_seq"]
    assert spreads.select(key).n_unique() == spreads.height
    want_spreads = oracle.spreads(quotes, read_delta(config.table("silver/feed_status")), config.rules)
    assert sorted(spreads.select(key).rows()) == sorted(want_spreads.select(key).rows())
    gold = read_delta(config.table("gold/arb_windows"))
    assert gold.select("window_id", "event").n_unique() == gold.height
    closes = gold_closes(gold)
    assert sorted(zip(closes["pair"], closes["direction"], closes["close_reason"])) == sorted(
        (t["pair"], t["direction"], t["close_reason"]) for t in scenario.truth(records))
    lines = [orjson.loads(x) for x in Path(config.alert_log).read_text().splitlines()]
    assert len({(x["window_id"], x["event"]) for x in lines}) == len(lines) == gold.height
    # The mid bars read silver/quotes: the available-now run read it to its end (it starts the analytics once its
    # silver has ended; here silver usually ends before they start anyway, so this does not single that out).
    offsets = Path(config.checkpoint("analytics_mid")) / "offsets"
    last = max((f for f in offsets.iterdir() if f.name.isdigit()), key=lambda f: int(f.name))
    read = orjson.loads(last.read_text().splitlines()[-1])
    assert read["reservoirVersion"] > DeltaTable(config.table("silver/quotes")).version()


def test_the_emulators_windows_scenario_through_the_producers_gives_each_injected_window_and_the_oracles_gold(
        spark, kafka_broker, tmp_path):
    """data/scenarios/windows.json at 2x speed: emulator -> producers -> Kafka -> silver + hot path -> gold."""
    import json

    from producers.cli import default_symbols
    from producers.emulator.emulator import BackgroundEmulator, EmulatorConfig
    from producers.emulator.scenario import SCENARIO_DIR, parse_scenario
    from producers.service import BackgroundProducer, ProducerSpec
    from streaming import jobs
    from streaming.config import from_settings

    # Arrange
    settings = kafka_broker.with_topics(f"e{os.getpid()}{int(time.time()) % 100000}.")
    settings = dataclasses.replace(settings, data_dir=make_data_dir(tmp_path / "data"))
    config = from_settings(settings, environ={})
    scenario = parse_scenario(json.loads((SCENARIO_DIR / "windows.json").read_text()))
    speed = 2.0
    emulator = BackgroundEmulator(EmulatorConfig(coinbase_port=0, binance_port=0, scenario=scenario, speed=speed,
                                                 truth_path=tmp_path / "truth.json")).start()
    producers = []
    try:
        for exchange in ("coinbase", "binance"):
            url = emulator.coinbase_url if exchange == "coinbase" else emulator.binance_url
            spec = ProducerSpec(exchange=exchange, symbols=default_symbols(exchange), url=url, write_metrics=False)
            producers.append(BackgroundProducer(spec, settings).start())
        # Act: the whole scenario, then the jobs catch up on what Kafka holds.
        assert emulator.wait_finished(scenario.duration_s / speed + 30)
        truth = emulator.ground_truth()
    finally:
        for producer in producers:
            producer.stop()
        emulator.stop()
    for job in ("silver", "hotpath"):
        kwargs = {"kafka_client": settings.kafka.client_config()} if job == "hotpath" else {}
        query = jobs.start(spark, config, job, available_now=True, **kwargs)
        query.awaitTermination(timeout=600)
        assert query.exception() is None, query.exception()

    # Assert: each injected window opens in gold within S (+ the venues' lag) of the truth, and nothing else opens,
    # except that a feed gap inside a window closes it (feed_gap) and the window reopens after the resync.
    gold = read_delta(config.table("gold/arb_windows"))
    opens = gold.filter(pl.col("event") == "OPEN").sort("start_ts")
    slack_us = config.rules.staleness_us + 300_000
    gaps = [f for f in truth["faults"] if f["kind"] == "skip_sequence"]
    unmatched = []
    for row in opens.iter_rows(named=True):
        start = us(row["start_ts"])
        hit = [w for w in truth["windows"] if w["pair"] == row["pair"] and w["direction"] == row["direction"]
               and w["start_us"] - slack_us <= start <= (w["end_us"] or start) + slack_us]
        if not hit:
            unmatched.append(row["window_id"])
    assert unmatched == []
    for window in truth["windows"]:
        mine = opens.filter((pl.col("pair") == window["pair"]) & (pl.col("direction") == window["direction"]))
        assert any(abs(us(t) - window["start_us"]) <= slack_us for t in mine["start_ts"]), window["id"]
    assert opens.height <= len(truth["windows"]) + len(gaps)

    # ... and gold equals the Polars oracle run on the silver quotes and feed status read back from Delta.
    quotes = read_delta(config.table("silver/quotes"))
    status = read_delta(config.table("silver/feed_status"))
    want = oracle.windows(oracle.spreads(quotes, status, config.rules), quotes, status, config.rules)
    got = gold_closes(gold)
    exact = ["window_id", "start_ts", "end_ts", "ticks", "close_reason", "size_at_peak", "profit_at_peak"]
    assert got.select(exact).to_dicts() == want.filter(pl.col("end_ts") <= got["end_ts"].max()).select(
        exact).to_dicts()
