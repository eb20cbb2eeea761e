"""Reading the lake for the dashboard: Delta through `deltalake` + `pl.scan_delta`, never Spark.

Every read is bounded: a `date` partition filter (pruning), an event-time filter (Delta file statistics skip the
older files of today's partition) and a column projection. The callbacks keep a cursor per table (the last event
time read, in integer microseconds) in a `dcc.Store` and ask only for rows at or after it, so a refresh reads
seconds of data, not whole tables. State that must survive between refreshes travels in those stores as plain
JSON; the only server-side state is the open `DeltaTable` handles of one `Lake` (one per app).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

from arbitrage.pairs import Pair

SPREADS = "silver/spreads"
QUOTES = "silver/quotes"
WINDOWS = "gold/arb_windows"
FEED_STATUS = "silver/feed_status"

US = 1_000_000
DIRECTION_PREFIX = {"cb_bn": "buy_coinbase_sell_binance", "bn_cb": "buy_binance_sell_coinbase"}


def to_us(ts: datetime) -> int:
    return int(ts.timestamp() * US) if ts.tzinfo else int(ts.replace(tzinfo=UTC).timestamp() * US)


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


class Lake:
    """The Delta tables under one lake directory, opened lazily and kept open (refreshed per read).

    A missing table reads as None, never as an error: the dashboard starts before the streaming jobs.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._tables: dict[str, DeltaTable] = {}
        self._lock = threading.Lock()

    def exists(self, name: str) -> bool:
        return (self.root / name / "_delta_log").is_dir()

    def read(self, name: str, ts_col: str, since_us: int | None, columns: list[str],
             date_margin: timedelta | None = timedelta(0), where: pl.Expr | None = None) -> pl.DataFrame | None:
        """Rows of `name` with `ts_col >= since_us`, only `columns`; None when the table does not exist yet.

        The `date` partition filter starts `date_margin` before `since_us`; None means no partition filter, for
        tables whose `date` is not the date of `ts_col` (the Delta file statistics of `ts_col` still skip files).
        """
        if not self.exists(name):
            return None
        with self._lock:  # DeltaTable handles are not meant to be refreshed and read from several threads at once
            table = self._tables.get(name)
            if table is None:
                table = self._tables[name] = DeltaTable(str(self.root / name))
            else:
                table.update_incremental()
            lf = pl.scan_delta(table)
            if since_us is not None:
                since = from_us(since_us)
                lf = lf.filter(pl.col(ts_col) >= since)
                if date_margin is not None:
                    first_day: date = (since - date_margin).date()
                    lf = lf.filter(pl.col("date") >= first_day)
            if where is not None:
                lf = lf.filter(where)
            return lf.select(columns).collect()


# ---- spreads -----------------------------------------------------------------------------------------------------

