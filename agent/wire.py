"""The agent's side of the stream: plain message types, their JSON, and the wire's limits.

:mod:`agent.protocol` holds the ◆ contract as pydantic models; the server parses with those.
The agent only *writes* agent messages and reads three small server messages, so it keeps
its own plain counterparts here and never builds a pydantic model or validator: that keeps
a megabyte of schemas out of every VPN node's memory and ~7 µs per sample out of every cycle.
``tests/agent/test_wire.py`` proves that what :func:`encode` writes is exactly what the
models accept and read back, field for field; :mod:`agent.inbound` checks server messages
by hand, proven against the models in ``tests/agent/test_inbound.py``.

Field names and order follow the models; the JSON carries ``v`` and ``type`` like theirs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, NamedTuple

PROTOCOL_VERSION: Final = 1
STREAM_PATH: Final = "/api/v1/agent/stream"
MAX_AGENT_FRAME_BYTES: Final = 512 * 1024
"""Largest message an agent may send (a metrics frame of a big node stays far below)."""
MAX_SERVER_FRAME_BYTES: Final = 64 * 1024
"""Largest message a server may send to an agent; bigger ones are refused by the agent."""
MAX_SAMPLES: Final = 2000
MAX_ACK_IDS: Final = 1000
MAX_PUSHED_RULES: Final = 200
MAX_HELLO_FIRING: Final = 200
"""Most still-firing alerts a ``hello`` names (an agent with more sends the oldest first)."""

Severity = Literal["info", "warning", "critical"]
AlertStatus = Literal["firing", "resolved"]


class WireSample(NamedTuple):
    """One gated sample: metric ``m``, labels ``l``, value ``v`` (a float, or "<k" when a small
    count was coarsened). A named tuple: a frame builds ~60 of them every cycle, and a tuple is
    quicker to make than a frozen dataclass."""

    m: str
    l: dict[str, str]  # noqa: E741
    v: float | str

    def as_dict(self) -> dict[str, Any]:
        return {"m": self.m, "l": self.l, "v": self.v}


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEvent:
    """One alert state change. ``id`` is the same on every resend; ``fingerprint`` names the
    alert (rule + series labels) and is the same for its firing and resolved events."""

    id: str
    fingerprint: str
    rule: str
    status: AlertStatus
    severity: Severity
    metric: str
    labels: dict[str, str] = field(default_factory=dict)
    value: float | str | None = None
    threshold: float | None = None
    summary: str = ""
    started_at: float
    ended_at: float | None = None
    ts: float
    """When the agent produced this event (seconds since the epoch)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "status": self.status,
            "severity": self.severity,
            "metric": self.metric,
            "labels": self.labels,
            "value": _finite_or_none(self.value),
            "threshold": _finite_or_none(self.threshold),
            "summary": self.summary,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Sent once, first, on every connection. ``firing`` holds the alerts still firing whose
    firing event the server has acked already, so a server that restarted since knows them."""

    type: ClassVar[Literal["hello"]] = "hello"
    agent_version: str
    interval: float
    metrics: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    buffer_seconds: int
    firing: list[AlertEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "type": self.type,
            "agent_version": self.agent_version,
            "interval": self.interval,
            "metrics": self.metrics,
            "rules": self.rules,
            "buffer_seconds": self.buffer_seconds,
            "firing": [event.as_dict() for event in self.firing],
        }


@dataclass(frozen=True, slots=True)
class Metrics:
    type: ClassVar[Literal["metrics"]] = "metrics"
    seq: int
    ts: float
    samples: list[WireSample]

    def as_dict(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "type": self.type,
            "seq": self.seq,
            "ts": self.ts,
            "samples": [s.as_dict() for s in self.samples],
        }


@dataclass(frozen=True, slots=True)
class Alert:
    type: ClassVar[Literal["alert"]] = "alert"
    event: AlertEvent

    def as_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "type": self.type, "event": self.event.as_dict()}


@dataclass(frozen=True, slots=True)
class Ping:
    """Either side may ping; a ping is answered by a ping with ``reply`` true and the same ts."""

    type: ClassVar[Literal["ping"]] = "ping"
    ts: float
    reply: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "type": self.type, "ts": self.ts, "reply": self.reply}


@dataclass(frozen=True, slots=True)
class Ack:
    """The server took over these event ids (1 to MAX_ACK_IDS of them)."""

    type: ClassVar[Literal["ack"]] = "ack"
    ids: list[str]


@dataclass(frozen=True, slots=True)
class Config:
    """Settings pushed by the server. ``rules`` are rule tables in the rules-file schema; the
    agent validates them exactly like a rules file and keeps its current rules if they fail."""

    type: ClassVar[Literal["config"]] = "config"
    interval: float | None = None
    rules: list[dict[str, Any]] | None = None


AgentMessage = Hello | Metrics | Alert | Ping
ServerMessage = Ack | Config | Ping


def _finite_or_none(value: float | str | None) -> float | str | None:
    """The models refuse NaN and infinity; an event keeps its place with the value unknown."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_PREFIXES: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
"""Series -> the JSON of its sample up to the value; series repeat every cycle (bounded)."""
_MAX_PREFIXES = 4096


def _sample_json(sample: WireSample) -> str:
    key = (sample.m, tuple(sample.l.items()))
    prefix = _PREFIXES.get(key)
    if prefix is None:
        if len(_PREFIXES) >= _MAX_PREFIXES:
            _PREFIXES.clear()
        prefix = _PREFIXES[key] = f'{{"m":{_dumps(sample.m)},"l":{_dumps(sample.l)},"v":'
    value = sample.v
    if type(value) is float and math.isfinite(value):
        return f"{prefix}{value!r}}}"  # what json writes for a finite float
    return f"{prefix}{_dumps(value)}}}"  # "<k", or the ValueError json gives for NaN


def encode(message: AgentMessage) -> str:
    """Compact JSON for the wire, as the models would write it (UTF-8, no NaN). A metrics frame
    is written from cached per-series prefixes: the same text in about half the time."""
    if isinstance(message, Metrics):
        samples = ",".join([_sample_json(s) for s in message.samples])
        head = f'{{"v":{PROTOCOL_VERSION},"type":"metrics","seq":{_dumps(message.seq)}'
        return f'{head},"ts":{_dumps(message.ts)},"samples":[{samples}]}}'
    return _dumps(message.as_dict())
