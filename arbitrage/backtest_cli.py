"""`arb backtest` (replay the Delta history through the rules and trade the windows) and `arb bench backtest`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from arb.argtypes import finite_decimal, non_negative_int, positive_int
from arbitrage.fees import parse_fees
from arbitrage.pairs import parse_pair
from arbitrage.rules import RulesConfig, UnknownPair
from arbitrage.symbols import split

_RELATIVE = re.compile(r"^(?:now)?-(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (`2026-11-22`, `2026-11-22T09:30:00Z`; naive means UTC), `now`, or `now-90m`, `now-2h`, `now-1d`.

    (`-2h` alone also works when written `--from=-2h`; argparse takes a bare `-2h` for an option.)
    """
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (ISO 8601, 'now' or now-N[smhd])") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _non_negative_decimal(text: str) -> Decimal:
    value = finite_decimal(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_decimal(text: str) -> Decimal:
    value = finite_decimal(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fees(text: str):
    try:
        return parse_fees(text)
    except (ValueError, ArithmeticError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _balances(text: str):
    from arbitrage.backtest import parse_balances

    try:
        return parse_balances(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def select_pairs(spec: str | None, configured: RulesConfig):
    """Pair names from the configuration (`BTC/USD,ETH/USD`) or full specs (`BTC/USD=BTC/USD~BTC/USDT@1.0`).

    Default: the configured pairs quoted in the first pair's currency (one PnL currency per run).
    """
    if spec is None:
        currency = split(configured.pairs[0].coinbase)[1]
        return tuple(p for p in configured.pairs if split(p.coinbase)[1] == currency)
    pairs = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        pairs.append(parse_pair(item) if "=" in item else configured.pair(item))
    if not pairs:
        raise ValueError("no pairs given")
    return tuple(pairs)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="replay silver quotes from Delta through the rules and trade every window",
        description="Replay silver/quotes (and feed status) between --from and --to through the arbitrage rules; "
        "for each window opening, send both legs as taker orders that fill `--latency-ms` later at the quotes then, "
        "sized by displayed size, --size and inventory.",
    )
    parser.add_argument("--from", dest="start", required=True, type=parse_time, metavar="T",
                        help="start (ISO 8601, 'now', or now-N[smhd]); naive times are UTC")
    parser.add_argument("--to", dest="end", required=True, type=parse_time, metavar="T", help="end (exclusive)")
    parser.add_argument("--pairs", help="comma-separated pair names or NAME=CB~BN[@RATE] specs "
                        "(default: the configured pairs in the first pair's quote currency)")
    parser.add_argument("--threshold-bps", type=finite_decimal, help="minimum net bps of a tradable comparison (default 5)")
    parser.add_argument("--staleness-ms", type=non_negative_int, help="staleness bound (default 500)")
    parser.add_argument("--latency-ms", type=non_negative_int, default=0, help="signal-to-fill delay (default 0)")
    parser.add_argument("--size", type=_positive_decimal, help="max base units per trade (default: displayed size)")
    parser.add_argument("--fees", type=_fees, help="taker fees, e.g. coinbase=0.006,binance=10bps")
    parser.add_argument("--balances", type=_balances, metavar="EX:CCY=AMT,...",
                        help="starting inventory, e.g. coinbase:USD=100000,coinbase:BTC=2,binance:USDT=100000,"
                        "binance:BTC=2 (currencies not listed are 0; default: unlimited)")
    parser.add_argument("--rebalance-bps", type=_non_negative_decimal, default=Decimal(0),
                        help="cost of moving inventory back, in bps of each trade's bought notional (default 0)")
    parser.add_argument("--lake", help="lake root (default: the settings' lake dir)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--report", type=Path, metavar="FILE.html", help="write an HTML report with plots")
    parser.add_argument("--trades", type=Path, metavar="FILE.csv", help="write the trades as CSV")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.set_defaults(handler=_backtest, parser=parser)


def _config(args):
    from arbitrage.backtest import BacktestConfig

    parser: argparse.ArgumentParser = args.parser
    if args.end <= args.start:
        parser.error("--to must be after --from")
    configured = RulesConfig()
    try:
        pairs = select_pairs(args.pairs, configured)
    except UnknownPair as exc:
        parser.error(f"--pairs: {exc}")
    except ValueError as exc:
        parser.error(f"--pairs: {exc}")
    rules_kwargs = {"pairs": pairs}
    if args.threshold_bps is not None:
        rules_kwargs["threshold_bps"] = args.threshold_bps
    if args.staleness_ms is not None:
        rules_kwargs["staleness_ms"] = args.staleness_ms
    if args.fees is not None:
        rules_kwargs["fees"] = args.fees
    try:
        return BacktestConfig(
            start=args.start, end=args.end, rules=RulesConfig(**rules_kwargs), latency_ms=args.latency_ms,
            size=args.size, balances=args.balances, rebalance_bps=args.rebalance_bps,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _backtest(args, settings) -> int:
    from arbitrage import backtest

    config = _config(args)
    lake = args.lake or settings.lake_dir
    progress = backtest.Progress(5, enabled=args.progress)
    try:
        quotes, status = backtest.load_history(lake, config.start, config.end, config.rules)
    except FileNotFoundError as exc:
        print(f"arb backtest: error: {exc}", file=sys.stderr)
        return 2
    result = backtest.run(quotes, status, config, progress)
    if args.report:
        backtest.write_report(result, args.report)
    if args.trades:
        result.trades.write_csv(args.trades)
    if args.json:
        print(json.dumps(result.summary))
    else:
        print(format_summary(result.summary))
    return 0


def format_summary(summary: dict) -> str:
    """The summary as aligned `key  value` lines."""
    width = max(len(k) for k in summary)
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value)
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


# -- benchmark ------------------------------------------------------------------------------------------------------


def register_bench(subparsers) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="backtest throughput on a generated Delta history",
        description="Generate N silver quote rows (BTC/USD vs BTC/USDT) into a temporary Delta table, then time "
        "`arb backtest` over all of it: read with pruning, align, find windows, fill and simulate.",
    )
    parser.add_argument("--rows", type=positive_int, default=10_000_000, help="quote rows (default 10,000,000)")
    parser.add_argument("--latency-ms", type=non_negative_int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lake", help="reuse or create the generated lake here instead of a temporary dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_bench, parser=parser)


def _bench(args, settings) -> int:
    from arbitrage import backtest
    from arbitrage.backtest import BacktestConfig

    start = datetime.combine(date(2026, 1, 5), datetime.min.time(), UTC)
    with tempfile.TemporaryDirectory(prefix="arb-bench-backtest-") as tmp:
        lake = args.lake or tmp
        generated = time.perf_counter()
        table = Path(lake) / "silver" / "quotes"
        if not (table / "_delta_log").exists():
            frame = backtest.synthetic_quotes(args.rows, start, seed=args.seed)
            backtest.write_quotes_table(frame, lake, mode="overwrite")
            end = frame["event_ts"].max() + timedelta(microseconds=1)
            del frame
        else:
            import polars as pl

            end = pl.scan_delta(str(table)).select(pl.col("event_ts").max()).collect().item() + timedelta(
                microseconds=1)
        generated = time.perf_counter() - generated
        config = BacktestConfig(start=start, end=end, rules=RulesConfig(pairs=select_pairs("BTC/USD", RulesConfig())),
                                latency_ms=args.latency_ms)
        began, cpu = time.perf_counter(), time.process_time()
        quotes, status = backtest.load_history(lake, config.start, config.end, config.rules)
        progress = backtest.Progress(5)
        result = backtest.run(quotes, status, config, progress)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    rows = result.summary["quotes"]
    out = {
        "rows": rows,
        "comparisons": result.summary["comparisons"],
        "signals": result.summary["signals"],
        "trades": result.summary["trades"],
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "cpu_s": round(cpu, 3),  # all threads; wall time suffers when other jobs share the 2 cores
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "stages_s": progress.timings,
        "generate_and_write_s": round(generated, 3),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(format_summary(out))
    return 0
