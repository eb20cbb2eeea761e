"""foreachBatch sinks: several Delta tables (and the alerts) per micro-batch, each write idempotent.

A micro-batch replayed after a crash has the same batch id and the same rows. Delta writes carry
`txnAppId=<query id>/<table>` and `txnVersion=<batch id>`, so Delta skips a batch it already committed. Alert lines
are keyed by `window_id` + `event`: a key already in the alert log is neither logged nor published again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from arb.alerts import plain_decimal
from arb.logs import log_event
from streaming import hotpath, transforms
from streaming.config import StreamingConfig, join_path

log = logging.getLogger("streaming.sink")


def write_delta(df: DataFrame, path: str, app_id: str, batch_id: int, partition_by: Iterable[str] = ("date",)) -> None:
    """Append `df` to the Delta table at `path` once per (app_id, batch_id), even if called again after a crash."""
    (df.write.format("delta").mode("append")
     .option("txnAppId", app_id).option("txnVersion", batch_id)
     .partitionBy(*partition_by).save(path))


def is_local(path: str) -> bool:
    """A plain filesystem path (or file: URI), which delta-rs can write without Hadoop."""
    return "://" not in path or path.startswith("file://")


class ArrowSplit:
    """Several tables of one micro-batch in one Spark job: name -> Arrow table, as `rows.of(frame).toArrow()` each.

    Each row is tagged with the first table whose condition it meets (the tables' conditions are exclusive: every
    row feeds at most one), and carries that table's columns only (the others null, so a dead letter's raw text is
    not copied into every row). The projection's columns are built once and reused for every micro-batch (built
    anew, its few hundred py4j calls took ~0.3 s per batch, idle); so is each table's Arrow schema (types and
    nullability as Spark's own `toArrow` gives them: the frame's schema does not change). A table's `stamped`
    columns come back as the driver's clock at the collect.
    """

    def __init__(self, tables: dict[str, transforms.TableRows]) -> None:
        self.tables = tables
        names = list(tables)
        tag = F.when(tables[names[0]].where, F.lit(0))
        for index, name in enumerate(names[1:], start=1):
            tag = tag.when(tables[name].where, F.lit(index))
        self.tag = tag.alias("_table")
        self.columns = [
            F.when(F.col("_table") == index, F.lit(None) if column_name in rows.stamped else column)
            .alias(f"_{index}_{column_name}")
            for index, (name, rows) in enumerate(tables.items()) for column_name, column in rows.columns.items()]
        self.schemas: dict[str, Any] = {}

    def collect(self, frame: DataFrame) -> dict[str, Any]:
        from pyspark.sql.pandas.types import to_arrow_schema

        collected = frame.select("*", self.tag).select("_table", *self.columns).toArrow()
        now = datetime.now(UTC)
        out = {}
        for index, (name, rows) in enumerate(self.tables.items()):
            if name not in self.schemas:
                self.schemas[name] = to_arrow_schema(rows.of(frame).schema,
                                                     error_on_duplicated_field_names_in_struct=True, timezone="UTC")
            schema = self.schemas[name]
            part = collected.select([f"_{index}_{column_name}" for column_name in rows.columns])
            part = part.filter(pc.equal(collected["_table"], index)).rename_columns(list(rows.columns))
            for column_name in rows.stamped:
                at = part.schema.get_field_index(column_name)
                stamp = pa.repeat(pa.scalar(now, schema.field(column_name).type), part.num_rows)
                part = part.set_column(at, column_name, stamp)
            out[name] = part.cast(schema)
        return out


class Laps:
    """A sink's per-batch timings: `lap(name)` records the milliseconds since the previous lap (or the start)."""

    def __init__(self) -> None:
        self.ms: dict[str, int] = {}
        self._clock = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.ms[name] = int((now - self._clock) * 1000)
        self._clock = now


