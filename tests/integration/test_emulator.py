"""The emulator over real WebSocket connections (the `websockets` client), in-process on free ports."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from arbitrage import spread
from arbitrage.fees import FeeSchedule
from producers.emulator.emulator import BackgroundEmulator, Emulator, EmulatorConfig
from producers.emulator.replay import load_capture
from producers.emulator.scenario import load_scenario, parse_scenario

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CB_CAPTURE = FIXTURES / "coinbase-exchange-2021-04-17.jsonl"
BN_CAPTURE = FIXTURES / "binance-spot-2021-10-12.jsonl"
SUBSCRIBE = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch", "matches", "heartbeat"]}


def connect(url: str, **kwargs):
    """A client that buffers everything it is sent, so a test that pauses reading still closes at once (a client
    with a full receive queue stops reading the socket and only sees the server's close frame at its timeout)."""
    return ws_connect(url, max_queue=None, close_timeout=2, **kwargs)


def fast_market(**extra) -> dict:
    """A short scenario with brisk rates, so tests see plenty in a second or two."""
    return {
        "name": "test", "seed": 1, "duration_s": 30,
        "venues": {"coinbase": {"quotes_per_s": 40, "trades_per_s": 5},
                   "binance": {"quotes_per_s": 40, "trades_per_s": 5}},
        **extra,
    }


def config(spec: dict | None = None, **kwargs) -> EmulatorConfig:
    """Free ports; a fast synthetic market unless `spec`, `scenario=` or `replay=` says otherwise."""
    if "replay" not in kwargs and "scenario" not in kwargs:
        kwargs["scenario"] = parse_scenario(spec or fast_market())
    return EmulatorConfig(coinbase_port=0, binance_port=0, **kwargs)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def recv_json(ws, timeout: float = 3.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect(ws, seconds: float) -> list[str]:
    frames, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
    return frames


async def collect_n(ws, n: int, timeout: float) -> list[str]:
    """The next `n` frames (fewer if `timeout` passes first)."""
    frames, deadline = [], time.monotonic() + timeout
    while len(frames) < n and (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
    return frames


async def drain(ws) -> None:
    """Throw away what the client has already buffered."""
    while True:
        try:
            await asyncio.wait_for(ws.recv(), 0.005)
        except TimeoutError:
            return


# --- Coinbase ---------------------------------------------------------------------------------------------------

def test_coinbase_subscribe_gets_subscriptions_snapshot_then_updates_matches_and_heartbeats():
    async def scenario():
        async with Emulator(config()) as emu, connect(emu.coinbase_url) as ws:
            await ws.send(json.dumps(SUBSCRIBE))
            reply = await recv_json(ws)
            assert reply == {"type": "subscriptions", "channels": [
                {"name": "level2_batch", "product_ids": ["BTC-USD"]},
                {"name": "matches", "product_ids": ["BTC-USD"]},
                {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}
            snapshot = await recv_json(ws)
            assert snapshot["type"] == "snapshot" and snapshot["product_id"] == "BTC-USD"
            assert Decimal(snapshot["bids"][0][0]) < Decimal(snapshot["asks"][0][0])
            assert all(Decimal(a[0]) > Decimal(b[0]) for a, b in zip(snapshot["bids"], snapshot["bids"][1:]))
            frames = [json.loads(f) for f in await collect(ws, 1.5)]
            types = {f["type"] for f in frames}
            assert {"last_match", "l2update", "match", "heartbeat"} <= types
            assert [f["type"] for f in frames].index("last_match") == 0
            update = next(f for f in frames if f["type"] == "l2update")
            assert update["product_id"] == "BTC-USD" and update["time"].endswith("Z") and len(update["time"]) == 27
            assert all(len(change) == 3 and change[0] in ("buy", "sell") for change in update["changes"])
            matches = [f for f in frames if f["type"] in ("last_match", "match")]
            ids = [m["trade_id"] for m in matches]
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive per product
            assert set(matches[1]) == {"type", "trade_id", "maker_order_id", "taker_order_id", "side", "size",
                                       "price", "product_id", "sequence", "time"}
            heartbeat = next(f for f in frames if f["type"] == "heartbeat")
            assert set(heartbeat) == {"type", "last_trade_id", "product_id", "sequence", "time"}
            # Every frame after the snapshot is for the one subscribed product.
            assert {f.get("product_id") for f in frames} == {"BTC-USD"}
            counts = emu.counts()["events"]["coinbase"]["BTC-USD"]
            assert counts["trades"] == len(matches)

    run(scenario())


def test_coinbase_match_side_is_the_makers_side():
    async def scenario():
        async with Emulator(config()) as emu, connect(emu.coinbase_url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"],
                                      "channels": ["level2_batch", "matches"]}))
            book: dict[str, dict[Decimal, Decimal]] = {"buy": {}, "sell": {}}
            checked = 0
            for raw in await collect(ws, 2.0):
                frame = json.loads(raw)
                if frame["type"] == "snapshot":
                    book["buy"] = {Decimal(p): Decimal(s) for p, s in frame["bids"]}
                    book["sell"] = {Decimal(p): Decimal(s) for p, s in frame["asks"]}
                elif frame["type"] == "l2update":
                    for side, price, size in frame["changes"]:
                        if Decimal(size) == 0:
                            book[side].pop(Decimal(price), None)
                        else:
                            book[side][Decimal(price)] = Decimal(size)
                elif frame["type"] == "match":
                    best = max(book["buy"]) if frame["side"] == "buy" else min(book["sell"])
                    assert Decimal(frame["price"]) == best  # the maker rested on the side named
                    checked += 1
            assert checked >= 3

    run(scenario())


def test_coinbase_unsubscribe_and_bad_requests():
    async def scenario():
        async with Emulator(config()) as emu, connect(emu.coinbase_url) as ws:
            await ws.send("{oops")
            error = await recv_json(ws)
            assert error["type"] == "error" and error["message"] == "Malformed JSON"
            await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "FOO-BAR"],
                                      "channels": ["matches"]}))
            assert await recv_json(ws) == {"type": "error", "message": "Failed to subscribe",
                                           "reason": "FOO-BAR is not a valid product"}
            await ws.send(json.dumps({"type": "subscribe", "channels": [
                {"name": "heartbeat", "product_ids": ["ETH-USD"]}]}))
            assert (await recv_json(ws))["channels"] == [{"name": "heartbeat", "product_ids": ["ETH-USD"]}]
            await ws.send(json.dumps({"type": "unsubscribe", "channels": ["heartbeat"]}))
            frames = [json.loads(f) for f in await collect(ws, 1.5)]
            reply = next(f for f in frames if f["type"] == "subscriptions")
            assert reply["channels"] == []
            after = frames[frames.index(reply) + 1:]
            assert not [f for f in after if f["type"] == "heartbeat"]

    run(scenario())


