"""The Coinbase L2 book, its one-quote-per-top-change rule, and the sequence gap rule."""

from decimal import Decimal

import orjson
import pytest

from arbitrage.events import FeedState, FeedStatus, Quote
from producers.book import L2Book, SequenceCheck
from producers.coinbase import Coinbase
from producers.feed import Gap
from tests.unit.producer_helpers import COINBASE_CAPTURE, capture, coinbase_markets, replay

D = Decimal


def snapshot(product="NU-GBP", bids=(("1.00", "5"), ("0.90", "2")), asks=(("1.10", "1"), ("1.20", "3"))):
    return orjson.dumps({"type": "snapshot", "product_id": product, "bids": bids, "asks": asks}).decode()


def update(*changes, product="NU-GBP", time="2021-04-17T16:43:37.080304Z"):
    return orjson.dumps({"type": "l2update", "product_id": product, "changes": changes, "time": time}).decode()


def match(trade_id, sequence, product="NU-GBP"):
    return orjson.dumps({"type": "match", "trade_id": trade_id, "side": "buy", "size": "1", "price": "1.05",
                         "product_id": product, "sequence": sequence, "time": "2021-04-17T16:43:37Z"}).decode()


def heartbeat(last_trade_id, sequence, product="NU-GBP"):
    return orjson.dumps({"type": "heartbeat", "last_trade_id": last_trade_id, "sequence": sequence,
                         "product_id": product, "time": "2021-04-17T16:43:37Z"}).decode()


@pytest.fixture
def feed() -> Coinbase:
    return Coinbase(coinbase_markets(), ["NU/GBP"])


def test_book_top_after_known_changes():
    book = L2Book()
    book.load([(D("1.00"), D("5")), (D("0.90"), D("2")), (D("0.80"), D("0"))], [(D("1.10"), D("1"))])
    book.apply(True, D("1.00"), D("0"))  # best bid removed
    book.apply(False, D("1.05"), D("4"))  # better ask
    book.apply(True, D("0.95"), D("7"))  # new best bid
    book.apply(False, D("1.10"), D("9"))  # size change away from the top
    assert book.top() == (D("0.95"), D("7"), D("1.05"), D("4"))
    assert book.depth() == (2, 2)  # the zero-size snapshot level was never stored


def test_book_with_an_empty_side_has_no_top():
    book = L2Book()
    book.load([(D("1"), D("1"))], [])
    assert book.top() is None


def test_removing_a_level_that_is_not_there_changes_nothing():
    book = L2Book()
    book.load([(D("1"), D("1"))], [(D("2"), D("1"))])
    book.apply(True, D("0.5"), D("0"))
    assert book.top() == (D("1"), D("1"), D("2"), D("1"))


def test_quote_only_when_the_top_changes(feed):
    (first,) = feed.parse(snapshot(), 1)
    assert (first.bid, first.bid_size, first.ask, first.ask_size) == (D("1.00"), D("5"), D("1.10"), D("1"))
    assert feed.parse(update(["buy", "0.90", "3"]), 2) == []  # below the top: no quote
    (second,) = feed.parse(update(["buy", "1.00", "6"]), 3)  # top bid size changed
    assert (second.bid_size, second.ts_event_us) == (D("6"), 1618677817080304)
    assert feed.parse(update(["sell", "1.10", "1"]), 4) == []  # same size re-sent: top unchanged


def test_no_quote_while_one_side_is_empty(feed):
    assert feed.parse(snapshot(asks=()), 1) == []
    (quote,) = feed.parse(update(["sell", "1.5", "2"]), 2)
    assert (quote.bid, quote.ask) == (D("1.00"), D("1.5"))


def test_l2update_before_any_snapshot_is_ignored(feed):
    assert feed.parse(update(["buy", "1", "1"]), 1) == []


