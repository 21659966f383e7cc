"""Wire models of the agent ⇄ server stream (◆ contract; the server imports this module).

One websocket per agent to ``/api/v1/agent/stream`` with ``Authorization: Bearer <node token>``.
Every message is a JSON object with ``type`` and ``v`` (protocol version, now 1).

Agent → server: ``hello`` (once per connection, first), ``metrics`` (every interval), ``alert``
(one alert event; resent until acked), ``ping``.
Server → agent: ``ack`` (event ids the server has taken over), ``config`` (interval and/or rules
pushed from the account), ``ping``. A ``ping`` is answered by a ``ping`` with ``reply`` true.

Models are strict (unknown fields refused) and bounded (string and list lengths), so a hostile
peer cannot make the other side hold unbounded data.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

PROTOCOL_VERSION: Final = 1
STREAM_PATH = "/api/v1/agent/stream"
MAX_AGENT_FRAME_BYTES = 512 * 1024
"""Largest message an agent may send (a metrics frame of a big node stays far below)."""
MAX_SERVER_FRAME_BYTES = 64 * 1024
"""Largest message a server may send to an agent; bigger ones are refused by the agent."""
MAX_SAMPLES = 2000
MAX_ACK_IDS = 1000
MAX_PUSHED_RULES = 200

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:+/-]+$")
]
LabelValue = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EventId = Annotated[
    str, StringConstraints(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
Coarsened = Annotated[str, StringConstraints(pattern=r"^<[0-9]{1,3}$")]
"""A small count sent as "below k", e.g. "<5"."""
Text = Annotated[str, StringConstraints(max_length=1024)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Severity = Literal["info", "warning", "critical"]
AlertStatus = Literal["firing", "resolved"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1] = PROTOCOL_VERSION


class WireSample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    m: Name
    l: dict[Name, LabelValue] = Field(default_factory=dict, max_length=8)  # noqa: E741
    v: Finite | Coarsened


class AlertEvent(BaseModel):
    """One alert state change. ``id`` is the same on every resend; ``fingerprint`` names the
    alert (rule + series labels) and is the same for its firing and resolved events."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: EventId
    fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    rule: Name
    status: AlertStatus
    severity: Severity
    metric: Name
    labels: dict[Name, LabelValue] = Field(default_factory=dict, max_length=8)
    value: Finite | Coarsened | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    summary: Text = ""
    started_at: float = Field(allow_inf_nan=False)
    ended_at: float | None = Field(default=None, allow_inf_nan=False)
    ts: float = Field(allow_inf_nan=False)
    """When the agent produced this event (seconds since the epoch)."""


class Hello(_Message):
    type: Literal["hello"] = "hello"
    agent_version: Annotated[str, StringConstraints(max_length=32)]
    interval: float = Field(gt=0, le=3600)
    metrics: list[Name] = Field(default_factory=list, max_length=500)
    rules: list[Name] = Field(default_factory=list, max_length=1000)
    buffer_seconds: int = Field(ge=0)


class Metrics(_Message):
    type: Literal["metrics"] = "metrics"
    seq: int = Field(ge=0)
    ts: float = Field(allow_inf_nan=False)
    samples: list[WireSample] = Field(max_length=MAX_SAMPLES)


class Alert(_Message):
    type: Literal["alert"] = "alert"
    event: AlertEvent


class Ping(_Message):
    type: Literal["ping"] = "ping"
    ts: float = Field(allow_inf_nan=False)
    reply: bool = False


class Ack(_Message):
    type: Literal["ack"] = "ack"
    ids: list[EventId] = Field(min_length=1, max_length=MAX_ACK_IDS)


class Config(_Message):
    """Settings pushed by the server. ``rules`` are rule tables in the rules-file schema; the
    agent validates them exactly like a rules file and keeps its current rules if they fail."""

    type: Literal["config"] = "config"
    interval: float | None = Field(default=None, ge=1, le=3600)
    rules: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_PUSHED_RULES)


AgentMessage = Annotated[Hello | Metrics | Alert | Ping, Field(discriminator="type")]
ServerMessage = Annotated[Ack | Config | Ping, Field(discriminator="type")]

_server_adapter: TypeAdapter[Ack | Config | Ping] = TypeAdapter(ServerMessage)


@cache
def _agent_adapter() -> TypeAdapter[Hello | Metrics | Alert | Ping]:
    """Built on first use: only the server parses agent messages."""
    return TypeAdapter(AgentMessage)


_QUOTED = re.compile(r"'[^']*'")


class ProtocolError(ValueError):
    """A message that is not valid JSON, too large, or does not match the models."""


def _loads(raw: str | bytes, limit: int) -> Any:
    if len(raw) > limit:
        raise ProtocolError(f"message of {len(raw)} bytes exceeds the {limit}-byte limit")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise ProtocolError("message is not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("unsupported or missing protocol version 'v'")
    return data


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"])[:80] or "message"
    # pydantic quotes parts of the input in some messages; never echo peer input.
    message = _QUOTED.sub("'…'", first["msg"])[:120]
    return f"{where}: {message}"


def parse_server_message(raw: str | bytes) -> Ack | Config | Ping:
    """Parse what a server sent. Raises ProtocolError; never returns unchecked data."""
    data = _loads(raw, MAX_SERVER_FRAME_BYTES)
    try:
        return _server_adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None


def parse_agent_message(raw: str | bytes) -> Hello | Metrics | Alert | Ping:
    """Parse what an agent sent (used by the server). Raises ProtocolError."""
    data = _loads(raw, MAX_AGENT_FRAME_BYTES)
    try:
        return _agent_adapter().validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None


def dumps(message: BaseModel) -> str:
    """Compact JSON for the wire."""
    return message.model_dump_json(exclude_none=False)
