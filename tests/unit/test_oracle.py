import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from arbitrage import oracle
from arbitrage.events import FeedState
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import parse_pairs
from arbitrage.rules import RulesConfig
from arbitrage.windows import PairTracker, QuoteTick, SpreadRow, StatusTick, WindowEvent, sort_key

D = Decimal
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_763_771_000_000_000  # 2025-11-22T00:23:20Z in µs
PAIRS = parse_pairs("BTC/USD=BTC/USD~BTC/USDT@0.998,ETH/BTC")
RULES = RulesConfig(fees=FeeSchedule(coinbase=D("0.0005"), binance=D("0.0002")), pairs=PAIRS)
SILVER_QUOTES = {
    "exchange": pl.String, "symbol": pl.String, "bid": oracle.MONEY, "bid_size": oracle.MONEY, "ask": oracle.MONEY,
    "ask_size": oracle.MONEY, "event_ts": oracle.TS, "seq": pl.Int64, "is_crossed": pl.Boolean,
}
SILVER_STATUS = {"exchange": pl.String, "symbol": pl.String, "state": pl.String, "detail": pl.String,
                 "ts_recv": oracle.TS}


def ts(us):
    return EPOCH + timedelta(microseconds=us)


def quotes_frame(ticks):
    qs = [t for t in ticks if isinstance(t, QuoteTick)]
    return pl.DataFrame(
        [(q.exchange, q.symbol, q.bid, q.bid_size, q.ask, q.ask_size, ts(q.event_ts_us), q.seq, q.is_crossed)
         for q in qs],
        schema=SILVER_QUOTES, orient="row",
    )


def status_frame(ticks):
    ss = [t for t in ticks if isinstance(t, StatusTick)]
    return pl.DataFrame([(s.exchange, s.symbol, str(s.state), "", ts(s.ts_us)) for s in ss], schema=SILVER_STATUS,
                        orient="row")


def run_trackers(ticks, rules, until_us):
    """Feed every pair's tracker its ticks in order; return (spread rows, CLOSE events)."""
    trackers = {p.name: PairTracker(p, rules) for p in rules.pairs}
    out = []
    for tick in sorted(ticks, key=sort_key):
        for name, tracker in trackers.items():
            pair = tracker.pair
            if isinstance(tick, StatusTick):
                out += tracker.on_status(tick)
            elif pair.symbol_on(tick.exchange) == tick.symbol:
                out += tracker.on_quote(tick)
    for tracker in trackers.values():
        out += tracker.advance_to(until_us)
    return [e for e in out if isinstance(e, SpreadRow)], [e for e in out if isinstance(e, WindowEvent)]


def tracker_spreads(rows):
    records = []
    for r in rows:
        d = r.as_dict()
        for name in ("event_ts", "coinbase_ts", "binance_ts"):
            d[name] = ts(d.pop(f"{name}_us"))
        records.append(d)
    if not records:
        return pl.DataFrame(schema=oracle.SPREAD_SCHEMA)
    frame = pl.DataFrame(records, schema_overrides=oracle.SPREAD_SCHEMA, infer_schema_length=None)
    return frame.select(list(oracle.SPREAD_SCHEMA)).cast(oracle.SPREAD_SCHEMA).sort("pair", maintain_order=True)


def tracker_closes(events):
    records = []
    for e in events:
        if e.event != "CLOSE":
            continue
        d = e.as_dict()
        for name in ("start_ts", "end_ts", "emitted_ts"):
            us = d.pop(f"{name}_us")
            d[name] = None if us is None else ts(us)
        records.append(d)
    if not records:
        return pl.DataFrame(schema=oracle.WINDOW_SCHEMA)
    frame = pl.DataFrame(records, schema_overrides=oracle.WINDOW_SCHEMA, infer_schema_length=None)
    return frame.select(list(oracle.WINDOW_SCHEMA)).cast(oracle.WINDOW_SCHEMA).sort("pair", "direction", "start_ts")


