"""Market analytics rules on hand-built data: candles and VWAP, mid bars, moving average, hourly change, premium,
flash crashes; each checked by hand and against the Polars reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import polars as pl
import pytest

from arb.alerts import format_alert
from arbitrage import analytics_oracle as oracle
from arbitrage.analytics import (
    AnalyticsConfig,
    AnalyticsError,
    Candle,
    CrashBar,
    CrashDetector,
    FlashCrash,
    HourlyChange,
    MidBar,
    MovingAverage,
    Premium,
    TradeLevel,
    candles_from_levels,
    crash_alert,
    hourly_changes,
    mid_price,
    moving_averages,
    premium_periods,
    premiums,
    window_start,
)

T0 = 1_795_305_600_000_000  # 2026-11-22T00:00:00Z, a whole day
S = 1_000_000
MIN = 60 * S
CONFIG = AnalyticsConfig()


def ts(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def trades_frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (exchange, symbol, t_us, seq, trade_id, price, size)"""
    return pl.DataFrame(
        [{"exchange": e, "symbol": s, "event_ts": ts(t), "seq": q, "trade_id": i, "price": D(p), "size": D(z)}
         for e, s, t, q, i, p, z in rows],
        schema={"exchange": pl.String, "symbol": pl.String, "event_ts": pl.Datetime("us", "UTC"), "seq": pl.Int64,
                "trade_id": pl.String, "price": pl.Decimal(30, 12), "size": pl.Decimal(30, 12)},
    )


