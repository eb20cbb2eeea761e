"""Open and recent arbitrage windows (all pairs), from gold/arb_windows."""

from __future__ import annotations

from dash import Input, Output, State, html

from dashboard import figures, ids
from dashboard.config import DashboardConfig
from dashboard.data import US, Lake, fold_windows, window_events
from dashboard.sections.common import card, table

FIRST_LOOK_S = 86400  # the first read looks back a day (the windows table is small)

COLUMNS = [("state", "state"), ("pair", "pair"), ("direction", "direction"), ("start", "start (UTC)"),
           ("duration", "duration"), ("peak_bps", "peak net bps"), ("size", "size"), ("profit", "est. profit"),
           ("ticks", "ticks")]


def layout(config: DashboardConfig) -> html.Section:
    return card("Arbitrage windows", table(
        ids.WINDOWS_TABLE, COLUMNS, page_size=12,
        style_data_conditional=[{"if": {"filter_query": "{state} = OPEN"}, "backgroundColor": "#e8f5e9",
                                 "fontWeight": "600"}],
    ), class_name="wide")


def windows_update(lake: Lake, state: dict | None, now_us: int) -> tuple[list, dict]:
    if not state:
        state = {"cursor": now_us - FIRST_LOOK_S * US, "windows": []}
    events = window_events(lake, state["cursor"]) or []
    windows = fold_windows(state["windows"], events)
    cursor = max([state["cursor"], *(e["emitted_ts"] for e in events)])
    return figures.window_rows(windows, now_us), {"cursor": cursor, "windows": windows}


def register_callbacks(app, config: DashboardConfig, lake: Lake) -> None:
    @app.callback(
        Output(ids.WINDOWS_TABLE, "data"),
        Output(ids.WINDOWS_STORE, "data"),
        Input(ids.TICK, "n_intervals"),
        State(ids.WINDOWS_STORE, "data"),
    )
    def refresh_windows(_tick, state):
        return windows_update(lake, state, int(config.clock() * US))