def test_every_capture_quote_matches_a_naive_dict_book():
    """Oracle: a dict per side, max/min over it after every book message."""
    feed = Coinbase(coinbase_markets())
    books, last_top, expected, got = {}, {}, [], []
    for raw, recv in capture(COINBASE_CAPTURE):
        msg = orjson.loads(raw)
        got += [e for e in feed.parse(raw, recv) if isinstance(e, Quote)]
        pid = msg.get("product_id")
        if msg["type"] == "snapshot":
            books[pid] = ({D(p): D(s) for p, s in msg["bids"]}, {D(p): D(s) for p, s in msg["asks"]})
        elif msg["type"] == "l2update":
            for side, p, s in msg["changes"]:
                books[pid][0 if side == "buy" else 1][D(p)] = D(s)
        else:
            continue
        bids = {p: s for p, s in books[pid][0].items() if s > 0}
        asks = {p: s for p, s in books[pid][1].items() if s > 0}
        if bids and asks:
            top = (max(bids), bids[max(bids)], min(asks), asks[min(asks)])
            if top != last_top.get(pid):
                last_top[pid] = top
                expected.append((pid, *top))
    assert len(expected) == 455
    assert [(q.venue_symbol, q.bid, q.bid_size, q.ask, q.ask_size) for q in got] == expected


def test_capture_book_top_at_the_end_of_band_gbp():
    feed = Coinbase(coinbase_markets())
    tops = {}
    for raw, recv in capture(COINBASE_CAPTURE):
        for e in feed.parse(raw, recv):
            if isinstance(e, Quote):
                tops[e.symbol] = (e.bid, e.bid_size, e.ask, e.ask_size)
    assert tops["BAND/GBP"] == (D("14.7366"), D("27.57"), D("14.7664"), D("12.00"))


# -- the gap rule ----------------------------------------------------------------------------------------------------


def test_consecutive_trade_ids_are_no_gap():
    check = SequenceCheck()
    assert check.match(10, 1000) == (True, None)
    assert check.match(11, 1500) == (True, None)  # sequence jumps are normal: it counts every book event
    assert check.heartbeat(11, 1600) is None


def test_skipped_trade_id_is_a_gap():
    check = SequenceCheck()
    check.match(10, 1000)
    assert check.match(13, 1100) == (True, Gap("trade_id 13 after 10 (2 missed)", 11, 12))


def test_heartbeat_announcing_an_unseen_trade_is_a_gap():
    check = SequenceCheck()
    check.match(10, 1000)
    assert check.heartbeat(11, 1200) == Gap("heartbeat last_trade_id 11 after trade 10 (1 missed)", 11, 11)


def test_sequence_going_backwards_is_a_gap():
    check = SequenceCheck()
    check.heartbeat(0, 500)
    assert check.heartbeat(0, 400) == Gap("sequence 400 after 500")


def test_heartbeat_before_any_trade_sets_no_baseline():
    check = SequenceCheck()
    assert check.heartbeat(99, 5) is None
    assert check.match(100, 6) == (True, None)


def test_gap_drops_the_book_asks_for_a_resubscribe_and_the_snapshot_resyncs(feed):
    feed.parse(snapshot(), 1)
    feed.parse(match(1, 10), 2)
    events = feed.parse(match(3, 20), 3)  # trade 2 was lost
    gap = events[0]
    assert isinstance(gap, FeedStatus) and (gap.state, gap.symbol) == (FeedState.GAP, "NU/GBP")
    assert feed.pending and feed.awaiting_snapshot() == ["NU/GBP"]
    assert feed.take_requests() == (["NU/GBP"], None)
    assert feed.parse(update(["buy", "1.05", "1"]), 4) == []  # no book: no quote until the fresh snapshot
    resynced, quote = feed.parse(snapshot(bids=(("1.01", "1"),)), 5)
    assert (resynced.state, resynced.symbol) == (FeedState.RESYNCED, "NU/GBP")
    assert (quote.bid, quote.ask) == (D("1.01"), D("1.10"))
    assert feed.awaiting_snapshot() == []


