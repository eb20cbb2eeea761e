from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import polars as pl

from arbitrage.fees import FeeSchedule
from arbitrage.spread import break_even_gross_bps
from dashboard import figures

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)


def series(*rows: tuple[int, float | None, float | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": [datetime.fromtimestamp(T0.timestamp() + s, UTC) for s, _, _ in rows],
         "cb_bn": [a for _, a, _ in rows], "bn_cb": [b for _, _, b in rows]},
        schema={"ts": pl.Datetime("us", "UTC"), "cb_bn": pl.Float64, "bn_cb": pl.Float64},
    )


def test_spread_figure_draws_both_directions_with_threshold_and_break_even_lines():
    data = series((0, -70.0, -68.0), (1, -71.5, 12.25))

    fig = figures.spread_figure(data, "BTC/USD", Decimal(5), FeeSchedule())

    assert [t.name for t in fig.data] == ["buy Coinbase → sell Binance", "buy Binance → sell Coinbase"]
    assert list(fig.data[0].y) == [-70.0, -71.5]
    assert list(fig.data[1].y) == [-68.0, 12.25]
    assert list(fig.data[0].x) == [datetime(2026, 11, 22, 12, 0, 0), datetime(2026, 11, 22, 12, 0, 1)]  # naive UTC
    hlines = sorted(shape.y0 for shape in fig.layout.shapes)
    assert hlines == [0, 5.0]
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "threshold 5 bps net" in texts
    assert f"gross {break_even_gross_bps(Decimal('0.006'), Decimal('0.001')):.1f}" in texts


def test_spread_figure_of_no_rows_is_an_explicit_empty_state_not_an_empty_axis():
    fig = figures.spread_figure(series(), "ETH/USD", Decimal(5), FeeSchedule(), empty_message="nothing here")

    assert len(fig.data) == 0
    assert [a.text for a in fig.layout.annotations] == ["nothing here"]


def test_extend_spread_appends_to_both_traces_and_caps_points():
    data = series((2, -70.0, 3.0), (3, None, 4.0))

    extend, traces, max_points = figures.extend_spread(data, max_points=1200)

    assert traces == [0, 1] and max_points == 1200
    assert extend["y"] == [[-70.0, None], [3.0, 4.0]]
    assert extend["x"][0] == extend["x"][1] == [datetime(2026, 11, 22, 12, 0, 2), datetime(2026, 11, 22, 12, 0, 3)]
    assert figures.extend_spread(series(), max_points=10) is None


def window(event: str, start_s: int, **kw) -> dict:
    base = {"window_id": f"BTC/USD|buy_binance_sell_coinbase|{start_s}", "pair": "BTC/USD",
            "direction": "buy_binance_sell_coinbase", "event": event, "start_ts": T0_US + start_s * 1_000_000,
            "duration_ms": None, "peak_net_bps": "12.345", "size_at_peak": "0.500000000000",
            "profit_at_peak": "41.2", "ticks": 3, "close_reason": None, "emitted_ts": T0_US}
    return {**base, **kw}


def test_window_rows_put_open_windows_first_with_their_duration_so_far():
    closed = window("CLOSE", 10, duration_ms=2500, close_reason="stale")
    open_ = window("OPEN", 0)

    rows = figures.window_rows([closed, open_], now_us=T0_US + 4_000_000)

    assert [r["state"] for r in rows] == ["OPEN", "closed (stale)"]
    assert rows[0]["duration"] == "4.0 s"
    assert rows[1]["duration"] == "2.5 s"
    assert rows[0]["direction"] == "buy BN → sell CB"
    assert (rows[0]["peak_bps"], rows[0]["size"], rows[0]["profit"]) == ("12.35", "0.50", "41.20")
    assert rows[0]["start"] == "12:00:00.000"


