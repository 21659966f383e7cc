"""parse_agent_frame (the server's hot path) against parse_agent_message (the models).

The lean path must accept exactly the messages the models accept, with equal contents, and
refuse everything else with the very same ProtocolError. Proven three ways: the validators are
the same (core schemas compared field by field), a table of pydantic's lax-mode corner cases,
and hypothesis frames — valid ones, and valid ones with a few hostile mutations.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.protocol import (
    MAX_SAMPLES,
    Alert,
    AlertEvent,
    Hello,
    Metrics,
    MetricsFrame,
    Ping,
    ProtocolError,
    SampleData,
    WireSample,
    _metrics_adapter,
    dumps,
    parse_agent_frame,
    parse_agent_message,
)

# -- comparing the two parsers ------------------------------------------------------------------


def _exact(value: object) -> tuple[str, str]:
    """A value with its type, and floats by repr (so -0.0 is not 0.0, 1 is not 1.0)."""
    return type(value).__name__, repr(value)


def _outcome(parse: Any, raw: str | bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(raw)
    except ProtocolError as exc:
        return "refused", str(exc)


def assert_same(raw: str) -> str:
    """Both parsers on ``raw``: the same verdict, the same error text or equal contents."""
    ref = _outcome(parse_agent_message, raw)
    lean = _outcome(parse_agent_frame, raw)
    if ref[0] == "refused":
        assert lean == ref
        return "refused"
    assert lean[0] == "ok", lean
    message, got = ref[1], lean[1]
    if not isinstance(message, Metrics):
        assert type(got) is type(message)
        assert got == message
        return "ok"
    assert isinstance(got, MetricsFrame)
    assert _exact(got.seq) == _exact(message.seq)
    assert _exact(got.ts) == _exact(message.ts)
    assert len(got.samples) == len(message.samples)
    for data, model in zip(got.samples, message.samples, strict=True):
        assert set(data) <= {"m", "l", "v"}
        assert _exact(data["m"]) == _exact(model.m)
        assert ("l" in data) == ("l" in model.model_fields_set)
        labels = data.get("l", {})
        assert type(labels) is dict
        assert [(_exact(k), _exact(v)) for k, v in labels.items()] == [
            (_exact(k), _exact(v)) for k, v in model.l.items()
        ]
        assert _exact(data["v"]) == _exact(model.v)
    # The data rebuilt into models is the parsed model, and the frame is what `of` makes.
    rebuilt = Metrics(
        seq=got.seq, ts=got.ts, samples=[WireSample.model_validate(s) for s in got.samples]
    )
    assert rebuilt == message
    assert MetricsFrame.of(message) == got
    return "ok"


# -- the validators are the same ----------------------------------------------------------------


def _model_fields(schema: dict[str, Any]) -> dict[str, tuple[bool, dict[str, Any]]]:
    assert schema["type"] == "model"
    assert schema["config"]["extra_fields_behavior"] == "forbid"
    fields = {}
    for name, field in schema["schema"]["fields"].items():
        inner = field["schema"]
        if inner["type"] == "default":
            fields[name] = (False, inner["schema"])
        else:
            fields[name] = (True, inner)
    return fields


def _typed_dict_fields(schema: dict[str, Any]) -> dict[str, tuple[bool, dict[str, Any]]]:
    assert schema["type"] == "typed-dict"
    assert schema["extra_behavior"] == "forbid"
    return {name: (f["required"], f["schema"]) for name, f in schema["fields"].items()}


def test_the_lean_schema_has_the_models_validators() -> None:
    """Field names, and per field the very same core schema (type, bounds, pattern, finite,
    union), as the models; only the containers differ (dicts instead of model instances)."""
    metrics = _model_fields(dict(Metrics.__pydantic_core_schema__))
    lean = _typed_dict_fields(_metrics_adapter().core_schema)  # type: ignore[arg-type]
    assert set(lean) == set(metrics) == {"v", "type", "seq", "ts", "samples"}
    for name in ("v", "type", "seq", "ts"):
        assert lean[name][1] == metrics[name][1], name
    # ``v`` and ``type`` have defaults in the models but are always there: _loads refuses a
    # message without v == 1 and parse_agent_frame takes this path only for type "metrics".
    assert lean["v"][0]
    assert lean["type"][0]
    assert (lean["seq"][0], lean["ts"][0], lean["samples"][0]) == (True, True, True)
    model_list, lean_list = metrics["samples"][1], lean["samples"][1]
    assert {k: v for k, v in model_list.items() if k != "items_schema"} == {
        k: v for k, v in lean_list.items() if k != "items_schema"
    }
    assert lean_list["max_length"] == MAX_SAMPLES
    sample = _model_fields(model_list["items_schema"])
    lean_sample = _typed_dict_fields(lean_list["items_schema"])
    assert set(sample) == set(lean_sample) == {"m", "l", "v"}
    for name in ("m", "l", "v"):
        assert lean_sample[name] == sample[name], name  # l: optional in both, same dict schema
    assert lean_list["items_schema"]["cls"] is SampleData


# -- a table of corner cases --------------------------------------------------------------------


def _frame(*samples: object, **top: object) -> str:
    message: dict[str, object] = {"v": 1, "type": "metrics", "seq": 7, "ts": 1.5}
    message["samples"] = list(samples)
    message.update(top)
    return json.dumps(message, allow_nan=True)


LAX_AND_HOSTILE = [
    _frame({"m": "load1", "v": 0.5}),
    _frame({"m": "load1", "l": {}, "v": 0.5}),  # explicit empty labels stay explicit
    _frame({"m": "a", "l": {f"k{i}": "x" for i in range(8)}, "v": 1.0}),
    _frame({"m": "a", "l": {f"k{i}": "x" for i in range(9)}, "v": 1.0}),  # 9 labels
    _frame({"m": "a" * 64, "l": {"b" * 64: "c" * 128}, "v": 1.0}),
    _frame({"m": "a" * 65, "v": 1.0}),
    _frame({"m": "a", "l": {"b" * 65: "c"}, "v": 1.0}),
    _frame({"m": "a", "l": {"b": "c" * 129}, "v": 1.0}),
    _frame({"m": "", "v": 1.0}),
    _frame({"m": "a", "l": {"": "x"}, "v": 1.0}),
    _frame({"m": "a", "l": {"b": ""}, "v": 1.0}),
    _frame({"m": "a\n", "v": 1.0}),  # $ in the pattern is the end, not before a newline
    _frame({"m": "bad name", "v": 1.0}),
    _frame({"m": "ünïcode", "v": 1.0}),
    _frame({"m": "a", "l": {"b": "ünïcode, 10.8.0.6 \n\t"}, "v": 1.0}),
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"a","l":{"b":"\\ud800"},"v":1}]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"\\ud800","v":1}]}',
    _frame({"m": "a", "v": 1}),  # an int is taken as a float
    _frame({"m": "a", "v": True}),  # lax: a bool too
    _frame({"m": "a", "v": False}),
    _frame({"m": "a", "v": 2**64}),
    _frame({"m": "a", "v": 10**400}),
    _frame({"m": "a", "v": -0.0}),
    _frame({"m": "a", "v": 1e308}),
    _frame({"m": "a", "v": "<5"}),
    _frame({"m": "a", "v": "<123"}),
    _frame({"m": "a", "v": "<1234"}),
    _frame({"m": "a", "v": "<5\n"}),
    _frame({"m": "a", "v": "<"}),
    _frame({"m": "a", "v": "1.5"}),  # lax: a numeric string is a float
    _frame({"m": "a", "v": " 1.5 "}),
    _frame({"m": "a", "v": "1_000"}),
    _frame({"m": "a", "v": "1e3"}),
    _frame({"m": "a", "v": "inf"}),
    _frame({"m": "a", "v": "nan"}),
    _frame({"m": "a", "v": "0x10"}),
    _frame({"m": "a", "v": float("nan")}),
    _frame({"m": "a", "v": float("inf")}),
    _frame({"m": "a", "v": -float("inf")}),
    _frame({"m": "a", "v": None}),
    _frame({"m": "a", "v": [1.0]}),
    _frame({"m": "a", "v": {"x": 1.0}}),
    _frame({"m": "a"}),
    _frame({"v": 1.0}),
    _frame({"m": "a", "v": 1.0, "x": 1}),  # unknown field
    _frame({"m": "a", "v": 1.0, "l": None}),
    _frame({"m": "a", "v": 1.0, "l": []}),
    _frame({"m": "a", "v": 1.0, "l": {"b": 1}}),
    _frame({"m": 5, "v": 1.0}),
    _frame(["a", {}, 1.0]),
    _frame("a"),
    _frame(None),
    _frame(),
    _frame({"m": "a", "v": 1.0}, seq=-1),
    _frame({"m": "a", "v": 1.0}, seq=2.0),  # lax: a whole float is an int
    _frame({"m": "a", "v": 1.0}, seq=2.5),
    _frame({"m": "a", "v": 1.0}, seq="3"),
    _frame({"m": "a", "v": 1.0}, seq=True),
    _frame({"m": "a", "v": 1.0}, seq=None),
    _frame({"m": "a", "v": 1.0}, seq=10**30),
    _frame({"m": "a", "v": 1.0}, ts=1),
    _frame({"m": "a", "v": 1.0}, ts="1.5"),
    _frame({"m": "a", "v": 1.0}, ts=True),
    _frame({"m": "a", "v": 1.0}, ts=float("nan")),
    _frame({"m": "a", "v": 1.0}, ts=None),
    _frame({"m": "a", "v": 1.0}, v=1.0),
    _frame({"m": "a", "v": 1.0}, v=True),
    _frame({"m": "a", "v": 1.0}, v=2),
    _frame({"m": "a", "v": 1.0}, v="1"),
    _frame({"m": "a", "v": 1.0}, samples=None),
    _frame({"m": "a", "v": 1.0}, samples={"m": "a", "v": 1.0}),
    _frame({"m": "a", "v": 1.0}, extra=1),
    _frame({"m": "a", "v": 1.0}, type="Metrics"),
    _frame({"m": "a", "v": 1.0}, type=["metrics"]),
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[]}',
    '{"type":"metrics","seq":1,"ts":1.0,"samples":[]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0}',
    '{"v":1,"type":"metrics","seq":1,"samples":[]}',
    '{"v":1,"type":"metrics","ts":1.0,"samples":[]}',
    # duplicate keys: json.loads keeps the last one, for both parsers
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"a","v":1.0,"v":"<5"}]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"a","v":"x","v":2.0}]}',
    '{"v":1,"type":"ping","type":"metrics","seq":1,"ts":1.0,"samples":[]}',
    '{"v":1,"type":"metrics","type":"ping","ts":1.0}',
    '{"v":1,"type":"metrics","seq":1,"ts":NaN,"samples":[]}',
    '{"v":1,"type":"metrics","seq":1,"ts":Infinity,"samples":[]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[]',
    '{"v":1,"type":"metrics","seq":' + "9" * 5000 + ',"ts":1.0,"samples":[]}',
    # the lean path reads the JSON in pydantic-core: the text around and inside must agree too
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[]}  \n',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[]}x',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[]}{}',
    '{"v":1,"type":"metrics","seq":1,"ts":1e400,"samples":[]}',
    '{"v":1,"type":"metrics","seq":1,"ts":-0,"samples":[]}',
    '{"v":1,"type":"metrics","seq":1E2,"ts":1.0,"samples":[]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"a","v":1e-400}]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"a","l":{"k":"\\u0000"},"v":1}]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"a","l":{"k":"\\ud800"},"v":1}]}',
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[{"m":"a","v":01}]}',
    '{"v":1,"type":"metrics","seq":1,"ts":.5,"samples":[]}',
    "{'v':1,'type':'metrics','seq':1,'ts':1.0,'samples':[]}",
    '{"v":1,"type":"metrics","seq":1,"ts":1.0,"samples":[' + "[" * 3000 + "]" * 3000 + "]}",
    "[]",
    "null",
    '"metrics"',
    "not json",
    "\ufeff{}",
    # other messages go through the models on both paths
    dumps(Hello(agent_version="1", interval=5, buffer_seconds=0)),
    dumps(Ping(ts=1.0)),
    dumps(Ping(ts=1.0, reply=True)),
    dumps(
        Alert(
            event=AlertEvent(
                id="abcdefgh12",
                fingerprint="0123456789abcdef",
                rule="r",
                status="firing",
                severity="warning",
                metric="m",
                started_at=1.0,
                ts=1.0,
            )
        )
    ),
    '{"v":1,"type":"ping","ts":"nope"}',
    '{"v":1,"type":"launch"}',
    '{"v":1,"type":"10.8.0.6"}',
]


@pytest.mark.parametrize("raw", LAX_AND_HOSTILE)
def test_corner_cases_get_the_same_verdict(raw: str) -> None:
    assert_same(raw)


def test_the_table_holds_both_verdicts() -> None:
    verdicts = [assert_same(raw) for raw in LAX_AND_HOSTILE]
    assert verdicts.count("ok") >= 20
    assert verdicts.count("refused") >= 40


def test_the_sample_bound() -> None:
    sample = {"m": "load1", "l": {"cpu": "0"}, "v": 1.0}
    assert assert_same(_frame(*[sample] * MAX_SAMPLES)) == "ok"
    assert assert_same(_frame(*[sample] * (MAX_SAMPLES + 1))) == "refused"


def test_errors_never_echo_peer_values() -> None:
    """Values are never quoted (an unknown *key* may show in the field path, as it always did
    with the models; ingest's safe_reason elides such path parts before logging)."""
    for raw in (
        _frame({"m": "10.8.0.6", "v": "alice@example.com"}),
        _frame({"m": "a", "l": {"user": "alice@example.com"}, "v": 10**400}),
        _frame({"m": "a", "l": {"user": "x" * 200}, "v": "10.8.0.6"}),
        _frame({"m": "a", "v": 1.0}, seq="10.8.0.6", ts="alice"),
    ):
        assert assert_same(raw) == "refused"
        with pytest.raises(ProtocolError) as info:
            parse_agent_frame(raw)
        for secret in ("10.8.0.6", "alice"):
            assert secret not in str(info.value)


# -- hypothesis: valid frames, and valid frames with hostile mutations -------------------------

NAME_CHARS = "abcxyzABCXYZ0189_.:+/-"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=64)
label_values = st.text(min_size=1, max_size=128)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.from_regex(r"<[0-9]{1,3}", fullmatch=True),
)
samples = st.builds(
    WireSample,
    m=names,
    l=st.dictionaries(names, label_values, max_size=8),
    v=values,
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(samples, max_size=20),
)
def test_valid_frames_parse_to_equal_contents(seq: int, ts: float, items: list[WireSample]) -> None:
    raw = dumps(Metrics(seq=seq, ts=ts, samples=items))
    assert assert_same(raw) == "ok"
    frame = parse_agent_frame(raw)
    assert isinstance(frame, MetricsFrame)
    assert [(s["m"], s["l"], s["v"]) for s in frame.samples] == [(s.m, s.l, s.v) for s in items]


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.floats(),  # NaN and infinities included (sent as NaN / Infinity)
    st.text(max_size=8),
    st.sampled_from(
        [
            "",
            "<5",
            "<999",
            "<1000",
            "<5\n",
            "<-1",
            "1.5",
            " 2 ",
            "1_0",
            "1e3",
            "inf",
            "-Infinity",
            "nan",
            "0x1f",
            "metrics",
            "a\n",
            "\ud800",
            "x\udfffy",
            "ünï",
            "a" * 64,
            "a" * 65,
            "b" * 128,
            "b" * 129,
        ]
    ),
)
anything = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _valid_sample(draw: st.DrawFn) -> dict[str, Any]:
    sample: dict[str, Any] = {"m": draw(names), "v": draw(values)}
    if draw(st.booleans()):
        sample["l"] = draw(st.dictionaries(names, label_values, max_size=8))
    return sample


