"""The Coinbase parser on the real 2021-04-17 capture and on hand-made bad frames."""

from collections import Counter
from decimal import Decimal

import orjson
import pytest

from arbitrage.events import FeedState, Quote, Side, Trade, to_json
from producers.coinbase import Coinbase
from producers.feed import BadFrame
from tests.unit.producer_helpers import COINBASE_CAPTURE, capture, coinbase_markets, replay


@pytest.fixture
def feed() -> Coinbase:
    return Coinbase(coinbase_markets(), ["BAND/GBP", "NU/GBP"])


def test_capture_yields_455_quotes_and_18_trades_without_bad_frames(feed):
    events, bad = replay(feed, capture(COINBASE_CAPTURE))
    kinds = Counter(type(e).__name__ for e in events)
    assert bad == []
    assert kinds == {"Quote": 455, "Trade": 18, "FeedStatus": 1}  # 1: the first `subscriptions` reply
    quotes_per_symbol = Counter(e.symbol for e in events if isinstance(e, Quote))
    assert quotes_per_symbol == {"BAND/GBP": 145, "BAND/BTC": 124, "CRV/EUR": 94, "YFI/BTC": 84, "NU/GBP": 8}


def test_first_quote_is_band_gbp_snapshot_top(feed):
    events, _ = replay(feed, capture(COINBASE_CAPTURE))
    first = next(e for e in events if isinstance(e, Quote))
    assert first == Quote(
        exchange="coinbase", symbol="BAND/GBP", venue_symbol="BAND-GBP",
        bid=Decimal("14.7693"), bid_size=Decimal("27.51"), ask=Decimal("14.8024"), ask_size=Decimal("12.77"),
        ts_event_us=None, ts_recv_us=1618677817077736, seq=None,
    )


def test_removing_best_ask_quotes_next_level_with_exchange_time_in_microseconds(feed):
    # First top change by an l2update: BAND-GBP ask 14.8024 removed at 16:43:37.287488Z; the snapshot's second ask
    # level (14.8069 x 12.49) becomes the top.
    events, _ = replay(feed, capture(COINBASE_CAPTURE))
    timed = next(e for e in events if isinstance(e, Quote) and e.ts_event_us is not None)
    assert (timed.symbol, timed.ask, timed.ask_size, timed.bid) == ("BAND/GBP", Decimal("14.8069"), Decimal("12.49"),
                                                                   Decimal("14.7693"))
    assert timed.ts_event_us == 1618677817_287488  # 2021-04-17T16:43:37Z is 1618677817 s


def test_match_side_sell_is_a_taker_buy_with_trade_id_sequence_and_time(feed):
    raw = ('{"type":"match","trade_id":563679,"maker_order_id":"m","taker_order_id":"t","side":"sell",'
           '"size":"805.131","price":"0.4393","product_id":"NU-GBP","sequence":108779633,'
           '"time":"2021-04-17T16:43:46.345172Z"}')
    (trade,) = feed.parse(raw, 1618677826340048)
    assert trade == Trade(
        exchange="coinbase", symbol="NU/GBP", venue_symbol="NU-GBP", price=Decimal("0.4393"),
        size=Decimal("805.131"), side=Side.BUY, trade_id="563679", ts_event_us=1618677826345172,
        ts_recv_us=1618677826340048, seq=108779633,
    )


def test_last_match_side_buy_is_a_taker_sell(feed):
    events, _ = replay(feed, capture(COINBASE_CAPTURE))
    yfi = [e for e in events if isinstance(e, Trade) and e.symbol == "YFI/BTC"]
    assert [(t.trade_id, t.side) for t in yfi] == [("889760", Side.SELL)]  # feed side "buy" = maker bought


def test_trade_sides_in_capture_are_the_opposite_of_the_feed_side(feed):
    frames = capture(COINBASE_CAPTURE)
    feed_sides = {}
    for raw, _ in frames:
        msg = orjson.loads(raw)
        if msg["type"] in ("match", "last_match"):
            feed_sides[str(msg["trade_id"])] = msg["side"]
    events, _ = replay(feed, frames)
    opposite = {"buy": Side.SELL, "sell": Side.BUY}
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) == len(feed_sides) == 18
    assert all(t.side == opposite[feed_sides[t.trade_id]] for t in trades)


def test_same_trade_id_twice_is_published_once(feed):
    raw = ('{"type":"match","trade_id":7,"side":"buy","size":"1","price":"2","product_id":"NU-GBP",'
           '"sequence":100,"time":"2021-04-17T16:43:46Z"}')
    assert len(feed.parse(raw, 1)) == 1
    assert feed.parse(raw, 2) == []


def test_wire_form_of_a_quote_is_the_schema_with_decimal_strings(feed):
    events, _ = replay(feed, capture(COINBASE_CAPTURE)[:3])
    assert orjson.loads(to_json(events[-1])) == {
        "v": 1, "type": "quote", "exchange": "coinbase", "symbol": "BAND/GBP", "venue_symbol": "BAND-GBP",
        "bid": "14.7693", "bid_size": "27.51", "ask": "14.8024", "ask_size": "12.77",
        "ts_event_us": None, "ts_recv_us": 1618677817077736, "seq": None,
    }


