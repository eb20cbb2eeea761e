"""Normalized market events: the one schema every exchange module produces and every consumer reads.

On the wire (Kafka values, `arb normalize` output) an event is one JSON object. Prices and sizes are decimal strings,
timestamps are integer microseconds since the Unix epoch (Spark's timestamp precision), in two fields:
`ts_event_us` (the exchange's own time, null where the exchange gives none, e.g. Binance spot bookTicker) and
`ts_recv_us` (when our process received the frame). `seq` is the exchange's sequence / update id.

    {"v": 1, "type": "quote", "exchange": "binance", "symbol": "BTC/USDT", "venue_symbol": "BTCUSDT",
     "bid": "0.35210000", "bid_size": "672.00000000", "ask": "0.35260000", "ask_size": "3199.00000000",
     "ts_event_us": null, "ts_recv_us": 1633998513377805, "seq": 499869768}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

import orjson

SCHEMA_VERSION = 1


class Side(StrEnum):
    """The taker's side of a trade."""

    BUY = "buy"
    SELL = "sell"


class FeedState(StrEnum):
    """What a feed-status event reports; the streaming layer refuses quotes across a `DISCONNECTED` or `GAP`."""

    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    DISCONNECTED = "disconnected"
    GAP = "gap"
    RESYNCED = "resynced"
    STALE = "stale"


class InvalidEvent(ValueError):
    """An event that breaks an invariant (non-positive price, negative size, missing field)."""


def _positive(name: str, value: Decimal) -> None:
    if not isinstance(value, Decimal):
        raise InvalidEvent(f"{name} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite() or value <= 0:
        raise InvalidEvent(f"{name} must be a positive number, got {value}")


def _non_negative(name: str, value: Decimal) -> None:
    if not isinstance(value, Decimal):
        raise InvalidEvent(f"{name} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise InvalidEvent(f"{name} must be a non-negative number, got {value}")


def _encode(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book on one exchange: best bid and best ask with their sizes."""

    exchange: str
    symbol: str
    venue_symbol: str
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    ts_event_us: int | None
    ts_recv_us: int
    seq: int | None
    type: ClassVar[str] = "quote"

    def __post_init__(self) -> None:
        _positive("bid", self.bid)
        _positive("ask", self.ask)
        _non_negative("bid_size", self.bid_size)
        _non_negative("ask_size", self.ask_size)

    @property
    def is_crossed(self) -> bool:
        return self.bid > self.ask


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade; `side` is the taker's side."""

    exchange: str
    symbol: str
    venue_symbol: str
    price: Decimal
    size: Decimal
    side: Side
    trade_id: str
    ts_event_us: int | None
    ts_recv_us: int
    seq: int | None
    type: ClassVar[str] = "trade"

    def __post_init__(self) -> None:
        _positive("price", self.price)
        _positive("size", self.size)
        if not isinstance(self.side, Side):
            raise InvalidEvent(f"side must be a Side, got {self.side!r}")


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """A change in a feed's health: connect, disconnect, sequence gap, resync, silence.

    A `gap` in a venue's trade ids also says which ids were missed (inclusive range, as the channel numbers them:
    Binance aggTrade ids for `@aggTrade`); the three fields are null on every other status.
    """

    exchange: str
    state: FeedState
    detail: str
    ts_recv_us: int
    symbol: str | None = None
    missed_trades: int | None = None
    first_missed_trade_id: int | None = None
    last_missed_trade_id: int | None = None
    type: ClassVar[str] = "status"

    def __post_init__(self) -> None:
        first, last = self.first_missed_trade_id, self.last_missed_trade_id
        if (first is None) != (last is None) or (first is not None and self.missed_trades != last - first + 1):
            raise InvalidEvent(f"missed trade ids {first}..{last} do not make {self.missed_trades} trades")


Event = Quote | Trade | FeedStatus
_BY_TYPE: dict[str, type] = {"quote": Quote, "trade": Trade, "status": FeedStatus}
_DECIMAL_FIELDS = {"bid", "bid_size", "ask", "ask_size", "price", "size"}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per event class, its field names (dataclasses.fields is slow)


def to_dict(event: Event) -> dict[str, Any]:
    """The wire form of an event as a plain dict (decimals as strings)."""
    names = _FIELD_NAMES.get(type(event))
    if names is None:
        names = _FIELD_NAMES[type(event)] = tuple(field.name for field in dataclasses.fields(event))
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "type": event.type}
    for name in names:
        value = getattr(event, name)
        out[name] = str(value) if isinstance(value, (Decimal, StrEnum)) else value
    return out


def to_json(event: Event) -> bytes:
    """Serialize an event to its wire form (UTF-8 JSON bytes)."""
    return orjson.dumps(to_dict(event), default=_encode)


def from_dict(data: dict[str, Any]) -> Event:
    """Parse the wire form back into a typed event; raises InvalidEvent on anything malformed."""
    kind = data.get("type")
    cls = _BY_TYPE.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise InvalidEvent(f"unknown event type {kind!r}")
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidEvent(f"unsupported schema version {data.get('v')!r}")
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            if field.default is not dataclasses.MISSING:
                continue
            raise InvalidEvent(f"{kind} is missing {field.name!r}")
        value = data[field.name]
        if field.name in _DECIMAL_FIELDS:
            value = Decimal(value)
        elif field.name == "side":
            value = Side(value)
        elif field.name == "state":
            value = FeedState(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def from_json(raw: bytes | str) -> Event:
    """Parse one wire-form JSON object."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("event is not a JSON object")
    return from_dict(data)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A frame or record we could not use, kept with its raw text and the reason."""

    source: str  # "coinbase", "binance", "silver", ...
    reason: str
    raw: str
    ts_recv_us: int

    def to_json(self) -> bytes:
        return orjson.dumps({"v": SCHEMA_VERSION, "type": "dead_letter", **dataclasses.asdict(self)})
