from __future__ import annotations

import io
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from arb import alerts
from arb.cli import main
from tests.lakefixtures import BN_CB, CB_BN, alert

T0 = datetime(2026, 11, 22, 0, 40, 34, 567000, tzinfo=UTC)

OPEN_BTC = alert("OPEN", "BTC/USD", BN_CB, T0, "12.4", "0.5", "41.2", emitted=T0 + timedelta(milliseconds=345))
CLOSE_BTC = alert("CLOSE", "BTC/USD", BN_CB, T0, "12.4", "0.5", "41.2", emitted=T0 + timedelta(seconds=3),
                  end=T0 + timedelta(milliseconds=2500), close_reason="spread", ticks=4)
OPEN_ETH = alert("OPEN", "ETH/USD", CB_BN, T0 + timedelta(minutes=5), "6.1", "2", "3.5",
                 emitted=T0 + timedelta(minutes=5))


def write_log(path: Path, *items: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for item in items:
            fh.write(json.dumps(item) + "\n")


# ---- formatting -------------------------------------------------------------------------------------------------

def test_format_alert_open_line_names_pair_direction_net_size_profit():
    line = alerts.format_alert(OPEN_BTC)

    assert line == ("2026-11-22 00:40:34.912  OPEN   BTC/USD   buy binance → sell coinbase  net 12.40 bps  size 0.5"
                    "  est. profit 41.20  duration -")


def test_format_alert_close_line_has_peak_duration_and_reason():
    line = alerts.format_alert(CLOSE_BTC)

    assert "CLOSE" in line and "peak 12.40 bps" in line and "duration 2.500s (spread)" in line


def test_format_alert_colours_only_when_asked():
    assert "\x1b[" not in alerts.format_alert(OPEN_BTC)
    assert "\x1b[1;32m" in alerts.format_alert(OPEN_BTC, color=True)


def test_format_alert_of_another_type_still_prints_its_fields():
    line = alerts.format_alert({"v": 1, "type": "flash_crash", "event": "OPEN", "pair": "ETH/USD",
                                "emitted_ts": "2026-11-22T00:00:00Z", "drop_bps": "300"})

    assert "flash_crash" in line and "drop_bps=300" in line


def test_window_alert_builds_the_documented_object_from_a_gold_row():
    start = datetime(2026, 11, 22, 0, 40, 34, 567000, tzinfo=UTC)
    row = {"window_id": "BTC/USD|buy_binance_sell_coinbase|1763772034567000", "pair": "BTC/USD",
           "direction": BN_CB, "event": "OPEN", "start_ts": start, "end_ts": None, "duration_ms": None,
           "peak_net_bps": Decimal("12.400000"), "size_at_peak": Decimal("0.500000000000"),
           "profit_at_peak": Decimal("41.200000000000"), "ticks": 1, "close_reason": None,
           "emitted_ts": start + timedelta(milliseconds=345)}

    out = alerts.window_alert(row)

    assert out == {"v": 1, "type": "arb_window", "event": "OPEN", "window_id": row["window_id"], "pair": "BTC/USD",
                   "direction": BN_CB, "net_bps": "12.4", "peak_net_bps": "12.4", "size": "0.5",
                   "est_profit": "41.2", "start_ts": "2026-11-22T00:40:34.567Z", "end_ts": None,
                   "duration_ms": None, "ticks": 1, "close_reason": None,
                   "emitted_ts": "2026-11-22T00:40:34.912Z"}


# ---- filters and the tail ---------------------------------------------------------------------------------------

def test_filter_by_pair_min_bps_and_since():
    assert alerts.AlertFilter(pair="BTC/USD").matches(OPEN_BTC)
    assert not alerts.AlertFilter(pair="BTC/USD").matches(OPEN_ETH)
    assert alerts.AlertFilter(min_bps=Decimal("12.4")).matches(OPEN_BTC)
    assert not alerts.AlertFilter(min_bps=Decimal("7")).matches(OPEN_ETH)
    since = int((T0 + timedelta(minutes=1)).timestamp() * 1_000_000)
    assert not alerts.AlertFilter(since_us=since).matches(CLOSE_BTC)
    assert alerts.AlertFilter(since_us=since).matches(OPEN_ETH)


def test_parse_since_accepts_iso_times_and_ages():
    assert alerts.parse_since("2026-11-22T00:40:34.567Z") == int(T0.timestamp() * 1_000_000)
    assert alerts.parse_since("2026-11-22T00:40:34.567") == int(T0.timestamp() * 1_000_000)  # UTC by default
    assert alerts.parse_since("10m", now=1000.0) == 400 * 1_000_000
    with pytest.raises(ValueError):
        alerts.parse_since("yesterday")


def test_tail_prints_the_last_n_matching_alerts_and_skips_garbage(tmp_path, capsys):
    log = tmp_path / "alerts.jsonl"
    write_log(log, OPEN_BTC, CLOSE_BTC)
    with open(log, "a") as fh:
        fh.write("not json\n")
    write_log(log, OPEN_ETH)
    out = io.StringIO()

    rc = alerts.run_tail(log, alerts.AlertFilter(), out, follow=False, as_json=False, color=False, last=2)

    assert rc == 0
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["CLOSE", "OPEN"]
    assert "ETH/USD" in lines[1]
    assert "not an alert" in capsys.readouterr().err


def test_cli_json_since_and_pair(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARB_DATA_DIR", str(tmp_path))
    write_log(tmp_path / "alerts" / "alerts.jsonl", OPEN_BTC, CLOSE_BTC, OPEN_ETH)

    rc = main(["alerts", "--json", "--since", "2026-11-22T00:40:35Z", "--pair", "BTC/USD"])

    assert rc == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [CLOSE_BTC]


def test_cli_min_bps_filters(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARB_DATA_DIR", str(tmp_path))
    write_log(tmp_path / "alerts" / "alerts.jsonl", OPEN_BTC, OPEN_ETH)

    assert main(["alerts", "--min-bps", "10"]) == 0

    out = capsys.readouterr().out
    assert "BTC/USD" in out and "ETH/USD" not in out


@pytest.mark.parametrize("argv", [
    ["alerts", "--min-bps", "lots"],
    ["alerts", "--since", "the dawn of time"],
    ["alerts", "--lines", "-3"],
    ["alerts", "--bogus"],
])
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)

    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arb") and "error:" in err


def follow_in_thread(log: Path, **kw):
    out = io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(target=alerts.run_tail, args=(log, alerts.AlertFilter(), out),
                              kwargs={"follow": True, "as_json": True, "color": False, "last": None,
                                      "stop": stop.is_set, "poll_s": 0.01, **kw}, daemon=True)
    thread.start()
    return out, stop, thread


def wait_for_lines(out: io.StringIO, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = out.getvalue().splitlines()
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.01)
    raise AssertionError(f"wanted {count} lines, got {out.getvalue()!r}")


def test_follow_survives_rotation_by_rename_and_by_truncation(tmp_path):
    log = tmp_path / "alerts.jsonl"
    write_log(log, OPEN_BTC)
    out, stop, thread = follow_in_thread(log)
    try:
        wait_for_lines(out, 1)
        # a line split across two writes is printed once, whole
        with open(log, "a") as fh:
            fh.write(json.dumps(CLOSE_BTC)[:20])
            fh.flush()
            time.sleep(0.05)
            fh.write(json.dumps(CLOSE_BTC)[20:] + "\n")
        wait_for_lines(out, 2)

        # logrotate style: rename, then a new file under the old name
        os.rename(log, tmp_path / "alerts.jsonl.1")
        time.sleep(0.05)
        write_log(log, OPEN_ETH)
        wait_for_lines(out, 3)

        # copytruncate style: the same file, emptied, then written again
        with open(log, "r+") as fh:
            fh.truncate(0)
        time.sleep(0.05)
        write_log(log, OPEN_BTC)
        got = wait_for_lines(out, 4)
    finally:
        stop.set()
        thread.join(5)

    assert [a["event"] + a["pair"] for a in got] == ["OPENBTC/USD", "CLOSEBTC/USD", "OPENETH/USD", "OPENBTC/USD"]


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path):
    log = tmp_path / "later" / "alerts.jsonl"
    out, stop, thread = follow_in_thread(log)
    try:
        time.sleep(0.05)
        write_log(log, OPEN_ETH)
        got = wait_for_lines(out, 1)
    finally:
        stop.set()
        thread.join(5)

    assert got == [OPEN_ETH]


# ---- sinks ------------------------------------------------------------------------------------------------------

class FlakyEndpoint(BaseHTTPRequestHandler):
    """Answers 503 to the first `fail` POSTs, then 200; records every body."""

    def do_POST(self):  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        server.bodies.append(json.loads(body))
        status = server.statuses.pop(0) if server.statuses else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyEndpoint)
    server.bodies, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhook_retries_with_backoff_until_the_endpoint_accepts(endpoint):
    endpoint.statuses = [503, 503]
    sleeps: list[float] = []
    sink = alerts.WebhookSink(f"http://127.0.0.1:{endpoint.server_port}/hook", retries=3, backoff_s=0.01,
                              sleep=lambda s: (sleeps.append(s), time.sleep(s)))

    sink.emit(OPEN_BTC)
    sink.close()

    assert endpoint.bodies == [OPEN_BTC] * 3
    assert sleeps == [0.01, 0.02]
    assert (sink.delivered, sink.failed) == (1, 0)


