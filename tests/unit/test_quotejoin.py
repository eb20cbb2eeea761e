"""The join alignment's processor without Spark: joined rows -> distinct ticks, each fed to the rules once."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pandas as pd

from arbitrage.rules import RulesConfig
from streaming.hotpath import TICK_COLUMNS
from streaming.quotejoin import SIDES, JoinedArbProcessor, distinct_ticks

RULES = RulesConfig()
PAIR = RULES.pair("BTC/USD")
COLUMNS = [c for c in TICK_COLUMNS if c != "pair"]


def tick(exchange: str, t_us: int, bid: str, ask: str, seq: int) -> dict:
    return {"kind": "quote", "exchange": exchange, "symbol": PAIR.symbol_on(exchange), "bid": Decimal(bid),
            "bid_size": Decimal("1"), "ask": Decimal(ask), "ask_size": Decimal("2"), "t_us": t_us, "seq": seq,
            "state": None}


def joined(*pairs: tuple[dict, dict]) -> pd.DataFrame:
    rows = []
    for cb, bn in pairs:
        row = {"pair": PAIR.name, "event_ts": pd.Timestamp(cb["t_us"], unit="us")}
        for exchange, t in (("coinbase", cb), ("binance", bn)):
            row.update({SIDES[exchange] + c: t[c] for c in COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows)


class FakeValueState:
    def __init__(self) -> None:
        self.value = None

    def exists(self) -> bool:
        return self.value is not None

    def get(self):
        return self.value

    def update(self, value) -> None:
        self.value = value


class FakeHandle:
    """The two calls the processor makes on Spark's StatefulProcessorHandle, for one key."""

    def __init__(self) -> None:
        self.states: dict[str, FakeValueState] = {}
        self.timers: set[int] = set()

    def getValueState(self, name, schema):
        return self.states.setdefault(name, FakeValueState())

    def registerTimer(self, ms: int) -> None:
        self.timers.add(ms)

    def deleteTimer(self, ms: int) -> None:
        self.timers.discard(ms)


class Watermark:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def getCurrentWatermarkInMs(self) -> int:
        return self.ms

    def getCurrentProcessingTimeInMs(self) -> int:
        return 0  # the join path has no venue frontier: the batch's time is not used


def run_batch(processor: JoinedArbProcessor, frame: pd.DataFrame, watermark_ms: int) -> pd.DataFrame:
    out = list(processor.handleInputRows((PAIR.name,), iter([frame]), Watermark(watermark_ms)))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["kind"])


def test_distinct_ticks_unpivots_joined_rows_into_each_sides_ticks_once():
    cb1, bn1, bn2 = tick("coinbase", 1_000, "65000", "65001", 1), tick("binance", 900, "65000", "65001", 7), \
        tick("binance", 1_100, "65000", "65002", 8)

    got = distinct_ticks(joined((cb1, bn1), (cb1, bn2)))

    want = pd.DataFrame([cb1, bn1, bn2])[COLUMNS]
    pd.testing.assert_frame_equal(got.sort_values("t_us", ignore_index=True),
                                  want.sort_values("t_us", ignore_index=True), check_dtype=False)


def test_a_tick_redelivered_by_a_later_partner_reaches_the_rules_once():
    # Arrange: D = 300 ms, S = 500 ms. Batch 1 joins cb@0 and cb@500 ms to bn@100 ms: the pair's line moves to
    # 500 - 300 = 200 ms, so cb@0 and bn@100 are released. Batch 2 brings bn@450 ms, which the join pairs with
    # cb@0 again (|450 - 0| <= S) and with cb@500, and bn@600 ms.
    processor = JoinedArbProcessor(RULES, watermark_delay_ms=300)
    handle = FakeHandle()
    processor.init(handle)
    cb0, bn100 = tick("coinbase", 0, "65000", "65001", 1), tick("binance", 100_000, "65000", "65001", 7)
    cb500, bn450 = tick("coinbase", 500_000, "65000", "65001", 2), tick("binance", 450_000, "65000", "65001", 8)
    bn600 = tick("binance", 600_000, "65000", "65001", 9)

    first = run_batch(processor, joined((cb0, bn100), (cb500, bn100)), watermark_ms=0)
    second = run_batch(processor, joined((cb0, bn450), (cb500, bn450), (cb500, bn600)), watermark_ms=0)
    flushed = list(processor.handleExpiredTimer((PAIR.name,), Watermark(10_000), _Expired(min(handle.timers))))

    # Assert: one spread row per tick that had a fresh other side, in time order, none twice; nothing late.
    rows = pd.concat([first, second, *flushed], ignore_index=True)
    spreads = rows[rows["kind"] == "spread"]
    assert list(spreads["event_ts_us"]) == [100_000, 450_000, 500_000, 600_000]
    doc = orjson.loads(handle.states["pair_state"].value[0])
    assert doc["tracker"]["late_ticks"] == 0


class _Expired:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def getExpiryTimeInMs(self) -> int:
        return self.ms


def test_the_alignment_comes_from_the_environment_and_an_unknown_one_is_refused():
    import pytest

    from arb.settings import ConfigError, Settings
    from streaming.config import from_settings

    assert from_settings(Settings(), environ={}).alignment == "asof"
    assert from_settings(Settings(), environ={"ARB_ALIGNMENT": "join"}).alignment == "join"
    with pytest.raises(ConfigError, match="alignment must be one of"):
        from_settings(Settings(), environ={"ARB_ALIGNMENT": "nearest"})
