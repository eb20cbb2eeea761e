"""arbitrage/events.py: invariants where events are made, and the wire form both ways."""

from decimal import Decimal

import orjson
import pytest

from arbitrage.events import (
    DeadLetter, FeedState, FeedStatus, InvalidEvent, Quote, Side, Trade, from_dict, from_json, to_dict, to_json,
)

QUOTE = dict(exchange="binance", symbol="BTC/USDT", venue_symbol="BTCUSDT", bid=Decimal("0.35210000"),
             bid_size=Decimal("672.00000000"), ask=Decimal("0.35260000"), ask_size=Decimal("3199.00000000"),
             ts_event_us=None, ts_recv_us=1633998513377805, seq=499869768)
TRADE = dict(exchange="coinbase", symbol="NU/GBP", venue_symbol="NU-GBP", price=Decimal("0.4393"),
             size=Decimal("805.131"), side=Side.BUY, trade_id="563679", ts_event_us=1618677826345172,
             ts_recv_us=1618677826340048, seq=108779633)


def test_quote_wire_form_keeps_decimal_strings_exactly():
    assert orjson.loads(to_json(Quote(**QUOTE))) == {
        "v": 1, "type": "quote", "exchange": "binance", "symbol": "BTC/USDT", "venue_symbol": "BTCUSDT",
        "bid": "0.35210000", "bid_size": "672.00000000", "ask": "0.35260000", "ask_size": "3199.00000000",
        "ts_event_us": None, "ts_recv_us": 1633998513377805, "seq": 499869768,
    }


@pytest.mark.parametrize("event", [
    Quote(**QUOTE),
    Trade(**TRADE),
    FeedStatus(exchange="coinbase", state=FeedState.GAP, detail="trade_id 3 after 1", ts_recv_us=5, symbol="NU/GBP"),
    FeedStatus(exchange="binance", state=FeedState.CONNECTED, detail="ws://x", ts_recv_us=6),
    FeedStatus(exchange="binance", state=FeedState.GAP, detail="trade id 9 after 5 (3 missed while disconnected)",
               ts_recv_us=7, symbol="NKN/USDT", missed_trades=3, first_missed_trade_id=6, last_missed_trade_id=8),
])
def test_wire_round_trip_gives_back_the_same_event(event):
    assert from_json(to_json(event)) == event


def test_status_without_the_missed_trade_fields_still_parses():
    old = {"v": 1, "type": "status", "exchange": "coinbase", "state": "gap", "detail": "x", "ts_recv_us": 5,
           "symbol": "NU/GBP"}
    assert from_dict(old).missed_trades is None


def test_gap_whose_missed_ids_do_not_match_its_count_is_rejected():
    with pytest.raises(InvalidEvent):
        FeedStatus("binance", FeedState.GAP, "x", 1, "NKN/USDT", missed_trades=2, first_missed_trade_id=6,
                   last_missed_trade_id=8)


def test_trade_side_is_a_string_on_the_wire():
    assert to_dict(Trade(**TRADE))["side"] == "buy"


@pytest.mark.parametrize(("field", "value"), [
    ("bid", Decimal("0")), ("ask", Decimal("-1")), ("bid", Decimal("NaN")), ("bid_size", Decimal("-0.1")),
    ("ask", 0.35),
])
def test_quote_with_bad_number_is_rejected(field, value):
    with pytest.raises(InvalidEvent):
        Quote(**{**QUOTE, field: value})


@pytest.mark.parametrize(("field", "value"), [("price", Decimal("0")), ("size", Decimal("0")), ("side", "buy")])
def test_trade_with_bad_field_is_rejected(field, value):
    with pytest.raises(InvalidEvent):
        Trade(**{**TRADE, field: value})


def test_crossed_quote_is_allowed_and_flagged():
    assert Quote(**{**QUOTE, "bid": Decimal("2"), "ask": Decimal("1")}).is_crossed
    assert not Quote(**QUOTE).is_crossed


@pytest.mark.parametrize(("raw", "message"), [
    (b"{", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"v": 1, "type": "candle"}', "unknown event type 'candle'"),
    (b'{"v": 2, "type": "quote"}', "unsupported schema version 2"),
    (b'{"v": 1, "type": "trade", "exchange": "x"}', "trade is missing 'symbol'"),
])
def test_malformed_wire_form_raises_invalid_event(raw, message):
    with pytest.raises(InvalidEvent, match=message):
        from_json(raw)


def test_dead_letter_wire_form_carries_raw_and_reason():
    letter = DeadLetter(source="binance", reason="malformed JSON", raw="{oops", ts_recv_us=7)
    assert orjson.loads(letter.to_json()) == {"v": 1, "type": "dead_letter", "source": "binance",
                                              "reason": "malformed JSON", "raw": "{oops", "ts_recv_us": 7}
