"""agent.inbound (server messages checked by hand) against agent.protocol (the models).

The hand parser must accept exactly the JSON messages the models accept, with equal contents,
and refuse the others at the same field path, with a short message that quotes no input. It
is stricter only where pydantic's lax mode coerces a value of another JSON type (a boolean or a
numeric string for ``ping.ts`` / ``config.interval``, a non-boolean ``ping.reply``): those are
asserted separately. Proven by a table of examples, the models' bounds pinned, and hypothesis
messages: valid ones, valid ones with hostile mutations, and any JSON at all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError

from agent import inbound, protocol, wire
from agent.wire import MAX_ACK_IDS, MAX_PUSHED_RULES, MAX_SERVER_FRAME_BYTES

ROOT = Path(__file__).resolve().parents[2]

# -- comparing the two parsers ------------------------------------------------------------------

HAND_ERROR = re.compile(
    r"(message|v|type|(ack|config|ping)(\.(ids|interval|rules|ts|reply)(\.\d+)?)?): [a-z][^:]*"
)
"""Every message of the hand parser: a protocol path (indexes only as numbers), a reason."""


def _exact(value: object) -> tuple[str, str]:
    """A value with its type, and floats by repr (so -0.0 is not 0.0, 1 is not 1.0)."""
    return type(value).__name__, repr(value)


def _reference(raw: str | bytes) -> tuple[str, Any]:
    """The models' verdict: ("ok", model) or ("refused", the path the hand parser must give).
    Paths of the models' first error, except: a missing or unknown ``type`` is "type" (the
    models say "message"), an unknown field is its message's path without the peer's key."""
    try:
        model = protocol.parse_server_message(raw)
    except protocol.ProtocolError:
        pass
    else:
        return "ok", model
    try:
        data = protocol._loads(raw, MAX_SERVER_FRAME_BYTES)
    except protocol.ProtocolError as exc:
        return "refused", "v" if "version" in str(exc) else "message"
    with pytest.raises(ValidationError) as info:
        protocol._server_adapter.validate_python(data)
    first = info.value.errors(include_url=False, include_input=False)[0]
    loc = first["loc"]
    if first["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return "refused", "type"
    if first["type"] == "extra_forbidden":
        loc = loc[:-1]
    return "refused", ".".join(str(part) for part in loc)


def _hand(raw: str | bytes) -> tuple[str, Any]:
    try:
        return "ok", inbound.parse_server_message(raw)
    except inbound.ProtocolError as exc:
        text = str(exc)
        assert HAND_ERROR.fullmatch(text), text
        assert len(text) <= 100
        return "refused", text


def _lax(raw: str | bytes) -> set[str]:
    """The fields holding a value only pydantic's lax mode takes (a documented stricter case)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return set()
    if not isinstance(data, dict) or data.get("v") != 1:
        return set()
    kind, found = data.get("type"), set()
    if kind == "ping" and isinstance(data.get("ts"), bool | str):
        found.add("ping.ts")
    reply = data.get("reply")
    if kind == "ping" and isinstance(reply, int | float | str) and not isinstance(reply, bool):
        found.add("ping.reply")
    if kind == "config" and isinstance(data.get("interval"), bool | str):
        found.add("config.interval")
    return found


def assert_same_contents(got: object, model: object) -> None:
    if isinstance(model, protocol.Ack):
        assert type(got) is wire.Ack
        assert [_exact(i) for i in got.ids] == [_exact(i) for i in model.ids]
    elif isinstance(model, protocol.Config):
        assert type(got) is wire.Config
        assert _exact(got.interval) == _exact(model.interval)
        assert type(got.rules) is type(model.rules)
        assert repr(got.rules) == repr(model.rules)  # keeps NaN, key order, 1 vs 1.0 vs True
    else:
        assert isinstance(model, protocol.Ping)
        assert type(got) is wire.Ping
        assert (_exact(got.ts), _exact(got.reply)) == (_exact(model.ts), _exact(model.reply))


