"""The rule parameters shared by the streaming job, the Polars oracle and the backtester (see docs/RULES.md).

`RulesConfig` says which pairs are compared, how old a quote may be, the taker fees and the tradable threshold; the
rounding helpers say how bps and money values are stored, so every engine rounds the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from arbitrage.events import FeedState
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import DEFAULT_PAIRS, EXCHANGES, Pair, parse_pairs
from arbitrage.spread import BUY_BINANCE_SELL_COINBASE, BUY_COINBASE_SELL_BINANCE

# bps values are stored rounded HALF_UP to 6 places; money (sizes, profits, converted prices) at the Delta scale, 12.
BPS_PLACES = 6
MONEY_PLACES = 12
_BPS_QUANTUM = Decimal(1).scaleb(-BPS_PLACES)
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
# Wide enough that no intermediate of the spread formulas is rounded before the final quantize.
WIDE = Context(prec=60)

# Feed states that invalidate an exchange's latest quote, and the close_reason they give an open window.
CLOSE_REASON_BY_STATE = {
    FeedState.GAP: "feed_gap",
    FeedState.DISCONNECTED: "feed_disconnect",
    FeedState.STALE: "stale",
}
CLOSE_SPREAD = "spread"
CLOSE_STALE = "stale"

# Column prefix of each direction in silver/spreads.
DIRECTION_PREFIX = {BUY_COINBASE_SELL_BINANCE: "cb_bn_", BUY_BINANCE_SELL_COINBASE: "bn_cb_"}


def round_bps(value: Decimal) -> Decimal:
    """Round a bps value the way it is stored (HALF_UP, 6 places)."""
    with localcontext(WIDE):
        return value.quantize(_BPS_QUANTUM, rounding=ROUND_HALF_UP)


def round_money(value: Decimal) -> Decimal:
    """Round a price, size or profit to the Delta column scale (HALF_UP, 12 places)."""
    with localcontext(WIDE):
        return value.quantize(_MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def direction_fees(direction: str, fees: FeeSchedule) -> tuple[Decimal, Decimal]:
    """(buy_fee, sell_fee) of a direction: the taker fee where we buy and where we sell."""
    if direction == BUY_COINBASE_SELL_BINANCE:
        return fees.coinbase, fees.binance
    if direction == BUY_BINANCE_SELL_COINBASE:
        return fees.binance, fees.coinbase
    raise ValueError(f"unknown direction {direction!r}")


class UnknownPair(KeyError):
    """A pair name that the configuration does not define."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown pair {name!r} (known: {', '.join(known)})")

    def __str__(self) -> str:
        return self.args[0]


def _default_pairs() -> tuple[Pair, ...]:
    return parse_pairs(DEFAULT_PAIRS)


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """Threshold, staleness bound, fees and pairs: everything the rules in docs/RULES.md depend on."""

    threshold_bps: Decimal = Decimal("5")  # minimum net spread (after both taker fees) of a tradable comparison
    staleness_ms: int = 500  # a quote older than this at the moment of comparison is never compared
    fees: FeeSchedule = FeeSchedule()
    pairs: tuple[Pair, ...] = field(default_factory=_default_pairs)

    def __post_init__(self) -> None:
        if not isinstance(self.threshold_bps, Decimal) or not self.threshold_bps.is_finite():
            raise ValueError(f"threshold_bps must be a finite Decimal, got {self.threshold_bps!r}")
        if isinstance(self.staleness_ms, bool) or not isinstance(self.staleness_ms, int) or self.staleness_ms < 0:
            raise ValueError(f"staleness_ms must be a non-negative int, got {self.staleness_ms!r}")
        if not isinstance(self.fees, FeeSchedule):
            raise ValueError("fees must be a FeeSchedule")
        if not isinstance(self.pairs, tuple) or not all(isinstance(p, Pair) for p in self.pairs):
            raise ValueError("pairs must be a tuple of Pair")
        names = [p.name for p in self.pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pair names: {names}")

    @property
    def staleness_us(self) -> int:
        return self.staleness_ms * 1000

    @property
    def pair_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pairs)

    def pair(self, name: str) -> Pair:
        """The pair called `name`; raises UnknownPair."""
        for p in self.pairs:
            if p.name == name:
                return p
        raise UnknownPair(name, self.pair_names)

    def pairs_for(self, exchange: str, symbol: str) -> tuple[Pair, ...]:
        """Every configured pair that quotes of `symbol` on `exchange` feed (usually one)."""
        if exchange not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange!r}")
        return tuple(p for p in self.pairs if p.symbol_on(exchange) == symbol)

    def pair_for(self, exchange: str, symbol: str) -> Pair | None:
        """The pair that quotes of `symbol` on `exchange` feed, None if none; ValueError if several do."""
        found = self.pairs_for(exchange, symbol)
        if len(found) > 1:
            raise ValueError(f"{exchange} {symbol} feeds several pairs: {[p.name for p in found]}; use pairs_for")
        return found[0] if found else None