# --- Binance ----------------------------------------------------------------------------------------------------

def test_binance_combined_stream_frames_are_wrapped_and_raw_streams_are_not():
    async def scenario():
        async with Emulator(config()) as emu:
            url = f"{emu.binance_url}/stream?streams=btcusdt@bookTicker/ethbtc@trade/ethbtc@aggTrade"
            async with connect(url) as combined, connect(f"{emu.binance_url}/ws/ethusdt@bookTicker") as raw:
                frames = [json.loads(f) for f in await collect(combined, 1.5)]
                raws = [json.loads(f) for f in await collect(raw, 0.5)]
        streams = {f["stream"] for f in frames}
        assert streams == {"btcusdt@bookTicker", "ethbtc@trade", "ethbtc@aggTrade"}
        ticker = next(f["data"] for f in frames if f["stream"] == "btcusdt@bookTicker")
        assert list(ticker) == ["u", "s", "b", "B", "a", "A"] and ticker["s"] == "BTCUSDT"
        assert Decimal(ticker["b"]) < Decimal(ticker["a"]) and len(ticker["b"].split(".")[1]) == 8
        updates = [f["data"]["u"] for f in frames if f["stream"] == "btcusdt@bookTicker"]
        assert updates == sorted(updates) and len(set(updates)) == len(updates)
        trade = next(f["data"] for f in frames if f["stream"] == "ethbtc@trade")
        assert list(trade) == ["e", "E", "s", "t", "p", "q", "T", "m", "M"] and trade["e"] == "trade"
        assert abs(trade["E"] / 1000 - time.time()) < 10  # wall-clock event times
        agg = next(f["data"] for f in frames if f["stream"] == "ethbtc@aggTrade")
        assert agg["e"] == "aggTrade" and agg["f"] == agg["l"]
        assert raws and all("stream" not in f and f["s"] == "ETHUSDT" for f in raws)

    run(scenario())


def test_binance_live_subscribe_list_unsubscribe_and_errors():
    async def scenario():
        async with Emulator(config()) as emu, connect(f"{emu.binance_url}/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1}))
            assert await recv_json(ws) == {"result": None, "id": 1}
            first = await recv_json(ws)
            assert first["s"] == "BTCUSDT" and "stream" not in first
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 3}))
            await ws.send(json.dumps({"method": "FLY", "params": [], "id": 4}))
            await ws.send("nope")
            replies = [json.loads(f) for f in await collect(ws, 1.0)]
            replies = [r for r in replies if "id" in r]
            assert replies[0] == {"result": ["btcusdt@bookTicker"], "id": 2}
            assert replies[1] == {"result": None, "id": 3}
            assert replies[2]["error"]["code"] == 2 and replies[2]["id"] == 4
            assert replies[3]["error"]["code"] == 3 and replies[3]["id"] is None
            assert not await collect(ws, 0.5)  # unsubscribed: quiet
        async with Emulator(config()) as emu:
            with pytest.raises(InvalidStatus) as err:
                async with connect(f"{emu.binance_url}/api/v3/depth"):
                    pass
            assert err.value.response.status_code == 404

    run(scenario())


def _raw_handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/btcusdt@trade HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def _read_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    head = sock.recv(2)
    if len(head) < 2:
        return None
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", sock.recv(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", sock.recv(8))[0]
    payload = b""
    while len(payload) < length:
        payload += sock.recv(length - len(payload))
    return opcode, payload