def test_subscriptions_reply_reports_subscribed_once_per_connection(feed):
    reply = '{"type":"subscriptions","channels":[]}'
    (status,) = feed.parse(reply, 5)
    assert (status.state, status.exchange) == (FeedState.SUBSCRIBED, "coinbase")
    assert feed.parse(reply, 6) == []
    feed.on_connect()
    assert [s.state for s in feed.parse(reply, 7)] == [FeedState.SUBSCRIBED]


def test_ticker_and_heartbeat_are_skipped_quietly(feed):
    assert feed.parse('{"type":"ticker","product_id":"NU-GBP","price":"1"}', 1) == []
    beat = '{"type":"heartbeat","sequence":5,"last_trade_id":1,"product_id":"NU-GBP","time":"2021-04-17T16:43:46.1Z"}'
    assert feed.parse(beat, 1) == []


BAD_FRAMES = [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"type":"mystery","product_id":"NU-GBP"}', "unknown message type 'mystery'"),
    ('{"type":"match","trade_id":1,"side":"buy","size":"1","price":"abc","product_id":"NU-GBP","sequence":1,'
     '"time":"2021-04-17T16:43:46Z"}', "non-numeric price 'abc'"),
    ('{"type":"match","trade_id":1,"side":"buy","size":"1","price":"-2.5","product_id":"NU-GBP","sequence":1,'
     '"time":"2021-04-17T16:43:46Z"}', "non-positive price '-2.5'"),
    ('{"type":"match","trade_id":1,"side":"buy","size":"1","price":"NaN","product_id":"NU-GBP","sequence":1,'
     '"time":"2021-04-17T16:43:46Z"}', "non-numeric price 'NaN'"),
    ('{"type":"match","trade_id":1,"side":"buy","size":"1","price":2.5,"product_id":"NU-GBP","sequence":1,'
     '"time":"2021-04-17T16:43:46Z"}', "non-numeric price 2.5"),
    ('{"type":"match","trade_id":1,"side":"buy","size":"1","price":"2","product_id":"DOGE-XYZ","sequence":1,'
     '"time":"2021-04-17T16:43:46Z"}', "unknown symbol 'DOGE-XYZ'"),
    ('{"type":"l2update","product_id":"NU-GBP","changes":[["buy","0.43","-1"]],"time":"2021-04-17T16:43:46Z"}',
     "negative size '-1'"),
    ('{"type":"l2update","product_id":"NU-GBP","changes":[["up","0.43","1"]],"time":"2021-04-17T16:43:46Z"}',
     "l2update side 'up'"),
    ('{"type":"match","trade_id":1,"side":"buy","size":"1","price":"2","product_id":"NU-GBP","sequence":1,'
     '"time":"yesterday"}', "bad time 'yesterday'"),
    ('{"type":"match","trade_id":1,"side":"buy","price":"2","product_id":"NU-GBP","sequence":1}',
     "match without 'size'"),
    ('{"type":"error","message":"Failed to subscribe","reason":"level2 requires authentication"}',
     "exchange error: 'Failed to subscribe' 'level2 requires authentication'"),
]


@pytest.mark.parametrize(("frame", "reason"), BAD_FRAMES, ids=[r for _, r in BAD_FRAMES])
def test_bad_frame_raises_badframe_with_its_reason(feed, frame, reason):
    with pytest.raises(BadFrame) as info:
        feed.parse(frame, 1)
    assert info.value.reason == reason


def test_bad_l2update_changes_nothing_in_the_book(feed):
    feed.parse('{"type":"snapshot","product_id":"NU-GBP","bids":[["1.0","5"]],"asks":[["2.0","5"]]}', 1)
    bad = '{"type":"l2update","product_id":"NU-GBP","changes":[["buy","1.5","3"],["sell","x","1"]],"time":"2021-04-17T16:43:46Z"}'
    with pytest.raises(BadFrame):
        feed.parse(bad, 2)
    good = '{"type":"l2update","product_id":"NU-GBP","changes":[["sell","1.9","1"]],"time":"2021-04-17T16:43:46Z"}'
    (quote,) = feed.parse(good, 3)
    assert (quote.bid, quote.ask) == (Decimal("1.0"), Decimal("1.9"))  # the bad frame's 1.5 bid was not applied


def test_parser_keeps_going_after_bad_frames(feed):
    frames = capture(COINBASE_CAPTURE)
    noisy = []
    for i, frame in enumerate(frames):
        noisy.append(frame)
        if i % 100 == 0:
            noisy.append(("{garbage", frame[1]))
    events, bad = replay(feed, noisy)
    assert len(bad) == len(range(0, len(frames), 100))
    assert sum(isinstance(e, Quote) for e in events) == 455
