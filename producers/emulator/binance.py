"""Binance spot market streams (`wss://stream.binance.com:9443`), as the emulator speaks them.

Connect to `/stream?streams=btcusdt@bookTicker/btcusdt@trade` (combined: every frame wrapped as
`{"stream": ..., "data": ...}`) or `/ws/btcusdt@bookTicker` (raw payloads), and (un)subscribe live with
`{"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 1}` -> `{"result":null,"id":1}`:

    {"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"65000.01000000","B":"0.41000000",
     "a":"65000.02000000","A":"1.20000000"}}                                   (spot bookTicker: no event time)
    {"stream":"btcusdt@trade","data":{"e":"trade","E":1763771234567,"s":"BTCUSDT","t":12345,"p":"65000.01000000",
     "q":"0.01000000","T":1763771234567,"m":true,"M":true}}              (m: the buyer was the maker = taker sold)
    {"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":...,"s":"BTCUSDT","a":..,"p":..,"q":..,"f":..,"l":..,
     "T":..,"m":..,"M":true}}
    {"e":"serverShutdown","E":1763771234567}                                  (then the connection closes)

The server pings (websockets ping frames, every 20 s by default) and closes a connection whose pong is late.
Stream names are lower case; streams the emulator does not model (depth, kline, ...) are accepted and stay quiet.
Bad method frames get Binance's error form: {"error":{"code":2,"msg":"Invalid request: ..."},"id":1}.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from arb.logs import log_event
from producers.emulator.faults import MalformedKind
from producers.emulator.market import Top, TradeTick
from producers.emulator.wire import MALFORMED, QUOTE, TRADE, Client, Counters

log = logging.getLogger("emulator.binance")

MODELLED = ("bookTicker", "trade", "aggTrade")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


class BadPath(ValueError):
    pass


def parse_path(path: str) -> tuple[bool, list[str]]:
    """`/stream?streams=a/b` -> (True, [a, b]); `/ws/a` -> (False, [a]); `/ws`, `/stream` -> no streams yet."""
    parts = urlsplit(path)
    if parts.path in ("/stream", "/stream/"):
        streams = parse_qs(parts.query).get("streams", [""])[0]
        return True, [s for s in streams.split("/") if s]
    if parts.path == "/ws" or parts.path.startswith("/ws/"):
        return False, [s for s in parts.path[len("/ws"):].split("/") if s]
    raise BadPath(parts.path)


def error_frame(code: int, msg: str, request_id: object) -> str:
    return json.dumps({"error": {"code": code, "msg": msg}, "id": request_id}, separators=(",", ":"))


@dataclass
class Symbol:
    venue_id: str  # BTCUSDT
    update_id: int = 400_000_000
    trade_id: int = 3_000_000
    agg_id: int = 2_000_000


class BinanceClient(Client):
    def __init__(self, *args, combined: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.combined = combined
        self.streams: list[str] = []


class BinanceFeed:
    exchange = "binance"

    def __init__(self, counters: Counters, symbols: dict[str, Symbol] | None = None, replay: bool = False) -> None:
        self.counters = counters
        self.symbols = symbols or {}
        self.replay = replay
        self.clients: set[BinanceClient] = set()
        self._index: dict[str, set[BinanceClient]] = {}
        self.shutdown_grace_s = 1.0

    # --- connections ------------------------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse URLs Binance has no endpoint for (404), before the WebSocket handshake."""
        try:
            parse_path(request.path)
        except BadPath:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        combined, streams = parse_path(ws.request.path)
        client = BinanceClient(ws, self.exchange, self.counters, combined=combined)
        self.clients.add(client)
        self._subscribe(client, streams)
        writer = asyncio.create_task(client.write_loop())
        log_event(log, "client_connected", peer=client.peer, path=ws.request.path, streams=len(streams))
        try:
            async for message in ws:
                self.on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            client.closed = True
            writer.cancel()
            self.clients.discard(client)
            for stream in client.streams:
                self._index.get(stream, set()).discard(client)
            log_event(log, "client_disconnected", peer=client.peer)

    def _subscribe(self, client: BinanceClient, streams: list[str]) -> None:
        for stream in streams:
            if stream not in client.streams:
                client.streams.append(stream)
                self._index.setdefault(stream, set()).add(client)
            symbol, _, kind = stream.partition("@")
            if kind not in MODELLED or symbol.upper() not in self.symbols or symbol != symbol.lower():
                if not self.replay:
                    log_event(log, "quiet_stream", logging.WARNING, stream=stream, reason="not modelled")

    def _unsubscribe(self, client: BinanceClient, streams: list[str]) -> None:
        for stream in streams:
            if stream in client.streams:
                client.streams.remove(stream)
                self._index.get(stream, set()).discard(client)

    def on_message(self, client: BinanceClient, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
        except (ValueError, UnicodeDecodeError) as exc:
            client.send(error_frame(3, f"Invalid JSON: {exc}", None))
            return
        if not isinstance(msg, dict):
            client.send(error_frame(3, "Invalid JSON: expected an object", None))
            return
        request_id = msg.get("id")
        method, params = msg.get("method"), msg.get("params", [])
        if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
            client.send(error_frame(2, "Invalid request: request ID must be an unsigned integer or a string", None))
            return
        if method not in METHODS:
            client.send(error_frame(2, f"Invalid request: unknown variant `{method}`, expected one of "
                                       f"`{'`, `'.join(METHODS)}`", request_id))
            return
        if not isinstance(params, list) or not all(isinstance(p, (str, bool)) for p in params):
            client.send(error_frame(2, "Invalid request: params must be a list of strings", request_id))
            return
        result: object = None
        if method == "SUBSCRIBE":
            self._subscribe(client, [str(p) for p in params])
        elif method == "UNSUBSCRIBE":
            self._unsubscribe(client, [str(p) for p in params])
        elif method == "LIST_SUBSCRIPTIONS":
            result = list(client.streams)
        elif method == "SET_PROPERTY":
            if len(params) != 2 or params[0] != "combined" or not isinstance(params[1], bool):
                client.send(error_frame(2, "Invalid request: invalid property", request_id))
                return
            client.combined = params[1]
        elif method == "GET_PROPERTY":
            if params != ["combined"]:
                client.send(error_frame(2, "Invalid request: invalid property", request_id))
                return
            result = client.combined
        client.send(json.dumps({"result": result, "id": request_id}, separators=(",", ":")))
        log_event(log, "method", peer=client.peer, method=method, params=len(params))

    @property
    def connections(self) -> int:
        return len(self.clients)

    # --- the market -------------------------------------------------------------------------------------------

    def _publish(self, stream: str, data: str, kind: str | None, venue_id: str, trade_id: int | None = None) -> None:
        clients = self._index.get(stream)
        if not clients:
            return
        wrapped = None
        for client in clients:
            if client.combined:
                wrapped = wrapped or f'{{"stream":"{stream}","data":{data}}}'
                client.send(wrapped, kind, venue_id, trade_id)
            else:
                client.send(data, kind, venue_id, trade_id)

    def publish_quote(self, venue_id: str, top: Top) -> None:
        symbol = self.symbols[venue_id]
        symbol.update_id += 1
        data = (f'{{"u":{symbol.update_id},"s":"{venue_id}","b":"{top.bid:.8f}","B":"{top.bid_size:.8f}",'
                f'"a":"{top.ask:.8f}","A":"{top.ask_size:.8f}"}}')
        self._publish(f"{venue_id.lower()}@bookTicker", data, QUOTE, venue_id)

    def publish_trade(self, venue_id: str, trade: TradeTick, ts_us: int) -> None:
        symbol = self.symbols[venue_id]
        symbol.trade_id += 1
        symbol.agg_id += 1
        ms = ts_us // 1000
        buyer_is_maker = "true" if trade.taker_side == "sell" else "false"
        price, qty = f"{trade.price:.8f}", f"{trade.size:.8f}"
        lower = venue_id.lower()
        self._publish(
            f"{lower}@trade",
            f'{{"e":"trade","E":{ms},"s":"{venue_id}","t":{symbol.trade_id},"p":"{price}","q":"{qty}","T":{ms},'
            f'"m":{buyer_is_maker},"M":true}}',
            TRADE, venue_id, symbol.trade_id,
        )
        self._publish(
            f"{lower}@aggTrade",
            f'{{"e":"aggTrade","E":{ms},"s":"{venue_id}","a":{symbol.agg_id},"p":"{price}","q":"{qty}",'
            f'"f":{symbol.trade_id},"l":{symbol.trade_id},"T":{ms},"m":{buyer_is_maker},"M":true}}',
            TRADE, venue_id, symbol.agg_id,
        )

    def skip_sequence(self, venue_id: str, by: int) -> None:
        symbol = self.symbols[venue_id]
        symbol.update_id += by
        symbol.trade_id += by
        symbol.agg_id += by

    def malformed_payload(self, variant: MalformedKind, venue_id: str) -> tuple[str, str]:
        """(stream, payload) of one malformed frame; `bad_json` returns the whole broken text as payload."""
        lower = venue_id.lower()
        symbol = self.symbols.get(venue_id)
        u = symbol.update_id if symbol else 1
        if variant == MalformedKind.BAD_JSON:
            return f"{lower}@bookTicker", f'{{"u":{u},"s":"{venue_id}","b":"1.0'
        if variant == MalformedKind.UNKNOWN_TYPE:
            return f"{lower}@mystery", f'{{"e":"mystery","E":1,"s":"{venue_id}"}}'
        if variant == MalformedKind.BAD_PRICE:
            return f"{lower}@bookTicker", f'{{"u":{u},"s":"{venue_id}","b":"abc","B":"1.0","a":"2.0","A":"1.0"}}'
        if variant == MalformedKind.NEGATIVE_PRICE:
            return f"{lower}@bookTicker", f'{{"u":{u},"s":"{venue_id}","b":"-1.0","B":"1.0","a":"2.0","A":"1.0"}}'
        return "xxxyyy@bookTicker", f'{{"u":{u},"s":"XXXYYY","b":"1.0","B":"1.0","a":"2.0","A":"1.0"}}'

    def send_malformed(self, variant: MalformedKind, venue_id: str) -> None:
        stream, payload = self.malformed_payload(variant, venue_id)
        for client in list(self.clients):
            if variant == MalformedKind.BAD_JSON:
                text = f'{{"stream":"{stream}","data":{payload}' if client.combined else payload
            else:
                text = f'{{"stream":"{stream}","data":{payload}}}' if client.combined else payload
            client.send(text, MALFORMED)

    def broadcast(self, frame: str, kind: str | None = None, symbol: str | None = None) -> None:
        for client in list(self.clients):
            client.send(frame, kind, symbol)

    def drop_all(self) -> int:
        clients = list(self.clients)
        for client in clients:
            client.abort()
        return len(clients)

    async def server_shutdown(self, ts_us: int, grace_s: float) -> int:
        """Send `serverShutdown` to every connection, then close them after `grace_s`."""
        clients = list(self.clients)
        for client in clients:
            client.send(f'{{"e":"serverShutdown","E":{ts_us // 1000}}}')
        await asyncio.sleep(grace_s)
        for client in clients:
            if not client.closed:
                await client.close(1001, "server shutdown")
        return len(clients)


def classify_frame(raw: str) -> tuple[str | None, str | None]:
    """For replay counting: (kind, venue symbol) of a recorded Binance frame."""
    try:
        msg = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(msg, dict):
        return None, None
    data = msg.get("data", msg) if "stream" in msg else msg
    if not isinstance(data, dict):
        return None, None
    symbol = data.get("s")
    if data.get("e") in ("trade", "aggTrade"):
        return TRADE, symbol
    if "u" in data and "b" in data and "a" in data and "e" not in data:
        return QUOTE, symbol
    return None, symbol
