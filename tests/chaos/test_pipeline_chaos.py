"""Faults injected into real end-to-end runs: exchange emulator -> producers -> Kafka -> Spark -> Delta -> alerts.

Each case runs a short synthetic market with injected arbitrage windows through the real chain, injects one kind of
fault, lets everything recover, and then checks the run end to end:
  - exactly once into Kafka: per symbol, the quotes and trades in Kafka are the ones the emulator wrote (its counts);
  - no trade lost silently: every trade id the emulator wrote that is not in silver lies in a `gap` a producer
    reported (trades in flight on a cut connection are lost, as with a real exchange, but never unannounced);
  - exactly once into silver: silver holds each Kafka quote and trade record once (topic, partition, offset);
  - gold: each window the emulator injected is found once, no other window appears, each OPEN has its CLOSE, and
    the alert log holds each window event once.
Recovery times (fault -> producer connected and publishing again, broker back, job caught up) are reported as figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import pytest

from producers.cli import default_symbols
from producers.emulator.emulator import BackgroundEmulator, EmulatorConfig
from producers.emulator.scenario import parse_scenario
from producers.service import BackgroundProducer, ProducerSpec
from tests.conftest import arb_env, consume_all, make_data_dir

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(1800)]  # Spark on 2 busy cores

EXCHANGES = ("coinbase", "binance")
ARB = str(Path(sys.executable).with_name("arb"))
SECOND = 1_000_000
# A window's start and end in gold may differ from the emulator's (observed on the wire) by the staleness bound plus
# the venues' lag and a tick.
TOLERANCE_US = 1_500_000


def scenario(duration_s: float = 30, silence: dict | None = None, move: dict | None = None):
    """Two injected windows (BTC/USD, ETH/USD); optionally a scheduled fault and a price move."""
    data = {
        "name": "chaos", "seed": 5, "duration_s": duration_s,
        "venues": {
            "coinbase": {"quotes_per_s": 8, "trades_per_s": 1, "noise_bps": 1.0, "lag_s": 0.2, "half_spread_bps": 1.0,
                         "max_deviation_bps": 10},
            "binance": {"quotes_per_s": 12, "trades_per_s": 2, "noise_bps": 0.8, "lag_s": 0.1,
                        "half_spread_bps": 0.5, "max_deviation_bps": 8},
        },
        "windows": [
            {"id": "w1", "pair": "BTC/USD", "direction": "buy_coinbase_sell_binance", "start_s": 5, "duration_s": 4,
             "gross_bps": "100", "size": "0.4"},
            {"id": "w2", "pair": "ETH/USD", "direction": "buy_binance_sell_coinbase", "start_s": 15,
             "duration_s": 4, "gross_bps": "120", "size": "3"},
        ],
        "faults": [silence] if silence else [],
        "moves": [move] if move else [],
    }
    return parse_scenario(data, default_name="chaos")


@dataclasses.dataclass
class Run:
    settings: object
    emulator: BackgroundEmulator
    producers: dict[str, BackgroundProducer]
    tmp_path: Path
    sent: dict | None = None
    written_trade_ids: dict | None = None  # exchange -> venue symbol -> [[first, last], ...] written to the wire
    truth: dict | None = None

    def wait(self, condition, timeout_s: float, what: str) -> float:
        """Block until `condition()`; returns the seconds it took."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)
        return time.monotonic() - started

    def finish(self, timeout_s: float = 120) -> None:
        """Wait for the scenario's end, then for every written frame to be read and acknowledged by Kafka."""
        assert self.emulator.wait_finished(timeout_s), "the scenario did not finish"
        for exchange in EXCHANGES:
            self.emulator.silence(exchange, 600)
        time.sleep(0.5)
        frames = self.emulator.counts()["frames"]
        for exchange, producer in self.producers.items():
            self.wait(lambda: producer.metrics.frames >= frames[exchange], 60, f"{exchange} to read every frame")
            self.wait(lambda: producer.producer.sink.pending() == 0, 120, f"{exchange} acks")
        self.truth = self.emulator.ground_truth()