def test_binance_pings_and_drops_a_client_that_never_pongs_but_keeps_one_that_does():
    cfg = config(binance_ping_interval_s=0.3, binance_ping_timeout_s=0.6)
    with BackgroundEmulator(cfg) as emu:
        sock = _raw_handshake(emu.binance_port)
        opcodes, started = [], time.monotonic()
        while time.monotonic() - started < 4:
            frame = _read_frame(sock)
            if frame is None or frame[0] == 0x8:  # EOF or close frame
                break
            opcodes.append(frame[0])
        lasted = time.monotonic() - started
        sock.close()
        assert 0x9 in opcodes  # a ping frame
        assert lasted < 3  # closed for the missing pong

        async def polite() -> int:
            async with connect(f"{emu.binance_url}/ws/btcusdt@bookTicker") as ws:  # answers pings itself
                return len(await collect(ws, 2.0))

        assert asyncio.run(polite()) > 10


# --- faults -----------------------------------------------------------------------------------------------------

def test_drop_closes_connections_without_a_close_frame():
    async def scenario():
        async with Emulator(config()) as emu, connect(emu.coinbase_url) as ws:
            await ws.send(json.dumps(SUBSCRIBE))
            await recv_json(ws)
            record = emu.drop("coinbase")
            with pytest.raises(ConnectionClosedError) as err:
                while True:
                    await asyncio.wait_for(ws.recv(), 3)
            assert err.value.rcvd is None  # no close frame: the TCP connection just went
            assert record["kind"] == "drop" and emu.ground_truth()["faults"][0]["kind"] == "drop"

    run(scenario())


def test_silence_stops_one_exchange_while_the_other_keeps_going():
    async def scenario():
        async with Emulator(config()) as emu:
            async with connect(emu.coinbase_url) as cb, \
                    connect(f"{emu.binance_url}/stream?streams=btcusdt@bookTicker") as bn:
                await cb.send(json.dumps(SUBSCRIBE))
                await collect(cb, 0.3)
                await collect(bn, 0.3)
                emu.silence("binance", 1.2)
                await asyncio.sleep(0.05)
                await drain(bn)  # anything already on the way
                silent_bn, busy_cb = await asyncio.gather(collect(bn, 1.0), collect(cb, 1.0))
                assert silent_bn == [] and len(busy_cb) > 10
                assert len(await collect(bn, 1.0)) > 10  # back after the silence
            record = emu.ground_truth()["faults"][0]
            assert record["kind"] == "silence" and record["end_us"] - record["start_us"] == 1_200_000

    run(scenario())


def test_malformed_frames_cover_every_kind_on_both_exchanges():
    async def scenario():
        async with Emulator(config()) as emu:
            async with connect(emu.coinbase_url) as cb, connect(f"{emu.binance_url}/stream?streams=x@trade") as bn:
                await cb.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["status"]}))
                await recv_json(cb)
                emu.malformed("coinbase", count=5)
                emu.malformed("binance", count=5)
                cb_frames, bn_frames = await asyncio.gather(collect(cb, 0.5), collect(bn, 0.5))
            assert len(cb_frames) == len(bn_frames) == 5
            assert emu.counts()["malformed"] == {"coinbase": 5, "binance": 5}
        for frames in (cb_frames, bn_frames):
            bad_json = [f for f in frames if not _is_json(f)]
            assert len(bad_json) == 1
        parsed = [json.loads(f) for f in cb_frames if _is_json(f)]
        assert {f["type"] for f in parsed} == {"mystery", "l2update"}
        assert {"XXX-YYY"} <= {f["product_id"] for f in parsed}
        prices = {c[1] for f in parsed if f["type"] == "l2update" for c in f["changes"]}
        assert {"abc", "-5.00"} <= prices
        data = [json.loads(f)["data"] for f in bn_frames if _is_json(f)]
        assert {d.get("b") for d in data} >= {"abc", "-1.0"} and {d["s"] for d in data} >= {"XXXYYY"}

    run(scenario())


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def test_skip_sequence_makes_a_visible_gap_in_trade_ids():
    async def scenario():
        async with Emulator(config()) as emu:
            async with connect(emu.coinbase_url) as cb, \
                    connect(f"{emu.binance_url}/stream?streams=ethusdt@trade") as bn:
                await cb.send(json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"],
                                          "channels": ["matches", "heartbeat"]}))
                before_cb, before_bn = await asyncio.gather(collect(cb, 1.2), collect(bn, 1.2))
                emu.skip_sequence("coinbase", "ETH/USD", by=7)
                emu.skip_sequence("binance", "ETH/USD", by=7)
                after_cb, after_bn = await asyncio.gather(collect(cb, 1.5), collect(bn, 1.5))

        def trade_ids(frames, key, kinds):
            return [json.loads(f)[key] if "data" not in f else json.loads(f)["data"][key]
                    for f in frames if any(k in f for k in kinds)]

        cb_ids = trade_ids(before_cb + after_cb, "trade_id", ('"match"', '"last_match"'))
        assert [b - a for a, b in zip(cb_ids, cb_ids[1:])].count(8) == 1
        heartbeats = [json.loads(f)["last_trade_id"] for f in after_cb if '"heartbeat"' in f]
        assert heartbeats and heartbeats[-1] >= cb_ids[len(trade_ids(before_cb, "trade_id", ('"match"',))) - 1] + 7
        bn_ids = trade_ids(before_bn + after_bn, "t", ('"trade"',))
        assert [b - a for a, b in zip(bn_ids, bn_ids[1:])].count(8) == 1

    run(scenario())


