"""Wire models: round trips, bounds and hostile input on both parse directions."""

from __future__ import annotations

import json

import pytest

from agent.protocol import (
    MAX_AGENT_FRAME_BYTES,
    MAX_SERVER_FRAME_BYTES,
    Ack,
    Alert,
    AlertEvent,
    Config,
    Hello,
    Metrics,
    Ping,
    ProtocolError,
    WireSample,
    dumps,
    parse_agent_message,
    parse_server_message,
)

EVENT = AlertEvent(
    id="0123456789abcdef0123456789abcdef",
    fingerprint="0123456789abcdef",
    rule="disk_full",
    status="firing",
    severity="critical",
    metric="disk_used_percent",
    labels={"mount": "/"},
    value=97.5,
    threshold=90.0,
    summary="Disk / is 98% full",
    started_at=1.0,
    ts=1.0,
)


@pytest.mark.parametrize(
    "message",
    [
        Hello(agent_version="0.1.0", interval=5, metrics=["load1"], rules=["r"], buffer_seconds=60),
        Metrics(
            seq=3,
            ts=2.0,
            samples=[
                WireSample(m="load1", v=0.5),
                WireSample(m="vpn_active_peers", l={"source": "sessions"}, v="<5"),
            ],
        ),
        Alert(event=EVENT),
        Ping(ts=1.0),
    ],
)
def test_agent_messages_round_trip(message: Hello | Metrics | Alert | Ping) -> None:
    assert parse_agent_message(dumps(message)) == message


@pytest.mark.parametrize(
    "message", [Ack(ids=["abcdefgh12"]), Config(interval=10, rules=[{"name": "x"}]), Ping(ts=1)]
)
def test_server_messages_round_trip(message: Ack | Config | Ping) -> None:
    assert parse_server_message(dumps(message)) == message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"type": "ack", "ids": ["abcdefgh12"]}', "version"),
        ('{"v": 2, "type": "ack", "ids": ["abcdefgh12"]}', "version"),
        ('{"v": 1, "type": "launch"}', "tag"),
        ('{"v": 1, "type": "ack", "ids": []}', "ids"),
        ('{"v": 1, "type": "ack", "ids": ["../../etc"]}', "ids"),
        ('{"v": 1, "type": "ack", "ids": ["abcdefgh12"], "extra": 1}', "extra"),
        ('{"v": 1, "type": "config", "interval": 0.01}', "interval"),
        ('{"v": 1, "type": "ping", "ts": NaN}', "finite"),
        ("[" * 30_000 + "]" * 30_000, "not JSON"),
        ('{"v": 1, "type": "ack", "ids": [' + ",".join(['"abcdefgh12"'] * 1001) + "]}", "ids"),
    ],
)
def test_hostile_server_messages_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_server_message(raw)


def test_oversized_frames_are_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_server_message(" " * (MAX_SERVER_FRAME_BYTES + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_agent_message(" " * (MAX_AGENT_FRAME_BYTES + 1))


def test_errors_never_echo_peer_input() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_agent_message(json.dumps({"v": 1, "type": "10.8.0.6"}))
    assert "10.8.0.6" not in str(info.value)


def test_agent_side_bounds() -> None:
    too_many = {
        "v": 1,
        "type": "metrics",
        "seq": 1,
        "ts": 1.0,
        "samples": [{"m": "load1", "v": 1.0}] * 2001,
    }
    with pytest.raises(ProtocolError, match="samples"):
        parse_agent_message(json.dumps(too_many))
    bad_value = {
        "v": 1,
        "type": "metrics",
        "seq": 1,
        "ts": 1.0,
        "samples": [{"m": "load1", "v": "lots"}],
    }
    with pytest.raises(ProtocolError):
        parse_agent_message(json.dumps(bad_value))
