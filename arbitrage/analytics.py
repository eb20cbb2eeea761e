"""Market analytics: the one definition of candles, VWAP, the mid moving average, hourly change, the Coinbase
premium and the flash-crash rule, shared by the Spark gold jobs (`streaming.analytics`), the Polars reference
(`arbitrage.analytics_oracle`) and the dashboard.

Definitions (every engine follows them; money is rounded HALF_UP to 12 places, percentages and bps to 6):

- mid = (bid + ask) / 2, rounded to 12 places. Crossed quotes are skipped (their mid is not a price anyone quotes).
- Candle of (exchange, symbol, minute [start, end)): the trades with start <= event_ts < end. open / close = price
  of the first / last trade in (event_ts, seq, trade_id) order, high / low, volume = sum of sizes,
  vwap = sum(price * size) / volume, trades = count.
- Mid bar of (exchange, symbol, [start, start + bar_s)): the valid quotes in it: open / close mid in
  (event_ts, seq, offset) order, high / low mid, mid_sum (exact) and quotes (count). `offset` is the quote's Kafka
  offset: a symbol's records share one partition, so it is arrival order, the tie-break where the exchange gives no
  sequence (Coinbase level2).
- Moving average at the end e of a mid bar: the mean mid of every quote in [e - ma_window_s, e) (tick-weighted,
  exactly sum(mid_sum) / sum(quotes) over the bars in that range). Slide = bar_s (1 minute by default).
- Hourly change at the end e of a mid bar: close of that bar against the open of the earliest bar starting in
  [e - change_window_s, e), in percent. `base_ts` says where the base came from (less than an hour after a start).
- Premium of a pair over an hour / a UTC day: (mean Coinbase mid - mean Binance mid converted to the pair's quote
  currency) / mean converted Binance mid, in bps; the means are over every quote of the period.
- Flash crash (per pair, either exchange): the quotes of each exchange and symbol are bucketed into
  `crash_bucket_s` bars (high / low mid). Bucket b crashes when its low is more than `crash_drop_pct` percent below
  the highest high of the same exchange and symbol in the buckets starting in [b - crash_window_s, b). A crash
  bucket opens a new episode of its pair, and one alert, unless the pair had a crash bucket at most
  `crash_cooldown_s` before it; buckets are taken in (bucket start, exchange) order.

Lateness: the streaming jobs run on event time with a watermark (`watermark_s`, `crash_watermark_ms`). A record
whose event time is more than that behind the latest event time seen is dropped and counted; a record within it
still lands in its own bar. Bars are written once, when the watermark passes their end.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Iterable, TypeVar

from arbitrage.pairs import DEFAULT_PAIRS, Pair, parse_pairs
from arbitrage.rules import WIDE, round_bps, round_money
from arbitrage.spread import BPS

T = TypeVar("T")  # Decimal, polars.Expr or pyspark.sql.Column

HUNDRED = Decimal(100)
TWO = Decimal(2)
SECOND_US = 1_000_000
HOUR_US = 3600 * SECOND_US
DAY_US = 24 * HOUR_US
PREMIUM_PERIODS = {"hour": HOUR_US, "day": DAY_US}
FLASH_CRASH = "flash_crash"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AnalyticsError(ValueError):
    """An analytics configuration that cannot run (bad window, threshold out of range)."""


def _default_pairs() -> tuple[Pair, ...]:
    return parse_pairs(DEFAULT_PAIRS)


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    """Windows and thresholds of the market analytics; every engine reads the same object."""

    pairs: tuple[Pair, ...] = field(default_factory=_default_pairs)
    candle_s: int = 60  # candle width
    watermark_s: int = 10  # lateness tolerated by the candle and mid-bar jobs
    bar_s: int = 60  # mid-bar width = moving-average slide
    ma_window_s: int = 300  # moving-average length
    change_window_s: int = 3600  # "hourly" change look-back
    crash_drop_pct: Decimal = Decimal("1")  # a drop of MORE than this percent ...
    crash_window_s: int = 120  # ... from a high within this many seconds
    crash_bucket_s: int = 1
    crash_cooldown_s: int = 120  # crash buckets this close to the previous one belong to the same episode
    crash_watermark_ms: int = 2000  # lateness tolerated by the crash job (its alert latency)

    def __post_init__(self) -> None:
        for name in ("candle_s", "watermark_s", "bar_s", "ma_window_s", "change_window_s", "crash_window_s",
                     "crash_bucket_s", "crash_cooldown_s", "crash_watermark_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise AnalyticsError(f"{name} must be a positive integer, got {value!r}")
        if self.ma_window_s % self.bar_s:
            raise AnalyticsError(f"ma_window_s ({self.ma_window_s}) must be a multiple of bar_s ({self.bar_s})")
        if self.crash_window_s % self.crash_bucket_s:
            raise AnalyticsError("crash_window_s must be a multiple of crash_bucket_s")
        if not isinstance(self.crash_drop_pct, Decimal) or not Decimal(0) < self.crash_drop_pct < HUNDRED:
            raise AnalyticsError(f"crash_drop_pct must be a Decimal in (0, 100), got {self.crash_drop_pct!r}")
        if not self.pairs:
            raise AnalyticsError("no pairs")

    def pairs_of(self, exchange: str, symbol: str) -> list[Pair]:
        """The configured pairs an (exchange, symbol) belongs to."""
        return [p for p in self.pairs if p.symbol_on(exchange) == symbol]

    def symbols(self, exchange: str) -> list[str]:
        return sorted({p.symbol_on(exchange) for p in self.pairs})


# ---- formulas (Decimal, polars.Expr or pyspark Column) ---------------------------------------------------------

def mid_price(bid: T, ask: T) -> T:
    """Unrounded mid; store it with `round_money` (Spark: `F.round(.., 12)`, Polars: half_away_from_zero)."""
    return (bid + ask) / TWO  # type: ignore[operator]


def pct_change(base: T, last: T) -> T:
    return (last - base) / base * HUNDRED  # type: ignore[operator]


def premium_bps(coinbase: T, binance: T) -> T:
    """How much dearer Coinbase is than Binance (both in the pair's quote currency), in bps."""
    return (coinbase - binance) / binance * BPS  # type: ignore[operator]


def crash_floor(high: T, drop_pct: Decimal) -> T:
    """A low strictly below this is a drop of more than `drop_pct` percent from `high`."""
    return high * (Decimal(1) - drop_pct / HUNDRED)  # type: ignore[operator]


def window_start(ts_us: int, width_us: int) -> int:
    """Start of the tumbling window (aligned to the epoch, as Spark's `window()`) that holds `ts_us`."""
    return ts_us - ts_us % width_us


# ---- rows ------------------------------------------------------------------------------------------------------

def _exact(fn):
    with localcontext(WIDE):
        return fn()


@dataclass(frozen=True, slots=True)
class TradeLevel:
    """What the Spark candle aggregation emits: one price level of one candle, with the order keys of its first and
    last trade (`(event_ts_us, seq, trade_id)`), so that open, close and the exact notional are found afterwards."""

    exchange: str
    symbol: str
    window_start_us: int
    window_end_us: int
    price: Decimal
    size: Decimal
    trades: int
    first: tuple
    last: tuple


@dataclass(frozen=True, slots=True)
class Candle:
    exchange: str
    symbol: str
    window_start_us: int
    window_end_us: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    vwap: Decimal
    trades: int


def candles_from_levels(levels: Iterable[TradeLevel]) -> list[Candle]:
    """Price levels -> one candle per (exchange, symbol, window), sorted by those keys."""
    groups: dict[tuple, list[TradeLevel]] = {}
    for level in levels:
        groups.setdefault((level.exchange, level.symbol, level.window_start_us, level.window_end_us), []).append(level)
    out = []
    for (exchange, symbol, start, end), group in sorted(groups.items()):
        volume = _exact(lambda: sum((lv.size for lv in group), Decimal(0)))
        notional = _exact(lambda: sum((lv.price * lv.size for lv in group), Decimal(0)))
        out.append(Candle(
            exchange=exchange, symbol=symbol, window_start_us=start, window_end_us=end,
            open=min(group, key=lambda lv: _order(lv.first)).price,
            high=max(lv.price for lv in group),
            low=min(lv.price for lv in group),
            close=max(group, key=lambda lv: _order(lv.last)).price,
            volume=volume,
            vwap=round_money(_exact(lambda: notional / volume)),
            trades=sum(lv.trades for lv in group),
        ))
    return out


def _order(key: tuple) -> tuple:
    # Spark orders structs with nulls first; so does this.
    return tuple((0, "") if v is None else (1, v) for v in key)


@dataclass(frozen=True, slots=True)
class MidBar:
    exchange: str
    symbol: str
    window_start_us: int
    window_end_us: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    mid_sum: Decimal
    quotes: int

    @property
    def mean(self) -> Decimal:
        return round_money(_exact(lambda: self.mid_sum / self.quotes))


@dataclass(frozen=True, slots=True)
class MovingAverage:
    exchange: str
    symbol: str
    window_start_us: int
    window_end_us: int
    ma_mid: Decimal
    last_mid: Decimal  # close of the bar that ends the window: the "price" drawn against the average
    quotes: int


def moving_averages(history: Iterable[MidBar], ends: Iterable[tuple[str, str, int]],
                    config: AnalyticsConfig) -> list[MovingAverage]:
    """The moving average ending at each `(exchange, symbol, end_us)` from the mid bars in `history` (which must
    hold every bar of the `ma_window_s` before each end)."""
    by_key = _by_key(history)
    width = config.ma_window_s * SECOND_US
    out = []
    for exchange, symbol, end in sorted(set(ends)):
        bars = [b for b in by_key.get((exchange, symbol), ()) if end - width <= b.window_start_us < end]
        last = [b for b in bars if b.window_end_us == end]
        if not bars or not last:
            continue
        total = _exact(lambda: sum((b.mid_sum for b in bars), Decimal(0)))
        count = sum(b.quotes for b in bars)
        out.append(MovingAverage(exchange, symbol, end - width, end, round_money(_exact(lambda: total / count)),
                                 last[0].close, count))
    return out


@dataclass(frozen=True, slots=True)
class HourlyChange:
    pair: str
    exchange: str
    symbol: str
    ts_us: int  # end of the bar whose close is `last`
    base_ts_us: int  # start of the bar whose open is `base`
    base: Decimal
    last: Decimal
    change_pct: Decimal


def hourly_changes(history: Iterable[MidBar], ends: Iterable[tuple[str, str, int]],
                   config: AnalyticsConfig) -> list[HourlyChange]:
    """Change over the look-back ending at each `(exchange, symbol, end_us)`, one row per pair of the symbol."""
    by_key = _by_key(history)
    look_back = config.change_window_s * SECOND_US
    out = []
    for exchange, symbol, end in sorted(set(ends)):
        bars = [b for b in by_key.get((exchange, symbol), ()) if end - look_back <= b.window_start_us < end]
        last = [b for b in bars if b.window_end_us == end]
        if not last:
            continue
        first = min(bars, key=lambda b: b.window_start_us)
        change = round_bps(_exact(lambda: pct_change(first.open, last[0].close)))
        for pair in config.pairs_of(exchange, symbol):
            out.append(HourlyChange(pair.name, exchange, symbol, end, first.window_start_us, first.open,
                                    last[0].close, change))
    return out


@dataclass(frozen=True, slots=True)
class Premium:
    pair: str
    granularity: str  # hour | day
    period_start_us: int
    period_end_us: int
    coinbase_mid: Decimal  # mean over the period
    binance_mid: Decimal  # mean over the period, converted to the pair's quote currency
    premium_bps: Decimal
    coinbase_quotes: int
    binance_quotes: int


def premium_periods(bars: Iterable[MidBar]) -> set[tuple[str, int]]:
    """The (granularity, period start) of every hour and day the bars fall in."""
    return {(g, window_start(b.window_start_us, width)) for b in bars for g, width in PREMIUM_PERIODS.items()}


def premiums(history: Iterable[MidBar], periods: Iterable[tuple[str, int]], config: AnalyticsConfig) -> list[Premium]:
    """The premium of every pair over each (granularity, period start), from the mid bars in `history` (which must
    hold every bar of those periods so far). A period without quotes on both exchanges has no row."""
    history = list(history)
    out = []
    for granularity, start in sorted(set(periods)):
        end = start + PREMIUM_PERIODS[granularity]
        in_period = [b for b in history if start <= b.window_start_us < end]
        for pair in config.pairs:
            sides = {}
            for exchange in ("coinbase", "binance"):
                bars = [b for b in in_period if b.exchange == exchange and b.symbol == pair.symbol_on(exchange)]
                count = sum(b.quotes for b in bars)
                if count:
                    sides[exchange] = (_exact(lambda: sum((b.mid_sum for b in bars), Decimal(0)) / count), count)
            if len(sides) < 2:
                continue
            cb, cb_n = sides["coinbase"]
            bn_raw, bn_n = sides["binance"]
            bn = _exact(lambda: bn_raw * pair.binance_rate)
            out.append(Premium(pair.name, granularity, start, end, round_money(cb), round_money(bn),
                               round_bps(_exact(lambda: premium_bps(cb, bn))), cb_n, bn_n))
    return out


def _by_key(bars: Iterable[MidBar]) -> dict[tuple[str, str], list[MidBar]]:
    out: dict[tuple[str, str], list[MidBar]] = {}
    for bar in bars:
        out.setdefault((bar.exchange, bar.symbol), []).append(bar)
    return out


# ---- flash crashes ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CrashBar:
    """High and low mid of one exchange and symbol over one crash bucket."""

    exchange: str
    symbol: str
    bucket_us: int
    high: Decimal
    low: Decimal


@dataclass(frozen=True, slots=True)
class FlashCrash:
    """The first crash bucket of an episode: what the alert says."""

    pair: str
    exchange: str
    symbol: str
    bucket_us: int  # start of the crash bucket
    high: Decimal  # the high it fell from ...
    high_ts_us: int  # ... and the start of that high's bucket
    low: Decimal
    drop_pct: Decimal

    @property
    def alert_id(self) -> str:
        return f"{self.pair}|{FLASH_CRASH}|{self.bucket_us}"


class CrashDetector:
    """The flash-crash rule, one bar at a time. Feed bars in (bucket, exchange) order; `on_bar` returns the alert
    when a bar opens a new episode. `silent=True` replays history to rebuild the state (after a restart)."""

    def __init__(self, config: AnalyticsConfig) -> None:
        self.config = config
        self._highs: dict[tuple[str, str], deque[tuple[int, Decimal]]] = {}
        self._last_crash_us: dict[str, int] = {}
        self.last_bucket_us: int | None = None

    def on_bar(self, bar: CrashBar) -> list[FlashCrash]:
        cfg = self.config
        window_us = cfg.crash_window_s * SECOND_US
        highs = self._highs.setdefault((bar.exchange, bar.symbol), deque())
        while highs and highs[0][0] < bar.bucket_us - window_us:
            highs.popleft()
        alerts = []
        before = [h for h in highs if h[0] < bar.bucket_us]
        if before:
            high_ts, high = max(before, key=lambda h: (h[1], -h[0]))  # the highest, the earliest of equal highs
            if bar.low < crash_floor(high, cfg.crash_drop_pct):
                for pair in self.config.pairs_of(bar.exchange, bar.symbol):
                    last = self._last_crash_us.get(pair.name)
                    if last is None or bar.bucket_us - last > cfg.crash_cooldown_s * SECOND_US:
                        drop = round_bps(_exact(lambda: pct_change(high, bar.low) * -1))
                        alerts.append(FlashCrash(pair.name, bar.exchange, bar.symbol, bar.bucket_us, high, high_ts,
                                                 bar.low, drop))
                    self._last_crash_us[pair.name] = bar.bucket_us
        highs.append((bar.bucket_us, bar.high))
        self.last_bucket_us = bar.bucket_us if self.last_bucket_us is None else max(self.last_bucket_us, bar.bucket_us)
        return alerts

    def run(self, bars: Iterable[CrashBar]) -> list[FlashCrash]:
        """Every alert of `bars`, taken in (bucket, exchange, symbol) order."""
        out = []
        for bar in sorted(bars, key=lambda b: (b.bucket_us, b.exchange, b.symbol)):
            out.extend(self.on_bar(bar))
        return out


def crash_alert(crash: FlashCrash, config: AnalyticsConfig, emitted_ts: str) -> dict:
    """The alert object (docs/DATA_MODEL.md: shares v, type, event, pair, emitted_ts with arbitrage alerts).

        {"v": 1, "type": "flash_crash", "event": "CRASH", "alert_id": "BTC/USD|flash_crash|1763771290000000",
         "pair": "BTC/USD", "exchange": "binance", "symbol": "BTC/USDT", "drop_pct": "1.012345",
         "high": "65010.5", "low": "64352.4", "high_ts": "2026-11-22T00:40:10.000Z",
         "crash_ts": "2026-11-22T00:41:30.000Z", "window_s": 120, "threshold_pct": "1",
         "emitted_ts": "2026-11-22T00:41:32.912Z"}
    """
    return {
        "v": 1, "type": FLASH_CRASH, "event": "CRASH", "alert_id": crash.alert_id, "pair": crash.pair,
        "exchange": crash.exchange, "symbol": crash.symbol, "drop_pct": _text(crash.drop_pct),
        "high": _text(crash.high), "low": _text(crash.low), "high_ts": iso_ms(crash.high_ts_us),
        "crash_ts": iso_ms(crash.bucket_us), "window_s": config.crash_window_s,
        "threshold_pct": _text(config.crash_drop_pct), "emitted_ts": emitted_ts,
    }


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def iso_ms(ts_us: int) -> str:
    """`1763771290123456` -> `2026-11-22T00:28:10.123Z`."""
    return (EPOCH + timedelta(microseconds=ts_us)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
