"""Live metrics of the streaming queries: `<run_dir>/metrics/stream-<job>.json`, rewritten on every progress event.

    {"job": "hotpath", "batch_id": 42, "input_rows_per_s": 1999.1, "processed_rows_per_s": 2100.4,
     "batch_duration_ms": 950, "durations_ms": {"addBatch": 700, ...}, "watermark": "2026-11-22T00:40:34.567Z",
     "detection_p50_ms": 810, "detection_p99_ms": 1450, "late_ticks": 0, "updated_ts": "2026-11-22T00:40:35.101Z"}
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def _iso_now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, path)


def parse_iso_us(text: str) -> int:
    """`2026-11-22T00:40:34.567Z` -> µs since the epoch."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000)


class HotPathStats:
    """What the hot path's sink reports: a rolling window of detection latencies (alert line written minus the
    opening tick's event time) and the ticks dropped as late since the start."""

    def __init__(self, size: int = 2000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.late_ticks = 0

    def on_late(self, count: int) -> None:
        with self._lock:
            self.late_ticks += count

    def on_alerts(self, lines: list[dict]) -> None:
        now_us = time.time_ns() // 1000
        with self._lock:
            for line in lines:
                if line["event"] == "OPEN":
                    self._values.append((now_us - parse_iso_us(line["start_ts"])) / 1000)

    def summary(self) -> dict[str, float | None]:
        with self._lock:
            values = list(self._values)
        return {"detection_p50_ms": percentile(values, 50), "detection_p99_ms": percentile(values, 99),
                "late_ticks": self.late_ticks}


class ProgressListener:
    """Receives each streaming query's progress as a dict: Spark's own JSON of `StreamingQueryProgress`.

    Register it with `add_listener`, not `spark.streams.addListener`: PySpark's bridge turns every event into Python
    objects field by field through py4j before a listener sees it (~60 round trips per event and per listener), and
    that kept the JVM's listener thread at 0.19 core of the 2 at 2,000 quotes/s (docs/BENCHMARKS.md); here an event
    costs one call (`progress().json()`)."""

    def on_progress(self, progress: dict[str, Any]) -> None:
        raise NotImplementedError


class _JsonProgressBridge:
    """The Java side's listener interface (as PySpark's own bridge implements it), handing on the progress JSON."""

    def __init__(self, listener: ProgressListener) -> None:
        self.listener = listener

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        self.listener.on_progress(json.loads(event.progress().json()))

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass

    class Java:
        implements = ["org.apache.spark.sql.streaming.PythonStreamingQueryListener"]


def add_listener(spark: Any, listener: ProgressListener) -> None:
    """Register `listener` for the progress of every query of `spark`'s session."""
    from pyspark.java_gateway import ensure_callback_server_started

    context = spark.sparkContext
    ensure_callback_server_started(context._gateway)
    wrapper = context._jvm.org.apache.spark.sql.streaming.PythonStreamingQueryListenerWrapper
    spark._jsparkSession.streams().addListener(wrapper(_JsonProgressBridge(listener)))


class MetricsListener(ProgressListener):
    """Writes the last progress of each named query to `stream-<name>.json`; keeps every progress for benches."""

    def __init__(self, metrics_dir: str, hotpath: HotPathStats | None = None, keep: bool = False) -> None:
        self.metrics_dir = Path(metrics_dir)
        self.hotpath = hotpath
        self.keep = keep
        self.progress: list[dict] = []
        self._lock = threading.Lock()

    def on_progress(self, progress: dict[str, Any]) -> None:
        job = progress.get("name") or "query"
        doc = {
            "job": job,
            "batch_id": progress.get("batchId"),
            "input_rows": progress.get("numInputRows"),
            "input_rows_per_s": progress.get("inputRowsPerSecond"),
            "processed_rows_per_s": progress.get("processedRowsPerSecond"),
            "batch_duration_ms": progress.get("batchDuration"),
            "durations_ms": progress.get("durationMs", {}),
            "watermark": progress.get("eventTime", {}).get("watermark"),
            "detection_p50_ms": None,
            "detection_p99_ms": None,
            "updated_ts": _iso_now(),
        }
        if self.hotpath is not None and job == "hotpath":
            doc.update(self.hotpath.summary())
        if self.keep:
            with self._lock:
                self.progress.append(progress)
        write_atomic(self.metrics_dir / f"stream-{job}.json", doc)
