"""Recorded captures (`{"recv_ts": <epoch s>, "raw": "<frame>"}` a line, what `arb produce --record` writes) read for
replay, each routed to the server of its exchange."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from producers.emulator.market import EXCHANGES


class CaptureError(ValueError):
    """A capture that cannot be replayed (unreadable, not JSON Lines, exchange unknown)."""


@dataclass(frozen=True, slots=True)
class Capture:
    exchange: str
    path: Path
    frames: tuple[tuple[float, str], ...]  # (recv_ts, raw text), in file order


def detect_exchange(path: Path, raws: list[str]) -> str:
    """From the file name (`coinbase-...`, `binance-...`), else from the frames: Coinbase frames carry `type`,
    Binance's a `stream` envelope or an event `e` / bookTicker `u`."""
    name = path.name.lower()
    for exchange in EXCHANGES:
        if exchange in name:
            return exchange
    for raw in raws[:50]:
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        if "type" in msg:
            return "coinbase"
        if "stream" in msg or "e" in msg or ("u" in msg and "s" in msg):
            return "binance"
    raise CaptureError(f"{path}: cannot tell which exchange this capture is from")


def load_capture(path: Path) -> Capture:
    frames: list[tuple[float, str]] = []
    try:
        with path.open() as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    frames.append((float(record["recv_ts"]), str(record["raw"])))
                except (ValueError, KeyError, TypeError):
                    raise CaptureError(f"{path}:{n}: not a {{\"recv_ts\", \"raw\"}} capture line") from None
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror}") from None
    if not frames:
        raise CaptureError(f"{path}: empty capture")
    return Capture(exchange=detect_exchange(path, [raw for _, raw in frames]), path=path, frames=tuple(frames))


def merge(captures: list[Capture], exchange: str) -> list[tuple[float, str]]:
    """Every frame for one exchange, ordered by receive time (stable, so one file keeps its own order)."""
    frames = [frame for capture in captures if capture.exchange == exchange for frame in capture.frames]
    return sorted(frames, key=lambda f: f[0])


def delays(frames: list[tuple[float, str]], speed: float) -> list[float]:
    """Offsets (seconds from the first frame) at which to send each frame; speed 0 (or inf) sends at once."""
    if not frames:
        return []
    if speed <= 0 or speed == float("inf"):
        return [0.0] * len(frames)
    first = frames[0][0]
    offsets, last = [], 0.0
    for ts, _ in frames:
        last = max(last, (ts - first) / speed)  # never go back in time on out-of-order receive stamps
        offsets.append(last)
    return offsets