def random_ticks(seed, n):
    """Quotes of two pairs on both venues with same-time ties, silences, crossed quotes and feed statuses."""
    rng = random.Random(seed)
    t = T0
    mids = {"BTC/USD": 100.0, "ETH/BTC": 0.05}
    offsets = {"BTC/USD": 0.0, "ETH/BTC": 0.0}  # binance vs coinbase, a slow random walk so windows last
    ticks, seqs = [], {}
    for _ in range(n):
        r = rng.random()
        t += 0 if r < 0.1 else rng.randint(600_000, 1_500_000) if r < 0.13 else rng.randint(1, 150_000)
        if rng.random() < 0.06:
            state = rng.choice([FeedState.GAP, FeedState.DISCONNECTED, FeedState.STALE, FeedState.CONNECTED])
            symbol = rng.choice([None, None, "BTC/USDT", "ETH/BTC", "BTC/USD", "SOL/USD"])
            ticks.append(StatusTick(rng.choice(["coinbase", "binance"]), state, t, symbol))
            continue
        pair = rng.choice(PAIRS)
        exchange = rng.choice(["coinbase", "binance"])
        offsets[pair.name] = min(0.0025, max(-0.0025, offsets[pair.name] + rng.uniform(-0.0004, 0.0004)))
        mid = mids[pair.name] * (1 + rng.uniform(-0.0001, 0.0001))
        if exchange == "binance":
            mid = mid * (1 + offsets[pair.name]) / float(pair.binance_rate)
        half = mid * 0.00005
        places = 2 if pair.name == "BTC/USD" else 6
        bid, ask = round(mid - half, places), round(mid + half, places)
        if rng.random() < 0.03:
            bid, ask = ask + 1 / 10**places, bid  # crossed
        key = (exchange, pair.symbol_on(exchange))
        seqs[key] = seqs.get(key, 0) + 1
        ticks.append(QuoteTick(exchange, pair.symbol_on(exchange), D(str(bid)), D(str(rng.randint(1, 50) / 10)),
                               D(str(ask)), D(str(rng.randint(1, 50) / 10)), t, seqs[key]))
    return ticks, t


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_oracle_equals_the_tracker_on_random_ticks_with_gaps_and_statuses(seed):
    ticks, last_t = random_ticks(seed, 400)
    quotes, status = quotes_frame(ticks), status_frame(ticks)

    rows, events = run_trackers(ticks, RULES, last_t)
    got_spreads = oracle.spreads(quotes, status, RULES)
    got_windows = oracle.windows(got_spreads, quotes, status, RULES)

    assert_frame_equal(got_spreads, tracker_spreads(rows))
    assert_frame_equal(got_windows, tracker_closes(events))
    reasons = set(got_windows["close_reason"])
    assert len(got_windows) >= 10 and {"spread", "stale"} <= reasons and reasons & {"feed_gap", "feed_disconnect"}


def test_oracle_equals_the_tracker_over_many_seeds_in_a_few_seconds():
    for seed in range(10, 30):
        ticks, last_t = random_ticks(seed, 150)
        quotes, status = quotes_frame(ticks), status_frame(ticks)
        rows, events = run_trackers(ticks, RULES, last_t)
        got = oracle.spreads(quotes, status, RULES)

        assert_frame_equal(got, tracker_spreads(rows))
        assert_frame_equal(oracle.windows(got, quotes, status, RULES), tracker_closes(events))


NO_FEES = RulesConfig(fees=FeeSchedule(coinbase=D(0), binance=D(0)), pairs=parse_pairs("BTC/USD=BTC/USD~BTC/USDT@1"))


def q(exchange, t_ms, bid, ask, seq=None):
    symbol = "BTC/USD" if exchange == "coinbase" else "BTC/USDT"
    return QuoteTick(exchange, symbol, D(bid), D(1), D(ask), D(1), T0 + t_ms * 1000, seq)


def test_tiny_case_one_row_per_tick_never_a_cross_product():
    ticks = [q("coinbase", 0, "99.9", "100"), q("coinbase", 10, "99.9", "100"), q("binance", 20, "100.1", "100.2"),
             q("binance", 30, "100.1", "100.2"), q("coinbase", 700, "99.9", "100")]

    got = oracle.spreads(quotes_frame(ticks), None, NO_FEES)

    # binance@20 vs coinbase@10, binance@30 vs coinbase@10; coinbase@700 sees binance@30, 670 ms old: no row
    assert got.select("event_ts", "coinbase_ts", "binance_age_ms", "coinbase_age_ms", "cb_bn_net_bps").rows() == [
        (ts(T0 + 20_000), ts(T0 + 10_000), 0, 10, D("10.000000")),
        (ts(T0 + 30_000), ts(T0 + 10_000), 0, 20, D("10.000000")),
    ]


