"""The incremental rule engine: one `PairTracker` per pair turns ordered ticks into spread rows and window events.

This is what the Spark gold job runs inside `transformWithStateInPandas` (its state is JSON-able for the state
store); `arbitrage.oracle` implements the same rules (docs/RULES.md) independently with vectorized Polars.

Feed a tracker the pair's ticks in `sort_key` order. Each quote may produce one `SpreadRow` (a tradable comparison)
and OPEN / CLOSE `WindowEvent`s; a feed status may close windows; `advance_to(watermark)` fires stale closes.

Time: a stale close at `deadline` happens after every tick with `t <= deadline` (a quote exactly S old is still
compared), so `advance_to(now_us)` means "every tick with t <= now_us has been fed" and fires deadlines <= now_us.
A tick older than that promise (or older than the last tick fed) is late: it is dropped and counted in `late_ticks`.
With Spark's event-time watermark W (rows with t < W may no longer arrive, rows at W still may), call
`advance_to(W - 1)`; an event-time timer for `next_deadline_us()` should be registered at deadline + 1 µs.

Numbers: bps are rounded HALF_UP to 6 places and tradability compares the rounded value with the threshold; money
that is computed (converted Binance prices, profits) is rounded HALF_UP to 12 places, the Delta scale. Every public
method runs the rules under the `WIDE` decimal context, entered once per call (`feed` takes a batch of ticks).

Speed: the hot path runs these rules for every tick, so the per-tick records (`QuoteTick`, `StatusTick`, `SpreadRow`)
are NamedTuples (built in C; a frozen dataclass costs ~0.7 µs more per 8 fields) and the rules use the rounding
helpers' quantize directly inside the one context instead of entering a context per value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, NamedTuple

from arbitrage import spread
from arbitrage.events import FeedState, FeedStatus, Quote
from arbitrage.pairs import Pair
from arbitrage.rules import (
    CLOSE_REASON_BY_STATE,
    CLOSE_SPREAD,
    CLOSE_STALE,
    BPS_PLACES,
    MONEY_PLACES,
    WIDE,
    RulesConfig,
    direction_fees,
)
from arbitrage.spread import BUY_BINANCE_SELL_COINBASE, BUY_COINBASE_SELL_BINANCE, DIRECTIONS

STATE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OTHER = {"coinbase": "binance", "binance": "coinbase"}
# round_bps / round_money of arbitrage.rules, for code already running under WIDE.
_BPS = Decimal(1).scaleb(-BPS_PLACES)
_MONEY = Decimal(1).scaleb(-MONEY_PLACES)


def us_to_date(ts_us: int) -> date:
    """The UTC date of a time in microseconds since the epoch."""
    return (_EPOCH + timedelta(microseconds=ts_us)).date()


class QuoteTick(NamedTuple):
    """One silver quote as the rules see it: venue prices (the tracker applies `Pair.binance_rate`)."""

    exchange: str
    symbol: str
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    event_ts_us: int  # coalesce(ts_event, ts_recv)
    seq: int | None

    @property
    def is_crossed(self) -> bool:
        return self.bid > self.ask

    @classmethod
    def from_quote(cls, quote: Quote) -> QuoteTick:
        event_ts = quote.ts_event_us if quote.ts_event_us is not None else quote.ts_recv_us
        return cls(quote.exchange, quote.symbol, quote.bid, quote.bid_size, quote.ask, quote.ask_size, event_ts, quote.seq)


class StatusTick(NamedTuple):
    """One silver feed-status event; `symbol=None` concerns every symbol of the exchange."""

    exchange: str
    state: FeedState
    ts_us: int  # ts_recv
    symbol: str | None = None

    @classmethod
    def from_status(cls, status: FeedStatus) -> StatusTick:
        return cls(status.exchange, status.state, status.ts_recv_us, status.symbol)


Tick = QuoteTick | StatusTick


def sort_key(tick: Tick) -> tuple:
    """The processing order of docs/RULES.md: (t, kind: status before quote, exchange, seq), then tie-breakers."""
    if isinstance(tick, StatusTick):
        return (tick.ts_us, 0, tick.exchange, -1, str(tick.state), tick.symbol or "")
    return (tick.event_ts_us, 1, tick.exchange, -1 if tick.seq is None else tick.seq)


class SpreadRow(NamedTuple):
    """One tradable comparison: a row of silver/spreads (times as integer microseconds)."""

    pair: str
    event_ts_us: int
    coinbase_bid: Decimal
    coinbase_bid_size: Decimal
    coinbase_ask: Decimal
    coinbase_ask_size: Decimal
    binance_bid: Decimal  # converted into the pair's quote currency
    binance_bid_size: Decimal
    binance_ask: Decimal
    binance_ask_size: Decimal
    coinbase_ts_us: int
    binance_ts_us: int
    coinbase_age_ms: int
    binance_age_ms: int
    coinbase_seq: int | None
    binance_seq: int | None
    cb_bn_gross_bps: Decimal
    cb_bn_net_bps: Decimal
    cb_bn_size: Decimal
    cb_bn_profit: Decimal
    bn_cb_gross_bps: Decimal
    bn_cb_net_bps: Decimal
    bn_cb_size: Decimal
    bn_cb_profit: Decimal

    @property
    def date(self) -> date:
        return us_to_date(self.event_ts_us)

    def net_bps(self, direction: str) -> Decimal:
        return self.cb_bn_net_bps if direction == BUY_COINBASE_SELL_BINANCE else self.bn_cb_net_bps

    def size(self, direction: str) -> Decimal:
        return self.cb_bn_size if direction == BUY_COINBASE_SELL_BINANCE else self.bn_cb_size

    def profit(self, direction: str) -> Decimal:
        return self.cb_bn_profit if direction == BUY_COINBASE_SELL_BINANCE else self.bn_cb_profit

    def as_dict(self) -> dict[str, Any]:
        """Column name -> value, plus `date`."""
        return {**self._asdict(), "date": self.date}


@dataclass(frozen=True, slots=True)
class WindowEvent:
    """One OPEN or CLOSE event: a row of gold/arb_windows (times as integer microseconds)."""

    window_id: str  # f"{pair}|{direction}|{start_ts_us}"
    pair: str
    direction: str
    event: str  # OPEN / CLOSE
    start_ts_us: int
    end_ts_us: int | None  # None on OPEN
    duration_ms: int | None  # None on OPEN
    peak_net_bps: Decimal
    mean_net_bps: Decimal
    size_at_peak: Decimal
    profit_at_peak: Decimal
    ticks: int
    close_reason: str | None  # spread / stale / feed_gap / feed_disconnect; None on OPEN
    emitted_ts_us: int | None = None  # filled by the caller when it emits the event

    @property
    def event_ts_us(self) -> int:
        """When the event happened in event time: the start for OPEN, the end for CLOSE."""
        return self.start_ts_us if self.end_ts_us is None else self.end_ts_us

    @property
    def date(self) -> date:
        return us_to_date(self.event_ts_us)

    def as_dict(self) -> dict[str, Any]:
        """Column name -> value, plus `date`."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "date": self.date}


