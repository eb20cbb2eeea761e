"""Replay the quote history through the rules and simulate acting on every window: the engine of `arb backtest`.

Signals are the windows' opening rows, found by the oracle's rules (`arbitrage.oracle.starts_of_sides`). For
each signal both legs are sent as taker orders at once and fill at the quotes available `latency` later (an as-of
join on each venue's quotes; with zero latency, at the very quotes that made the signal). The size is capped by the
displayed size of both legs, by `size` and by per-exchange inventory: the buy venue's quote balance pays for the buy
leg with its fee, the sell venue's base balance delivers the sold units, no shorting. An optional rebalancing cost
(bps of the bought notional) stands for moving inventory back between venues.

The quotes are read from `start - staleness` so the first comparisons of the period see the quotes before it; a
window already open at `start` counts as a signal at its first row in the period. Fills use each venue's latest
quote at most `staleness` old at the fill time; a signal without one is skipped (`no_book`).

Money is `Decimal` throughout (pl.Decimal in frames); floats appear only in the HTML report's plots.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, localcontext
from pathlib import Path
from typing import Any

import polars as pl

from arbitrage import oracle, spread
from arbitrage.rules import WIDE, RulesConfig, direction_fees, round_bps, round_money
from arbitrage.spread import BUY_COINBASE_SELL_BINANCE
from arbitrage.symbols import split

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT = Decimal(1).scaleb(-12)
ZERO = Decimal(0)


def to_us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# -- configuration --------------------------------------------------------------------------------------------------


def parse_balances(spec: str) -> dict[tuple[str, str], Decimal]:
    """`coinbase:USD=100000,coinbase:BTC=2,binance:USDT=100000,binance:BTC=2` -> {(exchange, currency): amount}."""
    balances: dict[tuple[str, str], Decimal] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        exchange, colon, currency = key.strip().partition(":")
        if not sep or not colon or exchange not in ("coinbase", "binance") or not currency:
            raise ValueError(f"balance {part.strip()!r}: expected EXCHANGE:CURRENCY=AMOUNT (exchange coinbase|binance)")
        try:
            amount = Decimal(value.strip())
        except ArithmeticError:
            raise ValueError(f"balance {part.strip()!r}: {value.strip()!r} is not a number") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"balance {part.strip()!r}: amount must be >= 0")
        balances[(exchange, currency.strip().upper())] = amount
    return balances


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """What to replay and how to trade it. `balances=None` means unlimited inventory (displayed size still caps)."""

    start: datetime
    end: datetime  # exclusive
    rules: RulesConfig  # its `pairs` are the pairs traded
    latency_ms: int = 0
    size: Decimal | None = None  # max base units per trade
    balances: dict[tuple[str, str], Decimal] | None = None  # (exchange, currency) -> amount; missing = 0
    rebalance_bps: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.latency_ms < 0:
            raise ValueError("latency must be >= 0")
        if self.size is not None and self.size <= 0:
            raise ValueError("size must be > 0")
        if self.rebalance_bps < 0:
            raise ValueError("rebalance cost must be >= 0")
        currencies = {split(p.coinbase)[1] for p in self.rules.pairs}
        if len(currencies) != 1:
            raise ValueError(f"pairs quote in {', '.join(sorted(currencies))}: choose pairs with one quote currency")

    @property
    def currency(self) -> str:
        """The pairs' common quote currency: every PnL figure is in it."""
        return split(self.rules.pairs[0].coinbase)[1]


# -- input --------------------------------------------------------------------------------------------------------


def load_history(
    lake: str, start: datetime, end: datetime, rules: RulesConfig
) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
    """silver/quotes and silver/feed_status between start - staleness (warm-up) and end, pruned on `date`."""
    warm = start - timedelta(milliseconds=rules.staleness_ms)
    quotes = _scan(f"{lake.rstrip('/')}/silver/quotes", warm, end, "event_ts")
    if quotes is None:
        raise FileNotFoundError(f"no Delta table at {lake.rstrip('/')}/silver/quotes")
    status = _scan(f"{lake.rstrip('/')}/silver/feed_status", warm, end, "ts_recv")
    return quotes, status


def _scan(path: str, start: datetime, end: datetime, ts: str) -> pl.LazyFrame | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        DeltaTable(path)
    except TableNotFoundError:
        return None
    return pl.scan_delta(path).filter(
        pl.col("date").is_between(start.date(), end.date())  # partition pruning
        & (pl.col(ts) >= start)
        & (pl.col(ts) < end)
    )


