"""Alerts: where the streaming job sends them (`AlertSinks`) and how people read them back (`arb alerts`).

The alert object (docs/DATA_MODEL.md) is one JSON line in `Settings.alert_log` and the same object on `arb.alerts`:

    {"v": 1, "type": "arb_window", "event": "OPEN", "window_id": "BTC/USD|buy_binance_sell_coinbase|1763771234567000",
     "pair": "BTC/USD", "direction": "buy_binance_sell_coinbase", "net_bps": "12.4", "peak_net_bps": "12.4",
     "size": "0.5", "est_profit": "41.2", "start_ts": "2026-11-22T00:40:34.567Z", "end_ts": null, "duration_ms": null,
     "ticks": 1, "close_reason": null, "emitted_ts": "2026-11-22T00:40:34.912Z"}

`arb alerts [--follow] [--pair P] [--min-bps X] [--since T] [--json]` prints one line per alert, like `tail -f`,
and keeps following across log rotation (a new file under the same name, or the file truncated).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, TextIO

import orjson

from arb.argtypes import finite_decimal
from arb.logs import log_event

log = logging.getLogger("alerts")

# ---- the alert object ------------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        ts = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, int):  # µs since the epoch
        return _iso(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value))
    return str(value)


def plain_decimal(value: Any) -> str | None:
    """A money figure (Decimal, or an exact decimal string) in its shortest plain form: 12.5, not 12.500000."""
    if value is None:
        return None
    return format(Decimal(str(value)).normalize(), "f")


def window_alert(row: Mapping[str, Any], emitted_ts: Any = None) -> dict[str, Any]:
    """The alert object for one gold/arb_windows event row (datetimes or µs ints, Decimals).

    `net_bps` is the row's `net_bps` when it has one (the tick that caused the event), else its `peak_net_bps`.
    """
    net = row.get("net_bps", row.get("peak_net_bps"))
    return {
        "v": 1, "type": "arb_window", "event": row["event"], "window_id": row["window_id"], "pair": row["pair"],
        "direction": row["direction"], "net_bps": plain_decimal(net),
        "peak_net_bps": plain_decimal(row.get("peak_net_bps")), "size": plain_decimal(row.get("size_at_peak")),
        "est_profit": plain_decimal(row.get("profit_at_peak")),
        "start_ts": _iso(row.get("start_ts")), "end_ts": _iso(row.get("end_ts")),
        "duration_ms": row.get("duration_ms"), "ticks": row.get("ticks"), "close_reason": row.get("close_reason"),
        "emitted_ts": _iso(emitted_ts if emitted_ts is not None else row.get("emitted_ts")),
    }


# ---- formatting (shared with the dashboard) ---------------------------------------------------------------------

_COLORS = {"OPEN": "\x1b[1;32m", "CLOSE": "\x1b[33m", "other": "\x1b[1;35m"}
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_DIRECTIONS = {
    "buy_coinbase_sell_binance": "buy coinbase → sell binance",
    "buy_binance_sell_coinbase": "buy binance → sell coinbase",
}


def _num(value: Any, places: int) -> str:
    try:
        return f"{Decimal(str(value)):,.{places}f}"
    except (InvalidOperation, ValueError):
        return "?"


def _duration(ms: Any) -> str:
    if ms is None:
        return "-"
    seconds = int(ms) / 1000
    return f"{seconds:.3f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def format_alert(alert: Mapping[str, Any], color: bool = False) -> str:
    """One readable line: time, event, pair, direction, net bps, size, est. profit, duration.

    >>> format_alert({"event": "OPEN", "pair": "BTC/USD", "direction": "buy_binance_sell_coinbase",
    ...     "net_bps": "12.4", "size": "0.5", "est_profit": "41.2", "emitted_ts": "2026-11-22T00:40:34.912Z"})
    '2026-11-22 00:40:34.912  OPEN   BTC/USD   buy binance → sell coinbase  net 12.40 bps  size 0.5  est. profit 41.20  duration -'
    """
    event = str(alert.get("event", "?"))
    when = str(alert.get("emitted_ts") or "").replace("T", " ").rstrip("Z")
    pair = str(alert.get("pair", "?"))
    if alert.get("type", "arb_window") != "arb_window":
        extra = "  ".join(f"{k}={v}" for k, v in alert.items() if k not in {"v", "type", "event", "pair", "emitted_ts"})
        line = f"{when}  {event:<6} {pair:<9} {alert.get('type')}  {extra}".rstrip()
        return f"{_COLORS['other']}{line}{_RESET}" if color else line
    direction = _DIRECTIONS.get(str(alert.get("direction")), str(alert.get("direction", "?")))
    net = alert.get("net_bps") if event == "OPEN" else alert.get("peak_net_bps", alert.get("net_bps"))
    net_label = "net" if event == "OPEN" else "peak"
    size = alert.get("size")
    size_text = "?" if size is None else format(Decimal(str(size)).normalize(), "f")
    tail = f"duration {_duration(alert.get('duration_ms'))}"
    if alert.get("close_reason"):
        tail += f" ({alert['close_reason']})"
    head = f"{event:<6} {pair:<9} {direction}"
    body = f"{net_label} {_num(net, 2)} bps  size {size_text}  est. profit {_num(alert.get('est_profit'), 2)}  {tail}"
    if not color:
        return f"{when}  {head}  {body}"
    return f"{_DIM}{when}{_RESET}  {_COLORS.get(event, _COLORS['other'])}{head}{_RESET}  {body}"


# ---- reading and following the log -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertFilter:
    pair: str | None = None
    min_bps: Decimal | None = None
    since_us: int | None = None

    def matches(self, alert: Mapping[str, Any]) -> bool:
        if self.pair is not None and alert.get("pair") != self.pair:
            return False
        if self.min_bps is not None:
            bps = alert.get("peak_net_bps") or alert.get("net_bps")
            try:
                if bps is None or Decimal(str(bps)) < self.min_bps:
                    return False
            except InvalidOperation:
                return False
        if self.since_us is not None:
            emitted = _parse_time_us(alert.get("emitted_ts"))
            if emitted is None or emitted < self.since_us:
                return False
        return True


def _parse_time_us(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1_000_000)


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> int:
    """`--since`: an ISO time (`2026-11-22T00:40Z`, UTC if no zone) or an age (`90s`, `10m`, `2h`, `1d`) -> µs."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return int(((time.time() if now is None else now) - seconds) * 1_000_000)
    us = _parse_time_us(text)
    if us is None:
        raise ValueError(f"invalid time {text!r}: expected ISO 8601 (2026-11-22T00:40:00Z) or an age like 10m")
    return us


