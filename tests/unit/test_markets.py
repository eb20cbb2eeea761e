from decimal import Decimal

import pytest

from arb.settings import ConfigError
from arbitrage.symbols import UnknownSymbol
from producers import markets
from tests.unit.producer_helpers import BINANCE_EXCHANGE_INFO, COINBASE_PRODUCTS, binance_markets, coinbase_markets


def test_binance_snapshot_maps_btcusdt_both_ways_with_ccxt_fee_and_filters():
    symbols = binance_markets()
    assert symbols.to_venue("BTC/USDT") == "BTCUSDT"
    assert symbols.from_venue("btcusdt") == "BTC/USDT"  # stream names are lower case
    market = symbols.market("BTC/USDT")
    # exchangeInfo 2021-10-12: PRICE_FILTER tickSize 0.01, LOT_SIZE stepSize 0.00001; ccxt's spot taker fee 0.1 %
    assert (market.price_increment, market.size_increment, market.taker_fee) == (
        Decimal("0.01"), Decimal("0.00001"), Decimal("0.001"))


def test_binance_snapshot_has_one_market_per_listed_symbol():
    import json

    listed = {s["symbol"] for s in json.loads(BINANCE_EXCHANGE_INFO.read_text())["symbols"]}
    assert {m.venue_symbol for m in binance_markets().markets} == listed


def test_coinbase_snapshot_maps_products_and_uses_ccxt_unified_codes():
    symbols = coinbase_markets()
    assert symbols.to_venue("BTC/USD") == "BTC-USD"
    assert symbols.from_venue("BAND-GBP") == "BAND/GBP"
    # ccxt renames Coinbase's CGLD to CELO: the canonical symbol is ccxt's, the venue id stays Coinbase's
    assert symbols.from_venue("CGLD-USD") == "CELO/USD"
    market = symbols.market("BTC/USD")
    assert (market.price_increment, market.size_increment, market.taker_fee) == (
        Decimal("0.01"), Decimal("1E-8"), Decimal("0.006"))


def test_unknown_symbol_is_a_named_error():
    with pytest.raises(UnknownSymbol, match="binance: unknown symbol 'DOGE/XYZ'"):
        binance_markets().to_venue("DOGE/XYZ")
    with pytest.raises(UnknownSymbol):
        coinbase_markets().from_venue("NOPE-USD")


def test_coinbase_file_given_for_binance_fails_with_one_line_reason():
    with pytest.raises(ConfigError, match="not a Binance exchangeInfo snapshot"):
        markets.load_snapshot("binance", COINBASE_PRODUCTS)


def test_missing_markets_file_fails_with_one_line_reason(tmp_path):
    with pytest.raises(ConfigError, match="cannot read markets file"):
        markets.load_snapshot("coinbase", tmp_path / "nope.json")


def test_committed_data_markets_snapshots_load():
    assert "ETH/BTC" in markets.load_snapshot("coinbase", markets.DEFAULT_SNAPSHOTS["coinbase"])
    assert "ETH/USDT" in markets.load_snapshot("binance", markets.DEFAULT_SNAPSHOTS["binance"])
