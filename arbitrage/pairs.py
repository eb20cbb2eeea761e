"""Which instruments on Coinbase and Binance are the same thing, and how their prices compare.

A pair is explicit configuration: the canonical symbol on each exchange and, when their quote currencies differ,
the rate that converts Binance's quote currency into Coinbase's (e.g. USDT -> USD). Two quote currencies are never
compared silently: building a pair whose quotes differ without a conversion is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from arbitrage.symbols import split

EXCHANGES = ("coinbase", "binance")


@dataclass(frozen=True, slots=True)
class QuoteConversion:
    """Multiply a price in `from_ccy` by `rate` to get it in `to_ccy` (a fixed rate, e.g. USDT->USD 1.0)."""

    from_ccy: str
    to_ccy: str
    rate: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.rate, Decimal) or not self.rate.is_finite() or self.rate <= 0:
            raise ValueError(f"conversion rate {self.from_ccy}->{self.to_ccy} must be a positive Decimal")


@dataclass(frozen=True, slots=True)
class Pair:
    """One comparable instrument: `name` is how users refer to it (the Coinbase symbol's base/quote)."""

    name: str
    coinbase: str  # canonical symbol on Coinbase, e.g. BTC/USD
    binance: str  # canonical symbol on Binance, e.g. BTC/USDT
    conversion: QuoteConversion | None = None  # Binance quote currency -> Coinbase quote currency

    def __post_init__(self) -> None:
        cb_base, cb_quote = split(self.coinbase)
        bn_base, bn_quote = split(self.binance)
        if cb_base != bn_base:
            raise ValueError(f"pair {self.name}: base currencies differ ({self.coinbase} vs {self.binance})")
        if cb_quote != bn_quote:
            conv = self.conversion
            if conv is None:
                raise ValueError(
                    f"pair {self.name}: quote currencies differ ({cb_quote} vs {bn_quote}) and no conversion is set"
                )
            if (conv.from_ccy, conv.to_ccy) != (bn_quote, cb_quote):
                raise ValueError(f"pair {self.name}: conversion must be {bn_quote}->{cb_quote}")

    @property
    def binance_rate(self) -> Decimal:
        """Factor that puts a Binance price into the pair's (Coinbase's) quote currency."""
        return self.conversion.rate if self.conversion else Decimal(1)

    def symbol_on(self, exchange: str) -> str:
        if exchange == "coinbase":
            return self.coinbase
        if exchange == "binance":
            return self.binance
        raise ValueError(f"unknown exchange {exchange!r}")


def parse_pair(spec: str) -> Pair:
    """Parse `NAME=COINBASE_SYMBOL~BINANCE_SYMBOL[@RATE]` or the short `BTC/USDT` (same symbol on both).

    `BTC/USD=BTC/USD~BTC/USDT@1.0` compares Coinbase BTC/USD with Binance BTC/USDT at a fixed USDT->USD rate of 1.0.
    """
    spec = spec.strip()
    if "=" not in spec:
        return Pair(name=spec, coinbase=spec, binance=spec)
    name, _, rest = spec.partition("=")
    coinbase, sep, binance = rest.partition("~")
    if not sep:
        raise ValueError(f"pair spec {spec!r}: expected NAME=COINBASE~BINANCE[@RATE]")
    conversion = None
    if "@" in binance:
        binance, _, rate = binance.partition("@")
        _, bn_quote = split(binance)
        _, cb_quote = split(coinbase)
        conversion = QuoteConversion(bn_quote, cb_quote, Decimal(rate))
    return Pair(name=name.strip(), coinbase=coinbase.strip(), binance=binance.strip(), conversion=conversion)


def parse_pairs(specs: str) -> tuple[Pair, ...]:
    """Comma-separated `parse_pair` specs."""
    pairs = tuple(parse_pair(s) for s in specs.split(",") if s.strip())
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate pair names in {specs!r}")
    return pairs


# The demo market: what the emulator's synthetic scenario quotes on both venues.
DEFAULT_PAIRS = "BTC/USD=BTC/USD~BTC/USDT@1.0,ETH/USD=ETH/USD~ETH/USDT@1.0,ETH/BTC"
