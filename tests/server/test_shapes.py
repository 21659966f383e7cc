"""FrameShape.read (ingest's fast path) against parse_agent_message (the models).

Soundness: for any text, ``shape.read`` gives None ("take the full path") or exactly what the
models make of it (values by type and repr, so 1 is not 1.0 and -0.0 is not 0.0). Usefulness:
the frames real agents send (agent.wire.encode) and the models' own JSON are read by the shape
learnt from an earlier frame. And live state stores a shaped frame exactly as the full path
would have.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import wire
from agent.protocol import (
    MAX_AGENT_FRAME_BYTES,
    Hello,
    Metrics,
    MetricsFrame,
    ProtocolError,
    WireSample,
    dumps,
    parse_agent_frame,
    parse_agent_message,
)
from server.clock import FakeClock
from server.live import LiveState, NodeLive
from server.shapes import FrameShape, ShapedFrame
from server.storage.records import NodeRef


def _exact(value: object) -> tuple[str, str]:
    return type(value).__name__, repr(value)


def reference(raw: str | bytes) -> Metrics | None:
    """What the models make of ``raw`` when it is a valid metrics message, else None."""
    try:
        message = parse_agent_message(raw)
    except ProtocolError:
        return None
    return message if isinstance(message, Metrics) else None


def read_soundly(shape: FrameShape, raw: str | bytes) -> ShapedFrame | None:
    """``shape.read(raw)``, asserting it is None or the models' contents."""
    got = shape.read(raw)
    if got is None:
        return None
    message = reference(raw)
    assert message is not None, f"the shape took what the models refuse: {raw!r}"
    assert _exact(got.seq) == _exact(message.seq)
    assert _exact(got.ts) == _exact(message.ts)
    assert len(got.values) == len(message.samples)
    for metric, labels, value, model in zip(
        shape.metrics, shape.labels, got.values, message.samples, strict=True
    ):
        assert _exact(metric) == _exact(model.m)
        assert (labels is not None) == ("l" in model.model_fields_set)
        assert (labels or {}) == model.l  # equal as dicts (kept in the learnt order)
        assert _exact(value) == _exact(model.v)
    assert got.as_frame() == MetricsFrame.of(message)
    return got


def learnt(raw: str) -> FrameShape:
    frame = parse_agent_frame(raw)
    assert isinstance(frame, MetricsFrame)
    shape = FrameShape.learn(frame)
    assert shape is not None
    return shape


SERIES = [
    ("cpu_usage_percent", {}),
    ("vpn_active_peers", {"source": "wireguard"}),
    ("iface_up", {"interface": "wg0"}),
    ("disk_used_percent", {"mount": "/", "device": "sda1"}),
]


def agent_frame(seq: int, values: list[float | str], ts: float = 1.8e9) -> str:
    samples = [
        wire.WireSample(m, dict(labels), v) for (m, labels), v in zip(SERIES, values, strict=True)
    ]
    return wire.encode(wire.Metrics(seq=seq, ts=ts, samples=samples))


BASE = agent_frame(1, [12.5, "<5", 1.0, 70.25])
NEXT = agent_frame(2, [13.0, "<10", 0.0, 70.5], ts=1.8e9 + 1)


# -- the frames agents send ---------------------------------------------------------------------


def test_an_agents_next_frame_is_read_by_the_shape_of_its_first() -> None:
    shape = learnt(BASE)
    got = read_soundly(shape, NEXT)
    assert got is not None
    assert (got.seq, got.ts, got.values) == (2, 1.8e9 + 1, [13.0, "<10", 0.0, 70.5])
    assert read_soundly(shape, NEXT.encode()) is not None  # bytes too


def test_the_models_json_is_read_too() -> None:
    items = [WireSample(m=m, l=labels, v=1.5) for m, labels in SERIES]
    first = dumps(Metrics(seq=1, ts=5.0, samples=items))
    later = dumps(Metrics(seq=9, ts=6.0, samples=[s.model_copy(update={"v": 2.5}) for s in items]))
    assert read_soundly(learnt(first), later) is not None


