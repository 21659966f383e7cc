"""Wire models of the agent ⇄ server stream (◆ contract; the server imports this module).

One websocket per agent to ``/api/v1/agent/stream`` with ``Authorization: Bearer <node token>``.
Every message is a JSON object with ``type`` and ``v`` (protocol version, now 1).

Agent → server: ``hello`` (once per connection, first), ``metrics`` (every interval), ``alert``
(one alert event; resent until acked), ``ping``.
Server → agent: ``ack`` (event ids the server has taken over), ``config`` (interval and/or rules
pushed from the account), ``ping``. A ``ping`` is answered by a ``ping`` with ``reply`` true.

Models are strict (unknown fields refused) and bounded (string and list lengths), so a hostile
peer cannot make the other side hold unbounded data.

The server parses with :func:`parse_agent_frame`: the same checks, but a ``metrics`` message
comes back as plain validated data (:class:`MetricsFrame` of :class:`SampleData`) instead of
one model per sample, which halves its cost (a frame of 50 samples, 5,000 times a second).
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any, Literal, NamedTuple, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

# The limits live with the agent's plain types (agent.wire); the server reads them here.
from agent.wire import (
    MAX_ACK_IDS as MAX_ACK_IDS,
    MAX_AGENT_FRAME_BYTES as MAX_AGENT_FRAME_BYTES,
    MAX_HELLO_FIRING as MAX_HELLO_FIRING,
    MAX_PUSHED_RULES as MAX_PUSHED_RULES,
    MAX_SAMPLES as MAX_SAMPLES,
    MAX_SERVER_FRAME_BYTES as MAX_SERVER_FRAME_BYTES,
    PROTOCOL_VERSION as PROTOCOL_VERSION,
    STREAM_PATH as STREAM_PATH,
)

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


def _is_firing(event: AlertEvent) -> AlertEvent:
    if event.status != "firing":
        raise ValueError("a hello names firing alerts only")
    return event


FiringEvent = Annotated[AlertEvent, AfterValidator(_is_firing)]


class Hello(_Message):
    type: Literal["hello"] = "hello"
    agent_version: Annotated[str, StringConstraints(max_length=32)]
    interval: float = Field(gt=0, le=3600)
    metrics: list[Name] = Field(default_factory=list, max_length=500)
    rules: list[Name] = Field(default_factory=list, max_length=1000)
    buffer_seconds: int = Field(ge=0)
    firing: list[FiringEvent] = Field(default_factory=list, max_length=MAX_HELLO_FIRING)
    """Alerts still firing whose firing event the server acked already (their own ids): a
    server that restarted since learns them without delivering anything again."""


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


# -- the server's hot path: metrics as validated plain data ------------------------------------


@with_config(ConfigDict(extra="forbid"))
class SampleData(TypedDict):
    """A :class:`WireSample` as validated plain data: the same fields, each with the very same
    annotated type (so the same validator), unknown keys refused; ``l`` is absent when the
    agent sent no labels (the model would hold ``{}``)."""

    m: Name
    l: NotRequired[Annotated[dict[Name, LabelValue], Field(max_length=8)]]  # noqa: E741
    v: Finite | Coarsened


@with_config(ConfigDict(extra="forbid"))
class _MetricsData(TypedDict):
    """:class:`Metrics` as plain data (``v`` and ``type`` are present: ``_loads`` and the
    dispatch in :func:`parse_agent_frame` ask for them)."""

    v: Literal[1]
    type: Literal["metrics"]
    seq: Annotated[int, Field(ge=0)]
    ts: Finite
    samples: Annotated[list[SampleData], Field(max_length=MAX_SAMPLES)]


class MetricsFrame(NamedTuple):
    """A validated ``metrics`` message: what :class:`Metrics` holds, samples as plain data."""

    seq: int
    ts: float
    samples: list[SampleData]

    @classmethod
    def of(cls, message: Metrics) -> MetricsFrame:
        """The frame a parsed :class:`Metrics` model stands for (``l`` only where it was set)."""
        samples: list[SampleData] = []
        for s in message.samples:
            sample: SampleData = {"m": s.m, "v": s.v}
            if "l" in s.model_fields_set:
                sample["l"] = s.l
            samples.append(sample)
        return cls(message.seq, message.ts, samples)


@cache
def _metrics_adapter() -> TypeAdapter[_MetricsData]:
    return TypeAdapter(_MetricsData)


def parse_agent_frame(raw: str | bytes) -> Hello | MetricsFrame | Alert | Ping:
    """:func:`parse_agent_message` for the server's hot path: exactly the same messages are
    accepted and refused, with the same errors, but a ``metrics`` message is returned as a
    :class:`MetricsFrame` (its samples validated into plain dicts by pydantic-core against the
    same annotated types, without building a model per sample). pydantic-core reads the JSON
    itself (one pass, no Python dict in between: ~40 % less time per frame). Anything the lean
    check refuses — every other message type too — goes through ``json.loads`` and the models,
    which decide and raise the usual error (a message without the text ``"metrics"`` goes
    there at once: a ping or an alert need not fail the lean check first)."""
    maybe = '"metrics"' in raw if isinstance(raw, str) else b'"metrics"' in raw
    if maybe and len(raw) <= MAX_AGENT_FRAME_BYTES:
        try:
            checked = _metrics_adapter().validate_json(raw)
        except ValidationError:
            pass  # not a valid metrics message: the path below says what it is
        else:
            return MetricsFrame(checked["seq"], checked["ts"], checked["samples"])
    data = _loads(raw, MAX_AGENT_FRAME_BYTES)
    try:
        message = _agent_adapter().validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None
    return MetricsFrame.of(message) if isinstance(message, Metrics) else message


def dumps(message: BaseModel) -> str:
    """Compact JSON for the wire."""
    return message.model_dump_json(exclude_none=False)