# -- progress -----------------------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal (or `enabled=True`)."""

    def __init__(self, total: int, enabled: bool | None = None, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.timings: dict[str, float] = {}  # stage -> seconds it took
        self._last = self.started

    def step(self, label: str, advance: int = 1) -> None:
        self.done = min(self.total, self.done + advance)
        if advance:
            now = time.monotonic()
            self.timings[label] = round(now - self._last, 3)
            self._last = now
        if self.enabled:
            filled = int(30 * self.done / self.total)
            elapsed = time.monotonic() - self.started
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {elapsed:5.1f}s "
                              f"{label:<24}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# -- simulation -----------------------------------------------------------------------------------------------------


@dataclass
class BacktestResult:
    config: BacktestConfig
    signals: pl.DataFrame  # the opening row of every window (spreads columns + direction)
    trades: pl.DataFrame
    equity: pl.DataFrame  # ts, pair, net_pnl, equity
    summary: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)


MONEY = pl.Decimal(38, 12)
TRADE_SCHEMA = {
    "signal_ts": oracle.TS,
    "fill_ts": oracle.TS,
    "pair": pl.String,
    "direction": pl.String,
    "signal_net_bps": MONEY,
    "buy_exchange": pl.String,
    "buy_price": MONEY,
    "sell_exchange": pl.String,
    "sell_price": MONEY,
    "size": MONEY,
    "buy_cost": MONEY,  # incl. fee, pair quote currency
    "gross_pnl": MONEY,
    "fees": MONEY,
    "rebalance_cost": MONEY,
    "net_pnl": MONEY,
    "edge_bps": MONEY,
    "equity": MONEY,
}


def run(
    quotes: pl.LazyFrame | pl.DataFrame,
    status: pl.LazyFrame | pl.DataFrame | None,
    config: BacktestConfig,
    progress: Progress | None = None,
) -> BacktestResult:
    """Backtest `config` over silver-quotes-shaped `quotes` (and optional silver feed status)."""
    progress = progress or Progress(5, enabled=False)
    started = time.perf_counter()
    rules = config.rules
    sides = oracle.pair_sides(quotes, rules)
    progress.step("quotes read")
    stats: dict[str, int] = {}
    start_us, end_us = to_us(config.start), to_us(config.end)
    signals = oracle.starts_of_sides(sides, status, rules, stats=stats)
    signals = signals.filter(pl.col("event_ts") >= config.start)  # the warm-up only primes the latest quotes
    progress.step("signals")
    books = _books_at_fill(sides, signals, config)
    progress.step("fills")
    trades, skipped, capital = simulate(books, config, progress)
    progress.step("trades")
    equity = trades.select(pl.col("fill_ts").alias("ts"), "pair", "net_pnl", "equity")
    quote_rows = sum(side.height for by_exchange in sides.values() for side in by_exchange.values())
    summary = summarize(config, signals, trades, skipped, capital, stats, quote_rows, start_us, end_us)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    progress.step("summary")
    progress.close()
    return BacktestResult(config, signals, trades, equity, summary, skipped)


def _books_at_fill(
    sides: dict[str, dict[str, pl.DataFrame]], signals: pl.DataFrame, config: BacktestConfig
) -> pl.DataFrame:
    """Each signal with both venues' quotes at the fill time (t + latency), as-of, at most `staleness` old."""
    latency_us = config.latency_ms * 1000
    base = signals.select(
        "pair",
        "direction",
        pl.col("event_ts").alias("signal_ts"),
        pl.when(pl.col("direction") == BUY_COINBASE_SELL_BINANCE)
        .then(pl.col("cb_bn_net_bps"))
        .otherwise(pl.col("bn_cb_net_bps"))
        .alias("signal_net_bps"),
        (pl.col("event_ts").dt.epoch("us") + latency_us).alias("fill_us"),
        *[pl.col(f"{ex}_{c}").alias(f"{ex}_{c}_at_signal") for ex in ("coinbase", "binance")
          for c in ("bid", "bid_size", "ask", "ask_size")],
    ).sort("fill_us")
    if latency_us == 0:  # fill at the quotes the rules compared
        return base.select(
            pl.exclude([c for c in base.columns if c.endswith("_at_signal")]),
            *[pl.col(c).alias(c.removesuffix("_at_signal")) for c in base.columns if c.endswith("_at_signal")],
        )
    base = base.drop([c for c in base.columns if c.endswith("_at_signal")])
    filled = []
    for pair, by_exchange in sides.items():
        part = base.filter(pl.col("pair") == pair)
        for exchange, side in by_exchange.items():
            book = side.select(
                pl.col("t").alias(f"{exchange}_t"),
                *[pl.col(c).alias(f"{exchange}_{c}") for c in ("bid", "bid_size", "ask", "ask_size")],
            )
            part = part.join_asof(book, left_on="fill_us", right_on=f"{exchange}_t", strategy="backward",
                                  tolerance=config.rules.staleness_us, check_sortedness=False).drop(f"{exchange}_t")
        filled.append(part)
    return pl.concat(filled).sort("fill_us", "pair", "direction") if filled else base