def start_run(settings, tmp_path: Path, market, silence_timeout_s: float = 60.0) -> Run:
    config = EmulatorConfig(coinbase_port=0, binance_port=0, scenario=market, heartbeat_interval_s=1.0,
                            truth_path=tmp_path / "truth.json")
    emulator = BackgroundEmulator(config).start()
    producers = {}
    for exchange in EXCHANGES:
        url = emulator.coinbase_url if exchange == "coinbase" else emulator.binance_url
        spec = ProducerSpec(exchange=exchange, symbols=default_symbols(exchange), url=url, backoff_initial_s=0.2,
                            silence_timeout_s=silence_timeout_s)
        producers[exchange] = BackgroundProducer(spec, settings).start()
    return Run(settings, emulator, producers, tmp_path)


def stop_run(run: Run) -> dict[str, int]:
    """Stop the producers (flushing Kafka), then count what the emulator wrote to them, then stop it."""
    undelivered = {ex: p.stop(timeout_s=60) for ex, p in run.producers.items()}
    counts = run.emulator.counts()
    run.sent = {ex: {s: Counter(c) for s, c in counts["events"][ex].items()} for ex in EXCHANGES}
    run.written_trade_ids = counts["trade_ids"]
    run.emulator.stop()
    return undelivered


def kafka_events(settings, exchange: str) -> tuple[dict[str, Counter], list]:
    """Per venue symbol, Counter(quotes, trades) in Kafka, and the records."""
    topics = settings.kafka.topics
    records = [r for t in (topics.quotes(exchange), topics.trades(exchange)) for r in consume_all(settings, t)]
    counts: dict[str, Counter] = {}
    for record in records:
        event = orjson.loads(record.value)
        counts.setdefault(event["venue_symbol"], Counter())[event["type"] + "s"] += 1
    return counts, records


def read_delta(path: str) -> pl.DataFrame:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return pl.from_arrow(DeltaTable(path).to_pyarrow_table())  # type: ignore[return-value]
    except TableNotFoundError:
        return pl.DataFrame()


def catch_up(spark, settings) -> object:
    """silver and the hot path over what Kafka holds (available-now), in the test's Spark session."""
    from streaming import jobs
    from streaming.config import from_settings

    config = from_settings(settings, environ={})
    for job in ("silver", "hotpath"):
        query = jobs.start(spark, config, job, available_now=True)
        query.awaitTermination(timeout=900)
        assert query.exception() is None, query.exception()
    return config


