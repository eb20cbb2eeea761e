"""`arb bench pipeline`'s pure parts: the Kafka lag trend, the alert/truth matching, the emulator scenario."""

import json

import pytest

from arbitrage.rules import RulesConfig
from streaming.bench import emulator_scenario, is_caught_up, lag_of, lag_trend, match_alerts, processed_offsets, slope
from streaming.metrics import parse_iso_us

SECOND = 1_000_000


def test_processed_offsets_read_every_source_end_offset_and_lag_sums_end_minus_processed_per_partition():
    # Arrange: the hot path reads two topics; endOffset is a JSON string in progress events
    progress = {"sources": [{"endOffset": json.dumps({"quotes.coinbase": {"0": 100, "1": 40},
                                                      "quotes.binance": {"0": 7}})}]}
    ends = {("quotes.coinbase", 0): 130, ("quotes.coinbase", 1): 40, ("quotes.binance", 0): 9}

    # Act
    processed = processed_offsets(progress)

    # Assert
    assert processed == {("quotes.coinbase", 0): 100, ("quotes.coinbase", 1): 40, ("quotes.binance", 0): 7}
    assert lag_of(ends, processed) == 32


def test_slope_is_the_least_squares_fit_and_none_without_two_distinct_times():
    assert slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == pytest.approx(2.0)
    assert slope([(1, 5.0)]) is None and slope([(1, 5.0), (1, 6.0)]) is None