class _Inventory:
    """Per (exchange, currency) balances; unlimited when no balances were given."""

    def __init__(self, balances: dict[tuple[str, str], Decimal] | None) -> None:
        self.unlimited = balances is None
        self.amounts = dict(balances or {})
        self.change: dict[tuple[str, str], Decimal] = {}
        self.deepest: dict[tuple[str, str], Decimal] = {}  # most negative cumulative change

    def available(self, exchange: str, currency: str) -> Decimal | None:
        return None if self.unlimited else self.amounts.get((exchange, currency), ZERO)

    def move(self, exchange: str, currency: str, amount: Decimal) -> None:
        key = (exchange, currency)
        if not self.unlimited:
            self.amounts[key] = self.amounts.get(key, ZERO) + amount
        self.change[key] = self.change.get(key, ZERO) + amount
        self.deepest[key] = min(self.deepest.get(key, ZERO), self.change[key])


def simulate(
    books: pl.DataFrame, config: BacktestConfig, progress: Progress | None = None
) -> tuple[pl.DataFrame, dict[str, int], Decimal]:
    """Walk the signals in fill order, sizing each trade by displayed size and inventory.

    Returns the trades, the skipped signals by reason, and the capital used: the sum over (exchange, currency) of
    the deepest fall of that balance, valued in the pair currency when it happened (what a run without limits needs).
    """
    rules = config.rules
    inventory = _Inventory(config.balances)
    skipped = {"no_book": 0, "no_size": 0, "no_inventory": 0}
    records: list[tuple] = []
    equity = ZERO
    capital: dict[tuple[str, str], Decimal] = {}  # each balance's deepest deficit, valued in the pair currency
    rebalance = config.rebalance_bps / spread.BPS
    with localcontext(WIDE):
        for i, row in enumerate(books.iter_rows(named=True)):
            if progress and i and i % 50_000 == 0:
                progress.step(f"trades {i}/{books.height}", advance=0)
            pair = rules.pair(row["pair"])
            buy, sell = ("coinbase", "binance") if row["direction"] == BUY_COINBASE_SELL_BINANCE else (
                "binance", "coinbase")
            buy_ask, sell_bid = row[f"{buy}_ask"], row[f"{sell}_bid"]
            if buy_ask is None or sell_bid is None:
                skipped["no_book"] += 1
                continue
            buy_fee, sell_fee = direction_fees(row["direction"], rules.fees)
            base = split(pair.coinbase)[0]
            buy_ccy, sell_ccy = split(pair.symbol_on(buy))[1], split(pair.symbol_on(sell))[1]
            # venue amount = pair-currency amount / rate on Binance
            to_venue = {"coinbase": Decimal(1), "binance": pair.binance_rate}
            size = min(row[f"{buy}_ask_size"], row[f"{sell}_bid_size"])
            if config.size is not None:
                size = min(size, config.size)
            if size <= 0:
                skipped["no_size"] += 1
                continue
            quote_left = inventory.available(buy, buy_ccy)
            base_left = inventory.available(sell, base)
            if quote_left is not None:
                unit_cost = buy_ask * (1 + buy_fee) / to_venue[buy]
                size = min(size, (quote_left / unit_cost).quantize(_UNIT, rounding=ROUND_DOWN), base_left)
                if size <= 0:
                    skipped["no_inventory"] += 1
                    continue
            cost = round_money(size * buy_ask * (1 + buy_fee))
            proceeds = round_money(size * sell_bid * (1 - sell_fee))
            inventory.move(buy, buy_ccy, -cost / to_venue[buy])
            inventory.move(buy, base, size)
            inventory.move(sell, base, -size)
            inventory.move(sell, sell_ccy, proceeds / to_venue[sell])
            for key in ((buy, buy_ccy), (buy, base), (sell, base), (sell, sell_ccy)):
                if inventory.change[key] == inventory.deepest[key] < 0:  # a new deepest deficit: value it now
                    capital[key] = -inventory.deepest[key] * (buy_ask if key[1] == base else to_venue[key[0]])
            gross = round_money(size * (sell_bid - buy_ask))
            rebalance_cost = round_money(size * buy_ask * rebalance)
            net = round_money(spread.estimated_profit(spread.net_edge(buy_ask, sell_bid, buy_fee, sell_fee), size)
                              - rebalance_cost)
            equity += net
            records.append((
                row["signal_ts"], from_us(row["fill_us"]), row["pair"], row["direction"], row["signal_net_bps"],
                buy, buy_ask, sell, sell_bid, size, cost, gross, gross - net - rebalance_cost, rebalance_cost, net,
                round_bps(spread.net_bps(buy_ask, sell_bid, buy_fee, sell_fee) - config.rebalance_bps), equity,
            ))
    trades = pl.DataFrame(records, schema=TRADE_SCHEMA, orient="row")
    return trades, skipped, round_money(sum(capital.values(), ZERO))


