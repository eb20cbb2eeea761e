"""Fuzzed frames against the producers' parsers: every frame either parses or raises BadFrame, never anything else.

A producer catches `BadFrame` per message (counted, logged, dead-lettered) and keeps running; any other exception
would end its connection loop. So for any text a venue (or an attacker in the middle) could send, `Feed.parse` must
return events that satisfy the event invariants, or raise `BadFrame`. Three kinds of input:
  - arbitrary text and arbitrary JSON;
  - frames shaped like each venue message (right `type` / `stream`), every field either valid or any JSON value;
  - the real captures in tests/fixtures/ with one field replaced, deleted or added, replayed through one feed so that
    the state a bad frame leaves behind (book, sequence checks) is exercised too.
After the fuzzed frames, the same feed must still parse a valid frame: a bad frame does not poison the stream.
"""

from __future__ import annotations

import functools
import json
import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbitrage.events import FeedStatus, Quote, Trade, to_json
from producers.binance import Binance
from producers.coinbase import Coinbase
from producers.feed import BadFrame, Feed
from tests.unit.producer_helpers import (
    BINANCE_CAPTURE,
    COINBASE_CAPTURE,
    binance_markets,
    capture,
    coinbase_markets,
)

pytestmark = pytest.mark.chaos

FUZZ = settings(max_examples=int(os.environ.get("ARB_FUZZ_EXAMPLES", "1500")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
COUNTS: dict[str, int] = {}

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False) | st.text(max_size=12)
                | st.sampled_from(["0", "-1", "1e400", "NaN", "Infinity", "-0", "0.1", "1.5", "abc", "", "BTC-USD",
                                   "BTCUSDT", "2021-04-17T16:43:46.345172Z", "2021-13-45T99:99:99Z", "buy", "sell"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


def field(valid) -> st.SearchStrategy:
    """A field that is usually valid and sometimes any JSON value."""
    return st.one_of(valid, valid, json_values)


# -- frames shaped like each venue message -------------------------------------------------------------------------

cb_products = st.sampled_from(["BTC-USD", "ETH-USD", "NU-GBP", "BAND-GBP", "NOPE-USD"])
cb_times = st.sampled_from(["2021-04-17T16:43:46.345172Z", "2021-04-17T16:43:46Z", "2021-04-17T16:43:46.3+00:00"])
decimal_text = st.decimals(min_value=Decimal("-10"), max_value=Decimal("100000"), places=4,
                           allow_nan=False, allow_infinity=False).map(str)
cb_level = st.lists(field(decimal_text), min_size=2, max_size=3)
coinbase_frames = st.one_of(
    st.fixed_dictionaries({"type": st.just("snapshot"), "product_id": field(cb_products),
                           "bids": field(st.lists(field(cb_level), max_size=4)),
                           "asks": field(st.lists(field(cb_level), max_size=4))}),
    st.fixed_dictionaries({"type": st.just("l2update"), "product_id": field(cb_products), "time": field(cb_times),
                           "changes": field(st.lists(field(st.tuples(st.sampled_from(["buy", "sell", "x"]),
                                                                     decimal_text, decimal_text).map(list)),
                                                     max_size=4))}),
    st.fixed_dictionaries({"type": st.sampled_from(["match", "last_match"]), "product_id": field(cb_products),
                           "trade_id": field(st.integers(0, 10**6)), "side": field(st.sampled_from(["buy", "sell"])),
                           "price": field(decimal_text), "size": field(decimal_text),
                           "sequence": field(st.integers(0, 10**9)), "time": field(cb_times)}),
    st.fixed_dictionaries({"type": st.just("heartbeat"), "product_id": field(cb_products),
                           "sequence": field(st.integers(0, 10**9)), "last_trade_id": field(st.integers(0, 10**6)),
                           "time": field(cb_times)}),
    st.fixed_dictionaries({"type": field(st.sampled_from(["subscriptions", "error", "ticker", "bogus"])),
                           "message": json_values}),
).map(json.dumps)

bn_symbols = st.sampled_from(["NKNUSDT", "LRCBTC", "BTCUSDT", "nknusdt", "NOPEUSDT"])
bn_book = st.fixed_dictionaries({"u": field(st.integers(0, 10**9)), "s": field(bn_symbols), "b": field(decimal_text),
                                 "B": field(decimal_text), "a": field(decimal_text), "A": field(decimal_text)})
bn_trade = st.fixed_dictionaries({"e": field(st.just("trade")), "s": field(bn_symbols), "t": field(st.integers(0, 10**6)),
                                  "a": field(st.integers(0, 10**6)), "p": field(decimal_text), "q": field(decimal_text),
                                  "T": field(st.integers(0, 2**42)), "m": field(st.booleans())})
binance_frames = st.one_of(
    st.builds(lambda s, d: {"stream": f"{str(s).lower()}@bookTicker", "data": d}, bn_symbols, field(bn_book)),
    st.builds(lambda s, c, d: {"stream": f"{str(s).lower()}@{c}", "data": d}, bn_symbols,
              st.sampled_from(["trade", "aggTrade", "depth@100ms", "kline_1m", "nope"]), field(bn_trade)),
    st.fixed_dictionaries({"stream": json_values, "data": json_values}),
    st.fixed_dictionaries({"result": json_values, "id": json_values}),
    st.fixed_dictionaries({"code": json_values, "msg": json_values}),
    st.fixed_dictionaries({"e": st.just("serverShutdown"), "E": json_values}),
    st.fixed_dictionaries({"event": json_values}),
).map(json.dumps)


# -- the real captures, mutated --------------------------------------------------------------------------------------


@functools.cache
def real_frames(exchange: str) -> tuple[dict, ...]:
    path = COINBASE_CAPTURE if exchange == "coinbase" else BINANCE_CAPTURE
    return tuple(json.loads(raw) for raw, _ in capture(path))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield from _paths(item, prefix + (index,))


@st.composite
def mutated(draw, exchange: str) -> str:
    frame = json.loads(json.dumps(draw(st.sampled_from(real_frames(exchange)))))
    path = draw(st.sampled_from(list(_paths(frame))[1:] or [()]))
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if not path:
        return json.dumps(draw(json_values))
    parent = frame
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = draw(json_values)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=4))] = draw(json_values)
    else:
        parent.insert(last, draw(json_values))
    return json.dumps(frame)


