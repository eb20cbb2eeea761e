from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dash import no_update

from dashboard import data
from dashboard.app import create_app, layout
from dashboard.config import DashboardConfig
from dashboard.sections import health, market, spreads, windows
from tests.lakefixtures import (
    BN_CB, build_demo_lake, quote_row, spread_row, status_row, window_row, write_metrics, write_table,
)

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
NOW_US = data.to_us(NOW)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo_lake(tmp_path_factory.mktemp("demo"), NOW)


def config_for(data_dir: Path, **kw) -> DashboardConfig:
    return DashboardConfig(lake_dir=data_dir / "lake", metrics_dir=data_dir / "run" / "metrics",
                           alert_log=data_dir / "alerts" / "alerts.jsonl", clock=lambda: NOW.timestamp(), **kw)


def test_spread_buckets_keep_the_best_net_bps_of_each_direction_per_bucket(tmp_path):
    lake_dir = tmp_path / "lake"
    t = NOW - timedelta(seconds=10)
    write_table(lake_dir, "silver/spreads", [
        spread_row("BTC/USD", t, "100", "100.1", "99.9", "100"),                       # bn_cb: buy 100 sell 100
        spread_row("BTC/USD", t + timedelta(milliseconds=500), "101", "101.1", "99.9", "100"),  # better bn_cb
        spread_row("BTC/USD", t + timedelta(seconds=1), "100", "100.1", "99.9", "100"),
        spread_row("ETH/USD", t, "1", "2", "1", "2"),
    ])
    lake = data.Lake(lake_dir)

    out = data.spread_buckets(lake, "BTC/USD", data.to_us(t), NOW_US, bucket=1_000_000)

    assert out["ts"].to_list() == [t, t + timedelta(seconds=1)]
    best = spread_row("BTC/USD", t, "101", "101.1", "99.9", "100")["bn_cb_net_bps"]
    assert out["bn_cb"][0] == pytest.approx(float(best), abs=1e-4)
    plain = spread_row("BTC/USD", t, "100", "100.1", "99.9", "100")
    assert out["bn_cb"][1] == pytest.approx(float(plain["bn_cb_net_bps"]), abs=1e-4)
    assert out["cb_bn"][0] == pytest.approx(float(plain["cb_bn_net_bps"]), abs=1e-4)


def test_reads_are_pruned_to_the_wanted_dates(tmp_path):
    # Arrange: yesterday's partition is unreadable; a read of today must not open it.
    lake_dir = tmp_path / "lake"
    yesterday = NOW - timedelta(days=1)
    write_table(lake_dir, "silver/spreads", [spread_row("BTC/USD", yesterday, "1", "2", "1", "2")])
    write_table(lake_dir, "silver/spreads", [spread_row("BTC/USD", NOW - timedelta(seconds=5), "1", "2", "1", "2")])
    for parquet in (lake_dir / "silver/spreads" / f"date={yesterday.date()}").glob("*.parquet"):
        parquet.write_bytes(b"not parquet")

    out = data.spread_buckets(data.Lake(lake_dir), "BTC/USD", NOW_US - 60_000_000, NOW_US, bucket=1_000_000)

    assert out.height == 1


def test_missing_tables_read_as_none_not_errors(tmp_path):
    lake = data.Lake(tmp_path / "nowhere")

    assert data.spread_buckets(lake, "BTC/USD", 0, NOW_US, 1_000_000) is None
    assert data.window_events(lake, 0) is None
    assert data.feed_status_events(lake, 0) is None
    assert data.read_metrics(tmp_path / "nowhere") == {"producers": [], "streams": []}
    assert data.tail_alerts(tmp_path / "nowhere.jsonl") == []