class LakeSink:
    """One micro-batch -> several Delta tables of the lake, each committed once per (query, table, batch id).

    A local lake: one Spark job collects every table's rows in Arrow (`ArrowSplit`) and delta-rs commits them from
    the driver. A Hadoop lake (s3a://...): Spark's Delta writer, one write per table over the cached batch.
    """

    def __init__(self, config: StreamingConfig, query_id: QueryId,
                 tables: Callable[[], dict[str, transforms.TableRows]], job: str = "lake") -> None:
        self.config = config
        self.query_id = query_id
        self.make_tables = tables  # called at the first batch (Spark columns need the session), then kept
        self.job = job
        self.splitter: ArrowSplit | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self.splitter is None:
            self.splitter = ArrowSplit(self.make_tables())
        tables = self.splitter.tables
        query = self.query_id.get()
        if is_local(self.config.lake):
            laps = Laps()
            split = self.splitter.collect(batch)
            laps.lap("collect_ms")
            for name, table in split.items():
                append_arrow(table, self.config.table(name), f"{query}/{name}", batch_id, ["date"])
            laps.lap("write_ms")
            log_event(log, "lake_batch", level=logging.DEBUG, job=self.job, batch_id=batch_id,
                      rows=sum(t.num_rows for t in split.values()), **laps.ms)
            return
        batch.persist()
        try:
            for name, rows in tables.items():
                write_delta(rows.of(batch), self.config.table(name), f"{query}/{name}", batch_id)
        finally:
            batch.unpersist()


def append_table(spark: Any, table: Any, path: str, app_id: str, batch_id: int) -> None:
    """Rows already in Arrow in the driver -> the table at `path` (partitioned by `date`), once per batch id."""
    if is_local(path):
        append_arrow(table, path, app_id, batch_id, ["date"])
    else:
        write_delta(spark.createDataFrame(table), path, app_id, batch_id)


def append_arrow(table: Any, path: str, app_id: str, version: int, partition_by: list[str]) -> bool:
    """Append an Arrow table with delta-rs, once per (app_id, version) like `write_delta`; False if already there
    or if there is nothing to add (an empty table is written only to create the table, so readers find it).

    Local lakes are written through delta-rs from the driver: ~50 ms per commit instead of the 1-3 s a Spark Delta
    write costs on a loaded 2-core machine (docs/BENCHMARKS.md). Same Delta protocol, read by Spark as usual.
    """
    from deltalake import CommitProperties, Transaction, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    try:
        delta = open_tables.open(path)
    except TableNotFoundError:
        delta = None
    if delta is not None:
        done = delta.transaction_version(app_id)
        if (done is not None and done >= version) or table.num_rows == 0:
            return False
    commit = CommitProperties(app_transactions=[Transaction(app_id, version)])
    write_deltalake(path if delta is None else delta, table, partition_by=partition_by, mode="append",
                    commit_properties=commit)
    open_tables.keep(path, delta)
    return True


class OpenTables:
    """delta-rs tables kept open between micro-batches. Opening one replays its log (checkpoint + commits since), and
    each append did that twice, more slowly as the log grew (11 ms at the first commits, 59 ms after 300 here); a
    kept table reads only the commits made since. A kept table is dropped when the commit file of its version is
    no longer the one it saw (the table was deleted or re-created under it): then it is opened afresh.

    A kept table is also opened afresh every `reopen_commits` commits: a delta-rs table updated commit by commit
    appends ever more slowly (30 ms after 250 commits, 465 ms after 3,000 here: half an hour of the hot path), while
    one opened from the latest checkpoint appends in ~60 ms at 3,000 files (docs/BENCHMARKS.md, "Delta appends")."""

    def __init__(self, reopen_commits: int = 100) -> None:
        self._tables: dict[str, tuple[Any, tuple[int, int, int] | None, int]] = {}
        self._lock = threading.Lock()
        self.reopen_commits = reopen_commits

    @staticmethod
    def _commit_file(path: str, version: int) -> tuple[int, int, int] | None:
        commit = os.path.join(path.removeprefix("file://"), "_delta_log", f"{version:020d}.json")
        try:
            stat = os.stat(commit)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def open(self, path: str) -> Any:
        """The table at `path`, up to date; raises deltalake's TableNotFoundError if there is none."""
        from deltalake import DeltaTable

        with self._lock:
            kept = self._tables.get(path)
        if kept is not None:
            delta, seen, opened_at = kept
            version = delta.version()
            fresh_enough = version - opened_at < self.reopen_commits
            if seen is not None and fresh_enough and self._commit_file(path, version) == seen:
                delta.update_incremental()
                return delta
        return DeltaTable(path)

    def paths(self) -> list[str]:
        with self._lock:
            return sorted(self._tables)

    def keep(self, path: str, delta: Any) -> None:
        """After a write: keep `delta` (updated by the write), or open the table the write created."""
        from deltalake import DeltaTable

        delta = delta if delta is not None else DeltaTable(path)
        with self._lock:
            kept = self._tables.get(path)
            opened_at = kept[2] if kept is not None and kept[0] is delta else delta.version()
            self._tables[path] = (delta, self._commit_file(path, delta.version()), opened_at)