def test_cross_book_sends_crossed_quotes_then_recovers():
    async def scenario():
        async with Emulator(config()) as emu, \
                connect(f"{emu.binance_url}/stream?streams=ethbtc@bookTicker") as bn:
            await collect(bn, 0.3)
            emu.cross_book("binance", "ETH/BTC", seconds=0.8)
            during = [json.loads(f)["data"] for f in await collect(bn, 0.7)]
            await asyncio.sleep(0.3)
            await drain(bn)
            after = [json.loads(f)["data"] for f in await collect(bn, 0.5)]
        assert during and sum(Decimal(d["b"]) > Decimal(d["a"]) for d in during) >= len(during) - 1
        assert after and all(Decimal(d["b"]) < Decimal(d["a"]) for d in after)

    run(scenario())


def test_server_shutdown_event_then_the_connection_closes():
    async def scenario():
        async with Emulator(config(shutdown_grace_s=0.3)) as emu, \
                connect(f"{emu.binance_url}/stream?streams=btcusdt@bookTicker") as bn:
            await collect(bn, 0.2)
            emu.server_shutdown()
            frames = []
            with pytest.raises(ConnectionClosed) as err:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(bn.recv(), 3)))
            shutdown = [f for f in frames if f.get("e") == "serverShutdown"]
            assert len(shutdown) == 1 and isinstance(shutdown[0]["E"], int)
            assert err.value.rcvd is not None and err.value.rcvd.code == 1001

    run(scenario())


def test_control_endpoint_injects_faults_and_reports_status():
    with BackgroundEmulator(config(control_port=0)) as emu:
        base = emu.control_url

        def post(path, body):
            request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())

        assert post("/fault", {"kind": "silence", "exchange": "coinbase", "seconds": 2})["fault"]["kind"] == "silence"
        assert post("/crash", {"pair": "ETH/USD", "pct": -3, "seconds": 30})["crash"]["pct"] == -3
        with pytest.raises(urllib.error.HTTPError) as err:
            post("/fault", {"kind": "drop", "exchange": "kraken"})
        assert err.value.code == 400 and "exchange must be one of" in json.loads(err.value.read())["error"]
        with urllib.request.urlopen(base + "/status", timeout=5) as response:
            status = json.loads(response.read())
        assert status["coinbase_port"] == emu.coinbase_port and status["mode"] == "scenario"
        truth = emu.ground_truth()
        assert [f["kind"] for f in truth["faults"]] == ["silence"] and truth["crashes"][0]["pair"] == "ETH/USD"


# --- synthetic windows and ground truth -------------------------------------------------------------------------

def test_an_injected_window_is_net_positive_on_the_wire_and_in_the_ground_truth(tmp_path):
    window = {"id": "w1", "pair": "BTC/USD", "direction": "buy_binance_sell_coinbase", "start_s": 0.8,
              "duration_s": 1.0, "gross_bps": "100", "size": "0.3"}
    truth_path = tmp_path / "truth.json"
    arrivals: list[tuple[str, dict]] = []  # both feeds in arrival order

    async def reader(ws, source: str) -> None:
        while True:
            arrivals.append((source, json.loads(await ws.recv())))

    async def scenario():
        cfg = config(fast_market(windows=[window], duration_s=3), truth_path=truth_path)
        async with Emulator(cfg) as emu:
            async with connect(f"{emu.binance_url}/stream?streams=btcusdt@bookTicker") as bn, \
                    connect(emu.coinbase_url) as cb:
                await cb.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2"]}))
                tasks = [asyncio.create_task(reader(bn, "binance")), asyncio.create_task(reader(cb, "coinbase"))]
                await asyncio.sleep(2.5)
                for task in tasks:
                    task.cancel()
            await emu.wait()

    run(scenario())
    fees = FeeSchedule()
    nets, bids, bn_ask, ask_size = [], {}, None, None
    for source, frame in arrivals:
        if source == "binance":
            bn_ask, ask_size = Decimal(frame["data"]["a"]), Decimal(frame["data"]["A"])
        elif frame["type"] == "snapshot":
            bids = {Decimal(p): Decimal(s) for p, s in frame["bids"]}
        elif frame["type"] == "l2update":
            for side, price, size in frame["changes"]:
                if side == "buy" and Decimal(size) == 0:
                    bids.pop(Decimal(price), None)
                elif side == "buy":
                    bids[Decimal(price)] = Decimal(size)
        if bids and bn_ask is not None:
            cb_bid = max(bids)
            nets.append((spread.net_bps(bn_ask, cb_bid, fees.binance, fees.coinbase), min(ask_size, bids[cb_bid])))
    best_net, size_at_best = max(nets)
    assert best_net > 20  # the window, seen on the wire
    assert sum(net > 0 for net, _ in nets) > 10  # for a second, not one tick
    truth = json.loads(truth_path.read_text())
    [record] = truth["windows"]
    assert record["status"] == "closed" and record["direction"] == "buy_binance_sell_coinbase"
    assert 800 <= record["duration_ms"] <= 1300
    assert abs(record["start_us"] - record["planned_start_us"]) < 300_000
    assert Decimal(record["gross_peak_bps"]) >= 100
    assert Decimal(record["net_peak_bps"]) - Decimal("0.01") <= best_net < Decimal(record["net_peak_bps"]) + 3
    assert size_at_best == Decimal("0.3") and record["size"] == "0.3" and record["start_iso"].endswith("Z")
    assert truth["ended_us"] is not None


