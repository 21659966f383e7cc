from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from agent import __version__, protocol, stream
from agent.outbox import Outbox
from agent.stream import StreamClient, auth_refused_delay, backoff_delay, stream_url
from agent.wire import (
    MAX_ACK_IDS,
    AgentMessage,
    AlertEvent,
    Config,
    Hello,
    Metrics,
    Ping,
    WireSample,
)
from tests.agent.fake_server import FakeServer

TOKEN = "node-token-5ecret-abcdef"


def hello() -> Hello:
    return Hello(agent_version=__version__, interval=5, metrics=["cpu.percent"], buffer_seconds=900)


def metrics(seq: int) -> Metrics:
    return Metrics(seq=seq, ts=1000.0 + seq, samples=[WireSample(m="cpu.percent", l={}, v=12.5)])


def event(n: int, fingerprint: int = 0) -> AlertEvent:
    return AlertEvent(
        id=f"evt-{n:08d}",
        fingerprint=f"{fingerprint:016x}",
        rule="cpu_high",
        status="firing",
        severity="warning",
        metric="cpu.percent",
        value=97.0,
        threshold=90.0,
        started_at=1000.0,
        ts=1000.0 + n,
    )


class Recorder:
    """A pass-through gate and config sink that remember what they saw."""

    def __init__(self) -> None:
        self.gated: list[AgentMessage] = []
        self.configs: list[Config] = []

    def gate(self, message: AgentMessage) -> AgentMessage | None:
        self.gated.append(message)
        return message

    def on_config(self, config: Config) -> None:
        self.configs.append(config)


def make_client(
    server_url: str,
    *,
    outbox: Outbox | None = None,
    gate: Callable[[AgentMessage], AgentMessage | None] | None = None,
    on_config: Callable[[Config], None] | None = None,
    hello_builder: Callable[[], Hello] = hello,
    **kwargs: Any,
) -> StreamClient:
    options: dict[str, Any] = {
        "rng": random.Random(1234),
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "resend_after": 30.0,
        "connect_timeout": 2.0,
    }
    options.update(kwargs)
    return StreamClient(
        server_url=server_url,
        token=TOKEN,
        hello=hello_builder,
        gate=gate if gate is not None else (lambda m: m),
        outbox=outbox if outbox is not None else Outbox(),
        on_config=on_config if on_config is not None else (lambda c: None),
        **options,
    )


@asynccontextmanager
async def running(client: StreamClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        async with asyncio.timeout(5):
            await client.close()
        assert task.done()
        assert task.exception() is None


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Poll client-side state (the client has no test hooks), bounded in time."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(token=TOKEN) as srv:
        yield srv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- URL and backoff ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_url", "expected"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/api/v1/agent/stream"),
        ("https://alerts.example.com", "wss://alerts.example.com/api/v1/agent/stream"),
        ("https://example.com/oneconnect/", "wss://example.com/oneconnect/api/v1/agent/stream"),
        ("http://[::1]:9000/a/b", "ws://[::1]:9000/a/b/api/v1/agent/stream"),
    ],
)
def test_stream_url(server_url: str, expected: str) -> None:
    assert stream_url(server_url) == expected


@pytest.mark.parametrize(
    ("server_url", "message"),
    [
        ("ftp://example.com", "http:// or https://"),
        ("ws://example.com", "http:// or https://"),
        ("example.com", "http:// or https://"),
        ("http://user:pw@example.com", "credentials"),
        ("http://example.com/?x=1", "query"),
        ("http://", "no host"),
    ],
)
def test_stream_url_rejects(server_url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stream_url(server_url)


def test_client_rejects_bad_token_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="token") as info:
        StreamClient(
            server_url="http://127.0.0.1:1",
            token="abc def\n",
            hello=hello,
            gate=lambda m: m,
            outbox=Outbox(),
            on_config=lambda c: None,
        )
    assert "abc def" not in str(info.value)


def test_backoff_is_full_jitter_and_capped() -> None:
    rng, replay = random.Random(42), random.Random(42)
    for attempt in range(40):
        ceiling = min(60.0, 0.5 * 2**attempt)
        delay = backoff_delay(attempt, base=0.5, cap=60.0, rng=rng)
        assert 0.0 <= delay <= ceiling <= 60.0
        assert delay == replay.uniform(0.0, ceiling)
    assert backoff_delay(100_000, base=0.5, cap=60.0, rng=rng) <= 60.0
    capped = [backoff_delay(30, base=0.5, cap=60.0, rng=rng) for _ in range(300)]
    assert min(capped) < 6.0
    assert max(capped) > 54.0  # full jitter spans the whole range, not just its upper half


