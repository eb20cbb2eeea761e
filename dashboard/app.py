"""The Dash app: `create_app(config)` builds one; `server` is its Flask server for a WSGI host.

    gunicorn 'dashboard.app:server'          # config from the environment (ARB_DATA_DIR ...), built on first access
    arb dashboard --port 8050                # the usual way

Nothing is read at import time: the layout is a function of the config, and data are read by the callbacks.
"""

from __future__ import annotations

from pathlib import Path

from dash import Dash, dcc, html

from dashboard import analytics, auth, ids
from dashboard.config import DEFAULT_RANGE, TIME_RANGES, DashboardConfig
from dashboard.data import Lake
from dashboard.sections import alerts, health, market, spreads, windows

SECTIONS = (spreads, market, windows, alerts, health, analytics)
ASSETS = Path(__file__).with_name("assets")


def layout(config: DashboardConfig) -> html.Div:
    pair_names = [p.name for p in config.pairs]
    controls = html.Div([
        html.H1("arb · cross-exchange spreads"),
        html.Div([html.Span("pair"), dcc.Dropdown(id=ids.PAIR, options=pair_names, value=pair_names[0],
                                                  clearable=False, style={"width": "160px"})], className="control"),
        html.Div([html.Span("range"), dcc.RadioItems(id=ids.RANGE, options=list(TIME_RANGES), value=DEFAULT_RANGE,
                                                     inline=True)], className="control"),
        html.Span(id=ids.LAST_REFRESH, className="note"),
    ], className="toolbar")
    return html.Div([
        controls,
        html.Div(id=ids.EMPTY_BANNER, className="empty-state", style={"display": "none"}),
        dcc.Interval(id=ids.TICK, interval=config.refresh_ms),
        dcc.Store(id=ids.QUOTES_STORE), dcc.Store(id=ids.WINDOWS_STORE), dcc.Store(id=ids.FEED_STORE),
        html.Main([
            spreads.layout(config),
            market.layout(config),
            health.pipeline_layout(config),
            windows.layout(config),
            health.feed_layout(config),
            alerts.layout(config),
            analytics.layout(config),
        ], className="grid"),
    ], className="page")


def create_app(config: DashboardConfig) -> Dash:
    """A new Dash app over `config`'s lake, metrics and alert log (each app has its own Delta handles)."""
    app = Dash(__name__, title="arb dashboard", assets_folder=str(ASSETS), serve_locally=True,
               update_title=None)
    app.layout = lambda: layout(config)
    auth.protect(app.server, auth.Credentials.from_env())  # ARB_DASHBOARD_USER / _PASSWORD; off when unset
    lake = Lake(config.lake_dir)
    for section in SECTIONS:
        section.register_callbacks(app, config, lake)
    return app


def __getattr__(name: str):
    # `dashboard.app:server` for WSGI hosts, built on first access rather than at import time.
    if name == "server":
        from arb.settings import from_env

        return create_app(DashboardConfig.from_settings(from_env())).server
    raise AttributeError(name)
