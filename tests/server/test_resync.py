"""Hello resync through the real server app on 127.0.0.1 (bare websockets speaking the protocol,
a FakeClock, the store on SQLite and PostgreSQL): the firing alerts a hello names become
current alerts of that node — in ``GET /alerts``, the node's live view and the fleet — only
when live state does not know them yet, and only for that node and account. Hostile entries
are refused (1008) or ignored as ``server.ingest`` documents."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.protocol import MAX_HELLO_FIRING, AlertEvent, dumps
from server import nodedown
from server.clock import FakeClock
from server.ingest import RESYNC_SKEW
from server.keys import DISPATCH, STATS
from server.live import LiveState
from server.storage.records import NodeRef
from server.storage.store import Store
from tests.server.streamkit import (
    ServerUnderTest,
    closed_with,
    event,
    greet,
    hello,
    make_account,
    make_node,
    raw_ws,
    send_alert,
)
from tests.server.webhooks.hookkit import call

Srv = ServerUnderTest[FakeClock]
FP_A = "00000000000000aa"
FP_B = "00000000000000bb"


@pytest.fixture
async def srv(store: Store, clock: FakeClock) -> AsyncIterator[Srv]:
    async with ServerUnderTest(store, clock) as server:
        yield server


def firing(n: int, fingerprint: str = FP_A, **fields: Any) -> AlertEvent:
    """A firing event (``event(n)`` of the stream kit) with some fields changed."""
    return AlertEvent.model_validate({**event(n, fingerprint=fingerprint).model_dump(), **fields})


async def account_node(store: Store, name: str = "vpn-1") -> tuple[str, str, str]:
    """(api key, node id, node token) of a new pro account's node."""
    account, key = await make_account(store)
    node, token = await make_node(store, account, name)
    return key, node.id, token


async def firing_ids(srv: Srv, key: str) -> list[str]:
    _, body = await call(srv, "GET", "/api/v1/alerts?status=firing", key, expect=200)
    return [a["id"] for a in body["alerts"]]


def stat(srv: Srv, name: str) -> float:
    assert srv.app is not None
    return srv.app[STATS].value(name)


async def test_named_alerts_show_in_alerts_live_view_and_fleet(srv: Srv, store: Store) -> None:
    key, node_id, token = await account_node(store)
    async with raw_ws(srv, token) as ws:
        await greet(ws, [firing(1), firing(2, FP_B, severity="critical")])
        assert sorted(await firing_ids(srv, key)) == ["evt-00000001", "evt-00000002"]
        _, live = await call(srv, "GET", f"/api/v1/nodes/{node_id}/live", key, expect=200)
        assert [(a["id"], a["status"]) for a in live["alerts"]] == [
            ("evt-00000002", "firing"),
            ("evt-00000001", "firing"),
        ]
        _, fleet = await call(srv, "GET", "/api/v1/fleet", key, expect=200)
        [entry] = fleet["nodes"]
        assert (entry["alerts"], entry["severity"], entry["status"]) == (2, "critical", "degraded")
    assert srv.live.recent_events(node_id) == []  # nothing happened now: no recent event
    assert stat(srv, "alert_events_resynced") == 2
    assert srv.app is not None
    assert srv.app[STATS].value("alert_events", status="firing") == 0  # none taken over


async def test_a_resend_of_a_resynced_id_is_a_duplicate(srv: Srv, store: Store) -> None:
    _key, node_id, token = await account_node(store)
    async with raw_ws(srv, token) as ws:
        await greet(ws, [firing(1)])
        await send_alert(ws, firing(1))
    assert stat(srv, "alert_events_duplicate") == 1
    assert [e.id for e in srv.live.current_alerts(node_id)] == ["evt-00000001"]


async def test_the_resolved_event_clears_a_resynced_alert(srv: Srv, store: Store) -> None:
    key, _node_id, token = await account_node(store)
    async with raw_ws(srv, token) as ws:
        await greet(ws, [firing(1), firing(2, FP_B)])
        await send_alert(ws, event(3, status="resolved", fingerprint=FP_A))
        assert await firing_ids(srv, key) == ["evt-00000002"]
        _, resolved = await call(srv, "GET", "/api/v1/alerts?status=resolved", key, expect=200)
        assert [a["id"] for a in resolved["alerts"]] == ["evt-00000003"]


