"""Market metadata through ccxt: canonical symbol <-> venue id both ways, taker fees, price and size increments.

Live, ccxt fetches it (`load_markets`). Offline (this machine, CI) it comes from a REST snapshot file: Binance
`GET /api/v3/exchangeInfo` or Coinbase Exchange `GET /products`. ccxt has no public "parse this snapshot" call for
every exchange (Binance's `parse_market` needs state that `fetch_markets` prepares; Coinbase's parsing lives inside
`fetch_markets`), so we answer ccxt's own REST call from the file: the instance's `publicGetExchangeInfo` /
`publicGetProducts` returns the snapshot and ccxt's unmodified `fetch_markets` does the parsing. The symbols are
therefore exactly ccxt's unified ones (e.g. Coinbase `CGLD-USD` is `CELO/USD`).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from arb.settings import REPO_ROOT, ConfigError
from arbitrage.symbols import Market, SymbolMap

EXCHANGES = ("coinbase", "binance")

# The committed snapshots (data/markets/), used when no --markets file is given and the live REST API is unreachable.
DEFAULT_SNAPSHOTS = {
    "coinbase": REPO_ROOT / "data" / "markets" / "coinbase-products.json",
    "binance": REPO_ROOT / "data" / "markets" / "binance-exchangeInfo.json",
}


def _ccxt_exchange(exchange: str) -> Any:
    import ccxt  # ~0.7 s to import: only when markets are needed

    if exchange == "coinbase":
        return ccxt.coinbaseexchange()
    if exchange == "binance":
        # Spot only: the linear/inverse futures markets need two more endpoints and are not traded here.
        return ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    raise ConfigError(f"unknown exchange {exchange!r} (expected one of {', '.join(EXCHANGES)})")


def _feed_snapshot(client: Any, exchange: str, snapshot: Any, path: Path) -> None:
    """Make ccxt's REST call for the market list return `snapshot` instead of going to the network."""
    if exchange == "coinbase":
        if not isinstance(snapshot, list) or not all(isinstance(p, dict) and "id" in p for p in snapshot):
            raise ConfigError(f"{path}: not a Coinbase Exchange /products snapshot (expected a JSON list of products)")
        client.publicGetProducts = lambda params=None: snapshot
    else:
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("symbols"), list):
            raise ConfigError(f"{path}: not a Binance exchangeInfo snapshot (expected an object with 'symbols')")
        client.publicGetExchangeInfo = lambda params=None: snapshot


def _decimal(value: Any) -> Decimal | None:
    # ccxt gives precision and fees as floats; their shortest repr is the decimal the exchange published.
    return None if value is None else Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


def to_symbol_map(exchange: str, ccxt_markets: list[dict[str, Any]]) -> SymbolMap:
    """ccxt's unified market dicts -> our two-way SymbolMap (spot markets only)."""
    markets = []
    for m in ccxt_markets:
        if not m.get("spot", True):
            continue
        precision = m.get("precision") or {}
        markets.append(
            Market(
                symbol=m["symbol"],
                venue_symbol=m["id"],
                base=m["base"],
                quote=m["quote"],
                price_increment=_decimal(precision.get("price")),
                size_increment=_decimal(precision.get("amount")),
                taker_fee=_decimal(m.get("taker")),
            )
        )
    return SymbolMap(exchange=exchange, markets=tuple(markets))


def load_snapshot(exchange: str, path: Path) -> SymbolMap:
    """Markets from a REST snapshot file, parsed by ccxt without network access."""
    try:
        snapshot = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read markets file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"markets file {path} is not JSON: {exc}") from None
    client = _ccxt_exchange(exchange)
    _feed_snapshot(client, exchange, snapshot, Path(path))
    try:
        return to_symbol_map(exchange, client.fetch_markets())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"markets file {path}: ccxt could not parse it ({type(exc).__name__}: {exc})") from None


def load_live(exchange: str) -> SymbolMap:
    """Markets from the exchange's REST API through ccxt (needs network)."""
    client = _ccxt_exchange(exchange)
    return to_symbol_map(exchange, client.fetch_markets())


def load(exchange: str, path: Path | None) -> SymbolMap:
    """From `path` if given, else live; raises ConfigError with one line on failure."""
    if path is not None:
        return load_snapshot(exchange, path)
    try:
        return load_live(exchange)
    except Exception as exc:  # noqa: BLE001 - ccxt raises many network error types; all mean "not reachable"
        raise ConfigError(
            f"cannot load {exchange} markets from its REST API ({type(exc).__name__}); "
            f"offline, pass --markets FILE (e.g. {DEFAULT_SNAPSHOTS[exchange].relative_to(REPO_ROOT)})"
        ) from None
