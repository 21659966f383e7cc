"""GET /api/v1/fleet and the fleet's Server-Sent Events stream, against the real app (a fake
clock, live state fed in-process, a real SQLite store)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.protocol import Metrics, WireSample
from server import fleet
from server.api import fleet as fleet_api
from server.clock import FakeClock
from server.keys import DISPATCH
from server.live import LiveState
from server.storage.records import NodeRef
from server.storage.store import Store
from tests.dashboard.kit import alert_event, connect, feed
from tests.server.accounts_kit import login, register
from tests.server.streamkit import ServerUnderTest, make_account, make_node


@pytest.fixture
async def fake_srv(store: Store) -> AsyncIterator[ServerUnderTest[FakeClock]]:
    server = ServerUnderTest(store, FakeClock(), start_grace_seconds=3600)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ticks every 50 ms and node lists re-read every tick (the real cadence is 1 s / 10 s)."""
    monkeypatch.setattr(fleet, "TICK_SECONDS", 0.05)
    monkeypatch.setattr(fleet, "REFRESH_SECONDS", 0.0)


class Events:
    """Server-Sent Events read off a response, one (event, data) at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments = 0

    async def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:  # noqa: ASYNC109
        event, data = "message", list[str]()
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\n")
                if line == "":
                    if data:
                        return event, json.loads("".join(data))
                elif line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    data.append(line[len("data: ") :])

    async def none_within(self, seconds: float) -> None:
        try:
            event = await self.next(timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {event}")


def exact_frame(seq: int, cpu: float) -> Metrics:
    return Metrics(
        seq=seq,
        ts=1.7e9 + seq,
        samples=[
            WireSample(m="cpu_usage_percent", v=cpu),
            WireSample(m="memory_available_percent", v=30.0),
            WireSample(m="conntrack_used_percent", v=12.34),
            WireSample(m="net_rx_bytes_per_second", l={"interface": "eth0"}, v=1000.4),
            WireSample(m="net_tx_bytes_per_second", l={"interface": "eth0"}, v=2000.0),
            WireSample(m="net_rx_bytes_per_second", l={"interface": "wg0"}, v=10.0),
            WireSample(m="net_tx_bytes_per_second", l={"interface": "wg0"}, v=5.0),
        ],
    )


def put(srv: ServerUnderTest[FakeClock], ref: NodeRef, seq: int, cpu: float) -> None:
    """One frame from the node, a few milliseconds after the previous one."""
    node = srv.live.get(ref.id)
    assert node is not None
    srv.clock.advance(0.003)
    srv.live.touch(node)
    srv.live.metrics(node, exact_frame(seq, cpu))


async def nodes(store: Store, plan: str, *names: str) -> tuple[str, str, dict[str, NodeRef]]:
    account, key = await make_account(store, plan=plan)
    refs: dict[str, NodeRef] = {}
    for name in names:
        node, _ = await make_node(store, account, name)
        ref = await store.node_ref(account.id, node.id)
        assert ref is not None
        refs[name] = ref
    return account.id, key, refs


async def test_fleet_lists_every_node_with_status_gauges_and_alerts(
    fake_srv: ServerUnderTest[FakeClock], store: Store
) -> None:
    srv = fake_srv
    _, key, refs = await nodes(
        store, "business", "never", "up", "degraded", "silent", "node-down", "info-only"
    )
    _, _, theirs = await nodes(store, "pro", "not-mine")
    rng = random.Random(3)
    for name in ("up", "degraded", "silent", "node-down", "info-only"):
        connect(srv.live, refs[name])
        feed(srv.live, refs[name], 1, rng)
    connect(srv.live, theirs["not-mine"])
    put(srv, refs["up"], 2, cpu=42.04)
    assert srv.app is not None
    dispatch = srv.app[DISPATCH]
    await dispatch.submit(refs["degraded"], alert_event(1, severity="warning"))
    await dispatch.submit(refs["info-only"], alert_event(2, severity="info"))
    await dispatch.submit(refs["node-down"], alert_event(3, rule="node_down", severity="critical"))
    srv.live.disconnected(refs["silent"].id)

    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.get("/api/v1/fleet", headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        assert response.status == 200
        body = await response.json()
    by_name = {n["name"]: n for n in body["nodes"]}
    assert set(by_name) == set(refs)  # another account's node is not there
    assert {name: n["status"] for name, n in by_name.items()} == {
        "never": "down",
        "up": "up",
        "degraded": "degraded",
        "silent": "down",
        "node-down": "down",
        "info-only": "up",
    }
    up = by_name["up"]
    assert (up["cpu"], up["memory"], up["conntrack"]) == (42.0, 70.0, 12.3)
    assert (up["rx"], up["tx"]) == (1000, 2000)  # the busiest interface, eth0
    assert up["connected"]
    assert up["enrolled"]
    assert up["last_seen"] == round(srv.clock.time())
    assert up["alerts"] == 0
    assert up["severity"] is None
    assert by_name["never"]["enrolled"] is False
    assert by_name["never"]["last_seen"] is None
    assert by_name["never"]["cpu"] is None
    assert (by_name["degraded"]["alerts"], by_name["degraded"]["severity"]) == (1, "warning")
    assert (by_name["info-only"]["alerts"], by_name["info-only"]["severity"]) == (1, "info")
    assert by_name["node-down"]["connected"]
    assert by_name["node-down"]["severity"] == "critical"
    assert body["counts"] == {"up": 2, "degraded": 1, "down": 3, "alerts": 3}


async def test_fleet_needs_credentials(fake_srv: ServerUnderTest[FakeClock]) -> None:
    async with aiohttp.ClientSession(base_url=fake_srv.url) as http:
        for path in ("/api/v1/fleet", "/api/v1/fleet/stream"):
            async with http.get(path) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"


async def test_the_stream_sends_a_snapshot_then_only_what_changed(
    fake_srv: ServerUnderTest[FakeClock], store: Store, fast: None
) -> None:
    srv = fake_srv
    _, key, refs = await nodes(store, "business", "a", "b")
    connect(srv.live, refs["a"])
    connect(srv.live, refs["b"])
    put(srv, refs["a"], 1, cpu=10.0)
    put(srv, refs["b"], 1, cpu=20.0)
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.get("/api/v1/fleet/stream", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-store"
        events = Events(response)
        kind, snapshot = await events.next()
        assert kind == "snapshot"
        assert {n["name"]: n["cpu"] for n in snapshot["nodes"]} == {"a": 10.0, "b": 20.0}
        assert snapshot["counts"]["up"] == 2

        put(srv, refs["a"], 2, cpu=55.0)
        kind, update = await events.next()
        assert kind == "update"
        assert update["changed"] == [{"id": refs["a"].id, "cpu": 55.0}]
        assert update["removed"] == []
        await events.none_within(0.5)  # ten ticks, nothing changed: nothing sent

        # A node added through the API turns up whole; a deleted one is removed.
        async with http.post("/api/v1/nodes", json={"name": "c"}, headers=headers) as r:
            created = (await r.json())["node"]
        kind, update = await events.next()
        (added,) = update["changed"]
        assert (added["id"], added["name"], added["status"]) == (created["id"], "c", "down")
        assert set(added) >= {"cpu", "memory", "conntrack", "rx", "tx", "alerts", "last_seen"}
        async with http.delete(f"/api/v1/nodes/{refs['b'].id}", headers=headers) as r:
            assert r.status == 204
        kind, update = await events.next()
        assert update["removed"] == [refs["b"].id]
        assert update["changed"] == []
    await asyncio.sleep(0.2)  # the next tick drops the stream whose client left
    assert srv.app is not None
    assert fleet.hub_of(srv.app).feeds == {}  # nothing is computed for nobody


async def test_updates_come_at_most_once_a_second(
    fake_srv: ServerUnderTest[FakeClock], store: Store
) -> None:
    srv = fake_srv
    _, key, refs = await nodes(store, "business", "busy")
    connect(srv.live, refs["busy"])
    put(srv, refs["busy"], 0, cpu=1.0)
    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.get("/api/v1/fleet/stream", headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        events = Events(r)
        assert (await events.next())[0] == "snapshot"
        loop = asyncio.get_running_loop()
        start = loop.time()
        updates = 0

        async def churn() -> None:
            for seq in range(1, 1000):
                put(srv, refs["busy"], seq, cpu=float(seq % 100))
                await asyncio.sleep(0.02)

        task = asyncio.create_task(churn())
        try:
            while loop.time() - start < 2.2:
                try:
                    kind, _ = await events.next(timeout=max(0.01, 2.2 - (loop.time() - start)))
                except TimeoutError:
                    break
                updates += kind == "update"
        finally:
            task.cancel()
    assert 1 <= updates <= 3, updates  # ~110 changes in 2.2 s, at most one update a second


async def test_a_slow_consumer_is_closed_not_buffered(
    fake_srv: ServerUnderTest[FakeClock], store: Store
) -> None:
    assert fake_srv.app is not None
    account_id, _, _ = await nodes(store, "pro", "x")
    hub = fleet.hub_of(fake_srv.app)
    stream, first = await hub.subscribe(account_id)
    assert first.startswith(b"event: snapshot\n")
    for _ in range(fleet.QUEUE_LIMIT):
        assert stream.push(b"event: update\ndata: {}\n\n")
    assert not stream.push(b"event: update\ndata: {}\n\n")
    assert stream.closed == "slow consumer"
    assert stream.queue.qsize() == fleet.QUEUE_LIMIT  # bounded: nothing more was kept
    hub.unsubscribe(stream)
    assert hub.feeds == {}


async def test_a_logout_ends_the_stream(
    fake_srv: ServerUnderTest[FakeClock], fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_api, "RECHECK_SECONDS", 0.1)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=fake_srv.url, cookie_jar=jar) as http:
        who = await register(http, plan="pro")
        session = await login(http, who.email)
        async with http.get("/api/v1/fleet/stream") as response:  # the session cookie
            assert response.status == 200
            events = Events(response)
            assert (await events.next())[0] == "snapshot"
            headers = {"X-CSRF-Token": session["csrf_token"]}
            async with http.delete("/api/v1/session", headers=headers) as out:
                assert out.status == 204
            kind, data = await events.next()
            assert (kind, data) == ("end", {"reason": "credentials no longer valid"})
            with pytest.raises(EOFError):
                await events.next()


async def test_streams_per_account_are_capped_and_shutdown_ends_them(
    fake_srv: ServerUnderTest[FakeClock], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet, "MAX_STREAMS_PER_ACCOUNT", 1)
    assert fake_srv.app is not None
    _, key, _ = await nodes(store, "pro", "x")
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession(base_url=fake_srv.url) as http,
        http.get("/api/v1/fleet/stream", headers=headers) as first,
    ):
        events = Events(first)
        assert (await events.next())[0] == "snapshot"
        async with http.get("/api/v1/fleet/stream", headers=headers) as second:
            assert second.status == 429
            assert second.headers["Retry-After"] == "30"
        await fleet.close_streams(fake_srv.app)
        kind, data = await events.next()
        assert (kind, data) == ("end", {"reason": "server shutting down"})
        with pytest.raises(EOFError):
            await events.next()


def test_node_state_of_a_node_without_live_state() -> None:
    state = fleet.node_state(LiveState(900, FakeClock()), "f" * 32, "n", False)
    assert state["status"] == "down"
    assert state["connected"] is False
    changed, removed = fleet.diff({"x": {"id": "x", "cpu": 1.0}}, {"y": state})
    assert changed == [state]
    assert removed == ["x"]
