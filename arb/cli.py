"""`arb`: one console script, a sub-command per capability.

Each command module below exposes `register(subparsers)`, which adds its parser and sets `handler` to a function
`(args, settings) -> int`. Modules keep heavy imports (pyspark, dash) inside their handlers so `arb --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from arb.settings import ConfigError, from_env

# Listed explicitly: the order is the order of `arb --help`.
COMMAND_MODULES = (
    "arb.supervisor",  # up
    "arb.kafka",  # kafka start|stop|status
    "producers.cli",  # produce, normalize
    "producers.emulator.cli",  # emulate
    "streaming.cli",  # stream
    "dashboard.cli",  # dashboard
    "arb.alerts",  # alerts
    "arbitrage.backtest_cli",  # backtest
    "arb.bench",  # bench ingest|pipeline|backtest
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="arb", description="Cross-exchange arbitrage detector (Coinbase / Binance).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser, required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = from_env()
        return int(args.handler(args, settings) or 0)
    except ConfigError as exc:
        print(f"arb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
