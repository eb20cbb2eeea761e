"""The emulator's protocol pieces without sockets: Coinbase requests and book diffs, Binance URLs, captures."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from producers.emulator import binance, coinbase, replay
from producers.emulator.market import Top
from producers.emulator.wire import QUOTE, TRADE, Counters

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CB_CAPTURE = FIXTURES / "coinbase-exchange-2021-04-17.jsonl"
BN_CAPTURE = FIXTURES / "binance-spot-2021-10-12.jsonl"
PRODUCTS = {"BTC-USD", "ETH-USD"}


def test_coinbase_subscribe_in_string_and_object_forms():
    kind, requests = coinbase.parse_request(json.dumps({
        "type": "subscribe", "product_ids": ["BTC-USD"],
        "channels": ["level2_batch", {"name": "matches", "product_ids": ["ETH-USD"]}, "heartbeat"],
    }), PRODUCTS)
    assert kind == "subscribe"
    assert requests == [("level2_batch", ["BTC-USD"]), ("matches", ["ETH-USD"]), ("heartbeat", ["BTC-USD"])]


@pytest.mark.parametrize(
    ("message", "error", "reason"),
    [
        ("{not json", "Malformed JSON", ""),
        ('{"type": "subscribe", "product_ids": ["BTC-USD"]}', "Failed to subscribe", "No channels provided"),
        ('{"type": "subscribe", "product_ids": ["FOO-BAR"], "channels": ["matches"]}', "Failed to subscribe",
         "FOO-BAR is not a valid product"),
        ('{"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["bogus"]}', "Failed to subscribe",
         "bogus is not a valid channel"),
        ('{"type": "hello"}', "Failed to subscribe", "hello is not a valid type"),
    ],
)
def test_coinbase_bad_requests_get_coinbase_error_wording(message, error, reason):
    with pytest.raises(coinbase.SubscribeError) as err:
        coinbase.parse_request(message, PRODUCTS)
    assert err.value.message == error
    assert reason in err.value.reason
    frame = json.loads(coinbase.error_frame(err.value.message, err.value.reason))
    assert list(frame) == ["type", "message", "reason"] and frame["type"] == "error"


def _apply(client_book: dict, changes) -> None:
    for side, price, size in changes:
        levels = client_book["bids" if side == "buy" else "asks"]
        if size == 0:
            levels.pop(price, None)
        else:
            levels[price] = size


def test_coinbase_book_changes_rebuild_the_same_top_on_the_client():
    book = coinbase.CoinbaseBook(depth=5)
    book.seed(Top(Decimal("100.00"), Decimal("1"), Decimal("100.10"), Decimal("2")), step=Decimal("0.05"))
    bids, asks = book.snapshot_levels()
    client = {"bids": {Decimal(p): Decimal(s) for p, s in bids}, "asks": {Decimal(p): Decimal(s) for p, s in asks}}
    tops = [("100.02", "100.08"), ("99.90", "99.95"), ("100.30", "100.31"), ("100.31", "100.29"), ("99.00", "99.5")]
    for bid, ask in tops:
        top = Top(Decimal(bid), Decimal("0.5"), Decimal(ask), Decimal("0.7"))
        _apply(client, book.apply_top(top))
        assert (max(client["bids"]), min(client["asks"])) == (top.bid, top.ask)
        assert client["bids"] == book.bids and client["asks"] == book.asks
        assert len(book.bids) == len(book.asks) == 5


def test_coinbase_book_change_of_only_the_size_is_one_change():
    book = coinbase.CoinbaseBook(depth=3)
    book.seed(Top(Decimal("10"), Decimal("1"), Decimal("11"), Decimal("1")), step=Decimal("1"))
    assert book.apply_top(Top(Decimal("10"), Decimal("3"), Decimal("11"), Decimal("1"))) == [
        ("buy", Decimal("10"), Decimal("3"))]
    assert book.apply_top(Top(Decimal("10"), Decimal("3"), Decimal("11"), Decimal("1"))) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/stream?streams=btcusdt@bookTicker/ethusdt@trade", (True, ["btcusdt@bookTicker", "ethusdt@trade"])),
        ("/ws/btcusdt@aggTrade", (False, ["btcusdt@aggTrade"])),
        ("/ws", (False, [])),
        ("/stream", (True, [])),
    ],
)
def test_binance_urls(path, expected):
    assert binance.parse_path(path) == expected


def test_binance_unknown_path_is_refused():
    with pytest.raises(binance.BadPath):
        binance.parse_path("/api/v3/ticker")


def test_captures_are_routed_by_name_or_content(tmp_path):
    assert replay.load_capture(CB_CAPTURE).exchange == "coinbase"
    assert replay.load_capture(BN_CAPTURE).exchange == "binance"
    anonymous = tmp_path / "capture.jsonl"
    anonymous.write_text(BN_CAPTURE.read_text())
    assert replay.load_capture(anonymous).exchange == "binance"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"recv_ts": 1}\n')
    with pytest.raises(replay.CaptureError, match="bad.jsonl:1"):
        replay.load_capture(bad)


def test_replay_delays_follow_the_recorded_pace_scaled_or_none():
    frames = [(100.0, "a"), (100.5, "b"), (100.4, "c"), (102.0, "d")]
    assert replay.delays(frames, 1.0) == [0.0, 0.5, 0.5, 2.0]
    assert replay.delays(frames, 2.0) == [0.0, 0.25, 0.25, 1.0]
    assert replay.delays(frames, 0.0) == [0.0, 0.0, 0.0, 0.0]


def test_replay_counts_quotes_and_trades_of_the_real_captures():
    capture = replay.load_capture(CB_CAPTURE)
    books, seen, counts = {}, set(), {QUOTE: 0, TRADE: 0}
    for _, raw in capture.frames:
        kind, _ = coinbase.classify_frame(raw, books, seen)
        if kind:
            counts[kind] += 1
    assert counts[TRADE] == 18  # 13 match + 5 last_match, distinct trade ids
    assert 5 <= counts[QUOTE] < 2714  # snapshots plus the l2updates that moved a top
    kinds = [binance.classify_frame(raw)[0] for _, raw in replay.load_capture(BN_CAPTURE).frames]
    assert kinds.count(QUOTE) == 84 and kinds.count(TRADE) == 2


def test_counters_keep_the_written_trade_ids_as_runs_per_symbol():
    counters = Counters()
    for trade_id in (7, 8, 9, 12, 13):
        counters.count("binance", TRADE, "BTCUSDT", trade_id)
    counters.count("binance", QUOTE, "BTCUSDT")
    counters.count("coinbase", TRADE, "BTC-USD", 100)
    assert counters.snapshot()["trade_ids"] == {"binance": {"BTCUSDT": [[7, 9], [12, 13]]},
                                                "coinbase": {"BTC-USD": [[100, 100]]}}
    assert counters.snapshot()["events"]["binance"]["BTCUSDT"] == {"quotes": 1, "trades": 5}