def quotes_frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (exchange, symbol, t_us, seq, bid, ask)"""
    return pl.DataFrame(
        [{"exchange": e, "symbol": s, "event_ts": ts(t), "seq": q, "bid": D(b), "ask": D(a), "is_crossed": D(b) > D(a)}
         for e, s, t, q, b, a in rows],
        schema={"exchange": pl.String, "symbol": pl.String, "event_ts": pl.Datetime("us", "UTC"), "seq": pl.Int64,
                "bid": pl.Decimal(30, 12), "ask": pl.Decimal(30, 12), "is_crossed": pl.Boolean},
    )


# ---- config and formulas ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {"bar_s": 0}, {"ma_window_s": 250}, {"crash_drop_pct": D(0)}, {"crash_drop_pct": D(100)},
    {"crash_window_s": 121, "crash_bucket_s": 2}, {"pairs": ()}, {"watermark_s": -1},
])
def test_config_with_an_impossible_setting_is_rejected_with_a_reason(changes):
    with pytest.raises(AnalyticsError):
        AnalyticsConfig(**changes)


def test_default_config_is_a_one_percent_drop_within_two_minutes():
    assert (CONFIG.crash_drop_pct, CONFIG.crash_window_s, CONFIG.watermark_s) == (D(1), 120, 10)
    assert (CONFIG.ma_window_s, CONFIG.bar_s) == (300, 60)


def test_mid_and_window_start_follow_spark_alignment():
    assert mid_price(D("100.01"), D("100.02")) == D("100.015")
    assert window_start(T0 + 59 * S + 999_999, MIN) == T0
    assert window_start(T0 + MIN, MIN) == T0 + MIN


# ---- candles ---------------------------------------------------------------------------------------------------

TRADES = [  # minute 0: open 100 (t=1 s), close 99 (last at 59.999999 s); minute 1: one trade
    ("binance", "BTC/USDT", T0 + 1 * S, 1, "a", "100", "1"),
    ("binance", "BTC/USDT", T0 + 2 * S, 3, "c", "101", "1"),
    ("binance", "BTC/USDT", T0 + 2 * S, 2, "b", "102", "2"),
    ("binance", "BTC/USDT", T0 + MIN - 1, 4, "d", "99", "1"),
    ("binance", "BTC/USDT", T0 + MIN, 5, "e", "98.5", "0.5"),
]
EXPECTED_CANDLES = [
    Candle("binance", "BTC/USDT", T0, T0 + MIN, D("100"), D("102"), D("99"), D("99"), D("5"), D("100.8"), 4),
    Candle("binance", "BTC/USDT", T0 + MIN, T0 + 2 * MIN, D("98.5"), D("98.5"), D("98.5"), D("98.5"), D("0.5"),
           D("98.5"), 1),
]


def levels_of(rows: list[tuple]) -> list[TradeLevel]:
    """What the Spark aggregation emits for `rows`: one level per (exchange, symbol, minute, price)."""
    groups: dict[tuple, list[tuple]] = {}
    for row in rows:
        exchange, symbol, t, seq, trade_id, price, size = row
        groups.setdefault((exchange, symbol, window_start(t, MIN), D(price)), []).append((t, seq, trade_id, D(size)))
    return [TradeLevel(e, s, w, w + MIN, p, sum(r[3] for r in g), len(g), min(r[:3] for r in g), max(r[:3] for r in g))
            for (e, s, w, p), g in groups.items()]


def test_candles_from_price_levels_have_open_close_by_time_then_seq_and_exact_vwap():
    # vwap = (100*1 + 102*2 + 101*1 + 99*1) / 5 = 504 / 5
    assert candles_from_levels(levels_of(TRADES)) == EXPECTED_CANDLES


def test_vwap_is_rounded_half_up_to_twelve_places():
    rows = [("coinbase", "BTC/USD", T0, 1, "x", "1", "1"), ("coinbase", "BTC/USD", T0 + 1, 2, "y", "2", "2")]
    (candle,) = candles_from_levels(levels_of(rows))
    assert candle.vwap == D("1.666666666667")  # 5 / 3


def test_polars_reference_candles_equal_the_hand_computed_ones():
    frame = oracle.candles(trades_frame(TRADES), CONFIG)
    got = [Candle(**row) for row in frame.to_dicts()]
    assert got == EXPECTED_CANDLES


# ---- mid bars, moving average, hourly change, premium ----------------------------------------------------------

def bar(exchange: str, symbol: str, minute: int, open_: str, close: str, mid_sum: str, quotes: int,
        high: str | None = None, low: str | None = None) -> MidBar:
    start = T0 + minute * MIN
    return MidBar(exchange, symbol, start, start + MIN, D(open_), D(high or max(open_, close, key=D)),
                  D(low or min(open_, close, key=D)), D(close), D(mid_sum), quotes)


def test_moving_average_is_the_tick_weighted_mean_over_the_five_minutes_before_each_bar_end():
    history = [bar("coinbase", "BTC/USD", m, "100", "100", str(100 * (m + 1)), m + 1) for m in range(6)]
    history[5] = bar("coinbase", "BTC/USD", 5, "100", "106", "636", 6)  # 6 quotes, mean 106
    got = moving_averages(history, [("coinbase", "BTC/USD", T0 + 6 * MIN)], CONFIG)
    # minutes 1..5: sums 200+300+400+500+636 = 2036 over 2+3+4+5+6 = 20 quotes
    assert got == [MovingAverage("coinbase", "BTC/USD", T0 + MIN, T0 + 6 * MIN, D("101.8"), D("106"), 20)]


def test_moving_average_needs_a_bar_ending_at_that_time():
    history = [bar("coinbase", "BTC/USD", 0, "100", "100", "100", 1)]
    assert moving_averages(history, [("coinbase", "BTC/USD", T0 + 2 * MIN)], CONFIG) == []


def test_hourly_change_compares_the_last_close_with_the_open_of_the_earliest_bar_in_the_hour():
    history = [bar("coinbase", "BTC/USD", 0, "90", "90", "90", 1),  # 61 minutes before the end: outside
               bar("coinbase", "BTC/USD", 1, "100", "100", "100", 1),
               bar("coinbase", "BTC/USD", 60, "101", "101.2", "202.2", 2)]
    got = hourly_changes(history, [("coinbase", "BTC/USD", T0 + 61 * MIN)], CONFIG)
    assert got == [HourlyChange("BTC/USD", "coinbase", "BTC/USD", T0 + 61 * MIN, T0 + MIN, D("100"), D("101.2"),
                                D("1.2"))]


def test_premium_is_coinbase_mean_mid_over_binance_mean_mid_converted_in_bps():
    config = AnalyticsConfig(pairs=AnalyticsConfig().pairs[:1])  # BTC/USD = coinbase BTC/USD ~ binance BTC/USDT@1.0
    history = [bar("coinbase", "BTC/USD", 0, "101", "101", "303", 3),
               bar("binance", "BTC/USDT", 0, "99", "101", "400", 4)]
    got = premiums(history, premium_periods(history), config)
    assert got == [
        Premium("BTC/USD", "day", T0, T0 + 24 * 60 * MIN, D("101"), D("100"), D("100"), 3, 4),
        Premium("BTC/USD", "hour", T0, T0 + 60 * MIN, D("101"), D("100"), D("100"), 3, 4),
    ]


QUOTES = [  # coinbase BTC/USD: minute 0 mids 100, 102 ; minute 1 mid 104; a crossed quote is skipped
    ("coinbase", "BTC/USD", T0 + 1 * S, 1, "99.99", "100.01"),
    ("coinbase", "BTC/USD", T0 + 30 * S, 2, "101.98", "102.02"),
    ("coinbase", "BTC/USD", T0 + 40 * S, 3, "110", "109"),
    ("coinbase", "BTC/USD", T0 + MIN + 5 * S, 4, "103.99", "104.01"),
    ("binance", "BTC/USDT", T0 + 10 * S, 7, "100.5", "100.5"),
]


def test_polars_reference_moving_average_hourly_change_and_premium_agree_with_the_bar_functions():
    q = quotes_frame(QUOTES)
    history = [bar("coinbase", "BTC/USD", 0, "100", "102", "202", 2), bar("coinbase", "BTC/USD", 1, "104", "104",
                                                                          "104", 1),
               bar("binance", "BTC/USDT", 0, "100.5", "100.5", "100.5", 1)]
    ends = [("coinbase", "BTC/USD", T0 + MIN), ("coinbase", "BTC/USD", T0 + 2 * MIN), ("binance", "BTC/USDT", T0 + MIN)]
    assert [MovingAverage(**r) for r in oracle.moving_averages(q, CONFIG).to_dicts()] == \
        moving_averages(history, ends, CONFIG)
    assert [HourlyChange(**r) for r in oracle.hourly_changes(q, CONFIG).to_dicts()] == \
        sorted(hourly_changes(history, ends, CONFIG), key=lambda h: (h.pair, h.exchange, h.ts_us))
    assert [Premium(**r) for r in oracle.premiums(q, CONFIG).to_dicts()] == \
        sorted(premiums(history, premium_periods(history), CONFIG), key=lambda p: (p.pair, p.granularity,
                                                                                   p.period_start_us))


# ---- flash crashes ---------------------------------------------------------------------------------------------

def cbar(second: int, high: str, low: str | None = None, exchange: str = "binance",
         symbol: str = "BTC/USDT") -> CrashBar:
    return CrashBar(exchange, symbol, T0 + second * S, D(high), D(low or high))


CRASH_BARS = [
    cbar(0, "100"),
    cbar(60, "99"),  # exactly 1 % below the high: not MORE than 1 %
    cbar(61, "98.99"),  # crash: opens an episode
    cbar(62, "98"),  # same episode
    cbar(180, "97"),  # high of [60, 180) is 99: a crash, 118 s after the last one: same episode
    cbar(300, "100"),
    cbar(310, "98"),  # crash 130 s after the last one: a new episode
    cbar(310, "98", exchange="coinbase", symbol="BTC/USD"),  # no history on coinbase: nothing
]


def test_crash_detector_alerts_once_per_episode_on_drops_of_more_than_the_threshold():
    got = CrashDetector(CONFIG).run(CRASH_BARS)
    assert got == [
        FlashCrash("BTC/USD", "binance", "BTC/USDT", T0 + 61 * S, D("100"), T0, D("98.99"), D("1.01")),
        FlashCrash("BTC/USD", "binance", "BTC/USDT", T0 + 310 * S, D("100"), T0 + 300 * S, D("98"), D("2")),
    ]


def test_a_high_older_than_the_crash_window_does_not_count():
    bars = [cbar(0, "100"), cbar(120, "99.5"), cbar(121, "50")]  # [1, 121) holds only 99.5; 50 is a crash from it
    assert [c.high for c in CrashDetector(CONFIG).run(bars)] == [D("99.5")]
    assert CrashDetector(CONFIG).run([cbar(0, "100"), cbar(121, "50")]) == []


def test_crash_thresholds_are_configurable():
    config = AnalyticsConfig(crash_drop_pct=D("5"), crash_window_s=10)
    bars = [cbar(0, "100"), cbar(5, "96"), cbar(9, "94.9")]
    assert [(c.bucket_us, c.drop_pct) for c in CrashDetector(config).run(bars)] == [(T0 + 9 * S, D("5.1"))]


def test_polars_reference_finds_the_same_crashes_from_quotes():
    rows = [(b.exchange, b.symbol, b.bucket_us + 10, n, str(b.low), str(b.high)) for n, b in enumerate(CRASH_BARS)]
    # a second quote per bucket so high and low differ: mid of (low, high) is inside, the bar keeps low/high mids
    quotes = quotes_frame([(e, s, t, n, lo, lo) for e, s, t, n, lo, hi in rows]
                          + [(e, s, t + 1, n + 100, hi, hi) for e, s, t, n, lo, hi in rows])
    assert oracle.flash_crashes(quotes, CONFIG) == CrashDetector(CONFIG).run(CRASH_BARS)


def test_crash_alert_shares_the_alert_envelope_and_prints_as_one_line():
    crash = FlashCrash("BTC/USD", "binance", "BTC/USDT", T0 + 61 * S, D("100"), T0, D("98.99"), D("1.01"))
    alert = crash_alert(crash, CONFIG, "2026-11-22T00:01:03.500Z")
    assert {k: alert[k] for k in ("v", "type", "event", "pair", "emitted_ts")} == {
        "v": 1, "type": "flash_crash", "event": "CRASH", "pair": "BTC/USD", "emitted_ts": "2026-11-22T00:01:03.500Z"}
    assert alert["alert_id"] == f"BTC/USD|flash_crash|{T0 + 61 * S}"
    assert (alert["drop_pct"], alert["crash_ts"], alert["high_ts"]) == ("1.01", "2026-11-22T00:01:01.000Z",
                                                                        "2026-11-22T00:00:00.000Z")
    line = format_alert(alert)
    assert line.startswith("2026-11-22 00:01:03.500  CRASH  BTC/USD   flash_crash") and "drop_pct=1.01" in line
