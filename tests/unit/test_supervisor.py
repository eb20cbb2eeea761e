"""`arb up`'s plan, backoff and status text (the processes themselves: tests/integration/test_supervisor.py)."""

from __future__ import annotations

import io
from decimal import Decimal
import time

from arb.cli import build_parser
from arb.settings import KafkaSettings, Settings
from arb.supervisor import Backoff, Component, Supervisor, UpOptions, available_commands, components, summarize_metrics


def _names(plan: list[Component]) -> list[str]:
    return [c.name for c in plan]


def test_emulator_plan_starts_kafka_emulator_producers_stream_dashboard_in_that_order():
    plan = components(UpOptions(source="emulator"), Settings())

    assert _names(plan) == ["kafka", "emulator", "producer-coinbase", "producer-binance", "stream", "dashboard"]


def test_producers_point_at_the_emulator_ports():
    opts = UpOptions(coinbase_port=20001, binance_port=20002, control_port=20003)
    plan = {c.name: c for c in components(opts, Settings())}

    assert plan["producer-coinbase"].argv == ("produce", "--exchange", "coinbase", "--url", "ws://127.0.0.1:20001")
    assert plan["producer-binance"].argv == ("produce", "--exchange", "binance", "--url", "ws://127.0.0.1:20002")
    assert plan["emulator"].argv == ("emulate", "--scenario", "demo", "--coinbase-port", "20001",
                                     "--binance-port", "20002", "--control-port", "20003")


def test_live_plan_with_external_kafka_runs_only_producers_on_their_default_urls():
    settings = Settings(kafka=KafkaSettings(bootstrap_servers="broker.example.com:9092"))
    opts = UpOptions(source="live", symbols="BTC/USDT,ETH/USDT", stream=False, dashboard=False)

    plan = components(opts, settings)

    assert [c.argv for c in plan] == [
        ("produce", "--exchange", "coinbase", "--symbols", "BTC/USDT,ETH/USDT"),
        ("produce", "--exchange", "binance", "--symbols", "BTC/USDT,ETH/USDT"),
    ]


def test_every_planned_command_that_exists_parses_with_the_real_parser():
    parser = build_parser()
    commands = available_commands()
    plan = components(UpOptions(symbols="BTC/USDT", scenario="demo"), Settings())

    parsed = {c.name: parser.parse_args(list(c.argv)).command for c in plan if c.command in commands}

    assert parsed == {c.name: c.command for c in plan if c.command in commands}
    assert {"kafka", "producer-coinbase", "producer-binance"} <= set(parsed)


def test_backoff_doubles_from_one_second_up_to_a_minute():
    backoff = Backoff(base_s=1.0, max_s=60.0)

    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_producer_metrics_summary_shows_rates_and_counters():
    metrics = {"exchange": "binance", "connected": True, "frames_per_s": 1520.4, "events_per_s": 1498.0,
               "invalid": 2, "gaps": 0, "reconnects": 1, "updated_ts": 1000.0}

    text = summarize_metrics("producer-binance", metrics, now=1001.0)

    assert text == "connected 1,520 frames/s 1,498 events/s invalid 2 gaps 0 reconnects 1"


def test_hot_path_metrics_summary_shows_detection_and_late_ticks_only_when_there_are_some():
    metrics = {"batch_id": 42, "input_rows_per_s": 1999.1, "batch_duration_ms": 640, "detection_p99_ms": 1400.2,
               "late_ticks": 0}

    assert summarize_metrics("stream-hotpath", metrics, now=0.0) == (
        "hotpath: batch 42 1,999 rows/s 640 ms detection p99 1,400 ms")
    assert summarize_metrics("stream-hotpath", {**metrics, "late_ticks": 1234}, now=0.0).endswith(
        "detection p99 1,400 ms late ticks 1,234")


def test_missing_or_null_metrics_read_as_zero_instead_of_failing():
    text = summarize_metrics("producer-coinbase", {"connected": False, "frames_per_s": None}, now=0.0)

    assert text == "DISCONNECTED 0 frames/s 0 events/s invalid 0 gaps 0 reconnects 0"


def test_old_metrics_are_marked_stale():
    text = summarize_metrics("emulator", {"frames_sent": 12345, "clients": 2, "updated_ts": 1000.0}, now=1030.0)

    assert text == "12,345 frames sent, 2 clients (stale)"


def test_iso_update_times_are_understood_for_staleness():
    metrics = {"frames_sent": 1, "clients": 1, "updated_ts": "2026-11-22T00:40:35.101Z"}
    then = 1795308035.101  # 2026-11-22T00:40:35.101Z

    assert summarize_metrics("emulator", metrics, now=then + 5) == "1 frames sent, 1 clients"
    assert summarize_metrics("emulator", metrics, now=then + 60) == "1 frames sent, 1 clients (stale)"


def test_emulator_clients_per_exchange_are_added_up():
    text = summarize_metrics("emulator", {"frames_sent": 10, "clients": {"coinbase": 1, "binance": 2},
                                          "updated_ts": 1000.0}, now=1000.0)

    assert text == "10 frames sent, 3 clients"


def test_stream_metrics_summary_shows_batch_rate_and_detection_latency():
    metrics = {"job": "gold", "batch_id": 42, "input_rows_per_s": 2100.0, "batch_duration_ms": 380,
               "detection_p99_ms": 910.0, "updated_ts": 1000.0}

    assert summarize_metrics("stream-gold", metrics, now=1000.5) == \
        "gold: batch 42 2,100 rows/s 380 ms detection p99 910 ms"


def test_a_child_that_exits_is_restarted_after_its_backoff(tmp_path):
    settings = Settings(data_dir=tmp_path)
    quitter = Component("quitter", ("kafka", "--help"))  # a real arb command that exits at once
    supervisor = Supervisor(settings, [quitter], UpOptions(), backoff=Backoff(base_s=0.2), out=io.StringIO())
    child = supervisor.children[0]
    supervisor.spawn(child)
    child.process.wait(30)

    supervisor.supervise_once(time.monotonic())
    scheduled = child.restart_at
    supervisor.supervise_once(scheduled + 0.01)
    child.process.wait(30)

    assert child.restarts == 1 and child.last_exit == 0
    assert (tmp_path / "run" / "logs" / "quitter.log").read_text().count("=== ") == 2
    assert "quitter exited (code 0)" in supervisor.out.getvalue()


def test_rules_flags_of_arb_up_reach_the_streaming_child_as_given():
    args = build_parser().parse_args(["up", "--threshold-bps", "7.5", "--fees", "coinbase=0.004,binance=10bps"])
    from streaming.cli import rules_argv

    opts = UpOptions(stream_args=rules_argv(args))
    stream = {c.name: c for c in components(opts, Settings())}["stream"]

    assert stream.argv == ("stream", "all", "--threshold-bps", "7.5", "--fees", "coinbase=0.004,binance=10bps")
    assert build_parser().parse_args(list(stream.argv)).threshold_bps == Decimal("7.5")
