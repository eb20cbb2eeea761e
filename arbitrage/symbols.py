"""Canonical symbols (`BASE/QUOTE`, ccxt's unified form) and explicit two-way maps to each venue's own ids.

A map is built from a market-metadata snapshot (Binance `GET /api/v3/exchangeInfo`, Coinbase Exchange `GET /products`)
or from ccxt's `load_markets()` result; an unknown symbol is a named error, never a silent skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


class UnknownSymbol(KeyError):
    """A symbol (canonical or venue id) that the exchange's market map does not know."""

    def __init__(self, exchange: str, symbol: str) -> None:
        super().__init__(f"{exchange}: unknown symbol {symbol!r}")
        self.exchange = exchange
        self.symbol = symbol

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


def canonical(base: str, quote: str) -> str:
    """`BTC`, `USDT` -> `BTC/USDT`."""
    return f"{base.upper()}/{quote.upper()}"


def split(symbol: str) -> tuple[str, str]:
    """`BTC/USDT` -> (`BTC`, `USDT`); raises ValueError on anything else."""
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote or "/" in quote:
        raise ValueError(f"not a canonical BASE/QUOTE symbol: {symbol!r}")
    return base.upper(), quote.upper()


@dataclass(frozen=True, slots=True)
class Market:
    """One instrument on one venue."""

    symbol: str  # canonical, e.g. BTC/USDT
    venue_symbol: str  # the venue's id, e.g. BTCUSDT or BTC-USD
    base: str
    quote: str
    price_increment: Decimal | None = None
    size_increment: Decimal | None = None
    taker_fee: Decimal | None = None


@dataclass(frozen=True)
class SymbolMap:
    """Both directions between canonical symbols and one exchange's venue ids."""

    exchange: str
    markets: tuple[Market, ...]
    _by_symbol: dict[str, Market] = field(init=False, repr=False)
    _by_venue: dict[str, Market] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_symbol", {m.symbol: m for m in self.markets})
        # Venue ids compare case-insensitively: Binance stream names are lower case (btcusdt@bookTicker).
        object.__setattr__(self, "_by_venue", {m.venue_symbol.upper(): m for m in self.markets})

    def market(self, symbol: str) -> Market:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise UnknownSymbol(self.exchange, symbol) from None

    def to_venue(self, symbol: str) -> str:
        return self.market(symbol).venue_symbol

    def from_venue(self, venue_symbol: str) -> str:
        try:
            return self._by_venue[venue_symbol.upper()].symbol
        except KeyError:
            raise UnknownSymbol(self.exchange, venue_symbol) from None

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._by_symbol

    def __len__(self) -> int:
        return len(self.markets)
