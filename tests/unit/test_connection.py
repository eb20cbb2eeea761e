"""The venue-independent producer pieces that need no socket: backoff, the capture recorder, the metrics file."""

import io

import orjson
import pytest

from producers.connection import ConnectionConfig, Recorder, backoff_delay
from producers.metrics import ProducerMetrics, metrics_path, write_atomic


@pytest.mark.parametrize(("attempt", "low", "high"), [(0, 0.25, 0.5), (1, 0.5, 1.0), (3, 2.0, 4.0), (10, 15.0, 30.0)])
def test_backoff_doubles_per_attempt_with_jitter_in_the_upper_half_and_is_capped(attempt, low, high):
    assert backoff_delay(attempt, 0.5, 30.0, rand=lambda: 0.0) == low
    assert backoff_delay(attempt, 0.5, 30.0, rand=lambda: 1.0) == high


def test_backoff_jitter_spreads_delays():
    import random

    rng = random.Random(1)
    delays = {round(backoff_delay(4, 0.5, 30.0, rand=rng.random), 3) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 4.0 and max(delays) <= 8.0


def test_recorder_writes_the_capture_format_with_epoch_seconds():
    out = io.BytesIO()
    Recorder(out).write('{"type":"heartbeat"}', 1618677817061845)
    assert orjson.loads(out.getvalue()) == {"recv_ts": 1618677817.061845, "raw": '{"type":"heartbeat"}'}
    assert out.getvalue().endswith(b"\n")


def test_non_positive_silence_timeout_is_refused():
    with pytest.raises(ValueError):
        ConnectionConfig(url="ws://x", silence_timeout_s=0)


def test_metrics_snapshot_has_the_documented_fields_and_rates_from_the_last_call():
    metrics = ProducerMetrics("binance", "ws://127.0.0.1:8702/stream?streams=x")
    metrics.snapshot(now=100.0)
    metrics.frames, metrics.quotes, metrics.trades = 500, 300, 100
    metrics.last_frame_monotonic = 101.5
    snap = metrics.snapshot(now=102.0)
    assert set(snap) >= {"exchange", "connected", "url", "last_frame_age_s", "frames_per_s", "events_per_s", "quotes",
                         "trades", "invalid", "gaps", "missed_trades", "reconnects", "delivery_failures", "updated_ts"}
    assert (snap["frames_per_s"], snap["events_per_s"], snap["last_frame_age_s"]) == (250.0, 200.0, 0.5)


def test_metrics_file_is_replaced_atomically(tmp_path):
    path = metrics_path(tmp_path, "coinbase")
    write_atomic(path, {"a": 1})
    write_atomic(path, {"a": 2})
    assert orjson.loads(path.read_bytes()) == {"a": 2}
    assert path == tmp_path / "metrics" / "producer-coinbase.json"
    assert [p.name for p in path.parent.iterdir()] == ["producer-coinbase.json"]  # no temp file left behind


def test_a_trade_gap_is_counted_with_its_missed_trades_and_logged(caplog):
    from arb.settings import KafkaSettings
    from arbitrage.events import FeedState, FeedStatus
    from producers.kafka_sink import KafkaSink

    metrics = ProducerMetrics("binance")
    sink = KafkaSink(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "binance", metrics)  # nothing listens there
    gap = FeedStatus("binance", FeedState.GAP, "trade id 9 after 5 (3 missed while disconnected)", 1, "NKN/USDT",
                     missed_trades=3, first_missed_trade_id=6, last_missed_trade_id=8)
    try:
        with caplog.at_level("WARNING", logger="producers.kafka"):
            sink.publish([gap, FeedStatus("binance", FeedState.CONNECTED, "ws://x", 2)])
    finally:
        sink.close(timeout_s=0.1)

    assert (metrics.statuses, metrics.gaps, metrics.missed_trades) == (2, 1, 3)
    [record] = [r for r in caplog.records if r.getMessage() == "gap"]
    assert (record.symbol, record.missed_trades, record.first_missed, record.last_missed) == ("NKN/USDT", 3, 6, 8)
