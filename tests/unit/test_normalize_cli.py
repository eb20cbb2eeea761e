"""`arb normalize`: capture in, the producer's JSON Lines out, through the real command line."""

import io
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from arbitrage.events import from_json
from producers.cli import normalize_lines
from producers.coinbase import Coinbase
from tests.unit.producer_helpers import BINANCE_CAPTURE, COINBASE_CAPTURE, COINBASE_PRODUCTS, coinbase_markets


def run(args, stdin=b""):
    """`arb normalize ARGS` in a child process: (exit code, stdout bytes, stderr text)."""
    proc = subprocess.run([sys.executable, "-m", "arb.cli", "normalize", *args], input=stdin, capture_output=True)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_coinbase_capture_prints_455_quotes_and_18_trades_and_nothing_on_stderr():
    code, out, err = run(["--exchange", "coinbase", "--markets", str(COINBASE_PRODUCTS), str(COINBASE_CAPTURE)])
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert (code, err) == (0, "")
    assert Counter(line["type"] for line in lines) == {"quote": 455, "trade": 18}
    assert all(line["exchange"] == "coinbase" for line in lines)


def test_binance_capture_lines_parse_back_as_events_with_required_fields():
    code, out, err = run(["--exchange", "binance", str(BINANCE_CAPTURE)])
    events = [from_json(line) for line in out.splitlines()]
    assert (code, err, len(events)) == (0, "", 86)
    first = orjson.loads(out.splitlines()[0])
    assert {k: first[k] for k in ("type", "exchange", "symbol", "bid", "bid_size", "ask", "ask_size")} == {
        "type": "quote", "exchange": "binance", "symbol": "NKN/USDT", "bid": "0.35210000",
        "bid_size": "672.00000000", "ask": "0.35260000", "ask_size": "3199.00000000"}


def test_invalid_frames_go_to_stderr_with_reason_and_exit_is_zero():
    capture = b"\n".join([
        b'{"recv_ts": 1.0, "raw": "{\\"stream\\":\\"nknusdt@bookTicker\\",\\"data\\":{\\"u\\":1,\\"s\\":\\"NKNUSDT\\",'
        b'\\"b\\":\\"-1\\",\\"B\\":\\"1\\",\\"a\\":\\"2\\",\\"A\\":\\"1\\"}}"}',
        b'{"recv_ts": 2.0, "raw": "{\\"stream\\":\\"nknusdt@kline_1m\\",\\"data\\":{}}"}',
        b"not json at all",
        b'{"recv_ts": 3.0, "raw": "{\\"stream\\":\\"nknusdt@bookTicker\\",\\"data\\":{\\"u\\":2,\\"s\\":\\"NKNUSDT\\",'
        b'\\"b\\":\\"1\\",\\"B\\":\\"1\\",\\"a\\":\\"2\\",\\"A\\":\\"1\\"}}"}',
    ])
    code, out, err = run(["--exchange", "binance", "-"], stdin=capture)
    assert code == 0
    assert len(out.splitlines()) == 1  # the last frame; the kline frame is skipped quietly
    assert err.splitlines()[0].startswith("line 1: non-positive bid '-1'")
    assert err.splitlines()[1].startswith("line 3: not a capture record")
    assert len(err.splitlines()) == 2


def test_normalize_output_is_byte_identical_to_what_the_sink_serializes():
    """Same code path: normalize writes arbitrage.events.to_json of the parser's events."""
    from arbitrage.events import to_json
    from tests.unit.producer_helpers import capture, replay

    events, _ = replay(Coinbase(coinbase_markets()), capture(COINBASE_CAPTURE))
    expected = b"".join(to_json(e) + b"\n" for e in events if e.type in ("quote", "trade"))
    out = io.BytesIO()
    normalize_lines(Coinbase(coinbase_markets()), COINBASE_CAPTURE.read_bytes().splitlines(True), out, io.StringIO())
    assert out.getvalue() == expected


def test_unreadable_capture_exits_1_with_one_line(tmp_path):
    code, out, err = run(["--exchange", "coinbase", str(tmp_path / "missing.jsonl")])
    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1 and "cannot read" in err


@pytest.mark.parametrize("args", [["--exchange", "kraken"], []])
def test_bad_arguments_exit_2_with_one_line(args):
    proc = subprocess.run([sys.executable, "-m", "arb.cli", "normalize", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
