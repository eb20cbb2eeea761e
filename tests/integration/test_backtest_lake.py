"""`arb backtest` against a real Delta lake written with `deltalake` (silver/quotes and silver/feed_status schemas)."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake

from arb.cli import main

pytestmark = pytest.mark.integration

D = Decimal
DAY = datetime(2026, 3, 2, tzinfo=UTC)
MONEY = pl.Decimal(30, 12)
TS = pl.Datetime("us", "UTC")
QUOTES = {
    "exchange": pl.String, "symbol": pl.String, "venue_symbol": pl.String, "bid": MONEY, "bid_size": MONEY,
    "ask": MONEY, "ask_size": MONEY, "ts_event": TS, "ts_recv": TS, "event_ts": TS, "seq": pl.Int64,
    "is_crossed": pl.Boolean, "topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "year": pl.Int32,
    "month": pl.Int32, "day": pl.Int32, "hour": pl.Int32, "date": pl.Date,
}
STATUS = {"exchange": pl.String, "symbol": pl.String, "state": pl.String, "detail": pl.String, "ts_recv": TS,
          "date": pl.Date}


def silver_quotes(rows):
    """(time, exchange, bid, bid_size, ask, ask_size) -> silver/quotes rows."""
    out = []
    for i, (ts, ex, bid, bs, ask, asz) in enumerate(rows):
        cb = ex == "coinbase"
        out.append((ex, "BTC/USD" if cb else "BTC/USDT", "BTC-USD" if cb else "BTCUSDT", D(bid), D(bs), D(ask),
                    D(asz), ts if cb else None, ts + timedelta(milliseconds=3), ts if cb else ts + timedelta(
                        milliseconds=3), i, D(bid) > D(ask), f"{ex}.quotes", 0, i, ts.year, ts.month, ts.day,
                    ts.hour, ts.date()))
    return pl.DataFrame(out, schema=QUOTES, orient="row")


def window(t0):
    """One window at t0 + 100 ms: buy Coinbase at 100, sell Binance at 100.5 (Binance times are receive times)."""
    ms = lambda n: t0 + timedelta(milliseconds=n)  # noqa: E731
    return [(ms(0), "coinbase", "99.9", "5", "100", "2"), (ms(97), "binance", "100.5", "1", "100.6", "1"),
            (ms(197), "binance", "100.2", "1", "100.3", "1")]


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    rows = window(DAY + timedelta(hours=9)) + window(DAY + timedelta(hours=10))
    rows += [(DAY + timedelta(hours=11), "coinbase", "101", "1", "100", "1")]  # crossed: never compared
    rows += window(DAY - timedelta(days=2, hours=-9))  # another day, outside the period
    quotes = silver_quotes(rows)
    write_deltalake(str(tmp_path / "silver" / "quotes"), quotes.to_arrow(), partition_by=["date"])
    # a gap on Coinbase between the 10:00 window's quotes voids the Coinbase quote: that window never opens
    gap = pl.DataFrame([("coinbase", None, "gap", "seq jump", DAY + timedelta(hours=10, milliseconds=50),
                         DAY.date())], schema=STATUS, orient="row")
    write_deltalake(str(tmp_path / "silver" / "feed_status"), gap.to_arrow(), partition_by=["date"])
    return tmp_path


def run_cli(capsys, *argv):
    code = main(["backtest", *argv])
    out = capsys.readouterr().out
    return code, out


def test_backtest_reads_the_delta_lake_and_trades_the_window(lake, tmp_path, capsys):
    report = tmp_path / "report.html"

    code, out = run_cli(capsys, "--lake", str(lake), "--from", "2026-03-02T00:00:00Z", "--to", "2026-03-03",
                        "--pairs", "BTC/USD", "--fees", "coinbase=10bps,binance=10bps", "--json",
                        "--report", str(report))

    summary = json.loads(out)
    assert code == 0
    # the 09:00 window trades 1 BTC at +0.2995; the 10:00 one is voided by the gap
    assert (summary["quotes"], summary["signals"], summary["trades"]) == (6, 1, 1)  # the crossed quote is not used
    assert (summary["gross_pnl"], summary["net_pnl"], summary["hit_rate"]) == ("0.500000000000", "0.299500000000", 1.0)
    assert summary["mean_edge_bps"] == "29.920080"
    html = report.read_text()
    assert "plotly" in html.lower() and "Equity" in html


def test_partitions_outside_the_period_are_never_opened(lake, capsys):
    # make the other day's files unreadable: a scan without partition pruning would fail on them
    for f in (lake / "silver" / "quotes").glob("date=2026-02-28/*.parquet"):
        f.write_bytes(b"not parquet")

    code, out = run_cli(capsys, "--lake", str(lake), "--from", "2026-03-02", "--to", "2026-03-02T12:00",
                        "--pairs", "BTC/USD", "--json")

    assert code == 0 and json.loads(out)["quotes"] == 6


def test_an_empty_period_in_the_lake_prints_zeros(lake, capsys):
    code, out = run_cli(capsys, "--lake", str(lake), "--from", "2026-03-05", "--to", "2026-03-06", "--json")

    summary = json.loads(out)
    assert code == 0
    assert (summary["quotes"], summary["signals"], summary["trades"], summary["net_pnl"]) == (0, 0, 0, "0.000000000000")


def test_latency_through_the_cli_kills_the_edge(lake, capsys):
    code, out = run_cli(capsys, "--lake", str(lake), "--from", "2026-03-02", "--to", "2026-03-03", "--pairs",
                        "BTC/USD", "--fees", "coinbase=0.001,binance=0.001", "--latency-ms", "150", "--json")

    summary = json.loads(out)
    assert code == 0 and summary["trades"] == 1
    assert summary["net_pnl"] == "-0.000200000000" and summary["hit_rate"] == 0.0


def test_bench_backtest_prints_rows_seconds_and_rate(capsys):
    code = main(["bench", "backtest", "--rows", "50000", "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["rows"] == 50_000 and result["comparisons"] > 49_000
    assert result["seconds"] > 0 and result["rows_per_s"] == pytest.approx(result["rows"] / result["seconds"], rel=0.05)  # seconds is rounded to ms
