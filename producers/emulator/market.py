"""The synthetic market: one underlying price per pair, seen by both exchanges with their own noise and lag.

Pure and deterministic for a seed: the model is advanced by explicit offsets (seconds since the scenario started) and
asked for each venue's top of book; it does no I/O and reads no clock. The protocol servers turn its output into frames.

Why normal noise can never look like an arbitrage: each venue's mid is clamped to within `max_deviation_bps` of the
underlying, and its bid/ask sit at least `half_spread_bps` away from that mid, so a cross-venue gross spread is at most
`2 * (max_deviation_bps - half_spread_bps)`, far below the ~70 bps that default taker fees need. `Scenario` checks
this bound when it is built. Only injected windows (and stale quotes on a silent feed) can exceed it.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

from arbitrage import spread
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import Pair
from arbitrage.symbols import split

EXCHANGES = ("coinbase", "binance")


@dataclass(frozen=True, slots=True)
class Instrument:
    """A pair as listed on both venues: venue ids, price ticks and size steps (from the market snapshots)."""

    pair: Pair
    coinbase_id: str  # BTC-USD
    binance_id: str  # BTCUSDT
    coinbase_tick: Decimal
    binance_tick: Decimal
    coinbase_lot: Decimal
    binance_lot: Decimal

    @property
    def name(self) -> str:
        return self.pair.name

    def venue_id(self, exchange: str) -> str:
        return self.coinbase_id if exchange == "coinbase" else self.binance_id

    def tick(self, exchange: str) -> Decimal:
        return self.coinbase_tick if exchange == "coinbase" else self.binance_tick

    def lot(self, exchange: str) -> Decimal:
        return self.coinbase_lot if exchange == "coinbase" else self.binance_lot

    def rate(self, exchange: str) -> Decimal:
        """Factor that puts this venue's price into the pair's quote currency."""
        return self.pair.binance_rate if exchange == "binance" else Decimal(1)


def _coinbase_products(markets_dir: Path | None) -> dict[str, dict]:
    path = markets_dir / "coinbase-products.json" if markets_dir else None
    if path is None or not path.is_file():
        return {}
    return {p["id"]: p for p in json.loads(path.read_text())}


def _binance_symbols(markets_dir: Path | None) -> dict[str, dict]:
    path = markets_dir / "binance-exchangeInfo.json" if markets_dir else None
    if path is None or not path.is_file():
        return {}
    return {s["symbol"]: s for s in json.loads(path.read_text())["symbols"]}


def _binance_filter(symbol: dict, kind: str, key: str) -> Decimal | None:
    for flt in symbol.get("filters", ()):
        if flt.get("filterType") == kind:
            return Decimal(flt[key]).normalize()
    return None


def load_instruments(pairs: tuple[Pair, ...], markets_dir: Path | None) -> tuple[Instrument, ...]:
    """Venue ids and increments for each pair, from `coinbase-products.json` / `binance-exchangeInfo.json` in
    `markets_dir` when present (the repo's `data/markets/`), else the usual venue-id spelling and fine increments."""
    products = _coinbase_products(markets_dir)
    symbols = _binance_symbols(markets_dir)
    out = []
    for pair in pairs:
        cb_base, cb_quote = split(pair.coinbase)
        bn_base, bn_quote = split(pair.binance)
        cb_id, bn_id = f"{cb_base}-{cb_quote}", f"{bn_base}{bn_quote}"
        product = products.get(cb_id, {})
        symbol = symbols.get(bn_id, {})
        out.append(
            Instrument(
                pair=pair,
                coinbase_id=cb_id,
                binance_id=bn_id,
                coinbase_tick=Decimal(product.get("quote_increment", "0.00001")).normalize(),
                binance_tick=_binance_filter(symbol, "PRICE_FILTER", "tickSize") or Decimal("0.000001"),
                coinbase_lot=Decimal(product.get("base_increment", "0.00000001")).normalize(),
                binance_lot=_binance_filter(symbol, "LOT_SIZE", "stepSize") or Decimal("0.0001"),
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class VenueParams:
    """How one exchange sees the underlying: its quoting, its noise and lag, its update rates (per symbol)."""

    quotes_per_s: float = 10.0
    trades_per_s: float = 1.0
    noise_bps: float = 1.0  # standard deviation of each quote's mid around the venue's (lagged) mid
    lag_s: float = 0.2  # time constant with which the venue's mid follows the underlying
    half_spread_bps: float = 1.0  # each side's distance from the mid (before rounding outwards to the tick)
    max_deviation_bps: float = 10.0  # the venue's mid never strays further than this from the underlying

    def __post_init__(self) -> None:
        for name in ("quotes_per_s", "trades_per_s", "noise_bps", "lag_s", "half_spread_bps", "max_deviation_bps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.half_spread_bps <= 0:
            raise ValueError("half_spread_bps must be positive")


@dataclass(frozen=True, slots=True)
class PairParams:
    """The underlying of one pair: its starting price (pair quote currency), volatility and typical top size."""

    price: Decimal
    volatility_bps: float = 2.0  # per square-root second
    size: Decimal = Decimal("1")  # typical size at the top of the book, base currency

    def __post_init__(self) -> None:
        if not isinstance(self.price, Decimal) or not self.price.is_finite() or self.price <= 0:
            raise ValueError(f"price must be a positive Decimal, got {self.price!r}")
        if not isinstance(self.size, Decimal) or not self.size.is_finite() or self.size <= 0:
            raise ValueError(f"size must be a positive Decimal, got {self.size!r}")
        if not math.isfinite(self.volatility_bps) or self.volatility_bps < 0:
            raise ValueError(f"volatility_bps must be a non-negative number, got {self.volatility_bps!r}")


@dataclass(frozen=True, slots=True)
class Window:
    """An injected arbitrage window: from `start_s` for `duration_s`, the buy venue's ask and the sell venue's bid
    stand `gross_bps` apart (in the pair's quote currency) with `size` on both."""

    id: str
    pair: str
    direction: str
    start_s: float
    duration_s: float
    gross_bps: Decimal
    size: Decimal

    def __post_init__(self) -> None:
        if self.direction not in spread.DIRECTIONS:
            raise ValueError(f"window {self.id}: direction must be one of {spread.DIRECTIONS}, got {self.direction!r}")
        if self.start_s < 0 or self.duration_s <= 0:
            raise ValueError(f"window {self.id}: start_s must be >= 0 and duration_s > 0")
        if self.gross_bps <= 0 or self.size <= 0:
            raise ValueError(f"window {self.id}: gross_bps and size must be positive")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def buy_exchange(self) -> str:
        return "coinbase" if self.direction == spread.BUY_COINBASE_SELL_BINANCE else "binance"

    @property
    def sell_exchange(self) -> str:
        return "binance" if self.direction == spread.BUY_COINBASE_SELL_BINANCE else "coinbase"

    def expected_net_bps(self, fees: FeeSchedule = FeeSchedule()) -> Decimal:
        """Net bps at the target gross with the given taker fees (the buy price cancels out)."""
        sell_bid = spread.ONE + self.gross_bps / spread.BPS
        return spread.net_bps(spread.ONE, sell_bid, fees.taker(self.buy_exchange), fees.taker(self.sell_exchange))


@dataclass(frozen=True, slots=True)
class Move:
    """A scripted move of one pair's underlying: `pct` percent, linear in log-price over `duration_s`, kept after.
    `kind` is `crash` for the analytics crash scenario, `move` otherwise (e.g. the price jump behind a stale feed)."""

    pair: str
    start_s: float
    duration_s: float
    pct: float
    kind: str = "move"
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("move", "crash"):
            raise ValueError(f"move kind must be 'move' or 'crash', got {self.kind!r}")
        if self.duration_s <= 0 or not -100 < self.pct:
            raise ValueError("a move needs duration_s > 0 and pct > -100")

    def log_factor(self, t: float) -> float:
        progress = min(max((t - self.start_s) / self.duration_s, 0.0), 1.0)
        return math.log1p(self.pct / 100.0) * progress


@dataclass(frozen=True, slots=True)
class Top:
    """One venue's top of book in the venue's own currency; `window` names the injected window it shows, if any."""

    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    window: str | None = None

    @property
    def is_crossed(self) -> bool:
        return self.bid > self.ask


@dataclass(frozen=True, slots=True)
class TradeTick:
    price: Decimal
    size: Decimal
    taker_side: str  # "buy" or "sell"


@dataclass(slots=True)
class WindowAnchor:
    """The prices a window holds, fixed when it is first quoted (venue currencies) and what they mean."""

    buy_ask: Decimal  # on the buy venue
    sell_bid: Decimal  # on the sell venue
    gross_bps: Decimal  # realized, in the pair's quote currency
    net_bps: Decimal


def _round(value: float, step: Decimal, rounding: str) -> Decimal:
    units = (Decimal(repr(value)) / step).to_integral_value(rounding=rounding)
    return units * step


@dataclass
class MarketModel:
    """Underlyings, venue mids, injected windows and scripted moves, advanced in time by `advance(t)`."""

    instruments: tuple[Instrument, ...]
    pair_params: dict[str, PairParams]
    venues: dict[str, VenueParams]
    windows: tuple[Window, ...] = ()
    moves: list[Move] = field(default_factory=list)
    seed: int = 0
    fees: FeeSchedule = FeeSchedule()
    t: float = 0.0
    _rng: random.Random = field(init=False, repr=False)
    _walk: dict[str, float] = field(init=False, repr=False)
    _venue_log_mid: dict[tuple[str, str], float] = field(init=False, repr=False)
    _windows_by_pair: dict[str, list[Window]] = field(init=False, repr=False)
    _anchors: dict[str, WindowAnchor] = field(init=False, repr=False)
    _crossed_until: dict[tuple[str, str], float] = field(init=False, repr=False)
    _last: dict[tuple[str, str], Top] = field(init=False, repr=False)
    _ending: dict[str, Window] = field(init=False, repr=False)
    _by_name: dict[str, Instrument] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._by_name = {i.name: i for i in self.instruments}
        missing = set(self._by_name) - set(self.pair_params)
        if missing:
            raise ValueError(f"no price parameters for pairs {sorted(missing)}")
        self._walk = {name: 0.0 for name in self._by_name}
        self._venue_log_mid = {(ex, name): 0.0 for ex in EXCHANGES for name in self._by_name}
        self._windows_by_pair = {name: [] for name in self._by_name}
        for window in sorted(self.windows, key=lambda w: w.start_s):
            if window.pair not in self._by_name:
                raise ValueError(f"window {window.id}: unknown pair {window.pair!r}")
            self._windows_by_pair[window.pair].append(window)
        self._anchors = {}
        self._crossed_until = {}
        self._last = {}
        self._ending = {}

    def instrument(self, pair: str) -> Instrument:
        try:
            return self._by_name[pair]
        except KeyError:
            raise ValueError(f"unknown pair {pair!r}; known: {sorted(self._by_name)}") from None

    # --- time -------------------------------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        """Move the random walks and the venues' lagged mids forward to offset `t` (seconds)."""
        dt = t - self.t
        if dt <= 0:
            return
        self.t = t
        for name in self._walk:
            sigma = self.pair_params[name].volatility_bps / 1e4
            self._walk[name] += sigma * math.sqrt(dt) * self._rng.gauss(0.0, 1.0)
            target = self._log_underlying(name)
            for ex in EXCHANGES:
                lag = self.venues[ex].lag_s
                keep = math.exp(-dt / lag) if lag > 0 else 0.0
                key = (ex, name)
                self._venue_log_mid[key] = target + (self._venue_log_mid[key] - target) * keep

    def _log_underlying(self, pair: str) -> float:
        return self._walk[pair] + sum(m.log_factor(self.t) for m in self.moves if m.pair == pair)

    def underlying(self, pair: str) -> float:
        """The pair's true price now, in its quote currency."""
        return float(self.pair_params[pair].price) * math.exp(self._log_underlying(pair))

    def add_move(self, move: Move) -> None:
        self.instrument(move.pair)
        self.moves.append(move)

    def cross(self, exchange: str, pair: str, until_t: float) -> None:
        """Quote a crossed book (bid above ask) on one venue until offset `until_t`."""
        self.instrument(pair)
        self._crossed_until[(exchange, pair)] = until_t

    def active_window(self, pair: str) -> Window | None:
        for window in self._windows_by_pair[pair]:
            if window.start_s > self.t:
                return None
            if self.t < window.end_s:
                return window
        return None

    def _drop_past_windows(self, pair: str) -> None:
        pending = self._windows_by_pair[pair]
        while pending and pending[0].end_s <= self.t:
            self._ending[pair] = pending.pop(0)

    def _window_for(self, exchange: str, pair: str) -> Window | None:
        """The window this venue's quote must show now. A window ends on its sell venue first: until the sell venue
        has quoted without it, the buy venue keeps the window's ask, so no quote pair ever shows more than the window's
        gross spread (the same at the start, where the anchor is the buy venue's last published ask)."""
        window = self.active_window(pair)
        if window is not None:
            return window
        ending = self._ending.get(pair)
        if ending is None:
            return None
        sell_top = self._last.get((ending.sell_exchange, pair))
        if sell_top is None or sell_top.window != ending.id:
            del self._ending[pair]
            return None
        return ending if exchange == ending.buy_exchange else None

    # --- quotes and trades ------------------------------------------------------------------------------------

    def _size(self, pair: str, lot: Decimal) -> Decimal:
        typical = float(self.pair_params[pair].size)
        return max(_round(typical * self._rng.uniform(0.2, 1.8), lot, ROUND_FLOOR), lot)

    def _normal_top(self, exchange: str, pair: str) -> tuple[Decimal, Decimal]:
        """Bid and ask (venue currency) from the venue's noisy, lagged, clamped mid."""
        venue = self.venues[exchange]
        inst = self._by_name[pair]
        log_u = self._log_underlying(pair)
        log_mid = self._venue_log_mid[(exchange, pair)] + self._rng.gauss(0.0, venue.noise_bps / 1e4)
        max_dev = venue.max_deviation_bps / 1e4
        log_mid = min(max(log_mid, log_u - max_dev), log_u + max_dev)
        mid = float(self.pair_params[pair].price) * math.exp(log_mid) / float(inst.rate(exchange))
        half = venue.half_spread_bps / 1e4
        tick = inst.tick(exchange)
        bid = _round(mid * (1 - half), tick, ROUND_FLOOR)
        ask = _round(mid * (1 + half), tick, ROUND_CEILING)
        if ask <= bid:
            ask = bid + tick
        return max(bid, tick), max(ask, tick + tick)

    def quote(self, exchange: str, pair: str) -> Top:
        """The venue's top of book now. Call once per quote actually published: it consumes randomness and the
        model remembers it as what the market last saw from this venue."""
        inst = self.instrument(pair)
        lot = inst.lot(exchange)
        bid, ask = self._normal_top(exchange, pair)
        bid_size, ask_size = self._size(pair, lot), self._size(pair, lot)
        self._drop_past_windows(pair)
        window = self._window_for(exchange, pair)
        window_id = None
        if window is not None:
            anchor = self._anchor(window)
            tick = inst.tick(exchange)
            window_id = window.id
            size = _round(float(window.size), lot, ROUND_FLOOR)
            if exchange == window.buy_exchange:
                ask, ask_size = anchor.buy_ask, size
                bid = min(bid, ask - tick)
            else:
                bid, bid_size = anchor.sell_bid, size
                half = Decimal(repr(self.venues[exchange].half_spread_bps)) / spread.BPS
                floor_ask = (bid * (spread.ONE + half) / tick).to_integral_value(rounding=ROUND_CEILING) * tick
                ask = max(ask, floor_ask, bid + tick)
        if self._crossed_until.get((exchange, pair), -1.0) > self.t:
            tick = inst.tick(exchange)
            bid = ask + tick * 2
        top = Top(bid=bid, bid_size=bid_size, ask=ask, ask_size=ask_size, window=window_id)
        self._last[(exchange, pair)] = top
        return top

    def _anchor(self, window: Window) -> WindowAnchor:
        anchor = self._anchors.get(window.id)
        if anchor is not None:
            return anchor
        inst = self._by_name[window.pair]
        buy, sell = window.buy_exchange, window.sell_exchange
        last = self._last.get((buy, window.pair))
        if last is not None and last.window is None and not last.is_crossed:
            buy_ask = last.ask  # what the market already sees, so the window's first quote shows exactly its gross
        else:
            _, buy_ask = self._normal_top(buy, window.pair)
        buy_ask_ccy = buy_ask * inst.rate(buy)
        target_sell_ccy = buy_ask_ccy * (spread.ONE + window.gross_bps / spread.BPS)
        sell_tick = inst.tick(sell)
        sell_bid = (target_sell_ccy / inst.rate(sell) / sell_tick).to_integral_value(rounding=ROUND_CEILING) * sell_tick
        sell_bid_ccy = sell_bid * inst.rate(sell)
        gross = spread.gross_bps(buy_ask_ccy, sell_bid_ccy)
        net = spread.net_bps(buy_ask_ccy, sell_bid_ccy, self.fees.taker(buy), self.fees.taker(sell))
        anchor = WindowAnchor(buy_ask=buy_ask, sell_bid=sell_bid, gross_bps=gross, net_bps=net)
        self._anchors[window.id] = anchor
        return anchor

    def anchor(self, window_id: str) -> WindowAnchor | None:
        """The prices a window showed (None until it was first quoted)."""
        return self._anchors.get(window_id)

    def trade(self, top: Top, lot: Decimal) -> TradeTick:
        """A taker trade against a venue's top: buys lift the ask, sells hit the bid."""
        side = "buy" if self._rng.random() < 0.5 else "sell"
        price, available = (top.ask, top.ask_size) if side == "buy" else (top.bid, top.bid_size)
        size = _round(float(available) * self._rng.uniform(0.05, 0.5), lot, ROUND_FLOOR)
        return TradeTick(price=price, size=max(size, lot), taker_side=side)

    def normal_gross_bound_bps(self) -> float:
        """The largest gross spread normal noise can show across the venues (see the module docstring)."""
        cb, bn = self.venues["coinbase"], self.venues["binance"]
        return cb.max_deviation_bps + bn.max_deviation_bps - cb.half_spread_bps - bn.half_spread_bps
