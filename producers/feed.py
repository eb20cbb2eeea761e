"""What every exchange module has in common: the Feed shape, the bad-frame error and the time conversions.

A feed is the venue-specific half of a producer: endpoints and channels as class attributes, the subscribe messages,
and `parse(frame, recv_ts_us) -> list[Event]`, which does no I/O. The venue-independent half (reconnect, backoff,
watchdog, Kafka) is `producers.connection`. A feed that needs the connection to act (resubscribe a product for a fresh
snapshot, reconnect on `serverShutdown`) raises `pending` and the loop collects the requests with `take_requests()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple

import orjson

from arbitrage.events import Event, FeedState, FeedStatus
from arbitrage.symbols import SymbolMap

_EPOCH = date(1970, 1, 1)
_DAY_US: dict[str, int] = {}


class BadFrame(ValueError):
    """A frame we cannot use; `reason` says why in a few words (it goes to the log and the dead-letter topic)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SECOND_US: dict[str, int] = {}  # "2021-04-17T16:43:46" -> its microseconds since the epoch


def json_object(frame: str | bytes) -> dict[str, Any]:
    """Decode one text frame that must be a JSON object (raises BadFrame)."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise BadFrame("malformed JSON") from None
    if type(msg) is not dict:
        raise BadFrame("not a JSON object")
    return msg


def iso_to_us(text: str) -> int:
    """`2021-04-17T16:43:46.345172Z` -> integer microseconds since the epoch (UTC)."""
    if type(text) is not str:
        raise BadFrame(f"time is not a string: {text!r}")
    # Fast path for the form Coinbase sends: YYYY-MM-DDTHH:MM:SS, an optional fraction, 'Z'. Frames arrive many to
    # a second, so the whole-second part is looked up, not parsed.
    if len(text) >= 20 and text[-1] == "Z" and text[19] in ".Z":
        second = text[:19]
        base = _SECOND_US.get(second)
        frac = text[20:-1]
        if base is None:
            base = _parse_second(second)
        if not frac:
            return base
        if len(frac) <= 6 and frac.isdigit():
            return base + int(frac) * _FRACTION_SCALE[len(frac)]
        raise BadFrame(f"bad time {text!r}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadFrame(f"bad time {text!r}") from None
    if parsed.tzinfo is None:
        raise BadFrame(f"time without a time zone {text!r}")
    delta = parsed.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_FRACTION_SCALE = {1: 100_000, 2: 10_000, 3: 1_000, 4: 100, 5: 10, 6: 1}


def _parse_second(second: str) -> int:
    if second[10] != "T" or second[13] != ":" or second[16] != ":" or not second[17:19].isdigit():
        raise BadFrame(f"bad time {second!r}")
    try:
        day_us = _DAY_US.get(second[:10])
        if day_us is None:
            day_us = (date.fromisoformat(second[:10]) - _EPOCH).days * 86_400_000_000
            _DAY_US[second[:10]] = day_us
        hours, minutes, seconds = int(second[11:13]), int(second[14:16]), int(second[17:19])
    except ValueError:
        raise BadFrame(f"bad time {second!r}") from None
    if hours > 23 or minutes > 59 or seconds > 60:
        raise BadFrame(f"bad time {second!r}")
    if len(_SECOND_US) > 100_000:  # a day and more of distinct seconds: start over
        _SECOND_US.clear()
    value = _SECOND_US[second] = day_us + (hours * 3600 + minutes * 60 + seconds) * 1_000_000
    return value


def ms_to_us(value: Any) -> int:
    """Binance millisecond timestamps (JSON integers) -> microseconds."""
    if type(value) is not int:
        raise BadFrame(f"time is not an integer: {value!r}")
    return value * 1000


def _venue_decimal(text: Any, name: str) -> Decimal:
    """A venue's decimal string -> a finite Decimal (venues send money as strings; anything else is a BadFrame)."""
    try:
        value = Decimal(text) if type(text) is str else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise BadFrame(f"non-numeric {name} {text!r}")
    return value


def price(text: Any, name: str = "price") -> Decimal:
    """A venue price string -> Decimal; non-numeric, non-finite, zero or negative is a BadFrame."""
    value = _venue_decimal(text, name)
    if value <= 0:
        raise BadFrame(f"non-positive {name} {text!r}")
    return value


def size(text: Any, name: str = "size") -> Decimal:
    """A venue size string -> Decimal; zero is allowed (a level-2 removal), negative is a BadFrame."""
    value = _venue_decimal(text, name)
    if value < 0:
        raise BadFrame(f"negative {name} {text!r}")
    return value


def integer(value: Any, name: str) -> int:
    if type(value) is not int:
        raise BadFrame(f"{name} is not an integer: {value!r}")
    return value