open_tables = OpenTables()  # the local tables this process appends to (streaming.compaction compacts them)


class LakeSpool:
    """Appends to local Delta tables taken off a query's critical path, without giving up exactly-once.

    `put` writes a micro-batch's tables to Arrow IPC files in the spool directory (fsync'd, then renamed into place)
    and returns; a writer thread appends them (`append_arrow`: once per app id and batch id) while Spark runs the
    next batch, then deletes the files. Spark commits a batch only after its sink returns, so a committed batch's
    rows are in Delta or still in the spool: whatever a crash left there is appended when the spool is next opened,
    in batch order, before any new batch. At most two batches wait for the writer (one appending, one queued; a
    third `put` waits for room), and a failed append is raised by the next `put` or `flush`, its files kept for
    the next opening.

    One spool per directory in a process (`LakeSpool.open`): a restarted query takes over the running one, so two
    writers never append the same file.
    """

    _open: dict[str, "LakeSpool"] = {}
    _open_lock = threading.Lock()

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory.removeprefix("file://"))
        self.directory.mkdir(parents=True, exist_ok=True)
        # (batch id, [(table name, spool file, arrow table, table path, app id)]), or None to stop
        self._queue: queue.Queue[tuple[int, list[tuple[str, Path, Any, str, str]]] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lake-spool", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, directory: str) -> "LakeSpool":
        """The process's spool at `directory`, with every batch a previous run left in it appended."""
        with cls._open_lock:
            spool = cls._open.get(directory)
            if spool is None:
                spool = cls._open[directory] = cls(directory)
            else:
                spool.drain()  # the previous query's last batch
                spool._error = None  # its files are still here: replayed below
        spool.replay()
        return spool

    @staticmethod
    def _file_name(batch_id: int, name: str) -> str:
        return f"{batch_id:020d}.{name}.arrow"

    @staticmethod
    def _batch_of(file: Path) -> int:
        return int(file.name.split(".", 1)[0])

    def put(self, batch_id: int, tables: list[tuple[str, Any, str, str]]) -> None:
        """Spool `(name, arrow table, table path, app id)` of micro-batch `batch_id`, durably, for the writer."""
        self._raise_failure()
        spooled = []
        for name, table, path, app_id in tables:
            file = self.directory / self._file_name(batch_id, name)
            metadata = {b"arb.table": path.encode(), b"arb.app_id": app_id.encode()}
            partial = file.with_suffix(".partial")
            with open(partial, "wb") as sink:
                with pa.ipc.new_file(sink, table.schema.with_metadata(metadata)) as writer:
                    writer.write_table(table.replace_schema_metadata(metadata))
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(partial, file)
            spooled.append((name, file, table, path, app_id))
        if not spooled:
            return
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the renames themselves
        finally:
            os.close(directory)
        self._queue.put((batch_id, spooled))

    def flush(self) -> None:
        """Wait until every spooled batch is in Delta; raises the writer's failure if there was one."""
        self.drain()
        self._raise_failure()

    def drain(self) -> None:
        """Wait until the writer is idle (a failure stays logged, and its files in the spool)."""
        self._queue.join()

    def replay(self) -> int:
        """Append every spooled file, in batch order, from this thread; returns how many there were."""
        files = sorted(self.directory.glob("*.arrow"))
        for file in files:
            table = pa.ipc.open_file(file).read_all()
            metadata = table.schema.metadata
            self._append(self._batch_of(file), file, table.replace_schema_metadata(None),
                         metadata[b"arb.table"].decode(), metadata[b"arb.app_id"].decode())
        if files:
            log_event(log, "spool_replayed", directory=str(self.directory), files=len(files))
        return len(files)

    @staticmethod
    def _append(batch_id: int, file: Path, table: Any, path: str, app_id: str) -> None:
        append_arrow(table, path, app_id, batch_id, ["date"])
        file.unlink(missing_ok=True)  # a batch put twice (run again) is one file

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"a spooled Delta append failed (kept in {self.directory}): {self._error}") \
                from self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure, later batches wait in the spool for the next opening
                    batch_id, spooled = item
                    laps = Laps()
                    for name, file, table, path, app_id in spooled:
                        self._append(batch_id, file, table, path, app_id)
                        laps.lap(f"{name}_ms")
                    log_event(log, "lake_batch", level=logging.DEBUG, job="hotpath", batch_id=batch_id,
                              rows=sum(entry[2].num_rows for entry in spooled), **laps.ms)
            except Exception as exc:  # noqa: BLE001 - raised to the query by the next put or flush
                log_event(log, "spool_append_failed", logging.ERROR, directory=str(self.directory),
                          error=f"{type(exc).__name__}: {exc}")
                self._error = exc
            finally:
                self._queue.task_done()


