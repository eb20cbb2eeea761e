"""Net spread chart of the selected pair: a full read on pair/range change, then only new buckets each tick."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, ctx, dcc, html, no_update

from dashboard import figures, ids
from dashboard.config import TIME_RANGES, DashboardConfig
from dashboard.data import SPREADS, US, Lake, bucket_us, settled_until, spread_buckets
from dashboard.sections.common import card

HIDDEN = {"display": "none"}


def layout(config: DashboardConfig) -> html.Section:
    return card(
        "Net spread",
        dcc.Graph(id=ids.SPREAD_GRAPH, figure=figures.empty_figure("Loading…"), config={"displaylogo": False},
                  style={"height": "420px"}),
        dcc.Store(id=ids.SPREAD_STORE),
        class_name="wide",
    )


def empty_lake_message(config: DashboardConfig) -> str:
    return (f"No data yet: the lake at {config.lake_dir} has no {SPREADS} table. "
            "Start the pipeline (make demo / arb up); this page fills in by itself.")


def spread_update(config: DashboardConfig, lake: Lake, pair: str, range_key: str, cursor: dict | None,
                  now_us: int, reload: bool) -> tuple[Any, Any, Any, Any, Any]:
    """(figure, extendData, cursor, banner text, banner style) for one refresh of the chart.

    The cursor (`{"pair", "range", "bucket", "until", "empty"}`) records up to which bucket boundary the chart is
    drawn; the next refresh reads only rows from there on.
    """
    range_s = TIME_RANGES.get(range_key, TIME_RANGES["15m"])
    bucket = bucket_us(range_s, config.max_buckets)
    until = settled_until(now_us, config.settle_s, bucket)
    same_view = bool(cursor) and cursor["pair"] == pair and cursor["range"] == range_key
    if same_view and not reload and not cursor.get("empty"):
        if until <= cursor["until"]:
            return no_update, no_update, no_update, no_update, no_update
        series = spread_buckets(lake, pair, cursor["until"], until, bucket)
        if series is None:  # the table went away (lake wiped): start over
            return spread_update(config, lake, pair, range_key, None, now_us, reload=True)
        extend = figures.extend_spread(series, max_points=range_s * US // bucket)
        return no_update, extend if extend else no_update, {**cursor, "until": until}, no_update, no_update

    since = (now_us - range_s * US) // bucket * bucket
    series = spread_buckets(lake, pair, since, until, bucket)
    state = {"pair": pair, "range": range_key, "bucket": bucket, "until": until, "empty": None}
    if series is None:
        message = empty_lake_message(config)
        state["empty"] = message
        unchanged = same_view and cursor.get("empty") == message and not reload
        figure = no_update if unchanged else figures.empty_figure(f"No data yet: no {SPREADS} table in the lake.",
                                                                  f"{pair}: net spread")
        return figure, no_update, state, message, {}
    if series.height == 0:
        message = f"No spreads for {pair} in the last {range_key} yet."
        state["empty"] = message
        unchanged = same_view and cursor.get("empty") == message and not reload
        figure = no_update if unchanged else figures.spread_figure(series, pair, config.threshold_bps, config.fees,
                                                                   empty_message=message)
        return figure, no_update, state, "", HIDDEN
    figure = figures.spread_figure(series, pair, config.threshold_bps, config.fees)
    return figure, no_update, state, "", HIDDEN


def register_callbacks(app, config: DashboardConfig, lake: Lake) -> None:
    @app.callback(
        Output(ids.SPREAD_GRAPH, "figure"),
        Output(ids.SPREAD_GRAPH, "extendData"),
        Output(ids.SPREAD_STORE, "data"),
        Output(ids.EMPTY_BANNER, "children"),
        Output(ids.EMPTY_BANNER, "style"),
        Input(ids.PAIR, "value"),
        Input(ids.RANGE, "value"),
        Input(ids.TICK, "n_intervals"),
        State(ids.SPREAD_STORE, "data"),
    )
    def refresh_spreads(pair, range_key, _tick, cursor):
        reload = ctx.triggered_id in (ids.PAIR, ids.RANGE)
        return spread_update(config, lake, pair, range_key, cursor, int(config.clock() * US), reload)