def test_feed_rows_show_a_silent_producer_as_not_connected_and_the_latest_status():
    now = T0_US + 60_000_000
    producers = [
        {"exchange": "coinbase", "connected": True, "last_frame_age_s": 0.5, "frames_per_s": 12.0,
         "events_per_s": 11.0, "gaps": 0, "reconnects": 1, "updated_ts": "2026-11-22T12:00:59.500Z"},
        {"exchange": "binance", "connected": True, "last_frame_age_s": 0.1, "frames_per_s": 30.0,
         "events_per_s": 29.0, "gaps": 2, "reconnects": 0, "updated_ts": "2026-11-22T12:00:00Z"},
    ]
    statuses = [
        {"exchange": "binance", "symbol": None, "state": "connected", "detail": "", "ts_recv": T0_US},
        {"exchange": "binance", "symbol": "BTC/USDT", "state": "gap", "detail": "", "ts_recv": T0_US + 50_000_000},
    ]

    rows = {r["exchange"]: r for r in figures.feed_rows(producers, statuses, now)}

    assert rows["coinbase"]["connected"] == "✔ connected"
    assert rows["coinbase"]["last_msg"] == "1.0 s"  # frame age + age of the metrics file
    assert rows["coinbase"]["msgs_per_s"] == "12.0"
    assert rows["binance"]["connected"].startswith("✖ producer silent")
    assert rows["binance"]["gaps"] == "2"
    assert rows["binance"]["last_status"] == "gap BTC/USDT 10.0 s ago"
    assert rows["coinbase"]["last_status"] == "–"


def test_feed_rows_list_an_exchange_known_only_from_feed_status():
    statuses = [{"exchange": "binance", "symbol": None, "state": "disconnected", "detail": "", "ts_recv": T0_US}]

    rows = figures.feed_rows([], statuses, T0_US)

    assert rows == [{"exchange": "binance", "connected": "no metrics", "last_msg": "–", "msgs_per_s": "–",
                     "events_per_s": "–", "gaps": "–", "reconnects": "–", "last_status": "disconnected 0.0 s ago"}]


def test_pipeline_rows_report_rates_latency_percentiles_and_last_batch_age():
    streams = [{"job": "windows", "batch_id": 9, "input_rows_per_s": 80.25, "processed_rows_per_s": 120.0,
                "batch_duration_ms": 640, "detection_p50_ms": 850.4, "detection_p99_ms": 1900.0, "late_ticks": 3,
                "updated_ts": "2026-11-22T12:00:00.000Z"}]

    rows = figures.pipeline_rows(streams, T0_US + 2_500_000)

    assert rows == [{"job": "windows", "events_per_s": "80.3", "processed_per_s": "120.0", "p50_ms": "850",
                     "p99_ms": "1,900", "late_ticks": "3", "batch": "9", "batch_ms": "640", "last_batch": "2.5 s ago"}]


def test_quote_rows_format_prices_and_age():
    quotes = [{"exchange": "coinbase", "symbol": "BTC/USD", "bid": "50010.010000000000",
               "bid_size": "0.500000000000", "ask": "50011.000000000000", "ask_size": "1.000000000000",
               "event_ts": T0_US, "seq": 1}]

    rows = figures.quote_rows(quotes, T0_US + 1_500_000)

    assert rows == [{"exchange": "coinbase", "symbol": "BTC/USD", "bid": "50,010.01", "bid_size": "0.50",
                     "ask": "50,011.00", "ask_size": "1.00", "age": "1.5 s"}]


def test_formatters_handle_missing_values():
    assert figures.fmt_num(None) == figures.fmt_price(None) == figures.fmt_age(None) == "–"
    assert figures.fmt_price("0.000012340000") == "0.00001234"
    assert figures.fmt_age(7200) == "2.0 h"
    assert figures.parse_ts_us("garbage") is None
    assert figures.parse_ts_us({"a": 1}) is None


def test_metrics_times_parse_as_iso_or_epoch_numbers():
    assert figures.parse_ts_us("2026-11-22T12:00:00Z") == T0_US
    assert figures.parse_ts_us("2026-11-22T12:00:00") == T0_US
    assert figures.parse_ts_us(T0.timestamp()) == T0_US  # producers write time.time()
    assert figures.parse_ts_us(T0_US // 1000) == T0_US
    assert figures.parse_ts_us(T0_US) == T0_US


def test_feed_rows_read_a_producer_file_with_epoch_seconds_and_null_rates():
    producers = [{"exchange": "coinbase", "connected": False, "last_frame_age_s": None, "frames_per_s": 0.0,
                  "events_per_s": 0.0, "gaps": 0, "reconnects": 3, "updated_ts": T0.timestamp() - 1.0}]

    (row,) = figures.feed_rows(producers, [], T0_US)

    assert (row["connected"], row["last_msg"], row["reconnects"]) == ("✖ disconnected", "–", "3")