async def test_a_reconnect_naming_known_alerts_changes_nothing(srv: Srv, store: Store) -> None:
    _key, node_id, token = await account_node(store)
    async with raw_ws(srv, token) as ws:
        await greet(ws)
        await send_alert(ws, firing(1))  # taken over the ordinary way
    held = srv.live.current_alerts(node_id)
    for _ in range(2):  # plain reconnects: the same alert, then a newer id of the same alert
        async with raw_ws(srv, token) as ws:
            await greet(ws, [firing(1), firing(9)])
    assert srv.live.current_alerts(node_id) == held
    assert [e.id for e in srv.live.recent_events(node_id)] == ["evt-00000001"]
    assert stat(srv, "alert_events_resynced") == 0


async def test_after_a_restart_the_first_hello_resyncs_and_the_next_does_not(
    srv: Srv, store: Store
) -> None:
    key, _node_id, token = await account_node(store)
    async with raw_ws(srv, token) as ws:
        await greet(ws)
        await send_alert(ws, firing(1))
    await srv.restart()  # live state starts empty; the agent will not resend evt-00000001
    assert await firing_ids(srv, key) == []
    for _ in range(2):
        async with raw_ws(srv, token) as ws:
            await greet(ws, [firing(1)])
        assert await firing_ids(srv, key) == ["evt-00000001"]
    assert stat(srv, "alert_events_resynced") == 1


async def test_clock_ahead_and_node_down_entries_are_ignored(
    srv: Srv, store: Store, clock: FakeClock
) -> None:
    key, node_id, token = await account_node(store)
    now = clock.time()
    named = [
        firing(1, "0000000000000001", ts=now + RESYNC_SKEW - 1, started_at=now),  # within skew
        firing(2, "0000000000000002", ts=now + RESYNC_SKEW + 1, started_at=now),
        firing(3, "0000000000000003", ts=now, started_at=now + RESYNC_SKEW + 1),
        firing(4, "0000000000000004", rule="node_down"),
        firing(5, nodedown.fingerprint(node_id), rule="cpu_high"),
    ]
    async with raw_ws(srv, token) as ws:
        await greet(ws, named)
        assert await firing_ids(srv, key) == ["evt-00000001"]
        await send_alert(ws, firing(2, "0000000000000002"))  # an ignored id was not seen
    assert stat(srv, "alert_events_resync_ignored") == 4
    assert stat(srv, "alert_events_duplicate") == 0


async def test_a_hello_only_touches_its_own_node(srv: Srv, store: Store) -> None:
    """Node B names node A's fingerprint and event id: B gets an alert of its own, A's state
    and dedupe are untouched (everything is keyed by the connection's node)."""
    account, key = await make_account(store)
    a, a_token = await make_node(store, account, "vpn-a")
    b, b_token = await make_node(store, account, "vpn-b")
    async with raw_ws(srv, a_token) as ws:
        await greet(ws)
        await send_alert(ws, firing(1))
    async with raw_ws(srv, b_token) as ws:
        await greet(ws, [firing(1)])
    assert [e.id for e in srv.live.current_alerts(b.id)] == ["evt-00000001"]
    async with raw_ws(srv, a_token) as ws:
        await greet(ws)
        await send_alert(ws, event(2, status="resolved", fingerprint=FP_A))
    assert srv.live.current_alerts(a.id) == []
    assert [e.id for e in srv.live.current_alerts(b.id)] == ["evt-00000001"]
    _, body = await call(srv, "GET", "/api/v1/alerts?status=firing", key, expect=200)
    assert [(x["id"], x["node_id"]) for x in body["alerts"]] == [("evt-00000001", b.id)]


async def test_resynced_alerts_of_one_account_are_invisible_to_another(
    srv: Srv, store: Store
) -> None:
    key_a, node_a, token_a = await account_node(store, "vpn-a")
    key_b, node_b, token_b = await account_node(store, "vpn-b")
    async with raw_ws(srv, token_a) as ws_a, raw_ws(srv, token_b) as ws_b:
        await greet(ws_a, [firing(1)])
        await greet(ws_b, [firing(2, FP_B)])
        assert await firing_ids(srv, key_a) == ["evt-00000001"]
        assert await firing_ids(srv, key_b) == ["evt-00000002"]
        status, _ = await call(srv, "GET", f"/api/v1/alerts?node={node_a}", key_b)
        assert status == 404
        status, _ = await call(srv, "GET", f"/api/v1/nodes/{node_a}/live", key_b)
        assert status == 404
        _, fleet = await call(srv, "GET", "/api/v1/fleet", key_b, expect=200)
        assert [(n["id"], n["alerts"]) for n in fleet["nodes"]] == [(node_b, 1)]


async def test_resync_leaves_a_firing_node_down_alone(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodedown, "TICK_SECONDS", 3600.0)  # only this test's checks run
    async with ServerUnderTest(store, clock) as srv:
        await _node_down_then_resync(srv, store, clock)


