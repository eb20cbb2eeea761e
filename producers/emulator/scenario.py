"""Scenario files (`data/scenarios/*.json`): the synthetic market, its injected windows, faults and moves.

    {"name": "windows", "seed": 7, "duration_s": 80,
     "pairs": "BTC/USD=BTC/USD~BTC/USDT@1.0,ETH/USD=ETH/USD~ETH/USDT@1.0,ETH/BTC",      (default: DEFAULT_PAIRS)
     "prices": {"BTC/USD": {"price": "65000", "volatility_bps": 2, "size": "0.5"}},       (defaults for these three)
     "venues": {"coinbase": {"quotes_per_s": 10, "trades_per_s": 1, "noise_bps": 1, "lag_s": 0.2,
                             "half_spread_bps": 1, "max_deviation_bps": 10}, "binance": {...}},
     "windows": [{"pair": "BTC/USD", "direction": "buy_coinbase_sell_binance", "start_s": 10, "duration_s": 5,
                  "gross_bps": "100", "size": "0.4"}],
     "window_schedule": {"first_s": 15, "every_s": [20, 40], "duration_s": [3, 8], "gross_bps": [85, 140],
                         "size": ["0.1", "1.0"]},                                  (generated windows, seeded)
     "faults": [{"at_s": 40, "kind": "silence", "exchange": "binance", "seconds": 8}],  (see faults.py)
     "moves": [{"pair": "BTC/USD", "at_s": 42, "duration_s": 2, "pct": 1.5, "kind": "move", "label": "..."}]}

`--scenario NAME` reads `data/scenarios/NAME.json`; a path reads that file.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from arbitrage import spread
from arbitrage.fees import FeeSchedule
from arbitrage.pairs import DEFAULT_PAIRS, Pair, parse_pairs
from producers.emulator.faults import Fault, FaultError, parse_fault
from producers.emulator.market import EXCHANGES, Move, PairParams, VenueParams, Window

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "data" / "scenarios"

# Starting points for the demo pairs; any other pair needs its own "prices" entry.
DEFAULT_PRICES = {
    "BTC/USD": PairParams(price=Decimal("65000"), volatility_bps=2.0, size=Decimal("0.5")),
    "ETH/USD": PairParams(price=Decimal("3200"), volatility_bps=2.5, size=Decimal("5")),
    "ETH/BTC": PairParams(price=Decimal("0.04923"), volatility_bps=1.5, size=Decimal("5")),
}
UNBOUNDED_HORIZON_S = 24 * 3600.0  # how far ahead windows are generated when a scenario has no duration


class ScenarioError(ValueError):
    """A scenario file that cannot run (bad field, unknown pair, noise that could fake a window, ...)."""


@dataclass(frozen=True, slots=True)
class WindowSchedule:
    """Windows generated from the seed: one every `every_s` (uniform in the range) from `first_s` on."""

    first_s: float = 15.0
    every_s: tuple[float, float] = (20.0, 40.0)
    duration_s: tuple[float, float] = (3.0, 8.0)
    gross_bps: tuple[float, float] = (85.0, 140.0)
    size: tuple[Decimal, Decimal] = (Decimal("0.1"), Decimal("1.0"))
    pairs: tuple[str, ...] = ()  # default: every pair

    def generate(self, pairs: tuple[str, ...], horizon_s: float, seed: int) -> list[Window]:
        rng = random.Random(f"windows-{seed}")
        names = self.pairs or pairs
        out, t, n = [], self.first_s, 0
        while t < horizon_s:
            n += 1
            duration = rng.uniform(*self.duration_s)
            low, high = (float(s) for s in self.size)
            out.append(
                Window(
                    id=f"g{n}",
                    pair=rng.choice(names),
                    direction=rng.choice(spread.DIRECTIONS),
                    start_s=round(t, 3),
                    duration_s=round(duration, 3),
                    gross_bps=Decimal(str(round(rng.uniform(*self.gross_bps), 1))),
                    size=Decimal(str(round(rng.uniform(low, high), 3))),
                )
            )
            t += max(rng.uniform(*self.every_s), duration + 1.0)
        return [w for w in out if w.end_s <= horizon_s]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int = 0
    duration_s: float | None = None  # None: run until stopped
    pairs: tuple[Pair, ...] = ()
    prices: dict[str, PairParams] = dataclasses.field(default_factory=dict)
    venues: dict[str, VenueParams] = dataclasses.field(default_factory=dict)
    windows: tuple[Window, ...] = ()
    faults: tuple[Fault, ...] = ()
    moves: tuple[Move, ...] = ()
    description: str = ""

    def validate(self, fees: FeeSchedule = FeeSchedule()) -> None:
        """Fail with a one-line reason on anything that cannot run or would fake the ground truth."""
        names = {p.name for p in self.pairs}
        if not names:
            raise ScenarioError(f"scenario {self.name}: no pairs")
        for pair in names:
            if pair not in self.prices:
                raise ScenarioError(f"scenario {self.name}: no price for pair {pair} (add it under 'prices')")
        bound = sum(v.max_deviation_bps - v.half_spread_bps for v in self.venues.values())
        break_even = min(float(spread.break_even_gross_bps(fees.coinbase, fees.binance)),
                         float(spread.break_even_gross_bps(fees.binance, fees.coinbase)))
        if bound >= break_even * 0.5:  # margin for stale quotes during fast moves
            raise ScenarioError(
                f"scenario {self.name}: venue noise allows a gross spread of {bound:.1f} bps, too close to the "
                f"{break_even:.1f} bps fee break-even (keep it under half); lower max_deviation_bps"
            )
        by_pair: dict[str, list[Window]] = {}
        for window in self.windows:
            if window.pair not in names:
                raise ScenarioError(f"scenario {self.name}: window {window.id} on unknown pair {window.pair}")
            by_pair.setdefault(window.pair, []).append(window)
        for pair, windows in by_pair.items():
            windows.sort(key=lambda w: w.start_s)
            for a, b in zip(windows, windows[1:]):
                if b.start_s < a.end_s:
                    raise ScenarioError(f"scenario {self.name}: windows {a.id} and {b.id} overlap on {pair}")
        for item in (*self.faults, *self.moves):
            pair = getattr(item, "pair", None)
            if pair and pair not in names:
                raise ScenarioError(f"scenario {self.name}: {type(item).__name__.lower()} on unknown pair {pair}")

    def with_rates(self, quotes_per_s: float | None = None, trades_per_s: float | None = None) -> Scenario:
        """The same scenario with every venue's per-symbol rates replaced (benchmarks)."""
        venues = {}
        for exchange, venue in self.venues.items():
            changes: dict[str, float] = {}
            if quotes_per_s is not None:
                changes["quotes_per_s"] = quotes_per_s
            if trades_per_s is not None:
                changes["trades_per_s"] = trades_per_s
            venues[exchange] = dataclasses.replace(venue, **changes)
        return dataclasses.replace(self, venues=venues)


