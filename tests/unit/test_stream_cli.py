"""`arb stream` rules flags: exact values parsed, bad ones exit 2 with one line, and they reach the config."""

import os
from decimal import Decimal

import pytest

from arb.cli import build_parser
from arb.settings import from_env
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import QuoteConversion
from arbitrage.rules import RulesConfig
from streaming.cli import build_config


def parse(*flags: str):
    return build_parser().parse_args(["stream", "all", *flags])


def test_no_rules_flags_give_the_default_rules():
    # Act
    config = build_config(parse(), from_env({}), environ={})

    # Assert
    assert config.rules == RulesConfig()


def test_rules_flags_parse_as_exact_decimals_named_pairs_and_full_specs():
    # Act
    args = parse("--threshold-bps", "7.25", "--staleness-ms", "250", "--fees", "coinbase=0.004,binance=7.5bps",
                 "--pairs", "ETH/BTC, SOL/USD=SOL/USD~SOL/USDT@0.9995")

    # Assert
    assert args.threshold_bps == Decimal("7.25") and isinstance(args.threshold_bps, Decimal)
    assert args.staleness_ms == 250
    assert args.fees == FeeSchedule(coinbase=Decimal("0.004"), binance=Decimal("0.00075"))
    assert [p.name for p in args.pairs] == ["ETH/BTC", "SOL/USD"]
    assert args.pairs[0] == RulesConfig().pair("ETH/BTC")
    assert args.pairs[1].conversion == QuoteConversion("USDT", "USD", Decimal("0.9995"))


def test_the_rules_flags_reach_the_streaming_config():
    # Arrange
    args = parse("--threshold-bps", "12", "--staleness-ms", "800", "--pairs", "BTC/USD", "--fees", "binance=0.0009")

    # Act
    config = build_config(args, from_env({}), environ={})

    # Assert
    assert config.rules == RulesConfig(threshold_bps=Decimal("12"), staleness_ms=800,
                                       pairs=(RulesConfig().pair("BTC/USD"),),
                                       fees=FeeSchedule(binance=Decimal("0.0009")))


@pytest.mark.parametrize("flags", [
    ("--threshold-bps", "ten"),
    ("--threshold-bps", "inf"),
    ("--staleness-ms", "-5"),
    ("--staleness-ms", "0.5"),
    ("--pairs", "DOGE/USD"),
    ("--pairs", "BTC/USD,BTC/USD"),
    ("--pairs", "BTC/USD=BTC/USD~BTC/USDT"),  # quote currencies differ and no rate: never compared silently
    ("--fees", "coinbase=1.5"),
    ("--fees", "kraken=0.001"),
])
def test_a_bad_rules_flag_exits_2_with_one_line(flags, capsys):
    # Act
    with pytest.raises(SystemExit) as exit_info:
        parse(*flags)

    # Assert
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arb stream: error: argument " + flags[0])


@pytest.mark.parametrize(("text", "jobs"), [
    ("all", ("bronze", "silver", "hotpath", "analytics")),
    ("lake", ("bronze", "silver", "analytics")),
    ("gold", ("hotpath",)),
    ("silver,spreads,gold", ("silver", "hotpath")),
    (" bronze , lake ", ("bronze", "silver", "analytics")),
])
def test_jobs_are_a_comma_list_of_targets_each_query_once(text, jobs):
    assert build_parser().parse_args(["stream", text]).job == jobs


@pytest.mark.parametrize("argv", [["stream", "silver,bogus"], ["stream", ","], ["stream", "all", "--nice", "-1"]])
def test_an_unknown_job_or_a_negative_nice_exits_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arb stream: error: argument")


def test_lower_priority_nices_the_process_and_its_children():
    import subprocess
    import sys

    code = ("import os, subprocess, sys; from streaming.cli import lower_priority; lower_priority(3); "
            "print(os.getpriority(os.PRIO_PROCESS, 0)); sys.stdout.flush(); "
            "subprocess.run([sys.executable, '-c', 'import os; print(os.getpriority(os.PRIO_PROCESS, 0))'])")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    # Its own session, so that the autogroup it nices is its own, not the test run's.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split()

    assert out == [str(before + 3)] * 2
