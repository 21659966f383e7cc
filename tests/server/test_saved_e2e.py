"""Saved monitoring end to end through the real server (both databases): the agent stream
client sends metrics and alerts, webhooks are delivered to a loopback receiver, and the
database is scanned afterwards. Without opt-in not one monitored row exists anywhere; with it
rows exist for the chosen nodes only; history reads them back; opted-in deliveries survive a
restart through the durable queue."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from agent.outbox import Outbox
from server.clock import FakeClock
from server.keys import SAVED
from server.storage.monitoring import Point
from server.storage.schema import MONITORED_TABLES, metric_points
from server.storage.store import Store
from tests.server.streamkit import (
    ServerUnderTest,
    agent_client,
    agent_event,
    agent_metrics,
    event,
    eventually,
    make_account,
    make_node,
    metrics_frame,
    running,
)
from tests.server.webhooks.hookkit import call, create_hook, hook_server, sending
from tests.server.webhooks.receiver import Receiver, Reply


async def monitored_rows(store: Store) -> dict[str, int]:
    """Rows per monitored table (a full count: these tables are small in tests)."""
    counts: dict[str, int] = {}
    async with store.engine.connect() as conn:
        for table in MONITORED_TABLES:
            counts[table.name] = int(
                await conn.scalar(select(func.count()).select_from(table)) or 0
            )
    return counts


async def nodes_with_points(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(metric_points.c.node_id).distinct())
        return {row.node_id for row in rows}


async def stream_some(srv: ServerUnderTest[Any], token: str, *, events: int = 2) -> None:
    """Metrics frames and alert events through the real stream client, all acked."""
    outbox = Outbox()
    client = agent_client(srv.url, token, outbox=outbox)
    async with running(client):
        await eventually(lambda: client.connects >= 1)
        for n in range(1, events + 1):
            client.add_event(agent_event(event(n, fingerprint=f"{n:016x}")))
        await eventually(lambda: len(outbox) == 0, timeout=10)
        for seq in range(1, 4):
            client.send_metrics(agent_metrics(metrics_frame(seq)))  # latest wins: let each go out
            await asyncio.sleep(0.1)


async def test_without_opt_in_no_monitored_row_exists(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        rx.script.append(Reply(503))  # a retried delivery: attempts that could be saved
        await stream_some(srv, token)
        assert srv.app is not None
        await srv.app[SAVED].flush(final=True)
        assert len(rx.got) >= 2
    assert await monitored_rows(store) == {t.name: 0 for t in MONITORED_TABLES}


async def test_opt_in_saves_only_the_chosen_nodes(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        chosen, chosen_token = await make_node(store, account, name="chosen")
        _, other_token = await make_node(store, account, name="other")
        await create_hook(srv, key, url=rx.url())
        await call(
            srv,
            "PATCH",
            "/api/v1/account",
            key,
            {"saved_monitoring": True, "saved_nodes": [chosen.id]},
            expect=200,
        )
        await stream_some(srv, chosen_token)
        await stream_some(srv, other_token)
        assert srv.app is not None
        await srv.app[SAVED].flush(final=True)
        counts = await monitored_rows(store)
        assert counts["metric_points"] > 0
        assert counts["metric_rollups"] > 0
        assert counts["alert_history"] == 2  # the chosen node's two events, not the other's
        assert counts["delivery_attempts"] >= 2
        assert await nodes_with_points(store) == {chosen.id}

        _, history = await call(
            srv,
            "GET",
            f"/api/v1/nodes/{chosen.id}/history?metric=cpu_usage_percent"
            f"&from={clock.time() - 60}&to={clock.time() + 60}&step=1",
            key,
            expect=200,
        )
        assert history["source"] == "raw"
        [series] = history["series"]
        assert sum(1 for p in series["points"] if p[1] is not None) >= 1
        assert series["points"][0][1] == 12.5  # what metrics_frame sends


async def test_history_is_409_without_opt_in_and_404_across_accounts(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv:
        account, key = await make_account(store, plan="business")
        node, _ = await make_node(store, account)
        _, other_key = await make_account(store, plan="business")
        path = f"/api/v1/nodes/{node.id}/history?metric=cpu_usage_percent"
        status, body = await call(srv, "GET", path, key)
        assert (status, body["error"]["code"]) == (409, "saved_monitoring_off")
        status, body = await call(srv, "GET", "/api/v1/alerts/history", key)
        assert status == 409
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        await call(srv, "GET", path, key, expect=200)
        await call(srv, "GET", path, other_key, expect=404)
        for bad in ("&step=0", "&from=5&to=1", "&from=x", "&what=1", "&step=0.001"):
            status, body = await call(srv, "GET", path + bad, key)
            assert status == 422, (bad, body)
        status, body = await call(srv, "GET", f"/api/v1/nodes/{node.id}/history", key)
        assert (status, body["error"]["field"]) == (422, "metric")


async def test_opt_out_stops_writing_at_once_and_deletes(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        account, key = await make_account(store, plan="business")
        _, token = await make_node(store, account)
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        await stream_some(srv, token, events=1)
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": False}, expect=200)
        assert srv.app is not None
        await srv.app[SAVED].flush(final=True)  # what was buffered is not written after all
        assert await monitored_rows(store) == {t.name: 0 for t in MONITORED_TABLES}
        await stream_some(srv, token, events=1)
        await srv.app[SAVED].flush(final=True)
        assert await monitored_rows(store) == {t.name: 0 for t in MONITORED_TABLES}


async def test_an_opted_in_delivery_survives_a_restart_through_the_queue(
    store: Store, clock: FakeClock
) -> None:
    """Opted in: the event is acked once durably queued, while the receiver still fails; the
    server restarts; the new process resumes the queued delivery."""
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        rx.default = Reply(503)
        async with sending(srv, token) as send:
            await send(event(1))  # acked although nothing was delivered yet
        assert (await monitored_rows(store))["delivery_queue"] == 1
        await srv.stop()
        assert (await monitored_rows(store))["delivery_queue"] == 1  # kept for the next process
        rx.default = Reply(204)
        await srv.start()
        await rx.wait_for(lambda got: any(r.status == 204 for r in got))
        delivered = [r for r in rx.got if r.status == 204]
        assert delivered[0].verify(hook["secret"])["data"]["id"] == "evt-00000001"
        assert {r.webhook_id for r in rx.got} == {delivered[0].webhook_id}
        async with asyncio.timeout(5):
            while (await monitored_rows(store))["delivery_queue"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_a_plan_change_applies_the_new_retention_at_once(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv:
        account, key = await make_account(store, plan="business")  # 90 days
        node, _ = await make_node(store, account)
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        now = clock.time()
        points = [
            Point(account.id, node.id, "load1", "", now - days * 86400, 1.0)
            for days in (1, 20, 40, 80)
        ]
        assert await store.write_points(points, {account.id: 90}) == 4
        await call(srv, "PATCH", "/api/v1/account", key, {"plan": "pro"}, expect=200)  # 30 days
        async with store.engine.connect() as conn:
            kept = await conn.execute(select(metric_points.c.ts, metric_points.c.retention_days))
            rows = sorted((round((now - r.ts) / 86400), r.retention_days) for r in kept)
        assert rows == [(1, 30), (20, 30)]
