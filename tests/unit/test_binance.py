"""The Binance parser on the real 2021-10-12 capture and on hand-made bad frames."""

from collections import Counter
from decimal import Decimal

import orjson
import pytest

from arbitrage.events import FeedState, FeedStatus, Quote, Side, Trade
from producers.binance import Binance
from producers.feed import BadFrame
from tests.unit.producer_helpers import BINANCE_CAPTURE, binance_markets, capture, replay


@pytest.fixture
def feed() -> Binance:
    return Binance(binance_markets(), ["NKN/USDT", "LRC/BTC"])


def book_ticker(u, symbol="NKNUSDT", b="0.35210000", B="672.00000000", a="0.35260000", A="3199.00000000"):
    data = {"u": u, "s": symbol, "b": b, "B": B, "a": a, "A": A}
    return orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data}).decode()


def trade(t, m, symbol="NKNUSDT", p="0.35280000", q="58.00000000"):
    data = {"e": "trade", "E": 1633998523963, "s": symbol, "t": t, "p": p, "q": q, "T": 1633998523961, "m": m,
            "M": True}
    return orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": data}).decode()


def test_capture_yields_84_quotes_and_2_trades_and_skips_depth_and_kline(feed):
    events, bad = replay(feed, capture(BINANCE_CAPTURE))
    assert bad == []
    assert Counter((type(e).__name__, e.symbol) for e in events) == {
        ("Quote", "NKN/USDT"): 74, ("Quote", "LRC/BTC"): 9, ("Quote", "BLZ/ETH"): 1,
        ("Trade", "NKN/USDT"): 1, ("Trade", "LRC/BTC"): 1,
    }


def test_first_quote_is_the_first_book_ticker_without_event_time(feed):
    events, _ = replay(feed, capture(BINANCE_CAPTURE))
    assert events[0] == Quote(
        exchange="binance", symbol="NKN/USDT", venue_symbol="NKNUSDT", bid=Decimal("0.35210000"),
        bid_size=Decimal("672.00000000"), ask=Decimal("0.35260000"), ask_size=Decimal("3199.00000000"),
        ts_event_us=None, ts_recv_us=1633998513377805, seq=499869768,
    )


def test_agg_trade_with_m_false_is_a_taker_buy_with_trade_time(feed):
    events, _ = replay(feed, capture(BINANCE_CAPTURE))
    nkn = next(e for e in events if isinstance(e, Trade) and e.symbol == "NKN/USDT")
    assert nkn == Trade(
        exchange="binance", symbol="NKN/USDT", venue_symbol="NKNUSDT", price=Decimal("0.35280000"),
        size=Decimal("58.00000000"), side=Side.BUY, trade_id="15683430", ts_event_us=1633998523963000,
        ts_recv_us=1633998523957215, seq=15683430,
    )


def test_trade_with_m_true_buyer_was_maker_so_taker_sold(feed):
    (sold,) = feed.parse(trade(100, True), 1)
    (bought,) = feed.parse(trade(101, False), 2)
    assert (sold.side, bought.side) == (Side.SELL, Side.BUY)
    assert (sold.trade_id, sold.ts_event_us) == ("100", 1633998523961000)


def test_one_quote_per_update_id(feed):
    assert len(feed.parse(book_ticker(10), 1)) == 1
    assert feed.parse(book_ticker(10), 2) == []  # repeated
    assert feed.parse(book_ticker(9), 3) == []  # older
    assert len(feed.parse(book_ticker(11), 4)) == 1


def test_skipped_trade_id_reports_a_gap_and_still_publishes_the_trade(feed):
    feed.parse(trade(100, True), 1)
    gap, published = feed.parse(trade(103, True), 2)
    assert isinstance(gap, FeedStatus) and (gap.state, gap.symbol) == (FeedState.GAP, "NKN/USDT")
    assert gap.detail == "trade id 103 after 100 (2 missed)"
    assert published.trade_id == "103"


def test_reconnect_resets_update_ids_and_first_quote_reports_resynced(feed):
    feed.parse(book_ticker(10), 1)
    feed.on_connect()
    resynced, quote = feed.parse(book_ticker(5), 2)  # a new connection may start anywhere
    assert (resynced.state, resynced.symbol, quote.seq) == (FeedState.RESYNCED, "NKN/USDT", 5)
    assert len(feed.parse(book_ticker(6), 3)) == 1


def test_url_is_the_combined_stream_of_book_ticker_and_trade():
    feed = Binance(binance_markets(), ["NKN/USDT", "LRC/BTC"])
    assert feed.url() == (
        "wss://stream.binance.com:9443/stream?streams=nknusdt@bookTicker/nknusdt@trade/lrcbtc@bookTicker/lrcbtc@trade"
    )
    assert feed.url("ws://127.0.0.1:8702/").startswith("ws://127.0.0.1:8702/stream?streams=nknusdt@bookTicker")


