"""`arb stream bronze|silver|spreads|gold|all [--available-now] [--master URL]`.

`spreads` and `gold` both run the hot-path query (spreads, windows and alerts come out of one operator, see
streaming/hotpath.py); `all` runs bronze, silver and the hot path side by side in one Spark application.
Long-running by default; `--available-now` processes what Kafka holds and exits. A restart resumes from the
checkpoints under `data/checkpoints/<job>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import signal
import sys
from typing import Any

from arb.settings import Settings

TARGETS = {
    "bronze": ("bronze",),
    "silver": ("silver",),
    "spreads": ("hotpath",),
    "gold": ("hotpath",),
    "analytics": ("analytics",),  # market analytics: three queries, streaming/analytics.py
    "all": ("bronze", "silver", "hotpath", "analytics"),
}

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


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stream", help="Spark Structured Streaming jobs: Kafka -> bronze / silver / spreads / gold (Delta) + alerts",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("job", choices=sorted(TARGETS), help="which job(s) to run")
    parser.add_argument("--available-now", action="store_true",
                        help="process what Kafka holds now, then exit (catch-up, tests)")
    parser.add_argument("--master", default=None,
                        help="Spark master URL (default: ARB_SPARK_MASTER or local[*])")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from arb.logs import log_event, setup_logging

    setup_logging(args.log_level)
    logging.getLogger("py4j").setLevel(logging.WARNING)

    from streaming import jobs
    from streaming.config import from_settings
    from streaming.metrics import DetectionLatency, MetricsListener
    from streaming.session import create_session

    config = from_settings(settings)
    if args.master:
        config = config.replace(spark=dataclasses.replace(config.spark, master=args.master))
    spark = create_session(config.spark)
    detection = DetectionLatency()
    spark.streams.addListener(MetricsListener(config.metrics_dir, detection))

    queries = []
    restart: dict[str, Any] = {}  # query name -> how to start it again (our jobs; analytics owns its queries)
    for job in TARGETS[args.job]:
        if job == "analytics":
            from streaming import analytics

            alerts = analytics.alert_sinks(settings)
            queries += analytics.start_all(spark, config, alerts, available_now=args.available_now)
            continue
        kwargs: dict[str, Any] = {}
        if job == "hotpath":
            kwargs = {"on_alerts": detection.on_alerts, "kafka_client": settings.kafka.client_config()}
        start = functools.partial(jobs.start, spark, config, job, available_now=args.available_now, **kwargs)
        query = start()
        queries.append(query)
        restart[query.name] = start
        log_event(log, "query_started", job=job, checkpoint=config.checkpoint(job), lake=config.lake,
                  available_now=args.available_now, master=config.spark.master)

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
    spark.stop()
    if failed:
        print(f"arb stream: {len(failed)} query failed: {failed[0].name}", file=sys.stderr)
        return 1
    return 0
