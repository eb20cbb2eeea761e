from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from arb.cli import main
from arbitrage import backtest, oracle
from arbitrage.backtest import BacktestConfig, max_drawdown, parse_balances
from arbitrage.backtest_cli import parse_time
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import parse_pairs
from arbitrage.rules import RulesConfig

D = Decimal
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES = RulesConfig(fees=FeeSchedule(coinbase=D("0.001"), binance=D("0.001")),
                    pairs=parse_pairs("BTC/USD=BTC/USD~BTC/USDT@1.0"))
SCHEMA = {"exchange": pl.String, "symbol": pl.String, "bid": oracle.MONEY, "bid_size": oracle.MONEY,
          "ask": oracle.MONEY, "ask_size": oracle.MONEY, "event_ts": oracle.TS, "seq": pl.Int64,
          "is_crossed": pl.Boolean}


def quotes(*rows):
    """(ms after T0, exchange, bid, bid_size, ask, ask_size) -> silver quotes."""
    return pl.DataFrame(
        [(ex, "BTC/USD" if ex == "coinbase" else "BTC/USDT", D(bid), D(bs), D(ask), D(asz),
          T0 + timedelta(milliseconds=ms), i, False) for i, (ms, ex, bid, bs, ask, asz) in enumerate(rows)],
        schema=SCHEMA, orient="row",
    )


def config(**kwargs):
    return BacktestConfig(start=T0, end=T0 + timedelta(minutes=1), rules=RULES, **kwargs)


# Buy Coinbase at 100, sell Binance at 100.5, 0.1% fee each: edge 100.5*0.999 - 100*1.001 = 0.2995 per BTC,
# net bps 0.2995 / 100.1 * 1e4 = 29.920080; the displayed size is min(2 on Coinbase's ask, 1 on Binance's bid).
ONE_WINDOW = [
    (0, "coinbase", "99.9", "5", "100", "2"),
    (100, "binance", "100.5", "1", "100.6", "1"),  # the window opens here
    (120, "binance", "100.2", "1", "100.3", "1"),  # 100.2*0.999 - 100.1 = -0.0002: the window closes
]


def test_a_known_window_with_known_fees_and_no_latency_earns_the_hand_computed_pnl():
    result = backtest.run(quotes(*ONE_WINDOW), None, config())

    (trade,) = result.trades.iter_rows(named=True)
    assert (trade["buy_exchange"], trade["buy_price"], trade["sell_exchange"], trade["sell_price"]) == (
        "coinbase", D(100), "binance", D("100.5"))
    assert trade["size"] == D(1)
    assert (trade["gross_pnl"], trade["fees"], trade["net_pnl"]) == (D("0.5"), D("0.2005"), D("0.2995"))
    assert trade["signal_net_bps"] == trade["edge_bps"] == D("29.920080")
    s = result.summary
    assert (s["signals"], s["trades"], s["gross_pnl"], s["net_pnl"], s["hit_rate"]) == (
        1, 1, "0.500000000000", "0.299500000000", 1.0)
    assert s["mean_edge_bps"] == "29.920080" and s["max_drawdown"] == "0.000000000000"
    # the run needed 100.1 USD on Coinbase and 1 BTC on Binance (valued at 100)
    assert s["capital_used"] == "200.100000000000"


def test_size_option_caps_the_trade():
    result = backtest.run(quotes(*ONE_WINDOW), None, config(size=D("0.5")))

    assert result.trades["size"].to_list() == [D("0.5")]
    assert result.summary["net_pnl"] == "0.149750000000"


def test_latency_that_kills_the_edge_fills_at_the_later_quotes_and_loses():
    result = backtest.run(quotes(*ONE_WINDOW), None, config(latency_ms=50))

    (trade,) = result.trades.iter_rows(named=True)
    assert trade["fill_ts"] == T0 + timedelta(milliseconds=150)
    assert trade["sell_price"] == D("100.2")
    # 100.2*0.999 - 100*1.001 = -0.0002 per BTC
    assert trade["net_pnl"] == D("-0.0002")
    s = result.summary
    assert (s["trades"], s["net_pnl"], s["hit_rate"], s["max_drawdown"]) == (1, "-0.000200000000", 0.0,
                                                                             "0.000200000000")


def test_inventory_exhaustion_shrinks_then_skips_trades():
    # three windows with the same prices: each opens at 100.5 and closes when Binance falls back to 100.2
    rows = [(0, "coinbase", "99.9", "5", "100", "2")]
    for k in range(3):
        rows += [(100 + 200 * k, "binance", "100.5", "1", "100.6", "1"),
                 (150 + 200 * k, "binance", "100.2", "1", "100.3", "1"),
                 (160 + 200 * k, "coinbase", "99.9", "5", "100", "2")]
    balances = parse_balances("coinbase:USD=150,binance:BTC=1.5")

    result = backtest.run(quotes(*rows), None, config(balances=balances))

    # 1st: 1 BTC for 100.1 USD; 2nd: the 49.9 USD left buy 49.9/100.1 = 0.498501498501 BTC; 3rd: nothing left
    assert result.trades["size"].to_list() == [D(1), D("0.498501498501")]
    assert result.trades["net_pnl"].to_list() == [D("0.2995"), D("0.149301198801")]
    assert result.summary["signals"] == 3
    assert result.summary["skipped"] == {"no_book": 0, "no_size": 0, "no_inventory": 1}


