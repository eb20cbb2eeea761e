"""Current best bid / ask on each exchange for the selected pair."""

from __future__ import annotations

from dash import Input, Output, State, ctx, html

from dashboard import figures, ids
from dashboard.config import DashboardConfig
from dashboard.data import US, Lake, latest_quotes, merge_latest
from dashboard.sections.common import card, table

FIRST_LOOK_S = 600  # on a pair switch, look this far back for the last quote of each exchange

COLUMNS = [("exchange", "exchange"), ("symbol", "symbol"), ("bid", "bid"), ("bid_size", "bid size"),
           ("ask", "ask"), ("ask_size", "ask size"), ("age", "age")]


def layout(config: DashboardConfig) -> html.Section:
    return card("Best bid / ask", table(ids.QUOTES_TABLE, COLUMNS), html.Div(id=ids.QUOTES_NOTE, className="note"))


def quotes_note(config: DashboardConfig, pair_name: str, rows: list[dict]) -> str:
    """Which symbols are compared and at what rate, and which exchange has not quoted lately."""
    pair = config.pair(pair_name)
    if pair.conversion is None:
        note = f"Both venues quote {pair.coinbase}."
    else:
        conv = pair.conversion
        note = (f"Binance quotes {pair.binance} in {conv.from_ccy}; spreads compare it at "
                f"{conv.from_ccy}→{conv.to_ccy} {conv.rate}.")
    missing = [ex for ex in ("coinbase", "binance") if ex not in {r["exchange"] for r in rows}]
    if missing:
        symbols = ", ".join(f"{ex} {pair.symbol_on(ex)}" for ex in missing)
        note = f"No quote in the last {FIRST_LOOK_S // 60} min from {symbols}. " + note
    return note


def quotes_update(config: DashboardConfig, lake: Lake, pair_name: str, state: dict | None, now_us: int,
                  reload: bool) -> tuple[list, dict, str]:
    """(table rows, new state, note). The state keeps the newest quote per exchange and the read cursor."""
    if reload or not state or state.get("pair") != pair_name:
        state = {"pair": pair_name, "cursor": now_us - FIRST_LOOK_S * US, "rows": []}
    new = latest_quotes(lake, config.pair(pair_name), state["cursor"]) or []
    rows = merge_latest(state["rows"], new, key="exchange", ts="event_ts")
    cursor = max([state["cursor"], *(r["event_ts"] for r in rows)])
    note = quotes_note(config, pair_name, rows)
    return figures.quote_rows(rows, now_us), {"pair": pair_name, "cursor": cursor, "rows": rows}, note


def register_callbacks(app, config: DashboardConfig, lake: Lake) -> None:
    @app.callback(
        Output(ids.QUOTES_TABLE, "data"),
        Output(ids.QUOTES_STORE, "data"),
        Output(ids.QUOTES_NOTE, "children"),
        Input(ids.PAIR, "value"),
        Input(ids.TICK, "n_intervals"),
        State(ids.QUOTES_STORE, "data"),
    )
    def refresh_quotes(pair_name, _tick, state):
        reload = ctx.triggered_id == ids.PAIR
        return quotes_update(config, lake, pair_name, state, int(config.clock() * US), reload)