@st.composite
def near(draw: st.DrawFn, value: Any) -> Any:
    """A value just beside ``value``: the edge of its bound, a lax-mode cousin, a bad byte."""
    if isinstance(value, str):
        return draw(
            st.sampled_from(
                [
                    value + "\n",
                    value + " ",
                    " " + value,
                    "é" + value,
                    value + "\ud800",
                    value + "\x00",
                    "",
                    (value or "a") * 65,
                    (value or "a").ljust(64, "a"),
                    (value or "a").ljust(65, "a"),
                    (value or "a").ljust(128, "a"),
                    (value or "a").ljust(129, "a"),
                    "<" + "5" * 4,
                    "<" + "5" * 3,
                    "1.5",
                    "-1",
                    value.upper(),
                ]
            )
        )
    if isinstance(value, bool | int | float):
        cousins: list[Any] = [math.nan, math.inf, -math.inf, -1, -1.0, -0.5, -(2**63), 0]
        cousins += [True, False]
        cousins += [2**63, 2**64 + 1, 10**400, str(value), None, [value]]
        if isinstance(value, float) and math.isfinite(value):
            cousins.append(int(value))  # a whole float's int, or a fraction cut off
        elif not isinstance(value, float):
            cousins.append(float(value) if abs(value) < 2**1000 else value)
        return draw(st.sampled_from(cousins))
    return draw(anything)