class QueryId:
    """The query's id, known only once `start()` returns; the first batch may run before that."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._ready = threading.Event()

    def set(self, query_id: str) -> None:
        self._id = query_id
        self._ready.set()

    def get(self) -> str:
        if not self._ready.wait(timeout=120):
            raise RuntimeError("streaming query id was never set")
        assert self._id is not None
        return self._id


def bronze_sink(config: StreamingConfig, query_id: QueryId) -> LakeSink:
    """Kafka records -> bronze/coinbase, bronze/binance, bronze/feed_status (by topic)."""
    topics = config.topics
    by_table = {
        "bronze/coinbase": [topics.quotes("coinbase"), topics.trades("coinbase")],
        "bronze/binance": [topics.quotes("binance"), topics.trades("binance")],
        "bronze/feed_status": [topics.feed_status],
    }
    return LakeSink(config, query_id, lambda: transforms.bronze_tables(by_table), "bronze")


def silver_sink(config: StreamingConfig, query_id: QueryId) -> LakeSink:
    """Parsed, deduplicated events -> silver quotes, trades, feed status and dead letter."""
    return LakeSink(config, query_id, transforms.silver_tables, "silver")


def _iso(ts_us: int | None) -> str | None:
    if ts_us is None:
        return None
    return datetime.fromtimestamp(ts_us / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def alert_line(row: dict, emitted_us: int) -> dict:
    """A gold window event -> the alert JSON object of docs/DATA_MODEL.md."""
    return {
        "v": 1, "type": "arb_window", "event": row["event"], "window_id": row["window_id"], "pair": row["pair"],
        "direction": row["direction"], "net_bps": plain_decimal(row["peak_net_bps"]),
        "peak_net_bps": plain_decimal(row["peak_net_bps"]), "mean_net_bps": plain_decimal(row["mean_net_bps"]),
        "size": plain_decimal(row["size_at_peak"]), "est_profit": plain_decimal(row["profit_at_peak"]),
        "start_ts": _iso(row["start_ts_us"]), "end_ts": _iso(row["end_ts_us"]), "duration_ms": row["duration_ms"],
        "ticks": row["ticks"], "close_reason": row["close_reason"], "emitted_ts": _iso(emitted_us),
    }


class AlertLog:
    """The JSON Lines alert log plus the alerts topic (and the webhook if configured), deduplicated on
    (window_id, event)."""

    def __init__(self, path: str, topic: str, kafka_client: dict[str, str] | None,
                 webhook_url: str | None = None) -> None:
        self.path = Path(path)
        self.topic = topic
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seen: set[tuple[str, str]] = set()
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a crash mid-write
                self.seen.add((doc.get("window_id"), doc.get("event")))
        self._producer = None
        if kafka_client is not None:
            from confluent_kafka import Producer

            self._producer = Producer({**kafka_client, "enable.idempotence": True, "acks": "all", "linger.ms": 0})
        self._webhook = None
        if webhook_url:
            from arb.alerts import WebhookSink

            self._webhook = WebhookSink(webhook_url)  # posts from its own thread: never holds up the batch

    def emit(self, rows: list[dict]) -> list[dict]:
        """Publish and log the events not logged before; returns the lines written."""
        now_us = time.time_ns() // 1000
        lines = []
        for row in sorted(rows, key=lambda r: (r["end_ts_us"] or r["start_ts_us"], r["event"] == "OPEN")):
            key = (row["window_id"], row["event"])
            if key in self.seen:
                continue
            lines.append(alert_line(row, now_us))
        if not lines:
            return []
        payloads = [json.dumps(line, separators=(",", ":")) for line in lines]
        if self._producer is not None:
            for line, payload in zip(lines, payloads):
                self._producer.produce(self.topic, key=line["pair"].encode(), value=payload.encode())
            self._producer.flush(10)
        # Logged after the topic has them: a crash in between re-publishes (at least once on the topic).
        with self.path.open("a") as f:
            f.write("".join(p + "\n" for p in payloads))
            f.flush()
            os.fsync(f.fileno())
        for line in lines:
            self.seen.add((line["window_id"], line["event"]))
            if self._webhook is not None:
                self._webhook.emit(line)
        return lines


class SpooledQuery(StreamingQuery):
    """A query whose sink appends through a `LakeSpool`: once it has ended, been stopped or processed all that is
    available, its batches are in Delta as well, for whoever reads the tables next."""

    def __init__(self, query: StreamingQuery, spool: LakeSpool) -> None:
        super().__init__(query._jsq)
        self.spool = spool

    def awaitTermination(self, timeout: int | None = None) -> bool | None:
        ended = super().awaitTermination(timeout)
        if ended is None or ended:
            self.spool.flush()
        return ended

    def processAllAvailable(self) -> None:
        super().processAllAvailable()
        self.spool.flush()

    def stop(self) -> None:
        super().stop()
        self.spool.drain()  # a failed append was logged and raised to the query; its files wait for the next start


class HotPathSink:
    """Processor output -> alerts first (latency), then silver/spreads and gold/arb_windows (spooled, on a local
    lake); ticks the processor dropped as late are logged (WARNING `late_ticks`) and handed to `on_late`."""

    def __init__(self, config: StreamingConfig, query_id: QueryId, alerts: AlertLog,
                 on_alerts: Callable[[list[dict]], None] | None = None,
                 on_late: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.query_id = query_id
        self.alerts = alerts
        self.on_alerts = on_alerts
        self.on_late = on_late
        # A local lake is appended from a spool beside the query's checkpoint (`LakeSpool`), off the critical path
        # of the next alert; a Hadoop lake is written by Spark, in the batch.
        checkpoint = config.checkpoint("hotpath")
        self.spool = (LakeSpool.open(join_path(checkpoint, "lake_spool"))
                      if is_local(config.lake) and is_local(checkpoint) else None)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        laps = Laps()
        lap = laps.lap
        # One Spark job: Kafka read, parse, processor. Everything after works on the Arrow table in the driver.
        out = batch.toArrow()
        windows = hotpath.windows_arrow(out)
        lap("process_ms")
        if windows.num_rows:
            lines = self.alerts.emit(out.filter(pc.equal(out["kind"], "window")).to_pylist())
            if lines:
                log_event(log, "alerts", batch_id=batch_id, count=len(lines))
                if self.on_alerts is not None:
                    self.on_alerts(lines)
        lap("alerts_ms")
        late = hotpath.late_counts(out)
        if late:
            total = sum(late.values())
            log_event(log, "late_ticks", logging.WARNING, batch_id=batch_id, count=total,
                      pairs=",".join(f"{pair}={n}" for pair, n in sorted(late.items())))
            if self.on_late is not None:
                self.on_late(total)
        qid = self.query_id.get()
        appends = [(name, table, self.config.table(path), f"{qid}/{name}")
                   for name, table, path in (("spreads", hotpath.spreads_arrow(out), "silver/spreads"),
                                             ("windows", windows, "gold/arb_windows")) if table.num_rows]
        if self.spool is not None:
            self.spool.put(batch_id, appends)  # appended while the next batch runs
            lap("spool_ms")
        else:
            for name, table, path, app_id in appends:
                append_table(batch.sparkSession, table, path, app_id, batch_id)
                lap(f"{name}_ms")
        log_event(log, "batch", level=logging.DEBUG, batch_id=batch_id, **laps.ms)