def _range(value: Any, name: str, cast=float) -> tuple:
    if isinstance(value, (int, float, str)):
        return (cast(value), cast(value))
    if isinstance(value, list) and len(value) == 2:
        return (cast(value[0]), cast(value[1]))
    raise ScenarioError(f"window_schedule.{name} must be a number or [low, high]")


def _known(data: dict, allowed: set[str], where: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown fields {sorted(unknown)}")


def parse_scenario(data: dict[str, Any], default_name: str = "scenario") -> Scenario:
    """Build and validate a Scenario from its JSON form."""
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a JSON object")
    _known(data, {"name", "description", "seed", "duration_s", "pairs", "prices", "venues", "windows",
                  "window_schedule", "faults", "moves"}, "scenario")
    name = str(data.get("name") or default_name)
    try:
        pairs = parse_pairs(data.get("pairs") or DEFAULT_PAIRS)
        prices = dict(DEFAULT_PRICES)
        for pair, spec in (data.get("prices") or {}).items():
            _known(spec, {"price", "volatility_bps", "size"}, f"prices.{pair}")
            base = prices.get(pair)
            prices[pair] = PairParams(
                price=Decimal(str(spec.get("price", base.price if base else "0"))),
                volatility_bps=float(spec.get("volatility_bps", base.volatility_bps if base else 2.0)),
                size=Decimal(str(spec.get("size", base.size if base else "1"))),
            )
        venues = {}
        for exchange in EXCHANGES:
            spec = (data.get("venues") or {}).get(exchange, {})
            _known(spec, {f.name for f in dataclasses.fields(VenueParams)}, f"venues.{exchange}")
            venues[exchange] = VenueParams(**{k: float(v) for k, v in spec.items()})
        unknown_venues = set(data.get("venues") or {}) - set(EXCHANGES)
        if unknown_venues:
            raise ScenarioError(f"venues: unknown exchanges {sorted(unknown_venues)}")
        duration = data.get("duration_s")
        duration_s = float(duration) if duration is not None else None
        seed = int(data.get("seed", 0))
        windows = []
        for n, spec in enumerate(data.get("windows") or [], start=1):
            _known(spec, {"id", "pair", "direction", "start_s", "duration_s", "gross_bps", "size"}, f"windows[{n - 1}]")
            windows.append(
                Window(
                    id=str(spec.get("id") or f"w{n}"),
                    pair=spec["pair"],
                    direction=spec["direction"],
                    start_s=float(spec["start_s"]),
                    duration_s=float(spec["duration_s"]),
                    gross_bps=Decimal(str(spec["gross_bps"])),
                    size=Decimal(str(spec["size"])),
                )
            )
        schedule = data.get("window_schedule")
        if schedule:
            _known(schedule, {f.name for f in dataclasses.fields(WindowSchedule)}, "window_schedule")
            generator = WindowSchedule(
                first_s=float(schedule.get("first_s", 15.0)),
                every_s=_range(schedule.get("every_s", [20, 40]), "every_s"),
                duration_s=_range(schedule.get("duration_s", [3, 8]), "duration_s"),
                gross_bps=_range(schedule.get("gross_bps", [85, 140]), "gross_bps"),
                size=_range(schedule.get("size", ["0.1", "1.0"]), "size", cast=lambda v: Decimal(str(v))),
                pairs=tuple(schedule.get("pairs") or ()),
            )
            horizon = duration_s if duration_s is not None else UNBOUNDED_HORIZON_S
            windows += generator.generate(tuple(p.name for p in pairs), horizon, seed)
        faults = []
        for spec in data.get("faults") or []:
            if not isinstance(spec, dict) or spec.get("at_s") is None:
                raise ScenarioError("every scenario fault needs at_s")
            faults.append(parse_fault(spec))
        moves = []
        for n, spec in enumerate(data.get("moves") or []):
            _known(spec, {"pair", "at_s", "duration_s", "pct", "kind", "label"}, f"moves[{n}]")
            moves.append(
                Move(
                    pair=spec["pair"],
                    start_s=float(spec["at_s"]),
                    duration_s=float(spec["duration_s"]),
                    pct=float(spec["pct"]),
                    kind=spec.get("kind", "move"),
                    label=str(spec.get("label", "")),
                )
            )
    except ScenarioError:
        raise
    except FaultError as exc:
        raise ScenarioError(f"scenario {name}: {exc}") from None
    except KeyError as exc:
        raise ScenarioError(f"scenario {name}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise ScenarioError(f"scenario {name}: {exc}") from None
    scenario = Scenario(
        name=name,
        seed=seed,
        duration_s=duration_s,
        pairs=pairs,
        prices=prices,
        venues=venues,
        windows=tuple(sorted(windows, key=lambda w: w.start_s)),
        faults=tuple(sorted(faults, key=lambda f: f.at_s or 0.0)),
        moves=tuple(moves),
        description=str(data.get("description", "")),
    )
    scenario.validate()
    return scenario


def resolve_scenario_path(name_or_path: str, scenario_dir: Path = SCENARIO_DIR) -> Path:
    """`demo` -> data/scenarios/demo.json; an existing path is used as given."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {name_or_path} not found")
        return path
    candidate = scenario_dir / f"{name_or_path}.json"
    if not candidate.is_file():
        known = sorted(p.stem for p in scenario_dir.glob("*.json"))
        raise ScenarioError(f"unknown scenario {name_or_path!r}; known: {', '.join(known) or 'none'}")
    return candidate


def load_scenario(name_or_path: str, scenario_dir: Path = SCENARIO_DIR) -> Scenario:
    path = resolve_scenario_path(name_or_path, scenario_dir)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"scenario file {path}: not JSON ({exc})") from None
    return parse_scenario(data, default_name=path.stem)
