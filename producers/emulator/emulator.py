"""The emulator: a Coinbase and a Binance WebSocket server fed by a synthetic market or by recorded captures.

In a test (ports 0 pick free ports; the bound ones are reported):

    config = EmulatorConfig(coinbase_port=0, binance_port=0, scenario=load_scenario("windows"))
    async with Emulator(config) as emu:          # or BackgroundEmulator(config) from synchronous code
        url = emu.coinbase_url                   # ws://127.0.0.1:54321
        emu.silence("binance", 5)                # faults on demand (see faults.py)
        emu.counts()["events"]["binance"]["BTCUSDT"]   # {"quotes": 812, "trades": 40}

From the command line it is `arb emulate` (cli.py), with the same faults behind an HTTP control endpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.server import Server, serve

from arb.logs import log_event
from arb.settings import REPO_ROOT
from producers.emulator import binance, coinbase, replay
from producers.emulator.control import ControlServer
from producers.emulator.faults import Fault, FaultError, FaultKind, MalformedKind
from producers.emulator.market import EXCHANGES, Instrument, MarketModel, Move, Top, load_instruments
from producers.emulator.scenario import Scenario
from producers.emulator.truth import GroundTruth, iso_us, now_us, write_json_atomic
from producers.emulator.wire import Counters

log = logging.getLogger("emulator")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything an emulator run needs. Exactly one of `scenario` (synthetic market) or `replay` (captures)."""

    host: str = "127.0.0.1"
    coinbase_port: int = 8701  # 0: pick a free port
    binance_port: int = 8702
    control_port: int | None = None  # HTTP control endpoint; None: none, 0: a free port
    scenario: Scenario | None = None
    replay: tuple[Path, ...] = ()
    speed: float = 1.0  # replay pace multiplier (0 = as fast as possible); a scenario's clock multiplier (> 0)
    duration_s: float | None = None  # stop after this long (default: the scenario's, or when the replay ends)
    truth_path: Path | None = None
    metrics_path: Path | None = None
    markets_dir: Path | None = REPO_ROOT / "data" / "markets"
    binance_ping_interval_s: float | None = 20.0  # as Binance: a ping every 20 s ...
    binance_ping_timeout_s: float | None = 60.0  # ... and a minute to answer it
    shutdown_grace_s: float = 1.0  # serverShutdown -> close
    heartbeat_interval_s: float = 1.0
    tick_s: float = 0.01  # market clock resolution
    metrics_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if (self.scenario is None) == (not self.replay):
            raise ValueError("give exactly one of scenario or replay")
        if self.speed < 0:
            raise ValueError("speed must be >= 0 (0: as fast as possible)")
        if self.scenario is not None and self.speed == 0:
            raise ValueError("a scenario runs on a clock: speed must be > 0 (0 / max is for --replay)")
        for name in ("coinbase_port", "binance_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be a port number")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be positive")


