"""Compaction of the local Delta tables this process appends to.

Every micro-batch appends a small file to each table it writes: the hot path ~1.5 files/s to silver/spreads, i.e.
~130,000 a day. Appends slow down as files pile up (the table state delta-rs keeps grows with them: an append took
25 ms on a compacted table and 57 ms at 3,000 files here), and so do the dashboard's and the backtester's reads. A
`Compactor` thread bin-packs the recent partitions (`date` >= yesterday) of every table the sinks have appended to
(`sinks.OpenTables`, so each table is compacted by the one process that writes it) every `every_s` seconds, with
delta-rs, which releases the GIL meanwhile (the batch threads kept running: 8 ms longest pause over a 0.8 s
compaction). A compaction only rewrites data (`dataChange=false`): appends committed meanwhile do not conflict with
it, and readers of older versions keep their files. The files it replaces are deleted by `vacuum` once they are older
than the table's retention (Delta's default, 7 days), so time travel over that period keeps working.

Lakes on a Hadoop path (`s3a://...`) are written by Spark and not compacted here: run Delta's `OPTIMIZE` on them.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from arb.logs import log_event

log = logging.getLogger("streaming.compaction")

# Bins of at most this much: a partition's compacted file is rewritten with the new small files until it is this
# large, then left alone, so one pass never rewrites more than this per bin.
TARGET_FILE_BYTES = 64 * 1024 * 1024


class Compactor:
    """Compacts `tables.paths()` every `every_s` seconds from a daemon thread; a failure is logged, not raised."""

    def __init__(self, tables: Any, every_s: float, target_bytes: int = TARGET_FILE_BYTES) -> None:
        self.tables = tables
        self.every_s = every_s
        self.target_bytes = target_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def compact_once(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One pass over the tables: returns what each compaction did (tables with nothing to do are left out)."""
        from deltalake import DeltaTable

        today = (now or datetime.now(tz=UTC)).date()
        done = []
        for path in self.tables.paths():
            started = time.monotonic()
            try:
                # A handle of its own: the sink's kept table belongs to the batch thread.
                delta = DeltaTable(path)
                filters = ([("date", ">=", (today - timedelta(days=1)).isoformat())]
                           if "date" in delta.metadata().partition_columns else None)
                metrics = delta.optimize.compact(partition_filters=filters, target_size=self.target_bytes)
                removed = delta.vacuum(dry_run=False)
            except Exception as exc:  # a conflict or an I/O error: the next pass tries again
                log_event(log, "compaction_failed", logging.WARNING, table=path, error=f"{type(exc).__name__}: {exc}")
                continue
            if metrics["numFilesRemoved"] or removed:
                entry = {"table": path, "files_removed": metrics["numFilesRemoved"],
                         "files_added": metrics["numFilesAdded"], "files_vacuumed": len(removed),
                         "ms": round((time.monotonic() - started) * 1000)}
                log_event(log, "compacted", **entry)
                done.append(entry)
        return done

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.compact_once()

    def start(self) -> "Compactor":
        self._thread = threading.Thread(target=self._run, name="delta-compaction", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