def test_samples_without_labels_keep_their_absence() -> None:
    raw = '{"v":1,"type":"metrics","seq":1,"ts":2.0,"samples":[{"m":"a","v":1.0}]}'
    shape = learnt(raw)
    assert shape.labels == [None]
    got = read_soundly(shape, raw.replace("1.0", "3.5"))
    assert got is not None
    assert got.samples == [{"m": "a", "v": 3.5}]
    # "l": {} is another shape: the full path takes it (the models keep the difference)
    assert shape.read(raw.replace('"m":"a"', '"m":"a","l":{}')) is None


def test_a_frame_without_samples_has_no_shape() -> None:
    frame = parse_agent_frame('{"v":1,"type":"metrics","seq":1,"ts":2.0,"samples":[]}')
    assert isinstance(frame, MetricsFrame)
    assert FrameShape.learn(frame) is None


# -- what the shape leaves to the full path -----------------------------------------------------


def _variant(old: str, new: str, base: str = NEXT) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


LEFT_TO_THE_FULL_PATH = {
    "another metric": _variant('"m":"iface_up"', '"m":"iface_down"'),
    "another label value": _variant('"wg0"', '"wg1"'),
    "one series fewer": _variant(',{"m":"iface_up","l":{"interface":"wg0"},"v":0.0}', ""),
    "a huge integer": _variant('"v":13.0', '"v":' + "9" * 400),
    "NaN": _variant('"v":13.0', '"v":NaN'),
    "Infinity": _variant('"v":13.0', '"v":Infinity'),
    "beyond a float": _variant('"v":13.0', '"v":1e999'),
    "a bool": _variant('"v":13.0', '"v":true'),
    "null": _variant('"v":13.0', '"v":null'),
    "a numeric string (the models read 5.0)": _variant('"v":13.0', '"v":"5"'),
    "a long coarsened count": _variant('"<10"', '"<1000"'),
    "text": _variant('"<10"', '"alice"'),
    "a list": _variant('"v":13.0', '"v":[13.0]'),
    "null labels": _variant('"l":{}', '"l":null'),
    "labels as a list": _variant('"l":{}', '"l":[]'),
    "an extra sample field": _variant('"v":13.0', '"v":13.0,"x":1'),
    "an extra top-level field": _variant('"seq":2', '"seq":2,"x":1'),
    "version 2": _variant('"v":1,', '"v":2,'),
    "version 1.0": _variant('"v":1,', '"v":1.0,'),
    "another type": _variant('"type":"metrics"', '"type":"ping"'),
    "a negative seq": _variant('"seq":2', '"seq":-2'),
    "a float seq (the models take 2.0)": _variant('"seq":2', '"seq":2.0'),
    "a string ts": _variant('"ts":1800000001.0', '"ts":"1800000001"'),
    "an infinite ts": _variant('"ts":1800000001.0', '"ts":1e999'),
    "trailing data": NEXT + "x",
    "two messages": NEXT + NEXT,
    "a lone surrogate": _variant('"wg0"', '"\\ud800"'),
    "a truncated frame": NEXT[:-3],
    "too long": NEXT[:-1] + " " * (MAX_AGENT_FRAME_BYTES - len(NEXT) + 1) + "}",
}


@pytest.mark.parametrize(
    "raw", list(LEFT_TO_THE_FULL_PATH.values()), ids=list(LEFT_TO_THE_FULL_PATH)
)
def test_what_the_shape_leaves_to_the_full_path(raw: str) -> None:
    assert learnt(BASE).read(raw) is None