def assert_same(raw: str | bytes) -> str:
    """Both parsers on ``raw``: "ok" (equal contents), "refused" (the same path), or
    "stricter" (the hand parser refused a lax-only value; the models took the message)."""
    ref, hand = _reference(raw), _hand(raw)
    lax = _lax(raw)
    if hand[0] == "ok":
        assert ref[0] == "ok", ref
        assert not lax
        assert_same_contents(hand[1], ref[1])
        return "ok"
    path = hand[1].split(": ", 1)[0]
    if path in lax:
        return "stricter" if ref[0] == "ok" else "refused"
    assert ref == ("refused", path), hand[1]
    return "refused"


# -- the contract the hand parser follows -------------------------------------------------------


def test_the_models_bounds_are_the_ones_checked_by_hand() -> None:
    """Pins the models' schemas: a change there must be made in agent.inbound too."""
    ack = protocol.Ack.model_json_schema()
    assert ack["required"] == ["ids"]
    assert ack["properties"]["ids"] == {
        "items": {"maxLength": 64, "minLength": 8, "pattern": "^[A-Za-z0-9_-]+$", "type": "string"},
        "maxItems": MAX_ACK_IDS,
        "minItems": 1,
        "title": "Ids",
        "type": "array",
    }
    config = protocol.Config.model_json_schema()
    assert "required" not in config
    assert config["properties"]["interval"]["anyOf"] == [
        {"maximum": 3600, "minimum": 1, "type": "number"},
        {"type": "null"},
    ]
    assert config["properties"]["rules"]["anyOf"] == [
        {
            "items": {"additionalProperties": True, "type": "object"},
            "maxItems": MAX_PUSHED_RULES,
            "type": "array",
        },
        {"type": "null"},
    ]
    ping = protocol.Ping.model_json_schema()
    assert ping["required"] == ["ts"]
    assert ping["properties"]["reply"]["default"] is False
    metadata = protocol.Ping.model_fields["ts"].metadata  # NaN and infinities refused
    assert [getattr(m, "allow_inf_nan", None) for m in metadata] == [False]
    for schema in (ack, config, ping):
        assert schema["additionalProperties"] is False
        assert schema["properties"]["v"]["const"] == 1


@pytest.mark.parametrize(
    ("plain", "model"),
    [(wire.Ack, protocol.Ack), (wire.Config, protocol.Config), (wire.Ping, protocol.Ping)],
)
def test_the_plain_types_hold_the_models_fields(
    plain: type[wire.Ack | wire.Config | wire.Ping], model: type[Any]
) -> None:
    assert [f.name for f in dataclasses.fields(plain)] == [
        name for name in model.model_fields if name not in ("v", "type")
    ]
    assert plain.type == model.model_fields["type"].default


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(inbound.ProtocolError, ValueError)


