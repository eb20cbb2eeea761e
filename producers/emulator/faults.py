"""Faults the emulator injects on demand: the ways real feeds fail.

A `Fault` is the same object whether a scenario file schedules it (`at_s`), a test calls `Emulator.inject(...)`, or the
HTTP control endpoint receives it (`POST /fault` with the JSON below).

    {"kind": "silence", "exchange": "binance", "seconds": 8}
    {"kind": "drop", "exchange": "coinbase"}                   close every connection abruptly (no close frame)
    {"kind": "malformed", "exchange": "binance", "count": 5}  bad JSON, unknown type, bad/negative price, unknown symbol
    {"kind": "skip_sequence", "exchange": "coinbase", "pair": "BTC/USD", "by": 10}
    {"kind": "cross_book", "exchange": "binance", "pair": "ETH/USD", "seconds": 2}
    {"kind": "server_shutdown", "exchange": "binance", "seconds": 1}   serverShutdown event, close after `seconds`
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from producers.emulator.market import EXCHANGES


class FaultKind(StrEnum):
    DROP = "drop"
    SILENCE = "silence"
    MALFORMED = "malformed"
    SKIP_SEQUENCE = "skip_sequence"
    CROSS_BOOK = "cross_book"
    SERVER_SHUTDOWN = "server_shutdown"


class MalformedKind(StrEnum):
    """What a malformed frame gets wrong; `malformed` faults cycle through all of them unless one is named."""

    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    BAD_PRICE = "bad_price"
    NEGATIVE_PRICE = "negative_price"
    UNKNOWN_SYMBOL = "unknown_symbol"


class FaultError(ValueError):
    """A fault description that cannot be injected (unknown kind, missing pair, ...)."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    exchange: str
    pair: str | None = None  # pair name (BTC/USD); skip_sequence without a pair skips on every symbol
    seconds: float = 0.0  # silence / cross_book duration, server_shutdown grace before closing
    count: int = 1  # malformed frames to send
    variant: MalformedKind | None = None  # one malformed kind instead of all of them in turn
    by: int = 10  # sequence numbers / trade ids to skip
    at_s: float | None = None  # scenario offset; None when injected at runtime

    def __post_init__(self) -> None:
        if self.exchange not in EXCHANGES:
            raise FaultError(f"fault {self.kind}: exchange must be one of {EXCHANGES}, got {self.exchange!r}")
        if self.kind in (FaultKind.SILENCE, FaultKind.CROSS_BOOK) and self.seconds <= 0:
            raise FaultError(f"fault {self.kind}: seconds must be positive")
        if self.kind == FaultKind.CROSS_BOOK and not self.pair:
            raise FaultError("fault cross_book: pair is required")
        if self.kind == FaultKind.SERVER_SHUTDOWN and self.exchange != "binance":
            raise FaultError("fault server_shutdown: only Binance sends serverShutdown")
        if self.count < 1 or self.by < 1 or self.seconds < 0:
            raise FaultError(f"fault {self.kind}: count and by must be >= 1, seconds >= 0")
        if self.at_s is not None and self.at_s < 0:
            raise FaultError(f"fault {self.kind}: at_s must be >= 0")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": str(self.kind), "exchange": self.exchange}
        if self.pair:
            out["pair"] = self.pair
        if self.kind in (FaultKind.SILENCE, FaultKind.CROSS_BOOK, FaultKind.SERVER_SHUTDOWN):
            out["seconds"] = self.seconds
        if self.kind == FaultKind.MALFORMED:
            out["count"] = self.count
            out["variant"] = str(self.variant) if self.variant else "all"
        if self.kind == FaultKind.SKIP_SEQUENCE:
            out["by"] = self.by
        return out


_FIELDS = {"kind", "exchange", "pair", "seconds", "count", "variant", "by", "at_s"}


def parse_fault(data: dict[str, Any]) -> Fault:
    """Build a Fault from its JSON form; raises FaultError with a one-line reason."""
    if not isinstance(data, dict):
        raise FaultError("a fault must be a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise FaultError(f"fault: unknown fields {sorted(unknown)}")
    try:
        kind = FaultKind(data.get("kind"))
    except ValueError:
        kinds = [k.value for k in FaultKind]
        raise FaultError(f"fault kind must be one of {kinds}, got {data.get('kind')!r}") from None
    try:
        variant = MalformedKind(data["variant"]) if data.get("variant") not in (None, "all") else None
        return Fault(
            kind=kind,
            exchange=str(data.get("exchange", "")),
            pair=data.get("pair"),
            seconds=float(data.get("seconds", 0.0)),
            count=int(data.get("count", 1)),
            variant=variant,
            by=int(data.get("by", 10)),
            at_s=float(data["at_s"]) if data.get("at_s") is not None else None,
        )
    except FaultError:
        raise
    except (TypeError, ValueError) as exc:
        raise FaultError(f"fault {kind}: {exc}") from None
