"""Server → agent messages checked by hand: the models' verdicts without pydantic.

:func:`parse_server_message` accepts exactly what :func:`agent.protocol.parse_server_message`
accepts for JSON input, with equal values, and refuses what it refuses, but returns the plain
types of :mod:`agent.wire` and imports only the standard library (pydantic's schemas would cost
a VPN node about a MiB of memory). ``tests/agent/test_inbound.py`` proves it against the models.

The checks, in the models' order (the first failing one is reported): size (``len`` of the str
or bytes), JSON, an object, ``v`` == 1 (as :mod:`agent.protocol` asks before the models, so 1.0
and ``true`` pass there too), ``type`` one of ack/config/ping, the type's fields in order, then
unknown fields. Integers are taken as floats (``float(n)``; one too large for a float is refused).

Stricter than pydantic's lax mode, only where it would coerce a value that is not of the
field's JSON type (the models accept these, this module refuses them):

* ``ping.ts`` and ``config.interval`` given as a JSON boolean (the models read 1.0 / 0.0);
* ``ping.ts`` and ``config.interval`` given as a string holding a number (``"5"``, ``" 1.5 "``);
* ``ping.reply`` given as anything but a JSON boolean (the models take 0 / 1, 0.0 / 1.0 and
  strings such as ``"true"``, ``"no"``, ``"on"``, ``"1"``).

Errors read ``"<path>: <reason>"`` (the path as the models give it, e.g. ``ack.ids.3``; ``type``
for a missing or unknown type; the message only, never the key, for an unknown field) and quote
nothing the peer sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from agent.wire import (
    MAX_ACK_IDS,
    MAX_PUSHED_RULES,
    MAX_SERVER_FRAME_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Config,
    Ping,
)

_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")  # json imports re: it costs nothing more
_REQUIRED: Any = object()
"""Stands for a field the message left out."""


class ProtocolError(ValueError):
    """A message that is not valid JSON, too large, or does not match the protocol."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{where}: must be a number")
    try:
        return float(value)
    except OverflowError:
        raise ProtocolError(f"{where}: number out of range") from None


def _ack(data: dict[str, Any]) -> Ack:
    ids = data.get("ids", _REQUIRED)
    if ids is _REQUIRED:
        raise ProtocolError("ack.ids: field required")
    if not isinstance(ids, list):
        raise ProtocolError("ack.ids: must be a list")
    if not 1 <= len(ids) <= MAX_ACK_IDS:
        raise ProtocolError(f"ack.ids: must hold 1 to {MAX_ACK_IDS} ids")
    for i, event_id in enumerate(ids):
        if not isinstance(event_id, str) or _EVENT_ID.fullmatch(event_id) is None:
            raise ProtocolError(f"ack.ids.{i}: must be 8 to 64 characters of A-Z a-z 0-9 _ -")
    return Ack(ids)


def _config(data: dict[str, Any]) -> Config:
    interval, rules = data.get("interval"), data.get("rules")
    if interval is not None:
        interval = _number(interval, "config.interval")
        if not 1 <= interval <= 3600:  # NaN fails too
            raise ProtocolError("config.interval: must be from 1 to 3600")
    if rules is not None:
        if not isinstance(rules, list):
            raise ProtocolError("config.rules: must be a list or null")
        if len(rules) > MAX_PUSHED_RULES:
            raise ProtocolError(f"config.rules: must hold at most {MAX_PUSHED_RULES} rules")
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                raise ProtocolError(f"config.rules.{i}: must be an object")
    return Config(interval, rules)


def _ping(data: dict[str, Any]) -> Ping:
    ts, reply = data.get("ts", _REQUIRED), data.get("reply", False)
    if ts is _REQUIRED:
        raise ProtocolError("ping.ts: field required")
    ts = _number(ts, "ping.ts")
    if not math.isfinite(ts):
        raise ProtocolError("ping.ts: must be a finite number")
    if not isinstance(reply, bool):
        raise ProtocolError("ping.reply: must be true or false")
    return Ping(ts, reply)


_TYPES: dict[str, tuple[Callable[[dict[str, Any]], Ack | Config | Ping], frozenset[str]]] = {
    "ack": (_ack, frozenset({"v", "type", "ids"})),
    "config": (_config, frozenset({"v", "type", "interval", "rules"})),
    "ping": (_ping, frozenset({"v", "type", "ts", "reply"})),
}
"""Per message type: its parser, and the fields it may hold."""


def parse_server_message(raw: str | bytes) -> Ack | Config | Ping:
    """Parse what a server sent. Raises ProtocolError; never returns unchecked data."""
    if len(raw) > MAX_SERVER_FRAME_BYTES:
        raise ProtocolError(f"message: too large ({len(raw)} > {MAX_SERVER_FRAME_BYTES} bytes)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"message: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ProtocolError("message: not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"v: missing or unsupported protocol version (want {PROTOCOL_VERSION})")
    kind = data.get("type", _REQUIRED)
    if kind is _REQUIRED:
        raise ProtocolError("type: field required")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise ProtocolError("type: unknown message type (want ack, config or ping)")
    parse, fields = _TYPES[kind]
    message = parse(data)  # the fields first, as the models check them
    if not fields.issuperset(data):
        raise ProtocolError(f"{kind}: unknown field (not part of the protocol)")
    return message