# --- replay -----------------------------------------------------------------------------------------------------

def test_replay_sends_exactly_the_recorded_frames_to_each_exchange():
    cb_expected = [raw for _, raw in load_capture(CB_CAPTURE).frames]
    bn_expected = [raw for _, raw in load_capture(BN_CAPTURE).frames]

    async def scenario():
        async with Emulator(config(replay=(CB_CAPTURE, BN_CAPTURE), speed=0)) as emu:
            async with connect(emu.coinbase_url, max_size=None) as cb, \
                    connect(f"{emu.binance_url}/stream?streams=nknusdt@bookTicker") as bn:
                await cb.send(json.dumps({"type": "subscribe", "product_ids": ["BAND-GBP"], "channels": ["level2"]}))
                cb_frames, bn_frames = await asyncio.gather(collect_n(cb, len(cb_expected), 20),
                                                            collect_n(bn, len(bn_expected), 20))
                await emu.replay_done.wait()
                assert not await collect(cb, 0.2) and not await collect(bn, 0.2)  # nothing beyond the captures
            counts = emu.counts()
        return cb_frames, bn_frames, counts

    cb_frames, bn_frames, counts = run(scenario())
    assert cb_frames == cb_expected
    assert bn_frames == bn_expected
    assert counts["frames"] == {"coinbase": len(cb_expected), "binance": len(bn_expected)}
    assert counts["events"]["binance"]["NKNUSDT"]["quotes"] > 0


def test_replay_keeps_the_recorded_pace_scaled_by_speed():
    frames = load_capture(BN_CAPTURE).frames
    span = frames[-1][0] - frames[0][0]
    speed = span / 1.5  # the whole capture in ~1.5 s

    async def scenario():
        async with Emulator(config(replay=(BN_CAPTURE,), speed=speed)) as emu:
            async with connect(f"{emu.binance_url}/ws") as bn:
                started = time.monotonic()
                received = await collect(bn, 1.0)
                assert 0 < len(received) < len(frames)  # still coming after a second
                await emu.replay_done.wait()
                return time.monotonic() - started

    elapsed = run(scenario())
    assert 1.3 < elapsed < 3.0


# --- the command ------------------------------------------------------------------------------------------------

def test_arb_emulate_runs_a_scenario_and_writes_truth_and_metrics(tmp_path):
    scenario = tmp_path / "short.json"
    scenario.write_text(json.dumps(fast_market(duration_s=2, windows=[
        {"pair": "ETH/USD", "direction": "buy_coinbase_sell_binance", "start_s": 0.5, "duration_s": 0.8,
         "gross_bps": 90, "size": "1"}])))
    env = {**os.environ, "ARB_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "arb.cli", "emulate", "--scenario", str(scenario), "--coinbase-port", "0",
         "--binance-port", "0", "--control-port", "0", "--truth", str(tmp_path / "truth.json")],
        capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("coinbase ws://127.0.0.1:")
    assert "event=emulator_started" in result.stderr and "event=window_injected" in result.stderr
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert [w["pair"] for w in truth["windows"]] == ["ETH/USD"]
    metrics = json.loads((tmp_path / "data" / "run" / "metrics" / "emulator.json").read_text())
    assert {"coinbase_port", "binance_port", "frames_sent", "clients", "updated_ts"} <= set(metrics)


def test_arb_emulate_bad_arguments_exit_2_with_one_line(tmp_path):
    for args in (["--scenario", "no-such-scenario"], ["--replay", str(tmp_path / "missing.jsonl")],
                 ["--scenario", "demo", "--speed", "fast"], []):
        result = subprocess.run([sys.executable, "-m", "arb.cli", "emulate", *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_demo_scenario_serves_all_six_symbols():
    async def scenario():
        cfg = EmulatorConfig(coinbase_port=0, binance_port=0, scenario=load_scenario("demo"))
        streams = "/".join(f"{s}@bookTicker" for s in ("btcusdt", "ethusdt", "ethbtc"))
        async with Emulator(cfg) as emu, connect(f"{emu.binance_url}/stream?streams={streams}") as bn, \
                connect(emu.coinbase_url) as cb:
            await cb.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD", "ETH-BTC"],
                                      "channels": ["level2_batch"]}))
            bn_frames, cb_frames = await asyncio.gather(collect(bn, 1.0), collect(cb, 1.0))
        assert {json.loads(f)["data"]["s"] for f in bn_frames} == {"BTCUSDT", "ETHUSDT", "ETHBTC"}
        assert {json.loads(f).get("product_id") for f in cb_frames} >= {"BTC-USD", "ETH-USD", "ETH-BTC"}

    run(scenario())


