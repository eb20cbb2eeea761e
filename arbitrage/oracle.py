"""The vectorized Polars reference of docs/RULES.md: silver quotes + feed status -> spreads -> closed windows.

Written independently of `arbitrage.windows.PairTracker` (no per-tick loop): the Spark output and the tracker are
tested against it, and the backtester reuses it. The net spread comes from `arbitrage.spread`, applied to Polars
expressions.

Inputs are the columns of silver/quotes and silver/feed_status (docs/DATA_MODEL.md): timestamps `datetime[us, UTC]`,
money `pl.Decimal`. Outputs are the columns of silver/spreads (`spreads`) and the CLOSE events of gold/arb_windows
(`windows`). `window_starts` is a faster path to the windows' opening rows for long histories (the backtester's
signals); it is tested to give the same openings as `window_runs` over `spreads`.

Decimal arithmetic: Polars keeps a product or quotient at the larger input scale (two scale-12 prices divide to
scale 12), so `net_edge / cost * 1e4` would keep only 8 decimals of bps, and a price of 1e-5 would lose most of its
digits. The formulas therefore run at `WORK` = decimal(38, 18) and the results are rounded HALF_UP
(`half_away_from_zero`) to the stored scales: 6 places for bps, 12 for money, like `arbitrage.rules`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from arbitrage import spread
from arbitrage.pairs import Pair
from arbitrage.rules import (
    BPS_PLACES,
    CLOSE_REASON_BY_STATE,
    DIRECTION_PREFIX,
    MONEY_PLACES,
    RulesConfig,
    direction_fees,
)
from arbitrage.spread import BUY_COINBASE_SELL_BINANCE, DIRECTIONS

WORK = pl.Decimal(38, 18)
MONEY = pl.Decimal(30, 12)
TS = pl.Datetime("us", "UTC")
_PREFIX = DIRECTION_PREFIX
_SIDES = ("bid", "bid_size", "ask", "ask_size")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLOSE_STATES = [str(s) for s in CLOSE_REASON_BY_STATE]

SPREAD_SCHEMA = {
    "pair": pl.String,
    "event_ts": TS,
    **{f"{ex}_{c}": MONEY for ex in ("coinbase", "binance") for c in _SIDES},
    "coinbase_ts": TS,
    "binance_ts": TS,
    "coinbase_age_ms": pl.Int64,
    "binance_age_ms": pl.Int64,
    "coinbase_seq": pl.Int64,
    "binance_seq": pl.Int64,
    **{f"{p}{c}": MONEY for p in ("cb_bn_", "bn_cb_") for c in ("gross_bps", "net_bps", "size", "profit")},
    "date": pl.Date,
}
WINDOW_SCHEMA = {
    "window_id": pl.String,
    "pair": pl.String,
    "direction": pl.String,
    "event": pl.String,
    "start_ts": TS,
    "end_ts": TS,
    "duration_ms": pl.Int64,
    "peak_net_bps": MONEY,
    "mean_net_bps": MONEY,
    "size_at_peak": MONEY,
    "profit_at_peak": MONEY,
    "ticks": pl.Int64,
    "close_reason": pl.String,
    "emitted_ts": TS,
    "date": pl.Date,
}


def _lazy(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _us(column: str) -> pl.Expr:
    return pl.col(column).cast(TS).dt.epoch("us")


def _round(expr: pl.Expr, places: int) -> pl.Expr:
    return expr.round(places, mode="half_away_from_zero").cast(MONEY)


def _ts(expr: pl.Expr) -> pl.Expr:
    return pl.from_epoch(expr, time_unit="us").dt.replace_time_zone("UTC")


def _venue_quotes(q: pl.LazyFrame, pair: Pair, exchange: str) -> pl.LazyFrame:
    """One venue's comparable quotes of a pair: not crossed, Binance prices in the pair's quote currency."""
    rate = pair.binance_rate if exchange == "binance" and pair.binance_rate != 1 else None

    def price(column: str) -> pl.Expr:
        if rate is None:
            return pl.col(column).cast(MONEY)
        return _round(pl.col(column).cast(WORK) * rate, MONEY_PLACES)

    return q.filter(
        (pl.col("exchange") == exchange)
        & (pl.col("symbol") == pair.symbol_on(exchange))
        & ~(pl.col("bid") > pl.col("ask"))  # crossed: kept in silver, never compared
    ).select(
        _us("event_ts").alias("t"),
        pl.col("seq").cast(pl.Int64),
        price("bid").alias("bid"),
        pl.col("bid_size").cast(MONEY),
        price("ask").alias("ask"),
        pl.col("ask_size").cast(MONEY),
    )


def pair_quotes(quotes: pl.LazyFrame | pl.DataFrame, rules: RulesConfig) -> pl.LazyFrame:
    """The comparable quotes of every configured pair: not crossed, Binance prices in the pair's quote currency.

    Columns: pair, exchange, t (µs), seq, bid, bid_size, ask, ask_size (decimal(30,12)).
    """
    q = _lazy(quotes)
    return pl.concat(
        [
            _venue_quotes(q, pair, exchange).select(
                pl.lit(pair.name).alias("pair"), pl.lit(exchange).alias("exchange"), pl.all()
            )
            for pair in rules.pairs
            for exchange in ("coinbase", "binance")
        ],
        how="vertical",
    )


def pair_status(status: pl.LazyFrame | pl.DataFrame | None, rules: RulesConfig) -> pl.LazyFrame:
    """The invalidating feed statuses (gap / disconnected / stale) of every pair: pair, exchange, t, state, symbol."""
    schema = {"pair": pl.String, "exchange": pl.String, "t": pl.Int64, "state": pl.String, "symbol": pl.String}
    if status is None:
        return pl.LazyFrame(schema=schema)
    s = _lazy(status).filter(pl.col("state").cast(pl.String).is_in(_CLOSE_STATES))
    frames = [
        s.filter(
            (pl.col("exchange") == exchange)
            & (pl.col("symbol").is_null() | (pl.col("symbol") == pair.symbol_on(exchange)))
        ).select(
            pl.lit(pair.name).alias("pair"),
            pl.col("exchange").cast(pl.String),
            _us("ts_recv").alias("t"),
            pl.col("state").cast(pl.String),
            pl.col("symbol").cast(pl.String),
        )
        for pair in rules.pairs
        for exchange in ("coinbase", "binance")
    ]
    return pl.concat(frames, how="vertical").cast(schema)  # type: ignore[arg-type]


def _side(q: pl.LazyFrame, pair: str, exchange: str, prefix: str) -> pl.LazyFrame:
    return (
        q.filter((pl.col("pair") == pair) & (pl.col("exchange") == exchange))
        .select(
            pl.col("t").alias(f"{prefix}_ts"),
            pl.col("seq").alias(f"{prefix}_seq"),
            *[pl.col(c).alias(f"{prefix}_{c}") for c in _SIDES],
        )
        .sort(f"{prefix}_ts", f"{prefix}_seq", nulls_last=False)
    )


def _last_status(s: pl.LazyFrame, pair: str, exchange: str) -> pl.LazyFrame:
    return (
        s.filter((pl.col("pair") == pair) & (pl.col("exchange") == exchange))
        .group_by("t")
        .agg()
        .select(pl.col("t").alias("status_t"))
        .sort("status_t")
    )


def _aligned(q: pl.LazyFrame, s: pl.LazyFrame, pair: str, staleness_us: int) -> pl.LazyFrame:
    """One row per quote that has a usable quote of the other venue: as-of joins in both directions of arrival."""
    coinbase, binance = _side(q, pair, "coinbase", "coinbase"), _side(q, pair, "binance", "binance")
    joined = []
    # A Coinbase tick at t sees Binance quotes at t (binance sorts first); a Binance tick does not see Coinbase at t.
    for new, old, old_name, exact in ((coinbase, binance, "binance", True), (binance, coinbase, "coinbase", False)):
        new_name = "coinbase" if old_name == "binance" else "binance"
        rows = (
            new.with_columns(pl.col(f"{new_name}_ts").alias("t"), pl.lit(new_name).alias("exchange"))
            .join_asof(
                old, left_on="t", right_on=f"{old_name}_ts", strategy="backward", tolerance=staleness_us,
                allow_exact_matches=exact, check_sortedness=False,
            )
            .filter(pl.col(f"{old_name}_ts").is_not_null())
            # A gap / disconnect / stale status of the older side after its quote (and at or before t) voids it.
            .join_asof(
                _last_status(s, pair, old_name), left_on="t", right_on="status_t", strategy="backward",
                check_sortedness=False,
            )
            .filter(pl.col("status_t").is_null() | (pl.col("status_t") <= pl.col(f"{old_name}_ts")))
            .drop("status_t")
        )
        joined.append(rows)
    return pl.concat(joined, how="diagonal").with_columns(pl.lit(pair).alias("pair"))


def _spread_columns(rules: RulesConfig) -> list[pl.Expr]:
    exprs = []
    for direction in DIRECTIONS:
        p = _PREFIX[direction]
        buy, sell = ("coinbase", "binance") if direction == BUY_COINBASE_SELL_BINANCE else ("binance", "coinbase")
        buy_fee, sell_fee = direction_fees(direction, rules.fees)
        buy_ask, sell_bid = pl.col(f"{buy}_ask").cast(WORK), pl.col(f"{sell}_bid").cast(WORK)
        size = pl.min_horizontal(pl.col(f"{buy}_ask_size"), pl.col(f"{sell}_bid_size")).cast(MONEY)
        edge = spread.net_edge(buy_ask, sell_bid, buy_fee, sell_fee)
        exprs += [
            _round(spread.gross_bps(buy_ask, sell_bid), BPS_PLACES).alias(f"{p}gross_bps"),
            _round(spread.net_bps(buy_ask, sell_bid, buy_fee, sell_fee), BPS_PLACES).alias(f"{p}net_bps"),
            size.alias(f"{p}size"),
            _round(spread.estimated_profit(edge, size.cast(WORK)), MONEY_PLACES).alias(f"{p}profit"),
        ]
    return exprs


def _tick_exchange() -> pl.Expr:
    """Which venue's tick made a spreads row: the quote at event_ts (both there: coinbase, as binance sorts first)."""
    return pl.when(pl.col("coinbase_ts") == pl.col("event_ts")).then(pl.lit("coinbase")).otherwise(pl.lit("binance"))


