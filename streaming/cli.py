"""`arb stream JOB[,JOB...] [--available-now] [--master URL] [--nice N] [rules flags]`.

Jobs: bronze, silver, analytics, and hotpath (also called `spreads` and `gold`: spreads, windows and alerts come out
of one operator, see streaming/hotpath.py); `lake` is bronze + silver + analytics, `all` is the lake and the hot
path side by side in one Spark application (what `arb up` runs). `arb stream hotpath` and `arb stream lake --nice 10`
run them as two applications instead, the lake at a lower CPU priority (docs/BENCHMARKS.md, "Pipeline").
Long-running by default; `--available-now` processes what Kafka holds and exits. A restart resumes from the
checkpoints under `data/checkpoints/<job>`. The rules (docs/RULES.md) default to `RulesConfig()`; `--threshold-bps`,
`--staleness-ms`, `--pairs` and `--fees` override them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import signal
import sys
from typing import Any, Callable

from arb.argtypes import finite_decimal, non_negative_int
from arb.settings import ConfigError, Settings
from arbitrage.fees import FeeSchedule, parse_fees
from arbitrage.pairs import Pair, parse_pair
from arbitrage.rules import RulesConfig

TARGETS = {
    "bronze": ("bronze",),
    "silver": ("silver",),
    "hotpath": ("hotpath",),
    "spreads": ("hotpath",),
    "gold": ("hotpath",),
    "analytics": ("analytics",),  # market analytics: three queries, streaming/analytics.py
    "lake": ("bronze", "silver", "analytics"),
    "all": ("bronze", "silver", "hotpath", "analytics"),
}


def job_list(text: str) -> tuple[str, ...]:
    """`silver,gold` -> the queries to start, in the order named, each once (`gold` and `spreads` are `hotpath`)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown job {', '.join(unknown) or repr(text)} (choose from {', '.join(sorted(TARGETS))})")
    return tuple(dict.fromkeys(job for name in names for job in TARGETS[name]))


log = logging.getLogger("streaming")

MAX_RESTARTS = 5
# Spark gives a Python worker a fixed 10 s to connect back (PythonWorkerFactory); an overloaded machine misses it.
TRANSIENT_ERRORS = ("Python worker failed to connect back", "CANNOT_OPEN_SOCKET")


def is_transient(error: Any) -> bool:
    return any(text in str(error) for text in TRANSIENT_ERRORS)


def wait_for_queries(spark: Any, queries: list[Any], available_now: bool, stop_requested: Any) -> None:
    """Until every query ends (available-now), any one ends (long-running) or `stop_requested()` turns true.

    Waits in short timed slices: a signal handler must not call into the JVM while this thread is inside a py4j
    call (py4j answers with "reentrant call" errors), so the handler only sets a flag that is read here.
    """
    from pyspark.errors import StreamingQueryException

    while not stop_requested():
        try:
            if available_now:
                if all(query.awaitTermination(1) or not query.isActive for query in queries):
                    return
            elif spark.streams.awaitAnyTermination(1):
                return
        except StreamingQueryException:
            return


def lower_priority(nice: int) -> None:
    """Nice this process by `nice`, before the JVM starts: it and its Python workers inherit the priority.

    With the kernel's autogroup scheduling (Linux's default on desktops and many servers) a nice value only orders
    threads within one session's group, and sessions share the CPU equally; so the group's own nice value is set too
    (`/proc/self/autogroup`, which any user may raise), when there is one.
    """
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:
        pass  # no autogroup scheduling here: the process's nice value is all there is


def pair_list(text: str) -> tuple[Pair, ...]:
    """Comma-separated names of the default pairs (`BTC/USD,ETH/BTC`) or full `NAME=CB~BN[@RATE]` specs."""
    defaults = RulesConfig()
    pairs: list[Pair] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            pairs.append(parse_pair(item) if "=" in item else defaults.pair(item))
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    names = [p.name for p in pairs]
    if not pairs or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct pairs, got {text!r}")
    return tuple(pairs)