def max_drawdown(equity: Iterable[Decimal]) -> Decimal:
    """The largest fall of the equity curve from a previous peak (the curve starts at 0)."""
    peak = worst = ZERO
    for value in equity:
        peak = max(peak, value)
        worst = max(worst, peak - value)
    return worst


def summarize(
    config: BacktestConfig,
    signals: pl.DataFrame,
    trades: pl.DataFrame,
    skipped: dict[str, int],
    capital: Decimal,
    stats: dict[str, int],
    quote_rows: int,
    start_us: int,
    end_us: int,
) -> dict[str, Any]:
    """The summary object `--json` prints (money as decimal strings)."""
    n = trades.height
    net = list(trades["net_pnl"]) if n else []
    with localcontext(WIDE):
        mean_edge = round_bps(sum(trades["edge_bps"], ZERO) / n) if n else None
    hits = sum(1 for v in net if v > 0)
    return {
        "from": from_us(start_us).isoformat().replace("+00:00", "Z"),
        "to": from_us(end_us).isoformat().replace("+00:00", "Z"),
        "pairs": list(config.rules.pair_names),
        "currency": config.currency,
        "threshold_bps": str(config.rules.threshold_bps),
        "latency_ms": config.latency_ms,
        "fees": {"coinbase": str(config.rules.fees.coinbase), "binance": str(config.rules.fees.binance)},
        "size": None if config.size is None else str(config.size),
        "quotes": quote_rows,
        "comparisons": stats.get("comparisons", 0),
        "signals": signals.height,
        "trades": n,
        "skipped": dict(skipped),
        "gross_pnl": _money(sum(trades["gross_pnl"], ZERO)),
        "fees_paid": _money(sum(trades["fees"], ZERO)),
        "rebalance_cost": _money(sum(trades["rebalance_cost"], ZERO)),
        "net_pnl": _money(sum(net, ZERO)),
        "hit_rate": round(hits / n, 6) if n else None,
        "mean_edge_bps": None if mean_edge is None else f"{mean_edge:f}",
        "max_drawdown": _money(max_drawdown(net_cumulative(net))),
        "capital_used": _money(capital),
    }


def _money(value: Decimal) -> str:
    """A money amount as a plain decimal string at the stored scale (no exponent: `0E-12` reads badly)."""
    return f"{round_money(value):f}"


def net_cumulative(net: list[Decimal]) -> list[Decimal]:
    out, total = [], ZERO
    for v in net:
        total += v
        out.append(total)
    return out


# -- report ---------------------------------------------------------------------------------------------------------


def write_report(result: BacktestResult, path: Path) -> None:
    """An HTML report: the summary, the equity curve, each trade's edge and the signals over time (Plotly)."""
    import html

    import plotly.graph_objects as go
    import plotly.io as pio

    trades = result.trades
    # floats only for plotting
    x = trades["fill_ts"].to_list()
    equity = go.Figure(go.Scatter(x=x, y=[float(v) for v in trades["equity"]], mode="lines", name="equity"))
    equity.update_layout(title=f"Equity (cumulative net PnL, {result.config.currency})", height=380)
    edges = go.Figure()
    for direction in ("buy_coinbase_sell_binance", "buy_binance_sell_coinbase"):
        part = trades.filter(pl.col("direction") == direction)
        edges.add_trace(go.Scatter(
            x=[float(v) for v in part["signal_net_bps"]], y=[float(v) for v in part["edge_bps"]], mode="markers",
            name=direction,
        ))
    edges.update_layout(title="Edge at fill vs net spread at signal (bps)", xaxis_title="signal net bps",
                        yaxis_title="net bps at fill", height=380)
    signals = result.signals
    per_hour = (
        signals.group_by(pl.col("event_ts").dt.truncate("1h").alias("hour"), "direction")
        .agg(pl.len().alias("n"))
        .sort("hour")
    )
    counts = go.Figure([
        go.Bar(x=part["hour"].to_list(), y=part["n"].to_list(), name=direction)
        for direction, part in ((d, per_hour.filter(pl.col("direction") == d))
                                for d in ("buy_coinbase_sell_binance", "buy_binance_sell_coinbase"))
    ])
    counts.update_layout(title="Signals (window openings) per hour", barmode="stack", height=320)
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in result.summary.items()
    )
    figures = [pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(
        (equity, edges, counts))]
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>arb backtest</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Backtest {html.escape(result.summary['from'])} → {html.escape(result.summary['to'])}</h1>"
        f"<table>{rows}</table>{''.join(figures)}</body></html>",
        encoding="utf-8",
    )