def check_end_to_end(run: Run, config, figures: dict) -> None:
    """Exactly once producer -> Kafka -> silver, Kafka against the emulator's counts, and in gold the emulator's
    windows and nothing else."""
    kafka_keys = set()
    for exchange in EXCHANGES:
        counts, records = kafka_events(run.settings, exchange)
        producer = run.producers[exchange].metrics
        # What the producer published is in Kafka once: counts agree, and no trade id / update id twice.
        assert sum(sum(c.values()) for c in counts.values()) == producer.quotes + producer.trades, exchange
        events = [orjson.loads(r.value) for r in records]
        ids = [(e["symbol"], e["type"], e.get("trade_id") or e["seq"]) for e in events
               if e["type"] == "trade" or e["seq"] is not None]
        assert len(ids) == len(set(ids)), f"{exchange}: an event twice in Kafka"
        # Against the emulator: exact while the connection held. A connection that is cut loses what was still in
        # flight on it (the emulator counted it when it wrote it to the socket), as with a real exchange: trades
        # are then checked one by one against the reported gaps (check_no_trade_lost_silently); a lost quote is a
        # top of book superseded by the next one (the `disconnected` status already says the stream broke).
        sent = run.sent[exchange]
        lost = {s: sent[s] - counts.get(s, Counter()) for s in sent}
        assert all(counts.get(s, Counter()) <= sent[s] for s in sent) and set(counts) <= set(sent), (counts, sent)
        lost_quotes = sum(c["quotes"] for c in lost.values())
        if producer.reconnects == 0:
            assert counts == sent, exchange
        else:
            assert lost_quotes <= 3 * producer.reconnects, (exchange, lost)
        figures[f"{exchange}_events"] = sum(sum(c.values()) for c in counts.values())
        figures[f"{exchange}_reconnects"] = producer.reconnects
        figures[f"{exchange}_quotes_lost_in_flight_at_disconnects"] = lost_quotes
        kafka_keys |= {(r.topic, r.partition, r.offset) for r in records}
    silver = pl.concat([read_delta(config.table("silver/quotes")).select("topic", "partition", "offset"),
                        read_delta(config.table("silver/trades")).select("topic", "partition", "offset")])
    silver_keys = list(zip(silver["topic"], silver["partition"], silver["offset"]))
    assert len(silver_keys) == len(set(silver_keys)), "duplicates in silver"
    assert set(silver_keys) == kafka_keys
    assert read_delta(config.table("silver/dead_letter")).height == 0
    check_no_trade_lost_silently(run, config, figures)

    gold = read_delta(config.table("gold/arb_windows"))
    assert gold.select("window_id", "event").n_unique() == gold.height, "duplicate window events"
    closes = gold.filter(pl.col("event") == "CLOSE")
    assert sorted(gold.filter(pl.col("event") == "OPEN")["window_id"]) == sorted(closes["window_id"])
    injected = run.truth["windows"]
    covered = Counter()
    for row in closes.sort("start_ts").iter_rows(named=True):
        # No false window: each one found lies within an injected window of its pair and direction. A window cut by
        # a disconnect, gap or stale feed closes at once and may open again: several pieces of one injected window.
        start, end = _us(row["start_ts"]), _us(row["end_ts"])
        match = [w for w in injected if (w["pair"], w["direction"]) == (row["pair"], row["direction"])
                 and w["start_us"] - TOLERANCE_US <= start and end <= w["end_us"] + TOLERANCE_US]
        assert len(match) == 1, ("false window", row, injected)
        covered[match[0]["id"]] += 1
        whole = abs(start - match[0]["start_us"]) <= TOLERANCE_US and abs(end - match[0]["end_us"]) <= TOLERANCE_US
        assert whole or row["close_reason"] in ("feed_disconnect", "feed_gap", "stale") or covered[match[0]["id"]] > 1
    assert set(covered) == {w["id"] for w in injected}, "an injected window was not found"
    lines = [orjson.loads(x) for x in Path(config.alert_log).read_text().splitlines()]
    assert sorted((x["window_id"], x["event"]) for x in lines) == sorted(zip(gold["window_id"], gold["event"]))
    figures["windows_injected"], figures["window_pieces_found"] = len(injected), closes.height
    figures["silver_records"] = len(silver_keys)


def check_no_trade_lost_silently(run: Run, config, figures: dict) -> None:
    """Per venue symbol: silver's trades are trades the emulator wrote; each written trade silver lacks lies in a
    reported gap's missed ids; no reported gap names a trade silver has."""
    trades = read_delta(config.table("silver/trades"))
    assert trades.height > 0, "no trade in silver"
    statuses = [orjson.loads(r.value) for r in consume_all(run.settings, run.settings.kafka.topics.feed_status)]
    for exchange in EXCHANGES:
        feed = run.producers[exchange].producer.feed
        gaps = [s for s in statuses if s["exchange"] == exchange and s["state"] == "gap"]
        reported: dict[str, set[int]] = {}
        for gap in gaps:
            if gap.get("first_missed_trade_id") is not None:
                ids = range(gap["first_missed_trade_id"], gap["last_missed_trade_id"] + 1)
                reported.setdefault(gap["symbol"], set()).update(ids)
        lost_total = 0
        for venue_symbol, runs in run.written_trade_ids[exchange].items():
            written = {i for first, last in runs for i in range(first, last + 1)}
            mine = trades.filter((pl.col("exchange") == exchange) & (pl.col("venue_symbol") == venue_symbol))
            in_silver = {int(t) for t in mine["trade_id"]}
            announced = reported.get(feed.canonical(venue_symbol), set())
            assert in_silver <= written, (exchange, venue_symbol, sorted(in_silver - written))
            lost = written - in_silver
            assert lost <= announced, ("trades lost silently", exchange, venue_symbol, sorted(lost - announced))
            assert not in_silver & announced, ("a gap names trades silver has", exchange, sorted(in_silver & announced))
            lost_total += len(lost)
        figures[f"{exchange}_trades_lost_at_disconnects"] = lost_total
        figures[f"{exchange}_trade_gaps_reported"] = len(gaps)
        figures[f"{exchange}_trade_ids_reported_missed"] = sum(len(ids) for ids in reported.values())


