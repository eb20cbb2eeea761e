"""Shared by the producer unit tests: the real captures and market snapshots in tests/fixtures/."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from arbitrage.symbols import SymbolMap
from producers import markets
from producers.feed import BadFrame, Feed

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
COINBASE_CAPTURE = FIXTURES / "coinbase-exchange-2021-04-17.jsonl"
BINANCE_CAPTURE = FIXTURES / "binance-spot-2021-10-12.jsonl"
COINBASE_PRODUCTS = FIXTURES / "coinbase-products-2021-04-17.json"
BINANCE_EXCHANGE_INFO = FIXTURES / "binance-exchangeInfo-2021-10-12.trimmed.json"


@functools.cache
def coinbase_markets() -> SymbolMap:
    return markets.load_snapshot("coinbase", COINBASE_PRODUCTS)


@functools.cache
def binance_markets() -> SymbolMap:
    return markets.load_snapshot("binance", BINANCE_EXCHANGE_INFO)


def capture(path: Path) -> list[tuple[str, int]]:
    """(raw frame, receive time in µs) per capture line."""
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.append((record["raw"], round(record["recv_ts"] * 1_000_000)))
    return out


def replay(feed: Feed, frames: list[tuple[str, int]]) -> tuple[list, list[str]]:
    """Every event the feed emits for the frames, and the BadFrame reasons."""
    events, bad = [], []
    for raw, recv in frames:
        try:
            events += feed.parse(raw, recv)
        except BadFrame as exc:
            bad.append(exc.reason)
    return events, bad