def parse_lines(lines: Iterator[str], on_bad: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            alert = orjson.loads(line)
        except orjson.JSONDecodeError:
            alert = None
        if isinstance(alert, dict):
            yield alert
        elif on_bad is not None:
            on_bad(line)


class LogFollower:
    """Complete lines of a growing file, across rotation: `tail -F` semantics.

    Rotation is noticed by the path's inode changing (the old file is read to its end first) or by the file
    shrinking (truncated in place: read again from the start). A missing file is waited for.
    """

    def __init__(self, path: Path, poll_s: float = 0.2, from_start: bool = True) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._fh = None
        self._inode: tuple[int, int] | None = None
        self._buffer = b""
        self._from_start = from_start

    def _open(self) -> bool:
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        self._fh, self._inode, self._buffer = fh, (st.st_dev, st.st_ino), b""
        if not self._from_start:
            fh.seek(0, os.SEEK_END)
        self._from_start = True  # a file that replaces this one is new: read it whole
        return True

    def read_available(self) -> list[str]:
        """Every complete line written since the last call (may be empty)."""
        if self._fh is None and not self._open():
            return []
        assert self._fh is not None
        lines = self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return lines  # rotated away, not yet recreated: keep the old handle until it is
        if (st.st_dev, st.st_ino) != self._inode:
            lines += self._drain(final=True)
            self._fh.close()
            self._fh = None
            if self._open():
                lines += self._drain()
        elif st.st_size < self._fh.tell():
            self._fh.seek(0)
            self._buffer = b""
            lines += self._drain()
        return lines

    def _drain(self, final: bool = False) -> list[str]:
        assert self._fh is not None
        data = self._buffer + self._fh.read()
        *complete, self._buffer = data.split(b"\n")
        if final and self._buffer:
            complete.append(self._buffer)
            self._buffer = b""
        return [line.decode("utf-8", errors="replace") for line in complete]

    def follow(self, stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
        while not stop():
            lines = self.read_available()
            yield from lines
            if not lines:
                time.sleep(self.poll_s)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def run_tail(path: Path, flt: AlertFilter, out: TextIO, *, follow: bool, as_json: bool, color: bool,
             last: int | None, stop: Callable[[], bool] = lambda: False, poll_s: float = 0.2) -> int:
    """Print matching alerts of `path` (the last `last` of them, or all when None), then follow if asked."""

    def bad(line: str) -> None:
        print(f"arb alerts: skipping a line that is not an alert: {line[:120]}", file=sys.stderr)

    def emit(alert: dict) -> None:
        out.write((orjson.dumps(alert).decode() if as_json else format_alert(alert, color=color)) + "\n")

    follower = LogFollower(path, poll_s=poll_s)
    try:
        existing = [a for a in parse_lines(iter(follower.read_available()), bad) if flt.matches(a)]
        if last is not None:
            existing = existing[-last:] if last > 0 else []
        for alert in existing:
            emit(alert)
        out.flush()
        if not follow:
            if not path.exists():
                print(f"arb alerts: no alert log at {path} yet", file=sys.stderr)
            return 0
        for line in follower.follow(stop):
            for alert in parse_lines(iter([line]), bad):
                if flt.matches(alert):
                    emit(alert)
                    out.flush()
        return 0
    finally:
        follower.close()


# ---- CLI -------------------------------------------------------------------------------------------------------

def _since_arg(text: str) -> int:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _lines_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid line count {text!r}: expected an integer >= 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "alerts", help="print (and follow) the arbitrage alert log",
        description="Print the alert log (Settings.alert_log) one readable line per OPEN/CLOSE; --follow keeps "
                    "printing new alerts like tail -F, across log rotation.",
    )
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new alerts as they arrive")
    parser.add_argument("--pair", help="only this pair, e.g. BTC/USD")
    parser.add_argument("--min-bps", type=finite_decimal, metavar="X", help="only alerts whose (peak) net bps >= X")
    parser.add_argument("--since", type=_since_arg, metavar="T",
                        help="only alerts emitted at/after T: ISO time (UTC) or an age like 30s, 10m, 2h, 1d")
    parser.add_argument("-n", "--lines", type=_lines_arg, metavar="N",
                        help="print the last N matching alerts first (default: 10, or all with --since)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line (for scripts)")
    parser.add_argument("--log", type=Path, metavar="PATH", help="alert log to read (default: Settings.alert_log)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, settings) -> int:
    path = args.log or Path(settings.alert_log)
    last = args.lines if args.lines is not None else (None if args.since is not None else 10)
    flt = AlertFilter(pair=args.pair, min_bps=args.min_bps, since_us=args.since)
    color = not args.json and sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
    try:
        return run_tail(path, flt, sys.stdout, follow=args.follow, as_json=args.json, color=color, last=last)
    except BrokenPipeError:  # `arb alerts | head`
        return 0


# ---- sinks: where the streaming job sends alerts ------------------------------------------------------------------

class AlertSink(Protocol):
    name: str

    def emit(self, alert: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class LogSink:
    """Appends one JSON line per alert to the alert log (O_APPEND: a line is never interleaved)."""

    name = "log"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def emit(self, alert: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opened per alert so that a rotated log is picked up at once (alerts are rare).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, orjson.dumps(dict(alert)) + b"\n")
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


class KafkaSink:
    """Produces each alert to the alerts topic, keyed by pair (idempotent producer)."""

    name = "kafka"

    def __init__(self, kafka_settings, producer=None) -> None:
        self.topic = kafka_settings.topics.alerts
        if producer is None:
            from confluent_kafka import Producer

            conf = dict(kafka_settings.client_config())
            conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5})
            producer = Producer(conf)
        self._producer = producer

    def emit(self, alert: Mapping[str, Any]) -> None:
        self._producer.produce(self.topic, key=str(alert.get("pair", "")).encode(), value=orjson.dumps(dict(alert)),
                               on_delivery=self._delivered)
        self._producer.poll(0)

    @staticmethod
    def _delivered(err, msg) -> None:
        if err is not None:
            log_event(log, "alert_delivery_failed", logging.WARNING, sink="kafka", error=str(err))

    def close(self, timeout_s: float = 10.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            log_event(log, "alerts_undelivered", logging.WARNING, sink="kafka", count=remaining)


def redact_url(url: str) -> str:
    """`https://hooks.example.com/services/T0/B0/token` -> `https://hooks.example.com/...`: webhook paths and
    query strings are credentials (Slack, Teams), so logs show only where an alert went."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = f"{parts.hostname or ''}:{parts.port}" if parts.port else parts.hostname or ""
    except ValueError:  # a port that is not a number
        return "<redacted>"
    return f"{parts.scheme}://{netloc}/..." if parts.scheme else "<redacted>"


class WebhookSink:
    """POSTs each alert as JSON to a URL from a background thread, retrying with exponential backoff.

    Retries on connection errors, timeouts, HTTP 429 and 5xx; other 4xx answers are final. `emit` never blocks the
    caller (the streaming micro-batch): alerts queue up to `max_queue`, and beyond that the oldest are dropped.
    """

    name = "webhook"

    def __init__(self, url: str, retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 timeout_s: float = 5.0, max_queue: int = 1000, sleep: Callable[[float], None] = time.sleep) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s), got {redact_url(url)!r}")
        self.url, self.retries, self.backoff_s, self.max_backoff_s = url, retries, backoff_s, max_backoff_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self._sleep = sleep
        self._queue: queue.Queue[dict | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def emit(self, alert: Mapping[str, Any]) -> None:
        while True:
            try:
                self._queue.put_nowait(dict(alert))
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.failed += 1
                except queue.Empty:
                    pass

    def post(self, alert: Mapping[str, Any]) -> bool:
        """Deliver one alert now (with retries); True when the endpoint accepted it."""
        body = orjson.dumps(dict(alert))
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as exc:
                retryable = exc.code == 429 or exc.code >= 500
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                retryable, reason = True, str(getattr(exc, "reason", exc))
            if not retryable or attempt == self.retries:
                log_event(log, "webhook_failed", logging.WARNING, url=redact_url(self.url), attempts=attempt + 1, reason=reason)
                return False
            delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
            log_event(log, "webhook_retry", logging.INFO, url=redact_url(self.url), attempt=attempt + 1, reason=reason,
                      delay_s=delay)
            self._sleep(delay)
        return False

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                if self.post(alert):
                    self.delivered += 1
                else:
                    self.failed += 1
            finally:
                self._queue.task_done()

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued (up to `timeout_s`), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)


@dataclass
class AlertSinks:
    """Fan one alert out to every configured sink; a failing sink is logged and never stops the others."""

    sinks: list[AlertSink] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings, kafka: bool = True, webhook_url: str | None = None,
                      environ: Mapping[str, str] | None = None) -> "AlertSinks":
        """The log always; the alerts topic unless `kafka=False`; a webhook when `webhook_url` or the
        `ARB_ALERT_WEBHOOK_URL` environment variable is set (`ARB_ALERT_WEBHOOK_RETRIES`, default 5)."""
        env = os.environ if environ is None else environ
        sinks: list[AlertSink] = [LogSink(Path(settings.alert_log))]
        if kafka:
            sinks.append(KafkaSink(settings.kafka))
        url = webhook_url or env.get("ARB_ALERT_WEBHOOK_URL")
        if url:
            retries_raw = env.get("ARB_ALERT_WEBHOOK_RETRIES", "5")
            try:
                retries = int(retries_raw)
            except ValueError:
                from arb.settings import ConfigError

                raise ConfigError(f"ARB_ALERT_WEBHOOK_RETRIES must be an integer, got {retries_raw!r}") from None
            sinks.append(WebhookSink(url, retries=retries))
        return cls(sinks)

    def emit(self, alert: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.emit(alert)
            except Exception as exc:  # one broken sink must not lose the alert for the others
                log_event(log, "alert_sink_failed", logging.ERROR, sink=sink.name, error=repr(exc))

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log_event(log, "alert_sink_close_failed", logging.ERROR, sink=sink.name, error=repr(exc))

    def __enter__(self) -> "AlertSinks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
