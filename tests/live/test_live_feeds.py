"""Against the real exchanges (off by default; `pytest -m live` on a machine with internet).

The same feed code as production and the emulator tests: connect to the real endpoint, subscribe to the demo
symbols, and check that real frames parse into quotes for every symbol without a single bad frame.
"""

import asyncio
import time

import pytest
import websockets

from arbitrage.events import Quote
from producers.cli import default_symbols, load_markets, make_feed
from producers.feed import BadFrame

pytestmark = pytest.mark.live


@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
def test_the_live_feed_yields_a_quote_for_every_demo_symbol_and_no_bad_frame(exchange):
    symbols = default_symbols(exchange)
    feed = make_feed(exchange, load_markets(exchange, None, offline_default=True), symbols)

    async def collect() -> tuple[set[str], list[str]]:
        quoted: set[str] = set()
        bad: list[str] = []
        async with websockets.connect(feed.url(), open_timeout=10) as ws:
            feed.on_connect()
            for message in feed.subscribe_messages():
                await ws.send(message)
            deadline = time.monotonic() + 30
            while quoted != set(symbols) and time.monotonic() < deadline:
                frame = await asyncio.wait_for(ws.recv(), timeout=10)
                try:
                    events = feed.parse(frame, time.time_ns() // 1000)
                except BadFrame as exc:
                    bad.append(f"{exc}: {frame[:200]}")
                    continue
                quoted |= {e.symbol for e in events if isinstance(e, Quote)}
        return quoted, bad

    quoted, bad = asyncio.run(collect())
    assert bad == []
    assert quoted == set(symbols)
