import json
from decimal import Decimal

from arbitrage.events import FeedState, FeedStatus, Quote
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import parse_pair
from arbitrage.rules import RulesConfig
from arbitrage.spread import BUY_BINANCE_SELL_COINBASE as BN_CB
from arbitrage.spread import BUY_COINBASE_SELL_BINANCE as CB_BN
from arbitrage.windows import PairTracker, QuoteTick, SpreadRow, StatusTick, WindowEvent, sort_key

D = Decimal
MS = 1000
PAIR = parse_pair("BTC/USD=BTC/USD~BTC/USDT@1.0")
# No fees: net bps = gross bps, so the hand computations stay readable.
NO_FEES = RulesConfig(fees=FeeSchedule(coinbase=D(0), binance=D(0)), pairs=(PAIR,))


def cb(t_ms, bid, ask, bid_size="1", ask_size="1", seq=None):
    return QuoteTick("coinbase", "BTC/USD", D(bid), D(bid_size), D(ask), D(ask_size), t_ms * MS, seq)


def bn(t_ms, bid, ask, bid_size="1", ask_size="1", seq=None):
    return QuoteTick("binance", "BTC/USDT", D(bid), D(bid_size), D(ask), D(ask_size), t_ms * MS, seq)


def status(t_ms, exchange, state, symbol=None):
    return StatusTick(exchange, state, t_ms * MS, symbol)


def feed(tracker, ticks):
    out = []
    for tick in ticks:
        out += tracker.on_status(tick) if isinstance(tick, StatusTick) else tracker.on_quote(tick)
    return out


