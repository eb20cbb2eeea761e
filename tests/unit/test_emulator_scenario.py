"""Scenario files, faults and the ground truth they produce."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from arbitrage import spread
from producers.emulator.faults import FaultError, FaultKind, MalformedKind, parse_fault
from producers.emulator.market import Window, WindowAnchor, load_instruments
from producers.emulator.scenario import SCENARIO_DIR, ScenarioError, load_scenario, parse_scenario
from producers.emulator.truth import GroundTruth, iso_us


def test_every_shipped_scenario_loads():
    names = sorted(p.stem for p in SCENARIO_DIR.glob("*.json"))
    assert {"demo", "windows", "crash", "bench"} <= set(names)
    for name in names:
        assert load_scenario(name).name == name


def test_windows_scenario_has_known_windows_a_stale_decoy_and_a_gap_inside_a_window():
    scenario = load_scenario("windows")
    assert 60 <= scenario.duration_s <= 90
    assert 3 <= len(scenario.windows) <= 4
    assert {w.direction for w in scenario.windows} == set(spread.DIRECTIONS)
    silence = next(f for f in scenario.faults if f.kind == FaultKind.SILENCE)
    assert silence.exchange == "binance"
    decoy = next(m for m in scenario.moves if m.start_s >= silence.at_s)
    assert decoy.start_s + decoy.duration_s <= silence.at_s + silence.seconds
    assert abs(decoy.pct) * 100 > 70  # enough to look net-positive on the stale quotes
    assert not any(w.pair == decoy.pair and w.start_s < silence.at_s + silence.seconds and w.end_s > silence.at_s
                   for w in scenario.windows)
    gap = next(f for f in scenario.faults if f.kind == FaultKind.SKIP_SEQUENCE)
    assert any(w.pair == gap.pair and w.start_s < gap.at_s < w.end_s for w in scenario.windows)


def test_crash_and_bench_scenarios():
    crash = load_scenario("crash")
    assert [(m.pair, m.pct, m.duration_s, m.kind) for m in crash.moves] == [("BTC/USD", -3.0, 60.0, "crash")]
    bench = load_scenario("bench")
    total = sum(v.quotes_per_s for v in bench.venues.values()) * len(bench.pairs)
    assert total >= 2000


def test_window_schedule_is_seeded_and_never_overlaps_on_a_pair():
    spec = {"seed": 4, "duration_s": 600, "window_schedule": {"every_s": [20, 40]}}
    first, again = parse_scenario(spec), parse_scenario(spec)
    assert first.windows == again.windows
    assert parse_scenario({**spec, "seed": 5}).windows != first.windows
    assert 600 / 40 - 1 <= len(first.windows) <= 600 / 20
    for a, b in zip(first.windows, first.windows[1:]):
        assert b.start_s >= a.end_s


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"bogus": 1}, "unknown fields"),
        ({"pairs": "SOL/USD"}, "no price for pair SOL/USD"),
        ({"venues": {"coinbase": {"max_deviation_bps": 40}}}, "too close to the"),
        ({"windows": [{"pair": "BTC/USD", "direction": "sideways", "start_s": 1, "duration_s": 1,
                       "gross_bps": 90, "size": 1}]}, "direction must be one of"),
        ({"windows": [{"pair": "BTC/USD", "direction": "buy_coinbase_sell_binance", "start_s": 1,
                       "duration_s": 5, "gross_bps": 90, "size": 1},
                      {"pair": "BTC/USD", "direction": "buy_binance_sell_coinbase", "start_s": 3,
                       "duration_s": 5, "gross_bps": 90, "size": 1}]}, "overlap"),
        ({"windows": [{"pair": "DOGE/USD", "direction": "buy_coinbase_sell_binance", "start_s": 1,
                       "duration_s": 5, "gross_bps": 90, "size": 1}]}, "unknown pair"),
        ({"faults": [{"kind": "silence", "exchange": "binance", "seconds": 3}]}, "needs at_s"),
        ({"faults": [{"at_s": 1, "kind": "explode", "exchange": "binance"}]}, "fault kind must be one of"),
        ({"windows": [{"pair": "BTC/USD"}]}, "missing field"),
    ],
)
def test_a_bad_scenario_fails_with_a_one_line_reason(spec, message):
    with pytest.raises(ScenarioError, match=message) as err:
        parse_scenario(spec)
    assert "\n" not in str(err.value)


def test_unknown_scenario_name_lists_the_known_ones():
    with pytest.raises(ScenarioError, match="known: .*windows"):
        load_scenario("nope")


def test_fault_parsing():
    fault = parse_fault({"kind": "malformed", "exchange": "coinbase", "count": 3, "variant": "bad_price"})
    assert (fault.kind, fault.count, fault.variant) == (FaultKind.MALFORMED, 3, MalformedKind.BAD_PRICE)
    with pytest.raises(FaultError, match="exchange must be one of"):
        parse_fault({"kind": "drop", "exchange": "kraken"})
    with pytest.raises(FaultError, match="pair is required"):
        parse_fault({"kind": "cross_book", "exchange": "binance", "seconds": 1})
    with pytest.raises(FaultError, match="only Binance"):
        parse_fault({"kind": "server_shutdown", "exchange": "coinbase"})
    with pytest.raises(FaultError, match="seconds must be positive"):
        parse_fault({"kind": "silence", "exchange": "coinbase"})


def test_expected_net_of_a_window_uses_the_default_fees():
    window = Window("w", "BTC/USD", spread.BUY_COINBASE_SELL_BINANCE, 0, 1, Decimal("100"), Decimal("1"))
    expected = (Decimal("1.01") * Decimal("0.999") - Decimal("1.006")) / Decimal("1.006") * 10_000
    assert window.expected_net_bps() == expected


def test_ground_truth_opens_a_window_only_when_both_venues_show_it_and_closes_when_one_stops():
    scenario = load_scenario("windows")
    instruments = load_instruments(scenario.pairs, None)
    inst = next(i for i in instruments if i.name == "BTC/USD")
    window = scenario.windows[0]
    truth = GroundTruth("windows", 7, started_us=1_000_000_000_000_000, instruments=instruments)
    truth.plan_window(window)
    anchor = WindowAnchor(buy_ask=Decimal("100"), sell_bid=Decimal("101"), gross_bps=Decimal("100"),
                          net_bps=Decimal("29.6"))
    truth.observe_quote(window, "BTC/USD", "coinbase", window.id, 1_000_000_010_000_000, anchor, inst)
    assert truth.windows[window.id]["status"] == "planned"
    truth.observe_quote(window, "BTC/USD", "binance", window.id, 1_000_000_010_100_000, anchor, inst)
    record = truth.windows[window.id]
    assert (record["status"], record["start_us"]) == ("open", 1_000_000_010_100_000)
    assert record["start_iso"] == iso_us(1_000_000_010_100_000)
    truth.observe_quote(window, "BTC/USD", "coinbase", window.id, 1_000_000_012_000_000, anchor, inst)
    truth.observe_quote(None, "BTC/USD", "binance", None, 1_000_000_015_000_000, None, inst)
    record = truth.windows[window.id]
    assert (record["status"], record["end_us"], record["duration_ms"]) == ("closed", 1_000_000_015_000_000, 4900)
    assert Decimal(record["gross_peak_bps"]) == 100 and Decimal(record["net_peak_bps"]) == Decimal("29.6")
    assert record["planned_start_us"] == 1_000_000_000_000_000 + 10_000_000
    data = json.loads(json.dumps(truth.to_dict()))
    assert data["windows"][0]["id"] == window.id
    assert set(data) >= {"windows", "faults", "crashes", "moves", "fees", "break_even_gross_bps", "pairs"}


def test_iso_times_have_microseconds_and_z():
    assert iso_us(1618677810244075) == "2021-04-17T16:43:30.244075Z"
