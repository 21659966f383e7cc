"""Kit for webhook tests through the real server: the app on 127.0.0.1 with fast retries and
the loopback receiver allowed, accounts and nodes through the real store, endpoints through the
real HTTP API, events through the real agent stream client.

    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        node, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url("/a"))
        async with sending(srv, token) as send:
            await send(event(1))                      # returns once the server acked it
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from agent.outbox import Outbox
from agent.protocol import AlertEvent
from server.clock import FakeClock
from server.keys import WEBHOOKS
from server.storage.store import Store
from server.webhooks.dispatch import WebhookDispatch
from tests.server.streamkit import (
    ServerUnderTest,
    agent_client,
    agent_event,
    eventually,
    running,
)

FAST: dict[str, Any] = {
    "webhook_allow_networks": ["127.0.0.0/8"],
    "webhook_retry_base": 0.05,
    "webhook_retry_max": 1.5,
    "webhook_max_attempts": 6,
    "webhook_timeout": 3.0,
}
"""Settings for tests: the loopback receiver is reachable, retries come quickly."""


@asynccontextmanager
async def hook_server(
    store: Store, clock: FakeClock, **settings: Any
) -> AsyncIterator[ServerUnderTest[FakeClock]]:
    async with ServerUnderTest(store, clock, **{**FAST, **settings}) as srv:
        yield srv


def sink(srv: ServerUnderTest[Any]) -> WebhookDispatch:
    assert srv.app is not None
    return srv.app[WEBHOOKS]


async def call(
    srv: ServerUnderTest[Any],
    method: str,
    path: str,
    key: str,
    body: Any = None,
    *,
    expect: int | None = None,
) -> tuple[int, Any]:
    """One API request with an API key; returns (status, JSON body or None)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            srv.url + path,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        data = await response.json() if response.content_type == "application/json" else None
        if expect is not None:
            assert response.status == expect, data
        return response.status, data


async def create_hook(srv: ServerUnderTest[Any], key: str, **body: Any) -> dict[str, Any]:
    """A new endpoint through the API: ``{"webhook": ..., "secret": "whsec_..."}``."""
    _, data = await call(srv, "POST", "/api/v1/webhooks", key, body, expect=201)
    assert isinstance(data, dict)
    return data


@asynccontextmanager
async def sending(
    srv: ServerUnderTest[Any],
    token: str,
    *,
    timeout: float = 15.0,  # noqa: ASYNC109
) -> AsyncIterator[Callable[[AlertEvent], Awaitable[None]]]:
    """The real agent stream client; ``await send(event)`` returns once the server acked it
    (that is, once its deliveries settled)."""
    outbox = Outbox()
    client = agent_client(srv.url, token, outbox=outbox)

    async def send(event: AlertEvent) -> None:
        client.add_event(agent_event(event))
        await eventually(lambda: event.id not in outbox, timeout)

    async with running(client):
        yield send
