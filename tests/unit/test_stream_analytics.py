"""The analytics sinks without Spark: driver rows -> Delta tables (delta-rs), flash-crash alerts deduplicated across
a restart and a replayed micro-batch, the late-record counter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

import polars as pl

from arb.settings import Settings
from streaming import analytics as jobs
from streaming.config import from_settings
from streaming.sinks import QueryId

T0 = 1_795_305_600_000_000  # 2026-11-22T00:00:00Z
S = 1_000_000


@dataclass
class Row:
    values: dict

    def asDict(self) -> dict:  # noqa: N802  (pyspark's Row API)
        return dict(self.values)


class Batch:
    """What a foreachBatch sink touches of a micro-batch DataFrame."""

    sparkSession = None

    def __init__(self, rows: list[dict]) -> None:
        self.rows = [Row(r) for r in rows]

    def collect(self) -> list[Row]:
        return self.rows


class Alerts:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def emit(self, alert: dict) -> None:
        self.sent.append(alert)


def bar(second: int, mid: str) -> dict:
    return {"exchange": "binance", "symbol": "BTC/USDT", "bucket_us": T0 + second * S, "high": D(mid), "low": D(mid),
            "close": D(mid)}


def config_in(tmp_path: Path):
    return from_settings(Settings(data_dir=tmp_path / "data"), environ={})


def crash_sink(config, alerts: Alerts) -> jobs.CrashSink:
    query_id = QueryId()
    query_id.set("q1")
    return jobs.CrashSink(config, jobs.AnalyticsConfig(pairs=tuple(config.rules.pairs)), query_id, alerts)


def test_table_frame_turns_microseconds_into_utc_timestamps_and_adds_the_date():
    rows = [{"exchange": "binance", "symbol": "BTC/USDT", "bucket_ts_us": T0 + 5 * S, "high": D("2"), "low": D("1"),
             "close": D("1.5")}]
    frame = jobs.table_frame("gold/crash_bars", rows)
    assert frame.columns == ["exchange", "symbol", "bucket_ts", "high", "low", "close", "date"]
    assert frame.row(0) == ("binance", "BTC/USDT", datetime(2026, 11, 22, 0, 0, 5, tzinfo=UTC), D("2"), D("1"),
                            D("1.5"), date(2026, 11, 22))
    assert frame.schema["high"] == pl.Decimal(30, 12)


def test_a_restarted_crash_sink_replaying_a_batch_sends_no_second_alert_and_writes_no_second_copy(tmp_path):
    config = config_in(tmp_path)
    first, second = [bar(0, "100"), bar(1, "100")], [bar(2, "99.5"), bar(3, "98.5")]  # 1.5 % down at 3 s
    alerts = Alerts()
    sink = crash_sink(config, alerts)
    sink(Batch(first), 0)
    sink(Batch(second), 1)
    assert [a["crash_ts"] for a in alerts.sent] == ["2026-11-22T00:00:03.000Z"]
    Path(config.alert_log).parent.mkdir(parents=True, exist_ok=True)
    Path(config.alert_log).write_text("".join(json.dumps(a) + "\n" for a in alerts.sent) + '{"torn')

    # Act: the process dies before batch 1 is committed; a new sink (rebuilt from gold/crash_bars) replays it
    replayed = Alerts()
    crash_sink(config, replayed)(Batch(second), 1)

    # Assert: same alert id, already logged: not sent again; the table holds each bar once
    assert replayed.sent == []
    stored = pl.read_delta(config.table("gold/crash_bars")).sort("bucket_ts")
    assert stored.height == 4


def test_a_restarted_crash_sink_remembers_an_open_episode_from_the_stored_bars(tmp_path):
    config = config_in(tmp_path)
    alerts = Alerts()
    sink = crash_sink(config, alerts)
    sink(Batch([bar(0, "100"), bar(1, "98.5")]), 0)  # crash at 1 s
    assert len(alerts.sent) == 1

    restarted = Alerts()
    crash_sink(config, restarted)(Batch([bar(30, "97")]), 1)  # still the same episode (30 s later)
    crash_sink(config, restarted)(Batch([bar(200, "100"), bar(201, "98")]), 2)  # a new one (199 s later)

    assert [a["crash_ts"] for a in restarted.sent] == ["2026-11-22T00:03:21.000Z"]


def test_logged_alert_ids_reads_only_flash_crash_alerts_and_skips_a_torn_line(tmp_path):
    log = tmp_path / "alerts.jsonl"
    log.write_text('{"type": "arb_window", "window_id": "x", "event": "OPEN"}\n'
                   '{"type": "flash_crash", "alert_id": "BTC/USD|flash_crash|1"}\n{"type": "fla')
    assert jobs.logged_alert_ids(log) == {"BTC/USD|flash_crash|1"}
