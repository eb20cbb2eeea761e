"""Coinbase Exchange feed: level-2 book quotes and match trades.

Messages read (all carry `product_id`, e.g. "BTC-USD"; prices and sizes are decimal strings; times ISO-8601 UTC):

    {"type": "snapshot", "product_id": "BAND-GBP", "bids": [["14.7693", "27.51"], ...], "asks": [["14.8024", "12.77"], ...]}
    {"type": "l2update", "product_id": "NU-GBP", "changes": [["buy", "0.4312", "0.000000"]],
     "time": "2021-04-17T16:43:37.080304Z"}
    {"type": "match", "trade_id": 563679, "side": "sell", "size": "805.131", "price": "0.4393", "product_id": "NU-GBP",
     "sequence": 108779633, "time": "2021-04-17T16:43:46.345172Z", "maker_order_id": "...", "taker_order_id": "..."}
    {"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD", "time": "..."}

`last_match` is a `match` sent once on subscribe. In a match, `side` is the MAKER's order side, so the taker (our
`Trade.side`) is the opposite: "sell" means a resting sell order was lifted by a buyer. Quotes: see producers/book.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple

import orjson

from arbitrage.events import Event, FeedState, Quote, Side, Trade
from arbitrage.symbols import SymbolMap
from producers.book import L2Book, SequenceCheck, Top
from producers.feed import BadFrame, Feed, Gap, integer, iso_to_us, json_object, price, size


# -- raw payloads: typed, immutable, decoded in one place ------------------------------------------------------------


# A price level and a book change are plain tuples (a NamedTuple costs ~0.4 µs each, hundreds per snapshot):
CbLevel = tuple[Decimal, Decimal]  # (price, size)
CbChange = tuple[bool, Decimal, Decimal]  # (is_bid, price, size); size 0 removes the level


class CbSnapshot(NamedTuple):
    product_id: str
    bids: tuple[CbLevel, ...]
    asks: tuple[CbLevel, ...]


class CbL2Update(NamedTuple):
    product_id: str
    changes: tuple[CbChange, ...]
    time_us: int


class CbMatch(NamedTuple):
    product_id: str
    trade_id: int
    maker_side: str  # "buy" | "sell": the resting order's side
    price: Decimal
    size: Decimal
    sequence: int
    time_us: int


class CbHeartbeat(NamedTuple):
    product_id: str
    sequence: int
    last_trade_id: int
    time_us: int


_ZERO = Decimal(0)
# l2update `changes` side: "buy" = a bid level, "sell" = an ask level.
_BOOK_SIDE = {"buy": True, "sell": False}
# match `side` is the maker's; the taker did the opposite.
_TAKER_SIDE = {"buy": Side.SELL, "sell": Side.BUY}


def _levels(raw: Any, name: str) -> tuple[CbLevel, ...]:
    if type(raw) is not list:
        raise BadFrame(f"snapshot {name} is not a list")
    try:
        return tuple((price(p), size(s)) for p, s, *_ in raw)
    except BadFrame:
        raise
    except (TypeError, ValueError):
        raise BadFrame(f"snapshot {name}: level is not [price, size]") from None


def decode_snapshot(msg: dict) -> CbSnapshot:
    return CbSnapshot(msg["product_id"], _levels(msg.get("bids"), "bids"), _levels(msg.get("asks"), "asks"))


def decode_l2update(msg: dict) -> CbL2Update:
    raw = msg["changes"]
    if type(raw) is not list:
        raise BadFrame("l2update changes is not a list")
    changes = []
    for change in raw:
        if type(change) is not list or len(change) != 3:
            raise BadFrame("l2update change is not [side, price, size]")
        side, p, s = change
        is_bid = _BOOK_SIDE.get(side)
        if is_bid is None:
            raise BadFrame(f"l2update side {side!r}")
        # Inlined `price(p)` / `size(s)` (the hot loop of a Coinbase producer); they name the problem on failure.
        try:
            level_price, level_size = Decimal(p), Decimal(s)
        except (InvalidOperation, TypeError, ValueError):  # ValueError: Decimal() reads a list as a tuple form
            level_price = level_size = None
        if (type(p) is not str or type(s) is not str or level_price is None or not level_price.is_finite()
                or not level_size.is_finite() or level_price <= _ZERO or level_size < _ZERO):
            price(p)
            size(s)
        changes.append((is_bid, level_price, level_size))
    return CbL2Update(msg["product_id"], tuple(changes), iso_to_us(msg["time"]))


def decode_match(msg: dict) -> CbMatch:
    maker_side = msg["side"]
    if maker_side not in _TAKER_SIDE:
        raise BadFrame(f"match side {maker_side!r}")
    return CbMatch(
        msg["product_id"],
        integer(msg["trade_id"], "trade_id"),
        maker_side,
        price(msg["price"]),
        price(msg["size"], "size"),
        integer(msg["sequence"], "sequence"),
        iso_to_us(msg["time"]),
    )


def decode_heartbeat(msg: dict) -> CbHeartbeat:
    return CbHeartbeat(
        msg["product_id"],
        integer(msg["sequence"], "sequence"),
        integer(msg["last_trade_id"], "last_trade_id"),
        iso_to_us(msg["time"]),
    )


class _Product:
    """Per-product state: the book, the last emitted top, the gap check of the current connection (which carries the
    last trade id accounted for into the next connection)."""

    __slots__ = ("symbol", "venue_symbol", "book", "top", "check")

    def __init__(self, symbol: str, venue_symbol: str) -> None:
        self.symbol = symbol
        self.venue_symbol = venue_symbol
        self.book: L2Book | None = None  # None until a snapshot (and again after a gap)
        self.top: Top | None = None
        self.check = SequenceCheck()


class Coinbase(Feed):
    """Coinbase Exchange WebSocket feed (wss://ws-feed.exchange.coinbase.com)."""

    name: ClassVar[str] = "coinbase"
    default_url: ClassVar[str] = "wss://ws-feed.exchange.coinbase.com"
    subscribes_by_url: ClassVar[bool] = False
    # level2_batch: the public level-2 channel (level2 itself needs authentication today), same messages, batched 50 ms.
    book_channel: ClassVar[str] = "level2_batch"
    channels: ClassVar[tuple[str, ...]] = ("level2_batch", "matches", "heartbeat")
    # Messages that carry no quote or trade: skipped quietly (no dead letter).
    quiet_types: ClassVar[frozenset[str]] = frozenset(
        {"subscriptions", "ticker", "status", "received", "open", "done", "change", "activate"}
    )

    def __init__(self, markets: SymbolMap, symbols: Sequence[str] = ()) -> None:
        super().__init__(markets, symbols)
        self._products: dict[str, _Product] = {}
        self._resync_wanted: set[str] = set()  # symbols whose book is dropped until a fresh snapshot
        self._subscribed_reported = False  # one SUBSCRIBED status per connection
        self._handlers = {
            "l2update": self._on_l2update,
            "snapshot": self._on_snapshot,
            "match": self._on_match,
            "last_match": self._on_match,
            "heartbeat": self._on_heartbeat,
            "subscriptions": self._on_subscriptions,
            "error": self._on_error,
        }

    def product_ids(self) -> list[str]:
        return [self.markets.to_venue(s) for s in self.symbols]

    def subscribe_messages(self) -> list[str]:
        msg = {"type": "subscribe", "product_ids": self.product_ids(), "channels": list(self.channels)}
        return [orjson.dumps(msg).decode()]

    def resubscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Unsubscribe and subscribe the book channel again: Coinbase answers a subscribe with a fresh snapshot."""
        ids = [self.markets.to_venue(s) for s in symbols]
        return [
            orjson.dumps({"type": kind, "product_ids": ids, "channels": [self.book_channel]}).decode()
            for kind in ("unsubscribe", "subscribe")
        ]

    def on_connect(self) -> None:
        super().on_connect()
        self._resync_wanted.clear()  # every subscribed product gets a snapshot on the new connection
        self._subscribed_reported = False
        for product in self._products.values():
            product.book = None
            product.top = None
            product.check = SequenceCheck(product.check.last_trade_id)

    def awaiting_snapshot(self) -> list[str]:
        """Symbols whose book is being rebuilt after a gap."""
        return sorted(self._resync_wanted)

    # -- parse ----------------------------------------------------------------------------------------------------

    def parse(self, frame: str, recv_ts_us: int) -> list[Event]:
        """One text frame -> the quotes, trades and feed-status events it implies (raises BadFrame)."""
        msg = json_object(frame)
        kind = msg.get("type")
        if type(kind) is not str and kind is not None:  # a list or object here is unhashable (found by fuzzing)
            raise BadFrame(f"unknown message type {kind!r}")
        handler = self._handlers.get(kind)
        if handler is None:
            if kind in self.quiet_types:
                return []
            raise BadFrame(f"unknown message type {kind!r}")
        try:
            return handler(msg, recv_ts_us)
        except KeyError as exc:
            raise BadFrame(f"{kind} without {exc.args[0]!r}") from None
        except TypeError as exc:
            raise BadFrame(f"{kind}: malformed ({exc})") from None

    def _product(self, product_id: Any) -> _Product:
        product = self._products.get(product_id)
        if product is None:
            symbol = self.canonical(product_id)
            product = self._products[product_id] = _Product(symbol, product_id)
        return product

    def _quote_if_top_changed(self, product: _Product, time_us: int | None, recv_ts_us: int, out: list[Event]) -> None:
        top = product.book.top()  # type: ignore[union-attr]
        if top is None or top == product.top:
            return
        product.top = top
        bid, bid_size, ask, ask_size = top
        out.append(
            Quote(self.name, product.symbol, product.venue_symbol, bid, bid_size, ask, ask_size, time_us, recv_ts_us, None)
        )

    def _on_snapshot(self, msg: dict, recv_ts_us: int) -> list[Event]:
        snap = decode_snapshot(msg)
        product = self._product(snap.product_id)
        out: list[Event] = []
        self._resync_wanted.discard(product.symbol)
        self._resynced(product.symbol, recv_ts_us, out)
        product.book = L2Book()
        product.book.load(snap.bids, snap.asks)
        product.top = None
        # A snapshot has no time: the quote it yields has no exchange time (ts_event_us null, like Binance spot).
        self._quote_if_top_changed(product, None, recv_ts_us, out)
        return out

    def _on_l2update(self, msg: dict, recv_ts_us: int) -> list[Event]:
        update = decode_l2update(msg)  # every change is validated before any is applied
        product = self._product(update.product_id)
        book = product.book
        if book is None:
            return []  # no snapshot yet (or rebuilding after a gap): nothing to apply the change to
        for is_bid, level_price, level_size in update.changes:
            book.apply(is_bid, level_price, level_size)
        out: list[Event] = []
        self._quote_if_top_changed(product, update.time_us, recv_ts_us, out)
        return out

    def _on_match(self, msg: dict, recv_ts_us: int) -> list[Event]:
        match = decode_match(msg)
        product = self._product(match.product_id)
        check = product.check
        across_reconnect = check.carried  # e.g. the `last_match` sent on subscribe after a reconnect
        is_new, gap = check.match(match.trade_id, match.sequence)
        out: list[Event] = []
        if gap is not None and across_reconnect:
            # Trades lost while the connection was down: reported, but this connection's book is sound.
            out.append(self._gap_status(gap, recv_ts_us, product.symbol))
        elif gap is not None:
            self._gap(product, gap, recv_ts_us, out)
        if is_new:
            out.append(
                Trade(
                    self.name,
                    product.symbol,
                    product.venue_symbol,
                    match.price,
                    match.size,
                    _TAKER_SIDE[match.maker_side],
                    str(match.trade_id),
                    match.time_us,
                    recv_ts_us,
                    match.sequence,
                )
            )
        return out

    def _on_heartbeat(self, msg: dict, recv_ts_us: int) -> list[Event]:
        beat = decode_heartbeat(msg)
        product = self._product(beat.product_id)
        gap = product.check.heartbeat(beat.last_trade_id, beat.sequence)
        out: list[Event] = []
        if gap is not None:
            self._gap(product, gap, recv_ts_us, out)
        return out

    def _on_subscriptions(self, msg: dict, recv_ts_us: int) -> list[Event]:
        if self._subscribed_reported:
            return []
        self._subscribed_reported = True
        return [self._status(FeedState.SUBSCRIBED, ",".join(self.channels), recv_ts_us)]

    def _on_error(self, msg: dict, recv_ts_us: int) -> list[Event]:
        raise BadFrame(f"exchange error: {msg.get('message')!r} {msg.get('reason', '')!r}")

    def _gap(self, product: _Product, gap: Gap, recv_ts_us: int, out: list[Event]) -> None:
        """Report the gap, drop the product's book and ask the connection for a fresh snapshot."""
        out.append(self._gap_status(gap, recv_ts_us, product.symbol))
        product.book = None
        product.top = None
        self._needs_resync.add(product.symbol)
        self._resync_wanted.add(product.symbol)
        self._request_resubscribe(product.symbol)