# -- the property ----------------------------------------------------------------------------------------------------


def feed_for(exchange: str) -> Feed:
    if exchange == "coinbase":
        return Coinbase(coinbase_markets(), ["BTC/USD", "NU/GBP"])
    return Binance(binance_markets(), ["NKN/USDT", "LRC/BTC"])


def parse_or_bad_frame(feed: Feed, frame: str, fuzzed: bool = True, recv_ts_us: int = 1_618_677_826_000_000) -> str:
    """Parse one frame the way the producer does; return "ok" or "bad". Any other exception fails the test."""
    if fuzzed:
        key = f"{feed.name}_fuzzed_frames"
        COUNTS[key] = COUNTS.get(key, 0) + 1
    try:
        events = feed.parse(frame, recv_ts_us)
    except BadFrame as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return "bad"
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, (Quote, Trade, FeedStatus)), event
        assert event.exchange == feed.name
        if isinstance(event, Quote):
            assert event.bid > 0 and event.ask > 0 and event.bid_size >= 0 and event.ask_size >= 0
        if isinstance(event, Trade):
            assert event.price > 0 and event.size >= 0
        to_json(event)  # what the Kafka sink publishes
    if feed.pending:
        feed.take_requests()
    return "ok"


def still_parses_valid_frames(feed: Feed) -> None:
    """After any fuzzed frames, the real capture still goes through, and a fresh top of book yields its quote."""
    for raw in real_frames(feed.name)[:40]:
        parse_or_bad_frame(feed, json.dumps(raw), fuzzed=False)
    if feed.name == "coinbase":  # a snapshot replaces whatever the fuzzed updates did to the book
        frame = {"type": "snapshot", "product_id": "BTC-USD", "bids": [["60000.01", "0.5"]], "asks": [["60000.02", "2"]]}
    else:  # update ids only grow within a connection; a fuzzed frame may have used a large one
        feed.on_connect()
        frame = {"stream": "lrcbtc@bookTicker", "data": {"u": 7, "s": "LRCBTC", "b": "0.00001", "B": "3",
                                                          "a": "0.00002", "A": "4"}}
    quotes = [e for e in feed.parse(json.dumps(frame), 1) if isinstance(e, Quote)]
    assert len(quotes) == 1 and quotes[0].bid == Decimal(frame.get("bids", [["0.00001"]])[0][0])


@FUZZ
@given(frame=st.text(max_size=200) | json_values.map(json.dumps))
@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
def test_any_text_or_json_parses_or_raises_bad_frame(exchange, frame):
    parse_or_bad_frame(feed_for(exchange), frame)


@FUZZ
@given(frames=st.lists(coinbase_frames, min_size=1, max_size=8))
def test_coinbase_shaped_frames_parse_or_raise_bad_frame_and_the_feed_keeps_working(frames):
    feed = feed_for("coinbase")
    for raw in real_frames("coinbase")[:5]:  # a subscription reply and snapshots: a book to apply changes to
        parse_or_bad_frame(feed, json.dumps(raw), fuzzed=False)
    for frame in frames:
        parse_or_bad_frame(feed, frame)
    still_parses_valid_frames(feed)


@FUZZ
@given(frames=st.lists(binance_frames, min_size=1, max_size=8))
def test_binance_shaped_frames_parse_or_raise_bad_frame_and_the_feed_keeps_working(frames):
    feed = feed_for("binance")
    for frame in frames:
        parse_or_bad_frame(feed, frame)
    still_parses_valid_frames(feed)


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
def test_mutated_real_frames_parse_or_raise_bad_frame_and_the_feed_keeps_working(exchange, data):
    feed = feed_for(exchange)
    for _ in range(data.draw(st.integers(1, 6))):
        parse_or_bad_frame(feed, data.draw(mutated(exchange)))
    still_parses_valid_frames(feed)


def test_fuzz_figures(figures):
    """Runs last in this module: records how many frames went through each parser."""
    figures.update(COUNTS)
    assert sum(COUNTS.values()) > 0
