"""The hot-path processor's per-pair state without Spark: buffering until final, order, dedupe, timers, late ticks."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pyarrow as pa

from arbitrage.events import FeedState, Quote
from arbitrage.rules import RulesConfig
from arbitrage.windows import PairTracker, QuoteTick, StatusTick
from streaming.hotpath import PairState, late_counts, late_row, output_frame, output_rows
from streaming.processor_bench import Batch, run_processor, tick_frame
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
    state.add([quote("binance", 2_000, "65800", "65801", 2), quote("binance", 500, "65000", "65001", 1)], 1)
    state.add([quote("coinbase", 1_000, "65000", "65001", 7), quote("binance", 2_000, "65800", "65801", 2)], 2)

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
    state.add([quote("coinbase", 1_000, "65000", "65001", 7), quote("binance", 2_000, "65800", "65801", 2)], 1)
    state.release(3_000)
    state.add([StatusTick("binance", FeedState.GAP, 4_000, "BTC/USDT")], 2)

    restored = PairState.load(state.dump(), PAIR, RULES)
    events = restored.release(10_000)

    assert [(e.event, e.close_reason, e.end_ts_us) for e in events] == [("CLOSE", "feed_gap", 4_000)]


def test_output_rows_and_alert_line_carry_the_window_in_the_documented_format():
    state = PairState(PairTracker(PAIR, RULES), [], None)
    state.add([quote("coinbase", 1_000, "65000", "65001", 7), quote("binance", 2_000, "65800", "65801", 2)], 1)
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


def test_a_tick_is_final_once_both_venues_have_ticked_past_it_and_a_silent_venue_falls_back_to_the_delay():
    # Arrange: D = 300 ms, reorder allowance 20 ms; event times in µs; the last argument is the micro-batch's time
    # (ms of the wall clock, as Spark stamps a batch).
    state = PairState(PairTracker(PAIR, RULES), [], None)
    state.add([quote("binance", 900_000, "65000", "65001", 1), quote("coinbase", 1_000_000, "65000", "65001", 7),
               StatusTick("binance", FeedState.CONNECTED, 1_500_000, None)], 1_000)  # a status is not a venue's quote

    # Act / Assert: the frontier is the older venue's latest quote (Binance, 0.9 s) less 20 ms, not the pair's
    # latest tick (the status) less D, while Binance brings quotes.
    assert state.final_us(0, 300_000, 20_000, 1_000) == 880_000
    state.add([quote("binance", 1_600_000, "65000", "65001", 2), quote("coinbase", 1_700_000, "65000", "65001", 8)],
              1_700)
    assert state.final_us(0, 300_000, 20_000, 1_700) == 1_580_000  # min(1.6 s, 1.7 s) - 20 ms
    assert [row.event_ts_us for row in state.release(1_580_000)] == [1_000_000]  # Coinbase 1.0 s against Binance 0.9
    assert [t.event_ts_us for t in state.buffer] == [1_600_000, 1_700_000]  # the status (1.5 s) went too

    # A silent Binance (no quote in the batch): its clock runs on with the wall clock from its last delivery (1.6 s
    # delivered at 1,700 ms), less D; never beyond the pair's latest tick less D; Spark's watermark not while Coinbase
    # brings quotes, and in a batch that brings neither venue a quote, the watermark too.
    state.add([quote("coinbase", 3_000_000, "65000", "65001", 9)], 2_500)
    assert state.final_us(2_800_000, 300_000, 20_000, 2_500) == 2_100_000  # 1.6 s + 0.8 s - D
    state.add([quote("coinbase", 3_200_000, "65000", "65001", 10)], 3_500)
    assert state.final_us(2_800_000, 300_000, 20_000, 3_500) == 2_900_000  # 3.2 s - D (1.6 + 1.8 - D is higher)
    assert state.final_us(3_000_000, 300_000, 20_000, 4_000) == 3_000_000
    assert state.final_us(3_000_000, 300_000, None, 3_500) == 3_000_000  # no frontier (the join path): as before

    # The venue clocks survive the state store.
    restored = PairState.load(state.dump(), PAIR, RULES)
    assert restored.venue_max_us == {"binance": 1_600_000, "coinbase": 3_200_000}
    assert restored.venue_batch_ms == {"binance": 1_700, "coinbase": 3_500}


def test_a_venue_seconds_behind_the_other_holds_the_line_for_as_long_as_it_brings_quotes():
    # Arrange: both venues to 1.0 s; then a batch planned while a burst was half written: Coinbase to 9.0 s, Binance
    # only to 2.0 s, with Spark's watermark already at 8.7 s (the whole stream's latest less D).
    state = PairState(PairTracker(PAIR, RULES), [], None)
    state.add([quote("binance", 1_000_000, "65000", "65001", 1), quote("coinbase", 1_000_000, "65000", "65001", 1)],
              1_000)
    state.add([quote("coinbase", t, "65000", "65001", k) for k, t in enumerate(range(1_100_000, 9_000_001, 100_000))]
              + [quote("binance", t, "65000", "65001", k) for k, t in enumerate(range(1_100_000, 2_000_001, 100_000))],
              1_100)

    # Act / Assert: Binance is behind and still coming: its latest quote bounds the line, not 9.0 s - D nor 8.7 s.
    assert state.final_us(8_700_000, 300_000, 20_000, 1_100) == 1_980_000
    out = state.release(1_980_000)
    # Its next batch brings the rest: every Coinbase tick is then compared with a fresh Binance quote.
    state.add([quote("binance", t, "65000", "65001", k) for k, t in enumerate(range(2_100_000, 9_000_001, 100_000))],
              1_200)
    out += state.release(state.final_us(8_700_000, 300_000, 20_000, 1_200))
    assert state.tracker.late_ticks == 0
    rows = [r for r in out if type(r).__name__ == "SpreadRow"]
    assert max(max(r.coinbase_age_ms, r.binance_age_ms) for r in rows) <= 100


def test_a_tick_below_the_released_line_is_dropped_and_reported_in_a_late_row():
    # Arrange: Binance ticks at 1.10 s and Coinbase at 1.20 s release everything up to 1.08 s (reorder 20 ms); a
    # Binance quote stamped 1.05 s arriving in the next micro-batch is below that line.
    def event(exchange: str, t_us: int, seq: int) -> tuple[str, Quote]:
        symbol = PAIR.symbol_on(exchange)
        venue = symbol.replace("/", "-" if exchange == "coinbase" else "")
        return "BTC/USD", Quote(exchange, symbol, venue, D("65000"), D("1"), D("65001"), D("1"),
                                t_us if exchange == "coinbase" else None, t_us, seq)

    batches = [
        Batch(0, {"BTC/USD": tick_frame([event("coinbase", 1_000_000, 1), event("binance", 1_100_000, 1),
                                          event("coinbase", 1_200_000, 2)])}, 1),
        Batch(0, {"BTC/USD": tick_frame([event("binance", 1_050_000, 2)])}, 2),
    ]

    # Act
    result = run_processor(RULES, batches, delay_ms=300, reorder_ms=20)
    out = pa.Table.from_pandas(pd.concat(result.outputs, ignore_index=True), preserve_index=False)

    # Assert: the Coinbase 1.0 s quote had no Binance quote before it; the late one is counted, not compared.
    assert out["kind"].to_pylist() == ["late"]
    assert late_counts(out) == {"BTC/USD": 1}
    both = output_frame([late_row("BTC/USD", 2, 0), late_row("ETH/BTC", 1, 0), late_row("BTC/USD", 1, 0)])
    assert late_counts(pa.Table.from_pandas(both, preserve_index=False)) == {"BTC/USD": 3, "ETH/BTC": 1}
