"""The one definition of gross and net spread.

Each function uses only + - * / and comparisons, so the same code runs on Python `Decimal`s, Polars expressions
and Spark columns: the streaming job, the Polars oracle / backtester and the dashboard all call these.

A direction buys on one venue at its ask and sells on the other at its bid (both legs as taker):
    gross_bps = (sell_bid - buy_ask) / buy_ask * 1e4
    net edge per unit = sell_bid * (1 - sell_fee) - buy_ask * (1 + buy_fee)
    net_bps   = net edge / (buy_ask * (1 + buy_fee)) * 1e4        (return on the money spent)
    profit    = net edge * executable size, executable size = min(buy ask size, sell bid size)
Prices must already be in one quote currency (see `arbitrage.pairs.Pair.binance_rate`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

T = TypeVar("T")  # Decimal, polars.Expr or pyspark.sql.Column

BPS = Decimal(10_000)
ONE = Decimal(1)

# Directions, named by where we buy and where we sell.
BUY_COINBASE_SELL_BINANCE = "buy_coinbase_sell_binance"
BUY_BINANCE_SELL_COINBASE = "buy_binance_sell_coinbase"
DIRECTIONS = (BUY_COINBASE_SELL_BINANCE, BUY_BINANCE_SELL_COINBASE)


def gross_bps(buy_ask: T, sell_bid: T) -> T:
    return (sell_bid - buy_ask) / buy_ask * BPS  # type: ignore[operator]


def net_edge(buy_ask: T, sell_bid: T, buy_fee: Decimal, sell_fee: Decimal) -> T:
    """Quote currency earned per unit of base after both taker fees."""
    return sell_bid * (ONE - sell_fee) - buy_ask * (ONE + buy_fee)  # type: ignore[operator]


def net_bps(buy_ask: T, sell_bid: T, buy_fee: Decimal, sell_fee: Decimal) -> T:
    return net_edge(buy_ask, sell_bid, buy_fee, sell_fee) / (buy_ask * (ONE + buy_fee)) * BPS  # type: ignore[operator]


def estimated_profit(net_edge_per_unit: T, executable_size: T) -> T:
    return net_edge_per_unit * executable_size  # type: ignore[operator]


def break_even_gross_bps(buy_fee: Decimal, sell_fee: Decimal) -> Decimal:
    """The gross spread at which net is exactly zero: the fee line drawn on the dashboard."""
    return ((ONE + buy_fee) / (ONE - sell_fee) - ONE) * BPS