def _us(ts) -> int:
    from datetime import UTC

    return int((ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp() * 1_000_000)


@pytest.fixture
def settings(kafka_broker, tmp_path):
    prefixed = kafka_broker.with_topics(f"x{os.getpid()}{time.time_ns() % 10**8}.")
    return dataclasses.replace(prefixed, data_dir=make_data_dir(tmp_path / "data"))


def test_broker_restart_during_ingest_loses_and_duplicates_nothing_end_to_end(spark, kafka_broker, settings, tmp_path,
                                                                              figures):
    run = start_run(settings, tmp_path, scenario())
    try:
        run.wait(lambda: all(p.metrics.acked > 100 for p in run.producers.values()), 60, "first acks")
        time.sleep(3)  # into the first window
        kafka_broker.broker.stop()
        down_at = time.monotonic()
        time.sleep(4)  # the producers keep reading and buffering while the broker is down
        kafka_broker.broker.start()
        figures["broker_down_s"] = round(time.monotonic() - down_at, 1)
        acked = {ex: p.metrics.acked for ex, p in run.producers.items()}
        figures["acks_resume_after_restart_s"] = round(run.wait(
            lambda: all(p.metrics.acked > acked[ex] for ex, p in run.producers.items()), 120, "acks after restart"), 1)
        run.finish()
    finally:
        undelivered = stop_run(run)
        if not kafka_broker.broker.is_running():
            kafka_broker.broker.start()
    assert undelivered == {"coinbase": 0, "binance": 0}
    assert all(p.metrics.delivery_failures == 0 for p in run.producers.values())
    check_end_to_end(run, catch_up(spark, settings), figures)


def test_exchange_disconnect_storm_loses_and_duplicates_nothing_end_to_end(spark, settings, tmp_path, figures):
    run = start_run(settings, tmp_path, scenario())
    recoveries = []
    try:
        run.wait(lambda: all(p.metrics.quotes > 20 for p in run.producers.values()), 60, "first quotes")
        for round_ in range(8):  # a drop every ~1.5 s on both venues, through both windows
            exchange = EXCHANGES[round_ % 2]
            producer = run.producers[exchange]
            reconnects = producer.metrics.reconnects
            run.emulator.drop(exchange)
            recoveries.append(run.wait(lambda: producer.metrics.reconnects > reconnects and producer.metrics.connected,
                                       30, f"{exchange} reconnect"))
            time.sleep(1.5)
        run.finish()
    finally:
        undelivered = stop_run(run)
    assert undelivered == {"coinbase": 0, "binance": 0}
    figures["drops"] = len(recoveries)
    figures["reconnect_s_max"] = round(max(recoveries), 2)
    figures["reconnect_s_mean"] = round(sum(recoveries) / len(recoveries), 2)
    check_end_to_end(run, catch_up(spark, settings), figures)


def test_a_stalled_feed_gives_no_false_window_and_loses_nothing(spark, settings, tmp_path, figures):
    # Binance goes silent for 6 s from t=21 s while BTC/USD moves +1.5% on both venues: Binance's last quotes look
    # like a 150 bps spread, but they are stale, so no window may open.
    market = scenario(duration_s=32, silence={"at_s": 21, "kind": "silence", "exchange": "binance", "seconds": 6},
                      move={"pair": "BTC/USD", "at_s": 22, "duration_s": 1, "pct": 1.5, "kind": "move"})
    run = start_run(settings, tmp_path, market, silence_timeout_s=3.0)
    try:
        producer = run.producers["binance"]
        run.wait(lambda: producer.metrics.quotes > 20, 60, "first quotes")
        assert run.emulator.wait_finished(120)
        run.finish()
    finally:
        undelivered = stop_run(run)
    assert undelivered == {"coinbase": 0, "binance": 0}
    assert producer.metrics.reconnects >= 1  # the silence watchdog (3 s) reconnected
    statuses = [orjson.loads(r.value) for r in consume_all(settings, settings.kafka.topics.feed_status)]
    assert any(s["exchange"] == "binance" and s["state"] in ("stale", "disconnected") for s in statuses)
    config = catch_up(spark, settings)
    check_end_to_end(run, config, figures)
    gold = read_delta(config.table("gold/arb_windows"))
    assert gold.filter(pl.col("pair") == "BTC/USD").height == 2  # w1 only: no window from the stale quotes


# -- SIGKILL of each streaming job ------------------------------------------------------------------------------------


def test_sigkill_of_each_streaming_job_then_restart_loses_and_duplicates_nothing(kafka_broker, tmp_path, figures):
    from streaming import synthetic
    from streaming.config import from_settings
    from tests.integration.test_cluster import short_scenario

    prefixed = kafka_broker.with_topics(f"k{os.getpid()}{time.time_ns() % 10**8}.")
    settings = dataclasses.replace(prefixed, data_dir=make_data_dir(tmp_path / "data"))
    config = from_settings(settings, environ={})
    market = short_scenario(config.rules, start_us=time.time_ns() // 1000 - 40 * SECOND, duration_s=16)
    records = market.records()
    half = len(records) // 2
    env = {**arb_env(settings), "ARB_SPARK_MASTER": "local[1]"}
    logs = {job: (tmp_path / f"{job}.log").open("a") for job in ("bronze", "silver", "gold")}

    def start(job: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([ARB, "stream", job, *extra], env=env, stdout=logs[job], stderr=subprocess.STDOUT)

    children = {job: start(job) for job in ("bronze", "silver", "gold")}
    first_output = {"bronze": "bronze/coinbase", "silver": "silver/quotes", "gold": "silver/spreads"}
    try:
        synthetic.publish(records[:half], settings.kafka.client_config(), settings.kafka.topics)
        started = time.monotonic()
        for job, table in first_output.items():  # each job SIGKILLed once it has committed something
            while read_delta(config.table(table)).height == 0:
                assert children[job].poll() is None, (tmp_path / f"{job}.log").read_text()[-3000:]
                assert time.monotonic() - started < 600, f"{job} wrote nothing"
                time.sleep(1)
            children[job].send_signal(signal.SIGKILL)
            children[job].wait(30)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait(30)
    synthetic.publish(records[half:], settings.kafka.client_config(), settings.kafka.topics)
    recover = {}
    for job in ("bronze", "silver", "gold"):
        started = time.monotonic()
        rerun = start(job, "--available-now")
        assert rerun.wait(900) == 0, (tmp_path / f"{job}.log").read_text()[-5000:]
        recover[job] = round(time.monotonic() - started, 1)
    figures["restart_catch_up_s"] = recover

    topics = settings.kafka.topics
    kafka_quotes = [r for ex in EXCHANGES for r in consume_all(settings, topics.quotes(ex))]
    keys = sorted((r.topic, r.partition, r.offset) for r in kafka_quotes)
    bronze = pl.concat([read_delta(config.table("bronze/coinbase")), read_delta(config.table("bronze/binance"))])
    assert sorted(zip(bronze["topic"], bronze["partition"], bronze["offset"])) == keys
    silver = read_delta(config.table("silver/quotes"))
    assert sorted(zip(silver["topic"], silver["partition"], silver["offset"])) == keys
    gold = read_delta(config.table("gold/arb_windows"))
    assert gold.select("window_id", "event").n_unique() == gold.height
    closes = gold.filter(pl.col("event") == "CLOSE")
    assert sorted(zip(closes["pair"], closes["direction"], closes["close_reason"])) == sorted(
        (t["pair"], t["direction"], t["close_reason"]) for t in market.truth(records))
    lines = [json.loads(x) for x in Path(config.alert_log).read_text().splitlines()]
    assert len({(x["window_id"], x["event"]) for x in lines}) == len(lines) == gold.height
    figures["kafka_quotes"], figures["gold_events"] = len(keys), gold.height
