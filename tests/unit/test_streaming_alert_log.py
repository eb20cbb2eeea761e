"""The hot path's alert log: each window event once in the log, and to the webhook when one is configured."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streaming.sinks import AlertLog


def window_event(event: str, start_us: int = 1_763_771_234_567_000) -> dict:
    closing = event == "CLOSE"
    return {
        "event": event, "window_id": f"BTC/USD|buy_binance_sell_coinbase|{start_us}", "pair": "BTC/USD",
        "direction": "buy_binance_sell_coinbase", "peak_net_bps": "12.400000", "mean_net_bps": "11.000000",
        "size_at_peak": "0.5", "profit_at_peak": "41.2", "start_ts_us": start_us,
        "end_ts_us": start_us + 2_000_000 if closing else None, "duration_ms": 2000 if closing else None,
        "ticks": 3, "close_reason": "spread" if closing else None,
    }


def test_alert_log_writes_each_event_once_and_posts_it_to_the_webhook(tmp_path):
    received: list[dict] = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        log = AlertLog(str(tmp_path / "alerts.jsonl"), "arb.alerts", None,
                       webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook")
        log.emit([window_event("OPEN")])
        log.emit([window_event("OPEN"), window_event("CLOSE")])  # a replayed batch repeats the OPEN
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()

    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["OPEN", "CLOSE"]
    assert [alert["event"] for alert in received] == ["OPEN", "CLOSE"]
    assert received[1]["duration_ms"] == 2000 and received[1]["close_reason"] == "spread"
