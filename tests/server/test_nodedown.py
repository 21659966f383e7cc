"""Node-down detection on the real app with a FakeClock: ``check`` is called directly, no
sleeping. Agents are the real StreamClient or bare websockets; store on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from agent.protocol import AlertEvent, Ping, dumps
from server import nodedown
from server.clock import FakeClock
from server.keys import STATS
from server.storage.store import Store
from tests.server.streamkit import (
    ServerUnderTest,
    agent_client,
    eventually,
    hello,
    make_account,
    make_node,
    metrics_frame,
    raw_ws,
    running,
)

Srv = ServerUnderTest[FakeClock]


@pytest.fixture
async def srv(store: Store, clock: FakeClock) -> AsyncIterator[Srv]:
    async with ServerUnderTest(store, clock, start_grace_seconds=0) as server:
        yield server


async def node_token(store: Store, name: str = "vpn-1") -> tuple[str, str]:
    account, _ = await make_account(store, plan="pro")  # 5 s minimum interval
    node, token = await make_node(store, account, name)
    return node.id, token


def down_alerts(srv: Srv, node_id: str) -> list[AlertEvent]:
    return [e for e in srv.live.current_alerts(node_id) if e.rule == "node_down"]


def down_events(srv: Srv, node_id: str) -> list[AlertEvent]:
    return [e for e in srv.live.recent_events(node_id) if e.rule == "node_down"]


def interval_of(srv: Srv, node_id: str) -> float | None:
    node = srv.live.get(node_id)
    return node.interval if node is not None else None


async def check(srv: Srv) -> None:
    await srv.detector.check(srv.clock.monotonic())


async def test_fires_after_the_limit_and_resolves_when_the_node_sends_again(
    srv: Srv, store: Store, clock: FakeClock
) -> None:
    node_id, token = await node_token(store, "edge-fra-1")
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello(interval=5)))
        await ws.send_str(dumps(metrics_frame(1)))
        await eventually(lambda: bool(srv.live.latest(node_id)))
        clock.advance(14.9)
        await check(srv)
        assert down_alerts(srv, node_id) == []
        clock.advance(0.2)  # 15.1 s > 3 × 5 s
        await check(srv)
        (firing,) = down_alerts(srv, node_id)
        assert srv.app is not None
        assert "oneconnect_server_nodes_down 1.0" in srv.app[STATS].render()
        assert firing.status == "firing"
        assert firing.severity == "critical"
        assert firing.metric == "node_silent_seconds"
        assert firing.threshold == 15.0
        assert firing.value == pytest.approx(15.1)
        expected = hashlib.sha256(f"node_down{node_id}".encode()).hexdigest()[:16]
        assert firing.fingerprint == expected
        assert firing.summary == "Node edge-fra-1 has sent nothing for 15 s"
        assert firing.started_at == pytest.approx(clock.time() - 15.1)
        await check(srv)  # still silent: no second event
        assert len(down_events(srv, node_id)) == 1

        await ws.send_str(dumps(Ping(ts=1.0)))
        await ws.receive()  # the ping reply: the frame was handled
        await check(srv)
    assert down_alerts(srv, node_id) == []
    _first, resolved = down_events(srv, node_id)
    assert resolved.status == "resolved"
    assert resolved.fingerprint == firing.fingerprint
    assert resolved.id != firing.id
    assert resolved.ended_at == clock.time()

    clock.advance(16)  # the socket closed cleanly: silence is what counts
    await check(srv)
    (again,) = down_alerts(srv, node_id)
    assert again.id not in {firing.id, resolved.id}


async def test_the_limit_follows_the_effective_interval(store: Store, clock: FakeClock) -> None:
    async with ServerUnderTest(store, clock, node_down_after=4) as srv:
        node_id, token = await node_token(store)
        client = agent_client(srv.url, token, hello_builder=lambda: hello(interval=1))
        async with running(client):  # asks for 1 s; the pro plan's minimum is 5 s
            await eventually(lambda: interval_of(srv, node_id) == 5.0)
        clock.advance(19.5)
        await check(srv)
        assert down_alerts(srv, node_id) == []
        clock.advance(1)
        await check(srv)
        (firing,) = down_alerts(srv, node_id)
        assert firing.threshold == 20.0


async def test_no_storm_after_a_restart_within_grace(store: Store, clock: FakeClock) -> None:
    nodes = [await node_token(store, f"vpn-{i}") for i in range(3)]
    for node_id, _ in nodes:
        await store.mark_enrolled(node_id, clock.time())
    async with ServerUnderTest(store, clock, start_grace_seconds=60) as srv:
        assert await srv.detector.load_enrolled() == 3
        clock.advance(30)
        await check(srv)
        (back_id, back_token), *_ = nodes
        async with raw_ws(srv, back_token) as ws:  # one node reconnects within the grace
            await ws.send_str(dumps(hello(interval=5)))
            clock.advance(29)
            for _ in range(3):
                await ws.send_str(dumps(metrics_frame(1)))
                await ws.send_str(dumps(Ping(ts=1.0)))
                await ws.receive()
            await check(srv)
            assert all(not down_alerts(srv, node_id) for node_id, _ in nodes)  # 59 s: none
            clock.advance(2)  # past the grace: the two that stayed away are down
            await check(srv)
            assert not down_alerts(srv, back_id)
            assert all(len(down_alerts(srv, node_id)) == 1 for node_id, _ in nodes[1:])


async def test_an_enrolled_node_that_never_comes_back_fires_after_grace(
    store: Store, clock: FakeClock
) -> None:
    node_id, _ = await node_token(store)
    await store.mark_enrolled(node_id, clock.time())
    async with ServerUnderTest(store, clock, start_grace_seconds=10) as srv:
        await srv.detector.load_enrolled()
        clock.advance(14.9)  # past the grace, but the default 5 s × 3 has not passed yet
        await check(srv)
        assert not down_alerts(srv, node_id)
        clock.advance(0.2)
        await check(srv)
        (firing,) = down_alerts(srv, node_id)
        assert firing.threshold == 15.0
        assert firing.value == pytest.approx(15.1)


async def test_a_node_never_enrolled_is_not_watched(store: Store, clock: FakeClock) -> None:
    node_id, _ = await node_token(store)
    async with ServerUnderTest(store, clock) as srv:
        await srv.detector.load_enrolled()
        clock.advance(3600)
        await check(srv)
        assert node_id not in srv.live


async def test_a_deleted_node_is_forgotten_on_refresh(store: Store, clock: FakeClock) -> None:
    account, _ = await make_account(store)
    node, _ = await make_node(store, account)
    await store.mark_enrolled(node.id, clock.time())
    async with ServerUnderTest(store, clock, start_grace_seconds=30) as srv:
        await srv.detector.load_enrolled()
        assert node.id in srv.live
        await store.delete_node(account.id, node.id)
        clock.advance(1)
        await srv.detector.load_enrolled()
        clock.advance(60)
        await check(srv)
        assert node.id not in srv.live


async def test_the_background_task_stops_with_the_app(store: Store, clock: FakeClock) -> None:
    srv = ServerUnderTest(store, clock)
    await srv.start()
    await eventually(lambda: srv.detector.loaded)
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "oneconnect-nodedown"]
    assert len(tasks) == 1
    await srv.stop()
    assert tasks[0].done()


def test_fingerprint_is_stable() -> None:
    assert nodedown.fingerprint("abc") == hashlib.sha256(b"node_downabc").hexdigest()[:16]