SPREAD_COLUMNS = SpreadRow._fields
WINDOW_COLUMNS = tuple(f.name for f in dataclasses.fields(WindowEvent))


class _Side(NamedTuple):
    """An exchange's latest usable quote, prices in the pair's quote currency."""

    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    ts_us: int
    seq: int | None


@dataclass(slots=True)
class _Window:
    start_us: int
    ticks: int
    peak: Decimal
    size_at_peak: Decimal
    profit_at_peak: Decimal
    sum_bps: Decimal


def compare(pair: str, t_us: int, coinbase: _Side, binance: _Side, rules: RulesConfig) -> SpreadRow:
    """Both directions of one comparison at time `t_us` (the newer quote's time)."""
    with localcontext(WIDE):
        return _compare(pair, t_us, coinbase, binance, _direction_fees(rules))


def _direction_fees(rules: RulesConfig) -> tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal]]:
    return direction_fees(BUY_COINBASE_SELL_BINANCE, rules.fees), direction_fees(BUY_BINANCE_SELL_COINBASE, rules.fees)


def _compare(pair: str, t_us: int, coinbase: _Side, binance: _Side,
             fees: tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal]]) -> SpreadRow:
    """`compare` under WIDE, with the fees of (buy Coinbase, buy Binance) as `_direction_fees` gives them."""
    (cb_buy_fee, bn_sell_fee), (bn_buy_fee, cb_sell_fee) = fees
    return SpreadRow(
        pair, t_us,
        coinbase.bid, coinbase.bid_size, coinbase.ask, coinbase.ask_size,
        binance.bid, binance.bid_size, binance.ask, binance.ask_size,
        coinbase.ts_us, binance.ts_us, (t_us - coinbase.ts_us) // 1000, (t_us - binance.ts_us) // 1000,
        coinbase.seq, binance.seq,
        *_direction(coinbase, binance, cb_buy_fee, bn_sell_fee),
        *_direction(binance, coinbase, bn_buy_fee, cb_sell_fee),
    )


