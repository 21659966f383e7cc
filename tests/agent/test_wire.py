"""The agent's plain message types write exactly what the protocol models accept and read back.

The server parses with the pydantic models of agent.protocol; the agent writes with agent.wire.
For generated messages within the models' bounds, the JSON the agent writes parses, through the
models, into the very same fields; and the agent's process never loads the models at all.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import protocol
from agent.wire import (
    MAX_HELLO_FIRING,
    AgentMessage,
    Alert,
    AlertEvent,
    Hello,
    Metrics,
    Ping,
    WireSample,
    encode,
)

_NAME_CHARS = "ABCXYZabcxyz0189_.:+/-"
names = st.text(_NAME_CHARS, min_size=1, max_size=64)
label_values = st.text(min_size=1, max_size=128)
labels = st.dictionaries(names, label_values, max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False)
coarsened = st.integers(0, 999).map(lambda n: f"<{n}")
event_ids = st.text("abcXYZ019_-", min_size=8, max_size=64)
fingerprints = st.text("0123456789abcdef", min_size=16, max_size=16)
texts = st.text(max_size=1024)

samples = st.builds(WireSample, names, labels, st.one_of(finite, coarsened))


def events(status: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[AlertEvent]:
    return st.builds(
        AlertEvent,
        id=event_ids,
        fingerprint=fingerprints,
        rule=names,
        status=st.sampled_from(["firing", "resolved"]) if status is None else status,
        severity=st.sampled_from(["info", "warning", "critical"]),
        metric=names,
        labels=labels,
        value=st.one_of(st.none(), finite, coarsened),
        threshold=st.one_of(st.none(), finite),
        summary=texts,
        started_at=finite,
        ended_at=st.one_of(st.none(), finite),
        ts=finite,
    )


hellos = st.builds(
    Hello,
    agent_version=st.text(max_size=32),
    interval=st.floats(min_value=0.001, max_value=3600),
    metrics=st.lists(names, max_size=20),
    rules=st.lists(names, max_size=20),
    buffer_seconds=st.integers(0, 10**9),
    firing=st.lists(events(st.just("firing")), max_size=5),
)
messages: st.SearchStrategy[AgentMessage] = st.one_of(
    hellos,
    st.builds(Metrics, st.integers(0, 2**53), finite, st.lists(samples, max_size=20)),
    st.builds(Alert, events()),
    st.builds(Ping, finite, st.booleans()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages)
def test_what_the_agent_writes_the_models_read_back_field_for_field(
    message: AgentMessage,
) -> None:
    raw = encode(message)
    # Byte for byte what json writes for the message (metrics frames take a cached path).
    assert raw == json.dumps(message.as_dict(), separators=(",", ":"), ensure_ascii=False)
    model = protocol.parse_agent_message(raw)
    assert model.type == message.type
    assert model.model_dump() == message.as_dict()
    assert json.loads(raw) == message.as_dict()
    # The server's lean path reads the same frame.
    frame = protocol.parse_agent_frame(raw)
    if isinstance(message, Metrics):
        assert isinstance(frame, protocol.MetricsFrame)
        assert [(s["m"], s.get("l", {}), s["v"]) for s in frame.samples] == [
            (s.m, s.l, s.v) for s in message.samples
        ]


def test_the_encoding_is_compact_utf8_like_the_models() -> None:
    sample = WireSample("disk_used_percent", {"mount": "/données"}, 12.5)
    raw = encode(Metrics(7, 1.5, [sample]))
    assert raw == (
        '{"v":1,"type":"metrics","seq":7,"ts":1.5,'
        '"samples":[{"m":"disk_used_percent","l":{"mount":"/données"},"v":12.5}]}'
    )
    model = protocol.Metrics(seq=7, ts=1.5, samples=[protocol.WireSample(**sample.as_dict())])
    assert json.loads(protocol.dumps(model)) == json.loads(raw)


def test_a_sample_that_is_not_finite_is_never_written() -> None:
    """The gate drops such samples; were one to reach the encoder, it refuses like json."""
    for value in (math.nan, math.inf):
        with pytest.raises(ValueError, match="Out of range float"):
            encode(Metrics(1, 1.0, [WireSample("load1", {}, value)]))


def test_an_event_value_that_is_not_finite_goes_out_as_unknown() -> None:
    event = AlertEvent(
        id="evt00001",
        fingerprint="0123456789abcdef",
        rule="r",
        status="firing",
        severity="warning",
        metric="load1",
        value=math.nan,
        threshold=math.inf,
        started_at=1.0,
        ts=1.0,
    )
    model = protocol.parse_agent_message(encode(Alert(event)))
    assert isinstance(model, protocol.Alert)
    assert (model.event.value, model.event.threshold) == (None, None)


def test_a_hello_with_more_firing_alerts_than_the_bound_is_refused_by_the_models() -> None:
    """The daemon cuts at MAX_HELLO_FIRING; this proves the bound is the server's too."""
    one = AlertEvent(
        id="evt00001",
        fingerprint="0123456789abcdef",
        rule="r",
        status="firing",
        severity="info",
        metric="load1",
        started_at=1.0,
        ts=1.0,
    )
    hello = Hello(agent_version="1", interval=5, buffer_seconds=0, firing=[one] * MAX_HELLO_FIRING)
    assert len(protocol.parse_agent_message(encode(hello)).firing) == MAX_HELLO_FIRING  # type: ignore[union-attr]
    too_many = Hello(
        agent_version="1", interval=5, buffer_seconds=0, firing=[one] * (MAX_HELLO_FIRING + 1)
    )
    with pytest.raises(protocol.ProtocolError, match=r"^hello\.firing"):
        protocol.parse_agent_message(encode(too_many))


def test_the_agent_process_never_loads_the_pydantic_models_of_the_protocol() -> None:
    """Everything the daemon and the command line import stays clear of agent.protocol: the
    models' schemas cost about a megabyte of memory on every node (bench/agent_overhead)."""
    code = (
        "import sys, agent.cli, agent.daemon, agent.stream, agent.privacy, agent.exposition;"
        "print('agent.protocol' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
