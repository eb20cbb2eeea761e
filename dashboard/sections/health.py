"""Feed health per exchange and pipeline health per streaming job."""

from __future__ import annotations

from dash import Input, Output, State, html

from dashboard import figures, ids
from dashboard.config import DashboardConfig
from dashboard.data import US, Lake, feed_status_events, merge_latest, read_metrics
from dashboard.sections.common import card, table

FIRST_LOOK_S = 86400

FEED_COLUMNS = [("exchange", "exchange"), ("connected", "connected"), ("last_msg", "last message"),
                ("msgs_per_s", "msgs/s"), ("events_per_s", "events/s"), ("gaps", "gaps"),
                ("reconnects", "reconnects"), ("last_status", "last status")]
PIPELINE_COLUMNS = [("job", "job"), ("events_per_s", "events/s"), ("processed_per_s", "processed/s"),
                    ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("late_ticks", "late ticks"), ("batch", "batch"),
                    ("batch_ms", "batch ms"), ("last_batch", "last batch")]


def feed_layout(config: DashboardConfig) -> html.Section:
    disconnected = {"if": {"filter_query": "{connected} contains '✖'"}, "color": "#b71c1c", "fontWeight": "600"}
    return card("Feed health", table(ids.FEED_TABLE, FEED_COLUMNS, style_data_conditional=[disconnected]),
                class_name="wide")


def pipeline_layout(config: DashboardConfig) -> html.Section:
    return card("Pipeline health · detection latency p50/p99", table(ids.PIPELINE_TABLE, PIPELINE_COLUMNS))


def health_update(config: DashboardConfig, lake: Lake, state: dict | None, now_us: int):
    """(feed rows, pipeline rows, new state, refresh label)."""
    if not state:
        state = {"cursor": now_us - FIRST_LOOK_S * US, "latest": []}
    events = feed_status_events(lake, state["cursor"]) or []
    latest = merge_latest(state["latest"], events, key="exchange", ts="ts_recv")
    cursor = max([state["cursor"], *(e["ts_recv"] for e in events)])
    metrics = read_metrics(config.metrics_dir)
    feed = figures.feed_rows(metrics["producers"], latest, now_us)
    pipeline = figures.pipeline_rows(metrics["streams"], now_us)
    return feed, pipeline, {"cursor": cursor, "latest": latest}, f"updated {figures.fmt_time(now_us)} UTC"


def register_callbacks(app, config: DashboardConfig, lake: Lake) -> None:
    @app.callback(
        Output(ids.FEED_TABLE, "data"),
        Output(ids.PIPELINE_TABLE, "data"),
        Output(ids.FEED_STORE, "data"),
        Output(ids.LAST_REFRESH, "children"),
        Input(ids.TICK, "n_intervals"),
        State(ids.FEED_STORE, "data"),
    )
    def refresh_health(_tick, state):
        return health_update(config, lake, state, int(config.clock() * US))
