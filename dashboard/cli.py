"""`arb dashboard [--host 127.0.0.1] [--port 8050] [--lake PATH]`: the live spread dashboard."""

from __future__ import annotations

import argparse
import logging

from arb.argtypes import port
from arb.logs import log_event, setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="serve the live spread dashboard (reads the Delta lake; no Spark needed)",
        description="Serve the Dash dashboard over the Delta lake, the metrics files and the alert log.",
    )
    parser.add_argument("--host", default=None, help="address to bind (default: Settings.host, 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8050, help="port (default 8050)")
    parser.add_argument("--lake", default=None, metavar="PATH", help="lake directory (default: Settings.lake_dir)")
    parser.add_argument("--pairs", default=None, metavar="SPECS",
                        help="pairs to offer, as arbitrage.pairs specs (default: the demo pairs)")
    parser.add_argument("--threshold-bps", default=None, metavar="X",
                        help="tradable threshold line, net bps (default: the rules' 5)")
    parser.add_argument("--fees", default=None, metavar="SPEC",
                        help="taker fees for the break-even label, e.g. coinbase=0.006,binance=10bps")
    parser.add_argument("--refresh-ms", type=int, default=1000, help="refresh period (default 1000)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, settings) -> int:
    from decimal import Decimal, InvalidOperation

    from arb.settings import ConfigError
    from arbitrage.fees import parse_fees
    from arbitrage.pairs import parse_pairs
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig

    setup_logging()
    overrides = {"refresh_ms": args.refresh_ms}
    try:
        if args.pairs:
            overrides["pairs"] = parse_pairs(args.pairs)
        if args.fees:
            overrides["fees"] = parse_fees(args.fees)
        if args.threshold_bps is not None:
            try:
                overrides["threshold_bps"] = Decimal(args.threshold_bps)
            except InvalidOperation:
                raise ValueError(f"--threshold-bps must be a number, got {args.threshold_bps!r}") from None
        config = DashboardConfig.from_settings(settings, lake_dir=args.lake, **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    host = args.host or settings.host
    app = create_app(config)
    log_event(logging.getLogger("dashboard"), "serving", url=f"http://{host}:{args.port}/", lake=config.lake_dir)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per refresh
    app.run(host=host, port=args.port, debug=False)
    return 0
