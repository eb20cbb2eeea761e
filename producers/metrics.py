"""Producer counters and rates, and the `producer-<exchange>.json` file (docs/DATA_MODEL.md) rewritten about once a second.

Counters are plain attributes bumped on the hot path (one process, one event loop; the Kafka delivery thread only
touches `delivery_failures` and `acked`). Rates are computed when the file is written, from the change since the last
write.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson


class ProducerMetrics:
    """What a producer reports about itself."""

    def __init__(self, exchange: str, url: str = "") -> None:
        self.exchange = exchange
        self.url = url
        self.connected = False
        self.frames = 0
        self.quotes = 0
        self.trades = 0
        self.statuses = 0
        self.invalid = 0
        self.gaps = 0
        self.missed_trades = 0  # trade ids skipped, summed over the gaps that name them
        self.reconnects = 0
        self.delivery_failures = 0
        self.acked = 0
        self.last_frame_monotonic: float | None = None
        self._prev: tuple[float, int, int] | None = None  # (monotonic, frames, events) at the last snapshot

    @property
    def events(self) -> int:
        return self.quotes + self.trades

    def snapshot(self, now: float | None = None) -> dict:
        """The metrics file's object; rates are over the time since the previous call."""
        now = time.monotonic() if now is None else now
        frames, events = self.frames, self.events
        frames_per_s = events_per_s = 0.0
        if self._prev is not None and now > self._prev[0]:
            elapsed = now - self._prev[0]
            frames_per_s = (frames - self._prev[1]) / elapsed
            events_per_s = (events - self._prev[2]) / elapsed
        self._prev = (now, frames, events)
        age = None if self.last_frame_monotonic is None else round(now - self.last_frame_monotonic, 3)
        return {
            "exchange": self.exchange,
            "connected": self.connected,
            "url": self.url,
            "last_frame_age_s": age,
            "frames_per_s": round(frames_per_s, 1),
            "events_per_s": round(events_per_s, 1),
            "frames": frames,
            "quotes": self.quotes,
            "trades": self.trades,
            "invalid": self.invalid,
            "gaps": self.gaps,
            "missed_trades": self.missed_trades,
            "reconnects": self.reconnects,
            "delivery_failures": self.delivery_failures,
            "updated_ts": time.time(),
        }


def write_atomic(path: Path, payload: dict) -> None:
    """Write JSON to a temp file beside `path` and rename it over `path` (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(payload))
    os.replace(tmp, path)


def metrics_path(run_dir: Path, exchange: str) -> Path:
    return Path(run_dir) / "metrics" / f"producer-{exchange}.json"


async def write_periodically(metrics: ProducerMetrics, path: Path, interval_s: float = 1.0) -> None:
    """Rewrite the metrics file every `interval_s` until cancelled (and once more when cancelled)."""
    try:
        while True:
            write_atomic(path, metrics.snapshot())
            await asyncio.sleep(interval_s)
    except asyncio.CancelledError:
        write_atomic(path, metrics.snapshot())
        raise