def bucket_us(range_s: int, max_buckets: int) -> int:
    """Chart resolution: at most `max_buckets` points per direction, never finer than 250 ms."""
    return max(range_s * US // max_buckets, 250_000)


def spread_buckets(lake: Lake, pair: str, since_us: int, until_us: int, bucket: int) -> pl.DataFrame | None:
    """Per time bucket in [since, until): the best (max) net bps of each direction, as floats for plotting.

    Columns `ts` (bucket start, UTC datetime), `cb_bn`, `bn_cb`. The max, not the mean: a chart of arbitrage
    opportunities must not average a short window away.
    """
    rows = lake.read(
        SPREADS, "event_ts", since_us, ["event_ts", "cb_bn_net_bps", "bn_cb_net_bps"], where=pl.col("pair") == pair
    )
    if rows is None:
        return None
    start = pl.col("event_ts").dt.epoch("us")
    return (
        rows.lazy()
        .filter(pl.col("event_ts") < from_us(until_us))
        .with_columns(((start // bucket) * bucket).alias("bucket_us"))
        .group_by("bucket_us")
        .agg(
            pl.col("cb_bn_net_bps").cast(pl.Float64).max().alias("cb_bn"),
            pl.col("bn_cb_net_bps").cast(pl.Float64).max().alias("bn_cb"),
        )
        .sort("bucket_us")
        .select(pl.from_epoch("bucket_us", time_unit="us").dt.replace_time_zone("UTC").alias("ts"), "cb_bn", "bn_cb")
        .collect()
    )


def settled_until(now_us: int, settle_s: float, bucket: int) -> int:
    """The end of the last bucket that is old enough to be drawn for good (a bucket boundary)."""
    return (now_us - int(settle_s * US)) // bucket * bucket


# ---- quotes ------------------------------------------------------------------------------------------------------

QUOTE_COLUMNS = ["exchange", "symbol", "bid", "bid_size", "ask", "ask_size", "event_ts", "seq"]


def latest_quotes(lake: Lake, pair: Pair, since_us: int) -> list[dict[str, Any]] | None:
    """The newest quote per exchange for `pair`'s two symbols among rows at or after `since_us` (JSON-ready)."""
    wanted = (
        ((pl.col("exchange") == "coinbase") & (pl.col("symbol") == pair.coinbase))
        | ((pl.col("exchange") == "binance") & (pl.col("symbol") == pair.binance))
    )
    rows = lake.read(QUOTES, "event_ts", since_us, QUOTE_COLUMNS, where=wanted)
    if rows is None:
        return None
    newest = rows.sort(["event_ts", "seq"], nulls_last=False).group_by("exchange").last()
    return [_jsonable(r) for r in newest.sort("exchange").iter_rows(named=True)]


def merge_latest(old: list[dict], new: list[dict], key: str, ts: str) -> list[dict]:
    """Keep, per `key`, whichever row has the later `ts` (µs ints)."""
    merged = {row[key]: row for row in old}
    for row in new:
        current = merged.get(row[key])
        if current is None or row[ts] >= current[ts]:
            merged[row[key]] = row
    return sorted(merged.values(), key=lambda r: r[key])


# ---- windows -----------------------------------------------------------------------------------------------------

WINDOW_COLUMNS = ["window_id", "pair", "direction", "event", "start_ts", "end_ts", "duration_ms", "peak_net_bps",
                  "size_at_peak", "profit_at_peak", "ticks", "close_reason", "emitted_ts"]


def window_events(lake: Lake, since_us: int) -> list[dict[str, Any]] | None:
    """Window events emitted at or after `since_us`, oldest first.

    A window's `date` partition is its event's date, which can be long before it was emitted (a replay of old
    data), so no partition filter here: the table is small and the file statistics of `emitted_ts` skip old files.
    """
    rows = lake.read(WINDOWS, "emitted_ts", since_us, WINDOW_COLUMNS, date_margin=None)
    if rows is None:
        return None
    order = pl.when(pl.col("event") == "CLOSE").then(1).otherwise(0)
    rows = rows.sort([pl.col("emitted_ts"), order])
    return [_jsonable(r) for r in rows.iter_rows(named=True)]


def fold_windows(state: list[dict], events: list[dict], keep: int = 50) -> list[dict]:
    """Each window's latest event (a CLOSE beats an OPEN), newest windows first, at most `keep` (open ones kept)."""
    by_id = {w["window_id"]: w for w in state}
    for event in events:
        current = by_id.get(event["window_id"])
        if current is None or current["event"] != "CLOSE" or event["event"] == "CLOSE":
            by_id[event["window_id"]] = event
    windows = sorted(by_id.values(), key=lambda w: w["start_ts"], reverse=True)
    open_ = [w for w in windows if w["event"] == "OPEN"]
    closed = [w for w in windows if w["event"] != "OPEN"]
    return sorted(open_ + closed[: max(keep - len(open_), 0)], key=lambda w: w["start_ts"], reverse=True)


# ---- feed status -------------------------------------------------------------------------------------------------

def feed_status_events(lake: Lake, since_us: int) -> list[dict[str, Any]] | None:
    rows = lake.read(FEED_STATUS, "ts_recv", since_us, ["exchange", "symbol", "state", "detail", "ts_recv"])
    if rows is None:
        return None
    return [_jsonable(r) for r in rows.sort("ts_recv").iter_rows(named=True)]


# ---- metrics files and the alert log -----------------------------------------------------------------------------

def read_metrics(metrics_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """`producer-*.json` and `stream-*.json` as dicts (unreadable or half-written files are skipped)."""
    out: dict[str, list[dict[str, Any]]] = {"producers": [], "streams": []}
    for kind, pattern in (("producers", "producer-*.json"), ("streams", "stream-*.json")):
        for path in sorted(Path(metrics_dir).glob(pattern)):
            try:
                payload = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(payload, dict):
                out[kind].append(payload)
    return out


def tail_alerts(path: Path, limit: int = 20, max_bytes: int = 256 * 1024) -> list[dict[str, Any]]:
    """The last `limit` alerts of the alert log, newest first, reading at most its last `max_bytes`."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(size - max_bytes, 0))
            chunk = fh.read()
    except OSError:
        return []
    lines = chunk.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line is probably cut
    alerts = []
    for line in reversed(lines):
        if not line.strip():
            continue
        try:
            alert = json.loads(line)
        except ValueError:
            continue
        if isinstance(alert, dict):
            alerts.append(alert)
            if len(alerts) >= limit:
                break
    return alerts


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Datetimes to µs ints, decimals to strings: what a dcc.Store can hold."""
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = to_us(value)
        elif value is None or isinstance(value, (int, float, str, bool)):
            out[key] = value
        else:
            out[key] = str(value)
    return out