def test_webhook_gives_up_on_a_client_error_without_retrying(endpoint):
    endpoint.statuses = [400]
    sink = alerts.WebhookSink(f"http://127.0.0.1:{endpoint.server_port}/hook", retries=3, backoff_s=0.01)

    sink.emit(OPEN_BTC)
    sink.close()

    assert len(endpoint.bodies) == 1 and (sink.delivered, sink.failed) == (0, 1)


def test_webhook_gives_up_after_the_retries_when_nobody_listens(endpoint):
    url = f"http://127.0.0.1:{endpoint.server_port}/hook"
    endpoint.shutdown()
    endpoint.server_close()
    sink = alerts.WebhookSink(url, retries=2, backoff_s=0.001)

    assert sink.post(OPEN_BTC) is False
    sink.close()


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, key, value, on_delivery):
        self.sent.append((topic, key, json.loads(value)))

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        return 0


class BrokenSink:
    name = "broken"

    def emit(self, alert):
        raise RuntimeError("down")

    def close(self):
        pass


def test_alert_sinks_fan_out_and_one_broken_sink_does_not_stop_the_others(tmp_path):
    from arb.settings import KafkaSettings, Topics

    producer = FakeProducer()
    log = tmp_path / "alerts" / "alerts.jsonl"
    kafka = alerts.KafkaSink(KafkaSettings(topics=Topics(prefix="t.")), producer=producer)

    with alerts.AlertSinks([BrokenSink(), alerts.LogSink(log), kafka]) as sinks:
        sinks.emit(OPEN_BTC)
        sinks.emit(CLOSE_BTC)

    assert [json.loads(line) for line in log.read_text().splitlines()] == [OPEN_BTC, CLOSE_BTC]
    assert producer.sent == [("t.arb.alerts", b"BTC/USD", OPEN_BTC), ("t.arb.alerts", b"BTC/USD", CLOSE_BTC)]


def test_alert_sinks_from_settings_adds_a_webhook_from_the_environment(tmp_path, endpoint):
    from arb.settings import Settings

    url = f"http://127.0.0.1:{endpoint.server_port}/hook"
    sinks = alerts.AlertSinks.from_settings(Settings(data_dir=tmp_path), kafka=False,
                                            environ={"ARB_ALERT_WEBHOOK_URL": url})
    sinks.emit(OPEN_ETH)
    sinks.close()

    assert [s.name for s in sinks.sinks] == ["log", "webhook"]
    assert endpoint.bodies == [OPEN_ETH]
    assert json.loads((tmp_path / "alerts" / "alerts.jsonl").read_text()) == OPEN_ETH