async def _node_down_then_resync(srv: Srv, store: Store, clock: FakeClock) -> None:
    _key, node_id, token = await account_node(store)
    async with raw_ws(srv, token) as ws:
        await greet(ws)
    clock.advance(60)
    await srv.detector.check(clock.monotonic())
    [down] = srv.live.current_alerts(node_id)
    assert down.rule == "node_down"
    impostor = firing(2, down.fingerprint, rule="node_down", ts=clock.time() + 10)
    async with raw_ws(srv, token) as ws:
        await greet(ws, [firing(1), impostor])
        node = srv.live.get(node_id)
        assert node is not None
        assert node.node_down is down  # resync neither cleared nor replaced it
        assert {e.id for e in srv.live.current_alerts(node_id)} == {down.id, "evt-00000001"}
        await srv.detector.check(clock.monotonic())  # the node is back: resolved as ever
        assert [e.id for e in srv.live.current_alerts(node_id)] == ["evt-00000001"]
    downs = [e for e in srv.live.recent_events(node_id) if e.rule == "node_down"]
    assert [e.status for e in downs] == ["firing", "resolved"]


async def test_a_failing_learner_undoes_the_resync(srv: Srv, store: Store) -> None:
    """A learner that raises: the stream closes with 1011 and nothing of the alert stays, so
    the agent's next hello resyncs it afresh."""
    key, node_id, token = await account_node(store)
    failures = [RuntimeError("learner down")]

    async def flaky_learner(node: NodeRef, evt: AlertEvent) -> None:
        if failures:
            raise failures.pop()

    assert srv.app is not None
    srv.app[DISPATCH].learners.insert(0, flaky_learner)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello(firing=[firing(1)])))
        assert await closed_with(ws) == 1011
    assert srv.live.current_alerts(node_id) == []
    async with raw_ws(srv, token) as ws:
        await greet(ws, [firing(1)])
    assert await firing_ids(srv, key) == ["evt-00000001"]


def _hello_json(firing_entries: Any) -> str:
    frame = json.loads(dumps(hello()))
    frame["firing"] = firing_entries
    return json.dumps(frame)


def _entry(**changes: Any) -> dict[str, Any]:
    return {**firing(1).model_dump(mode="json"), **changes}


HOSTILE: list[tuple[str, str]] = [
    ("a resolved entry", _hello_json([_entry(status="resolved", ended_at=1.7e9 + 2)])),
    ("too many entries", _hello_json([_entry(id=f"evt-{n:08d}") for n in range(201)])),
    ("an id with a space", _hello_json([_entry(id="evt 0000001")])),
    ("a short id", _hello_json([_entry(id="e1")])),
    ("a fingerprint not hex", _hello_json([_entry(fingerprint="zzzzzzzzzzzzzzzz")])),
    ("an unknown field", _hello_json([_entry(extra=1)])),
    ("a NaN ts", _hello_json([_entry(ts=float("nan"))])),
    ("firing not a list", _hello_json(_entry())),
]


@pytest.mark.parametrize("frame", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
async def test_malformed_firing_entries_close_with_policy_violation(
    srv: Srv, store: Store, frame: str
) -> None:
    _key, node_id, token = await account_node(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(frame)
        assert await closed_with(ws) == 1008
    assert srv.live.current_alerts(node_id) == []
    assert MAX_HELLO_FIRING == 200


async def test_the_largest_hello_is_taken_whole(srv: Srv, store: Store) -> None:
    _key, node_id, token = await account_node(store)
    named = [firing(n, f"{n:016x}") for n in range(1, MAX_HELLO_FIRING + 1)]
    async with raw_ws(srv, token) as ws:
        await greet(ws, named)
    assert len(srv.live.current_alerts(node_id)) == MAX_HELLO_FIRING


# -- LiveState.resync's rules, on live state alone ------------------------------------------------


def test_live_resync_skips_what_live_state_knows(clock: FakeClock) -> None:
    live = LiveState(window_seconds=900, clock=clock)
    ref = NodeRef("node-1", "acct-1", "vpn-1", 5.0)
    live.track(ref)
    assert live.resync(ref.id, firing(1))
    assert not live.resync(ref.id, firing(1))  # current already
    assert not live.resync(ref.id, firing(2))  # its fingerprint is current
    assert live.seen_event(ref.id, "evt-00000001")  # the resynced id counts as seen
    live.record_event(ref.id, event(5, status="resolved", fingerprint=FP_A))
    assert not live.resync(ref.id, firing(3))  # resolved later than this firing
    assert not live.resync(ref.id, firing(1))  # seen
    assert live.resync(ref.id, firing(6))  # newer than the resolved: firing again
    assert not live.resync("unknown-node", firing(7))
