"""A deterministic synthetic market in wire form, with injected windows, stale feeds and feed gaps, and its truth.

Used by the pipeline tests and `arb bench pipeline`: it publishes `arbitrage.events` straight to the quote and status
topics (the WebSocket emulator -> producer hop is measured by `arb bench ingest`). Each venue quotes each pair at a
fixed interval around a flat mid with a 1 bp half spread: net spreads sit near -70 bps (the taker fees), so nothing
is tradable except where a window is injected by lifting the sell venue's book by `gross_bps`.

Truth of an injected window (docs/RULES.md as-of alignment): it opens at the first lifted quote of the sell venue
(the buy venue's latest quote is fresher than S) and closes at the first unlifted one (`spread`), or at a feed gap.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from decimal import Decimal

from arbitrage.events import FeedState, FeedStatus, Quote, to_json
from arbitrage.rules import RulesConfig
from arbitrage.spread import BUY_COINBASE_SELL_BINANCE

BASE_PRICES = {"BTC/USD": Decimal("65000"), "ETH/USD": Decimal("3200"), "ETH/BTC": Decimal("0.04923")}
HALF_SPREAD = Decimal("0.0001")
BPS = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class Injected:
    """A window to inject: the sell venue's book is lifted by `gross_bps` during [start_us, end_us)."""

    pair: str
    direction: str
    start_us: int
    end_us: int
    gross_bps: Decimal = Decimal("100")
    gap_at_us: int | None = None  # a feed gap on the sell venue at this time ends the window early