def fee_schedule(text: str) -> FeeSchedule:
    """`coinbase=0.006,binance=10bps` (fractions or bps; an exchange not named keeps its default)."""
    try:
        return parse_fees(text)
    except (ValueError, ArithmeticError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rules_from_args(args: argparse.Namespace) -> RulesConfig:
    """The default rules with whatever the flags override."""
    changes: dict[str, Any] = {"threshold_bps": args.threshold_bps, "staleness_ms": args.staleness_ms,
                               "pairs": args.pairs, "fees": args.fees}
    return RulesConfig(**{name: value for name, value in changes.items() if value is not None})


def build_config(args: argparse.Namespace, settings: Settings, environ: Any = None) -> Any:
    """The StreamingConfig of this run: settings and environment, then the rules and master flags."""
    from streaming.config import from_settings

    try:
        rules = rules_from_args(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config = from_settings(settings, rules=rules, environ=environ)
    if args.master:
        config = config.replace(spark=dataclasses.replace(config.spark, master=args.master))
    return config


RULES_FLAGS = ("threshold_bps", "staleness_ms", "pairs", "fees")


def add_rules_arguments(parser: argparse.ArgumentParser, keep_text: bool = False) -> None:
    """The rules flags (`arb stream`, and `arb up`, which checks them and hands them on as text: `keep_text`)."""
    def typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
        if not keep_text:
            return parse

        def checked(text: str) -> str:
            parse(text)  # a bad value exits 2 here, not in the child
            return text

        return checked

    rules = parser.add_argument_group("rules (default: arbitrage.rules.RulesConfig)")
    rules.add_argument("--threshold-bps", type=typed(finite_decimal), metavar="X",
                       help="minimum net spread in bps, after both taker fees, that opens a window (default 5)")
    rules.add_argument("--staleness-ms", type=typed(non_negative_int), metavar="MS",
                       help="a quote older than this is never compared (default 500)")
    rules.add_argument("--pairs", type=typed(pair_list), metavar="SPECS",
                       help="pairs to watch: names of the default pairs (BTC/USD,ETH/USD,ETH/BTC) or "
                       "NAME=COINBASE~BINANCE[@RATE] specs, e.g. BTC/USD=BTC/USD~BTC/USDT@1.0 (default: all three)")
    rules.add_argument("--fees", type=typed(fee_schedule), metavar="SPEC",
                       help="taker fees, e.g. coinbase=0.006,binance=10bps (default: coinbase 0.006, binance 0.001)")


def rules_argv(args: argparse.Namespace) -> tuple[str, ...]:
    """The rules flags given to `arb up` (as text), for its `arb stream` child."""
    return tuple(item for name in RULES_FLAGS if getattr(args, name) is not None
                 for item in (f"--{name.replace('_', '-')}", getattr(args, name)))


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stream", help="Spark Structured Streaming jobs: Kafka -> bronze / silver / spreads / gold (Delta) + alerts",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("job", type=job_list, metavar="JOB[,JOB...]",
                        help=f"which job(s) to run: {', '.join(sorted(TARGETS))}")
    parser.add_argument("--available-now", action="store_true",
                        help="process what Kafka holds now, then exit (catch-up, tests)")
    parser.add_argument("--master", default=None,
                        help="Spark master URL (default: ARB_SPARK_MASTER or local[*])")
    parser.add_argument("--nice", type=non_negative_int, default=0, metavar="N",
                        help="lower this process's CPU priority by N (inherited by its Spark JVM and Python workers)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    add_rules_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from arb.logs import log_event, setup_logging

    setup_logging(args.log_level)
    logging.getLogger("py4j").setLevel(logging.WARNING)

    from streaming import jobs
    from streaming.metrics import HotPathStats, MetricsListener, add_listener
    from streaming.session import create_session

    config = build_config(args, settings)
    if args.nice:
        lower_priority(args.nice)
    log_event(log, "rules", threshold_bps=config.rules.threshold_bps, staleness_ms=config.rules.staleness_ms,
              pairs=",".join(config.rules.pair_names), fees=f"coinbase={config.rules.fees.coinbase},"
              f"binance={config.rules.fees.binance}")
    spark = create_session(config.spark)
    hotpath_stats = HotPathStats()
    add_listener(spark, MetricsListener(config.metrics_dir, hotpath_stats))

    queries = []
    restart: dict[str, Any] = {}  # query name -> how to start it again (our jobs; analytics owns its queries)
    for job in args.job:
        if job == "analytics":
            from streaming import analytics

            if args.available_now:
                # The analytics read silver's tables: this run's silver ends first, so that they read all of it.
                for query in queries:
                    if query.name == "silver":
                        query.awaitTermination()
            alerts = analytics.alert_sinks(settings)
            queries += analytics.start_all(spark, config, alerts, available_now=args.available_now)
            continue
        kwargs: dict[str, Any] = {}
        if job == "hotpath":
            kwargs = {"on_alerts": hotpath_stats.on_alerts, "on_late": hotpath_stats.on_late,
                      "kafka_client": settings.kafka.client_config()}
        start = functools.partial(jobs.start, spark, config, job, available_now=args.available_now, **kwargs)
        query = start()
        queries.append(query)
        restart[query.name] = start
        log_event(log, "query_started", job=job, checkpoint=config.checkpoint(job), lake=config.lake,
                  available_now=args.available_now, master=config.spark.master)

    compactor = None
    if config.compact_every_s > 0 and not args.available_now:
        from streaming.compaction import Compactor
        from streaming.sinks import open_tables

        compactor = Compactor(open_tables, config.compact_every_s).start()

    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        # Only a flag: the main thread may be inside a py4j call (see wait_for_queries); it stops the queries.
        nonlocal stopping
        stopping = True
        log_event(log, "stopping", signal=signum)

    signal.signal(signal.SIGTERM, stop)
    restarts = 0
    while True:
        try:
            wait_for_queries(spark, queries, args.available_now, lambda: stopping)
        except KeyboardInterrupt:
            stop(signal.SIGINT, None)
        failed = [q for q in queries if not q.isActive and q.exception() is not None]
        transient = [q for q in failed if q.name in restart and is_transient(q.exception())]
        if stopping or not failed or len(transient) < len(failed) or restarts >= MAX_RESTARTS:
            break
        # A restart resumes from the checkpoint: nothing is lost or written twice.
        restarts += 1
        for query in transient:
            log_event(log, "query_restarting", level=logging.WARNING, job=query.name, attempt=restarts,
                      error=str(query.exception())[:300])
            queries[queries.index(query)] = restart[query.name]()
        spark.streams.resetTerminated()
    for query in failed:
        log_event(log, "query_failed", level=logging.ERROR, job=query.name, error=str(query.exception())[:2000])
    for query in queries:
        if query.isActive:
            query.stop()
    if compactor is not None:
        compactor.stop()
    spark.stop()
    if failed:
        print(f"arb stream: {len(failed)} query failed: {failed[0].name}", file=sys.stderr)
        return 1
    return 0
