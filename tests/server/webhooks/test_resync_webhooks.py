"""Hello resync and webhooks through the real server (bare websockets speaking the protocol, a
loopback receiver, the store on SQLite and PostgreSQL): a resynced alert is delivered to no
one, queued nowhere and saved nowhere; its resolved event goes where the resync routed it;
its reminders resume one interval after the hello."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from agent.protocol import AlertEvent
from server.clock import FakeClock
from server.keys import SAVED
from server.storage.schema import alert_history, delivery_queue
from server.storage.store import Store
from tests.server.streamkit import event, greet, make_account, make_node, raw_ws, send_alert
from tests.server.webhooks.hookkit import call, create_hook, hook_server, sink
from tests.server.webhooks.receiver import Receiver

FP_A = "00000000000000aa"
FP_B = "00000000000000bb"


def firing(n: int, fingerprint: str = FP_A, **fields: Any) -> AlertEvent:
    return AlertEvent.model_validate({**event(n, fingerprint=fingerprint).model_dump(), **fields})


async def column(store: Store, table: Any, name: str) -> list[Any]:
    async with store.engine.connect() as conn:
        return sorted(row[0] for row in await conn.execute(select(table.c[name])))


async def test_a_resynced_alert_is_not_delivered_queued_or_saved(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        async with raw_ws(srv, token) as ws:
            await greet(ws, [firing(1)])
            await send_alert(ws, firing(1))  # the resend of a resynced id: acked, a duplicate
            await send_alert(ws, firing(2, FP_B))  # an ordinary new alert, for contrast
        await rx.wait_for(lambda got: len(got) >= 1)
        assert srv.app is not None
        await srv.app[SAVED].flush(final=True)
        async with asyncio.timeout(5):
            while await column(store, delivery_queue, "msg_id"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        [got] = rx.got
        assert got.verify(hook["secret"])["data"]["id"] == "evt-00000002"
        assert await column(store, alert_history, "event_id") == ["evt-00000002"]


async def test_the_resolved_goes_where_the_resync_routed_it(store: Store, clock: FakeClock) -> None:
    """Routed as a firing event at the hello; filters changed afterwards do not reroute it."""
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        matching = await create_hook(srv, key, url=rx.url("/a"), filters={"rules": ["cpu_high"]})
        await create_hook(srv, key, url=rx.url("/b"), filters={"rules": ["disk_full"]})
        async with raw_ws(srv, token) as ws:
            await greet(ws, [firing(1)])
            path = f"/api/v1/webhooks/{matching['webhook']['id']}"
            await call(srv, "PATCH", path, key, {"filters": {"rules": ["disk_full"]}}, expect=200)
            await send_alert(ws, event(2, status="resolved", fingerprint=FP_A))
        [got] = rx.got  # acked once its deliveries settled: nothing else is on its way
        assert got.path == "/a"
        payload = got.verify(matching["secret"])
        assert (payload["type"], payload["data"]["id"]) == ("alert.resolved", "evt-00000002")
        _, body = await call(srv, "GET", "/api/v1/alerts?status=firing", key, expect=200)
        assert body["alerts"] == []


async def test_reminders_resume_one_interval_after_the_hello(
    store: Store, clock: FakeClock
) -> None:
    async with (
        hook_server(store, clock, webhook_repeat_interval=3600) as srv,
        Receiver() as rx,
    ):
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        now = clock.time()
        recent = firing(1, ts=now - 100, started_at=now - 100)
        old = firing(2, FP_B, ts=now - 9000, started_at=now - 9000)  # 2.5 intervals ago
        async with raw_ws(srv, token) as ws:
            await greet(ws, [recent, old])
            assert await sink(srv).remind_due() == 0  # no storm after a restart
            clock.advance(3599)
            assert await sink(srv).remind_due() == 0
            clock.advance(2)
            assert await sink(srv).remind_due() == 2
            await rx.wait_for(lambda got: len(got) == 2)
            resolved = event(3, status="resolved", fingerprint=FP_A)
            await send_alert(ws, resolved.model_copy(update={"ts": clock.time()}))
            clock.advance(3601)
            assert await sink(srv).remind_due() == 1  # only the alert still firing
            await rx.wait_for(lambda got: len(got) == 4)
        sent = [r.verify(hook["secret"]) for r in rx.got]
        reminders = sorted((p["data"]["id"], p["data"]["repeat"]) for p in sent[:2])
        # Numbered past what an earlier process can have sent since the event: new webhook-ids.
        assert reminders == [("evt-00000001", 1), ("evt-00000002", 3)]
        assert (sent[2]["type"], sent[2]["data"]["id"]) == ("alert.resolved", "evt-00000003")
        assert (sent[3]["data"]["id"], sent[3]["data"]["repeat"]) == ("evt-00000002", 4)
        assert len({r.webhook_id for r in rx.got}) == 4


async def test_across_a_restart_each_alert_is_delivered_once(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        async with raw_ws(srv, token) as ws:
            await greet(ws)
            await send_alert(ws, firing(1))
        await srv.restart()
        for _ in range(2):  # the first hello resyncs, the second changes nothing
            async with raw_ws(srv, token) as ws:
                await greet(ws, [firing(1)])
        async with raw_ws(srv, token) as ws:
            await greet(ws, [firing(1)])
            await send_alert(ws, event(2, status="resolved", fingerprint=FP_A))
        sent = [r.verify(hook["secret"]) for r in rx.got]
        assert [(p["type"], p["data"]["id"]) for p in sent] == [
            ("alert.firing", "evt-00000001"),
            ("alert.resolved", "evt-00000002"),
        ]
        assert len({r.webhook_id for r in rx.got}) == 2
