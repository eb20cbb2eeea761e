"""`arb emulate`: local Coinbase and Binance WebSocket servers fed by a synthetic market or by recorded captures."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from arb.argtypes import port_or_free, positive_float
from arb.settings import ConfigError, Settings


def _speed(value: str) -> float:
    if value.lower() in ("max", "inf"):
        return 0.0
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a speed: {value!r} (a number, or 0/max for as fast as possible)")
    if speed < 0:
        raise argparse.ArgumentTypeError("speed must be >= 0")
    return speed


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "emulate",
        help="run local Coinbase and Binance WebSocket servers (synthetic market or capture replay)",
        description="Local WebSocket servers that speak the Coinbase Exchange feed and Binance spot stream protocols. "
        "A synthetic market (--scenario, with injected arbitrage windows and a ground-truth file) or recorded "
        "captures (--replay). Faults on demand through the HTTP control endpoint (POST /fault).",
    )
    parser.add_argument("--host", help="address to bind (default: ARB_HOST or 127.0.0.1)")
    parser.add_argument("--coinbase-port", type=port_or_free, default=8701, metavar="N",
                        help="Coinbase feed port (default 8701; 0: free)")
    parser.add_argument("--binance-port", type=port_or_free, default=8702, metavar="N",
                        help="Binance stream port (default 8702; 0: free)")
    parser.add_argument("--control-port", type=port_or_free, default=8703, metavar="N",
                        help="HTTP control endpoint port (default 8703; 0: free)")
    parser.add_argument("--no-control", action="store_true", help="run without the HTTP control endpoint")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--replay", nargs="+", metavar="CAPTURE", type=Path,
                        help="JSON Lines captures ({recv_ts, raw}); each goes to the server of its exchange")
    source.add_argument("--scenario", metavar="NAME|FILE",
                        help="a synthetic market: data/scenarios/NAME.json or a scenario file")
    parser.add_argument("--speed", type=_speed, default=1.0, metavar="X",
                        help="replay pace multiplier (default 1 = recorded pace; 0 or max = as fast as possible); "
                        "with --scenario, how fast the scenario's clock runs (windows, faults, duration)")
    parser.add_argument("--truth", type=Path, metavar="FILE",
                        help="ground-truth file (default: <data>/run/emulator-truth.json)")
    parser.add_argument("--duration", type=positive_float, metavar="S",
                        help="stop after S seconds (default: the scenario's duration, or when the replay ends)")
    parser.add_argument("--quotes-per-s", type=positive_float, metavar="R",
                        help="override the scenario's quote rate per symbol per exchange")
    parser.add_argument("--trades-per-s", type=positive_float, metavar="R",
                        help="override the scenario's trade rate per symbol per exchange")
    parser.add_argument("--seed", type=int, help="override the scenario's random seed")
    parser.add_argument("--ping-interval", type=positive_float, default=20.0, metavar="S",
                        help="Binance server ping interval (default 20 s, as Binance)")
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace, settings: Settings):
    """The EmulatorConfig the arguments describe; ConfigError (exit 2) on a bad scenario or capture."""
    import dataclasses

    from producers.emulator.emulator import EmulatorConfig
    from producers.emulator.replay import CaptureError, load_capture
    from producers.emulator.scenario import ScenarioError, load_scenario

    scenario = None
    if args.scenario:
        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as exc:
            raise ConfigError(str(exc)) from None
        if args.quotes_per_s or args.trades_per_s:
            scenario = scenario.with_rates(args.quotes_per_s, args.trades_per_s)
        if args.seed is not None:
            scenario = dataclasses.replace(scenario, seed=args.seed)
    else:
        for path in args.replay:
            try:
                load_capture(path)
            except CaptureError as exc:
                raise ConfigError(str(exc)) from None
    run_dir = settings.run_dir
    try:
        return EmulatorConfig(
            host=args.host or settings.host,
            coinbase_port=args.coinbase_port,
            binance_port=args.binance_port,
            control_port=None if args.no_control else args.control_port,
            scenario=scenario,
            replay=tuple(args.replay or ()),
            speed=args.speed,
            duration_s=args.duration,
            truth_path=args.truth or (run_dir / "emulator-truth.json" if scenario else None),
            metrics_path=run_dir / "metrics" / "emulator.json",
            binance_ping_interval_s=args.ping_interval,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    from arb.logs import setup_logging
    from producers.emulator.emulator import Emulator

    setup_logging()
    logging.getLogger("websockets").setLevel(logging.WARNING)  # our own connect/disconnect lines say it all
    config = build_config(args, settings)

    async def main() -> int:
        emulator = Emulator(config)
        try:
            await emulator.start()
        except OSError as exc:
            print(f"arb emulate: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, emulator.finished.set)
        print(f"coinbase {emulator.coinbase_url}  binance {emulator.binance_url}"
              + (f"  control {emulator.control_url}" if emulator.control_url else ""), flush=True)
        try:
            await emulator.wait()
            if emulator.replay_done.is_set():
                await asyncio.sleep(0.5)  # let the last frames reach slow readers before closing
        finally:
            await emulator.stop()
        return 0

    return asyncio.run(main())
