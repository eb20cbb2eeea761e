"""The synthetic market model: deterministic for a seed, noise that never fakes an arbitrage, injected windows exact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from arbitrage import spread
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import parse_pairs
from arb.settings import REPO_ROOT
from producers.emulator.market import MarketModel, Move, PairParams, VenueParams, Window, load_instruments
from producers.emulator.scenario import DEFAULT_PRICES

PAIRS = parse_pairs("BTC/USD=BTC/USD~BTC/USDT@1.0,ETH/USD=ETH/USD~ETH/USDT@1.0,ETH/BTC")
INSTRUMENTS = load_instruments(PAIRS, REPO_ROOT / "data" / "markets")
VENUES = {
    "coinbase": VenueParams(noise_bps=1.0, lag_s=0.2, half_spread_bps=1.0, max_deviation_bps=10),
    "binance": VenueParams(noise_bps=0.8, lag_s=0.1, half_spread_bps=0.5, max_deviation_bps=8),
}
FEES = FeeSchedule()


def model(windows=(), moves=(), seed=1, prices=None) -> MarketModel:
    return MarketModel(instruments=INSTRUMENTS, pair_params=prices or dict(DEFAULT_PRICES), venues=VENUES,
                       windows=tuple(windows), moves=list(moves), seed=seed)


def in_pair_ccy(m: MarketModel, exchange: str, pair: str, price: Decimal) -> Decimal:
    return price * m.instrument(pair).rate(exchange)


def net_both_ways(m: MarketModel, cb, bn, pair: str) -> tuple[Decimal, Decimal]:
    cb_bid, cb_ask = cb.bid, cb.ask
    bn_bid, bn_ask = in_pair_ccy(m, "binance", pair, bn.bid), in_pair_ccy(m, "binance", pair, bn.ask)
    buy_cb = spread.net_bps(cb_ask, bn_bid, FEES.coinbase, FEES.binance)
    buy_bn = spread.net_bps(bn_ask, cb_bid, FEES.binance, FEES.coinbase)
    return buy_cb, buy_bn


def test_instruments_come_from_the_market_snapshots():
    by_name = {i.name: i for i in INSTRUMENTS}
    assert (by_name["BTC/USD"].coinbase_id, by_name["BTC/USD"].binance_id) == ("BTC-USD", "BTCUSDT")
    assert by_name["BTC/USD"].coinbase_tick == Decimal("0.01")
    assert by_name["ETH/BTC"].binance_id == "ETHBTC"
    assert by_name["ETH/BTC"].binance_tick == Decimal("0.000001")
    assert by_name["ETH/BTC"].coinbase_tick == Decimal("0.00001")


def test_same_seed_gives_the_same_quotes_and_another_seed_does_not():
    def run(seed):
        m = model(seed=seed)
        out = []
        for step in range(1, 50):
            m.advance(step * 0.1)
            out.append((m.quote("coinbase", "BTC/USD"), m.quote("binance", "ETH/BTC")))
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_quotes_sit_on_each_venues_tick_grid_and_are_not_crossed():
    m = model()
    for step in range(1, 200):
        m.advance(step * 0.05)
        for inst in INSTRUMENTS:
            for exchange in ("coinbase", "binance"):
                top = m.quote(exchange, inst.name)
                tick = inst.tick(exchange)
                assert top.bid % tick == 0 and top.ask % tick == 0
                assert top.bid < top.ask
                assert top.bid_size > 0 and top.ask_size > 0
                assert top.window is None


def test_normal_noise_never_makes_a_net_positive_spread_even_through_a_crash():
    m = model(moves=[Move("BTC/USD", start_s=20, duration_s=30, pct=-3.0, kind="crash")], seed=9)
    worst = Decimal(-10_000)
    for step in range(1, 3000):  # 150 s at 20 updates/s
        m.advance(step * 0.05)
        for inst in INSTRUMENTS:
            cb, bn = m.quote("coinbase", inst.name), m.quote("binance", inst.name)
            worst = max(worst, *net_both_ways(m, cb, bn, inst.name))
    assert worst < 0
    assert worst < -30  # a wide margin: noise stays far from the ~70 bps fee line


def test_a_window_shows_its_gross_spread_and_size_on_both_venues():
    window = Window("w1", "BTC/USD", spread.BUY_COINBASE_SELL_BINANCE, start_s=1.0, duration_s=2.0,
                    gross_bps=Decimal("100"), size=Decimal("0.4"))
    m = model(windows=[window])
    m.advance(1.5)
    cb, bn = m.quote("coinbase", "BTC/USD"), m.quote("binance", "BTC/USD")
    assert cb.window == bn.window == "w1"
    gross = spread.gross_bps(cb.ask, in_pair_ccy(m, "binance", "BTC/USD", bn.bid))
    assert Decimal("100") <= gross < Decimal("100.01")
    assert cb.ask_size == bn.bid_size == Decimal("0.4")
    net, _ = net_both_ways(m, cb, bn, "BTC/USD")
    assert net > 0
    assert abs(net - window.expected_net_bps(FEES)) < Decimal("0.01")
    anchor = m.anchor("w1")
    assert anchor.gross_bps == gross and anchor.net_bps == net


def test_a_window_holds_its_prices_while_open_and_is_gone_after_its_end():
    window = Window("w2", "ETH/BTC", spread.BUY_BINANCE_SELL_COINBASE, start_s=1.0, duration_s=1.0,
                    gross_bps=Decimal("120"), size=Decimal("2"))
    m = model(windows=[window])
    m.advance(1.1)
    first = (m.quote("binance", "ETH/BTC").ask, m.quote("coinbase", "ETH/BTC").bid)
    m.advance(1.9)
    bn, cb = m.quote("binance", "ETH/BTC"), m.quote("coinbase", "ETH/BTC")
    assert (bn.ask, cb.bid) == first
    assert cb.ask > cb.bid and bn.ask > bn.bid
    m.advance(2.01)
    assert m.quote("binance", "ETH/BTC").ask == first[0]  # the buy venue holds until the sell venue has moved on
    cb = m.quote("coinbase", "ETH/BTC")
    bn = m.quote("binance", "ETH/BTC")
    assert cb.window is None and bn.window is None
    _, net = net_both_ways(m, cb, bn, "ETH/BTC")
    assert net < 0


@pytest.mark.parametrize("seed", range(5))
def test_no_interleaving_of_venue_quotes_shows_more_than_the_windows_gross(seed):
    import random

    window = Window("w3", "BTC/USD", spread.BUY_BINANCE_SELL_COINBASE, start_s=2.0, duration_s=2.0,
                    gross_bps=Decimal("95"), size=Decimal("0.25"))
    m = model(windows=[window], seed=seed)
    order = random.Random(seed)
    latest = {}
    peak = Decimal(-10_000)
    for step in range(1, 120):
        m.advance(step * 0.05)
        for exchange in order.sample(["coinbase", "binance"], k=order.randint(1, 2)):
            latest[exchange] = m.quote(exchange, "BTC/USD")
            if len(latest) == 2:
                peak = max(peak, spread.gross_bps(latest["binance"].ask, latest["coinbase"].bid))
    assert peak == m.anchor("w3").gross_bps


def test_a_crash_moves_the_underlying_by_its_percentage_and_stays_there():
    prices = {**DEFAULT_PRICES, "BTC/USD": PairParams(price=Decimal("60000"), volatility_bps=0.0)}
    m = model(moves=[Move("BTC/USD", start_s=10, duration_s=60, pct=-3.0, kind="crash")], prices=prices)
    m.advance(10)
    assert m.underlying("BTC/USD") == pytest.approx(60000)
    m.advance(40)
    assert m.underlying("BTC/USD") == pytest.approx(60000 * 0.97 ** 0.5)
    m.advance(100)
    assert m.underlying("BTC/USD") == pytest.approx(58200)


def test_cross_book_quotes_a_bid_above_the_ask_until_it_ends():
    m = model()
    m.advance(1.0)
    m.cross("binance", "ETH/USD", until_t=2.0)
    assert m.quote("binance", "ETH/USD").is_crossed
    assert not m.quote("coinbase", "ETH/USD").is_crossed
    m.advance(2.5)
    assert not m.quote("binance", "ETH/USD").is_crossed


def test_trades_take_the_top_of_book_on_the_takers_side():
    m = model()
    m.advance(1.0)
    top = m.quote("binance", "BTC/USD")
    for _ in range(20):
        trade = m.trade(top, Decimal("0.00001"))
        assert trade.price == (top.ask if trade.taker_side == "buy" else top.bid)
        assert 0 < trade.size <= max(top.ask_size, top.bid_size)