def _direction(buy: _Side, sell: _Side, buy_fee: Decimal, sell_fee: Decimal) -> tuple[Decimal, ...]:
    """(gross bps, net bps, executable size, profit) of buying at `buy`'s ask and selling at `sell`'s bid, under WIDE."""
    buy_ask, sell_bid = buy.ask, sell.bid
    size = sell.bid_size if sell.bid_size < buy.ask_size else buy.ask_size  # min(), the first one on ties
    edge = spread.net_edge(buy_ask, sell_bid, buy_fee, sell_fee)
    return (
        spread.gross_bps(buy_ask, sell_bid).quantize(_BPS, ROUND_HALF_UP),
        spread.net_bps(buy_ask, sell_bid, buy_fee, sell_fee).quantize(_BPS, ROUND_HALF_UP),
        size,
        spread.estimated_profit(edge, size).quantize(_MONEY, ROUND_HALF_UP),
    )


class PairTracker:
    """The rules of docs/RULES.md for one pair, one tick at a time."""

    def __init__(self, pair: Pair, rules: RulesConfig) -> None:
        self.pair = pair
        self.rules = rules
        self._latest: dict[str, _Side | None] = {"coinbase": None, "binance": None}
        self._open: dict[str, _Window] = {}  # direction -> its open window
        self._floor_us: int | None = None  # ticks before this are late
        self.late_ticks = 0
        # Per-pair constants, looked up once rather than per tick.
        self._symbols = {exchange: pair.symbol_on(exchange) for exchange in _OTHER}
        self._rate = pair.binance_rate
        self._fees = _direction_fees(rules)
        self._staleness_us = rules.staleness_us
        self._threshold = rules.threshold_bps

    # -- inputs -------------------------------------------------------------------------------------------------

    def on_quote(self, tick: QuoteTick) -> list[SpreadRow | WindowEvent]:
        """Process one quote: stale closes due before it, then at most one SpreadRow and its window events."""
        with localcontext(WIDE):
            return self._on_quote(tick)

    def on_status(self, tick: StatusTick) -> list[WindowEvent]:
        """Process one feed status: `gap` / `disconnected` / `stale` invalidates the exchange's quote and closes windows."""
        with localcontext(WIDE):
            return self._on_status(tick)

    def feed(self, ticks: list[Tick]) -> list[SpreadRow | WindowEvent]:
        """`on_quote` / `on_status` for each tick in turn (give them in `sort_key` order): the outputs, concatenated."""
        out: list[SpreadRow | WindowEvent] = []
        with localcontext(WIDE):
            for tick in ticks:
                out.extend(self._on_status(tick) if isinstance(tick, StatusTick) else self._on_quote(tick))
        return out

    def advance_to(self, now_us: int) -> list[WindowEvent]:
        """Declare every tick with t <= now_us fed; fire the stale closes whose deadline <= now_us."""
        with localcontext(WIDE):
            out = self._fire_stale(now_us)
        if self._floor_us is None or now_us + 1 > self._floor_us:
            self._floor_us = now_us + 1
        return out

    def next_deadline_us(self) -> int | None:
        """When the open windows close as stale unless a newer quote of the older side comes (None: nothing open)."""
        if not self._open:
            return None
        coinbase, binance = self._latest["coinbase"], self._latest["binance"]
        assert coinbase is not None and binance is not None  # a window is open only over two valid quotes
        return min(coinbase.ts_us, binance.ts_us) + self._staleness_us

    @property
    def open_windows(self) -> tuple[str, ...]:
        """Directions with an open window."""
        return tuple(d for d in DIRECTIONS if d in self._open)

    # -- state store --------------------------------------------------------------------------------------------

    def to_state(self) -> dict:
        """A JSON-able snapshot (decimals as strings)."""
        return {
            "v": STATE_VERSION,
            "latest": {ex: None if s is None else _side_to_json(s) for ex, s in self._latest.items()},
            "open": {d: _window_to_json(w) for d, w in self._open.items()},
            "floor_us": self._floor_us,
            "late_ticks": self.late_ticks,
        }

    @classmethod
    def from_state(cls, pair: Pair, rules: RulesConfig, state: dict) -> PairTracker:
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"unsupported PairTracker state version {state.get('v')!r}")
        tracker = cls(pair, rules)
        tracker._latest = {ex: None if s is None else _side_from_json(s) for ex, s in state["latest"].items()}
        tracker._open = {d: _window_from_json(w) for d, w in state["open"].items()}
        tracker._floor_us = state["floor_us"]
        tracker.late_ticks = state["late_ticks"]
        return tracker

    # -- rules (under WIDE) -------------------------------------------------------------------------------------

    def _on_quote(self, tick: QuoteTick) -> list[SpreadRow | WindowEvent]:
        exchange = tick.exchange
        if tick.symbol != self._symbols.get(exchange):
            raise ValueError(f"pair {self.pair.name}: {exchange} {tick.symbol} is not one of its symbols")
        t = tick.event_ts_us
        if self._is_late(t):
            return []
        out: list[SpreadRow | WindowEvent] = self._fire_stale(t - 1) if self._open else []
        self._floor_us = t
        if tick.bid > tick.ask:  # crossed: kept in silver, never compared
            return out
        side = self._side(tick)
        self._latest[exchange] = side
        other = self._latest[_OTHER[exchange]]
        if other is None or t - other.ts_us > self._staleness_us:
            return out
        coinbase, binance = (side, other) if exchange == "coinbase" else (other, side)
        row = _compare(self.pair.name, t, coinbase, binance, self._fees)
        out.append(row)
        if self._open or row.cb_bn_net_bps >= self._threshold or row.bn_cb_net_bps >= self._threshold:
            out.extend(self._apply(row))
        return out

    def _on_status(self, tick: StatusTick) -> list[WindowEvent]:
        if not self._concerns(tick):
            return []
        t = tick.ts_us
        if self._is_late(t):
            return []
        out = self._fire_stale(t - 1)
        self._floor_us = t
        reason = CLOSE_REASON_BY_STATE.get(FeedState(tick.state))
        if reason is None:
            return out
        self._latest[tick.exchange] = None
        out.extend(self._close_all(t, reason))
        return out

    def _is_late(self, t_us: int) -> bool:
        if self._floor_us is not None and t_us < self._floor_us:
            self.late_ticks += 1
            return True
        return False

    def _concerns(self, tick: StatusTick) -> bool:
        if tick.exchange not in _OTHER:
            return False
        return tick.symbol is None or tick.symbol == self._symbols[tick.exchange]

    def _side(self, tick: QuoteTick) -> _Side:
        if tick.exchange == "binance":
            rate = self._rate
            bid = (tick.bid * rate).quantize(_MONEY, ROUND_HALF_UP)
            ask = (tick.ask * rate).quantize(_MONEY, ROUND_HALF_UP)
            return _Side(bid, tick.bid_size, ask, tick.ask_size, tick.event_ts_us, tick.seq)
        return _Side(tick.bid, tick.bid_size, tick.ask, tick.ask_size, tick.event_ts_us, tick.seq)

    def _apply(self, row: SpreadRow) -> list[WindowEvent]:
        out = []
        for direction, net, size, profit in (
            (BUY_COINBASE_SELL_BINANCE, row.cb_bn_net_bps, row.cb_bn_size, row.cb_bn_profit),
            (BUY_BINANCE_SELL_COINBASE, row.bn_cb_net_bps, row.bn_cb_size, row.bn_cb_profit),
        ):
            tradable = net >= self._threshold
            window = self._open.get(direction)
            if window is None:
                if tradable:
                    window = _Window(row.event_ts_us, 1, net, size, profit, net)
                    self._open[direction] = window
                    out.append(self._event(direction, window, None, None))
            elif tradable:
                window.ticks += 1
                window.sum_bps += net
                if net > window.peak:
                    window.peak, window.size_at_peak, window.profit_at_peak = net, size, profit
            else:
                out.append(self._close(direction, row.event_ts_us, CLOSE_SPREAD))
        return out

    def _fire_stale(self, now_us: int) -> list[WindowEvent]:
        deadline = self.next_deadline_us()
        if deadline is None or deadline > now_us:
            return []
        return self._close_all(deadline, CLOSE_STALE)

    def _close_all(self, end_us: int, reason: str) -> list[WindowEvent]:
        return [self._close(d, end_us, reason) for d in DIRECTIONS if d in self._open]

    def _close(self, direction: str, end_us: int, reason: str) -> WindowEvent:
        return self._event(direction, self._open.pop(direction), end_us, reason)

    def _event(self, direction: str, w: _Window, end_us: int | None, reason: str | None) -> WindowEvent:
        return WindowEvent(
            window_id=f"{self.pair.name}|{direction}|{w.start_us}",
            pair=self.pair.name,
            direction=direction,
            event="OPEN" if end_us is None else "CLOSE",
            start_ts_us=w.start_us,
            end_ts_us=end_us,
            duration_ms=None if end_us is None else (end_us - w.start_us) // 1000,
            peak_net_bps=w.peak,
            mean_net_bps=(w.sum_bps / w.ticks).quantize(_BPS, ROUND_HALF_UP),
            size_at_peak=w.size_at_peak,
            profit_at_peak=w.profit_at_peak,
            ticks=w.ticks,
            close_reason=reason,
        )


