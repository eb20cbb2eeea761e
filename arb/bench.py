"""`arb bench ingest|pipeline|alignment|backtest`: measurements, not tests. Figures go to docs/BENCHMARKS.md."""

from __future__ import annotations

import importlib

# Each module exposes `register_bench(subparsers)` for its own benchmark.
BENCH_MODULES = (
    "producers.bench",  # ingest
    "streaming.bench",  # pipeline
    "streaming.alignbench",  # alignment (as-of operator vs stream-stream join)
    "streaming.processor_bench",  # processor (the hot-path processor alone, pure Python)
    "arbitrage.backtest_cli",  # backtest
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure throughput and latency (see docs/BENCHMARKS.md)")
    bench = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name in BENCH_MODULES:
        importlib.import_module(name).register_bench(bench)
