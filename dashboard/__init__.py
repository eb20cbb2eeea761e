"""The live spread dashboard (`arb dashboard`): Dash + Plotly over the Delta lake, the metrics files and the alert log.

    app.py       create_app(config) -> Dash, and `server` for WSGI hosts
    config.py    DashboardConfig (paths, pairs, fees, threshold, refresh)
    data.py      bounded, incremental Delta reads (deltalake + pl.scan_delta), metrics files, alert log tail
    figures.py   pure figure / table-row builders
    sections/    one module per panel: layout(config) + register_callbacks(app, config, lake)
    ids.py       component ids
"""