# -- synthetic history (benchmark, tests) ---------------------------------------------------------------------------


def synthetic_quotes(rows: int, start: datetime, seed: int = 7, mean_gap_us: int = 20_000) -> pl.DataFrame:
    """`rows` silver/quotes rows of BTC/USD (Coinbase) and BTC/USDT (Binance), with drifting cross-venue offsets
    wide enough to open windows now and then. Prices have 2 decimals, sizes 4."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    t = to_us(start) + np.cumsum(rng.integers(0, 2 * mean_gap_us, rows))
    is_binance = rng.integers(0, 2, rows).astype(bool)
    mid = 60_000 + np.cumsum(rng.normal(0, 2.0, rows))
    offset_bps = np.clip(np.cumsum(rng.normal(0, 1.0, rows)), -90, 90)
    mid = mid * (1 + np.where(is_binance, offset_bps, 0) / 1e4)
    bid_cents = np.round(mid * (1 - 0.5e-4) * 100).astype(np.int64)
    ask_cents = np.maximum(np.round(mid * (1 + 0.5e-4) * 100).astype(np.int64), bid_cents + 1)

    def decimal(units, scale):  # integers with `scale` decimals -> decimal(30,12), through the 128-bit layout
        v = units.astype(np.int64) * 10 ** (12 - scale)
        words = np.empty((len(v), 2), dtype=np.int64)
        words[:, 0], words[:, 1] = v, np.where(v < 0, -1, 0)
        return pl.from_arrow(pa.Array.from_buffers(pa.decimal128(30, 12), len(v), [None, pa.py_buffer(words)]))

    seq = np.empty(rows, dtype=np.int64)
    seq[is_binance] = np.arange(is_binance.sum())
    seq[~is_binance] = np.arange((~is_binance).sum())
    frame = pl.DataFrame({
        "exchange": pl.Series(np.where(is_binance, "binance", "coinbase")),
        "t": t,
        "seq": seq,
        "bid": decimal(bid_cents, 2),
        "bid_size": decimal(rng.integers(1, 20_000, rows), 4),
        "ask": decimal(ask_cents, 2),
        "ask_size": decimal(rng.integers(1, 20_000, rows), 4),
        "offset": np.arange(rows),
    })
    ts = pl.from_epoch("t", "us").dt.replace_time_zone("UTC")
    binance = pl.col("exchange") == "binance"
    return frame.select(
        "exchange",
        pl.when(binance).then(pl.lit("BTC/USDT")).otherwise(pl.lit("BTC/USD")).alias("symbol"),
        pl.when(binance).then(pl.lit("BTCUSDT")).otherwise(pl.lit("BTC-USD")).alias("venue_symbol"),
        "bid", "bid_size", "ask", "ask_size",
        pl.when(binance).then(None).otherwise(ts).alias("ts_event"),
        ts.alias("ts_recv"),
        ts.alias("event_ts"),
        "seq",
        pl.lit(False).alias("is_crossed"),
        pl.when(binance).then(pl.lit("binance.quotes")).otherwise(pl.lit("coinbase.quotes")).alias("topic"),
        pl.lit(0, pl.Int32).alias("partition"),
        pl.col("offset").cast(pl.Int64),
        ts.dt.year().cast(pl.Int32).alias("year"),
        ts.dt.month().cast(pl.Int32).alias("month"),
        ts.dt.day().cast(pl.Int32).alias("day"),
        ts.dt.hour().cast(pl.Int32).alias("hour"),
        ts.dt.date().alias("date"),
    )


def write_quotes_table(frame: pl.DataFrame, lake: str, mode: str = "append") -> str:
    """Write silver/quotes rows as a Delta table partitioned by date; returns the table path."""
    path = f"{lake.rstrip('/')}/silver/quotes"
    frame.write_delta(path, mode=mode, delta_write_options={"partition_by": ["date"]})
    return path