# --- the producers' own parsers read what the emulator sends ----------------------------------------------------

def test_producer_parsers_read_every_emulated_frame_and_count_what_the_emulator_counted():
    producers_coinbase = pytest.importorskip("producers.coinbase")
    producers_binance = pytest.importorskip("producers.binance")
    from producers.feed import BadFrame
    from producers.markets import DEFAULT_SNAPSHOTS, load_snapshot

    symbols = {"coinbase": ["BTC/USD", "ETH/USD", "ETH/BTC"], "binance": ["BTC/USDT", "ETH/USDT", "ETH/BTC"]}
    cb_feed = producers_coinbase.Coinbase(load_snapshot("coinbase", DEFAULT_SNAPSHOTS["coinbase"]), symbols["coinbase"])
    bn_feed = producers_binance.Binance(load_snapshot("binance", DEFAULT_SNAPSHOTS["binance"]), symbols["binance"])

    async def scenario():
        async with Emulator(config()) as emu:
            async with connect(emu.coinbase_url) as cb, connect(bn_feed.url(emu.binance_url)) as bn:
                for message in cb_feed.subscribe_messages():
                    await cb.send(message)
                cb_frames, bn_frames = await asyncio.gather(collect(cb, 2.0), collect(bn, 2.0))
                emu.silence("coinbase", 10)  # stop the market, then take what is still on the way
                emu.silence("binance", 10)
                cb_rest, bn_rest = await asyncio.gather(collect(cb, 0.5), collect(bn, 0.5))
                return (cb_frames + cb_rest, bn_frames + bn_rest), emu.counts()

    (cb_frames, bn_frames), counts = run(scenario())
    for feed, frames in (("coinbase", cb_frames), ("binance", bn_frames)):
        parser = cb_feed if feed == "coinbase" else bn_feed
        parser.on_connect()
        produced: dict[str, dict[str, int]] = {}
        for raw in frames:
            try:
                events = parser.parse(raw, time.time_ns() // 1000)
            except BadFrame as exc:
                pytest.fail(f"{feed} frame dead-lettered ({exc}): {raw[:200]}")
            for event in events:
                if event.type in ("quote", "trade"):
                    per = produced.setdefault(event.venue_symbol, {"quotes": 0, "trades": 0})
                    per["quotes" if event.type == "quote" else "trades"] += 1
                else:
                    assert event.state.value in ("subscribed", "resynced"), event
        assert produced == counts["events"][feed]
        assert len(produced) == 3 and all(c["quotes"] > 20 and c["trades"] > 0 for c in produced.values())


def test_producer_parsers_report_a_gap_after_skip_sequence():
    producers_coinbase = pytest.importorskip("producers.coinbase")
    producers_binance = pytest.importorskip("producers.binance")
    from producers.markets import DEFAULT_SNAPSHOTS, load_snapshot

    cb_feed = producers_coinbase.Coinbase(load_snapshot("coinbase", DEFAULT_SNAPSHOTS["coinbase"]), ["ETH/USD"])
    bn_feed = producers_binance.Binance(load_snapshot("binance", DEFAULT_SNAPSHOTS["binance"]), ["ETH/USDT"])

    async def scenario():
        async with Emulator(config()) as emu:
            async with connect(emu.coinbase_url) as cb, connect(bn_feed.url(emu.binance_url)) as bn:
                for message in cb_feed.subscribe_messages():
                    await cb.send(message)
                before = await asyncio.gather(collect(cb, 1.0), collect(bn, 1.0))
                emu.skip_sequence("coinbase", "ETH/USD", by=3)
                emu.skip_sequence("binance", "ETH/USD", by=3)
                after = await asyncio.gather(collect(cb, 1.5), collect(bn, 1.5))
        return before, after

    before, after = run(scenario())
    for parser, frames_before, frames_after in ((cb_feed, before[0], after[0]), (bn_feed, before[1], after[1])):
        parser.on_connect()
        states = [[e.state.value for raw in frames for e in parser.parse(raw, 0) if e.type == "status"]
                  for frames in (frames_before, frames_after)]
        assert "gap" not in states[0]
        assert "gap" in states[1], parser.name


def test_a_reconnecting_clients_repeated_last_match_is_not_counted_as_a_new_trade():
    async def scenario():
        cfg = config(fast_market(venues={"coinbase": {"trades_per_s": 0.0001}, "binance": {}}))
        async with Emulator(cfg) as emu:
            ids = []
            for _ in range(2):
                async with connect(emu.coinbase_url) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"],
                                              "channels": ["matches"]}))
                    frames = [json.loads(f) for f in await collect(ws, 0.5)]
                    ids += [f["trade_id"] for f in frames if f["type"] == "last_match"]
            return ids, emu.counts()["events"]["coinbase"]["ETH-USD"]["trades"]

    ids, counted = run(scenario())
    assert len(ids) == 2 and ids[0] == ids[1]
    assert counted == 1