def test_importing_inbound_does_not_import_pydantic() -> None:
    code = (
        "import sys, agent.inbound; "
        "assert 'pydantic' not in sys.modules, 'pydantic'; "
        "assert 'agent.protocol' not in sys.modules, 'agent.protocol'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


# -- examples: every error path, and the stricter cases ----------------------------------------

ID = "abcdefgh"


def _msg(**fields: object) -> str:
    return json.dumps({"v": 1, **fields}, allow_nan=True)


ERRORS: list[tuple[str | bytes, str]] = [
    ("not json", "message: not JSON (JSONDecodeError)"),
    ("", "message: not JSON (JSONDecodeError)"),
    ("\ufeff{}", "message: not JSON (JSONDecodeError)"),
    ('{"v":1,"type":"ping","ts":1', "message: not JSON (JSONDecodeError)"),
    ('{"v":1,"type":"ping","ts":' + "9" * 5000 + "}", "message: not JSON (ValueError)"),
    (b'{"v":1,"type":"ping","ts":1,"x":"\xff"}', "message: not JSON (UnicodeDecodeError)"),
    ("[" * 5000, "message: not JSON (RecursionError)"),
    ("[]", "message: not a JSON object"),
    ("null", "message: not a JSON object"),
    ('"ping"', "message: not a JSON object"),
    ("1", "message: not a JSON object"),
    ('{"type":"ping","ts":1}', "v: missing or unsupported protocol version (want 1)"),
    (_msg(v=2, type="ping", ts=1), "v: missing or unsupported protocol version (want 1)"),
    (_msg(v="1", type="ping", ts=1), "v: missing or unsupported protocol version (want 1)"),
    (_msg(v=None, type="ping", ts=1), "v: missing or unsupported protocol version (want 1)"),
    (_msg(v=[1], type="ping", ts=1), "v: missing or unsupported protocol version (want 1)"),
    (_msg(), "type: field required"),
    (_msg(ts=1), "type: field required"),
    (_msg(type="hello"), "type: unknown message type (want ack, config or ping)"),
    (_msg(type="Ping", ts=1), "type: unknown message type (want ack, config or ping)"),
    (_msg(type=None), "type: unknown message type (want ack, config or ping)"),
    (_msg(type=1), "type: unknown message type (want ack, config or ping)"),
    (_msg(type=["ack"]), "type: unknown message type (want ack, config or ping)"),
    (_msg(type={"ack": 1}), "type: unknown message type (want ack, config or ping)"),
    (_msg(type="ack"), "ack.ids: field required"),
    (_msg(type="ack", ids=None), "ack.ids: must be a list"),
    (_msg(type="ack", ids=ID), "ack.ids: must be a list"),
    (_msg(type="ack", ids={ID: 1}), "ack.ids: must be a list"),
    (_msg(type="ack", ids=[]), "ack.ids: must hold 1 to 1000 ids"),
    (_msg(type="ack", ids=[ID] * 1001), "ack.ids: must hold 1 to 1000 ids"),
    (_msg(type="ack", ids=[5] * 1001), "ack.ids: must hold 1 to 1000 ids"),  # the length first
    (
        _msg(type="ack", ids=[ID, 12345678]),
        "ack.ids.1: must be 8 to 64 characters of A-Z a-z 0-9 _ -",
    ),
    (_msg(type="ack", ids=["a" * 7]), "ack.ids.0: must be 8 to 64 characters of A-Z a-z 0-9 _ -"),
    (_msg(type="ack", ids=["a" * 65]), "ack.ids.0: must be 8 to 64 characters of A-Z a-z 0-9 _ -"),
    (_msg(type="ack", ids=[ID + "\n"]), "ack.ids.0: must be 8 to 64 characters of A-Z a-z 0-9 _ -"),
    (_msg(type="ack", ids=[ID + "."]), "ack.ids.0: must be 8 to 64 characters of A-Z a-z 0-9 _ -"),
    (_msg(type="ack", ids=[ID + "é"]), "ack.ids.0: must be 8 to 64 characters of A-Z a-z 0-9 _ -"),
    (
        _msg(type="ack", ids=[ID, "\ud800" * 8]),
        "ack.ids.1: must be 8 to 64 characters of A-Z a-z 0-9 _ -",
    ),
    (_msg(type="ack", ids=[ID], ts=1), "ack: unknown field (not part of the protocol)"),
    (_msg(type="ack", ids=[ID], ID=1), "ack: unknown field (not part of the protocol)"),
    (_msg(type="config", interval=0.999), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=0), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=-0.0), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=3600.0001), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=3601), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=math.nan), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=math.inf), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=-math.inf), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", interval=False), "config.interval: must be a number"),  # models: 0.0
    (_msg(type="config", interval="x"), "config.interval: must be a number"),
    (_msg(type="config", interval=[5]), "config.interval: must be a number"),
    (_msg(type="config", interval=10**400), "config.interval: number out of range"),
    (_msg(type="config", rules={}), "config.rules: must be a list or null"),
    (_msg(type="config", rules="x"), "config.rules: must be a list or null"),
    (_msg(type="config", rules=[{}] * 201), "config.rules: must hold at most 200 rules"),
    (_msg(type="config", rules=[{}, []]), "config.rules.1: must be an object"),
    (_msg(type="config", rules=[None]), "config.rules.0: must be an object"),
    (_msg(type="config", interval=0, rules="x"), "config.interval: must be from 1 to 3600"),
    (_msg(type="config", x=1), "config: unknown field (not part of the protocol)"),
    (
        _msg(type="config", interval=1, rules=[], ids=[ID]),
        "config: unknown field (not part of the protocol)",
    ),
    (_msg(type="ping"), "ping.ts: field required"),
    (_msg(type="ping", reply=True), "ping.ts: field required"),
    (_msg(type="ping", ts=None), "ping.ts: must be a number"),
    (_msg(type="ping", ts=[1]), "ping.ts: must be a number"),
    (_msg(type="ping", ts=math.nan), "ping.ts: must be a finite number"),
    (_msg(type="ping", ts=math.inf), "ping.ts: must be a finite number"),
    (_msg(type="ping", ts=-math.inf), "ping.ts: must be a finite number"),
    (_msg(type="ping", ts=1e400), "ping.ts: must be a finite number"),  # json reads inf
    (_msg(type="ping", ts=2**1024), "ping.ts: number out of range"),
    (_msg(type="ping", ts=-(2**1024)), "ping.ts: number out of range"),
    (_msg(type="ping", ts=1, reply=None), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply=[True]), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply=2), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, x=1), "ping: unknown field (not part of the protocol)"),
    (_msg(type="ping", x=1), "ping.ts: field required"),  # the fields before unknown ones
    (
        '{"v":1,"type":"ack","ids":["abcdefgh"],"type":"ping","ts":1}',
        "ping: unknown field (not part of the protocol)",
    ),
]