TOP_FIELDS = ("v", "type", "seq", "ts", "samples")


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid metrics message, then 1-3 mutations, each at the top level, in a sample or in
    its labels: a near value, any JSON value, a deleted or an added key, labels or samples
    grown to their bound or one past it."""
    message: dict[str, Any] = {
        "v": 1,
        "type": "metrics",
        "seq": draw(st.integers(min_value=0, max_value=2**64)),
        "ts": draw(st.floats(allow_nan=False, allow_infinity=False)),
        "samples": [_valid_sample(draw) for _ in range(draw(st.integers(1, 6)))],
    }
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "sample", "labels"]))
        items = message.get("samples")
        if where != "top" and not (
            isinstance(items, list) and items and isinstance(items[0], dict)
        ):
            where = "top"
        if where == "top":
            target: dict[str, Any] = message
            key = draw(st.sampled_from([*TOP_FIELDS, *TOP_FIELDS, "x", "", "M"]))
        else:
            assert isinstance(items, list)
            target = draw(st.sampled_from([s for s in items if isinstance(s, dict)]))
            if where == "labels":
                labels = target.setdefault("l", {})
                if not isinstance(labels, dict):
                    continue
                target = labels
                key = draw(st.sampled_from(sorted(labels)) if labels else names)
            else:
                key = draw(st.sampled_from(["m", "l", "v", "m", "l", "v", "x", "", "\ud800"]))
        action = draw(st.sampled_from(["near", "near", "near", "any", "delete", "grow", "rekey"]))
        if action == "near":
            target[key] = draw(near(target.get(key, "")))
        elif action == "any":
            target[key] = draw(anything)
        elif action == "delete":
            target.pop(key, None)
        elif action == "rekey" and key in target:
            target[draw(near(key))] = target.pop(key)
        elif action == "grow" and where == "labels":
            size = draw(st.sampled_from([8, 9]))
            for i in range(size - len(target)):
                target[f"k{i}"] = draw(label_values)
        elif action == "grow" and isinstance(items, list) and items:
            size = draw(st.sampled_from([MAX_SAMPLES, MAX_SAMPLES + 1]))
            items[:] = (items * size)[:size]
    return json.dumps(message, allow_nan=True, ensure_ascii=draw(st.booleans()))


@settings(
    max_examples=1200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_frames())
def test_mutated_frames_get_the_same_verdict(raw: str) -> None:
    assert_same(raw)


@settings(max_examples=300, deadline=None)
@given(anything)
def test_any_json_gets_the_same_verdict(value: object) -> None:
    assert_same(json.dumps(value, allow_nan=True))
    if isinstance(value, dict):
        assert_same(json.dumps({**value, "v": 1, "type": "metrics"}, allow_nan=True))


def test_bytes_get_the_same_verdict_as_text() -> None:
    """aiohttp hands the server text; bytes (and bytes that are not UTF-8) agree as well."""
    good = _frame({"m": "a", "l": {"k": "é"}, "v": 1.0})
    for raw in (good.encode(), good.encode()[:-1], good.encode().replace("é".encode(), b"\xe9")):
        ref = _outcome(parse_agent_message, raw)
        lean = _outcome(parse_agent_frame, raw)
        assert lean[0] == ref[0]
        if ref[0] == "refused":
            assert lean == ref


def test_floats_are_kept_exactly() -> None:
    for value in (0.1, -0.0, 5e-324, 1.7976931348623157e308, 1 / 3, 2.0**53 + 1):
        frame = parse_agent_frame(_frame({"m": "a", "v": value}))
        assert isinstance(frame, MetricsFrame)
        got = frame.samples[0]["v"]
        assert isinstance(got, float)
        assert got == value
        assert math.copysign(1.0, got) == math.copysign(1.0, value)
