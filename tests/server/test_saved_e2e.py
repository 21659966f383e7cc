"""Saved monitoring end to end through the real server (both databases): the agent stream
client sends metrics and alerts, webhooks are delivered to a loopback receiver, and the
database is scanned afterwards. Without opt-in not one monitored row exists anywhere; with it
rows exist for the chosen nodes only; history reads them back; opted-in deliveries survive a
restart through the durable queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from agent.outbox import Outbox
from server.clock import FakeClock
from server.keys import SAVED
from server.storage.monitoring import AlertRow, Point
from server.storage.schema import (
    MONITORED_TABLES,
    alert_history,
    deletion_requests,
    held_data,
    metric_points,
    metric_rollups,
    nodes,
)
from server.storage.store import Store
from tests.server.accounts_kit import all_rows
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


async def monitored_data_anywhere(
    store: Store, texts: Sequence[str], numbers: Sequence[float]
) -> list[tuple[str, Any]]:
    """(table, value) for every value of every row of every table of the schema that holds
    one of ``texts`` or equals one of ``numbers``."""
    found = []
    for table, rows in (await all_rows(store)).items():
        for row in rows:
            for value in row:
                number = isinstance(value, float) and value in numbers
                if number or any(t in str(value) for t in texts):
                    found.append((table, value))
    return found


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


async def stream_cpu(srv: ServerUnderTest[Any], token: str, cpu: float) -> None:
    """Metrics frames with ``cpu`` as the CPU value, until a raw point of it is saved (the
    server's background job flushes every second)."""
    client = agent_client(srv.url, token)
    async with running(client), asyncio.timeout(10):
        await eventually(lambda: client.connects >= 1)
        seq = 0
        while True:
            seq += 1
            client.send_metrics(agent_metrics(metrics_frame(seq, cpu=cpu)))
            await asyncio.sleep(0.2)
            async with srv.store.engine.connect() as conn:
                saved = await conn.scalar(
                    select(func.count())
                    .select_from(metric_points)
                    .where(metric_points.c.metric == "cpu_usage_percent")
                    .where(metric_points.c.value == cpu)
                )
            if saved:
                return


async def cpu_rollups(store: Store) -> list[tuple[int, float, float, float]]:
    """(resolution, bucket, min, max) of every stored CPU rollup."""
    r = metric_rollups
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(r.c.resolution, r.c.bucket, r.c.min, r.c.max).where(
                r.c.metric == "cpu_usage_percent"
            )
        )
        return sorted((row.resolution, row.bucket, row.min, row.max) for row in rows)


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
    # Nor anywhere else: the metric names and values, the events' ids, fingerprints, rule and
    # summary, and the deliveries' message ids are in no row of any table.
    texts = ["cpu_usage_percent", "vpn_active_peers", "cpu_high", "cpu is 97"]
    texts += [f"evt-{n:08d}" for n in (1, 2)] + [f"{n:016x}" for n in (1, 2)]
    texts += sorted({r.webhook_id for r in rx.got})
    assert await monitored_data_anywhere(store, texts, [12.5, 97.0]) == []


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


async def test_opting_out_forgets_the_open_rollup_buckets(store: Store, clock: FakeClock) -> None:
    """Opted out with deletion and back in within the same minute and hour: the minute and
    hour buckets still open at the opt-out hold deleted data, and must never be written."""
    async with hook_server(store, clock) as srv:
        account, key = await make_account(store, plan="business")
        _, token = await make_node(store, account)
        start = clock.time()
        assert start % 3600 == 0  # the FakeClock starts on a whole hour
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        await stream_cpu(srv, token, 11.0)
        clock.advance(61)  # the first minute closes; its hour stays open
        await stream_cpu(srv, token, 22.0)  # into the second minute, still open
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": False}, expect=200)
        assert await monitored_rows(store) == {t.name: 0 for t in MONITORED_TABLES}
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        await stream_cpu(srv, token, 33.0)
        clock.advance(3600)  # every bucket of that hour closes
        assert srv.app is not None
        await srv.app[SAVED].flush()
        await srv.app[SAVED].flush(final=True)
        # Only what came after the opt-in: not 11 (the closed minute's, folded into the
        # hour) nor 22 (the minute open at the opt-out).
        assert await cpu_rollups(store) == [(60, start + 60, 33.0, 33.0), (3600, start, 33.0, 33.0)]


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