def test_tiny_case_window_closed_by_spread_by_gap_and_by_staleness():
    ticks = [
        q("coinbase", 0, "99.9", "100"), q("binance", 100, "100.1", "100.2"),  # open 10 bps
        q("binance", 200, "100.3", "100.4"),  # 30 bps peak
        q("binance", 300, "100.0", "100.1"),  # 0 bps: close spread at 300
        q("binance", 400, "100.2", "100.3"),  # open 20 bps at 400
        StatusTick("binance", FeedState.DISCONNECTED, T0 + 450_000),  # close feed_disconnect at 450
        q("binance", 500, "100.2", "100.3"),  # open at 500 (coinbase@0 is 500 ms old: still fresh)
    ]  # then nothing: the deadline 0 + 500 ms passes -> stale at 500
    quotes, status = quotes_frame(ticks), status_frame(ticks)

    got = oracle.windows(oracle.spreads(quotes, status, NO_FEES), quotes, status, NO_FEES, until=T0 + 600_000)

    assert got.select("start_ts", "end_ts", "ticks", "peak_net_bps", "mean_net_bps", "close_reason").rows() == [
        (ts(T0 + 100_000), ts(T0 + 300_000), 2, D("30.000000"), D("20.000000"), "spread"),
        (ts(T0 + 400_000), ts(T0 + 450_000), 1, D("20.000000"), D("20.000000"), "feed_disconnect"),
        (ts(T0 + 500_000), ts(T0 + 500_000), 1, D("20.000000"), D("20.000000"), "stale"),
    ]
    assert got["window_id"][0] == f"BTC/USD|buy_coinbase_sell_binance|{T0 + 100_000}"


def test_a_window_still_open_at_the_end_is_not_reported_closed():
    ticks = [q("coinbase", 0, "99.9", "100"), q("binance", 100, "100.1", "100.2")]
    quotes = quotes_frame(ticks)

    got = oracle.windows(oracle.spreads(quotes, None, NO_FEES), quotes, None, NO_FEES)

    assert got.is_empty() and got.schema == pl.Schema(oracle.WINDOW_SCHEMA)


def test_tiny_case_a_quote_exactly_at_the_deadline_extends_the_window_before_it_goes_stale():
    ticks = [q("coinbase", 0, "99.9", "100"), q("binance", 100, "100.1", "100.2"), q("binance", 500, "100.1", "100.2")]
    quotes = quotes_frame(ticks)

    got = oracle.windows(oracle.spreads(quotes, None, NO_FEES), quotes, None, NO_FEES)

    assert got.select("start_ts", "end_ts", "ticks", "close_reason").rows() == [
        (ts(T0 + 100_000), ts(T0 + 500_000), 2, "stale"),
    ]


def test_fast_window_starts_equal_the_exact_runs_on_random_ticks():
    for seed in range(1, 9):
        ticks, last_t = random_ticks(seed, 400)
        quotes, status = quotes_frame(ticks), status_frame(ticks)
        runs = oracle.window_runs(oracle.spreads(quotes, status, RULES), status, RULES, last_t).collect()

        got = oracle.window_starts(quotes, status, RULES)

        assert got.select("pair", "direction", pl.col("event_ts").dt.epoch("us")).sort(pl.all()).rows() == (
            runs.select("pair", "direction", "start_us").sort(pl.all()).rows()
        )


def test_fast_window_starts_decide_a_net_spread_exactly_at_the_threshold_in_decimals():
    # (100.1 - 100) / 100 * 1e4 is exactly 10 bps, but 9.99999999999... in float64
    at_threshold = RulesConfig(threshold_bps=D(10), fees=NO_FEES.fees, pairs=NO_FEES.pairs)
    ticks = [q("coinbase", 0, "99.9", "100"), q("binance", 100, "100.1", "100.2")]

    got = oracle.window_starts(quotes_frame(ticks), None, at_threshold)

    assert got.select("direction", "cb_bn_net_bps").rows() == [("buy_coinbase_sell_binance", D("10.000000"))]
