"""`arb bench alignment --rate N --seconds S [--json]`: the hot path's two alignments over the same Kafka backlog.

A synthetic market (streaming.synthetic, windows injected every few seconds) of S seconds at N quotes/s across both
venues is published to an embedded broker; then the hot path drains it with `--available-now`, at most N records per
micro-batch (one second of market per batch), once per alignment, in one process and one Spark session:

    asof  quotes -> ArbProcessor (keeps each side's latest quote)            streaming/hotpath.py
    join  quotes -> stream-stream join within S on (pair, bucket) -> ArbProcessor     streaming/quotejoin.py

Reported per alignment: drain throughput (quotes/s the hot path can sustain: records / time spent in batches after
the first), micro-batch p50/p99, the joined rows the join produced (its fan-out, counted from the published ticks),
windows found, and whether both alignments wrote the same gold windows. Compare the ratio, not the absolute figures:
both halves run back to back on the same machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from typing import Any

from arb.argtypes import positive_int
from arb.settings import Settings


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser("alignment", help="hot path: as-of operator vs stream-stream join, same backlog")
    parser.add_argument("--rate", type=positive_int, default=2000, help="quotes per second across both venues")
    parser.add_argument("--seconds", type=positive_int, default=30, help="seconds of market in the backlog")
    parser.add_argument("--alignments", default="asof,join", type=_alignments, help="which to run, in this order")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def _alignments(text: str) -> list[str]:
    from streaming.config import ALIGNMENTS

    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ALIGNMENTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"alignments are {', '.join(ALIGNMENTS)}; got {text!r}")
    return names


def joined_rows(records: list[Any], rules: Any) -> int:
    """How many rows the join emits for these quote records: per pair, the (Coinbase, Binance) tick pairs at most
    S apart (statuses aside)."""
    import numpy as np
    import orjson

    times: dict[tuple[str, str], list[int]] = {}
    for record in records:
        if not record.topic_kind.startswith("quotes:"):
            continue
        doc = orjson.loads(record.value)
        for pair in rules.pairs_for(doc["exchange"], doc["symbol"]):
            times.setdefault((pair.name, doc["exchange"]), []).append(record.t_us)
    total = 0
    s_us = rules.staleness_us
    for pair in rules.pairs:
        cb = np.sort(np.array(times.get((pair.name, "coinbase"), []), dtype=np.int64))
        bn = np.sort(np.array(times.get((pair.name, "binance"), []), dtype=np.int64))
        total += int((np.searchsorted(bn, cb + s_us, side="right") - np.searchsorted(bn, cb - s_us)).sum())
    return total


def summarize(progress: list[dict], joined: int | None, gold_closes: int) -> dict[str, Any]:
    """Figures of one drain from its progress events (the first batch, which plans and warms up, is left out)."""
    from streaming.metrics import percentile

    batches = [p for p in progress if p.get("numInputRows", 0) > 0]
    steady = batches[1:] or batches
    rows = sum(p["numInputRows"] for p in steady)
    busy_s = sum(p["durationMs"].get("triggerExecution", 0) for p in steady) / 1000
    durations = [p["durationMs"].get("triggerExecution", 0) for p in steady]
    return {
        "batches": len(batches),
        "quotes_per_s": round(rows / busy_s, 1) if busy_s else None,
        "batch_p50_ms": percentile(durations, 50),
        "batch_p99_ms": percentile(durations, 99),
        "first_batch_ms": batches[0]["durationMs"].get("triggerExecution") if batches else None,
        "joined_rows": joined,
        "windows_found": gold_closes,
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    from arb.logs import setup_logging

    setup_logging("WARNING")
    from streaming.bench import print_result

    print_result(measure(args, settings), args.json)
    return 0


def _gold_closes(path: str) -> list[tuple]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        rows = DeltaTable(path).to_pyarrow_table().to_pylist()
    except TableNotFoundError:
        return []
    return sorted((r["window_id"], r["start_ts"], r["end_ts"], r["ticks"], str(r["peak_net_bps"]), r["close_reason"])
                  for r in rows if r["event"] == "CLOSE")


def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from arb.kafka import ensure_topics
    from streaming import jobs, synthetic
    from streaming.bench import _scenario, bench_data, bench_environ, bench_session, start_broker
    from streaming.config import from_settings

    tmp, bench_settings = bench_data(settings, "arb-bench-alignment-")
    broker = start_broker(bench_settings)
    try:
        ensure_topics(bench_settings)
        base = from_settings(bench_settings, environ=bench_environ())
        start_us = time.time_ns() // 1000 - (args.seconds + 60) * 1_000_000
        # Quotes only: the scenario's closing status sits at its end in a topic of its own, and a rate-limited
        # drain would read it in the first batch and move the watermark past every quote.
        records = [r for r in _scenario(base.rules, start_us, args.seconds, args.rate).records()
                   if r.topic_kind.startswith("quotes:")]
        synthetic.publish(records, bench_settings.kafka.client_config(), bench_settings.kafka.topics)
        spark = bench_session(base.spark)
        result: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "quotes": len(records),
                                  "cores": base.spark.master}
        golds = {}
        for alignment in args.alignments:
            config = base.replace(
                alignment=alignment, lake=str(tmp / alignment / "lake"), checkpoints=str(tmp / alignment / "ckpt"),
                alert_log=str(tmp / alignment / "alerts.jsonl"),
                # One second of market per batch: the join reads each venue's topic as a source of its own.
                hotpath=dataclasses.replace(base.hotpath, max_offsets_per_trigger=args.rate // (
                    2 if alignment == "join" else 1)))
            started = time.monotonic()
            query = jobs.start(spark, config, "hotpath", available_now=True)
            query.awaitTermination()
            if query.exception() is not None:
                raise RuntimeError(f"{alignment}: {str(query.exception())[:500]}")
            golds[alignment] = _gold_closes(config.table("gold/arb_windows"))
            result[alignment] = {
                **summarize(query.recentProgress, joined_rows(records, base.rules) if alignment == "join" else None,
                            len(golds[alignment])),
                "wall_s": round(time.monotonic() - started, 1),
            }
        if len(golds) == 2:
            result["same_gold"] = len(set(map(tuple, golds.values()))) == 1
        return result
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