TAKEN = {
    "a seq beyond 64 bits (an int, as in the models)": _variant('"seq":2', '"seq":' + "9" * 30),
    "-0 (read as 0.0, as the models do)": _variant('"v":13.0', '"v":-0'),
    "an integer value (read as 13.0, as the models do)": _variant('"v":13.0', '"v":13'),
    "whitespace": NEXT.replace(",", ", ").replace(":", ": "),
    "keys in another order": _variant(
        '{"m":"cpu_usage_percent","l":{},"v":13.0}', '{"v":13.0,"l":{},"m":"cpu_usage_percent"}'
    ),
    "labels in another order": _variant(
        '{"mount":"/","device":"sda1"}', '{"device":"sda1","mount":"/"}'
    ),
    "a duplicated key (the last wins, as in json)": _variant('"v":13.0', '"v":99.0,"v":13.0'),
    "an escaped coarsened count": _variant('"<10"', '"\\u003c10"'),
    "an exponent": _variant('"v":13.0', '"v":1.3E1'),
    "a tiny number": _variant('"v":13.0', '"v":1e-400'),
    "negative zero": _variant('"v":13.0', '"v":-0.0'),
    "a big float": _variant('"v":13.0', '"v":1.7976931348623157e308'),
    "an integer ts (the models make it a float)": _variant('"ts":1800000001.0', '"ts":1800000001'),
}


@pytest.mark.parametrize("raw", list(TAKEN.values()), ids=list(TAKEN))
def test_valid_forms_the_shape_takes_give_the_models_contents(raw: str) -> None:
    assert read_soundly(learnt(BASE), raw) is not None


def test_every_variant_is_sound() -> None:
    shape = learnt(BASE)
    for raw in [*LEFT_TO_THE_FULL_PATH.values(), *TAKEN.values()]:
        read_soundly(shape, raw)


# -- hypothesis: valid frames, and valid frames with hostile mutations --------------------------

NAME_CHARS = "abcxyzABCXYZ0189_.:+/-"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=64)
label_values = st.text(min_size=1, max_size=40)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.from_regex(r"<[0-9]{1,3}", fullmatch=True),
)
series = st.lists(
    st.tuples(names, st.dictionaries(names, label_values, max_size=3)), min_size=1, max_size=12
)


@st.composite
def two_frames(draw: st.DrawFn) -> tuple[str, str]:
    """Two frames of the same series (a real agent's encoding or the models' JSON)."""
    keys = draw(series)
    encode = draw(st.sampled_from(["agent", "models"]))
    frames = []
    for _ in range(2):
        seq = draw(st.integers(min_value=0, max_value=2**64 - 1))
        ts = draw(st.floats(allow_nan=False, allow_infinity=False))
        vs = [draw(values) for _ in keys]
        if encode == "agent":
            items = [
                wire.WireSample(m, dict(labels), v) for (m, labels), v in zip(keys, vs, strict=True)
            ]
            frames.append(wire.encode(wire.Metrics(seq=seq, ts=ts, samples=items)))
        else:
            models = [
                WireSample(m=m, l=labels, v=v) for (m, labels), v in zip(keys, vs, strict=True)
            ]
            frames.append(dumps(Metrics(seq=seq, ts=ts, samples=models)))
    return frames[0], frames[1]


@settings(max_examples=300, deadline=None)
@given(two_frames())
def test_a_valid_frame_of_the_learnt_shape_is_read_exactly(pair: tuple[str, str]) -> None:
    first, second = pair
    assert read_soundly(learnt(first), second) is not None


HOSTILE_TOKENS = [
    "",
    " ",
    ",",
    "}",
    "{",
    "]",
    "[",
    '"',
    "\\",
    ":",
    "0",
    "-0",
    "1",
    "1.0",
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "true",
    "null",
    '"<5"',
    '"5"',
    '"<5000"',
    "[]",
    "{}",
    '"\\ud800"',
    '"\\u0000"',
    "\x00",
    "1_0",
    "+1",
    ".5",
    "01",
    "0x10",
    "١",
    "9" * 25,
    '"v":',
    '"l":{}',
    '"m":"a"',
    "\ufeff",
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    first, second = draw(two_frames())
    text = second
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "token"]))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(HOSTILE_TOKENS)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=8)) :]
        elif op == "replace":
            text = text[:at] + draw(st.characters()) + text[at + 1 :]
        else:  # a value token replaced by something hostile
            starts = [i + 4 for i in range(len(text)) if text.startswith('"v":', i)]
            if starts:
                start = draw(st.sampled_from(starts))
                end = start
                while end < len(text) and text[end] not in ",}":
                    end += 1
                text = text[:start] + draw(st.sampled_from(HOSTILE_TOKENS)) + text[end:]
    return first, text


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_mutated_frame_is_read_exactly_or_left_to_the_full_path(pair: tuple[str, str]) -> None:
    first, text = pair
    shape = learnt(first)
    read_soundly(shape, text)
    read_soundly(shape, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=12,
    )
)
def test_any_json_is_read_exactly_or_left_to_the_full_path(value: Any) -> None:
    shape = learnt(BASE)
    read_soundly(shape, json.dumps(value))
    frame = json.loads(NEXT)
    frame["samples"][0]["v"] = value
    read_soundly(shape, json.dumps(frame))


