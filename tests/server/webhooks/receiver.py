"""A developer's webhook receiver, faked: a small aiohttp app on 127.0.0.1 that records every
request and answers from a script (status, headers, body, delay), then 204.

    async with Receiver() as rx:
        rx.script.extend([Reply(503), Reply(503)])      # then 204s
        url = rx.url("/hook")
        ...
        await rx.wait_for(lambda got: len(got) >= 3)

It verifies nothing itself; tests verify signatures with the ``standardwebhooks`` library.
``down()`` stops listening (connections refused) and ``up()`` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when the request arrived."""
    status: int
    """What the receiver answered."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> Any:
        """The payload, after the standardwebhooks library checked the signature."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    def __init__(self) -> None:
        self.got: list[Received] = []
        self.script: deque[Reply] = deque()
        self.default = Reply()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    def url(self, path: str = "/hook") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.got if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self.script.popleft() if self.script else self.default
        self.got.append(
            Received(
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                time.monotonic(),
                reply.status,
            )
        )
        self._changed.set()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self.port, reuse_address=True)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def down(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def wait_for(
        self,
        done: Callable[[list[Received]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> list[Received]:
        """Wait (bounded) until ``done(self.got)``; returns what was received."""
        async with asyncio.timeout(timeout):
            while not done(self.got):
                self._changed.clear()
                await self._changed.wait()
        return self.got

    async def __aenter__(self) -> Receiver:
        await self.up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.down()