def _tick_seq() -> pl.Expr:
    return pl.when(pl.col("coinbase_ts") == pl.col("event_ts")).then("coinbase_seq").otherwise("binance_seq")


def spreads_lazy(
    quotes: pl.LazyFrame | pl.DataFrame, status: pl.LazyFrame | pl.DataFrame | None, rules: RulesConfig
) -> pl.LazyFrame:
    """`spreads` as an unsorted LazyFrame."""
    q = pair_quotes(quotes, rules)
    s = pair_status(status, rules)
    aligned = pl.concat([_aligned(q, s, p.name, rules.staleness_us) for p in rules.pairs], how="diagonal")
    return aligned.select(
        "pair",
        _ts(pl.col("t")).alias("event_ts"),
        *[f"{ex}_{c}" for ex in ("coinbase", "binance") for c in _SIDES],
        _ts(pl.col("coinbase_ts")).alias("coinbase_ts"),
        _ts(pl.col("binance_ts")).alias("binance_ts"),
        ((pl.col("t") - pl.col("coinbase_ts")) // 1000).alias("coinbase_age_ms"),
        ((pl.col("t") - pl.col("binance_ts")) // 1000).alias("binance_age_ms"),
        "coinbase_seq",
        "binance_seq",
        *_spread_columns(rules),
        _ts(pl.col("t")).dt.date().alias("date"),
    )


def spreads(
    quotes: pl.LazyFrame | pl.DataFrame, status: pl.LazyFrame | pl.DataFrame | None, rules: RulesConfig
) -> pl.DataFrame:
    """silver/spreads of the given quotes and feed statuses, in processing order within each pair."""
    return (
        spreads_lazy(quotes, status, rules)
        .sort(pl.col("pair"), pl.col("event_ts"), _tick_exchange(), _tick_seq(), nulls_last=False)
        .cast(SPREAD_SCHEMA)  # type: ignore[arg-type]
        .collect()
    )


def _events(spread_rows: pl.LazyFrame, s: pl.LazyFrame) -> pl.LazyFrame:
    """Rows and invalidating statuses of each pair in the processing order (t, kind, exchange, seq, state, symbol)."""
    rows = spread_rows.select(
        "pair",
        _us("event_ts").alias("t"),
        pl.lit(1, pl.Int8).alias("kind"),
        _tick_exchange().alias("exchange"),
        _tick_seq().cast(pl.Int64).alias("seq"),
        pl.lit(None, pl.String).alias("state"),
        pl.lit(None, pl.String).alias("symbol"),
        pl.min_horizontal(_us("coinbase_ts"), _us("binance_ts")).alias("oldest_us"),
        *[pl.col(f"{p}{c}") for p in ("cb_bn_", "bn_cb_") for c in ("net_bps", "size", "profit")],
    )
    statuses = s.select("pair", "t", pl.lit(0, pl.Int8).alias("kind"), "exchange", pl.lit(-1, pl.Int64).alias("seq"),
                        "state", "symbol")
    return pl.concat([rows, statuses], how="diagonal").sort(
        "pair", "t", "kind", "exchange", "seq", "state", "symbol", nulls_last=False
    )


def window_runs(
    spread_rows: pl.LazyFrame | pl.DataFrame,
    status: pl.LazyFrame | pl.DataFrame | None,
    rules: RulesConfig,
    until_us: int | None,
) -> pl.LazyFrame:
    """Every window (closed or still open at `until_us`) as runs of tradable rows; end/close_reason null if open.

    Columns: pair, direction, start_us, end_us, close_reason, ticks, peak_net_bps, mean_net_bps, size_at_peak,
    profit_at_peak.
    """
    ev = _events(_lazy(spread_rows), pair_status(status, rules))
    S = rules.staleness_us
    runs = []
    for direction in DIRECTIONS:
        p = _PREFIX[direction]
        is_row = pl.col("kind") == 1
        tradable = is_row & (pl.col(f"{p}net_bps") >= rules.threshold_bps)
        deadline = pl.col("oldest_us") + S
        next_t = pl.col("t").shift(-1).over("pair")
        # The stale close at `deadline` comes after every tick at t <= deadline and before the next later one.
        at_end = pl.lit(False) if until_us is None else deadline <= until_us
        stale_after = is_row & pl.when(next_t.is_null()).then(at_end).otherwise(next_t > deadline)
        continues = tradable & ~stale_after
        d = ev.with_columns(
            tradable.alias("tradable"),
            stale_after.fill_null(False).alias("stale_after"),
            deadline.alias("deadline"),
            next_t.alias("next_t"),
            pl.col("kind").shift(-1).over("pair").alias("next_kind"),
            pl.col("state").shift(-1).over("pair").alias("next_state"),
        ).with_columns(
            (pl.col("tradable") & ~continues.shift(1).over("pair").fill_null(False)).alias("starts"),
        ).with_columns(pl.col("starts").cum_sum().over("pair").alias("run"))
        net = pl.col(f"{p}net_bps")
        at_peak = net == net.max()
        closed_by = (
            pl.when(pl.col("stale_after").last()).then(pl.lit("stale"))
            .when(pl.col("next_kind").last().is_null()).then(pl.lit(None, pl.String))
            .when(pl.col("next_kind").last() == 0)
            .then(pl.col("next_state").last().replace_strict({str(k): v for k, v in CLOSE_REASON_BY_STATE.items()},
                                                             default=None))
            .otherwise(pl.lit("spread"))
        )
        end = (
            pl.when(pl.col("stale_after").last()).then(pl.col("deadline").last())
            .when(pl.col("next_kind").last().is_null()).then(pl.lit(None, pl.Int64))
            .otherwise(pl.col("next_t").last())
        )
        runs.append(
            d.filter(pl.col("tradable"))
            .group_by("pair", "run", maintain_order=True)
            .agg(
                pl.col("t").first().alias("start_us"),
                end.alias("end_us"),
                closed_by.alias("close_reason"),
                pl.len().cast(pl.Int64).alias("ticks"),
                net.max().alias("peak_net_bps"),
                _round(net.cast(WORK).sum() / pl.len().cast(WORK), BPS_PLACES).alias("mean_net_bps"),
                pl.col(f"{p}size").filter(at_peak).first().alias("size_at_peak"),
                pl.col(f"{p}profit").filter(at_peak).first().alias("profit_at_peak"),
            )
            .select(pl.col("pair"), pl.lit(direction).alias("direction"), pl.exclude("pair", "run"))
        )
    return pl.concat(runs, how="vertical")


def _max_time_us(quotes, status) -> int | None:
    times = [_lazy(quotes).select(_us("event_ts").max().alias("m"))]
    if status is not None:
        times.append(_lazy(status).select(_us("ts_recv").max().alias("m")))
    value = pl.concat(times).select(pl.col("m").max()).collect().item()
    return None if value is None else int(value)


def windows(
    spread_rows: pl.LazyFrame | pl.DataFrame,
    quotes: pl.LazyFrame | pl.DataFrame,
    status: pl.LazyFrame | pl.DataFrame | None,
    rules: RulesConfig,
    until: datetime | int | None = None,
) -> pl.DataFrame:
    """The CLOSE events of gold/arb_windows, sorted by (pair, direction, start_ts).

    `until` is how far event time has advanced (all ticks at or before it are in the input): stale deadlines at or
    before it close their windows. Default: the latest tick time in `quotes` / `status`.
    """
    if until is None:
        until_us = _max_time_us(quotes, status)
    elif isinstance(until, datetime):
        if until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        until_us = (until - _EPOCH) // timedelta(microseconds=1)
    else:
        until_us = until
    return (
        window_runs(spread_rows, status, rules, until_us)
        .filter(pl.col("end_us").is_not_null())
        .select(
            pl.format("{}|{}|{}", "pair", "direction", "start_us").alias("window_id"),
            "pair",
            "direction",
            pl.lit("CLOSE").alias("event"),
            _ts(pl.col("start_us")).alias("start_ts"),
            _ts(pl.col("end_us")).alias("end_ts"),
            ((pl.col("end_us") - pl.col("start_us")) // 1000).alias("duration_ms"),
            "peak_net_bps",
            "mean_net_bps",
            "size_at_peak",
            "profit_at_peak",
            "ticks",
            "close_reason",
            pl.lit(None, TS).alias("emitted_ts"),
            _ts(pl.col("end_us")).dt.date().alias("date"),
        )
        .sort("pair", "direction", "start_ts")
        .cast(WINDOW_SCHEMA)  # type: ignore[arg-type]
        .collect()
    )


# -- fast path for long histories (the backtester) -------------------------------------------------------------------

# A float64 net bps is within ~1e-9 bps of the exact value at any realistic price; rows closer than this to the
# threshold are decided again in exact decimals, so the tradable flags equal the exact path's.
_SCREEN_BPS = 1e-4
_RAW_COLUMNS = [
    *[f"{ex}_{c}" for ex in ("coinbase", "binance") for c in _SIDES],
    "coinbase_ts", "binance_ts", "coinbase_seq", "binance_seq",
]


def _as_float(column: str) -> pl.Expr:
    """A decimal(30,12) column as float64, via its integer representation (Polars' own cast is ~15x slower)."""
    return pl.col(column).to_physical().cast(pl.Float64) / 1e12


def window_starts(
    quotes: pl.LazyFrame | pl.DataFrame, status: pl.LazyFrame | pl.DataFrame | None, rules: RulesConfig
) -> pl.DataFrame:
    """The opening row of every window (the signals), computed fast enough for tens of millions of quotes.

    The same windows as `window_runs(spreads(...))` with the same alignment rule, but the joins carry row numbers
    instead of prices, the net spread is screened in float64 with `arbitrage.spread`, and rows near the threshold
    are recomputed exactly. Columns: pair, direction, event_ts and the spreads columns of the opening row.
    """
    return starts_of_sides(pair_sides(quotes, rules), status, rules)


Sides = dict[str, dict[str, pl.DataFrame]]  # pair -> exchange -> its quotes in processing order


def pair_sides(quotes: pl.LazyFrame | pl.DataFrame, rules: RulesConfig) -> Sides:
    """Each pair's quotes per venue in processing order (t, seq), with float copies of bid and ask (bid_f, ask_f).

    The source is read once (only the pairs' symbols), then split in memory: a scan per venue would decode every
    row of the table twice. The backtester reuses these frames for the fills.
    """
    wanted = pl.lit(False)
    for pair in rules.pairs:
        for exchange in ("coinbase", "binance"):
            wanted = wanted | ((pl.col("exchange") == exchange) & (pl.col("symbol") == pair.symbol_on(exchange)))
    source = (
        _lazy(quotes)
        .filter(wanted)
        .select("exchange", "symbol", "event_ts", "seq", "bid", "bid_size", "ask", "ask_size")
        .collect()
        .lazy()
    )
    keys = [(pair.name, exchange) for pair in rules.pairs for exchange in ("coinbase", "binance")]
    frames = pl.collect_all([
        _venue_quotes(source, rules.pair(name), exchange).with_columns(
            _as_float("bid").alias("bid_f"), _as_float("ask").alias("ask_f")
        )
        for name, exchange in keys
    ])
    sides: Sides = {}
    for (name, exchange), frame in zip(keys, frames, strict=True):
        sides.setdefault(name, {})[exchange] = _in_processing_order(frame)
    return sides


def _in_processing_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort one venue's quotes by (t, seq), cheaply when they mostly are already (a two-key sort of 10M rows costs
    seconds; checking costs milliseconds)."""

    def ordered(f: pl.DataFrame) -> bool:
        t, seq = pl.col("t"), pl.col("seq").fill_null(-1)
        ok = (t.diff() > 0) | ((t.diff() == 0) & (seq.diff() >= 0))
        return bool(f.select(ok.fill_null(True).all()).item())

    if ordered(frame):
        return frame
    frame = frame.sort("t", maintain_order=True)  # ties keep the source order, usually seq order already
    return frame if ordered(frame) else frame.sort("t", "seq", nulls_last=False)


def starts_of_sides(
    sides: Sides,
    status: pl.LazyFrame | pl.DataFrame | None,
    rules: RulesConfig,
    stats: dict | None = None,
) -> pl.DataFrame:
    """`window_starts` of quotes already split by `pair_sides`; `stats["comparisons"]` gets the row count."""
    statuses = pair_status(status, rules).collect()
    out, comparisons = [], 0
    for pair in rules.pairs:
        side = sides[pair.name]
        rows = _fast_rows(side, statuses.filter(pl.col("pair") == pair.name), rules)
        comparisons += rows.height
        if rows.is_empty():
            continue
        opened = _fast_opens(rows, statuses.filter(pl.col("pair") == pair.name), rules)
        if opened.is_empty():
            continue
        picked = rows[opened["row"]]
        raw = pl.DataFrame({
            "pair": pl.Series([pair.name] * picked.height, dtype=pl.String),
            "direction": opened["direction"],
            "t": picked["t"],
            **{f"{ex}_{c}": side[ex][c].gather(picked[f"{ex}_i"]) for ex in ("coinbase", "binance") for c in _SIDES},
            "coinbase_ts": picked["coinbase_ts"],
            "binance_ts": picked["binance_ts"],
            "coinbase_seq": side["coinbase"]["seq"].gather(picked["coinbase_i"]),
            "binance_seq": side["binance"]["seq"].gather(picked["binance_i"]),
        })
        out.append(raw)
    if stats is not None:
        stats["comparisons"] = comparisons
    if out:
        raw = pl.concat(out, how="vertical").sort("pair", "t", "direction")
    else:
        raw = pl.DataFrame(schema={
            "pair": pl.String, "direction": pl.String, "t": pl.Int64,
            **{f"{ex}_{c}": MONEY for ex in ("coinbase", "binance") for c in _SIDES},
            "coinbase_ts": pl.Int64, "binance_ts": pl.Int64, "coinbase_seq": pl.Int64, "binance_seq": pl.Int64,
        })
    return _with_spread_columns(raw, rules)


def _fast_rows(side: dict[str, pl.DataFrame], statuses: pl.DataFrame, rules: RulesConfig) -> pl.DataFrame:
    """The comparisons of one pair in processing order: k (sort key), t, both sides' row numbers and times, and
    the float net bps of each direction."""
    aligned = []
    for new, old, exact in (("coinbase", "binance", True), ("binance", "coinbase", False)):
        left = side[new].select("t", pl.int_range(pl.len(), dtype=pl.Int64).alias(f"{new}_i"))
        right = side[old].select(pl.col("t").alias(f"{old}_ts"), pl.int_range(pl.len(), dtype=pl.Int64).alias(f"{old}_i"))
        last_status = (
            statuses.filter(pl.col("exchange") == old).select(pl.col("t").alias("status_t")).unique().sort("status_t")
        )
        rows = (
            left.join_asof(right, left_on="t", right_on=f"{old}_ts", strategy="backward",
                           tolerance=rules.staleness_us, allow_exact_matches=exact, check_sortedness=False)
            .filter(pl.col(f"{old}_ts").is_not_null())
            .join_asof(last_status, left_on="t", right_on="status_t", strategy="backward", check_sortedness=False)
            .filter(pl.col("status_t").is_null() | (pl.col("status_t") <= pl.col(f"{old}_ts")))
            .select(
                (pl.col("t") * 4 + (3 if new == "coinbase" else 2)).alias("k"),
                "t",
                "coinbase_i",
                "binance_i",
                (pl.col("t") if new == "coinbase" else pl.col("coinbase_ts")).alias("coinbase_ts"),
                (pl.col("t") if new == "binance" else pl.col("binance_ts")).alias("binance_ts"),
            )
        )
        aligned.append(rows)
    rows = aligned[0].merge_sorted(aligned[1], key="k")  # each is sorted by (t, seq); their k never tie
    prices = {
        f"{ex}_{c}": side[ex][f"{c}_f"].gather(rows[f"{ex}_i"]) for ex in ("coinbase", "binance") for c in ("bid", "ask")
    }
    nets = {}
    for d in DIRECTIONS:
        buy, sell = ("coinbase", "binance") if d == BUY_COINBASE_SELL_BINANCE else ("binance", "coinbase")
        nets[f"_f_{_PREFIX[d]}"] = pl.select(
            spread.net_bps(pl.lit(prices[f"{buy}_ask"]), pl.lit(prices[f"{sell}_bid"]), *direction_fees(d, rules.fees))
        ).to_series()
    rows = rows.with_columns(**nets)
    # Decide the rows too close to the threshold in exact decimals.
    thr = float(rules.threshold_bps)
    for d in DIRECTIONS:
        f = f"_f_{_PREFIX[d]}"
        tradable = rows[f] > thr
        near = ((rows[f] - thr).abs() <= _SCREEN_BPS).arg_true()
        if near.len():
            picked = rows[near]
            exact = pl.DataFrame({
                f"{ex}_{c}": side[ex][c].gather(picked[f"{ex}_i"]) for ex in ("coinbase", "binance") for c in _SIDES
            }).select(next(c for c in _net_columns(rules) if c.meta.output_name() == f"{_PREFIX[d]}net_bps"))
            tradable = tradable.scatter(near, exact.to_series() >= rules.threshold_bps)
        rows = rows.with_columns(tradable.alias(f"_tr_{_PREFIX[d]}"))
    return rows


def _fast_opens(rows: pl.DataFrame, statuses: pl.DataFrame, rules: RulesConfig) -> pl.DataFrame:
    """Row numbers (into `rows`) and direction of every window opening, from the run-length rule of `window_runs`."""
    ticks = rows.select(
        "k",
        "t",
        pl.min_horizontal("coinbase_ts", "binance_ts").alias("oldest_us"),
        *[pl.col(f"_tr_{_PREFIX[d]}") for d in DIRECTIONS],
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
    )
    if not statuses.is_empty():
        stat = statuses.select(
            (pl.col("t") * 4 + (pl.col("exchange") == "coinbase").cast(pl.Int64)).alias("k"),
            "t",
            pl.lit(None, pl.Int64).alias("oldest_us"),
            *[pl.lit(False).alias(f"_tr_{_PREFIX[d]}") for d in DIRECTIONS],
            pl.lit(None, pl.Int64).alias("row"),
        ).sort("k")
        ticks = ticks.merge_sorted(stat, key="k")
    next_t = pl.col("t").shift(-1)
    # Starts only: whether the very last row goes stale at the end does not matter.
    stale_after = (next_t > pl.col("oldest_us") + rules.staleness_us).fill_null(False)
    opens = []
    for d in DIRECTIONS:
        tr = pl.col(f"_tr_{_PREFIX[d]}")
        starts = tr & ~(tr & ~stale_after).shift(1).fill_null(False)
        opens.append(ticks.lazy().filter(starts).select("row", pl.lit(d).alias("direction")))
    return pl.concat(opens).collect().sort("row", "direction")


def _net_columns(rules: RulesConfig) -> list[pl.Expr]:
    return [c for c in _spread_columns(rules) if c.meta.output_name().endswith("net_bps")]


def _with_spread_columns(raw: pl.DataFrame, rules: RulesConfig) -> pl.DataFrame:
    """Add the spreads columns (exact decimals) to a few aligned rows; times become timestamps."""
    return raw.select(
        "pair",
        "direction",
        _ts(pl.col("t")).alias("event_ts"),
        *[pl.col(f"{ex}_{c}").cast(MONEY) for ex in ("coinbase", "binance") for c in _SIDES],
        _ts(pl.col("coinbase_ts")).alias("coinbase_ts"),
        _ts(pl.col("binance_ts")).alias("binance_ts"),
        ((pl.col("t") - pl.col("coinbase_ts")) // 1000).alias("coinbase_age_ms"),
        ((pl.col("t") - pl.col("binance_ts")) // 1000).alias("binance_age_ms"),
        "coinbase_seq",
        "binance_seq",
        *_spread_columns(rules),
    )
