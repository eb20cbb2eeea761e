"""`arb produce` (live feed -> Kafka) and `arb normalize` (capture -> JSON Lines), through the same parsers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from arb.argtypes import positive_float
from arb.logs import log_event, setup_logging
from arb.settings import ConfigError, Settings
from arbitrage.events import FeedStatus, to_json
from arbitrage.pairs import DEFAULT_PAIRS, parse_pairs
from arbitrage.symbols import SymbolMap, split
from producers.feed import BadFrame, Feed

log = logging.getLogger("producers.cli")
EXCHANGES = ("coinbase", "binance")


def feed_class(exchange: str) -> type[Feed]:
    if exchange == "coinbase":
        from producers.coinbase import Coinbase

        return Coinbase
    if exchange == "binance":
        from producers.binance import Binance

        return Binance
    raise ConfigError(f"unknown exchange {exchange!r}")


def default_symbols(exchange: str) -> list[str]:
    """The demo market's symbols on `exchange` (arbitrage.pairs.DEFAULT_PAIRS)."""
    symbols: list[str] = []
    for pair in parse_pairs(DEFAULT_PAIRS):
        symbol = pair.symbol_on(exchange)
        if symbol not in symbols:
            symbols.append(symbol)
    return symbols


def parse_symbols(spec: str) -> list[str]:
    symbols = [s.strip().upper() for s in spec.split(",") if s.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError("no symbols given")
    for symbol in symbols:
        try:
            split(symbol)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return symbols


def register(subparsers) -> None:
    produce = subparsers.add_parser(
        "produce",
        help="stream one exchange's market data into Kafka",
        description="Connect to an exchange's WebSocket feed (or the emulator with --url), normalize quotes and "
        "trades, publish them to Kafka; reconnects on its own.",
    )
    produce.add_argument("--exchange", required=True, choices=EXCHANGES)
    produce.add_argument("--symbols", type=parse_symbols, default=None,
                         help="canonical symbols, comma-separated (default: the demo pairs' symbols on the exchange)")
    produce.add_argument("--url", default=None,
                         help="WebSocket endpoint (default: the real one). Coinbase: the feed root, e.g. "
                         "ws://127.0.0.1:8701; Binance: the base, e.g. ws://127.0.0.1:8702 (/stream?streams= is added)")
    produce.add_argument("--record", type=Path, default=None, metavar="FILE",
                         help="also append every received frame to FILE ({\"recv_ts\": ..., \"raw\": ...} a line)")
    produce.add_argument("--markets", type=Path, default=None, metavar="FILE",
                         help="market snapshot (Binance exchangeInfo / Coinbase /products JSON); default: live "
                         "through ccxt, falling back to the committed data/markets/ snapshot when offline")
    produce.add_argument("--silence-timeout", type=positive_float, default=10.0, metavar="S",
                         help="reconnect when no frame arrived for S seconds (default 10)")
    produce.set_defaults(handler=run_produce)

    normalize = subparsers.add_parser(
        "normalize",
        help="print a capture's normalized events as JSON Lines",
        description="Read a capture (JSON Lines {\"recv_ts\": float, \"raw\": \"<frame>\"}) and print the quotes and "
        "trades the producer would publish for it. Invalid frames go to stderr with a reason.",
    )
    normalize.add_argument("--exchange", required=True, choices=EXCHANGES)
    normalize.add_argument("--markets", type=Path, default=None, metavar="FILE",
                           help="market snapshot (default: the committed data/markets/ snapshot)")
    normalize.add_argument("capture", nargs="?", default="-", metavar="CAPTURE|-", help="capture file, - for stdin")
    normalize.set_defaults(handler=run_normalize)


# -- markets --------------------------------------------------------------------------------------------------------


def load_markets(exchange: str, path: Path | None, *, offline_default: bool) -> SymbolMap:
    from producers import markets

    if path is not None or offline_default:
        return markets.load_snapshot(exchange, path or markets.DEFAULT_SNAPSHOTS[exchange])
    try:
        return markets.load(exchange, None)
    except ConfigError as exc:
        snapshot = markets.DEFAULT_SNAPSHOTS[exchange]
        log_event(log, "markets_fallback", logging.WARNING, exchange=exchange, error=str(exc), snapshot=snapshot)
        return markets.load_snapshot(exchange, snapshot)


def make_feed(exchange: str, symbol_map: SymbolMap, symbols: list[str]) -> Feed:
    try:
        return feed_class(exchange)(symbol_map, symbols)
    except KeyError as exc:  # arbitrage.symbols.UnknownSymbol
        raise ConfigError(str(exc)) from None


# -- normalize ------------------------------------------------------------------------------------------------------


def _capture_lines(source: str) -> Iterator[bytes]:
    if source == "-":
        yield from sys.stdin.buffer
        return
    with open(source, "rb") as stream:
        yield from stream


def normalize_lines(feed: Feed, lines, out: IO[bytes], err: IO[str]) -> tuple[int, int]:
    """Parse capture lines with `feed`; write quotes/trades as JSON Lines to `out`, problems to `err`.

    Returns (events written, invalid lines).
    """
    written = invalid = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            raw, recv_ts = record["raw"], record["recv_ts"]
            if type(raw) is not str or type(recv_ts) not in (int, float):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            invalid += 1
            err.write(f"line {number}: not a capture record {{\"recv_ts\": float, \"raw\": str}}: {_clip(line)}\n")
            continue
        try:
            events = feed.parse(raw, round(recv_ts * 1_000_000))
        except BadFrame as exc:
            invalid += 1
            err.write(f"line {number}: {exc.reason}: {_clip(raw)}\n")
            continue
        if feed.pending:
            feed.take_requests()  # nothing to resubscribe to in a file
        for event in events:
            if isinstance(event, FeedStatus):
                if event.state in ("gap", "stale"):
                    err.write(f"line {number}: {event.state} {event.symbol or ''} {event.detail}\n")
                continue
            out.write(to_json(event))
            out.write(b"\n")
            written += 1
    return written, invalid


def _clip(text: str | bytes, limit: int = 200) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[:limit] + "..."


def run_normalize(args: argparse.Namespace, settings: Settings) -> int:
    symbol_map = load_markets(args.exchange, args.markets, offline_default=True)
    feed = make_feed(args.exchange, symbol_map, [])
    out = sys.stdout.buffer
    try:
        normalize_lines(feed, _capture_lines(args.capture), out, sys.stderr)
    except OSError as exc:
        print(f"arb normalize: error: cannot read {args.capture}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    out.flush()
    return 0


# -- produce --------------------------------------------------------------------------------------------------------


def run_produce(args: argparse.Namespace, settings: Settings) -> int:
    from producers.service import Producer, ProducerSpec

    setup_logging()
    symbols = args.symbols or default_symbols(args.exchange)
    symbol_map = load_markets(args.exchange, args.markets, offline_default=False)
    feed = make_feed(args.exchange, symbol_map, symbols)
    spec = ProducerSpec(exchange=args.exchange, symbols=symbols, url=args.url, record=args.record,
                        silence_timeout_s=args.silence_timeout)
    producer = Producer(spec, settings, feed=feed)
    log_event(log, "producer_start", exchange=args.exchange, symbols=",".join(symbols), url=producer.url,
              kafka=settings.kafka.bootstrap)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await producer.run(stop)

    try:
        asyncio.run(main())
    finally:
        undelivered = producer.close(timeout_s=10.0)
        m = producer.metrics
        log_event(log, "producer_stop", exchange=args.exchange, frames=m.frames, quotes=m.quotes, trades=m.trades,
                  invalid=m.invalid, reconnects=m.reconnects, undelivered=undelivered)
    return 0