# -- live state stores a shaped frame as the full path would ------------------------------------


def _node(live: LiveState, interval: float = 1.0) -> NodeLive:
    node = live.connected(NodeRef("node-1", "acct-1", "vpn-1", 1.0))
    live.hello(
        node,
        Hello(agent_version="1", interval=interval, metrics=[], rules=[], buffer_seconds=60),
        interval,
    )
    return node


def _state(node: NodeLive) -> tuple[object, ...]:
    return (
        bytes(node.table),
        [_exact(v) for v in node.latest_value],
        node.layout,
        node.layout_labels,
        dict(node.cols),
        node.width,
        node.newest,
        node.dropped_samples,
    )


def test_live_state_stores_shaped_frames_as_the_full_path_does() -> None:
    frames = [
        agent_frame(1, [1.0, "<5", 1.0, 50.0]),
        agent_frame(2, [2.0, 7.0, 0.0, 1e39]),  # beyond float32: ±inf in the ring
        agent_frame(3, [-3.5, "<10", 1.0, -1e39]),
        # a series more, then back: columns no longer in frame order for the old shape
        wire.encode(
            wire.Metrics(
                seq=4,
                ts=4.0,
                samples=[wire.WireSample("new_metric", {}, 4.0)]
                + [wire.WireSample(m, dict(labels), 4.0) for m, labels in SERIES],
            )
        ),
        agent_frame(5, [5.0, 5.0, 5.0, 5.0]),
        agent_frame(6, [6.0, 6.0, 6.0, 6.0]),
    ]
    clocks = FakeClock(), FakeClock()
    full, fast = LiveState(60, clocks[0]), LiveState(60, clocks[1])
    full_node, fast_node = _node(full), _node(fast)
    shape: FrameShape | None = None
    used = 0
    for raw in frames:
        parsed = parse_agent_frame(raw)
        assert isinstance(parsed, MetricsFrame)
        full.metrics(full_node, parsed)
        shaped = shape.read(raw) if shape is not None else None
        if shaped is None:
            fast.metrics(fast_node, parsed)
            shape = FrameShape.learn(parsed)
        else:
            used += 1
            assert fast.metrics(fast_node, shaped) == len(shaped.values)
        assert _state(fast_node) == _state(full_node), raw
        for clock in clocks:
            clock.advance(1.0)
    assert used == 3  # frames 2, 3 and 6 (5 relearnt after the new series, 4 the full path)
    assert math.inf in list(fast_node.cells)
    assert -math.inf in list(fast_node.cells)


def _shape_of(node: NodeLive) -> FrameShape | None:
    return node.shape


def test_a_new_interval_forgets_the_shape_the_layout_came_from() -> None:
    live = LiveState(60, FakeClock())
    node = _node(live)
    shape = learnt(BASE)
    first = shape.read(BASE)
    assert first is not None
    live.metrics(node, first)  # first frame: the full path, then the shape is the layout's
    assert _shape_of(node) is shape
    live.hello(
        node, Hello(agent_version="1", interval=5.0, metrics=[], rules=[], buffer_seconds=60), 5.0
    )
    assert _shape_of(node) is None
    second = shape.read(NEXT)
    assert second is not None
    assert live.metrics(node, second) == 4
    assert [v for _, _, v in live.latest("node-1")] == [13.0, "<10", 0.0, 70.5]