DAY = 86_400


async def rows_of(store: Store, account_id: str) -> tuple[int, int]:
    """(metric points, alert history rows) of the account's nodes."""
    mine = select(nodes.c.id).where(nodes.c.account_id == account_id)
    async with store.engine.connect() as conn:
        return (
            int(
                await conn.scalar(select(func.count()).where(metric_points.c.node_id.in_(mine)))
                or 0
            ),
            int(
                await conn.scalar(select(func.count()).where(alert_history.c.node_id.in_(mine)))
                or 0
            ),
        )


async def job_left(store: Store, account_id: str) -> tuple[tuple[int, int], list[str], int]:
    """The account's (points, alerts), every deletion request's state, held data rows."""
    async with store.engine.connect() as conn:
        states = (await conn.execute(select(deletion_requests.c.state))).scalars().all()
        held = int(await conn.scalar(select(func.count()).select_from(held_data)) or 0)
    return await rows_of(store, account_id), list(states), held


async def test_the_background_job_purges_by_plan_and_ends_expired_holds(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's own job (SavedMonitoring.run), driven by the FakeClock: 32 days on, the
    pro account's saved rows (30 days) are gone and the business account's (90) stay; an
    account downgraded without its reclass is healed; a deleted account's hold that ended is
    over, its held data gone and its deletion completed."""
    async with hook_server(store, clock) as srv:
        t0 = clock.time()
        saved: dict[str, str] = {}
        for plan in ("pro", "business"):
            account, key = await make_account(store, plan=plan)
            node, _ = await make_node(store, account)
            await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
            days = 30 if plan == "pro" else 90
            points = [Point(account.id, node.id, "load1", "", t0 + i, 1.0) for i in range(3)]
            assert await store.write_points(points, {account.id: days}) == 3
            alert = AlertRow.of(account.id, node.id, event(1), t0 + days * DAY)
            assert await store.write_alerts([alert]) == 1
            saved[plan] = account.id
        # Downgraded with no reclass after it (a crash): the job heals it to 30 days.
        downgraded, key = await make_account(store, plan="business")
        node, _ = await make_node(store, downgraded)
        await call(srv, "PATCH", "/api/v1/account", key, {"saved_monitoring": True}, expect=200)
        points = [Point(downgraded.id, node.id, "load1", "", t0 - 40 * DAY, 1.0)]
        assert await store.write_points(points, {downgraded.id: 90}) == 1
        await store.update_account(downgraded.id, plan="pro")
        held, held_key = await make_account(store, plan="pro")
        await store.add_hold(
            held.id, kind="dispute", reason="test", categories=["registration"],
            ends_at=t0 + DAY, now=t0,
        )  # fmt: skip
        _, body = await call(srv, "DELETE", "/api/v1/account", held_key, expect=202)
        assert body["deletion"]["state"] == "held"
        (_, states, held_rows) = await job_left(store, saved["pro"])
        assert (states, held_rows > 0) == (["held"], True)

        clock.advance(32 * DAY)  # also past PURGE_SECONDS of the job's monotonic clock
        async with asyncio.timeout(10):  # the job wakes every FLUSH_SECONDS (real time)
            while await job_left(store, saved["pro"]) != ((0, 0), ["completed"], 0):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            while await rows_of(store, downgraded.id) != (0, 0):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # 72 days old: kept by 90 days, not by 30
        assert await rows_of(store, saved["business"]) == (3, 1)
    assert caplog.text.count("re-classing") == 1  # the downgraded account only, once
