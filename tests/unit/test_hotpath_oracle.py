"""The hot-path processor, driven as transformWithStateInPandas drives it, equals the Polars oracle on a market.

A few thousand synthetic ticks over two pairs (one with a USDT->USD conversion) with injected windows in both
directions, a feed gap and a silence, cut into micro-batches with a watermark: Arrow-typed frames in, the state store
round trip and the event-time timers between batches, string decimals out. No Spark.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from arbitrage import oracle
from arbitrage.events import FeedStatus, Quote, from_json
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import parse_pairs
from arbitrage.rules import RulesConfig
from arbitrage.spread import BUY_BINANCE_SELL_COINBASE, BUY_COINBASE_SELL_BINANCE
from streaming.processor_bench import run_processor, scenario_batches
from streaming.synthetic import Injected, Scenario, Silence

D = Decimal
S = 1_000_000
T0 = 1_795_308_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RULES = RulesConfig(
    threshold_bps=D("3.5"), staleness_ms=200, fees=FeeSchedule(coinbase=D("0.0005"), binance=D("0.0002")),
    pairs=parse_pairs("BTC/USD=BTC/USD~BTC/USDT@0.998,ETH/BTC"),
)
SCENARIO = Scenario(
    RULES, T0, duration_s=12.0, quotes_per_s=400,
    windows=[
        Injected("BTC/USD", BUY_COINBASE_SELL_BINANCE, T0 + 1 * S, T0 + 3 * S, D("40")),
        Injected("ETH/BTC", BUY_BINANCE_SELL_COINBASE, T0 + 2 * S, T0 + 6 * S, D("60"), gap_at_us=T0 + 4 * S),
        Injected("BTC/USD", BUY_BINANCE_SELL_COINBASE, T0 + 7 * S, T0 + 11 * S, D("30")),
    ],
    silences=[Silence("BTC/USD", "binance", T0 + 8 * S, T0 + 9_500_000),
              Silence("ETH/BTC", "coinbase", T0 + 5 * S, T0 + 7 * S)],
    tail_s=2.0,
)
_MONEY_COLUMNS = [c for c, t in oracle.SPREAD_SCHEMA.items() if t == oracle.MONEY]
_WINDOW_MONEY = ["peak_net_bps", "mean_net_bps", "size_at_peak", "profit_at_peak"]


def ts(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def silver(records) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The scenario's quotes and feed statuses as the oracle reads silver."""
    events = [from_json(r.value) for r in records if r.topic_kind.startswith(("quotes:", "status"))]
    quotes = pl.DataFrame(
        [(q.exchange, q.symbol, q.bid, q.bid_size, q.ask, q.ask_size,
          ts(q.ts_event_us if q.ts_event_us is not None else q.ts_recv_us), q.seq, q.is_crossed)
         for q in events if isinstance(q, Quote)],
        schema={"exchange": pl.String, "symbol": pl.String, "bid": oracle.MONEY, "bid_size": oracle.MONEY,
                "ask": oracle.MONEY, "ask_size": oracle.MONEY, "event_ts": oracle.TS, "seq": pl.Int64,
                "is_crossed": pl.Boolean},
        orient="row",
    )
    status = pl.DataFrame(
        [(s.exchange, s.symbol, str(s.state), s.detail, ts(s.ts_recv_us)) for s in events if isinstance(s, FeedStatus)],
        schema={"exchange": pl.String, "symbol": pl.String, "state": pl.String, "detail": pl.String,
                "ts_recv": oracle.TS},
        orient="row",
    )
    return quotes, status


def processor_output(scenario: Scenario, batch_s: float, delay_ms: int, reorder_ms: int | None,
                     coinbase_lag_ms: int) -> pl.DataFrame:
    # The lag builds up over the first 6 s: Coinbase falls behind while it keeps delivering.
    batches = scenario_batches(scenario, batch_s, delay_ms, {"coinbase": coinbase_lag_ms}, lag_ramp_s=6.0)
    result = run_processor(RULES, batches, delay_ms, reorder_ms)
    return pl.concat([pl.from_pandas(frame) for frame in result.outputs], how="vertical")


def as_spreads(out: pl.DataFrame) -> pl.DataFrame:
    """Processor spread rows -> silver/spreads columns (the Spark side does the same casts)."""
    return out.filter(pl.col("kind") == "spread").select(
        "pair",
        *[pl.from_epoch(c, time_unit="us").dt.replace_time_zone("UTC").alias(c.removesuffix("_us"))
          for c in ("event_ts_us", "coinbase_ts_us", "binance_ts_us")],
        *[pl.col(c).cast(oracle.MONEY) for c in _MONEY_COLUMNS],
        "coinbase_age_ms", "binance_age_ms", "coinbase_seq", "binance_seq",
    ).with_columns(pl.col("event_ts").dt.date().alias("date")).select(list(oracle.SPREAD_SCHEMA))


# Coinbase quotes carry the exchange's time and may reach us after Binance quotes stamped later on receipt: the venue
# frontier (hotpath.PairState.final_us) must wait for them; None = no frontier, the watermark delay alone. 3 s: the
# Coinbase partitions 3 s of event time behind Binance's (a producer's backlog), ten times the watermark delay, and
# Coinbase's ETH/BTC silence (5-7 s) seen while it is behind.
@pytest.mark.parametrize(("batch_s", "delay_ms", "reorder_ms", "coinbase_lag_ms"),
                         [(0.37, 300, 20, 0), (2.0, 100, 0, 0), (0.37, 300, 20, 150), (0.37, 300, None, 150),
                          (0.37, 300, 20, 3000)])
def test_processor_in_micro_batches_equals_the_oracle_row_for_row_and_window_for_window(
        batch_s, delay_ms, reorder_ms, coinbase_lag_ms):
    # Arrange: the closing status after the lagging venue's last quote. Before it, the frontier holds the last ticks
    # while Coinbase still delivers, and with the watermark already past them nothing calls the processor again.
    scenario = dataclasses.replace(SCENARIO, tail_s=max(SCENARIO.tail_s, coinbase_lag_ms / 1000 + 1))
    records = scenario.records()
    quotes, status = silver(records)
    want_spreads = oracle.spreads(quotes, status, RULES)
    want_closes = oracle.windows(want_spreads, quotes, status, RULES)

    # Act
    out = processor_output(scenario, batch_s, delay_ms, reorder_ms, coinbase_lag_ms)

    # Assert: every spread row exactly (decimals too), in processing order within each pair.
    assert_frame_equal(as_spreads(out).sort("pair", maintain_order=True), want_spreads)
    windows = out.filter(pl.col("kind") == "window")
    closes = windows.filter(pl.col("event") == "CLOSE").sort("pair", "direction", "start_ts_us")
    got = closes.select(
        "window_id", "pair", "direction", "start_ts_us", "end_ts_us", "duration_ms", "ticks", "close_reason",
        *[pl.col(c).cast(oracle.MONEY) for c in _WINDOW_MONEY],
    )
    want = want_closes.select(
        "window_id", "pair", "direction",
        *[(pl.col(c).dt.epoch("us")).alias(f"{c}_us") for c in ("start_ts", "end_ts")],
        "duration_ms", "ticks", "close_reason", *_WINDOW_MONEY,
    )
    assert got.to_dicts() == want.to_dicts()
    assert {"spread", "stale", "feed_gap"} <= set(got["close_reason"])
    assert sorted(windows.filter(pl.col("event") == "OPEN")["window_id"]) == sorted(got["window_id"])