def test_no_shorting_without_base_on_the_sell_venue():
    result = backtest.run(quotes(*ONE_WINDOW), None, config(balances=parse_balances("coinbase:USD=1000")))

    assert result.trades.is_empty()
    assert result.summary["skipped"]["no_inventory"] == 1


def test_rebalancing_cost_is_charged_on_the_bought_notional():
    result = backtest.run(quotes(*ONE_WINDOW), None, config(rebalance_bps=D(10)))

    (trade,) = result.trades.iter_rows(named=True)
    assert trade["rebalance_cost"] == D("0.1")  # 10 bps of 1 BTC x 100
    assert trade["net_pnl"] == D("0.1995")
    assert trade["fees"] == D("0.2005")


def test_an_empty_period_reports_zeros_not_an_error():
    empty = pl.DataFrame(schema=SCHEMA)

    result = backtest.run(empty, None, config())

    s = result.summary
    assert (s["quotes"], s["signals"], s["trades"], s["net_pnl"], s["hit_rate"], s["mean_edge_bps"]) == (
        0, 0, 0, "0.000000000000", None, None)
    assert result.trades.schema == pl.Schema(backtest.TRADE_SCHEMA)


def test_signals_are_the_oracles_window_openings():
    rows = [(0, "coinbase", "99.9", "5", "100", "2"), (100, "binance", "100.5", "1", "100.6", "1"),
            (200, "binance", "100.6", "1", "100.7", "1"), (900, "binance", "100.5", "1", "100.6", "1"),
            (950, "coinbase", "99.9", "5", "100", "2")]
    q = quotes(*rows)

    result = backtest.run(q, None, config())
    runs = oracle.window_runs(oracle.spreads(q, None, RULES), None, RULES, None).collect()

    # the 100 ms window goes stale at 500 ms; Coinbase's quote at 950 ms re-opens one
    assert result.signals["event_ts"].to_list() == [T0 + timedelta(milliseconds=100),
                                                    T0 + timedelta(milliseconds=950)]
    assert runs["start_us"].to_list() == [backtest.to_us(t) for t in result.signals["event_ts"]]


def test_max_drawdown_is_the_largest_fall_from_a_peak():
    assert max_drawdown([D(1), D(3), D(2), D(5), D("1.5"), D(4)]) == D("3.5")
    assert max_drawdown([D(-1)]) == D(1)
    assert max_drawdown([]) == D(0)


def test_balances_parse_and_refuse_bad_specs():
    assert parse_balances("coinbase:usd=10, binance:BTC=0.5") == {("coinbase", "USD"): D(10),
                                                                 ("binance", "BTC"): D("0.5")}
    for bad in ("kraken:USD=1", "coinbase=1", "coinbase:USD=-1", "coinbase:USD=abc"):
        with pytest.raises(ValueError):
            parse_balances(bad)


def test_times_parse_iso_naive_as_utc_and_relative():
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

    assert parse_time("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time("2026-03-01T10:00:00Z", now) == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_time("now-2h", now) == datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert parse_time("-1d", now) == datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--from", "2026-13-01", "--to", "2026-03-02"], "--from: not a time"),
        (["--from", "2026-03-02", "--to", "2026-03-01"], "--to must be after --from"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--pairs", "DOGE/USD"], "unknown pair 'DOGE/USD'"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--latency-ms", "-5"], "--latency-ms: must be >= 0"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--pairs", "BTC/USD,ETH/BTC"], "one quote currency"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, reason, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["backtest", *argv])

    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert reason in err and err.count("\n") == 1


def test_config_refuses_naive_times_and_mixed_currencies():
    with pytest.raises(ValueError, match="timezone-aware"):
        BacktestConfig(start=datetime(2026, 1, 1), end=T0, rules=RULES)
    with pytest.raises(ValueError, match="one quote currency"):
        BacktestConfig(start=T0, end=T0 + timedelta(1), rules=RulesConfig())


def test_progress_bar_draws_on_the_given_stream_only_when_enabled():
    import io

    shown, hidden = io.StringIO(), io.StringIO()
    for stream, enabled in ((shown, True), (hidden, False)):
        progress = backtest.Progress(2, enabled=enabled, stream=stream)
        progress.step("quotes read")
        progress.step("signals")
        progress.close()

    assert "2/2" in shown.getvalue() and "signals" in shown.getvalue() and "#" * 30 in shown.getvalue()
    assert hidden.getvalue() == ""
    assert set(progress.timings) == {"quotes read", "signals"}
