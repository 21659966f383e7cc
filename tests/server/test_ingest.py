"""The agent stream against the real server app on 127.0.0.1: the real agent StreamClient for the
normal paths, bare websockets for frames a real agent never sends. Store on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agent.outbox import Outbox
from agent.protocol import (
    MAX_AGENT_FRAME_BYTES,
    STREAM_PATH,
    Ack,
    Alert,
    AlertEvent,
    Config,
    Ping,
    WireSample,
    dumps,
    parse_server_message,
)
from server import ingest
from server.clock import FakeClock
from server.ingest import safe_reason
from server.keys import DISPATCH, STATS
from server.storage.records import NodeRef
from server.storage.store import Store
from tests.server.streamkit import (
    ConfigSink,
    ServerUnderTest,
    agent_client,
    agent_event,
    agent_metrics,
    closed_with,
    event,
    eventually,
    hello,
    make_account,
    make_node,
    metrics_frame,
    raw_ws,
    running,
)

Srv = ServerUnderTest[FakeClock]

HOSTILE_MARK = "198.51.100.77"
"""Appears in hostile payloads; must never reach a log line."""


@pytest.fixture
async def srv(store: Store, clock: FakeClock) -> AsyncIterator[Srv]:
    async with ServerUnderTest(store, clock) as server:
        yield server


async def node_token(store: Store, plan: str = "pro", name: str = "vpn-1") -> tuple[str, str]:
    account, _ = await make_account(store, plan=plan)
    node, token = await make_node(store, account, name)
    return node.id, token


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Ack | Config | Ping:
    async with asyncio.timeout(5):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return parse_server_message(msg.data)


# -- the normal paths, with the real agent client -------------------------------------------------


async def test_hello_below_plan_minimum_gets_config(srv: Srv, store: Store) -> None:
    node_id, token = await node_token(store, plan="pro")  # pro: 5 s minimum
    sink = ConfigSink()
    client = agent_client(srv.url, token, on_config=sink, hello_builder=lambda: hello(interval=1))
    async with running(client):
        await eventually(lambda: bool(sink.configs))
    assert sink.configs[0].interval == 5.0
    node = srv.live.get(node_id)
    assert node is not None
    assert node.interval == 5.0
    assert node.agent_version == "0.1.0"
    assert node.rules == ("cpu_high",)
    async with asyncio.timeout(5):  # enrolment is written right after the config is sent
        while not await store.enrolled_nodes():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert [ref.id for ref in await store.enrolled_nodes()] == [node_id]


async def test_no_config_when_interval_is_allowed(srv: Srv, store: Store) -> None:
    _, token = await node_token(store, plan="pro")
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello(interval=10)))
        await ws.send_str(dumps(Ping(ts=5.0)))
        assert await receive_json(ws) == Ping(ts=5.0, reply=True)  # no config came first


async def test_metrics_land_in_live_state(srv: Srv, store: Store) -> None:
    node_id, token = await node_token(store)
    client = agent_client(srv.url, token)
    async with running(client):
        await eventually(lambda: client.connected)
        client.send_metrics(agent_metrics(metrics_frame(1, cpu=33.0, peers="<5")))
        await eventually(lambda: bool(srv.live.latest(node_id)))
    latest = {m: v for m, _, v in srv.live.latest(node_id)}
    assert latest == {"cpu_usage_percent": 33.0, "vpn_active_peers": "<5", "iface_up": 1.0}
    assert srv.app is not None
    node = srv.live.get(node_id)
    assert node is not None
    assert node.last_seen_wall == srv.clock.time()
    await eventually(lambda: not node.connected)  # the client closed


async def test_alert_is_acked_once_recorded(srv: Srv, store: Store) -> None:
    node_id, token = await node_token(store)
    outbox = Outbox()
    client = agent_client(srv.url, token, outbox=outbox)
    async with running(client):
        client.add_event(agent_event(event(1)))
        client.add_event(agent_event(event(2, fingerprint="00000000000000bb")))
        await eventually(lambda: len(outbox) == 0)
    assert {e.id for e in srv.live.current_alerts(node_id)} == {"evt-00000001", "evt-00000002"}


async def test_duplicate_event_id_is_ignored_but_acked(srv: Srv, store: Store) -> None:
    node_id, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))
        for _ in range(3):
            await ws.send_str(dumps(Alert(event=event(1))))
            assert await receive_json(ws) == Ack(ids=["evt-00000001"])
    assert [e.id for e in srv.live.recent_events(node_id)] == ["evt-00000001"]
    assert srv.app is not None
    stats = srv.app[STATS]
    assert stats.value("alert_events_duplicate") == 2
    assert stats.value("alert_events", status="firing") == 1


async def test_ping_is_answered(srv: Srv, store: Store) -> None:
    _, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))
        await ws.send_str(dumps(Ping(ts=123.5)))
        assert await receive_json(ws) == Ping(ts=123.5, reply=True)
        await ws.send_str(dumps(Ping(ts=1.0, reply=True)))  # a reply is not answered
        await ws.send_str(dumps(Ping(ts=2.0)))
        assert await receive_json(ws) == Ping(ts=2.0, reply=True)


# -- hostile frames ------------------------------------------------------------------------------

_BIG = json.dumps({"v": 1, "type": "ping", "ts": 1, "pad": "x" * (600 * 1024)})
_MANY_METRICS = json.dumps(
    {
        "v": 1,
        "type": "hello",
        "agent_version": "x",
        "interval": 5,
        "buffer_seconds": 0,
        "metrics": [f"metric_{i}" for i in range(10_000)],
    }
)
_IP_LABEL = json.dumps(
    {
        "v": 1,
        "type": "metrics",
        "seq": 1,
        "ts": 1,
        "samples": [{"m": "x", "l": {f"ip {HOSTILE_MARK}": "a"}, "v": 1}],
    }
)
_NAN = '{"v": 1, "type": "metrics", "seq": 1, "ts": 1, "samples": [{"m": "x", "v": NaN}]}'

HOSTILE: list[tuple[str, bool, str | bytes, int]] = [
    # (case, send hello first, frame, expected close code)
    ("not json", True, f"not json {HOSTILE_MARK}", 1008),
    ("wrong v", True, '{"v": 2, "type": "ping", "ts": 1}', 1008),
    ("no v", True, '{"type": "ping", "ts": 1}', 1008),
    ("unknown type", True, f'{{"v": 1, "type": "{HOSTILE_MARK}"}}', 1008),
    ("not an object", True, "[1, 2, 3]", 1008),
    ("extra field", True, f'{{"v": 1, "type": "ping", "ts": 1, "{HOSTILE_MARK}": 1}}', 1008),
    ("ip as label key", True, _IP_LABEL, 1008),
    ("NaN value", True, _NAN, 1008),
    ("deep nesting", True, "[" * 100_000 + "]" * 100_000, 1008),
    ("600 KiB frame", True, _BIG, 1009),
    ("binary", True, b"\x00\x01binary", 1008),
    ("metrics before hello", False, dumps(metrics_frame(1)), 1008),
    ("ping before hello", False, dumps(Ping(ts=1.0)), 1008),
    ("hello with 10,000 metric names", False, _MANY_METRICS, 1008),
    ("second hello", True, dumps(hello()), 1008),
]


@pytest.mark.parametrize(
    ("first_hello", "frame", "code"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
async def test_hostile_frames_close_the_socket_and_others_keep_going(
    srv: Srv,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    first_hello: bool,
    frame: str | bytes,
    code: int,
) -> None:
    caplog.set_level(logging.INFO)
    good_id, good_token = await node_token(store, name="good")
    bad_id, bad_token = await node_token(store, name="bad")
    good = agent_client(srv.url, good_token)
    async with running(good):
        await eventually(lambda: good.connected)
        async with raw_ws(srv, bad_token, max_msg_size=0) as ws:
            if first_hello:
                await ws.send_str(dumps(hello()))
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            assert await closed_with(ws) == code
        good.send_metrics(agent_metrics(metrics_frame(7, cpu=77.0)))
        await eventually(lambda: ("cpu_usage_percent", {}, 77.0) in srv.live.latest(good_id))
        assert good.connected
    bad = srv.live.get(bad_id)
    assert bad is not None
    assert not bad.connected
    closing = [
        r.getMessage() for r in caplog.records if "stream of node " + bad_id in r.getMessage()
    ]
    assert closing, "the closing is logged with a reason"
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("test."))
    assert HOSTILE_MARK not in text
    assert bad_token not in text
    assert good_token not in text
    assert "127.0.0.1" not in text


async def test_too_many_messages_close_the_socket(srv: Srv, store: Store) -> None:
    _, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))
        for n in range(int(ingest.FRAME_BURST) + 200):
            await ws.send_str(dumps(Ping(ts=float(n), reply=True)))
        assert await closed_with(ws, timeout=10) == 1008


async def test_no_hello_in_time_closes(
    srv: Srv, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "HELLO_TIMEOUT", 0.2)
    _, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        assert await closed_with(ws) == 1008


def test_logged_reasons_never_hold_peer_keys() -> None:
    assert safe_reason("samples.12.v: Input should be a finite number") == (
        "samples.12.v: Input should be a finite number"
    )
    assert safe_reason("ping.198.51: Extra inputs are not permitted") == (
        "ping.….…: Extra inputs are not permitted"
    )
    assert safe_reason(f"samples.0.l.{HOSTILE_MARK}.[key]: String should match pattern '…'") == (
        "samples.0.l.….….….….[key]: String should match pattern '…'"
    )
    assert (
        safe_reason("a:b: c.d: Extra inputs are not permitted")
        == "….…: Extra inputs are not permitted"
    )
    assert safe_reason("not JSON: JSONDecodeError") == "not JSON: JSONDecodeError"


# -- the handshake -------------------------------------------------------------------------------

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def handshake(srv: Srv, authorization: str | None) -> tuple[int, dict[str, object]]:
    headers = dict(UPGRADE)
    if authorization is not None:
        headers["Authorization"] = authorization
    async with aiohttp.ClientSession() as session, session.get(srv.ws_url, headers=headers) as r:
        return r.status, await r.json()


async def test_bad_tokens_get_401_without_upgrade(srv: Srv, store: Store) -> None:
    account, _ = await make_account(store)
    node, token = await make_node(store, account)
    for authorization in (
        None,
        "",
        f"Basic {token}",
        "Bearer oc_node_" + "A" * 43,
        "Bearer " + "x" * 10_000,
        f"Bearer {token}é",
        f"Bearer {token} {token}",
        "Bearer",
    ):
        status, body = await handshake(srv, authorization)
        assert status == 401, authorization
        assert body["error"]["code"] == "unauthorized"  # type: ignore[index]
    rotated = "oc_node_" + "B" * 43
    await store.rotate_node_token(account.id, node.id, rotated)
    assert (await handshake(srv, f"Bearer {token}"))[0] == 401  # the old token is dead
    async with raw_ws(srv, rotated) as ws:  # the new one works
        await ws.send_str(dumps(hello()))
        await ws.send_str(dumps(Ping(ts=1.0)))
        await receive_json(ws)
    await store.delete_node(account.id, node.id)
    assert (await handshake(srv, f"Bearer {rotated}"))[0] == 401  # deleted
    assert srv.app is not None
    assert srv.app[STATS].value("agent_refusals", reason="bad_token") == 10


async def test_a_valid_token_without_upgrade_is_400(srv: Srv, store: Store) -> None:
    _, token = await node_token(store)
    async with (
        aiohttp.ClientSession() as session,
        session.get(srv.ws_url, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "bad_request"


async def test_refused_handshakes_are_rate_limited(srv: Srv, store: Store) -> None:
    _, token = await node_token(store)
    statuses = [
        (await handshake(srv, "Bearer oc_node_" + "C" * 43))[0]
        for _ in range(int(ingest.AUTH_FAILURES.burst) + 1)
    ]
    assert statuses[:-1] == [401] * int(ingest.AUTH_FAILURES.burst)
    assert statuses[-1] == 429
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with raw_ws(srv, token):
            pass
    assert refused.value.status == 429  # this client waits, even with a good token
    srv.clock.advance(60)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))


# -- connections ---------------------------------------------------------------------------------


async def test_a_second_connection_replaces_the_first(srv: Srv, store: Store) -> None:
    node_id, token = await node_token(store)
    async with raw_ws(srv, token) as first:
        await first.send_str(dumps(hello()))
        await first.send_str(dumps(Ping(ts=1.0)))
        await receive_json(first)
        async with raw_ws(srv, token) as second:
            assert await closed_with(first) == ingest.REPLACED
            await second.send_str(dumps(hello()))
            await second.send_str(dumps(metrics_frame(1, cpu=55.0)))
            await eventually(lambda: ("cpu_usage_percent", {}, 55.0) in srv.live.latest(node_id))
            node = srv.live.get(node_id)
            assert node is not None
            assert node.connected
            assert srv.open_sockets() == 1
        await eventually(lambda: not node.connected and srv.open_sockets() == 0)


async def test_shutdown_closes_agent_sockets_with_going_away(srv: Srv, store: Store) -> None:
    _, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))
        await eventually(lambda: srv.open_sockets() == 1)
        closing = asyncio.create_task(closed_with(ws))
        await srv.stop()
        assert await closing == aiohttp.WSCloseCode.GOING_AWAY


async def test_frames_and_refusals_are_counted(srv: Srv, store: Store) -> None:
    _, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))
        await ws.send_str(dumps(metrics_frame(1)))
        await ws.send_str(dumps(Ping(ts=1.0)))
        await receive_json(ws)
    await handshake(srv, None)
    async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as r:
        text = await r.text()
    assert 'oneconnect_server_agent_frames_total{type="metrics"} 1.0' in text
    assert 'oneconnect_server_agent_refusals_total{reason="bad_token"} 1.0' in text
    assert "oneconnect_server_agent_connections_total 1.0" in text
    assert "oneconnect_server_agent_streams_open 0.0" in text
    assert STREAM_PATH  # the ◆ path the agent derives from server_url
    assert MAX_AGENT_FRAME_BYTES == 512 * 1024


async def test_frames_read_by_their_shape_and_the_frames_it_leaves(srv: Srv, store: Store) -> None:
    """Once a metrics frame passed, the next ones of the same series are read by its shape
    (server/shapes.py): stored and counted like any frame; another series list goes the full
    path and becomes the shape; a frame the models refuse still closes the stream."""
    node_id, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))
        for seq in range(1, 4):
            await ws.send_str(dumps(metrics_frame(seq, cpu=float(seq), peers="<5")))
        await ws.send_str(dumps(Ping(ts=1.0)))
        await receive_json(ws)
        node = srv.live.get(node_id)
        assert node is not None
        assert node.shape is not None  # frames 2 and 3 came by the shape
        assert ("cpu_usage_percent", {}, 3.0) in srv.live.latest(node_id)
        assert ("vpn_active_peers", {}, "<5") in srv.live.latest(node_id)
        other = metrics_frame(4, cpu=4.0)
        other.samples.append(WireSample(m="load1", v=0.5))
        await ws.send_str(dumps(other))
        await ws.send_str(
            dumps(metrics_frame(5, cpu=5.0).model_copy(update={"samples": other.samples}))
        )
        await ws.send_str(dumps(Ping(ts=2.0)))
        await receive_json(ws)
        assert ("load1", {}, 0.5) in srv.live.latest(node_id)
        refused = dumps(metrics_frame(6)).replace('"v":12.5', f'"v":"{HOSTILE_MARK}"')
        assert f'"v":"{HOSTILE_MARK}"' in refused
        await ws.send_str(refused)
        assert await closed_with(ws) == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert srv.app is not None
    assert srv.app[STATS].value("agent_frames", type="metrics") == 5  # the refused one is not


async def test_drop_node_closes_its_stream_and_forgets_it(srv: Srv, store: Store) -> None:
    node_id, token = await node_token(store)
    async with raw_ws(srv, token) as ws:
        await ws.send_str(dumps(hello()))
        await ws.send_str(dumps(metrics_frame(1)))
        await eventually(lambda: bool(srv.live.latest(node_id)))
        assert srv.app is not None
        closing = asyncio.create_task(closed_with(ws))
        await ingest.drop_node(srv.app, node_id, forget=True)
        assert await closing == 1008
    assert node_id not in srv.live


async def test_an_event_is_acked_only_once_submit_returned(srv: Srv, store: Store) -> None:
    """A dispatch sink that fails (as webhook delivery may, issue 4): no ack, the stream is
    closed with 1011, and the agent's resend on its next connection is taken over and acked."""
    node_id, token = await node_token(store)
    failures = [RuntimeError("sink down")]

    async def flaky_sink(node: NodeRef, evt: AlertEvent) -> None:
        if failures:
            raise failures.pop()

    assert srv.app is not None
    srv.app[DISPATCH].sinks.append(flaky_sink)
    outbox = Outbox()
    client = agent_client(srv.url, token, outbox=outbox)
    async with running(client):
        client.add_event(agent_event(event(1)))
        await eventually(lambda: client.connects >= 2 and len(outbox) == 0)
    assert not failures
    assert [e.id for e in srv.live.current_alerts(node_id)] == ["evt-00000001"]


async def test_a_full_live_state_refuses_new_nodes_with_503(srv: Srv, store: Store) -> None:
    known_id, known_token = await node_token(store, name="known")
    _, new_token = await node_token(store, name="new")
    async with raw_ws(srv, known_token) as ws:
        await ws.send_str(dumps(hello()))
    srv.live.max_nodes = len(srv.live)  # the table is full now
    status, body = await handshake(srv, f"Bearer {new_token}")
    assert status == 503
    assert body["error"]["code"] == "unavailable"  # type: ignore[index]
    async with raw_ws(srv, known_token) as ws:  # a node already held still connects
        await ws.send_str(dumps(hello()))
        await ws.send_str(dumps(Ping(ts=1.0)))
        await receive_json(ws)
    assert known_id in srv.live