@pytest.mark.parametrize(("raw", "message"), ERRORS)
def test_each_error(raw: str | bytes, message: str) -> None:
    with pytest.raises(inbound.ProtocolError) as info:
        inbound.parse_server_message(raw)
    assert str(info.value) == message
    assert info.value.__cause__ is None
    assert assert_same(raw) == "refused"


ACCEPTED: list[tuple[str | bytes, object]] = [
    (_msg(type="ack", ids=[ID]), wire.Ack([ID])),
    (_msg(type="ack", ids=["a" * 64, "A-Z_09-_"]), wire.Ack(["a" * 64, "A-Z_09-_"])),
    (_msg(type="ack", ids=[ID] * MAX_ACK_IDS), wire.Ack([ID] * MAX_ACK_IDS)),
    (_msg(type="config"), wire.Config()),
    (_msg(type="config", interval=None, rules=None), wire.Config()),
    (_msg(type="config", interval=1), wire.Config(1.0)),
    (_msg(type="config", interval=3600), wire.Config(3600.0)),
    (_msg(type="config", interval=3600.0), wire.Config(3600.0)),
    (_msg(type="config", interval=2.5, rules=[]), wire.Config(2.5, [])),
    (_msg(type="config", rules=[{}] * MAX_PUSHED_RULES), wire.Config(None, [{}] * 200)),
    (
        _msg(type="config", rules=[{"\ud800": "\udfff", "a": [None]}]),
        wire.Config(None, [{"\ud800": "\udfff", "a": [None]}]),
    ),
    (_msg(type="ping", ts=0), wire.Ping(0.0)),
    (_msg(type="ping", ts=-0.0, reply=True), wire.Ping(-0.0, True)),
    (_msg(type="ping", ts=1.5, reply=False), wire.Ping(1.5)),
    (_msg(type="ping", ts=2**64 + 1), wire.Ping(float(2**64 + 1))),
    (_msg(type="ping", ts=2**1024 - 2**971), wire.Ping(1.7976931348623157e308)),
    (_msg(type="ping", ts=5e-324), wire.Ping(5e-324)),
    (_msg(v=1.0, type="ping", ts=1), wire.Ping(1.0)),  # v == 1, as agent.protocol asks
    (_msg(v=True, type="ping", ts=1), wire.Ping(1.0)),
    ('{"v":1,"type":"ping","ts":1,"ts":2}', wire.Ping(2.0)),  # json.loads keeps the last
    (b'\xef\xbb\xbf{"v":1,"type":"ping","ts":1}', wire.Ping(1.0)),  # json.loads takes a BOM
    ('{"v":1,"type":"ping","ts":1}'.encode("utf-16"), wire.Ping(1.0)),
]


