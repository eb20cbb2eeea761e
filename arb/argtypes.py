"""argparse `type=` converters shared by every sub-command: a bad value becomes the parser's one-line error."""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation


def positive_float(text: str) -> float:
    """A number > 0 (seconds, rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A count or a duration in ms, >= 0 (`1_000` is accepted)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count or a rate, > 0."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _port_number(text: str, lowest: int) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range ({lowest}-65535): {text!r}")
    return port


def port(text: str) -> int:
    """A TCP port to connect to or serve on, 1-65535."""
    return _port_number(text, 1)


def port_or_free(text: str) -> int:
    """A TCP port to serve on, where 0 asks the OS for a free one."""
    return _port_number(text, 0)


def finite_decimal(text: str) -> Decimal:
    """An exact decimal number (bps, sizes, thresholds): never a binary float."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value
