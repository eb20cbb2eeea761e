"""The Coinbase Exchange market-data feed (`wss://ws-feed.exchange.coinbase.com`), as the emulator speaks it.

The client subscribes; the server answers with every channel the connection now has, then a `snapshot` per product
on `level2`/`level2_batch` and a `last_match` per product on `matches`:

    > {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch", "matches", "heartbeat"]}
    < {"type":"subscriptions","channels":[{"name":"level2_batch","product_ids":["BTC-USD"]},...]}
    < {"type":"snapshot","product_id":"BTC-USD","bids":[["65000.00","0.5"]],"asks":[["65013.01","0.41"]]}
    < {"type":"last_match","trade_id":1001,"maker_order_id":"...","taker_order_id":"...","side":"sell",...}
    < {"type":"l2update","product_id":"BTC-USD","changes":[["buy","65001.00","0.2"]],"time":"2026-...Z"}
    < {"type":"match","trade_id":1002,...,"side":"buy","size":"0.1","price":"65000.00","product_id":"BTC-USD",
       "sequence":50000123,"time":"2026-...Z"}          (side is the MAKER's side)
    < {"type":"heartbeat","last_trade_id":1002,"product_id":"BTC-USD","sequence":50000130,"time":"2026-...Z"}

Errors for bad requests, as Coinbase words them: {"type":"error","message":"Failed to subscribe","reason":"FOO-BAR is
not a valid product"}. Per product, trade ids are consecutive and `sequence` grows with every book change and trade
(as on the full channel), so a producer sees a gap in `trade_id` / `last_trade_id` after a `skip_sequence` fault.
Each model update is sent as its own `l2update` (the real level2_batch merges 50 ms of changes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from arb.logs import log_event
from producers.emulator.faults import MalformedKind
from producers.emulator.market import Top, TradeTick
from producers.emulator.truth import iso_us
from producers.emulator.wire import MALFORMED, QUOTE, TRADE, Client, Counters

log = logging.getLogger("emulator.coinbase")

BOOK_CHANNELS = ("level2", "level2_batch")
TICKER_CHANNELS = ("ticker", "ticker_batch")
EMULATED_CHANNELS = (*BOOK_CHANNELS, "matches", "heartbeat", *TICKER_CHANNELS)
# Channels Coinbase has that the emulator accepts but sends nothing on.
QUIET_CHANNELS = ("status", "full", "user", "level2_50", "auctionfeed", "rfq_matches", "balance")
ZERO = "0.00000000"


class SubscribeError(ValueError):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(reason)
        self.message = message
        self.reason = reason


def error_frame(message: str, reason: str) -> str:
    return json.dumps({"type": "error", "message": message, "reason": reason}, separators=(",", ":"))


def parse_request(text: str | bytes, products: set[str] | None) -> tuple[str, list[tuple[str, list[str]]]]:
    """A client message -> (`subscribe`|`unsubscribe`, [(channel, product_ids)]); raises SubscribeError.

    Accepts the string form (`"channels": ["heartbeat"]` with top-level `product_ids`) and the object form
    (`"channels": [{"name": "ticker", "product_ids": ["ETH-USD"]}]`). `products=None` accepts any product.
    """
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SubscribeError("Malformed JSON", str(exc)) from None
    if not isinstance(msg, dict):
        raise SubscribeError("Failed to subscribe", "message must be a JSON object")
    kind = msg.get("type")
    if kind not in ("subscribe", "unsubscribe"):
        raise SubscribeError("Failed to subscribe", f"{kind} is not a valid type; expected subscribe or unsubscribe")
    top_products = msg.get("product_ids") or []
    channels = msg.get("channels") or []
    if not isinstance(channels, list) or not isinstance(top_products, list):
        raise SubscribeError("Failed to subscribe", "channels and product_ids must be lists")
    if not channels:
        raise SubscribeError("Failed to subscribe", "No channels provided")
    out: list[tuple[str, list[str]]] = []
    for channel in channels:
        if isinstance(channel, str):
            name, ids = channel, top_products
        elif isinstance(channel, dict) and isinstance(channel.get("name"), str):
            name, ids = channel["name"], channel.get("product_ids") or top_products
        else:
            raise SubscribeError("Failed to subscribe", f"{channel!r} is not a valid channel")
        if name not in EMULATED_CHANNELS and name not in QUIET_CHANNELS:
            raise SubscribeError("Failed to subscribe", f"{name} is not a valid channel")
        for product in ids:
            if not isinstance(product, str) or (products is not None and product not in products):
                raise SubscribeError("Failed to subscribe", f"{product} is not a valid product")
        if not ids and kind == "subscribe" and name != "status":
            raise SubscribeError("Failed to subscribe", f"No product ids provided for {name}")
        out.append((name, list(ids)))
    return kind, out


class CoinbaseBook:
    """The level-2 book the emulator publishes for one product, changed only through `apply_top`."""

    def __init__(self, depth: int = 10) -> None:
        self.depth = depth
        self.step: Decimal | None = None  # spacing of the levels `seed` lays out and `apply_top` refills
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def top(self) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
        if not self.bids or not self.asks:
            return None
        bid, ask = max(self.bids), min(self.asks)
        return bid, self.bids[bid], ask, self.asks[ask]

    def seed(self, top: Top, step: Decimal) -> None:
        """Start a book with `depth` levels a side under and over `top`."""
        self.step = step
        self.bids = {top.bid - step * k: top.bid_size * (k + 1) for k in range(self.depth) if top.bid - step * k > 0}
        self.asks = {top.ask + step * k: top.ask_size * (k + 1) for k in range(self.depth)}
        self.bids[top.bid], self.asks[top.ask] = top.bid_size, top.ask_size

    def apply_top(self, top: Top) -> list[tuple[str, Decimal, Decimal]]:
        """Make `top` the best bid and ask: levels better than it go, its levels are set, the book is trimmed to
        `depth` a side. Returns the l2update changes ("buy"/"sell", price, new size; size 0 removes)."""
        changes: list[tuple[str, Decimal, Decimal]] = []
        for price in [p for p in self.bids if p > top.bid]:
            del self.bids[price]
            changes.append(("buy", price, Decimal(0)))
        for price in [p for p in self.asks if p < top.ask]:
            del self.asks[price]
            changes.append(("sell", price, Decimal(0)))
        if self.bids.get(top.bid) != top.bid_size:
            self.bids[top.bid] = top.bid_size
            changes.append(("buy", top.bid, top.bid_size))
        if self.asks.get(top.ask) != top.ask_size:
            self.asks[top.ask] = top.ask_size
            changes.append(("sell", top.ask, top.ask_size))
        if self.step:
            while len(self.bids) < self.depth and min(self.bids) > self.step:
                price = min(self.bids) - self.step
                self.bids[price] = top.bid_size * (len(self.bids) + 1)
                changes.append(("buy", price, self.bids[price]))
            while len(self.asks) < self.depth:
                price = max(self.asks) + self.step
                self.asks[price] = top.ask_size * (len(self.asks) + 1)
                changes.append(("sell", price, self.asks[price]))
        while len(self.bids) > self.depth:
            worst = min(self.bids)
            del self.bids[worst]
            changes.append(("buy", worst, Decimal(0)))
        while len(self.asks) > self.depth:
            worst = max(self.asks)
            del self.asks[worst]
            changes.append(("sell", worst, Decimal(0)))
        return changes

    def snapshot_levels(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = [[f"{p:f}", f"{s:f}"] for p, s in sorted(self.bids.items(), reverse=True)]
        asks = [[f"{p:f}", f"{s:f}"] for p, s in sorted(self.asks.items())]
        return bids, asks


@dataclass
class Product:
    """Everything the feed keeps per product."""

    product_id: str
    book: CoinbaseBook = field(default_factory=CoinbaseBook)
    sequence: int = 0
    trade_id: int = 0
    last_match: str | None = None
    last_match_trade_id: int = 0
    counted_trade_id: int = 0  # the newest trade id already sent (and counted) to some client
    last_price: Decimal | None = None
    volume_24h: Decimal = Decimal("1000")


def _size_str(size: Decimal) -> str:
    return ZERO if size == 0 else f"{size:f}"


class CoinbaseFeed:
    """Subscriptions of every connection and the frames the market publishes to them."""

    exchange = "coinbase"

    def __init__(self, counters: Counters, products: dict[str, Product] | None = None, replay: bool = False) -> None:
        self.counters = counters
        self.products = products or {}
        self.replay = replay  # replaying a capture: client requests are read and otherwise ignored
        self.clients: dict[Client, dict[str, list[str]]] = {}  # client -> channel -> product ids (ordered)
        self._index: dict[tuple[str, str], set[Client]] = {}  # (channel, product) -> subscribed clients

    # --- connections ------------------------------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        client = Client(ws, self.exchange, self.counters)
        self.clients[client] = {}
        writer = asyncio.create_task(client.write_loop())
        log_event(log, "client_connected", peer=client.peer, path=ws.request.path if ws.request else "")
        try:
            async for message in ws:
                if not self.replay:
                    self.on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            client.closed = True
            writer.cancel()
            self._forget(client)
            log_event(log, "client_disconnected", peer=client.peer)

    def _forget(self, client: Client) -> None:
        for channel, ids in self.clients.pop(client, {}).items():
            for product in ids:
                self._index.get((channel, product), set()).discard(client)

    def on_message(self, client: Client, message: str | bytes) -> None:
        try:
            kind, requests = parse_request(message, set(self.products))
        except SubscribeError as exc:
            log_event(log, "bad_request", logging.WARNING, peer=client.peer, reason=exc.reason)
            client.send(error_frame(exc.message, exc.reason))
            return
        subs = self.clients.setdefault(client, {})
        added: list[tuple[str, str]] = []
        for channel, ids in requests:
            if kind == "subscribe":
                current = subs.setdefault(channel, [])
                for product in ids:
                    if product not in current:
                        current.append(product)
                        self._index.setdefault((channel, product), set()).add(client)
                        added.append((channel, product))
            else:
                current = subs.get(channel, [])
                for product in (ids or list(current)):
                    if product in current:
                        current.remove(product)
                        self._index.get((channel, product), set()).discard(client)
                if not current:
                    subs.pop(channel, None)
        reply = {"type": "subscriptions", "channels": [{"name": c, "product_ids": list(p)} for c, p in subs.items()]}
        client.send(json.dumps(reply, separators=(",", ":")))
        for channel, product_id in added:
            product = self.products[product_id]
            if channel in BOOK_CHANNELS:
                self._send_snapshot(client, product)
            elif channel == "matches" and product.last_match is not None:
                # Counted once per trade id, as a producer publishes it: a reconnect's last_match is not a new trade.
                is_new = product.last_match_trade_id > product.counted_trade_id
                product.counted_trade_id = max(product.counted_trade_id, product.last_match_trade_id)
                client.send(product.last_match.replace('"type":"match"', '"type":"last_match"', 1),
                            TRADE if is_new else None, product_id, product.last_match_trade_id if is_new else None)
        if added or kind == "unsubscribe":
            log_event(log, kind, peer=client.peer, channels=",".join(subs), added=len(added))

    def _send_snapshot(self, client: Client, product: Product) -> None:
        bids, asks = product.book.snapshot_levels()
        frame = json.dumps({"type": "snapshot", "product_id": product.product_id, "bids": bids, "asks": asks},
                           separators=(",", ":"))
        client.send(frame, QUOTE if bids and asks else None, product.product_id)

    def subscribers(self, channels: tuple[str, ...], product_id: str) -> set[Client]:
        if len(channels) == 1:
            return self._index.get((channels[0], product_id), set())
        out: set[Client] = set()
        for channel in channels:
            out |= self._index.get((channel, product_id), set())
        return out

    @property
    def connections(self) -> int:
        return len(self.clients)

    # --- the market -------------------------------------------------------------------------------------------

    def publish_quote(self, product_id: str, top: Top, ts_us: int) -> bool:
        """Move the book to `top` and send the l2update; True when the top of book changed."""
        product = self.products[product_id]
        before = product.book.top()
        changes = product.book.apply_top(top)
        if not changes:
            return False
        product.sequence += 1
        after = product.book.top()
        kind = QUOTE if after != before and after is not None else None
        changes_json = ",".join(f'["{side}","{price:f}","{_size_str(size)}"]' for side, price, size in changes)
        frame = (f'{{"type":"l2update","product_id":"{product_id}","changes":[{changes_json}],'
                 f'"time":"{iso_us(ts_us)}"}}')
        for client in self.subscribers(BOOK_CHANNELS, product_id):
            client.send(frame, kind, product_id)
        return kind is not None

    def publish_trade(self, product_id: str, trade: TradeTick, ts_us: int) -> None:
        product = self.products[product_id]
        product.trade_id += 1
        product.sequence += 1
        product.last_price = trade.price
        product.volume_24h += trade.size
        maker_side = "sell" if trade.taker_side == "buy" else "buy"
        time = iso_us(ts_us)
        frame = json.dumps(
            {"type": "match", "trade_id": product.trade_id, "maker_order_id": str(uuid.uuid4()),
             "taker_order_id": str(uuid.uuid4()), "side": maker_side, "size": f"{trade.size:f}",
             "price": f"{trade.price:f}", "product_id": product_id, "sequence": product.sequence, "time": time},
            separators=(",", ":"),
        )
        product.last_match = frame
        product.last_match_trade_id = product.trade_id
        subscribers = self.subscribers(("matches",), product_id)
        if subscribers:
            product.counted_trade_id = product.trade_id
        for client in subscribers:
            client.send(frame, TRADE, product_id, product.trade_id)
        tickers = self.subscribers(TICKER_CHANNELS, product_id)
        if tickers:
            top = product.book.top()
            best_bid, best_bid_size, best_ask, best_ask_size = top if top else (trade.price, 0, trade.price, 0)
            price = f"{trade.price:f}"
            ticker = json.dumps(
                {"type": "ticker", "sequence": product.sequence, "product_id": product_id, "price": price,
                 "open_24h": price, "volume_24h": f"{product.volume_24h:f}", "low_24h": price, "high_24h": price,
                 "volume_30d": f"{product.volume_24h * 30:f}", "best_bid": f"{best_bid:f}",
                 "best_bid_size": f"{best_bid_size:f}", "best_ask": f"{best_ask:f}",
                 "best_ask_size": f"{best_ask_size:f}", "side": trade.taker_side, "time": time,
                 "trade_id": product.trade_id, "last_size": f"{trade.size:f}"},
                separators=(",", ":"),
            )
            for client in tickers:
                client.send(ticker)

    def publish_heartbeats(self, ts_us: int) -> None:
        time = iso_us(ts_us)
        for product_id, product in self.products.items():
            for client in self.subscribers(("heartbeat",), product_id):
                client.send(
                    f'{{"type":"heartbeat","last_trade_id":{product.trade_id},"product_id":"{product_id}",'
                    f'"sequence":{product.sequence},"time":"{time}"}}'
                )

    def skip_sequence(self, product_id: str, by: int) -> None:
        product = self.products[product_id]
        product.trade_id += by
        product.sequence += by

    def malformed_frame(self, variant: MalformedKind, product_id: str, ts_us: int) -> str:
        time = iso_us(ts_us)
        if variant == MalformedKind.BAD_JSON:
            return f'{{"type":"l2update","product_id":"{product_id}","changes":[["buy","6'
        if variant == MalformedKind.UNKNOWN_TYPE:
            return f'{{"type":"mystery","product_id":"{product_id}","time":"{time}"}}'
        if variant == MalformedKind.BAD_PRICE:
            return f'{{"type":"l2update","product_id":"{product_id}","changes":[["buy","abc","1.0"]],"time":"{time}"}}'
        if variant == MalformedKind.NEGATIVE_PRICE:
            return (f'{{"type":"l2update","product_id":"{product_id}","changes":[["sell","-5.00","1.0"]],'
                    f'"time":"{time}"}}')
        return f'{{"type":"l2update","product_id":"XXX-YYY","changes":[["buy","1.00","1.0"]],"time":"{time}"}}'

    def broadcast(self, frame: str, kind: str | None = None, symbol: str | None = None) -> None:
        for client in list(self.clients):
            client.send(frame, kind, symbol)

    def send_malformed(self, variant: MalformedKind, product_id: str, ts_us: int) -> None:
        self.broadcast(self.malformed_frame(variant, product_id, ts_us), MALFORMED)

    def drop_all(self) -> int:
        clients = list(self.clients)
        for client in clients:
            client.abort()
        return len(clients)


def classify_frame(raw: str, books: dict[str, CoinbaseBook], seen_trades: set[tuple[str, int]]) -> tuple[
        str | None, str | None]:
    """For replay counting: (kind, product) of a recorded frame, keeping per-product books from the frames."""
    try:
        msg: dict[str, Any] = json.loads(raw)
    except ValueError:
        return None, None
    kind, product_id = msg.get("type"), msg.get("product_id")
    if not isinstance(product_id, str):
        return None, None
    if kind == "snapshot":
        book = books[product_id] = CoinbaseBook(depth=10**9)
        book.bids = {Decimal(p): Decimal(s) for p, s in msg.get("bids", [])}
        book.asks = {Decimal(p): Decimal(s) for p, s in msg.get("asks", [])}
        return (QUOTE if book.top() else None), product_id
    if kind == "l2update" and product_id in books:
        book = books[product_id]
        before = book.top()
        for side, price, size in msg.get("changes", []):
            levels = book.bids if side == "buy" else book.asks
            if Decimal(size) == 0:
                levels.pop(Decimal(price), None)
            else:
                levels[Decimal(price)] = Decimal(size)
        after = book.top()
        return (QUOTE if after is not None and after != before else None), product_id
    if kind in ("match", "last_match"):
        key = (product_id, msg.get("trade_id"))
        if key in seen_trades:
            return None, product_id
        seen_trades.add(key)
        return TRADE, product_id
    return None, product_id
