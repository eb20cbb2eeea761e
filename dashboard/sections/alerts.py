"""The latest alerts, as `arb alerts` prints them (the shared `format_alert`)."""

from __future__ import annotations

from dash import Input, Output, html

from arb.alerts import format_alert
from dashboard import ids
from dashboard.config import DashboardConfig
from dashboard.data import tail_alerts
from dashboard.sections.common import card

SHOWN = 15


def layout(config: DashboardConfig) -> html.Section:
    return card("Latest alerts", html.Pre(id=ids.ALERTS_LIST, className="alerts"),
                note=html.Span(str(config.alert_log), className="note"), class_name="wide")


def alert_lines(alerts: list[dict]) -> str:
    if not alerts:
        return "No alerts yet."
    return "\n".join(format_alert(a) for a in alerts)


def register_callbacks(app, config: DashboardConfig, lake) -> None:
    @app.callback(Output(ids.ALERTS_LIST, "children"), Input(ids.TICK, "n_intervals"))
    def refresh_alerts(_tick):
        return alert_lines(tail_alerts(config.alert_log, limit=SHOWN, max_bytes=64 * 1024))