def events(out):
    return [(e.event, e.direction, e.start_ts_us // MS, e.close_reason) for e in out if isinstance(e, WindowEvent)]


def rows(out):
    return [e for e in out if isinstance(e, SpreadRow)]


def test_a_row_compares_the_new_quote_with_the_other_venues_latest_and_computes_fees_by_hand():
    rules = RulesConfig(pairs=(PAIR,))  # coinbase 0.006, binance 0.001
    tracker = PairTracker(PAIR, rules)

    out = feed(tracker, [cb(1000, "99.9", "100", ask_size="2"), bn(1100, "101", "101.1", bid_size="0.5", seq=7)])

    (row,) = rows(out)
    # buy Coinbase at 100, sell Binance at 101: edge = 101*0.999 - 100*1.006 = 0.299; / 100.6 * 1e4 = 29.72166998...
    assert row == SpreadRow(
        pair="BTC/USD", event_ts_us=1_100_000,
        coinbase_bid=D("99.9"), coinbase_bid_size=D(1), coinbase_ask=D(100), coinbase_ask_size=D(2),
        binance_bid=D(101), binance_bid_size=D("0.5"), binance_ask=D("101.1"), binance_ask_size=D(1),
        coinbase_ts_us=1_000_000, binance_ts_us=1_100_000, coinbase_age_ms=100, binance_age_ms=0,
        coinbase_seq=None, binance_seq=7,
        cb_bn_gross_bps=D("100.000000"), cb_bn_net_bps=D("29.721670"), cb_bn_size=D("0.5"), cb_bn_profit=D("0.1495"),
        # buy Binance at 101.1, sell Coinbase at 99.9: edge = 99.9*0.994 - 101.1*1.001 = -1.9005; / 101.2011 * 1e4
        bn_cb_gross_bps=D("-118.694362"), bn_cb_net_bps=D("-187.794401"), bn_cb_size=D(1), bn_cb_profit=D("-1.9005"),
    )
    assert events(out) == [("OPEN", CB_BN, 1100, None)]


def test_window_opens_extends_and_closes_on_spread_with_peak_and_mean():
    tracker = PairTracker(PAIR, NO_FEES)

    out = feed(tracker, [
        cb(0, "99.9", "100"),
        bn(100, "100.10", "100.2"),  # cb_bn 10 bps: OPEN
        cb(200, "99.9", "100"),  # 10 bps: extend
        bn(300, "100.20", "100.3"),  # 20 bps: extend, new peak
        bn(350, "100.20", "100.3", bid_size="3"),  # 20 bps again: a tie keeps the first peak's size
        bn(400, "100.02", "100.1"),  # 2 bps: CLOSE spread
    ])

    assert events(out) == [("OPEN", CB_BN, 100, None), ("CLOSE", CB_BN, 100, "spread")]
    close = out[-1]
    assert close == WindowEvent(
        window_id="BTC/USD|buy_coinbase_sell_binance|100000", pair="BTC/USD", direction=CB_BN, event="CLOSE",
        start_ts_us=100_000, end_ts_us=400_000, duration_ms=300, peak_net_bps=D("20.000000"),
        mean_net_bps=D("15.000000"), size_at_peak=D(1), profit_at_peak=D("0.2"), ticks=4, close_reason="spread",
    )
    assert tracker.open_windows == ()


def test_open_event_is_emitted_by_the_opening_tick_itself():
    tracker = PairTracker(PAIR, NO_FEES)

    assert events(tracker.on_quote(cb(0, "99.9", "100"))) == []
    out = tracker.on_quote(bn(100, "100.10", "100.2"))

    assert [type(e) for e in out] == [SpreadRow, WindowEvent]
    assert out[1].event == "OPEN" and out[1].ticks == 1 and out[1].peak_net_bps == out[1].mean_net_bps == D(10)


def test_reverse_direction_opens_when_coinbase_bid_beats_binance_ask():
    tracker = PairTracker(PAIR, NO_FEES)

    out = feed(tracker, [bn(0, "99.9", "100"), cb(1, "100.10", "100.2")])

    assert events(out) == [("OPEN", BN_CB, 1, None)]
    assert rows(out)[0].bn_cb_net_bps == D("10.000000")


def test_stale_close_fires_at_the_deadline_of_the_older_side():
    tracker = PairTracker(PAIR, NO_FEES)
    feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2")])

    assert tracker.next_deadline_us() == 500_000  # min(0, 100 ms) + 500 ms
    assert tracker.advance_to(499_999) == []
    (close,) = tracker.advance_to(500_000)

    assert (close.close_reason, close.end_ts_us, close.duration_ms, close.ticks) == ("stale", 500_000, 400, 1)
    assert tracker.next_deadline_us() is None


def test_quote_exactly_at_the_deadline_is_still_compared_then_the_window_goes_stale():
    tracker = PairTracker(PAIR, NO_FEES)

    out = feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2"), bn(500, "100.10", "100.2")])
    out += tracker.advance_to(500_000)

    assert [r.coinbase_age_ms for r in rows(out)] == [100, 500]
    assert events(out) == [("OPEN", CB_BN, 100, None), ("CLOSE", CB_BN, 100, "stale")]
    assert out[-1].ticks == 2 and out[-1].end_ts_us == 500_000


def test_a_quote_after_the_deadline_first_closes_as_stale_and_makes_no_row():
    tracker = PairTracker(PAIR, NO_FEES)
    feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2")])

    out = tracker.on_quote(bn(501, "100.10", "100.2"))

    assert rows(out) == []
    assert events(out) == [("CLOSE", CB_BN, 100, "stale")] and out[0].end_ts_us == 500_000


def test_refreshing_the_older_side_moves_the_deadline():
    tracker = PairTracker(PAIR, NO_FEES)
    feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2"), cb(400, "99.9", "100")])

    assert tracker.next_deadline_us() == 600_000
    assert tracker.advance_to(599_999) == []


def test_feed_gap_closes_at_once_and_blocks_comparisons_until_a_newer_quote():
    tracker = PairTracker(PAIR, NO_FEES)
    feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2")])

    closed = tracker.on_status(status(200, "binance", FeedState.GAP))
    no_row = tracker.on_quote(cb(250, "99.9", "100"))
    reopened = tracker.on_quote(bn(300, "100.10", "100.2"))

    assert events(closed) == [("CLOSE", CB_BN, 100, "feed_gap")] and closed[0].end_ts_us == 200_000
    assert no_row == []
    assert events(reopened) == [("OPEN", CB_BN, 300, None)]


def test_disconnect_and_stale_statuses_give_their_close_reasons():
    for state, reason in ((FeedState.DISCONNECTED, "feed_disconnect"), (FeedState.STALE, "stale")):
        tracker = PairTracker(PAIR, NO_FEES)
        feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2")])

        assert events(tracker.on_status(status(150, "coinbase", state))) == [("CLOSE", CB_BN, 100, reason)]


def test_harmless_statuses_and_other_symbols_change_nothing():
    tracker = PairTracker(PAIR, NO_FEES)
    feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2")])

    assert tracker.on_status(status(110, "binance", FeedState.RESYNCED)) == []
    assert tracker.on_status(status(120, "binance", FeedState.GAP, symbol="ETH/USDT")) == []
    assert tracker.open_windows == (CB_BN,)
    assert events(tracker.on_status(status(130, "binance", FeedState.GAP, symbol="BTC/USDT")))[0][3] == "feed_gap"


def test_crossed_quotes_are_never_compared_and_keep_the_previous_quote():
    tracker = PairTracker(PAIR, NO_FEES)
    feed(tracker, [cb(0, "99.9", "100")])

    crossed = tracker.on_quote(bn(100, "101", "100.5"))  # bid > ask
    good = tracker.on_quote(bn(200, "100.10", "100.2"))
    after = tracker.on_quote(cb(300, "100.5", "100.4"))  # crossed coinbase: cb(0) stays the latest

    assert crossed == []
    assert rows(good)[0].coinbase_ts_us == 0
    assert after == []
    assert tracker.next_deadline_us() == 500_000


def test_binance_prices_are_converted_into_the_pairs_quote_currency():
    pair = parse_pair("BTC/EUR=BTC/EUR~BTC/USDT@0.5")
    rules = RulesConfig(fees=NO_FEES.fees, pairs=(pair,))
    tracker = PairTracker(pair, rules)

    tracker.on_quote(QuoteTick("coinbase", "BTC/EUR", D("99.9"), D(1), D(100), D(1), 0, None))
    (row, opened) = tracker.on_quote(QuoteTick("binance", "BTC/USDT", D("200.2"), D(1), D("200.4"), D(1), 1000, None))

    assert (row.binance_bid, row.binance_ask) == (D("100.1"), D("100.2"))
    assert row.cb_bn_net_bps == D("10.000000") and opened.event == "OPEN"


def test_state_round_trip_through_json_continues_exactly():
    ticks = [
        cb(0, "99.9", "100"), bn(100, "100.10", "100.2"), cb(200, "99.9", "100"),
        bn(300, "100.20", "100.3"), cb(350, "100.4", "100.5"), bn(700, "100.02", "100.1"), cb(800, "99.9", "100"),
        bn(900, "100.3", "100.4"), status(950, "coinbase", FeedState.GAP), cb(960, "99.9", "100"),
    ]
    whole = PairTracker(PAIR, NO_FEES)
    expected = feed(whole, ticks) + whole.advance_to(2_000_000)

    first = PairTracker(PAIR, NO_FEES)
    got = feed(first, ticks[:4])
    restored = PairTracker.from_state(PAIR, NO_FEES, json.loads(json.dumps(first.to_state())))
    got += feed(restored, ticks[4:]) + restored.advance_to(2_000_000)

    assert got == expected
    assert len(events(expected)) >= 4


def test_late_ticks_are_dropped_and_counted():
    tracker = PairTracker(PAIR, NO_FEES)
    feed(tracker, [cb(0, "99.9", "100"), bn(100, "100.10", "100.2")])
    tracker.advance_to(200_000)

    assert tracker.on_quote(cb(150, "99.9", "100")) == []
    assert tracker.on_quote(cb(200, "99.9", "100")) == []
    assert tracker.late_ticks == 2
    assert len(rows(tracker.on_quote(cb(201, "99.9", "100")))) == 1


def test_sort_key_puts_status_before_quote_and_binance_before_coinbase_at_the_same_time():
    ticks = [cb(5, "1", "2", seq=2), cb(5, "1", "2", seq=1), bn(5, "1", "2"), status(5, "coinbase", FeedState.GAP),
             bn(4, "1", "2")]

    ordered = sorted(ticks, key=sort_key)

    assert ordered == [ticks[4], ticks[3], ticks[2], ticks[1], ticks[0]]


def test_ticks_from_events_use_exchange_time_or_receive_time():
    quote = Quote("binance", "BTC/USDT", "BTCUSDT", D(1), D(1), D(2), D(1), None, 77, 5)
    stat = FeedStatus("binance", FeedState.GAP, "seq jump", 99)

    assert QuoteTick.from_quote(quote).event_ts_us == 77
    assert StatusTick.from_status(stat) == StatusTick("binance", FeedState.GAP, 99, None)