def test_spread_update_reads_everything_once_then_only_new_buckets(tmp_path):
    config = config_for(tmp_path, settle_s=0)
    lake = data.Lake(config.lake_dir)
    start = NOW - timedelta(seconds=60)
    write_table(config.lake_dir, "silver/spreads",
                [spread_row("BTC/USD", start + timedelta(seconds=i), "100", "100.1", "99.9", "100") for i in range(30)])

    fig, extend, cursor, banner, style = spreads.spread_update(config, lake, "BTC/USD", "5m", None, NOW_US, True)

    assert extend is no_update and style == spreads.HIDDEN
    assert sum(len(trace.x) for trace in fig.data) == 2 * 30
    assert cursor["until"] == NOW_US and cursor["empty"] is None

    # Act: ten more seconds of rows arrive; the next tick appends only those.
    later = NOW + timedelta(seconds=10)
    write_table(config.lake_dir, "silver/spreads",
                [spread_row("BTC/USD", NOW + timedelta(seconds=i), "100", "100.1", "99.9", "100") for i in range(10)])
    fig2, extend2, cursor2, _, _ = spreads.spread_update(config, lake, "BTC/USD", "5m", cursor, data.to_us(later),
                                                         False)

    assert fig2 is no_update
    points, traces, max_points = extend2
    assert traces == [0, 1] and max_points == 1200
    assert len(points["x"][0]) == 10
    assert points["x"][0][0] == NOW.replace(tzinfo=None)
    assert cursor2["until"] == data.to_us(later)

    # Nothing new: nothing sent.
    assert spreads.spread_update(config, lake, "BTC/USD", "5m", cursor2, data.to_us(later), False) == (
        no_update,) * 5


def test_spread_update_on_a_missing_lake_shows_the_empty_state_banner(tmp_path):
    config = config_for(tmp_path)

    fig, _, cursor, banner, style = spreads.spread_update(config, data.Lake(config.lake_dir), "BTC/USD", "15m",
                                                          None, NOW_US, True)

    assert "No data yet" in banner and str(config.lake_dir) in banner and style == {}
    assert "No data yet" in fig.layout.annotations[0].text
    assert cursor["empty"] == banner
    # the same empty state on the next tick does not redraw
    again = spreads.spread_update(config, data.Lake(config.lake_dir), "BTC/USD", "15m", cursor, NOW_US, False)
    assert again[0] is no_update


def test_spread_update_switches_pair(demo):
    config = config_for(demo.data_dir, settle_s=0)
    lake = data.Lake(config.lake_dir)
    btc, _, cursor, _, _ = spreads.spread_update(config, lake, "BTC/USD", "15m", None, NOW_US, True)

    eth, _, cursor2, _, _ = spreads.spread_update(config, lake, "ETH/USD", "15m", cursor, NOW_US, True)

    assert cursor2["pair"] == "ETH/USD"
    assert max(btc.data[1].y) == pytest.approx(22.25625, abs=1e-4)
    assert max(eth.data[1].y) == pytest.approx(15.184815, abs=1e-4)


def test_quotes_update_keeps_the_newest_quote_per_exchange_and_reads_from_its_cursor(tmp_path):
    config = config_for(tmp_path)
    lake = data.Lake(config.lake_dir)
    t = NOW - timedelta(seconds=5)
    write_table(config.lake_dir, "silver/quotes", [
        quote_row("coinbase", "BTC/USD", t, "100", "101", seq=1),
        quote_row("coinbase", "BTC/USD", t + timedelta(seconds=1), "100.5", "101", seq=2),
        quote_row("binance", "BTC/USDT", t, "99", "100", seq=7),
        quote_row("binance", "ETH/USDT", t + timedelta(seconds=2), "1", "2", seq=8),  # another pair
    ])

    rows, state, note = market.quotes_update(config, lake, "BTC/USD", None, NOW_US, reload=True)

    assert note == "Binance quotes BTC/USDT in USDT; spreads compare it at USDT→USD 1.0."
    assert [(r["exchange"], r["symbol"], r["bid"]) for r in rows] == [
        ("binance", "BTC/USDT", "99.00"), ("coinbase", "BTC/USD", "100.50")]
    assert state["cursor"] == data.to_us(t + timedelta(seconds=1))

    write_table(config.lake_dir, "silver/quotes", [quote_row("binance", "BTC/USDT", NOW, "98", "99", seq=9)])
    rows, state, _ = market.quotes_update(config, lake, "BTC/USD", state, NOW_US, reload=False)

    assert [r["bid"] for r in rows] == ["98.00", "100.50"]


