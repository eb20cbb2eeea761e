from decimal import Decimal

import pytest

from arbitrage.fees import FeeSchedule
from arbitrage.pairs import parse_pairs
from arbitrage.rules import RulesConfig, UnknownPair, direction_fees, round_bps, round_money
from arbitrage.spread import BUY_BINANCE_SELL_COINBASE, BUY_COINBASE_SELL_BINANCE


def test_defaults_are_the_documented_parameters():
    rules = RulesConfig()

    assert rules.threshold_bps == Decimal("5")
    assert rules.staleness_ms == 500
    assert rules.staleness_us == 500_000
    assert rules.fees == FeeSchedule()
    assert rules.pair_names == ("BTC/USD", "ETH/USD", "ETH/BTC")


def test_pair_for_finds_the_pair_a_venue_symbol_feeds():
    rules = RulesConfig()

    assert rules.pair_for("binance", "BTC/USDT").name == "BTC/USD"
    assert rules.pair_for("coinbase", "BTC/USD").name == "BTC/USD"
    assert rules.pair_for("binance", "ETH/BTC").name == "ETH/BTC"
    assert rules.pair_for("binance", "BTC/USD") is None


def test_pair_for_refuses_a_symbol_that_feeds_two_pairs():
    rules = RulesConfig(pairs=parse_pairs("BTC/USD=BTC/USD~BTC/USDT@1.0,BTC/USDT"))

    assert [p.name for p in rules.pairs_for("binance", "BTC/USDT")] == ["BTC/USD", "BTC/USDT"]
    with pytest.raises(ValueError, match="several pairs"):
        rules.pair_for("binance", "BTC/USDT")


def test_unknown_pair_and_exchange_are_named_errors():
    rules = RulesConfig()

    with pytest.raises(UnknownPair, match="unknown pair 'DOGE/USD'"):
        rules.pair("DOGE/USD")
    with pytest.raises(ValueError, match="unknown exchange"):
        rules.pairs_for("kraken", "BTC/USD")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_bps": 5.0},
        {"threshold_bps": Decimal("NaN")},
        {"staleness_ms": -1},
        {"staleness_ms": 0.5},
        {"pairs": parse_pairs("BTC/USDT") + parse_pairs("BTC/USDT")},
    ],
)
def test_bad_parameters_fail_at_construction(kwargs):
    with pytest.raises(ValueError):
        RulesConfig(**kwargs)


def test_bps_round_half_up_to_six_places_and_money_to_twelve():
    assert round_bps(Decimal("1.0000005")) == Decimal("1.000001")
    assert round_bps(Decimal("-1.0000005")) == Decimal("-1.000001")
    assert round_bps(Decimal("1.00000049")) == Decimal("1.000000")
    assert round_money(Decimal("0.0000000000005")) == Decimal("0.000000000001")


def test_direction_fees_are_buy_venue_then_sell_venue():
    fees = FeeSchedule(coinbase=Decimal("0.006"), binance=Decimal("0.001"))

    assert direction_fees(BUY_COINBASE_SELL_BINANCE, fees) == (Decimal("0.006"), Decimal("0.001"))
    assert direction_fees(BUY_BINANCE_SELL_COINBASE, fees) == (Decimal("0.001"), Decimal("0.006"))
