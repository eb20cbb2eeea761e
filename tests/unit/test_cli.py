"""The `arb` command line: help everywhere, bad arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from arb.cli import build_parser, main


def _subparser_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every sub-command path: ('up',), ('kafka',), ('kafka', 'start'), ..."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(prefix + (name,))
                paths += _subparser_paths(sub, prefix + (name,))
    return paths


COMMAND_PATHS = _subparser_paths(build_parser())


def test_the_parser_has_the_infrastructure_commands():
    assert {("up",), ("kafka",), ("kafka", "start"), ("kafka", "stop"), ("kafka", "status")} <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", [(), *COMMAND_PATHS], ids=lambda p: " ".join(p) or "arb")
def test_help_exits_0_and_prints_usage(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: arb")


@pytest.mark.parametrize("argv", [
    [],
    ["no-such-command"],
    ["kafka"],
    ["kafka", "restart"],
    ["kafka", "start", "--bogus"],
    ["up", "--source", "moon"],
    ["up", "--coinbase-port", "x"],
    ["up", "--dashboard-port", "70000"],
    ["up", "--status-interval", "often"],
    ["up", "--threshold-bps", "lots"],
    ["up", "--pairs", "BTC/EUR"],
], ids=" ".join)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "error:" in err


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arb.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_bad_setting_exits_2_with_one_line_naming_it():
    result = _run(["kafka", "status"], ARB_KAFKA_PORT="not-a-port")

    assert result.returncode == 2
    assert result.stderr == "arb kafka: error: ARB_KAFKA_PORT must be an integer, got 'not-a-port'\n"


def test_equal_emulator_ports_exit_2_with_one_line():
    result = _run(["up", "--coinbase-port", "18000", "--binance-port", "18000"])

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == \
        "arb up: error: --coinbase-port, --binance-port and --control-port must differ"


def test_help_does_not_import_spark_dash_or_polars():
    code = ("import sys; from arb.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('pyspark', 'dash', 'polars') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