@pytest.mark.parametrize(("raw", "expected"), ACCEPTED)
def test_accepted_examples(raw: str | bytes, expected: object) -> None:
    got = inbound.parse_server_message(raw)
    assert got == expected
    assert assert_same(raw) == "ok"


STRICTER: list[tuple[str | bytes, str]] = [
    (_msg(type="ping", ts=True), "ping.ts: must be a number"),
    (_msg(type="ping", ts=False), "ping.ts: must be a number"),
    (_msg(type="ping", ts="1"), "ping.ts: must be a number"),
    (_msg(type="ping", ts=" 1.5 "), "ping.ts: must be a number"),
    (_msg(type="ping", ts="1e3"), "ping.ts: must be a number"),
    (_msg(type="config", interval=True), "config.interval: must be a number"),
    (_msg(type="config", interval="5"), "config.interval: must be a number"),
    (_msg(type="config", interval="3600"), "config.interval: must be a number"),
    (_msg(type="ping", ts=1, reply=1), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply=0), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply=1.0), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply=0.0), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply="true"), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply="no"), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply="on"), "ping.reply: must be true or false"),
    (_msg(type="ping", ts=1, reply="1"), "ping.reply: must be true or false"),
]


@pytest.mark.parametrize(("raw", "message"), STRICTER)
def test_stricter_than_pydantic_lax_mode(raw: str | bytes, message: str) -> None:
    """The models coerce these values of another JSON type; the hand parser refuses them."""
    protocol.parse_server_message(raw)
    with pytest.raises(inbound.ProtocolError) as info:
        inbound.parse_server_message(raw)
    assert str(info.value) == message
    assert assert_same(raw) == "stricter"


def test_the_size_limit_is_checked_first_on_str_and_bytes() -> None:
    ping = '{"v":1,"type":"ping","ts":1}'
    at_limit = ping.ljust(MAX_SERVER_FRAME_BYTES)
    for raw in (at_limit, at_limit.encode()):
        assert inbound.parse_server_message(raw) == wire.Ping(1.0)
        assert assert_same(raw) == "ok"
    too_big = f"message: too large ({MAX_SERVER_FRAME_BYTES + 1} > 65536 bytes)"
    for raw in (at_limit + " ", (at_limit + " ").encode(), "[" * (MAX_SERVER_FRAME_BYTES + 1)):
        with pytest.raises(inbound.ProtocolError) as info:
            inbound.parse_server_message(raw)
        assert str(info.value) == too_big
        assert assert_same(raw) == "refused"
    # The length of what was given: characters of a str, bytes of bytes.
    wide = json.dumps(
        {"v": 1, "type": "config", "rules": [{"é": "é" * 40_000}]}, ensure_ascii=False
    )
    assert len(wide) < MAX_SERVER_FRAME_BYTES < len(wide.encode())
    assert assert_same(wide) == "ok"
    assert assert_same(wide.encode()) == "refused"