def test_a_lag_that_grows_100_records_per_second_is_reported_as_growth_and_not_flat():
    # Arrange: 1,000 records/s arrive, the consumer falls 100 records/s further behind (a saw-tooth on top)
    samples = [(t / 2, 100 * t // 2 + (300 if t % 4 == 0 else 0), 1_000 * t // 2) for t in range(20)]

    # Act
    trend = lag_trend(samples)

    # Assert
    assert 90 < trend["lag_growth"] < 110
    assert trend["broker_in_per_s"] == pytest.approx(1_000, rel=0.01)
    assert trend["lag_flat"] is False
    assert (trend["lag_start"], trend["lag_end"], trend["lag_max"]) == (300, 950, 1_100)


def test_a_saw_tooth_lag_that_does_not_grow_is_flat():
    # Arrange: each micro-batch takes ~2 s; the lag climbs to 2,000 and falls back, over and over
    samples = [(t / 2, (t % 4) * 500, 1_000 * t // 2) for t in range(40)]

    # Act
    trend = lag_trend(samples)

    # Assert
    assert abs(trend["lag_growth"]) < 50 and trend["lag_flat"] is True
    assert trend["lag_max"] == 1_500


def test_no_lag_samples_give_no_verdict_rather_than_zero_growth():
    trend = lag_trend([])
    assert trend["lag_growth"] is None and trend["lag_flat"] is None


def _iso(us: int) -> str:
    from producers.emulator.truth import iso_us

    return iso_us(us)


def test_alerts_are_matched_to_windows_sent_in_the_period_with_latency_from_the_send_time():
    # Arrange: w0 before the period (catch-up), w1 and w2 inside it; alerts for w0, w1, and one matching nothing
    t0 = 1_800_000_000 * SECOND
    cb_bn, bn_cb = "buy_coinbase_sell_binance", "buy_binance_sell_coinbase"
    truth = [
        {"pair": "BTC/USD", "direction": cb_bn, "start_us": t0 - 6 * SECOND, "end_us": t0 - 4 * SECOND},
        {"pair": "ETH/USD", "direction": bn_cb, "start_us": t0 + 3 * SECOND, "end_us": t0 + 5 * SECOND},
        {"pair": "ETH/BTC", "direction": cb_bn, "start_us": t0 + 9 * SECOND, "end_us": None},
    ]
    opened = [
        {"pair": "BTC/USD", "direction": "buy_coinbase_sell_binance", "start_ts": _iso(t0 - 6 * SECOND + 50_000),
         "_seen_us": t0 + 1 * SECOND},
        {"pair": "ETH/USD", "direction": "buy_binance_sell_coinbase", "start_ts": _iso(t0 + 3 * SECOND + 90_000),
         "_seen_us": t0 + 4 * SECOND + 500_000},
        {"pair": "ETH/USD", "direction": "buy_coinbase_sell_binance", "start_ts": _iso(t0 + 7 * SECOND),
         "_seen_us": t0 + 8 * SECOND},
    ]

    # Act
    got = match_alerts(opened, truth, (t0, t0 + 10 * SECOND), 800_000, parse_iso_us)

    # Assert: w2's alert has not come: found 1 of 2; the wrong-direction one is false; latency from w1's send time
    assert (got["windows_injected"], got["windows_found"], got["windows_false"]) == (2, 1, 1)
    assert got["detections"] == [(t0 + 3 * SECOND, 1_500.0)]


def test_the_emulator_scenario_quotes_the_rate_across_both_venues_and_parses_with_a_window_every_6_s():
    from producers.emulator.scenario import parse_scenario

    rules = RulesConfig()
    data = emulator_scenario(rules, 2_000, first_window_s=15, horizon_s=40)
    scenario = parse_scenario(json.loads(json.dumps(data)))
    scenario.validate()
    assert sum(v.quotes_per_s for v in scenario.venues.values()) * len(scenario.pairs) == pytest.approx(2_000)
    assert [w.start_s for w in scenario.windows] == [15, 21, 27, 33]
    assert {w.pair for w in scenario.windows} == set(rules.pair_names)


def test_warm_up_ends_when_batches_are_fast_or_steady_and_the_lag_is_within_a_batch_of_input():
    assert is_caught_up([40_000, 3_000], lag=2_000, rate=1_000)  # fast, lag < 5 s + 2 s of input
    assert not is_caught_up([40_000, 3_000], lag=9_000, rate=1_000)  # still draining a backlog
    assert is_caught_up([40_000, 12_000, 11_000], lag=12_000, rate=1_000)  # busy machine, steady 11 s batches
    assert not is_caught_up([40_000, 12_000], lag=1_000, rate=1_000)  # too early to call 12 s steady
    assert not is_caught_up([], lag=0, rate=1_000)


def test_query_busy_is_each_query_s_batch_time_over_the_period_and_sink_timings_split_hot_and_lake():
    import logging

    from arb.logs import log_event
    from streaming.bench import SinkTimings, query_busy

    progress = [{"name": "hotpath", "durationMs": {"triggerExecution": 600}},
                {"name": "hotpath", "durationMs": {"triggerExecution": 400}},
                {"name": "silver", "durationMs": {"triggerExecution": 5000}}]
    assert query_busy(progress, 10.0) == {
        "hotpath": {"batches": 2, "batch_p50_ms": 400, "busy": 0.1},
        "silver": {"batches": 1, "batch_p50_ms": 5000, "busy": 0.5}}

    timings, log = SinkTimings(), logging.getLogger("test.sink.timings")
    log.addHandler(timings)
    log.setLevel(logging.DEBUG)
    try:
        log_event(log, "batch", logging.DEBUG, batch_id=1, process_ms=300, spreads_ms=80)
        log_event(log, "batch", logging.DEBUG, batch_id=2, process_ms=500, spreads_ms=60)
        log_event(log, "lake_batch", logging.DEBUG, job="silver", batch_id=7, rows=20_000, collect_ms=900,
                  write_ms=400)
    finally:
        log.removeHandler(timings)
    assert timings.mean() == {"process_ms": 400, "spreads_ms": 70}
    assert timings.lake_mean() == {"silver": {"collect_ms": 900, "rows": 20_000, "write_ms": 400}}


def test_hot_path_stats_keep_detection_percentiles_of_opens_and_the_late_ticks_in_the_metrics_file(tmp_path):
    import json
    import time

    from arbitrage.analytics import iso_ms
    from streaming.metrics import HotPathStats, MetricsListener

    stats = HotPathStats()
    now_us = time.time_ns() // 1000
    opened = [{"event": "OPEN", "start_ts": iso_ms(now_us - ms * 1000)} for ms in (800, 1200, 1000)]
    stats.on_alerts([*opened, {"event": "CLOSE", "start_ts": iso_ms(now_us - 60_000_000)}])
    stats.on_late(2)
    stats.on_late(3)

    MetricsListener(str(tmp_path), stats).on_progress({"name": "hotpath", "batchId": 9, "durationMs": {}})
    doc = json.loads((tmp_path / "stream-hotpath.json").read_text())

    assert 1000 <= doc["detection_p50_ms"] < 1500 and 1200 <= doc["detection_p99_ms"] < 1700  # CLOSE not counted
    assert doc["late_ticks"] == 5 and doc["batch_id"] == 9