def test_resubscribe_messages_unsubscribe_and_subscribe_the_book_channel(feed):
    msgs = [orjson.loads(m) for m in feed.resubscribe_messages(["NU/GBP"])]
    assert msgs == [
        {"type": "unsubscribe", "product_ids": ["NU-GBP"], "channels": ["level2_batch"]},
        {"type": "subscribe", "product_ids": ["NU-GBP"], "channels": ["level2_batch"]},
    ]


def test_reconnect_snapshot_reports_resynced_and_last_match_is_not_repeated(feed):
    feed.parse(snapshot(), 1)
    assert len(feed.parse(match(5, 10), 2)) == 1
    feed.on_connect()  # a new connection
    assert feed.parse(match(5, 10), 3) == []  # the `last_match` re-sent on subscribe
    statuses = [e for e in feed.parse(snapshot(), 4) if isinstance(e, FeedStatus)]
    assert [s.state for s in statuses] == [FeedState.RESYNCED]
    assert len(feed.parse(match(6, 11), 5)) == 1


# -- trades lost while reconnecting (the last trade id is kept across connections) ------------------------------------


def _match_frames(frames, product):
    return [i for i, (raw, _) in enumerate(frames) if f'"product_id":"{product}"' in raw and 'match"' in raw]


def test_capture_replayed_over_a_reconnect_without_loss_reports_no_gap():
    frames = capture(COINBASE_CAPTURE)
    feed = Coinbase(coinbase_markets(), ["BAND/BTC", "BAND/GBP", "NU/GBP", "YFI/BTC", "CRV/EUR"])
    cut = _match_frames(frames, "BAND-BTC")[3]  # after the capture's fourth BAND-BTC trade
    before, _ = replay(feed, frames[:cut])
    feed.on_connect()
    after, _ = replay(feed, [frames[0]] + frames[cut:])  # the new connection's subscriptions reply, then the rest
    gaps = [e for e in before + after if isinstance(e, FeedStatus) and e.state is FeedState.GAP]
    trades = [e.trade_id for e in before + after if e.type == "trade" and e.symbol == "BAND/BTC"]
    assert gaps == []
    assert trades == [str(i) for i in range(1287325, 1287334)]  # each once, in order


def test_capture_with_trades_lost_during_a_reconnect_reports_one_gap_with_their_ids():
    frames = capture(COINBASE_CAPTURE)
    feed = Coinbase(coinbase_markets(), ["BAND/BTC", "BAND/GBP", "NU/GBP", "YFI/BTC", "CRV/EUR"])
    band_btc = _match_frames(frames, "BAND-BTC")
    lost_from, lost_to = band_btc[2], band_btc[4]  # trades 1287327 and 1287328 were in flight on the cut connection
    replay(feed, frames[:lost_from])
    feed.on_connect()
    events, _ = replay(feed, frames[lost_to:])
    gaps = [e for e in events if isinstance(e, FeedStatus) and e.state is FeedState.GAP]
    assert [(g.symbol, g.missed_trades, g.first_missed_trade_id, g.last_missed_trade_id) for g in gaps] == [
        ("BAND/BTC", 2, 1287327, 1287328)]
    assert gaps[0].detail == "trade_id 1287329 after 1287326 (2 missed while disconnected)"
    assert not feed.pending  # the lost trades do not make the new connection's book suspect


def test_last_match_after_a_reconnect_reports_the_trades_missed_while_disconnected(feed):
    feed.parse(snapshot(), 1)
    feed.parse(match(5, 10), 2)
    feed.on_connect()
    feed.parse(snapshot(), 3)
    gap, trade = feed.parse(match(9, 40), 4)  # the new connection's last_match: 6, 7 and 8 went by meanwhile
    assert (gap.state, gap.missed_trades, gap.first_missed_trade_id, gap.last_missed_trade_id) == (
        FeedState.GAP, 3, 6, 8)
    assert trade.trade_id == "9"
    assert feed.parse(heartbeat(9, 41), 5) == []