class Emulator:
    """Runs both servers on the current event loop. Every method but `start`/`stop`/`wait` is synchronous and must
    be called on the emulator's loop (use BackgroundEmulator from another thread)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.counters = Counters()
        self.scenario = config.scenario
        self.instruments: tuple[Instrument, ...] = ()
        self.model: MarketModel | None = None
        self.truth: GroundTruth | None = None
        self.captures: list[replay.Capture] = []
        if self.scenario is not None:
            self.instruments = load_instruments(self.scenario.pairs, config.markets_dir)
            self.model = MarketModel(
                instruments=self.instruments,
                pair_params=self.scenario.prices,
                venues=self.scenario.venues,
                windows=self.scenario.windows,
                moves=list(self.scenario.moves),
                seed=self.scenario.seed,
            )
        else:
            self.captures = [replay.load_capture(Path(p)) for p in config.replay]
        is_replay = self.scenario is None
        self.coinbase = coinbase.CoinbaseFeed(
            self.counters, {i.coinbase_id: coinbase.Product(i.coinbase_id) for i in self.instruments}, replay=is_replay)
        self.binance = binance.BinanceFeed(
            self.counters, {i.binance_id: binance.Symbol(i.binance_id) for i in self.instruments}, replay=is_replay)
        self.binance.shutdown_grace_s = config.shutdown_grace_s
        self._servers: dict[str, Server] = {}
        self._control: ControlServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._silenced_until: dict[str, float] = {ex: 0.0 for ex in EXCHANGES}
        self._last_top: dict[tuple[str, str], Top] = {}
        self._t0 = 0.0
        self.started_us = 0
        self.replay_done = asyncio.Event()
        self.finished = asyncio.Event()  # the scenario's duration passed or the replay ended
        self._stopped = False
        self._replay_finished: set[str] = set()
        self._scenario_speed = config.speed if self.scenario is not None else 1.0

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> Emulator:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self.started_us = now_us()
        scenario_name = self.scenario.name if self.scenario else "replay"
        self.truth = GroundTruth(scenario_name, self.scenario.seed if self.scenario else None, self.started_us,
                                 self.instruments, speed=self._scenario_speed)
        if self.model is not None:
            self._prime_market()
            for move in self.scenario.moves:
                self.truth.record_move(move)
        self._servers["coinbase"] = await serve(
            self.coinbase.handle, cfg.host, cfg.coinbase_port, ping_interval=None, compression=None, close_timeout=2)
        self._servers["binance"] = await serve(
            self.binance.handle, cfg.host, cfg.binance_port, process_request=self.binance.process_request,
            ping_interval=cfg.binance_ping_interval_s, ping_timeout=cfg.binance_ping_timeout_s, compression=None,
            close_timeout=2)
        if cfg.control_port is not None:
            self._control = ControlServer(self)
            await self._control.start(cfg.host, cfg.control_port)
        if self.model is not None:
            self._tasks.append(asyncio.create_task(self._market_loop(), name="market"))
        else:
            for exchange in EXCHANGES:
                frames = replay.merge(self.captures, exchange)
                self._tasks.append(asyncio.create_task(self._replay_loop(exchange, frames), name=f"replay-{exchange}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        log_event(log, "emulator_started", mode="scenario" if self.model else "replay", scenario=scenario_name,
                  coinbase_url=self.coinbase_url, binance_url=self.binance_url, control_url=self.control_url or "none")
        return self

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._control is not None:
            await self._control.stop()
        for server in self._servers.values():
            server.close()
        for server in self._servers.values():
            await server.wait_closed()
        if self.truth is not None:
            self.truth.finish(now_us())
            if self.config.truth_path:
                self.truth.write(self.config.truth_path)
        self._write_metrics()
        log_event(log, "emulator_stopped", frames_sent=sum(self.counters.frames.values()))

    async def wait(self) -> None:
        """Until the scenario's duration passed or the replay ended (forever for an endless scenario)."""
        await self.finished.wait()

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- where and what ---------------------------------------------------------------------------------------

    def _port(self, exchange: str) -> int:
        return self._servers[exchange].sockets[0].getsockname()[1]

    @property
    def coinbase_port(self) -> int:
        return self._port("coinbase")

    @property
    def binance_port(self) -> int:
        return self._port("binance")

    @property
    def control_port(self) -> int | None:
        return self._control.port if self._control else None

    @property
    def coinbase_url(self) -> str:
        return f"ws://{self.config.host}:{self.coinbase_port}"

    @property
    def binance_url(self) -> str:
        return f"ws://{self.config.host}:{self.binance_port}"

    @property
    def control_url(self) -> str | None:
        return f"http://{self.config.host}:{self.control_port}" if self._control else None

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    def counts(self) -> dict[str, Any]:
        """`{"frames": {ex: n}, "malformed": {ex: n}, "events": {ex: {venue_symbol: {"quotes": n, "trades": n}}}}`"""
        return self.counters.snapshot()

    def status(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "coinbase_port": self.coinbase_port,
            "binance_port": self.binance_port,
            "control_port": self.control_port,
            "mode": "scenario" if self.model else "replay",
            "scenario": self.scenario.name if self.scenario else None,
            "elapsed_s": round(self.elapsed(), 3),
            "frames_sent": sum(counts["frames"].values()),
            "frames_sent_by_exchange": counts["frames"],
            "clients": {"coinbase": self.coinbase.connections, "binance": self.binance.connections},
            "quotes": {ex: sum(c["quotes"] for c in syms.values()) for ex, syms in counts["events"].items()},
            "trades": {ex: sum(c["trades"] for c in syms.values()) for ex, syms in counts["events"].items()},
            "malformed": counts["malformed"],
            "events": counts["events"],
            "replay_done": self.replay_done.is_set(),
            "updated_ts": iso_us(now_us()),
            "updated_us": now_us(),
        }

    def ground_truth(self) -> dict[str, Any] | None:
        return self.truth.to_dict() if self.truth else None

    # --- faults -----------------------------------------------------------------------------------------------

    def inject(self, fault: Fault, source: str = "runtime") -> dict[str, Any]:
        """Inject one fault now; returns its ground-truth record. Raises FaultError when it cannot apply."""
        loop = asyncio.get_running_loop()
        ts = now_us()
        feed = self.coinbase if fault.exchange == "coinbase" else self.binance
        instruments = self._instruments_for(fault.pair)
        if fault.kind == FaultKind.DROP:
            dropped = feed.drop_all()
            log_event(log, "fault", kind=fault.kind, exchange=fault.exchange, connections=dropped)
        elif fault.kind == FaultKind.SILENCE:
            self._silenced_until[fault.exchange] = max(self._silenced_until[fault.exchange],
                                                       loop.time() + fault.seconds)
            log_event(log, "fault", kind=fault.kind, exchange=fault.exchange, seconds=fault.seconds)
        elif fault.kind == FaultKind.MALFORMED:
            variants = [fault.variant] if fault.variant else list(MalformedKind)
            for n, variant in zip(range(fault.count), itertools.cycle(variants)):
                venue_id = self._venue_id(fault.exchange, instruments[n % len(instruments)] if instruments else None)
                if fault.exchange == "coinbase":
                    self.coinbase.send_malformed(variant, venue_id, ts)
                else:
                    self.binance.send_malformed(variant, venue_id)
            log_event(log, "fault", kind=fault.kind, exchange=fault.exchange, count=fault.count)
        elif fault.kind == FaultKind.SKIP_SEQUENCE:
            self._need_model(fault)
            for inst in instruments:
                feed.skip_sequence(inst.venue_id(fault.exchange), fault.by)
            log_event(log, "fault", kind=fault.kind, exchange=fault.exchange, pair=fault.pair or "all", by=fault.by)
        elif fault.kind == FaultKind.CROSS_BOOK:
            self._need_model(fault)
            self.model.cross(fault.exchange, fault.pair, self.scenario_time() + fault.seconds * self._scenario_speed)
            log_event(log, "fault", kind=fault.kind, exchange=fault.exchange, pair=fault.pair, seconds=fault.seconds)
        elif fault.kind == FaultKind.SERVER_SHUTDOWN:
            grace = fault.seconds or self.config.shutdown_grace_s
            self._tasks.append(asyncio.create_task(self.binance.server_shutdown(ts, grace), name="server-shutdown"))
            log_event(log, "fault", kind=fault.kind, exchange=fault.exchange, grace_s=grace)
        return self.truth.record_fault(fault, ts, source) if self.truth else fault.describe()

    def _need_model(self, fault: Fault) -> None:
        if self.model is None:
            raise FaultError(f"fault {fault.kind} needs a synthetic market (--scenario), not a replay")

    def _instruments_for(self, pair: str | None) -> list[Instrument]:
        if pair is None:
            return list(self.instruments)
        matches = [i for i in self.instruments if i.name == pair]
        if not matches:
            raise FaultError(f"unknown pair {pair!r}; known: {[i.name for i in self.instruments]}")
        return matches

    def _venue_id(self, exchange: str, inst: Instrument | None) -> str:
        if inst is not None:
            return inst.venue_id(exchange)
        return "BTC-USD" if exchange == "coinbase" else "BTCUSDT"

    def drop(self, exchange: str) -> dict[str, Any]:
        return self.inject(Fault(FaultKind.DROP, exchange))

    def silence(self, exchange: str, seconds: float) -> dict[str, Any]:
        return self.inject(Fault(FaultKind.SILENCE, exchange, seconds=seconds))

    def malformed(self, exchange: str, count: int = 1, variant: MalformedKind | str | None = None,
                  pair: str | None = None) -> dict[str, Any]:
        kind = MalformedKind(variant) if variant else None
        return self.inject(Fault(FaultKind.MALFORMED, exchange, pair=pair, count=count, variant=kind))

    def skip_sequence(self, exchange: str, pair: str | None = None, by: int = 10) -> dict[str, Any]:
        return self.inject(Fault(FaultKind.SKIP_SEQUENCE, exchange, pair=pair, by=by))

    def cross_book(self, exchange: str, pair: str, seconds: float) -> dict[str, Any]:
        return self.inject(Fault(FaultKind.CROSS_BOOK, exchange, pair=pair, seconds=seconds))

    def server_shutdown(self, grace_s: float | None = None) -> dict[str, Any]:
        return self.inject(Fault(FaultKind.SERVER_SHUTDOWN, "binance", seconds=grace_s or 0.0))

    def crash(self, pair: str, pct: float = -3.0, seconds: float = 60.0, label: str = "runtime crash") -> dict:
        """Move one pair's underlying by `pct` percent over `seconds` (wall clock) on both venues, starting now."""
        if self.model is None:
            raise FaultError("a crash needs a synthetic market (--scenario)")
        self._instruments_for(pair)
        move = Move(pair=pair, start_s=self.scenario_time(), duration_s=seconds * self._scenario_speed, pct=pct,
                    kind="crash", label=label)
        self.model.add_move(move)
        self.truth.record_move(move)
        log_event(log, "crash", pair=pair, pct=pct, seconds=seconds)
        return self.truth.crashes[-1]

    # --- the synthetic market ---------------------------------------------------------------------------------

    def _prime_market(self) -> None:
        """Books, last trades and ids before any client connects, so a first subscriber gets a full snapshot."""
        rng = random.Random(self.scenario.seed)
        for inst in self.instruments:
            product = self.coinbase.products[inst.coinbase_id]
            product.trade_id = rng.randrange(10_000_000, 90_000_000)
            product.sequence = rng.randrange(10_000_000_000, 90_000_000_000)
            symbol = self.binance.symbols[inst.binance_id]
            symbol.update_id = rng.randrange(1_000_000_000, 9_000_000_000)
            symbol.trade_id = rng.randrange(100_000_000, 900_000_000)
            symbol.agg_id = rng.randrange(100_000_000, 900_000_000)
            for exchange in EXCHANGES:
                self._last_top[(exchange, inst.name)] = self.model.quote(exchange, inst.name)
            top = self._last_top[("coinbase", inst.name)]
            step = max(inst.coinbase_tick, (top.bid * Decimal("0.0001") / inst.coinbase_tick).to_integral_value()
                       * inst.coinbase_tick)
            product.book.seed(top, step)
            trade = self.model.trade(top, inst.coinbase_lot)
            self.coinbase.publish_trade(inst.coinbase_id, trade, now_us())

    def _silenced(self, exchange: str) -> bool:
        return asyncio.get_running_loop().time() < self._silenced_until[exchange]

    async def _market_loop(self) -> None:
        """Advance the model every tick and publish what is due. Quote and trade rates are per wall-clock second;
        the scenario's own clock (windows, faults, moves, duration) runs `speed` times faster."""
        cfg, model, scenario, truth = self.config, self.model, self.scenario, self.truth
        loop = asyncio.get_running_loop()
        rng = random.Random(scenario.seed + 1)
        due_quotes = {(ex, i.name): rng.random() for ex in EXCHANGES for i in self.instruments}
        next_trade = {(ex, i.name): rng.expovariate(scenario.venues[ex].trades_per_s)
                      if scenario.venues[ex].trades_per_s > 0 else float("inf")
                      for ex in EXCHANGES for i in self.instruments}
        pending_faults = list(scenario.faults)
        pending_windows = sorted(scenario.windows, key=lambda w: w.start_s)
        windows = {w.id: w for w in scenario.windows}
        next_heartbeat = 0.0
        last_wall = 0.0
        while True:
            await asyncio.sleep(cfg.tick_s)
            wall = loop.time() - self._t0
            dt = wall - last_wall
            last_wall = wall
            t = self.scenario_time()
            ts = now_us()
            model.advance(t)
            while pending_faults and pending_faults[0].at_s <= t:
                fault = pending_faults.pop(0)
                try:
                    self.inject(self._in_wall_seconds(fault), source="scenario")
                except FaultError as exc:
                    log_event(log, "fault_failed", logging.WARNING, kind=fault.kind, reason=str(exc))
            while pending_windows and pending_windows[0].start_s <= t:
                window = pending_windows.pop(0)
                truth.plan_window(window)
                log_event(log, "window_injected", id=window.id, pair=window.pair, direction=window.direction,
                          gross_bps=window.gross_bps, duration_s=window.duration_s, size=window.size)
            for exchange in EXCHANGES:
                silenced = self._silenced(exchange)
                venue = scenario.venues[exchange]
                for inst in self.instruments:
                    key = (exchange, inst.name)
                    due_quotes[key] += venue.quotes_per_s * dt
                    n = int(due_quotes[key])
                    due_quotes[key] -= n
                    # Past a few ticks' worth the market is behind (CPU-bound): skip updates rather than burst them.
                    n = min(n, max(1, math.ceil(venue.quotes_per_s * cfg.tick_s * 4)))
                    for _ in range(0 if silenced else n):
                        self._publish_quote(exchange, inst, ts, windows)
                    while next_trade[key] <= wall:
                        next_trade[key] += rng.expovariate(venue.trades_per_s)
                        if silenced:
                            continue  # a silent venue's trades are not sent later in a burst
                        trade = model.trade(self._last_top[key], inst.lot(exchange))
                        if exchange == "coinbase":
                            self.coinbase.publish_trade(inst.coinbase_id, trade, ts)
                        else:
                            self.binance.publish_trade(inst.binance_id, trade, ts)
            if wall >= next_heartbeat:
                next_heartbeat = wall + cfg.heartbeat_interval_s
                if not self._silenced("coinbase"):
                    self.coinbase.publish_heartbeats(ts)
            if scenario.duration_s is not None and t >= scenario.duration_s and not self.finished.is_set():
                log_event(log, "scenario_finished", scenario=scenario.name, elapsed_s=round(wall, 3))
                self.finished.set()

    def scenario_time(self) -> float:
        """Seconds on the scenario's clock (wall-clock seconds times `speed`)."""
        return self.elapsed() * self._scenario_speed

    def _in_wall_seconds(self, fault: Fault) -> Fault:
        """A scenario fault's durations are on the scenario clock; injected faults last wall-clock seconds."""
        if self._scenario_speed == 1.0 or not fault.seconds:
            return fault
        return dataclasses.replace(fault, seconds=fault.seconds / self._scenario_speed)

    def _publish_quote(self, exchange: str, inst: Instrument, ts: int, windows: dict) -> None:
        top = self.model.quote(exchange, inst.name)
        if exchange == "coinbase":
            if not self.coinbase.publish_quote(inst.coinbase_id, top, ts):
                return
        else:
            self.binance.publish_quote(inst.binance_id, top)
        self._last_top[(exchange, inst.name)] = top
        window = windows.get(top.window) if top.window else None
        self.truth.observe_quote(window, inst.name, exchange, top.window, ts,
                                 self.model.anchor(top.window) if top.window else None, inst)

    # --- replay -----------------------------------------------------------------------------------------------

    async def _replay_loop(self, exchange: str, frames: list[tuple[float, str]]) -> None:
        loop = asyncio.get_running_loop()
        feed = self.coinbase if exchange == "coinbase" else self.binance
        if frames:
            while feed.connections == 0:
                await asyncio.sleep(0.005)
            log_event(log, "replay_started", exchange=exchange, frames=len(frames), speed=self.config.speed)
            offsets = replay.delays(frames, self.config.speed)
            books: dict[str, coinbase.CoinbaseBook] = {}
            seen: set = set()
            start = loop.time()
            for n, ((_, raw), offset) in enumerate(zip(frames, offsets)):
                wait = start + offset - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif n % 256 == 0:
                    await asyncio.sleep(0)  # let the writers run
                while self._silenced(exchange):
                    pause = self._silenced_until[exchange] - loop.time()
                    start += max(pause, 0.0)
                    await asyncio.sleep(max(pause, 0.0))
                if exchange == "coinbase":
                    kind, symbol = coinbase.classify_frame(raw, books, seen)
                else:
                    kind, symbol = binance.classify_frame(raw)
                feed.broadcast(raw, kind, symbol)
            while any(c.pending for c in list(feed.clients)):
                await asyncio.sleep(0.01)
            log_event(log, "replay_finished", exchange=exchange, frames=len(frames))
        self._replay_finished.add(exchange)
        if self._replay_finished >= set(EXCHANGES):
            self.replay_done.set()
            if self.config.duration_s is None:
                self.finished.set()

    # --- files ------------------------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.config.duration_s is not None and loop.time() - self._t0 >= self.config.duration_s:
                self.finished.set()
            if self.truth is not None and self.truth.changed and self.config.truth_path:
                self.truth.write(self.config.truth_path)
            self._write_metrics()
            await asyncio.sleep(self.config.metrics_interval_s)

    def _write_metrics(self) -> None:
        if self.config.metrics_path is None or not self._servers:
            return
        try:
            status = self.status()
        except (RuntimeError, IndexError):  # servers already closed
            return
        status.pop("events")
        write_json_atomic(self.config.metrics_path, status)