@dataclass(frozen=True, slots=True)
class Silence:
    """`exchange` sends nothing for `pair` during [start_us, end_us) while the other venue's mid moves by `pct`."""

    pair: str
    exchange: str
    start_us: int
    end_us: int
    pct: Decimal = Decimal("1.5")


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to publish, in time order."""

    t_us: int
    topic_kind: str  # "quotes:<exchange>" / "status" / "raw:<exchange>"
    key: str
    value: bytes


@dataclass
class Scenario:
    rules: RulesConfig
    start_us: int
    duration_s: float
    quotes_per_s: float  # across both exchanges and every pair
    windows: list[Injected] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    malformed: list[tuple[int, str, str]] = field(default_factory=list)  # (t_us, exchange, raw text)
    tail_s: float = 3.0  # a `connected` status this long after the end pushes the watermark past every deadline

    @property
    def end_us(self) -> int:
        return self.start_us + int(self.duration_s * 1_000_000)

    def _mid(self, pair: str, exchange: str, t_us: int) -> Decimal:
        mid = BASE_PRICES.get(pair, Decimal("100"))
        settle = 2 * self.rules.staleness_us  # move only once the silent venue's last quote is stale
        for s in self.silences:
            if s.pair == pair and s.exchange != exchange and t_us >= s.start_us + settle:
                mid = mid * (1 + s.pct / 100)  # the other venue moves while `s.exchange` is silent
            elif s.pair == pair and s.exchange == exchange and t_us >= s.end_us:
                mid = mid * (1 + s.pct / 100)  # and the silent one resumes at the new level
        return mid

    def _lift(self, pair: str, exchange: str, t_us: int) -> Decimal:
        for w in self.windows:
            sell = "binance" if w.direction == BUY_COINBASE_SELL_BINANCE else "coinbase"
            end = w.end_us if w.gap_at_us is None else min(w.end_us, w.gap_at_us)
            if w.pair == pair and exchange == sell and w.start_us <= t_us < end:
                return 1 + w.gross_bps * BPS
        return Decimal(1)

    def _silent(self, pair: str, exchange: str, t_us: int) -> bool:
        return any(s.pair == pair and s.exchange == exchange and s.start_us <= t_us < s.end_us for s in self.silences)

    def records(self) -> list[Record]:
        """Every record of the scenario in time order (quotes of both venues, statuses, malformed lines)."""
        pairs = self.rules.pairs
        per_stream = self.quotes_per_s / (2 * len(pairs))
        interval = int(1_000_000 / per_stream)
        out: list[Record] = []
        seq = {ex: 0 for ex in ("coinbase", "binance")}
        for k, pair in enumerate(pairs):
            for j, exchange in enumerate(("coinbase", "binance")):
                # Offset the streams so that no two ticks share a timestamp.
                t = self.start_us + 997 * (2 * k + j) + (interval // 2 if exchange == "binance" else 0)
                symbol = pair.symbol_on(exchange)
                while t < self.end_us:
                    if not self._silent(pair.name, exchange, t):
                        mid = self._mid(pair.name, exchange, t) * self._lift(pair.name, exchange, t)
                        rate = pair.binance_rate if exchange == "binance" else Decimal(1)
                        bid = (mid * (1 - HALF_SPREAD) / rate).quantize(Decimal("1e-8"))
                        ask = (mid * (1 + HALF_SPREAD) / rate).quantize(Decimal("1e-8"))
                        seq[exchange] += 1
                        quote = Quote(exchange, symbol, symbol.replace("/", "-" if exchange == "coinbase" else ""),
                                      bid, Decimal("0.5"), ask, Decimal("0.7"),
                                      t if exchange == "coinbase" else None, t, seq[exchange])
                        out.append(Record(t, f"quotes:{exchange}", symbol, to_json(quote)))
                    t += interval
        for w in self.windows:
            if w.gap_at_us is not None:
                sell = "binance" if w.direction == BUY_COINBASE_SELL_BINANCE else "coinbase"
                status = FeedStatus(sell, FeedState.GAP, "synthetic sequence gap", w.gap_at_us,
                                    self.rules.pair(w.pair).symbol_on(sell))
                out.append(Record(w.gap_at_us, "status", sell, to_json(status)))
        for t, exchange, raw in self.malformed:
            out.append(Record(t, f"raw:{exchange}", "bad", raw.encode()))
        tail = self.end_us + int(self.tail_s * 1_000_000)
        out.append(Record(tail, "status", "binance",
                          to_json(FeedStatus("binance", FeedState.CONNECTED, "synthetic end", tail))))
        out.sort(key=lambda r: r.t_us)
        return out

    def truth(self, records: list[Record] | None = None) -> list[dict]:
        """Expected windows: pair, direction, start_us (first lifted sell quote), end_us, close_reason."""
        import orjson

        records = self.records() if records is None else records
        sells = []
        for w in self.windows:
            sell = "binance" if w.direction == BUY_COINBASE_SELL_BINANCE else "coinbase"
            sells.append((f"quotes:{sell}", self.rules.pair(w.pair).symbol_on(sell)))
        # One pass over the records (in time order) for the sell venues' quote times: once per window took a minute
        # for a 300 s market at 5,000 quotes/s.
        times: dict[tuple[str, str], list[int]] = {key: [] for key in sells}
        kinds = {kind for kind, _ in sells}
        for r in records:
            if r.topic_kind in kinds:
                key = (r.topic_kind, orjson.loads(r.value)["symbol"])
                if key in times:
                    times[key].append(r.t_us)
        out = []
        for w, key in zip(self.windows, sells):
            sell_times = times[key]
            start = sell_times[bisect.bisect_left(sell_times, w.start_us)]  # the first lifted quote
            if w.gap_at_us is not None and w.gap_at_us < w.end_us:
                end, reason = w.gap_at_us, "feed_gap"
            else:
                end, reason = sell_times[bisect.bisect_left(sell_times, w.end_us)], "spread"
            out.append({"pair": w.pair, "direction": w.direction, "start_us": start, "end_us": end,
                        "close_reason": reason})
        return out


def topic_for(record: Record, topics) -> str:
    kind, _, exchange = record.topic_kind.partition(":")
    if kind == "status":
        return topics.feed_status
    return topics.quotes(exchange)


def publish(records: list[Record], kafka_client: dict[str, str], topics, realtime: bool = False,
            on_sent=None) -> int:
    """Publish records to Kafka with the producers' settings; with `realtime`, each when the wall clock reaches its
    time. A full local queue (the broker behind) holds the publisher back instead of failing it."""
    import time

    from confluent_kafka import Producer

    from producers.kafka_sink import DEFAULT_PRODUCER_CONFIG

    producer = Producer({**DEFAULT_PRODUCER_CONFIG, **kafka_client})
    sent = 0
    for record in records:
        if realtime:
            delay = record.t_us / 1e6 - time.time()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic_for(record, topics), key=record.key.encode(), value=record.value)
                break
            except BufferError:
                producer.poll(0.01)
        sent += 1
        if on_sent is not None:
            on_sent(record)
        if sent % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    return sent