def test_deep_nesting_is_refused_or_kept_never_a_crash() -> None:
    deep = '{"v":1,"type":"config","rules":[{"a":' + "[" * 30_000 + "]" * 30_000 + "}]}"
    with pytest.raises(inbound.ProtocolError, match=r"^message: not JSON \(RecursionError\)$"):
        inbound.parse_server_message(deep)
    assert assert_same(deep) == "refused"
    unclosed = '{"v":1,"type":"ping","ts":1,"x":' + "{" * 60_000
    assert assert_same(unclosed) == "refused"
    nested = '{"v":1,"type":"config","rules":[{"a":' + "[" * 200 + "]" * 200 + "}]}"
    assert assert_same(nested) == "ok"


MARKER = "SECRET-10.8.0.6-alice"


@pytest.mark.parametrize(
    "raw",
    [
        MARKER,
        f'"{MARKER}"',
        f'{{"{MARKER}": 1}}',
        _msg(v=MARKER, type="ping", ts=1),
        _msg(type=MARKER),
        _msg(type="ping", ts=1, **{MARKER: 1}),
        _msg(type="ack", ids=[MARKER]),
        _msg(type="ack", ids=[ID, MARKER + "!"]),
        _msg(type="ack", ids=MARKER),
        _msg(type="config", interval=MARKER),
        _msg(type="config", rules=MARKER),
        _msg(type="config", rules=[MARKER]),
        _msg(type="config", rules=[{}], **{MARKER: [MARKER]}),
        _msg(type="ping", ts=MARKER),
        _msg(type="ping", ts=1, reply=MARKER),
        '{"v":1,"type":"ping","ts":1,"x":"' + MARKER + '"' + "[" * 3000,
        MARKER * 5000,
        f'{{"v":1,"type":"ping","ts":1,"x":"{MARKER}\xff"}}'.encode("latin-1"),
    ],
)
def test_errors_never_echo_peer_input(raw: str | bytes) -> None:
    with pytest.raises(inbound.ProtocolError) as info:
        inbound.parse_server_message(raw)
    for part in (MARKER, "SECRET", "10.8.0.6", "alice"):
        assert part not in str(info.value)
        assert part not in repr(info.value)
    assert info.value.__cause__ is None
    assert assert_same(raw) in ("refused", "stricter")


def test_the_table_covers_both_verdicts_and_every_message_type() -> None:
    verdicts = [assert_same(raw) for raw, _ in ERRORS + ACCEPTED + STRICTER]
    assert verdicts.count("ok") == len(ACCEPTED)
    assert verdicts.count("stricter") == len(STRICTER)
    kinds = {type(inbound.parse_server_message(raw)) for raw, _ in ACCEPTED}
    assert kinds == {wire.Ack, wire.Config, wire.Ping}


# -- hypothesis: valid messages, mutated ones, any JSON ----------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "_-"
event_ids = st.text(alphabet=ID_CHARS, min_size=8, max_size=64)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.floats(),  # NaN and infinities included (sent as NaN / Infinity)
    st.text(max_size=8),
    st.sampled_from(["", "1", " 2.5 ", "true", "yes", "ack", "ping", "\ud800", ID, MARKER]),
)
_keys = st.text(max_size=4)
_flat = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(_keys, json_scalars, max_size=3),
)
anything = st.one_of(
    json_scalars,
    json_scalars,
    st.lists(_flat, max_size=3),
    st.dictionaries(_keys, _flat, max_size=3),
)
"""Any JSON value, nested two deep (deeper nesting: test_deep_nesting_is_refused_or_kept)."""
rule_tables = st.dictionaries(st.text(max_size=4), anything, max_size=3)
OMIT = object()


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["ack", "config", "ping"]))
    message: dict[str, Any] = {"v": 1, "type": kind}
    if kind == "ack":
        message["ids"] = draw(st.lists(event_ids, min_size=1, max_size=5))
    elif kind == "config":
        intervals = st.floats(1, 3600) | st.integers(1, 3600) | st.sampled_from([1.0, 3600])
        fields = {
            "interval": draw(st.sampled_from([OMIT, None]) | intervals),
            "rules": draw(st.sampled_from([OMIT, None]) | st.lists(rule_tables, max_size=3)),
        }
        message.update({k: v for k, v in fields.items() if v is not OMIT})
    else:
        message["ts"] = draw(finite | st.integers(-(2**80), 2**80))
        reply = draw(st.sampled_from([OMIT, True, False]))
        if reply is not OMIT:
            message["reply"] = reply
    keys = draw(st.permutations(list(message)))
    return {key: message[key] for key in keys}