class BackgroundEmulator:
    """An Emulator on its own thread and event loop, for synchronous code (tests, benchmarks):

        with BackgroundEmulator(config) as emu:
            produce_from(emu.coinbase_url); emu.drop("coinbase"); assert emu.counts()[...]
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: Future = Future()
        self._stop: asyncio.Event | None = None
        self.emulator: Emulator | None = None

    def start(self, timeout: float = 15.0) -> BackgroundEmulator:
        self._thread = threading.Thread(target=self._run, name="emulator", daemon=True)
        self._thread.start()
        self._ready.result(timeout=timeout)
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.emulator = await Emulator(self.config).start()
            except BaseException as exc:  # report start failures to the caller's thread
                self._ready.set_exception(exc)
                return
            self._ready.set_result(True)
            try:
                await self._stop.wait()
            finally:
                await self.emulator.stop()

        asyncio.run(main())

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args)` on the emulator's loop and return its result (exceptions re-raised here)."""
        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=15)

    def wait_finished(self, timeout: float) -> bool:
        async def run() -> None:
            await self.emulator.finished.wait()

        try:
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(run(), timeout), self._loop).result(timeout + 1)
            return True
        except TimeoutError:
            return False

    coinbase_url = property(lambda self: self.emulator.coinbase_url)
    binance_url = property(lambda self: self.emulator.binance_url)
    control_url = property(lambda self: self.emulator.control_url)
    coinbase_port = property(lambda self: self.emulator.coinbase_port)
    binance_port = property(lambda self: self.emulator.binance_port)

    def counts(self) -> dict[str, Any]:
        return self.call(self.emulator.counts)

    def status(self) -> dict[str, Any]:
        return self.call(self.emulator.status)

    def ground_truth(self) -> dict[str, Any] | None:
        return self.call(self.emulator.ground_truth)

    def inject(self, fault: Fault) -> dict[str, Any]:
        return self.call(self.emulator.inject, fault)

    def drop(self, exchange: str) -> dict[str, Any]:
        return self.call(self.emulator.drop, exchange)

    def silence(self, exchange: str, seconds: float) -> dict[str, Any]:
        return self.call(self.emulator.silence, exchange, seconds)

    def malformed(self, exchange: str, count: int = 1, variant: str | None = None, pair: str | None = None) -> dict:
        return self.call(self.emulator.malformed, exchange, count, variant, pair)

    def skip_sequence(self, exchange: str, pair: str | None = None, by: int = 10) -> dict[str, Any]:
        return self.call(self.emulator.skip_sequence, exchange, pair, by)

    def cross_book(self, exchange: str, pair: str, seconds: float) -> dict[str, Any]:
        return self.call(self.emulator.cross_book, exchange, pair, seconds)

    def server_shutdown(self, grace_s: float | None = None) -> dict[str, Any]:
        return self.call(self.emulator.server_shutdown, grace_s)

    def crash(self, pair: str, pct: float = -3.0, seconds: float = 60.0) -> dict[str, Any]:
        return self.call(self.emulator.crash, pair, pct, seconds)