class Gap(NamedTuple):
    """A break in a venue's numbering: what the status says, and the trade ids missed (inclusive; None when the
    break is not a skip in trade ids, e.g. a sequence going backwards)."""

    detail: str
    first_missed: int | None = None
    last_missed: int | None = None


def trade_id_gap(name: str, trade_id: int, last: int | None, across_reconnect: bool) -> Gap | None:
    """The gap between the last trade id accounted for and a newer one (None when they are consecutive).

    `across_reconnect`: `last` was seen on an earlier connection, so the ids were lost while reconnecting."""
    if last is None or trade_id <= last + 1:
        return None
    missed = trade_id - last - 1
    when = " while disconnected" if across_reconnect else ""
    return Gap(f"{name} {trade_id} after {last} ({missed} missed{when})", last + 1, trade_id - 1)


class Feed:
    """Base of the exchange modules: symbols, per-connection reset, requests to the connection loop."""

    name: ClassVar[str]
    default_url: ClassVar[str]
    # True when the URL itself subscribes (Binance combined streams); False when messages must be sent (Coinbase).
    subscribes_by_url: ClassVar[bool]

    def __init__(self, markets: SymbolMap, symbols: Sequence[str] = ()) -> None:
        self.markets = markets
        self.symbols = tuple(symbols)
        for symbol in self.symbols:
            markets.market(symbol)  # UnknownSymbol (a named error) for anything the exchange does not list
        # venue id -> canonical symbol, filled lazily from the market map (a dict hit on the hot path)
        self._canonical: dict[str, str] = {}
        self.pending = False
        self._resubscribe: set[str] = set()
        self._reconnect_reason: str | None = None
        self._needs_resync: set[str] = set()
        self._seen: set[str] = set()  # symbols that produced a quote since the process started

    # -- what the connection loop calls ---------------------------------------------------------------------------

    def url(self, base: str | None = None) -> str:
        return base or self.default_url

    def subscribe_messages(self) -> list[str]:
        return []

    def resubscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        return []

    def on_connect(self) -> None:
        """A new connection: state tied to the old one is gone; symbols that had quotes must resync."""
        self._needs_resync |= self._seen
        self.pending = False
        self._resubscribe.clear()
        self._reconnect_reason = None

    def take_requests(self) -> tuple[list[str], str | None]:
        """(symbols to resubscribe for a fresh snapshot, reason to reconnect or None); clears them."""
        symbols, reason = sorted(self._resubscribe), self._reconnect_reason
        self._resubscribe.clear()
        self._reconnect_reason = None
        self.pending = False
        return symbols, reason

    def parse(self, frame: str, recv_ts_us: int) -> list[Event]:
        raise NotImplementedError

    # -- helpers for the subclasses -------------------------------------------------------------------------------

    def canonical(self, venue_symbol: Any) -> str:
        try:
            symbol = self._canonical.get(venue_symbol)
        except TypeError:  # an unhashable JSON value (list, object) where the symbol should be; found by fuzzing
            raise BadFrame(f"symbol is not a string: {venue_symbol!r}") from None
        if symbol is None:
            if type(venue_symbol) is not str:
                raise BadFrame(f"symbol is not a string: {venue_symbol!r}")
            try:
                symbol = self.markets.from_venue(venue_symbol)
            except KeyError:
                raise BadFrame(f"unknown symbol {venue_symbol!r}") from None
            self._canonical[venue_symbol] = symbol
        return symbol

    def _request_resubscribe(self, symbol: str) -> None:
        self._resubscribe.add(symbol)
        self.pending = True

    def _request_reconnect(self, reason: str) -> None:
        self._reconnect_reason = reason
        self.pending = True

    def _status(self, state: FeedState, detail: str, recv_ts_us: int, symbol: str | None = None) -> FeedStatus:
        return FeedStatus(exchange=self.name, state=state, detail=detail, ts_recv_us=recv_ts_us, symbol=symbol)

    def _gap_status(self, gap: Gap, recv_ts_us: int, symbol: str) -> FeedStatus:
        first, last = gap.first_missed, gap.last_missed
        return FeedStatus(self.name, FeedState.GAP, gap.detail, recv_ts_us, symbol,
                          None if first is None else last - first + 1, first, last)

    def _resynced(self, symbol: str, recv_ts_us: int, out: list[Event]) -> None:
        """Called before a symbol's first top of book on a connection: report the resync after a gap/disconnect."""
        self._seen.add(symbol)
        if symbol in self._needs_resync:
            self._needs_resync.discard(symbol)
            out.append(self._status(FeedState.RESYNCED, "fresh top of book", recv_ts_us, symbol))
