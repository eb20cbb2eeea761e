"""Binance spot feed: `@bookTicker` quotes and `@trade` / `@aggTrade` trades over combined streams.

Combined streams wrap every payload as `{"stream": "<symbol>@<channel>", "data": {...}}`. Payloads read:

    bookTicker: {"u": 499869768, "s": "NKNUSDT", "b": "0.35210000", "B": "672.00000000", "a": "0.35260000",
                 "A": "3199.00000000"}                                 (spot: no event time)
    trade:      {"e": "trade", "E": 1633998523963, "s": "NKNUSDT", "t": 19862790, "p": "0.35280000", "q": "58.00000000",
                 "T": 1633998523963, "m": false, "M": true}
    aggTrade:   {"e": "aggTrade", "E": 1633998523963, "s": "NKNUSDT", "a": 15683430, "p": "0.35280000",
                 "q": "58.00000000", "f": 19862790, "l": 19862790, "T": 1633998523963, "m": false, "M": true}

`m` is "the buyer is the maker": m=true means a resting buy order was hit, so the taker SOLD.

Trade ids are consecutive per symbol and channel. The last one published is kept across reconnects (for the life of
the process), so the first trade on a new connection shows the trades lost while it was down: a `gap` status with
the missed ids, like a skip within a connection. bookTicker is stateless: nothing to rebuild after either.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar, NamedTuple

from arbitrage.events import Event, Quote, Side, Trade
from arbitrage.symbols import SymbolMap
from producers.feed import BadFrame, Feed, integer, json_object, ms_to_us, price, size, trade_id_gap


class BnBookTicker(NamedTuple):
    # Venue field names, decoded here and nowhere else:
    #   u = order-book update id, s = symbol, b = best bid price, B = best bid qty, a = best ask price, A = best ask qty
    update_id: int
    symbol: str
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal


class BnTrade(NamedTuple):
    # trade:    t = trade id; aggTrade: a = aggregate trade id (f/l = first/last trade id in it)
    # both:     s = symbol, p = price, q = quantity, T = trade time (ms), m = buyer is maker
    trade_id: int
    symbol: str
    price: Decimal
    size: Decimal
    trade_time_us: int
    buyer_is_maker: bool


def decode_book_ticker(data: dict) -> BnBookTicker:
    return BnBookTicker(
        integer(data["u"], "u"),
        data["s"],
        price(data["b"], "bid"),
        size(data["B"], "bid size"),
        price(data["a"], "ask"),
        size(data["A"], "ask size"),
    )


def decode_trade(data: dict, id_field: str) -> BnTrade:
    buyer_is_maker = data["m"]
    if type(buyer_is_maker) is not bool:
        raise BadFrame(f"m is not a boolean: {buyer_is_maker!r}")
    return BnTrade(
        integer(data[id_field], id_field),
        data["s"],
        price(data["p"]),
        price(data["q"], "size"),
        ms_to_us(data["T"]),
        buyer_is_maker,
    )


class Binance(Feed):
    """Binance spot combined streams (wss://stream.binance.com:9443/stream?streams=...)."""

    name: ClassVar[str] = "binance"
    default_url: ClassVar[str] = "wss://stream.binance.com:9443"
    subscribes_by_url: ClassVar[bool] = True
    quote_channel: ClassVar[str] = "bookTicker"
    trade_channel: ClassVar[str] = "trade"  # one event per trade; "aggTrade" is parsed too
    # A connection is cut at 24 h; we leave a little earlier on our own terms.
    max_connection_age_s: ClassVar[float] = 23.5 * 3600
    # Stream channels that carry no quote or trade: skipped quietly.
    quiet_channels: ClassVar[frozenset[str]] = frozenset(
        {"depth", "depth5", "depth10", "depth20", "kline", "ticker", "miniTicker", "avgPrice", "rollingWindow"}
    )

    def __init__(self, markets: SymbolMap, symbols: Sequence[str] = ()) -> None:
        super().__init__(markets, symbols)
        self._last_update_id: dict[str, int] = {}  # symbol -> last bookTicker u on this connection
        self._last_trade_id: dict[tuple[str, str], int] = {}  # (symbol, channel) -> last trade / agg id, kept
        self._traded: set[tuple[str, str]] = set()  # (symbol, channel) with a trade on this connection
        self._handlers = {
            "bookTicker": self._on_book_ticker,
            "trade": self._on_trade,
            "aggTrade": self._on_agg_trade,
        }

    def streams(self) -> list[str]:
        names = []
        for symbol in self.symbols:
            venue = self.markets.to_venue(symbol).lower()
            names += [f"{venue}@{self.quote_channel}", f"{venue}@{self.trade_channel}"]
        return names

    def url(self, base: str | None = None) -> str:
        """The combined-stream URL under `base` (default the real endpoint): the URL is the subscription."""
        return f"{(base or self.default_url).rstrip('/')}/stream?streams={'/'.join(self.streams())}"

    def on_connect(self) -> None:
        super().on_connect()
        self._last_update_id.clear()
        self._traded.clear()

    def parse(self, frame: str, recv_ts_us: int) -> list[Event]:
        """One text frame -> the quotes, trades and feed-status events it implies (raises BadFrame)."""
        msg = json_object(frame)
        stream = msg.get("stream")
        data = msg.get("data")
        if type(stream) is not str or type(data) is not dict:
            return self._parse_control(msg)
        channel = stream.partition("@")[2]
        handler = self._handlers.get(channel)
        if handler is None:
            if channel.partition("@")[0].partition("_")[0] in self.quiet_channels:
                return []  # depth@100ms, kline_1m, ...
            if data.get("e") == "serverShutdown":
                return self._server_shutdown()
            raise BadFrame(f"unknown stream {stream!r}")
        try:
            return handler(data, recv_ts_us)
        except KeyError as exc:
            raise BadFrame(f"{channel} without {exc.args[0]!r}") from None

    def _parse_control(self, msg: dict) -> list[Event]:
        """Frames outside the stream envelope: subscription replies and the server-shutdown notice."""
        if "result" in msg and "id" in msg:
            return []  # reply to a SUBSCRIBE / LIST_SUBSCRIPTIONS request
        event = msg.get("event") if isinstance(msg.get("event"), dict) else msg
        if event.get("e") == "serverShutdown":
            return self._server_shutdown()
        if "code" in msg and "msg" in msg:
            raise BadFrame(f"exchange error {msg['code']}: {msg['msg']!r}")
        raise BadFrame("not a combined-stream message")

    def _server_shutdown(self) -> list[Event]:
        # Binance will close the connection shortly: reconnect now, on our terms.
        self._request_reconnect("serverShutdown")
        return []

    def _on_book_ticker(self, data: dict, recv_ts_us: int) -> list[Event]:
        tick = decode_book_ticker(data)
        symbol = self.canonical(tick.symbol)
        last = self._last_update_id.get(symbol)
        if last is not None and tick.update_id <= last:
            return []  # one quote per update id
        self._last_update_id[symbol] = tick.update_id
        out: list[Event] = []
        if self._needs_resync or symbol not in self._seen:
            self._resynced(symbol, recv_ts_us, out)
        out.append(
            Quote(self.name, symbol, tick.symbol, tick.bid, tick.bid_size, tick.ask, tick.ask_size, None, recv_ts_us,
                  tick.update_id)
        )
        return out

    def _on_trade(self, data: dict, recv_ts_us: int) -> list[Event]:
        return self._trade(decode_trade(data, "t"), "trade", recv_ts_us)

    def _on_agg_trade(self, data: dict, recv_ts_us: int) -> list[Event]:
        return self._trade(decode_trade(data, "a"), "aggTrade", recv_ts_us)

    def _trade(self, trade: BnTrade, channel: str, recv_ts_us: int) -> list[Event]:
        symbol = self.canonical(trade.symbol)
        key = (symbol, channel)
        last = self._last_trade_id.get(key)
        if last is not None and trade.trade_id <= last:
            return []  # one event per trade id
        self._last_trade_id[key] = trade.trade_id
        out: list[Event] = []
        across_reconnect = key not in self._traded
        if across_reconnect:
            self._traded.add(key)
        gap = trade_id_gap(f"{channel} id", trade.trade_id, last, across_reconnect)
        if gap is not None:
            out.append(self._gap_status(gap, recv_ts_us, symbol))
        side = Side.SELL if trade.buyer_is_maker else Side.BUY
        out.append(
            Trade(self.name, symbol, trade.symbol, trade.price, trade.size, side, str(trade.trade_id),
                  trade.trade_time_us, recv_ts_us, trade.trade_id)
        )
        return out