def test_quotes_note_names_an_exchange_that_has_not_quoted(tmp_path):
    config = config_for(tmp_path)
    write_table(config.lake_dir, "silver/quotes", [quote_row("coinbase", "ETH/BTC", NOW, "0.05", "0.06")])

    rows, _, note = market.quotes_update(config, data.Lake(config.lake_dir), "ETH/BTC", None, NOW_US, reload=True)

    assert [r["exchange"] for r in rows] == ["coinbase"]
    assert note == "No quote in the last 10 min from binance ETH/BTC. Both venues quote ETH/BTC."


def test_module_level_server_is_built_on_first_access_from_the_environment(tmp_path, monkeypatch):
    import dashboard.app

    monkeypatch.setenv("ARB_DATA_DIR", str(tmp_path))

    server = dashboard.app.server

    assert server.name == "dashboard.app"
    assert not (tmp_path / "lake").exists()


def test_windows_fold_to_each_windows_latest_event(demo):
    rows, state = windows.windows_update(data.Lake(demo.lake_dir), None, NOW_US)

    assert [(r["state"], r["pair"]) for r in rows] == [("OPEN", "ETH/USD"), ("closed (spread)", "BTC/USD")]
    assert rows[1]["duration"] == "10.0 s"
    # a late duplicate OPEN of a closed window does not reopen it
    folded = data.fold_windows(state["windows"], [dict(state["windows"][1], event="OPEN")])
    assert [w["event"] for w in folded] == ["OPEN", "CLOSE"]


def test_window_events_are_read_incrementally_from_the_emitted_cursor(tmp_path):
    lake_dir = tmp_path / "lake"
    start = NOW - timedelta(seconds=30)
    write_table(lake_dir, "gold/arb_windows",
                [window_row("BTC/USD", BN_CB, "OPEN", start, "6", "1", "2", emitted=start)])
    write_table(lake_dir, "gold/arb_windows",
                [window_row("BTC/USD", BN_CB, "CLOSE", start, "7", "1", "3", end=NOW, emitted=NOW,
                            close_reason="stale")])

    events = data.window_events(data.Lake(lake_dir), NOW_US)

    assert [(e["event"], e["peak_net_bps"]) for e in events] == [("CLOSE", "7.000000000000")]


def test_window_events_of_replayed_old_data_are_found_by_emitted_time(tmp_path):
    lake_dir = tmp_path / "lake"
    old_start = NOW - timedelta(days=3)
    write_table(lake_dir, "gold/arb_windows",
                [window_row("BTC/USD", BN_CB, "OPEN", old_start, "6", "1", "2", emitted=NOW)])

    events = data.window_events(data.Lake(lake_dir), NOW_US - 1_000_000)

    assert [e["start_ts"] for e in events] == [data.to_us(old_start)]


def test_health_update_combines_metrics_files_and_feed_status(demo, tmp_path):
    config = config_for(demo.data_dir)

    feed, pipeline, state, label = health.health_update(config, data.Lake(demo.lake_dir), None, NOW_US)

    by_exchange = {r["exchange"]: r for r in feed}
    assert by_exchange["binance"]["connected"] == "✔ connected"
    assert by_exchange["binance"]["gaps"] == "1"
    assert by_exchange["binance"]["last_status"].startswith("resynced BTC/USDT")
    assert [r["job"] for r in pipeline] == ["spreads", "windows"]
    assert label == "updated 12:00:00.000 UTC"

    write_table(demo.lake_dir, "silver/feed_status", [status_row("coinbase", "disconnected", NOW)])
    feed, _, state2, _ = health.health_update(config, data.Lake(demo.lake_dir), state, NOW_US)
    assert {r["exchange"]: r["last_status"] for r in feed}["coinbase"] == "disconnected 0.0 s ago"