@pytest.mark.parametrize("frame", [
    '{"e":"serverShutdown","E":1770123456789}',
    '{"event":{"e":"serverShutdown","E":1770123456789}}',
    '{"stream":"x","data":{"e":"serverShutdown","E":1770123456789}}',
])
def test_server_shutdown_requests_a_reconnect(feed, frame):
    assert feed.parse(frame, 1) == []
    assert feed.pending and feed.take_requests() == ([], "serverShutdown")


def test_subscribe_reply_is_skipped_quietly(feed):
    assert feed.parse('{"result":null,"id":1}', 1) == []


BAD_FRAMES = [
    ('{"stream":"nknusdt@bookTicker","data":', "malformed JSON"),
    ('"hello"', "not a JSON object"),
    ('{"stream":"nknusdt@mystery","data":{}}', "unknown stream 'nknusdt@mystery'"),
    ('{"foo":1}', "not a combined-stream message"),
    (book_ticker(1, b="abc"), "non-numeric bid 'abc'"),
    (book_ticker(1, a="-0.1"), "non-positive ask '-0.1'"),
    (book_ticker(1, B="-5"), "negative bid size '-5'"),
    (book_ticker(1, a="0"), "non-positive ask '0'"),
    (book_ticker(1, symbol="DOGEXYZ"), "unknown symbol 'DOGEXYZ'"),
    (trade(1, "yes"), "m is not a boolean: 'yes'"),
    (trade(1, True, p="Infinity"), "non-numeric price 'Infinity'"),
    ('{"stream":"nknusdt@bookTicker","data":{"u":1,"s":"NKNUSDT"}}', "bookTicker without 'b'"),
    ('{"code":2,"msg":"Invalid request"}', "exchange error 2: 'Invalid request'"),
]


@pytest.mark.parametrize(("frame", "reason"), BAD_FRAMES, ids=[r for _, r in BAD_FRAMES])
def test_bad_frame_raises_badframe_with_its_reason(feed, frame, reason):
    with pytest.raises(BadFrame) as info:
        feed.parse(frame, 1)
    assert info.value.reason == reason


# -- trades lost while reconnecting (the last trade id is kept across connections) ------------------------------------


def _capture_trade(channel: str, trade_id: int) -> str:
    """The capture's NKNUSDT aggTrade frame, renumbered (as `trade`: the same fields with `t` for the id)."""
    raw = next(raw for raw, _ in capture(BINANCE_CAPTURE) if '"nknusdt@aggTrade"' in raw)
    data = orjson.loads(raw)["data"]
    if channel == "aggTrade":
        data.update(a=trade_id)
    else:
        data = {k: v for k, v in data.items() if k not in ("a", "f", "l")} | {"e": "trade", "t": trade_id}
    return orjson.dumps({"stream": f"nknusdt@{channel}", "data": data}).decode()


@pytest.mark.parametrize("channel", ["trade", "aggTrade"])
def test_reconnect_without_lost_trades_reports_no_gap(feed, channel):
    first = 15683430
    assert len(feed.parse(_capture_trade(channel, first), 1)) == 1
    feed.on_connect()
    events = feed.parse(_capture_trade(channel, first + 1), 2)
    assert [(e.type, e.trade_id) for e in events] == [("trade", str(first + 1))]


@pytest.mark.parametrize("channel", ["trade", "aggTrade"])
def test_trades_lost_during_a_reconnect_are_one_gap_with_their_count_and_ids(feed, channel):
    first = 15683430
    feed.parse(_capture_trade(channel, first), 1)
    feed.on_connect()
    assert feed.parse(_capture_trade(channel, first), 2) == []  # an id already published is not published again
    gap, trade = feed.parse(_capture_trade(channel, first + 4), 3)  # 3 trades went by while reconnecting
    assert (gap.state, gap.symbol, gap.missed_trades, gap.first_missed_trade_id, gap.last_missed_trade_id) == (
        FeedState.GAP, "NKN/USDT", 3, first + 1, first + 3)
    assert gap.detail == f"{channel} id {first + 4} after {first} (3 missed while disconnected)"
    assert trade.trade_id == str(first + 4)
    assert feed.parse(_capture_trade(channel, first + 5), 4)[0].type == "trade"  # and nothing more after it


def test_the_capture_replayed_over_a_reconnect_reports_no_gap():
    frames = capture(BINANCE_CAPTURE)
    feed = Binance(binance_markets(), ["NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR"])
    before, _ = replay(feed, frames[:150])
    feed.on_connect()
    after, _ = replay(feed, frames[150:])
    assert [e for e in before + after if isinstance(e, FeedStatus) and e.state is FeedState.GAP] == []
    assert sum(e.type == "trade" for e in before + after) == 2
