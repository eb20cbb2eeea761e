"""The dashboard in a real headless Chromium (Debian's `/usr/bin/chromium`, driven by Playwright).

`arb dashboard` runs as a child process over a test lake (tests/lakefixtures.py); the page must show its data, add
rows appended to the lake without a reload, redraw the chart when the range or the pair changes, show a clear empty
state over an empty lake, and leave screenshots in the test's tmp dir.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.lakefixtures import build_demo_lake, spread_row, write_table

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dashboard:
    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "ARB_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        self._log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "arb.cli", "dashboard", "--port", str(self.port)],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"arb dashboard did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (pip install -e .[dev])")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1100},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.server_errors = []
    page.on("response", lambda r: r.status >= 500 and page.server_errors.append(f"{r.status} {r.url}"))
    yield page
    page.close()


def spread_trace_peaks(page) -> list[float]:
    """The max of each trace of the spread chart, read from Plotly's own data."""
    return page.evaluate("""() => {
        const gd = document.querySelector('#spread-graph .js-plotly-plot');
        return (gd && gd.data ? gd.data : []).map(t => Math.max(...t.y.filter(v => v !== null)));
    }""")


def wait_for_peaks(page, want_bn_cb: float, timeout_s: float = 20) -> list[float]:
    deadline = time.monotonic() + timeout_s
    peaks: list[float] = []
    while time.monotonic() < deadline:
        peaks = spread_trace_peaks(page)
        if len(peaks) == 2 and abs(peaks[1] - want_bn_cb) < 1e-3:
            return peaks
        time.sleep(0.2)
    raise AssertionError(f"spread chart peaks {peaks}, wanted buy-Binance peak {want_bn_cb}")


def test_dashboard_shows_the_lake_and_redraws_on_pair_switch(tmp_path, page):
    lake = build_demo_lake(tmp_path / "data", datetime.now(UTC))
    server = Dashboard(lake.data_dir, tmp_path / "dashboard.log")
    try:
        page.goto(server.url)

        # Assert: data from the test lake, in every section
        wait_for_peaks(page, 22.25625)
        page.wait_for_selector("#windows-table td:has-text('OPEN')", timeout=20_000)
        page.wait_for_selector("#quotes-table td:has-text('BTC/USDT')", timeout=20_000)
        page.wait_for_selector("#feed-table td:has-text('binance')", timeout=20_000)
        page.wait_for_selector("#pipeline-table td:has-text('windows')", timeout=20_000)
        assert "CLOSE  BTC/USD" in page.inner_text("#alerts-list")
        assert page.is_hidden("#empty-state")
        assert "threshold 5 bps net" in page.inner_text("#spread-graph")
        page.wait_for_timeout(1500)  # let a refresh tick or two run before the picture
        page.screenshot(path=str(tmp_path / "dashboard-btc.png"), full_page=True)

        # Act: the stream appends a spike; the next refreshes add it to the chart (extendData, no reload)
        now = datetime.now(UTC)
        spike = [spread_row("BTC/USD", now + timedelta(milliseconds=200 * i), "50010", "50011", "49999", "49300",
                            size="0.5") for i in range(5)]
        write_table(lake.lake_dir, "silver/spreads", spike)
        points_before = page.evaluate("() => document.querySelector('#spread-graph .js-plotly-plot').data[1].y.length")
        wait_for_peaks(page, float(spike[0]["bn_cb_net_bps"]))
        points_after = page.evaluate("() => document.querySelector('#spread-graph .js-plotly-plot').data[1].y.length")
        assert points_after > points_before

        # Act: a longer range draws coarser buckets (1 s rows: 0.75 s buckets at 15m, 3 s at 1h)
        page.get_by_role("radio", name="1h").check()
        page.wait_for_function(
            "n => document.querySelector('#spread-graph .js-plotly-plot').data[1].y.length < n / 2", arg=points_after)

        # Act: switch the pair
        page.click("#pair-picker")
        page.get_by_role("option", name="ETH/USD").click()

        # Assert: the chart is ETH's now, and so are the quotes
        wait_for_peaks(page, 15.184815)
        page.wait_for_selector("#quotes-table td:has-text('ETH/USDT')", timeout=20_000)
        assert "ETH/USD" in page.inner_text("#spread-graph")
        page.screenshot(path=str(tmp_path / "dashboard-eth.png"), full_page=True)
        assert page.server_errors == []
    finally:
        server.stop()
    print(f"screenshots: {tmp_path / 'dashboard-btc.png'} {tmp_path / 'dashboard-eth.png'}")


def test_an_empty_lake_shows_a_clear_empty_state(tmp_path, page):
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    server = Dashboard(data_dir, tmp_path / "dashboard.log")
    try:
        page.goto(server.url)

        banner = page.wait_for_selector("#empty-state:has-text('No data yet')", timeout=20_000)
        assert str(data_dir / "lake") in banner.inner_text()
        page.wait_for_selector("#spread-graph .annotation-text:has-text('No data yet')", timeout=20_000)
        assert "No alerts yet." in page.inner_text("#alerts-list")
        page.screenshot(path=str(tmp_path / "dashboard-empty.png"), full_page=True)
        assert page.server_errors == []
    finally:
        server.stop()