def test_read_metrics_skips_a_broken_file(tmp_path):
    write_metrics(tmp_path, "producer-binance", {"exchange": "binance"})
    (tmp_path / "producer-coinbase.json").write_text("{half")

    assert data.read_metrics(tmp_path)["producers"] == [{"exchange": "binance"}]


def test_tail_alerts_returns_the_newest_first_from_the_end_of_a_big_log(tmp_path):
    log = tmp_path / "alerts.jsonl"
    log.write_text("".join(json.dumps({"event": "OPEN", "n": i}) + "\n" for i in range(5000)) + "not json\n")

    alerts = data.tail_alerts(log, limit=3, max_bytes=4096)

    assert [a["n"] for a in alerts] == [4999, 4998, 4997]


def test_create_app_reads_nothing_until_asked_and_lays_out_every_section(tmp_path):
    config = config_for(tmp_path / "absent")

    app = create_app(config)

    assert app.server is not None
    assert not (tmp_path / "absent").exists()
    text = str(layout(config))
    for component_id in ("spread-graph", "quotes-table", "windows-table", "alerts-list", "feed-table",
                         "pipeline-table", "pair-picker", "range-picker", "empty-state"):
        assert component_id in text


def test_arb_dashboard_binds_localhost_on_8050_by_default(tmp_path, monkeypatch):
    from arb import cli

    served = {}

    def fake_run(self, host, port, debug):
        served.update(host=host, port=port, debug=debug, title=self.title)

    monkeypatch.setenv("ARB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ARB_HOST", raising=False)
    monkeypatch.setattr("dash.Dash.run", fake_run)

    assert cli.main(["dashboard"]) == 0
    assert served == {"host": "127.0.0.1", "port": 8050, "debug": False, "title": "arb dashboard"}


@pytest.mark.parametrize("argv", [["dashboard", "--port", "0"], ["dashboard", "--port", "http"]])
def test_arb_dashboard_bad_port_exits_2_with_one_line(argv, capsys):
    from arb import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)

    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_arb_dashboard_bad_pairs_is_a_config_error(tmp_path, monkeypatch, capsys):
    from arb import cli

    monkeypatch.setenv("ARB_DATA_DIR", str(tmp_path))

    assert cli.main(["dashboard", "--pairs", "BTC/USD=BTC/USD~BTC/USDT"]) == 2
    assert "quote currencies differ" in capsys.readouterr().err


def test_dashboard_config_follows_arb_lake_dir_unless_told_otherwise(tmp_path):
    from arb.settings import Settings

    settings = Settings(data_dir=tmp_path)

    assert DashboardConfig.from_settings(settings, environ={}).lake_dir == tmp_path / "lake"
    assert DashboardConfig.from_settings(settings, environ={"ARB_LAKE_DIR": "/x/lake"}).lake_dir == Path("/x/lake")
    assert DashboardConfig.from_settings(settings, "/y", environ={"ARB_LAKE_DIR": "/x"}).lake_dir == Path("/y")
    assert DashboardConfig.from_settings(settings, environ={}).metrics_dir == tmp_path / "run" / "metrics"


def test_arb_dashboard_bad_threshold_is_a_config_error(tmp_path, monkeypatch, capsys):
    from arb import cli

    monkeypatch.setenv("ARB_DATA_DIR", str(tmp_path))

    assert cli.main(["dashboard", "--threshold-bps", "five"]) == 2
    assert capsys.readouterr().err == "arb dashboard: error: --threshold-bps must be a number, got 'five'\n"
