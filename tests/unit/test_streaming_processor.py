"""The hot-path processor's per-pair state without Spark: buffering until the watermark, order, dedupe, timers."""

from __future__ import annotations

from decimal import Decimal

from arbitrage.events import FeedState
from arbitrage.rules import RulesConfig
from arbitrage.windows import PairTracker, QuoteTick, StatusTick
from streaming.hotpath import PairState, output_frame, output_rows
from streaming.sinks import alert_line

RULES = RulesConfig()
PAIR = RULES.pair("BTC/USD")
D = Decimal


def quote(exchange: str, t_us: int, bid: str, ask: str, seq: int) -> QuoteTick:
    symbol = PAIR.symbol_on(exchange)
    return QuoteTick(exchange, symbol, D(bid), D("1"), D(ask), D("2"), t_us, seq)


def test_ticks_wait_for_the_watermark_then_run_in_rules_order_whatever_order_they_arrived_in():
    # Arrange: a lifted Binance bid (a buy-Coinbase window) arriving before the Coinbase quote it follows.
    state = PairState(PairTracker(PAIR, RULES), [], None)
    state.add([quote("binance", 2_000, "65800", "65801", 2), quote("binance", 500, "65000", "65001", 1)])
    state.add([quote("coinbase", 1_000, "65000", "65001", 7), quote("binance", 2_000, "65800", "65801", 2)])

    # Act
    before = state.release(400)
    after = state.release(5_000)

    # Assert: nothing before the watermark; then one row per tick after the first pair, the OPEN at t=2000.
    assert before == []
    assert [type(x).__name__ for x in after] == ["SpreadRow", "SpreadRow", "WindowEvent"]
    assert [x.event_ts_us for x in after[:2]] == [1_000, 2_000]
    assert after[2].event == "OPEN" and after[2].start_ts_us == 2_000
    assert state.buffer == []
    assert state.wanted_timer_ms() == 501  # the stale deadline min(1000, 2000) µs + 500 ms, in ms rounded up


def test_state_survives_a_json_round_trip_and_a_gap_closes_the_window_at_once():
    state = PairState(PairTracker(PAIR, RULES), [], None)
    state.add([quote("coinbase", 1_000, "65000", "65001", 7), quote("binance", 2_000, "65800", "65801", 2)])
    state.release(3_000)
    state.add([StatusTick("binance", FeedState.GAP, 4_000, "BTC/USDT")])

    restored = PairState.load(state.dump(), PAIR, RULES)
    events = restored.release(10_000)

    assert [(e.event, e.close_reason, e.end_ts_us) for e in events] == [("CLOSE", "feed_gap", 4_000)]


def test_output_rows_and_alert_line_carry_the_window_in_the_documented_format():
    state = PairState(PairTracker(PAIR, RULES), [], None)
    state.add([quote("coinbase", 1_000, "65000", "65001", 7), quote("binance", 2_000, "65800", "65801", 2)])
    items = state.release(3_000)
    frame = output_frame(output_rows(items, emitted_us=9_000))
    window = frame[frame.kind == "window"].iloc[0].to_dict()

    line = alert_line(window, emitted_us=1_795_308_000_123_000)

    def plain(text: str) -> str:  # the alert's money: shortest plain form (docs/DATA_MODEL.md: "12.4", not "12.400000")
        return format(Decimal(text).normalize(), "f")

    assert window["profit_at_peak"] == "343.194000000000" and plain(window["profit_at_peak"]) == "343.194"
    assert line == {
        "v": 1, "type": "arb_window", "event": "OPEN", "window_id": "BTC/USD|buy_coinbase_sell_binance|2000",
        "pair": "BTC/USD", "direction": "buy_coinbase_sell_binance", "net_bps": plain(window["peak_net_bps"]),
        "peak_net_bps": plain(window["peak_net_bps"]), "mean_net_bps": plain(window["peak_net_bps"]), "size": "1",
        "est_profit": "343.194", "start_ts": "1970-01-01T00:00:00.002Z", "end_ts": None,
        "duration_ms": None, "ticks": 1, "close_reason": None, "emitted_ts": "2026-11-22T00:40:00.123Z",
    }
