"""The Coinbase level-2 book (aggregated price levels), kept from `snapshot` + `l2update`, and its gap rule.

A book answers one question for the producer: did the top (best bid, its size, best ask, its size) change with this
message? Levels are a dict price -> size plus a sorted list of prices per side, so an update is a dict write and a
bisect, and the top is the end of a list.

Gap rule. The level2 / level2_batch channel carries no sequence numbers, so a lost book message cannot be seen on the
book itself. What does carry numbers, per product, are `match` / `last_match` (`trade_id`, consecutive per product,
and `sequence`) and `heartbeat` (`sequence`, `last_trade_id`). All share the product's one connection, so a loss
there means the connection lost messages and the book can no longer be trusted. `SequenceCheck` reports a gap when:
  1. a `match` trade id is more than one above the last trade id accounted for (trades were skipped);
  2. a `heartbeat` says `last_trade_id` is above the last trade id seen (a match was lost; only once a trade was seen
     on this connection);
  3. a `sequence` (match or heartbeat) is lower than the last one seen for the product (out of order / replayed).
`sequence` values are not consecutive between the messages we subscribe to (the product's sequence counts every
order-book event), so a jump in `sequence` alone is not a gap. On a gap the product's book is dropped and the
producer resubscribes the product for a fresh snapshot; quotes resume from that snapshot.

Across a reconnect the last trade id is carried into the new connection's check (the sequence is not): the first
match there (the `last_match` Coinbase sends on subscribe, or a newer one) shows the trades lost while the connection
was down. That gap is reported too, but the book is not dropped: it comes from the new connection's snapshot.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from decimal import Decimal

from producers.feed import Gap, trade_id_gap

Top = tuple[Decimal, Decimal, Decimal, Decimal]  # bid, bid_size, ask, ask_size


class _Side:
    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.levels: dict[Decimal, Decimal] = {}
        self.prices: list[Decimal] = []  # ascending

    def load(self, levels: Iterable[tuple[Decimal, Decimal]]) -> None:
        self.levels = {p: s for p, s in levels if s > 0}
        self.prices = sorted(self.levels)

    def set(self, price: Decimal, size: Decimal) -> None:
        levels = self.levels
        if size > 0:
            if price not in levels:
                insort(self.prices, price)
            levels[price] = size
        elif price in levels:
            del levels[price]
            prices = self.prices
            del prices[bisect_left(prices, price)]


class L2Book:
    """One product's aggregated book."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids = _Side()
        self.asks = _Side()

    def load(self, bids: Iterable[tuple[Decimal, Decimal]], asks: Iterable[tuple[Decimal, Decimal]]) -> None:
        """Replace everything with a snapshot's levels."""
        self.bids.load(bids)
        self.asks.load(asks)

    def apply(self, is_bid: bool, price: Decimal, size: Decimal) -> None:
        """One change: size 0 removes the level, anything else sets it."""
        (self.bids if is_bid else self.asks).set(price, size)

    def top(self) -> Top | None:
        """(bid, bid_size, ask, ask_size), or None while either side is empty."""
        bid_prices, ask_prices = self.bids.prices, self.asks.prices
        if not bid_prices or not ask_prices:
            return None
        bid, ask = bid_prices[-1], ask_prices[0]
        return bid, self.bids.levels[bid], ask, self.asks.levels[ask]

    def depth(self) -> tuple[int, int]:
        return len(self.bids.prices), len(self.asks.prices)


class SequenceCheck:
    """The gap rule above, for one product on one connection."""

    __slots__ = ("last_trade_id", "last_sequence", "carried")

    def __init__(self, last_trade_id: int | None = None) -> None:
        self.last_trade_id = last_trade_id  # from the previous connection, if any
        self.last_sequence: int | None = None
        self.carried = last_trade_id is not None  # until this connection's first match

    def _sequence(self, sequence: int) -> Gap | None:
        last = self.last_sequence
        self.last_sequence = sequence if last is None or sequence > last else last
        if last is not None and sequence < last:
            return Gap(f"sequence {sequence} after {last}")
        return None

    def match(self, trade_id: int, sequence: int) -> tuple[bool, Gap | None]:
        """(is this a new trade, the gap or None)."""
        last, carried = self.last_trade_id, self.carried
        self.carried = False
        if last is not None and trade_id <= last:
            return False, None  # the same trade again (e.g. last_match after a resubscribe): one event per trade id
        self.last_trade_id = trade_id
        gap = self._sequence(sequence)
        return True, trade_id_gap("trade_id", trade_id, last, carried) or gap

    def heartbeat(self, last_trade_id: int, sequence: int) -> Gap | None:
        gap = self._sequence(sequence)
        last = self.last_trade_id
        if last is not None and not self.carried and last_trade_id > last:
            self.last_trade_id = last_trade_id
            gap = Gap(f"heartbeat last_trade_id {last_trade_id} after trade {last} ({last_trade_id - last} missed)",
                      last + 1, last_trade_id)
        return gap
