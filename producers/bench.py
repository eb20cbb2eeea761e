"""`arb bench ingest`: how fast a producer parses and publishes, and how long a frame takes from receipt to Kafka ack.

Three measurements per exchange, against a real broker (the embedded one is started if none answers; topics get a
`bench.` prefix so a running demo's topics are not touched):

1. Throughput, as fast as it can go: synthetic venue frames (generated before the clock starts, in the mix a busy
   feed sends: Binance 90 % bookTicker / 10 % trade; Coinbase l2update that moves the top, 5 % match, heartbeats)
   go through the producer's own `feed.parse` + `KafkaSink.publish`, then a final flush; frames / busy seconds.
2. The same frames over WebSocket: a bare server in a child process sends them as fast as it can and a whole
   producer (reconnect loop, parse, publish) reads them; frames / (first to last frame + flush).
3. Latency at rate R: the emulator (a child process, so it does not share the producer's interpreter) runs the
   `bench` market at about R frames/s on one exchange; a real producer reads it over WebSocket; for every published
   event, ack time - receive time (the receive stamp is taken when the frame comes off the socket). p50/p99 over
   the measured window, after a 2 s warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import random
import sys
import time
from decimal import Decimal

from arb.argtypes import positive_float
from arb.settings import Settings, Topics
from producers.cli import default_symbols, load_markets, make_feed
from producers.feed import BadFrame

EXCHANGES = ("coinbase", "binance")
WARMUP_S = 2.0


def register_bench(subparsers) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="producer throughput (frames/s) and receive->Kafka-ack latency",
        description="Measure frames/s parsed and published per producer as fast as it can go, and the receive -> "
        "Kafka ack latency (p50/p99) at --rate frames/s against the exchange emulator. Starts the embedded broker "
        "if none answers.",
    )
    parser.add_argument("--rate", type=positive_float, default=2000.0, metavar="R",
                        help="frames/s per exchange for the latency run (default 2000)")
    parser.add_argument("--duration", type=positive_float, default=10.0, metavar="S",
                        help="seconds per measurement (default 10)")
    parser.add_argument("--exchange", choices=EXCHANGES, action="append", default=None,
                        help="only this exchange (repeatable; default both)")
    parser.add_argument("--linger-ms", type=float, default=None, metavar="MS",
                        help="override the producer's linger.ms (default: the producer's own, see kafka_sink.py)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_bench)


# -- synthetic frames ------------------------------------------------------------------------------------------------


class FrameSource:
    """Venue frames for the throughput run: deterministic, ids consecutive, most book frames move the top."""

    def __init__(self, exchange: str, venue_ids: list[str], seed: int = 7) -> None:
        self.exchange = exchange
        self.venue_ids = venue_ids
        self.rng = random.Random(seed)
        # prices as integer ticks: BTC 50,000.00 and ETH 3,000.00 in cents, ETH/BTC 0.05000 in 0.00001
        self.decimals = {v: 5 if v.replace("-", "").endswith("BTC") else 2 for v in venue_ids}
        self.mid = {v: 5_000 if self.decimals[v] == 5 else 5_000_000 if v.startswith("BTC") else 300_000
                    for v in venue_ids}
        self.update_id = 4_000_000_000
        self.trade_id = dict.fromkeys(venue_ids, 100_000_000)
        self.sequence = dict.fromkeys(venue_ids, 50_000_000_000)
        self.time_us = int(time.time() * 1_000_000)

    def _price(self, venue: str, ticks: int) -> str:
        places = 8 if self.exchange == "binance" else self.decimals[venue]
        return f"{Decimal(ticks).scaleb(-self.decimals[venue]):.{places}f}"

    def _iso(self) -> str:
        self.time_us += 50
        secs, micros = divmod(self.time_us, 1_000_000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"

    def snapshots(self) -> list[str]:
        """Coinbase: one 200-level-a-side snapshot per product, sent first (as after a subscribe)."""
        if self.exchange != "coinbase":
            return []
        out = []
        for venue in self.venue_ids:
            mid = self.mid[venue]
            bids = [[self._price(venue, mid - 1 - k), "1.00000000"] for k in range(0, 400, 2)]
            asks = [[self._price(venue, mid + 1 + k), "1.00000000"] for k in range(0, 400, 2)]
            out.append(json.dumps({"type": "snapshot", "product_id": venue, "bids": bids, "asks": asks}))
        return out

    def chunk(self, n: int) -> list[str]:
        return [self._next() for _ in range(n)]

    def _next(self) -> str:
        rng = self.rng
        venue = self.venue_ids[rng.randrange(len(self.venue_ids))]
        step = rng.choice((-1, 1))
        self.mid[venue] += step
        mid = self.mid[venue]
        size = f"{rng.randrange(1, 9000) / 1000:.8f}"
        if self.exchange == "binance":
            if rng.random() < 0.1:
                self.trade_id[venue] += 1
                self.time_us += 100
                ms = self.time_us // 1000
                maker = "true" if rng.random() < 0.5 else "false"
                return (f'{{"stream":"{venue.lower()}@trade","data":{{"e":"trade","E":{ms},"s":"{venue}",'
                        f'"t":{self.trade_id[venue]},"p":"{self._price(venue, mid)}","q":"{size}","T":{ms},'
                        f'"m":{maker},"M":true}}}}')
            self.update_id += rng.randrange(1, 20)
            return (f'{{"stream":"{venue.lower()}@bookTicker","data":{{"u":{self.update_id},"s":"{venue}",'
                    f'"b":"{self._price(venue, mid - 1)}","B":"{size}","a":"{self._price(venue, mid + 1)}",'
                    f'"A":"{size}"}}}}')
        r = rng.random()
        if r < 0.05:
            self.mid[venue] -= step  # trades and heartbeats leave the book alone
            self.trade_id[venue] += 1
            self.sequence[venue] += 3
            side = "buy" if rng.random() < 0.5 else "sell"
            return (f'{{"type":"match","trade_id":{self.trade_id[venue]},"maker_order_id":"a","taker_order_id":"b",'
                    f'"side":"{side}","size":"{size}","price":"{self._price(venue, mid)}","product_id":"{venue}",'
                    f'"sequence":{self.sequence[venue]},"time":"{self._iso()}"}}')
        if r < 0.06:
            self.mid[venue] -= step
            return (f'{{"type":"heartbeat","last_trade_id":{self.trade_id[venue]},"product_id":"{venue}",'
                    f'"sequence":{self.sequence[venue]},"time":"{self._iso()}"}}')
        self.sequence[venue] += 1
        # The book moves one tick: best bid and ask stay one tick either side of the mid (three changes a frame,
        # like a level2_batch message): the level that would cross goes, the new best levels come in.
        if step > 0:
            changes = (f'["buy","{self._price(venue, mid - 1)}","{size}"],["sell","{self._price(venue, mid)}","0"],'
                       f'["sell","{self._price(venue, mid + 1)}","{size}"]')
        else:
            changes = (f'["sell","{self._price(venue, mid + 1)}","{size}"],["buy","{self._price(venue, mid)}","0"],'
                       f'["buy","{self._price(venue, mid - 1)}","{size}"]')
        return f'{{"type":"l2update","product_id":"{venue}","changes":[{changes}],"time":"{self._iso()}"}}'


def throughput(exchange: str, settings: Settings, duration_s: float, overrides: dict | None = None) -> dict:
    """Frames/s through parse + publish (+ the final flush), single thread, as fast as it goes."""
    from producers.kafka_sink import KafkaSink
    from producers.metrics import ProducerMetrics

    symbols = default_symbols(exchange)
    symbol_map = load_markets(exchange, None, offline_default=True)
    feed = make_feed(exchange, symbol_map, symbols)
    metrics = ProducerMetrics(exchange)
    sink = KafkaSink(settings.kafka, exchange, metrics, overrides=overrides)
    source = FrameSource(exchange, [symbol_map.to_venue(s) for s in symbols])
    parse, publish, clock = feed.parse, sink.publish, time.time_ns
    frames = invalid = 0
    busy = 0.0
    # Warm-up, not timed: the first frames make the client fetch metadata and its idempotent producer id.
    for frame in source.snapshots() + source.chunk(2_000):
        publish(parse(frame, clock() // 1000))
    sink.flush(30)
    metrics.quotes = metrics.trades = 0
    pending: list[str] = []
    cpu = 0.0  # this process's CPU time (all threads: ours and librdkafka's) over the timed sections
    while busy < duration_s:
        chunk = pending + source.chunk(20_000)  # generated outside the timed section
        pending = []
        started, cpu_started = time.perf_counter(), time.process_time()
        for frame in chunk:
            try:
                events = parse(frame, clock() // 1000)
            except BadFrame:
                invalid += 1
                continue
            if events:
                publish(events)
        busy += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        frames += len(chunk)
    started, cpu_started = time.perf_counter(), time.process_time()
    undelivered = sink.close(timeout_s=60)
    flush_s = time.perf_counter() - started
    busy += flush_s
    cpu += time.process_time() - cpu_started
    return {
        "frames": frames,
        "events": metrics.quotes + metrics.trades,
        "frames_per_s": round(frames / busy),
        "events_per_s": round((metrics.quotes + metrics.trades) / busy),
        "flush_s": round(flush_s, 3),
        # CPU per frame is the stable figure on a shared machine: frames/s if the process had a core to itself
        "cpu_us_per_frame": round(cpu / frames * 1e6, 2),
        "frames_per_cpu_s": round(frames / cpu),
        "invalid": invalid,
        "undelivered": undelivered,
        "delivery_failures": metrics.delivery_failures,
    }


# -- the emulator in a child process ---------------------------------------------------------------------------------


def _emulator_child(conn, mode: str, rate: float, exchange: str, capture: str | None) -> None:
    """Until the parent says stop, serve either the emulator's `bench` market at about `rate` frames/s on `exchange`
    (mode "market"; the other venue nearly idle) or `capture` from a bare server as fast as it goes (mode "blast")."""
    from pathlib import Path

    from producers.emulator.emulator import Emulator, EmulatorConfig
    from producers.emulator.scenario import load_scenario

    if mode == "blast":
        asyncio.run(_blast(conn, Path(capture), exchange))
        return
    scenario = load_scenario("bench")
    symbols = len(scenario.pairs)
    venues = dict(scenario.venues)
    for venue in venues:
        # frames per exchange = symbols * (quotes_per_s + trades_per_s), 5 % trades
        share = rate if venue == exchange else 3.0
        venues[venue] = dataclasses.replace(venues[venue], quotes_per_s=share * 0.95 / symbols,
                                            trades_per_s=share * 0.05 / symbols)
    scenario = dataclasses.replace(scenario, venues=venues)
    config = EmulatorConfig(coinbase_port=0, binance_port=0, scenario=scenario, tick_s=0.005)

    async def main() -> None:
        emu = await Emulator(config).start()
        conn.send({"coinbase": emu.coinbase_url, "binance": emu.binance_url})
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)
        await emu.stop()

    asyncio.run(main())


async def _blast(conn, capture, exchange: str) -> None:
    """A bare WebSocket server that sends the capture's frames to the first client as fast as it can (the emulator's
    replay tops out near 14k frames/s here, below what a producer reads)."""
    from websockets.asyncio.server import serve

    frames = [json.loads(line)["raw"] for line in capture.read_text().splitlines()]

    async def handler(ws) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn.send({exchange: f"ws://127.0.0.1:{port}"})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)


def over_websocket(exchange: str, settings: Settings, frames: int, overrides: dict | None = None) -> dict:
    """The whole producer (WebSocket read + parse + publish) fed synthetic frames by a bare WebSocket server in a
    child process, as fast as it sends them (both share the 2 cores)."""
    import tempfile
    from pathlib import Path

    from producers.service import Producer, ProducerSpec

    symbol_map = load_markets(exchange, None, offline_default=True)
    symbols = default_symbols(exchange)
    source = FrameSource(exchange, [symbol_map.to_venue(s) for s in symbols], seed=11)
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / f"{exchange}-bench.jsonl"
        with capture.open("w") as out:
            for raw in source.snapshots() + source.chunk(frames):
                out.write(json.dumps({"recv_ts": 0.0, "raw": raw}) + "\n")
        total = frames + len(source.snapshots() if exchange == "coinbase" else [])
        emulator, parent = _start_emulator("blast", 0.0, exchange, str(capture))
        try:
            url = parent.recv()[exchange]
            spec = ProducerSpec(exchange=exchange, symbols=symbols, url=url, write_metrics=False,
                                silence_timeout_s=30, kafka_overrides=overrides or {})
            producer = Producer(spec, settings)
            marks: dict[str, float] = {}

            async def main() -> None:
                stop = asyncio.Event()
                task = asyncio.create_task(producer.run(stop))
                deadline = time.monotonic() + 120
                last, last_change = 0, time.monotonic()
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
                    seen = producer.metrics.frames
                    if seen and "first" not in marks:
                        marks["first"] = time.monotonic()
                    if seen != last:
                        last, last_change = seen, time.monotonic()
                    if seen >= total + 1 or (seen and time.monotonic() - last_change > 3):
                        break
                marks["last"] = last_change
                stop.set()
                await task

            asyncio.run(main())
            started = time.perf_counter()
            undelivered = producer.close(timeout_s=60)
            flush_s = time.perf_counter() - started
        finally:
            _stop_emulator(emulator, parent)
    received = producer.metrics.frames
    elapsed = marks["last"] - marks["first"] + flush_s
    return {"frames": received, "frames_per_s": round(received / elapsed), "undelivered": undelivered,
            "invalid": producer.metrics.invalid}


def latency(exchange: str, url: str, settings: Settings, duration_s: float, overrides: dict | None = None) -> dict:
    from producers.service import Producer, ProducerSpec

    spec = ProducerSpec(exchange=exchange, symbols=default_symbols(exchange), url=url, record_latency=True,
                        write_metrics=False, silence_timeout_s=30, kafka_overrides=overrides or {})
    producer = Producer(spec, settings)
    window: dict[str, float] = {}

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(producer.run(stop))
        await asyncio.sleep(WARMUP_S)
        producer.sink.ack_latencies_us.clear()  # type: ignore[union-attr]
        window["frames0"], window["t0"] = producer.metrics.frames, time.monotonic()
        await asyncio.sleep(duration_s)
        window["frames1"], window["t1"] = producer.metrics.frames, time.monotonic()
        stop.set()
        await task

    asyncio.run(main())
    producer.close(timeout_s=30)
    samples = sorted(producer.sink.ack_latencies_us or [])
    rate = (window["frames1"] - window["frames0"]) / (window["t1"] - window["t0"])
    return {
        "frames_per_s_received": round(rate, 1),
        "acks": len(samples),
        "ack_p50_ms": _pct_ms(samples, 50),
        "ack_p99_ms": _pct_ms(samples, 99),
        "ack_max_ms": round(samples[-1] / 1000, 3) if samples else None,
        "reconnects": producer.metrics.reconnects,
        "delivery_failures": producer.metrics.delivery_failures,
    }


def _pct_ms(sorted_us: list[int], pct: float) -> float | None:
    if not sorted_us:
        return None
    index = min(len(sorted_us) - 1, max(0, round(pct / 100 * len(sorted_us)) - 1))
    return round(sorted_us[index] / 1000, 3)


# -- the command -----------------------------------------------------------------------------------------------------


def _broker(settings: Settings):
    """Make sure a broker answers; returns the EmbeddedKafka we started (to stop afterwards) or None."""
    from arb.kafka import EmbeddedKafka, EmbeddedKafkaConfig, KafkaError, wait_until_reachable

    try:
        wait_until_reachable(settings.kafka, 3.0)
        return None
    except KafkaError:
        if not settings.kafka.embedded:
            raise
    broker = EmbeddedKafka(EmbeddedKafkaConfig.from_settings(settings))
    broker.start()
    return broker


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from arb.kafka import ensure_topics
    from arb.logs import setup_logging

    setup_logging("WARNING")
    logging.getLogger("producers.kafka.librdkafka").setLevel(logging.CRITICAL)
    exchanges = args.exchange or list(EXCHANGES)
    overrides = {} if args.linger_ms is None else {"linger.ms": args.linger_ms}
    bench_topics = Topics(prefix=f"{settings.kafka.topics.prefix}bench.")
    settings = dataclasses.replace(settings, kafka=dataclasses.replace(settings.kafka, topics=bench_topics))
    from producers.kafka_sink import DEFAULT_PRODUCER_CONFIG

    linger = args.linger_ms if args.linger_ms is not None else DEFAULT_PRODUCER_CONFIG["linger.ms"]
    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rate": args.rate, "linger_ms": linger,
                    "duration_s": args.duration, "cpus": _cpus(), "producers": {e: {} for e in exchanges},
                    # the machine is shared: the 1-minute load average says how busy it was around the run
                    "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    started_broker = _broker(settings)
    emulator = None
    parent = None
    try:
        ensure_topics(settings)
        for exchange in exchanges:  # throughput first, with no emulator taking CPU
            _say(args, f"{exchange}: throughput, as fast as it goes ({args.duration:g} s) ...")
            result["producers"][exchange]["throughput"] = throughput(exchange, settings, args.duration, overrides)
        for exchange in exchanges:
            _say(args, f"{exchange}: over WebSocket, as fast as a bare server sends ...")
            result["producers"][exchange]["websocket"] = over_websocket(
                exchange, settings, max(50_000, int(args.duration * 15_000)), overrides)
        for exchange in exchanges:
            _say(args, f"{exchange}: receive->ack latency at {args.rate:g} frames/s ({args.duration:g} s) ...")
            emulator, parent = _start_emulator("market", args.rate, exchange)
            url = parent.recv()[exchange]
            result["producers"][exchange]["latency"] = latency(exchange, url, settings, args.duration, overrides)
            _stop_emulator(emulator, parent)
            emulator = None
    finally:
        if emulator is not None:
            _stop_emulator(emulator, parent)
        if started_broker is not None:
            started_broker.stop()
    result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    per = result["producers"]
    result["frames_per_s"] = min(p["throughput"]["frames_per_s"] for p in per.values())
    result["ack_p50_ms"] = max(p["latency"]["ack_p50_ms"] or 0 for p in per.values())
    result["ack_p99_ms"] = max(p["latency"]["ack_p99_ms"] or 0 for p in per.values())
    if args.json:
        print(json.dumps(result))
    else:
        print(_table(result))
    return 0


def _start_emulator(mode: str, rate: float, exchange: str, capture: str | None = None):
    # spawn, not fork: the child must not inherit this process's Kafka client threads
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    emulator = ctx.Process(target=_emulator_child, args=(child, mode, rate, exchange, capture), name="bench-emulator",
                           daemon=True)
    emulator.start()
    if not parent.poll(60):
        emulator.terminate()
        raise RuntimeError("the emulator did not start within 60 s")
    return emulator, parent


def _stop_emulator(emulator, parent) -> None:
    try:
        parent.send("stop")
    except OSError:
        pass
    emulator.join(15)
    if emulator.is_alive():
        emulator.terminate()


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def _table(result: dict) -> str:
    lines = [f"ingest benchmark {result['date']} ({result['cpus']} CPUs, load average {result['loadavg_1m_start']} -> "
             f"{result['loadavg_1m_end']}), latency at {result['rate']:g} frames/s",
             f"{'exchange':<10}{'frames/s':>12}{'events/s':>12}{'ws fr/s':>12}{'recv fr/s':>12}{'ack p50 ms':>12}"
             f"{'ack p99 ms':>12}"]
    for exchange, p in result["producers"].items():
        t, ws, lat = p["throughput"], p["websocket"], p["latency"]
        lines.append(f"{exchange:<10}{t['frames_per_s']:>12,}{t['events_per_s']:>12,}{ws['frames_per_s']:>12,}"
                     f"{lat['frames_per_s_received']:>12,.0f}{lat['ack_p50_ms']!s:>12}{lat['ack_p99_ms']!s:>12}")
    lines.append(f"summary: frames_per_s (slowest producer) {result['frames_per_s']:,}, "
                 f"ack p50 {result['ack_p50_ms']} ms, ack p99 {result['ack_p99_ms']} ms (worst producer)")
    return "\n".join(lines)
