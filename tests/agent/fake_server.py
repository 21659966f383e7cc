"""A small fake OneConnect server for tests: a real aiohttp websocket endpoint on 127.0.0.1.

    async with FakeServer() as server:
        client = StreamClient(server_url=server.url, ...)
        ...
        await server.wait_for(lambda: len(server.alerts()) == 1)

It records every agent message (parsed with :func:`agent.protocol.parse_agent_message`; frames that
fail to parse land in ``invalid``), acks alerts unless ``auto_ack`` is False, sends arbitrary raw
frames, drops connections, refuses handshakes with a chosen status, and restarts on the same port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel

from agent.protocol import (
    MAX_AGENT_FRAME_BYTES,
    STREAM_PATH,
    Ack,
    Alert,
    Hello,
    Metrics,
    Ping,
    ProtocolError,
    dumps,
    parse_agent_message,
)

AgentMsg = Hello | Metrics | Alert | Ping
_M = TypeVar("_M", bound=BaseModel)


@dataclass
class Connection:
    """One accepted websocket connection."""

    headers: dict[str, str]
    ws: web.WebSocketResponse
    request: web.Request
    messages: list[AgentMsg] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.ws.closed


class FakeServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auto_ack: bool = True,
        token: str | None = None,
        reject_status: int | None = None,
        prefix: str = "",
    ) -> None:
        self.host = host
        self.port = port
        """0 until started the first time; then fixed, so restart() reuses it."""
        self.auto_ack = auto_ack
        self.token = token
        """When set, handshakes without ``Authorization: Bearer <token>`` get 401."""
        self.reject_status = reject_status
        """When set, every handshake is answered with this HTTP status."""
        self.prefix = prefix.rstrip("/")
        self.received: list[AgentMsg] = []
        self.invalid: list[str] = []
        self.connections: list[Connection] = []
        self.handshakes = 0
        """Every handshake attempt, accepted or refused."""
        self.acked: list[str] = []
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL an agent is configured with (``server_url``)."""
        if self.port == 0:
            raise RuntimeError("FakeServer not started")
        return f"http://{self.host}:{self.port}{self.prefix}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeServer already running")
        app = web.Application()
        app.router.add_get(self.prefix + STREAM_PATH, self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self, *, abrupt: bool = False) -> None:
        """Close every connection (a close frame, or a TCP abort if ``abrupt``) and stop."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self.drop(abrupt=abrupt)
        await runner.cleanup()

    async def restart(self, *, abrupt: bool = False) -> None:
        await self.stop(abrupt=abrupt)
        await self.start()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- acting on the agent --------------------------------------------------------------------

    @property
    def current(self) -> Connection | None:
        """The newest open connection."""
        for conn in reversed(self.connections):
            if not conn.closed:
                return conn
        return None

    async def send_raw(self, data: str | bytes) -> None:
        """Send a text (str) or binary (bytes) frame to the current connection."""
        conn = self.current
        if conn is None:
            raise RuntimeError("no agent connected")
        if isinstance(data, bytes):
            await conn.ws.send_bytes(data)
        else:
            await conn.ws.send_str(data)

    async def send(self, message: BaseModel) -> None:
        await self.send_raw(dumps(message))

    async def ack(self, ids: list[str]) -> None:
        await self.send(Ack(ids=ids))
        self.acked.extend(ids)

    async def drop(self, *, abrupt: bool = False) -> None:
        """Drop every open connection: close frame (going away), or TCP abort if ``abrupt``."""
        for conn in self.connections:
            if conn.closed:
                continue
            if abrupt:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
            else:
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"going away")

    # -- observing ------------------------------------------------------------------------------

    def of_type(self, kind: type[_M]) -> list[_M]:
        return [m for m in self.received if isinstance(m, kind)]

    def hellos(self) -> list[Hello]:
        return self.of_type(Hello)

    def metrics(self) -> list[Metrics]:
        return self.of_type(Metrics)

    def alerts(self) -> list[Alert]:
        return self.of_type(Alert)

    def pings(self) -> list[Ping]:
        return self.of_type(Ping)

    def open_connections(self) -> int:
        return sum(1 for conn in self.connections if not conn.closed)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` holds (checked after every server event)."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"condition not met within {timeout} s") from None

    # -- the endpoint ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        self._changed.set()
        if self.reject_status is not None:
            return web.json_response(
                {"error": {"code": "rejected", "message": "rejected by the fake server"}},
                status=self.reject_status,
            )
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "bad node token"}}, status=401
            )
        ws = web.WebSocketResponse(max_msg_size=MAX_AGENT_FRAME_BYTES)
        await ws.prepare(request)
        conn = Connection(headers=dict(request.headers), ws=ws, request=request)
        self.connections.append(conn)
        self._changed.set()
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    await self._on_text(conn, frame.data)
                elif frame.type is WSMsgType.BINARY:
                    self.invalid.append("binary frame")
                self._changed.set()
        finally:
            self._changed.set()
        return ws

    async def _on_text(self, conn: Connection, data: str) -> None:
        try:
            message = parse_agent_message(data)
        except ProtocolError as exc:
            self.invalid.append(str(exc))
            return
        conn.messages.append(message)
        self.received.append(message)
        if isinstance(message, Alert) and self.auto_ack:
            await conn.ws.send_str(dumps(Ack(ids=[message.event.id])))
            self.acked.append(message.event.id)
        elif isinstance(message, Ping) and not message.reply:
            await conn.ws.send_str(dumps(Ping(ts=message.ts, reply=True)))
