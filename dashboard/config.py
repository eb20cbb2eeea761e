"""What the dashboard reads and how: one frozen object, built from `arb.settings.Settings` in the CLI handler."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable, Mapping

from arbitrage.fees import FeeSchedule
from arbitrage.pairs import Pair
from arbitrage.rules import RulesConfig

_RULES = RulesConfig()  # the defaults the streaming job runs with (docs/RULES.md)

# Time-range picker: label -> seconds of history shown.
TIME_RANGES: dict[str, int] = {"5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "1d": 86400}
DEFAULT_RANGE = "15m"


@dataclass(frozen=True)
class DashboardConfig:
    lake_dir: Path
    metrics_dir: Path
    alert_log: Path
    pairs: tuple[Pair, ...] = _RULES.pairs
    fees: FeeSchedule = _RULES.fees
    threshold_bps: Decimal = _RULES.threshold_bps
    refresh_ms: int = 1000
    # Spread rows are drawn once they are this old: a micro-batch that lands later than this after newer rows is
    # only drawn on the next full load (pair or range change).
    settle_s: float = 3.0
    max_buckets: int = 1200  # points per direction on the chart, whatever the range
    clock: Callable[[], float] = time.time  # seconds since the epoch; tests pin it

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("the dashboard needs at least one pair")
        if self.refresh_ms < 100:
            raise ValueError(f"refresh_ms must be >= 100, got {self.refresh_ms}")

    @classmethod
    def from_settings(cls, settings, lake_dir: str | Path | None = None, environ: Mapping[str, str] | None = None,
                      **overrides) -> "DashboardConfig":
        """Paths from `arb.settings.Settings`. The lake is `lake_dir` (`arb dashboard --lake`), else
        `ARB_LAKE_DIR` (where the streaming jobs write when it is set), else `Settings.lake_dir`."""
        env = os.environ if environ is None else environ
        return cls(
            lake_dir=Path(lake_dir or env.get("ARB_LAKE_DIR") or settings.lake_dir),
            metrics_dir=Path(settings.run_dir) / "metrics",
            alert_log=Path(settings.alert_log),
            **overrides,
        )

    def pair(self, name: str) -> Pair:
        for pair in self.pairs:
            if pair.name == name:
                return pair
        raise KeyError(name)
