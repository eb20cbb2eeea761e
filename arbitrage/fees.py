"""Taker fees per exchange, as fractions (0.001 = 10 bps)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# ccxt's base-tier taker fees (coinbaseexchange 0.006, binance 0.001); override with --fees or ARB_FEES.
DEFAULT_TAKER_FEES = {"coinbase": Decimal("0.006"), "binance": Decimal("0.001")}


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    coinbase: Decimal = DEFAULT_TAKER_FEES["coinbase"]
    binance: Decimal = DEFAULT_TAKER_FEES["binance"]

    def __post_init__(self) -> None:
        for name in ("coinbase", "binance"):
            fee = getattr(self, name)
            if not isinstance(fee, Decimal) or not fee.is_finite() or not Decimal(0) <= fee < Decimal(1):
                raise ValueError(f"{name} taker fee must be a Decimal in [0, 1), got {fee!r}")

    def taker(self, exchange: str) -> Decimal:
        if exchange not in ("coinbase", "binance"):
            raise ValueError(f"unknown exchange {exchange!r}")
        return getattr(self, exchange)


def parse_fees(spec: str) -> FeeSchedule:
    """`coinbase=0.006,binance=0.001` (fractions; a `bps` suffix is also accepted: `binance=10bps`)."""
    values: dict[str, Decimal] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("coinbase", "binance"):
            raise ValueError(f"fee spec {part!r}: expected coinbase=FRACTION or binance=FRACTION")
        value = value.strip()
        values[name] = Decimal(value[:-3]) / 10_000 if value.endswith("bps") else Decimal(value)
    return FeeSchedule(**values)