def _serialize(message: object, ensure_ascii: bool, as_bytes: bool) -> str | bytes:
    """JSON as a server may send it (json.loads reads bytes with surrogatepass, like this)."""
    raw = json.dumps(message, allow_nan=True, ensure_ascii=ensure_ascii)
    return raw.encode("utf-8", "surrogatepass") if as_bytes else raw


@settings(max_examples=300, deadline=None)
@given(valid_messages(), st.booleans(), st.booleans())
def test_valid_messages_parse_to_equal_contents(
    message: dict[str, Any], ensure_ascii: bool, as_bytes: bool
) -> None:
    raw = _serialize(message, ensure_ascii, as_bytes)
    assert assert_same(raw) == "ok"
    got = inbound.parse_server_message(raw)
    if isinstance(got, wire.Ack):
        assert got.ids == message["ids"]
    elif isinstance(got, wire.Config):
        interval = message.get("interval")
        assert _exact(got.interval) == _exact(None if interval is None else float(interval))
        assert repr(got.rules) == repr(message.get("rules"))
    else:
        assert _exact(got.ts) == _exact(float(message["ts"]))
        assert got.reply is message.get("reply", False)


NUMBERS_NEAR: list[Any] = [
    *(0.999, 1, 1.0, 1.0000001, 3599.9999, 3600, 3600.0, 3600.0001, 3601, 0, 0.0, -0.0, -1),
    *(5e-324, 1.7976931348623157e308, 2**63, 2**64 + 1, 10**400, 2**1024 - 1, -(2**1024)),
    *(math.nan, math.inf, -math.inf, True, False, None, "5", " 1.5 ", "1e3", "inf", "nan"),
    *("true", "no", "on", "0", "1", "", [1], {"a": 1}),
]
TYPES_NEAR: list[Any] = ["ack", "config", "ping", "Ack", "PING", "ping ", "hello", "", None, 1]
TYPES_NEAR += [True, ["ack"], {"type": "ack"}]
V_NEAR: list[Any] = [1, 1.0, True, 2, 0, -1, "1", None, [1], {"v": 1}, 1.0000000000000002, False]


def _strings_near(value: str) -> list[Any]:
    return [
        *(value + "\n", " " + value, value + " ", value + "é", value + "\ud800", value + "\x00"),
        *(value + ".", value + "/", value[:7], value.ljust(64, "a")[:64], value.ljust(65, "a")),
        *("a" * 7, "a" * 8, "a" * 64, "a" * 65, "", value.upper(), 12345678, None, [value]),
    ]


def _near(draw: st.DrawFn, key: str, value: Any) -> Any:
    """A value beside ``value``: the edge of its bound, a lax-mode cousin, a bad character."""
    if key == "v":
        return draw(st.sampled_from(V_NEAR))
    if key == "type":
        return draw(st.sampled_from(TYPES_NEAR))
    if isinstance(value, str):
        return draw(st.sampled_from(_strings_near(value)))
    if isinstance(value, list):
        return draw(st.sampled_from([[], [[]], [None], {}, "abc", None, value * 2, [value]]))
    return draw(st.sampled_from(NUMBERS_NEAR) if draw(st.integers(0, 3)) else anything)


TOP_KEYS = ["v", "type", "ids", "interval", "rules", "ts", "reply", "x", "", "V", "Type"]
OWN_KEYS = {"ack": ["ids"], "config": ["interval", "rules"], "ping": ["ts", "reply"]}