def _side_to_json(s: _Side) -> list:
    return [str(s.bid), str(s.bid_size), str(s.ask), str(s.ask_size), s.ts_us, s.seq]


def _side_from_json(v: list) -> _Side:
    return _Side(Decimal(v[0]), Decimal(v[1]), Decimal(v[2]), Decimal(v[3]), int(v[4]), v[5])


def _window_to_json(w: _Window) -> dict:
    return {
        "start_us": w.start_us,
        "ticks": w.ticks,
        "peak": str(w.peak),
        "size_at_peak": str(w.size_at_peak),
        "profit_at_peak": str(w.profit_at_peak),
        "sum_bps": str(w.sum_bps),
    }


def _window_from_json(v: dict) -> _Window:
    return _Window(
        v["start_us"], v["ticks"], Decimal(v["peak"]), Decimal(v["size_at_peak"]), Decimal(v["profit_at_peak"]),
        Decimal(v["sum_bps"]),
    )


__all__ = [
    "BUY_BINANCE_SELL_COINBASE",
    "BUY_COINBASE_SELL_BINANCE",
    "PairTracker",
    "QuoteTick",
    "SPREAD_COLUMNS",
    "SpreadRow",
    "StatusTick",
    "WINDOW_COLUMNS",
    "WindowEvent",
    "compare",
    "sort_key",
    "us_to_date",
]
