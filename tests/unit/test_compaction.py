"""Compaction of the local Delta tables a process appends to: recent partitions only, nothing lost, appends
committed meanwhile kept (real delta-rs tables in a temp dir)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from streaming.compaction import Compactor
from streaming.sinks import OpenTables

NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def rows(day: date, *values: int) -> pa.Table:
    return pa.table({"x": pa.array(values, pa.int64()), "date": pa.array([day] * len(values))})


def files_by_date(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for action in pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist():
        day = str(action["partition.date"])
        counts[day] = counts.get(day, 0) + 1
    return counts


def kept(*paths: str) -> OpenTables:
    tables = OpenTables()
    for path in paths:
        tables.keep(path, DeltaTable(path))
    return tables


def test_the_recent_partitions_are_bin_packed_and_older_ones_left_as_they_are(tmp_path):
    path = str(tmp_path / "spreads")
    value = 0
    for day in (date(2026, 11, 29), date(2026, 12, 1), date(2026, 12, 2)):
        for _ in range(5):
            value += 1
            write_deltalake(path, rows(day, value), partition_by=["date"], mode="append")
    before = DeltaTable(path).version()

    done = Compactor(kept(path), every_s=600).compact_once(now=NOW)

    assert files_by_date(path) == {"2026-11-29": 5, "2026-12-01": 1, "2026-12-02": 1}
    assert [(d["files_removed"], d["files_added"]) for d in done] == [(10, 2)]
    assert sorted(DeltaTable(path).to_pyarrow_table()["x"].to_pylist()) == list(range(1, 16))
    assert DeltaTable(path, version=before).to_pyarrow_table().num_rows == 15  # time travel still reads its files
    assert Compactor(kept(path), every_s=600).compact_once(now=NOW) == []  # nothing left to do


def test_appends_committed_while_compacting_are_kept_and_never_fail(tmp_path):
    path = str(tmp_path / "spreads")
    today = NOW.date()
    write_deltalake(path, rows(today, 0), partition_by=["date"], mode="append")
    compactor = Compactor(kept(path), every_s=600)
    errors: list[BaseException] = []

    def append() -> None:
        try:
            for value in range(1, 121):
                write_deltalake(path, rows(today, value), partition_by=["date"], mode="append")
        except BaseException as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    writer = threading.Thread(target=append)
    writer.start()
    passes = 0
    while writer.is_alive():
        compactor.compact_once(now=NOW)
        passes += 1
    writer.join()
    compactor.compact_once(now=NOW)

    assert errors == [] and passes >= 2
    assert sorted(DeltaTable(path).to_pyarrow_table()["x"].to_pylist()) == list(range(121))
    assert files_by_date(path) == {today.isoformat(): 1}