# --- the producers' connection loop against the emulator --------------------------------------------------------

class _Collector:
    """A Publisher that keeps everything (the producers' Kafka sink stands here in real runs)."""

    def __init__(self) -> None:
        self.events, self.statuses, self.dead = [], [], []

    def publish(self, events: list) -> None:
        for event in events:
            (self.statuses if event.type == "status" else self.events).append(event)

    def status(self, status) -> None:
        self.statuses.append(status)

    def dead_letter(self, letter) -> None:
        self.dead.append(letter)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for event in self.events:
            per = out.setdefault(event.venue_symbol, {"quotes": 0, "trades": 0})
            per["quotes" if event.type == "quote" else "trades"] += 1
        return out

    def states(self) -> list[str]:
        return [s.state.value for s in self.statuses]


def _producer_connections(emu, silence_timeout_s: float = 10.0):
    connection = pytest.importorskip("producers.connection")
    from producers.binance import Binance
    from producers.coinbase import Coinbase
    from producers.markets import DEFAULT_SNAPSHOTS, load_snapshot
    from producers.metrics import ProducerMetrics

    feeds = {
        "coinbase": Coinbase(load_snapshot("coinbase", DEFAULT_SNAPSHOTS["coinbase"]), ["BTC/USD", "ETH/USD"]),
        "binance": Binance(load_snapshot("binance", DEFAULT_SNAPSHOTS["binance"]), ["BTC/USDT", "ETH/USDT"]),
    }
    urls = {"coinbase": feeds["coinbase"].url(emu.coinbase_url), "binance": feeds["binance"].url(emu.binance_url)}
    sinks = {name: _Collector() for name in feeds}
    conns = {
        name: connection.FeedConnection(
            feed, sinks[name], ProducerMetrics(name, urls[name]),
            connection.ConnectionConfig(url=urls[name], silence_timeout_s=silence_timeout_s, backoff_initial_s=0.1,
                                        backoff_max_s=0.5))
        for name, feed in feeds.items()
    }
    return conns, sinks


def test_producers_get_exactly_what_the_emulator_counted_through_gaps_and_malformed_frames():
    pytest.importorskip("producers.connection")

    async def scenario():
        async with Emulator(config()) as emu:
            conns, sinks = _producer_connections(emu)
            stop = asyncio.Event()
            tasks = [asyncio.create_task(c.run(stop)) for c in conns.values()]
            await asyncio.sleep(1.5)
            for exchange in ("coinbase", "binance"):
                emu.skip_sequence(exchange, "ETH/USD", by=4)
                emu.malformed(exchange, count=5, pair="BTC/USD")
            emu.cross_book("binance", "BTC/USD", seconds=0.5)
            await asyncio.sleep(2.5)
            emu.silence("coinbase", 30)  # quiet the market, let the last frames land, then compare
            emu.silence("binance", 30)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*tasks)
            return sinks, emu.counts()

    sinks, counts = run(scenario())
    for exchange, sink in sinks.items():
        assert sink.counts() == counts["events"][exchange], exchange
        assert len(sink.dead) == 5 == counts["malformed"][exchange]
        states = sink.states()
        assert "gap" in states and states.count("connected") == 1  # a gap is healed without reconnecting
    coinbase_states = sinks["coinbase"].states()
    assert "resynced" in coinbase_states[coinbase_states.index("gap"):]  # the book rebuilt from a fresh snapshot
    assert any(q.is_crossed for q in sinks["binance"].events if q.type == "quote")


def test_producers_reconnect_after_a_drop_a_stale_feed_and_a_server_shutdown():
    pytest.importorskip("producers.connection")

    async def scenario():
        async with Emulator(config(shutdown_grace_s=0.5)) as emu:
            conns, sinks = _producer_connections(emu, silence_timeout_s=1.0)
            stop = asyncio.Event()
            tasks = [asyncio.create_task(c.run(stop)) for c in conns.values()]
            await asyncio.sleep(1.0)
            emu.drop("coinbase")
            emu.server_shutdown()
            await asyncio.sleep(1.5)
            emu.silence("coinbase", 2.0)
            await asyncio.sleep(3.5)
            stop.set()
            await asyncio.gather(*tasks)
            return sinks

    sinks = run(scenario())
    coinbase_states, binance_states = sinks["coinbase"].states(), sinks["binance"].states()
    assert coinbase_states.count("connected") == 3  # first, after the drop, after going stale
    assert "stale" in coinbase_states
    assert binance_states.count("connected") == 2  # first, after serverShutdown
    last_quote = max(e.ts_recv_us for e in sinks["coinbase"].events if e.type == "quote")
    last_status = max(s.ts_recv_us for s in sinks["coinbase"].statuses if s.state.value == "connected")
    assert last_quote > last_status  # quotes flowed again after the last reconnect


