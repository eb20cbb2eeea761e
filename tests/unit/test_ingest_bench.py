"""`arb bench ingest` measures what it says only if its synthetic frames are what a real feed sends."""

from collections import Counter

import pytest

from arbitrage.events import Quote
from producers.bench import FrameSource, _pct_ms
from producers.cli import default_symbols, load_markets, make_feed


@pytest.mark.parametrize(("exchange", "min_quotes"), [("coinbase", 0.90), ("binance", 0.85)])
def test_synthetic_frames_all_parse_and_most_move_the_top(exchange, min_quotes):
    symbol_map = load_markets(exchange, None, offline_default=True)
    symbols = default_symbols(exchange)
    feed = make_feed(exchange, symbol_map, symbols)
    source = FrameSource(exchange, [symbol_map.to_venue(s) for s in symbols])
    frames = source.snapshots() + source.chunk(5_000)
    kinds, crossed = Counter(), 0
    for n, frame in enumerate(frames):
        for event in feed.parse(frame, n):  # a BadFrame here fails the test
            kinds[event.type] += 1
            crossed += isinstance(event, Quote) and event.bid >= event.ask
    assert crossed == 0 and "status" not in kinds  # no gaps: trade ids consecutive, book consistent
    assert kinds["quote"] >= min_quotes * 5_000 and kinds["trade"] > 0.03 * 5_000


def test_percentile_is_nearest_rank_in_milliseconds():
    samples = sorted(range(1_000, 101_000, 1_000))  # 1..100 ms in µs
    assert (_pct_ms(samples, 50), _pct_ms(samples, 99), _pct_ms([], 50)) == (50.0, 99.0, None)