def test_auth_refused_delay_stays_near_the_cap() -> None:
    rng = random.Random(7)
    delays = [auth_refused_delay(cap=60.0, rng=rng) for _ in range(300)]
    assert all(30.0 <= d <= 60.0 for d in delays)


# -- the stream ---------------------------------------------------------------------------------


async def test_hello_first_with_authorization_and_user_agent(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(server.url)
    async with running(client):
        await server.wait_for(lambda: len(server.received) >= 1)
        assert isinstance(server.received[0], protocol.Hello)
        conn = server.connections[0]
        assert conn.headers["Authorization"] == f"Bearer {TOKEN}"
        assert conn.headers["User-Agent"] == f"oneconnect-agent/{__version__}"
        await eventually(lambda: client.connected)
        assert client.connects == 1
    assert not client.connected
    assert TOKEN not in caplog.text


async def test_metrics_latest_wins(server: FakeServer) -> None:
    client = make_client(server.url)
    for seq in (1, 2, 3):  # not connected yet: each replaces the last
        client.send_metrics(metrics(seq))
    async with running(client):
        await server.wait_for(lambda: len(server.metrics()) == 1)
        client.send_metrics(metrics(4))
        await server.wait_for(lambda: len(server.metrics()) == 2)
    assert [m.seq for m in server.metrics()] == [3, 4]
    assert isinstance(server.received[0], protocol.Hello)


async def test_alert_delivered_and_acked(server: FakeServer) -> None:
    outbox = Outbox()
    client = make_client(server.url, outbox=outbox)
    async with running(client):
        client.add_event(event(1))
        assert await client.drain(5.0)
    assert len(outbox) == 0
    assert [a.event.model_dump() for a in server.alerts()] == [event(1).as_dict()]


async def test_events_already_in_outbox_are_sent_on_connect(server: FakeServer) -> None:
    outbox = Outbox()
    outbox.add(event(1, fingerprint=1))
    outbox.add(event(2, fingerprint=2))
    client = make_client(server.url, outbox=outbox)
    async with running(client):
        assert await client.drain(5.0)
        outbox.add(event(3, fingerprint=3))
        client.notify_events()
        assert await client.drain(5.0)
    assert [a.event.id for a in server.alerts()] == ["evt-00000001", "evt-00000002", "evt-00000003"]


async def test_unacked_event_resent_after_reconnect(server: FakeServer) -> None:
    server.auto_ack = False
    client = make_client(server.url)
    async with running(client):
        client.add_event(event(1))
        await server.wait_for(lambda: len(server.alerts()) == 1)
        await server.drop()
        await server.wait_for(lambda: len(server.alerts()) == 2)
        assert len(server.connections) == 2
        second = server.connections[1].messages
        assert isinstance(second[0], protocol.Hello)
        assert [a.event.model_dump() for a in server.alerts()] == [event(1).as_dict()] * 2
        await server.ack(["evt-00000001"])
        assert await client.drain(5.0)


async def test_unacked_event_resent_after_resend_after(server: FakeServer) -> None:
    server.auto_ack = False
    client = make_client(server.url, resend_after=0.2)
    loop = asyncio.get_running_loop()
    async with running(client):
        client.add_event(event(1))
        await server.wait_for(lambda: len(server.alerts()) == 1)
        first = loop.time()
        await server.wait_for(lambda: len(server.alerts()) == 3)
        assert loop.time() - first >= 0.3
        assert len(server.connections) == 1
        assert {a.event.id for a in server.alerts()} == {"evt-00000001"}
        await server.ack(["evt-00000001"])
        assert await client.drain(5.0)
        count = len(server.alerts())
        await asyncio.sleep(0.3)
        assert len(server.alerts()) == count  # acked: no more resends


async def test_server_restart_on_same_port_gets_unacked_events_again(server: FakeServer) -> None:
    server.auto_ack = False
    client = make_client(server.url)
    async with running(client):
        client.add_event(event(1, fingerprint=1))
        client.add_event(event(2, fingerprint=2))
        await server.wait_for(lambda: len(server.alerts()) == 2)
        port = server.port
        await server.stop(abrupt=True)
        await eventually(lambda: not client.connected)
        await eventually(lambda: client.connect_attempts >= 3)  # it keeps trying meanwhile
        server.auto_ack = True
        await server.start()
        assert server.port == port
        assert await client.drain(5.0)
    before = [a.event.id for a in server.connections[0].messages if hasattr(a, "event")]
    after = [a.event.id for a in server.connections[1].messages if hasattr(a, "event")]
    assert before == after == ["evt-00000001", "evt-00000002"]


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_token_retries_at_the_cap_without_spinning(
    server: FakeServer, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    server.reject_status = status
    client = make_client(server.url, backoff_base=0.01, backoff_cap=0.2)
    async with running(client):
        await asyncio.sleep(1.0)
        attempts = server.handshakes
        assert 2 <= attempts <= 11  # each wait is in [cap/2, cap]
        assert client.connects == 0
        server.reject_status = None  # token fixed on the server side: it gets in
        await server.wait_for(lambda: len(server.hellos()) == 1)
    assert (
        f"server refused the node token (HTTP {status}); check ONECONNECT_AGENT_TOKEN"
        in caplog.text
    )
    assert TOKEN not in caplog.text


def hostile_frames() -> list[str | bytes]:
    deep = "[" * 30_000 + "]" * 30_000
    return [
        "not json at all",
        "[1, 2, 3]",
        '"just a string"',
        '{"v": 2, "type": "ack", "ids": ["evt-00000001"]}',
        '{"type": "ack", "ids": ["evt-00000001"]}',
        '{"v": 1, "type": "shutdown"}',
        '{"v": 1, "type": "evil\\nINJECTED log line"}',
        '{"v": 1, "type": "ack", "ids": ["evt-00000001"], "extra": true}',
        json.dumps({"v": 1, "type": "ack", "ids": [f"id-{n:08d}" for n in range(MAX_ACK_IDS + 1)]}),
        '{"v": 1, "type": "ack", "ids": ["evt-0000/../../etc/passwd"]}',
        '{"v": 1, "type": "ack", "ids": ["<script>x</script>"]}',
        '{"v": 1, "type": "ack", "ids": []}',
        b"\x00\x01binary",
        '{"v": 1, "type": "config", "rules": "all of them"}',
        '{"v": 1, "type": "config", "rules": [1, 2, 3]}',
        '{"v": 1, "type": "config", "interval": -5}',
        "[" * 50_000,
        '{"v": 1, "type": "config", "rules": [' + deep + "]}",
        '{"v": 1, "type": "ping", "ts": "soon"}',
        '{"v": 1, "type": "\u202e\u0000"}',
    ]


async def test_hostile_messages_are_refused_and_the_client_keeps_working(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    frames = hostile_frames()
    assert len(frames) <= stream.REFUSAL_LIMIT
    server.auto_ack = False
    recorder = Recorder()
    client = make_client(server.url, on_config=recorder.on_config)
    async with running(client):
        client.add_event(event(1))
        await server.wait_for(lambda: len(server.alerts()) == 1)
        with caplog.at_level(logging.WARNING, logger="oneconnect.agent.stream"):
            for frame in frames:
                await server.send_raw(frame)
            await server.ack(["evt-00000001"])  # a valid ack after all that is still processed
            assert await client.drain(5.0)
        assert client.refused_messages == len(frames)
        assert client.connects == 1
        assert recorder.configs == []
    refusals = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(refusals) == len(frames)
    assert all("\n" not in line and len(line) < 200 for line in refusals)
    assert "INJECTED log line" not in caplog.text
    assert "passwd" not in caplog.text


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param("x" * (1024 * 1024), id="1MiB"),
        pytest.param(
            json.dumps({"v": 1, "type": "ack", "ids": [f"id-{n:08d}" for n in range(100_000)]}),
            id="100k-ids",
        ),
    ],
)
async def test_oversized_frame_is_refused_and_the_client_reconnects(
    server: FakeServer, frame: str
) -> None:
    server.auto_ack = False
    client = make_client(server.url)
    async with running(client):
        client.add_event(event(1))
        await server.wait_for(lambda: len(server.alerts()) == 1)
        server.auto_ack = True
        await server.send_raw(frame)
        assert await client.drain(5.0)  # resent on the new connection, acked there
        assert client.refused_messages == 1
        assert client.connects == 2


async def test_too_many_refusals_drop_the_connection(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(server.url)
    async with running(client):
        await server.wait_for(lambda: len(server.hellos()) == 1)
        for _ in range(stream.REFUSAL_LIMIT + 1):
            await server.send_raw("garbage")
        await server.wait_for(lambda: len(server.hellos()) == 2)
        assert client.refused_messages == stream.REFUSAL_LIMIT + 1
        assert client.connects == 2
    assert "more than 20 refused messages within 60 s" in caplog.text


async def test_ping_is_answered_through_the_gate(server: FakeServer) -> None:
    recorder = Recorder()
    client = make_client(server.url, gate=recorder.gate)
    async with running(client):
        await server.wait_for(lambda: len(server.hellos()) == 1)
        await server.send(protocol.Ping(ts=123.5))
        await server.wait_for(lambda: len(server.pings()) == 1)
        await server.send_raw('{"v": 1, "type": "ping", "ts": NaN}')  # refused, not answered
        await server.send(protocol.Ping(ts=1.0, reply=True))  # a reply is not answered
        await server.send(protocol.Ping(ts=2.0))
        await server.wait_for(lambda: len(server.pings()) == 2)
        assert client.refused_messages == 1
    replies = server.pings()
    assert replies[0] == protocol.Ping(ts=123.5, reply=True)
    assert replies[1] == protocol.Ping(ts=2.0, reply=True)
    assert server.invalid == []
    gated = [m for m in recorder.gated if isinstance(m, Ping)]
    assert [m.as_dict() for m in gated] == [r.model_dump() for r in replies]


async def test_gate_returning_none_suppresses_the_send(server: FakeServer) -> None:
    seen: list[AgentMessage] = []

    def no_metrics(message: AgentMessage) -> AgentMessage | None:
        seen.append(message)
        return None if isinstance(message, Metrics) else message

    client = make_client(server.url, gate=no_metrics)
    async with running(client):
        await server.wait_for(lambda: len(server.hellos()) == 1)
        client.send_metrics(metrics(1))
        await eventually(lambda: client.gated_out == 1)
        client.add_event(event(1))
        assert await client.drain(5.0)
    assert server.metrics() == []
    assert [m.type for m in seen] == ["hello", "metrics", "alert"]
    assert len(server.alerts()) == 1


async def test_gate_sees_every_outgoing_message_once_and_its_output_is_sent(
    server: FakeServer,
) -> None:
    recorder = Recorder()

    def redacting_gate(message: AgentMessage) -> AgentMessage | None:
        recorder.gate(message)
        if isinstance(message, Metrics):
            return dataclasses.replace(message, samples=[])
        return message

    client = make_client(server.url, gate=redacting_gate)
    async with running(client):
        client.send_metrics(metrics(1))
        client.add_event(event(1))
        await server.wait_for(lambda: len(server.alerts()) == 1 and len(server.metrics()) == 1)
        await server.send(protocol.Ping(ts=5.0))
        await server.wait_for(lambda: len(server.pings()) == 1)
        await server.drop()
        await server.wait_for(lambda: len(server.hellos()) == 2)
        await eventually(lambda: client.sent == len(server.received))
    assert len(recorder.gated) == len(server.received) == client.sent
    for gated, received in zip(recorder.gated, server.received, strict=True):
        assert gated.type == received.type
        if not isinstance(gated, Metrics):
            assert gated.as_dict() == received.model_dump()
    assert server.metrics()[0].samples == []


async def test_gate_that_raises_fails_closed(server: FakeServer) -> None:
    def broken(message: AgentMessage) -> AgentMessage | None:
        if isinstance(message, Metrics):
            raise RuntimeError("boom")
        return message

    client = make_client(server.url, gate=broken)
    async with running(client):
        client.send_metrics(metrics(1))
        client.add_event(event(1))
        assert await client.drain(5.0)
        await eventually(lambda: client.gated_out == 1)
    assert server.metrics() == []
    assert client.connects == 1


async def test_drain_true_after_ack_false_on_timeout(server: FakeServer) -> None:
    server.auto_ack = False
    client = make_client(server.url)
    assert await client.drain(0.01)  # nothing held
    async with running(client):
        client.add_event(event(1))
        await server.wait_for(lambda: len(server.alerts()) == 1)
        assert not await client.drain(0.2)
        await server.ack(["unknown-0001"])  # an ack for something else does not end the drain
        assert not await client.drain(0.1)
        await server.ack(["evt-00000001"])
        assert await client.drain(5.0)


async def test_config_reaches_on_config_and_its_errors_are_contained(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    configs: list[Config] = []

    def on_config(config: Config) -> None:
        configs.append(config)
        if config.interval == 13:
            raise ValueError("bad rules")

    server.auto_ack = False
    client = make_client(server.url, on_config=on_config)
    async with running(client):
        client.add_event(event(1))
        await server.wait_for(lambda: len(server.alerts()) == 1)
        await server.send(protocol.Config(interval=13))
        await server.send(
            protocol.Config(interval=10, rules=[{"name": "cpu_high", "expr": "cpu > 90"}])
        )
        await server.ack(["evt-00000001"])
        assert await client.drain(5.0)
        assert client.connects == 1
    assert [c.interval for c in configs] == [13, 10]
    assert "config pushed by the server could not be applied" in caplog.text


class RecordingRandom(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return super().uniform(a, b)


async def test_backoff_grows_while_failing_and_resets_after_an_ack(server: FakeServer) -> None:
    server.auto_ack = False
    rng = RecordingRandom(3)
    client = make_client(server.url, rng=rng, backoff_base=0.01, backoff_cap=1.0)
    async with running(client):
        client.add_event(event(1))
        for n in (1, 2, 3):
            await server.wait_for(lambda n=n: len(server.alerts()) == n)  # type: ignore[misc]
            if n == 3:
                server.auto_ack = True
            await server.drop()
        await server.wait_for(lambda: len(server.alerts()) == 4)
        assert await client.drain(5.0)
        await server.drop()  # this connection got an ack: the backoff starts over
        await server.wait_for(lambda: len(server.hellos()) == 5)
    assert rng.ceilings[:4] == [0.01, 0.02, 0.04, 0.01]


async def test_backoff_resets_after_a_stable_connection(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "STABLE_AFTER", 0.2)
    rng = RecordingRandom(3)
    client = make_client(server.url, rng=rng, backoff_base=0.01, backoff_cap=1.0)
    async with running(client):
        await server.wait_for(lambda: len(server.hellos()) == 1)
        await server.drop()
        await server.wait_for(lambda: len(server.hellos()) == 2)
        await server.drop()
        await server.wait_for(lambda: len(server.hellos()) == 3)
        await asyncio.sleep(0.3)
        await server.drop()
        await server.wait_for(lambda: len(server.hellos()) == 4)
    assert rng.ceilings[:3] == [0.01, 0.02, 0.01]


async def test_unreachable_server_keeps_retrying_and_closes_promptly() -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}")
    async with running(client):
        await eventually(lambda: client.connect_attempts >= 3)
        assert not client.connected


async def test_close_leaves_no_tasks_sessions_or_connections(server: FakeServer) -> None:
    client = make_client(server.url)
    async with running(client) as task:
        await server.wait_for(lambda: len(server.hellos()) == 1)
    assert task.done()
    await server.wait_for(lambda: server.open_connections() == 0)
    leftovers = [
        t for t in asyncio.all_tasks() if t.get_name().startswith("oneconnect-agent-stream")
    ]
    assert leftovers == []
    await client.close()  # idempotent
    await client.run()  # after close: returns at once
    gc.collect()


async def test_cancelling_run_cleans_up(server: FakeServer) -> None:
    client = make_client(server.url)
    task = asyncio.create_task(client.run())
    await server.wait_for(lambda: len(server.hellos()) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not client.connected
    await server.wait_for(lambda: server.open_connections() == 0)
    leftovers = [
        t for t in asyncio.all_tasks() if t.get_name().startswith("oneconnect-agent-stream")
    ]
    assert leftovers == []
    gc.collect()


async def test_run_twice_at_once_is_refused(server: FakeServer) -> None:
    client = make_client(server.url)
    async with running(client):
        await server.wait_for(lambda: len(server.hellos()) == 1)
        with pytest.raises(RuntimeError, match="already running"):
            await client.run()


async def test_fake_server_prefix_and_token_check() -> None:
    async with FakeServer(token=TOKEN, prefix="/oneconnect") as srv:
        assert srv.url.endswith("/oneconnect")
        client = make_client(srv.url)
        async with running(client):
            await srv.wait_for(lambda: len(srv.hellos()) == 1)
        bad = StreamClient(
            server_url=srv.url,
            token="wrong-token",
            hello=hello,
            gate=lambda m: m,
            outbox=Outbox(),
            on_config=lambda c: None,
            backoff_base=0.01,
            backoff_cap=0.05,
        )
        async with running(bad):
            await srv.wait_for(lambda: srv.handshakes >= 3)
            assert bad.connects == 0


async def test_a_failing_hello_builder_does_not_crash_the_client(server: FakeServer) -> None:
    calls = 0

    def flaky_hello() -> Hello:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("not ready")
        return hello()

    client = make_client(server.url, hello_builder=flaky_hello)
    async with running(client):
        await server.wait_for(lambda: len(server.hellos()) == 1)
        assert client.connects == 2
