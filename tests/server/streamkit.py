"""Test kit for the ingest, live state and node-down tests: the real server app on 127.0.0.1
(a FakeClock, a shared real store), accounts and nodes made through the real store, the real
agent ``StreamClient`` (fed the agent's own plain types, converted from the models the tests
build) and raw websockets for hostile frames. No mocks.

    async with ServerUnderTest(store, clock) as srv:
        client = agent_client(srv.url, token)
        ...
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp
from aiohttp import web

from agent import wire
from agent.outbox import Outbox
from agent.protocol import (
    STREAM_PATH,
    Ack,
    Alert,
    AlertEvent,
    Config,
    Hello,
    Metrics,
    Ping,
    WireSample,
    dumps,
    parse_server_message,
)
from agent.stream import StreamClient
from server.app import create_app
from server.clock import Clock
from server.config import exact_settings
from server.ingest import SOCKETS
from server.keys import LIVE
from server.live import LiveState
from server.nodedown import DETECTOR, NodeDownDetector
from server.security import new_api_key, new_node_token
from server.storage.store import Account, Node, Store

HOST = "127.0.0.1"


async def make_account(
    store: Store, *, plan: str = "pro", now: float = 1.7e9
) -> tuple[Account, str]:
    """A real account (password hash irrelevant here) and its API key."""
    key = new_api_key()
    account, _ = await store.create_account(
        name="Test Developer",
        email=f"dev-{secrets.token_hex(6)}@example.com",
        company=None,
        password_hash="scrypt$unused",
        plan=plan,
        api_key=key,
        key_name="test",
        now=now,
    )
    return account, key


async def make_node(store: Store, account: Account, name: str = "vpn-1") -> tuple[Node, str]:
    token = new_node_token()
    node = await store.create_node(account.id, name=name, token=token, now=1.7e9)
    return node, token


C = TypeVar("C", bound=Clock)


class ServerUnderTest(Generic[C]):
    """The real app (``create_app``) served on 127.0.0.1; ``restart`` keeps the port (a new
    app: live state starts empty, the store is the same)."""

    def __init__(self, store: Store, clock: C, **settings: Any) -> None:
        self.store = store
        self.clock = clock
        self.settings = exact_settings(
            **{"start_grace_seconds": 0, "data_dir": "/nonexistent-unused", **settings}
        )
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return self.url + STREAM_PATH

    @property
    def live(self) -> LiveState:
        assert self.app is not None
        return self.app[LIVE]

    @property
    def detector(self) -> NodeDownDetector:
        assert self.app is not None
        return self.app[DETECTOR]

    def open_sockets(self) -> int:
        assert self.app is not None
        return len(self.app[SOCKETS])

    async def start(self) -> None:
        self.app = create_app(self.settings, clock=self.clock, store=self.store)
        runner = web.AppRunner(
            self.app, handle_signals=False, shutdown_timeout=2.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, HOST, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self.runner = runner

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> ServerUnderTest[C]:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Poll state the code under test has no hook for, bounded in time."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def hello(interval: float = 5.0, **extra: Any) -> Hello:
    return Hello(
        agent_version="0.1.0",
        interval=interval,
        metrics=["cpu_usage_percent", "vpn_active_peers"],
        rules=["cpu_high"],
        buffer_seconds=900,
        **extra,
    )


def metrics_frame(seq: int, cpu: float = 12.5, peers: float | str = 40.0) -> Metrics:
    return Metrics(
        seq=seq,
        ts=1.7e9 + seq,
        samples=[
            WireSample(m="cpu_usage_percent", v=cpu),
            WireSample(m="vpn_active_peers", v=peers),
            WireSample(m="iface_up", l={"iface": "wg0"}, v=1.0),
        ],
    )


def event(n: int, *, status: str = "firing", fingerprint: str = "00000000000000aa") -> AlertEvent:
    return AlertEvent.model_validate(
        {
            "id": f"evt-{n:08d}",
            "fingerprint": fingerprint,
            "rule": "cpu_high",
            "status": status,
            "severity": "warning",
            "metric": "cpu_usage_percent",
            "value": 97.0,
            "threshold": 90.0,
            "summary": "cpu is 97",
            "started_at": 1.7e9,
            "ts": 1.7e9 + n,
        }
    )


def agent_event(model: AlertEvent) -> wire.AlertEvent:
    """The agent's own plain type (``agent.wire``) for an event built as the server's model."""
    return wire.AlertEvent(**model.model_dump())


def agent_metrics(model: Metrics) -> wire.Metrics:
    samples = [wire.WireSample(s.m, dict(s.l), s.v) for s in model.samples]
    return wire.Metrics(model.seq, model.ts, samples)


def agent_hello(model: Hello) -> wire.Hello:
    fields = model.model_dump(exclude={"v", "type", "firing"})
    return wire.Hello(**fields, firing=[agent_event(e) for e in model.firing])


class ConfigSink:
    def __init__(self) -> None:
        self.configs: list[wire.Config] = []

    def __call__(self, config: wire.Config) -> None:
        self.configs.append(config)


def agent_client(
    server_url: str,
    token: str,
    *,
    outbox: Outbox | None = None,
    on_config: Callable[[wire.Config], None] | None = None,
    hello_builder: Callable[[], Hello] = hello,
) -> StreamClient:
    """The real agent stream client (pass-through gate: these are test frames). It takes the
    agent's plain types: pass events and frames through :func:`agent_event` /
    :func:`agent_metrics`; ``hello_builder`` builds the server's model, converted here."""
    return StreamClient(
        server_url=server_url,
        token=token,
        hello=lambda: agent_hello(hello_builder()),
        gate=lambda m: m,
        outbox=outbox if outbox is not None else Outbox(),
        on_config=on_config if on_config is not None else (lambda c: None),
        rng=random.Random(7),
        backoff_base=0.02,
        backoff_cap=0.1,
        connect_timeout=2.0,
        logger=logging.getLogger("test.agent.stream"),
    )


@asynccontextmanager
async def running(client: StreamClient) -> AsyncIterator[StreamClient]:
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        async with asyncio.timeout(5):
            await client.close()
        assert task.done()


@asynccontextmanager
async def raw_ws(
    srv: ServerUnderTest[Any], token: str, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A bare websocket to the stream (for frames the real client would never send)."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            srv.ws_url, headers={"Authorization": f"Bearer {token}"}, heartbeat=None, **kwargs
        ) as ws,
    ):
        yield ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> int | None:  # noqa: ASYNC109
    """Read until the server closes; returns the close code."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                return ws.close_code


async def receive_message(ws: aiohttp.ClientWebSocketResponse) -> Ack | Config | Ping:
    """The server's next message (bounded in time)."""
    async with asyncio.timeout(5):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return parse_server_message(msg.data)


async def greet(ws: aiohttp.ClientWebSocketResponse, firing: Sequence[AlertEvent] = ()) -> None:
    """Send a hello naming ``firing``; returns once the server handled it (a ping answered:
    the server reads the next message only after the hello's work)."""
    await ws.send_str(dumps(hello(firing=list(firing))))
    await ws.send_str(dumps(Ping(ts=0.5)))
    while await receive_message(ws) != Ping(ts=0.5, reply=True):
        pass


async def send_alert(ws: aiohttp.ClientWebSocketResponse, alert: AlertEvent) -> None:
    """Send one alert event on a bare websocket; returns once the server acked it."""
    await ws.send_str(dumps(Alert(event=alert)))
    while True:
        message = await receive_message(ws)
        if isinstance(message, Ack) and alert.id in message.ids:
            return