@st.composite
def mutated_messages(draw: st.DrawFn) -> str | bytes:
    """A valid message, then 1-3 mutations, at the top level, in ``ids`` or in ``rules``: a
    near value, any JSON value, a deleted or renamed key, a list grown to its bound or past."""
    message = draw(valid_messages())
    for _ in range(draw(st.integers(1, 3))):
        items = message.get("ids", message.get("rules"))
        where = draw(st.sampled_from(["top", "top", "item"]))
        if where == "item" and isinstance(items, list) and items:
            i = draw(st.integers(0, len(items) - 1))
            action = draw(st.sampled_from(["near", "near", "any"]))
            items[i] = draw(anything) if action == "any" else _near(draw, "", items[i])
            continue
        kind = message.get("type")
        own = OWN_KEYS.get(kind, []) if isinstance(kind, str) else []  # mostly its own fields
        key = draw(st.sampled_from(own * 4 + TOP_KEYS))
        action = draw(st.sampled_from(["near", "near", "near", "any", "delete", "grow", "rekey"]))
        if action == "near":
            message[key] = _near(draw, key, message.get(key, draw(st.sampled_from([1, ID]))))
        elif action == "any":
            message[key] = draw(anything)
        elif action == "delete":
            message.pop(key, None)
        elif action == "rekey" and key in message:
            message[draw(st.sampled_from(TOP_KEYS))] = message.pop(key)
        elif action == "grow":
            field = "ids" if message.get("type") == "ack" else "rules"
            size = draw(
                st.sampled_from(
                    [MAX_ACK_IDS, MAX_ACK_IDS + 1, MAX_PUSHED_RULES, MAX_PUSHED_RULES + 1]
                )
            )
            fill = draw(st.sampled_from([ID, "a" * 64]) if field == "ids" else rule_tables)
            message[field] = [fill] * size  # 1000 of 64 chars: over the size limit
    return _serialize(message, draw(st.booleans()), draw(st.booleans()))


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_messages())
def test_mutated_messages_get_the_same_verdict(raw: str | bytes) -> None:
    assert_same(raw)


@settings(max_examples=300, deadline=None)
@given(anything, st.sampled_from(["ack", "config", "ping", None]))
def test_any_json_gets_the_same_verdict(value: object, kind: str | None) -> None:
    assert_same(json.dumps(value, allow_nan=True))
    if isinstance(value, dict):
        assert_same(json.dumps({**value, "v": 1, "type": kind}, allow_nan=True))
        assert_same(json.dumps({"v": 1, "type": kind, **value}, allow_nan=True))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["ack", "config", "ping"]), st.lists(st.sampled_from(TOP_KEYS)), anything)
def test_field_by_field_junk_gets_the_same_verdict(kind: str, keys: list[str], junk: Any) -> None:
    """Every protocol field, and some strangers, set to junk of any JSON type."""
    assert_same(json.dumps({"v": 1, "type": kind, **dict.fromkeys(keys, junk)}, allow_nan=True))


numbers = st.one_of(
    st.sampled_from(NUMBERS_NEAR),
    st.floats(),
    st.floats(0.5, 3601),
    st.integers(),
    st.integers(-(2**1030), 2**1030),
    st.booleans(),
    st.from_regex(r"\s*-?[0-9]{1,4}(\.[0-9]*)?(e[0-9]{1,3})?\s*", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([("ping", "ts"), ("ping", "reply"), ("config", "interval")]), numbers)
def test_numbers_and_booleans_get_the_same_verdict(field: tuple[str, str], value: Any) -> None:
    kind, name = field
    message = {"v": 1, "type": kind, name: value}
    if name == "reply":
        message["ts"] = 1.0
    assert_same(json.dumps(message, allow_nan=True))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(ID_CHARS + " \n\t.:/é\x00\ud800", min_size=0, max_size=70), max_size=3))
def test_event_ids_get_the_same_verdict(ids: list[str]) -> None:
    assert_same(json.dumps({"v": 1, "type": "ack", "ids": ids}))
