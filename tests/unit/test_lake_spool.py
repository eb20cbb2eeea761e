"""The hot path's lake spool: a batch's rows are durable in the spool when `put` returns, reach Delta once (in batch
order) whether the writer thread or a later opening appends them, and a failed append is raised, its rows kept
(real delta-rs tables and files in a temp dir)."""

from __future__ import annotations

import shutil
from datetime import date

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from streaming.sinks import LakeSpool

DAY = date(2026, 12, 3)


def rows(*values: int) -> pa.Table:
    return pa.table({"x": pa.array(values, pa.int64()), "date": pa.array([DAY] * len(values))})


def values(path: str) -> list[int]:
    return sorted(DeltaTable(path).to_pyarrow_table()["x"].to_pylist())


def stopped(directory: str) -> LakeSpool:
    """A spool whose writer has stopped, as if the process died right after `put` returned."""
    spool = LakeSpool(directory)
    spool._queue.put(None)
    spool._thread.join(timeout=10)
    assert not spool._thread.is_alive()
    return spool


def test_spooled_batches_are_appended_in_order_once_each_and_leave_the_spool_empty(tmp_path):
    spool = LakeSpool(str(tmp_path / "spool"))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    spool.put(0, [("a", rows(1, 2), a, "q/a"), ("b", rows(10), b, "q/b")])
    spool.put(1, [("a", rows(3), a, "q/a")])
    spool.put(2, [])
    spool.put(1, [("a", rows(3), a, "q/a")])  # a batch Spark ran again (not committed before a crash)
    spool.flush()
    assert values(a) == [1, 2, 3] and values(b) == [10]
    assert DeltaTable(a).transaction_version("q/a") == 1
    assert list((tmp_path / "spool").iterdir()) == []


def test_what_a_crash_left_in_the_spool_is_appended_at_the_next_opening_and_only_once(tmp_path):
    directory, table = str(tmp_path / "spool"), str(tmp_path / "t")
    stopped(directory).put(0, [("t", rows(1), table, "q/t")])
    spooled = sorted((tmp_path / "spool").iterdir())
    assert [f.name for f in spooled] == [f"{0:020d}.t.arrow"]  # durable: renamed into place, nothing partial
    kept = tmp_path / "kept.arrow"
    shutil.copy(spooled[0], kept)

    crashed_again = stopped(directory)
    crashed_again.put(1, [("t", rows(2), table, "q/t")])
    assert crashed_again.replay() == 2  # both batches, in batch order
    assert values(table) == [1, 2]

    shutil.copy(kept, spooled[0])  # a batch appended before the crash but not yet deleted from the spool
    spool = LakeSpool.open(directory)
    assert values(table) == [1, 2]
    assert list((tmp_path / "spool").iterdir()) == []
    spool.put(2, [("t", rows(3), table, "q/t")])
    spool.flush()
    assert values(table) == [1, 2, 3]


def test_a_failed_append_is_raised_by_the_next_put_and_flush_and_its_rows_kept_for_the_next_opening(tmp_path):
    directory, table = str(tmp_path / "spool"), tmp_path / "t"
    table.write_text("a file where the table should be")
    spool = LakeSpool(directory)
    spool.put(0, [("t", rows(1), str(table), "q/t")])
    with pytest.raises(RuntimeError, match="a spooled Delta append failed"):
        spool.flush()
    with pytest.raises(RuntimeError, match="a spooled Delta append failed"):
        spool.put(1, [("t", rows(2), str(table), "q/t")])
    assert [f.name for f in (tmp_path / "spool").iterdir()] == [f"{0:020d}.t.arrow"]

    table.unlink()  # the cause mended; the same directory opened again takes the spool over
    LakeSpool._open[directory] = spool
    try:
        reopened = LakeSpool.open(directory)
        assert reopened is spool
        assert values(str(table)) == [1]
        reopened.put(1, [("t", rows(2), str(table), "q/t")])
        reopened.flush()
        assert values(str(table)) == [1, 2]
    finally:
        del LakeSpool._open[directory]