def test_speed_runs_a_scenarios_clock_faster_windows_faults_and_duration_included(tmp_path):
    window = {"id": "w1", "pair": "ETH/USD", "direction": "buy_coinbase_sell_binance", "start_s": 2.0,
              "duration_s": 2.0, "gross_bps": "90", "size": "1"}
    fault = {"at_s": 5.0, "kind": "silence", "exchange": "binance", "seconds": 2.0}
    spec = fast_market(windows=[window], faults=[fault], duration_s=8)

    async def scenario():
        async with Emulator(config(spec, speed=4.0)) as emu:
            started = time.monotonic()
            await emu.wait()
            return time.monotonic() - started, emu.ground_truth()

    elapsed, truth = run(scenario())
    assert 1.9 < elapsed < 2.6  # 8 scenario seconds at 4x
    [record] = truth["windows"]
    assert record["planned_start_us"] - truth["started_us"] == 500_000
    assert 400 <= record["duration_ms"] <= 650
    [silence] = truth["faults"]
    assert silence["end_us"] - silence["start_us"] == 500_000 and silence["seconds"] == 0.5


def test_windows_scenario_on_the_wire_matches_its_ground_truth_and_the_stale_decoy_is_not_a_window():
    """windows.json at 4x: every net-positive moment on the wire is an injected window, except while Binance is
    silent (stale quotes); every injected window shows its ground-truth net peak."""
    fees = FeeSchedule()
    pair_of = {"BTC-USD": "BTC/USD", "ETH-USD": "ETH/USD", "ETH-BTC": "ETH/BTC",
               "BTCUSDT": "BTC/USD", "ETHUSDT": "ETH/USD", "ETHBTC": "ETH/BTC"}
    positives: list[tuple[int, str, str, Decimal]] = []  # (recv us, pair, direction, net bps)
    latest: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    books: dict[str, tuple[set, set]] = {}

    def on_top(exchange: str, pair: str, bid: Decimal, ask: Decimal) -> None:
        latest[(exchange, pair)] = (bid, ask)
        if ("coinbase", pair) in latest and ("binance", pair) in latest:
            (cb_bid, cb_ask), (bn_bid, bn_ask) = latest[("coinbase", pair)], latest[("binance", pair)]
            now = time.time_ns() // 1000
            for direction, net in ((spread.BUY_COINBASE_SELL_BINANCE,
                                    spread.net_bps(cb_ask, bn_bid, fees.coinbase, fees.binance)),
                                   (spread.BUY_BINANCE_SELL_COINBASE,
                                    spread.net_bps(bn_ask, cb_bid, fees.binance, fees.coinbase))):
                if net > 0:
                    positives.append((now, pair, direction, net))

    async def read_coinbase(ws) -> None:
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "snapshot":
                books[frame["product_id"]] = ({Decimal(p) for p, _ in frame["bids"]},
                                              {Decimal(p) for p, _ in frame["asks"]})
            elif frame["type"] == "l2update":
                bids, asks = books[frame["product_id"]]
                for side, price, size in frame["changes"]:
                    levels = bids if side == "buy" else asks
                    (levels.discard if Decimal(size) == 0 else levels.add)(Decimal(price))
            else:
                continue
            bids, asks = books[frame["product_id"]]
            on_top("coinbase", pair_of[frame["product_id"]], max(bids), min(asks))

    async def read_binance(ws) -> None:
        while True:
            data = json.loads(await ws.recv())["data"]
            on_top("binance", pair_of[data["s"]], Decimal(data["b"]), Decimal(data["a"]))

    async def scenario():
        async with Emulator(config(speed=4.0, scenario=load_scenario("windows"))) as emu:
            streams = "/".join(f"{s}@bookTicker" for s in ("btcusdt", "ethusdt", "ethbtc"))
            async with connect(emu.coinbase_url) as cb, connect(f"{emu.binance_url}/stream?streams={streams}") as bn:
                await cb.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD", "ETH-BTC"],
                                          "channels": ["level2_batch"]}))
                readers = [asyncio.create_task(read_coinbase(cb)), asyncio.create_task(read_binance(bn))]
                await emu.wait()
                for reader in readers:
                    reader.cancel()
            return emu.ground_truth()

    truth = run(scenario())
    windows = truth["windows"]
    assert len(windows) == 4 and all(w["status"] == "closed" for w in windows)
    [silence] = [f for f in truth["faults"] if f["kind"] == "silence"]
    slack = 100_000  # frames in flight when a window opens or closes
    stale = 0
    for ts, pair, direction, net in positives:
        matching = [w for w in windows if w["pair"] == pair and w["direction"] == direction
                    and w["start_us"] - slack <= ts <= w["end_us"] + slack]
        if matching:
            assert net <= Decimal(matching[0]["net_peak_bps"]) + Decimal("0.001")
            continue
        assert silence["start_us"] <= ts <= silence["end_us"] + slack, (ts, pair, direction, net)
        stale += 1
    assert stale > 0  # the decoy did look net-positive on the stale Binance quotes
    for w in windows:
        peaks = [net for ts, pair, direction, net in positives
                 if pair == w["pair"] and direction == w["direction"] and w["start_us"] <= ts <= w["end_us"]]
        assert peaks and abs(max(peaks) - Decimal(w["net_peak_bps"])) < Decimal("0.001")
