"""A tiny HTTP control endpoint (127.0.0.1 only) so a test or an operator can drive a running `arb emulate`:

    GET  /status                    ports, clients, frames and events sent (the emulator.json content, per symbol)
    GET  /truth                     the ground truth so far
    POST /fault   {"kind": "silence", "exchange": "binance", "seconds": 5}     (faults.py; or as ?kind=...&... query)
    POST /crash   {"pair": "BTC/USD", "pct": -3, "seconds": 60}
    POST /stop                      end the run (as after --duration)

    curl -s -XPOST localhost:8703/fault -d '{"kind":"drop","exchange":"coinbase"}'

Answers are JSON; a bad request is 400 with {"error": "<one-line reason>"}.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from arb.logs import log_event
from producers.emulator.faults import FaultError, parse_fault

if TYPE_CHECKING:
    from producers.emulator.emulator import Emulator

log = logging.getLogger("emulator.control")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


class ControlServer:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").strip()
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode("latin-1").strip()
                if not line:
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            method, _, rest = request_line.partition(" ")
            target = rest.rsplit(" ", 1)[0]
            status, payload = self.route(method, target, body)
        except (ValueError, asyncio.IncompleteReadError) as exc:
            status, payload = 400, {"error": f"bad HTTP request: {exc}"}
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    def route(self, method: str, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        emu = self.emulator
        try:
            if url.path == "/status" and method == "GET":
                return 200, emu.status()
            if url.path == "/truth" and method == "GET":
                return 200, emu.ground_truth() or {}
            if method != "POST" or url.path not in ("/fault", "/crash", "/stop"):
                known = url.path in ("/status", "/truth", "/fault", "/crash", "/stop")
                return (405, {"error": f"{method} not allowed on {url.path}"}) if known else (
                    404, {"error": f"no endpoint {url.path}"})
            spec: dict[str, Any] = json.loads(body) if body.strip() else {}
            if not isinstance(spec, dict):
                return 400, {"error": "body must be a JSON object"}
            spec = {**query, **spec}
            if url.path == "/fault":
                record = emu.inject(parse_fault(spec))
                log_event(log, "control_fault", kind=spec.get("kind"), exchange=spec.get("exchange"))
                return 200, {"ok": True, "fault": record}
            if url.path == "/crash":
                record = emu.crash(str(spec["pair"]), float(spec.get("pct", -3.0)), float(spec.get("seconds", 60.0)))
                return 200, {"ok": True, "crash": record}
            emu.finished.set()
            return 200, {"ok": True}
        except (FaultError, KeyError, ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
