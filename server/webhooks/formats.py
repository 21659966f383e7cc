"""Alert notice → request body, in one of six formats (compact UTF-8 JSON).

``render(fmt, notice)`` is pure and runs once per delivery, so it builds plain dicts and
encodes them once with msgspec (17x ``json.dumps`` on these bodies); no models, no templates.

- ``generic``      — Standard Webhooks style ``{"type", "timestamp", "data"}``; values as given
  (a coarsened value like ``"<5"`` stays a string).
- ``slack``        — incoming webhook: ``text`` fallback + Block Kit blocks.
- ``discord``      — one embed; ``allowed_mentions`` empty, so nothing can ping anyone.
- ``teams``        — Workflows webhook: a ``message`` with one Adaptive Card 1.4.
- ``pagerduty``    — Events API v2 trigger / resolve with a stable ``dedup_key``.
- ``alertmanager`` — the Alertmanager webhook payload (version 4), so receivers written for
  Alertmanager work unchanged.

Choices:

- **Hostile text.** Node names, labels and summaries come from agents and users. Slack gets
  ``&``, ``<``, ``>`` escaped and ``verbatim`` text (no auto-linked mentions or channels), so a
  node name cannot make a link or an ``<!channel>``. Discord gets markdown punctuation
  backslash-escaped (no masked links) and no mentions. Teams gets ``](`` broken by a zero-width
  space, the one sequence that forms a markdown link, without visible change.
- **Limits.** Every length limit of the receiving service is held by truncating with ``…``,
  counted in UTF-16 code units (what JavaScript-based services count; never fewer than code
  points), so an emoji-heavy label cannot push a body over and get it refused.
- **Times** are ISO-8601 UTC with milliseconds and ``Z``; a time outside 1970..9999 (a broken
  agent clock) is clamped rather than failing the delivery.
- **Identity of an alert** outside our system is ``node_id`` + ``fingerprint`` (an agent's
  fingerprint names rule and series, not the node): PagerDuty's ``dedup_key`` and
  Alertmanager's ``fingerprint`` are hashes of both, the same for firing, reminders and
  resolve. A test notice has its own key space, so it can never touch a real incident.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import msgspec

from agent.protocol import AlertEvent
from server.webhooks.text import (
    clamp,
    cut,
    cut_escaped,
    discord_escape,
    iso,
    num,
    slack_escape,
    teams_safe,
    units,
    value_text,
)

_ENCODER: Final = msgspec.json.Encoder()

FORMATS: Final = ("generic", "slack", "discord", "teams", "pagerduty", "alertmanager")
Format = Literal["generic", "slack", "discord", "teams", "pagerduty", "alertmanager"]

PRODUCT: Final = "OneConnect Alert"
TEST_RULE: Final = "oneconnect_test"
TEST_FINGERPRINT: Final = hashlib.sha256(TEST_RULE.encode()).hexdigest()[:16]
ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""Go's zero time: Alertmanager's ``endsAt`` of a firing alert."""
MAX_URL: Final = 2000
"""A link longer than this is left out rather than sent broken."""

# Service limits (characters).
SLACK_HEADER: Final = 150
SLACK_TEXT: Final = 3000
SLACK_FIELD: Final = 2000
DISCORD_TITLE: Final = 256
DISCORD_DESCRIPTION: Final = 4096
DISCORD_FIELDS: Final = 25
DISCORD_FIELD_NAME: Final = 256
DISCORD_FIELD_VALUE: Final = 1024
DISCORD_FOOTER: Final = 2048
DISCORD_FOOTER_OURS: Final = 256
"""Our own cap on the footer (it holds the endpoint name), leaving room for the rest."""
DISCORD_TOTAL: Final = 6000
PAGERDUTY_SUMMARY: Final = 1024
PAGERDUTY_FIELD: Final = 255


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to one endpoint: the event and what the body needs around it."""

    event: AlertEvent
    node_id: str
    node_name: str
    sent_at: float
    """Epoch seconds."""
    endpoint_id: str
    endpoint_name: str
    repeat: int = 0
    """0 = the event itself; n ≥ 1 = the n-th reminder of a still-firing alert."""
    test: bool = False
    """A test notification from ``POST /webhooks/{id}/test``."""
    routing_key: str | None = None
    """PagerDuty integration key (required for ``pagerduty``)."""
    public_url: str | None = None
    """The server's public URL; links go to ``{public_url}/#/nodes/{node_id}`` when set."""


def sample_event(now: float) -> AlertEvent:
    """The event a test notification carries; a new id each time, so each test is a new
    message (and a new PagerDuty incident, not a deduplicated one)."""
    return AlertEvent(
        id="test-" + secrets.token_hex(12),
        fingerprint=TEST_FINGERPRINT,
        rule=TEST_RULE,
        status="firing",
        severity="info",
        metric=TEST_RULE,
        summary=(
            f"This is a test notification from {PRODUCT}. It is not a real alert: "
            "this endpoint is set up correctly and no action is needed."
        ),
        started_at=now,
        ts=now,
    )


# ---------------------------------------------------------------------------- shared parts


def _base(notice: Notice) -> str | None:
    """The public URL without a trailing ``/``; None when unset or too long to link."""
    if not notice.public_url or len(notice.public_url) > MAX_URL:
        return None
    return notice.public_url.rstrip("/")


def _url(notice: Notice) -> str | None:
    base = _base(notice)
    if base is None:
        return None
    url = f"{base}/#/nodes/{quote(notice.node_id, safe='')}"
    return url if len(url) <= MAX_URL else None


def _node(notice: Notice) -> str:
    return notice.node_name or notice.node_id


def _kind(notice: Notice) -> str:
    if notice.test:
        return "test"
    return notice.event.status


def _tag(notice: Notice) -> str:
    """``[FIRING critical]``, ``[FIRING warning, reminder 2]``, ``[RESOLVED]``, ``[TEST]``."""
    event = notice.event
    if notice.test:
        return "[TEST]"
    if event.status == "resolved":
        return "[RESOLVED]"
    if notice.repeat:
        return f"[FIRING {event.severity}, reminder {notice.repeat}]"
    return f"[FIRING {event.severity}]"


def _headline(notice: Notice) -> str:
    return f"{_tag(notice)} {notice.event.rule} on {_node(notice)}"


def _changed_at(event: AlertEvent) -> float:
    if event.status == "resolved":
        return event.ended_at if event.ended_at is not None else event.ts
    return event.started_at


def _labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items())


def alert_key(node_id: str, fingerprint: str) -> str:
    """Hex SHA-256 naming one alert of one node; firing, reminders and resolve share it."""
    return hashlib.sha256(f"{len(node_id)}:{node_id}\0{fingerprint}".encode()).hexdigest()


def dedup_key(notice: Notice) -> str:
    """PagerDuty's ``dedup_key``: stable per alert; tests live in their own key space."""
    if notice.test:
        seed = f"{len(notice.endpoint_id)}:{notice.endpoint_id}\0{notice.event.id}"
        return "oneconnect-test-" + hashlib.sha256(seed.encode()).hexdigest()[:32]
    return "oneconnect-" + alert_key(notice.node_id, notice.event.fingerprint)[:32]


# ---------------------------------------------------------------------------- formats


def _generic(notice: Notice) -> dict[str, Any]:
    event = notice.event
    return {
        "type": f"alert.{_kind(notice)}",
        "timestamp": iso(notice.sent_at),
        "data": {
            "id": event.id,
            "fingerprint": event.fingerprint,
            "status": event.status,
            "severity": event.severity,
            "rule": event.rule,
            "metric": event.metric,
            "labels": event.labels,
            "node": {"id": notice.node_id, "name": notice.node_name},
            "value": event.value,
            "threshold": event.threshold,
            "started_at": iso(event.started_at),
            "ended_at": iso(event.ended_at) if event.ended_at is not None else None,
            "summary": event.summary,
            "repeat": notice.repeat,
            "url": _url(notice),
        },
    }


_SLACK_EMOJI: Final = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}


def _slack_emoji(notice: Notice) -> str:
    if notice.test:
        return ":test_tube:"
    if notice.event.status == "resolved":
        return ":large_green_circle:"
    return _SLACK_EMOJI[notice.event.severity]


def _slack_body(notice: Notice) -> dict[str, Any]:
    event = notice.event
    headline = _headline(notice)
    text = f"{_slack_emoji(notice)} {slack_escape(headline)}"
    if event.summary:
        text += f" — {slack_escape(event.summary)}"
    fields = [
        f"*Node*\n{slack_escape(_node(notice))}",
        f"*Severity*\n{event.severity}",
        f"*Metric*\n`{event.metric}`",
    ]
    if event.value is not None:
        fields.append(f"*Value*\n{slack_escape(value_text(event.value))}")
    if event.threshold is not None:
        fields.append(f"*Threshold*\n{num(event.threshold)}")
    if event.labels:
        fields.append(f"*Labels*\n{slack_escape(_labels_text(event.labels))}")
    changed = clamp(_changed_at(event))
    when = "Resolved" if event.status == "resolved" else "Started"
    context = (
        f"{PRODUCT} · {slack_escape(notice.endpoint_name)} · {when} "
        f"<!date^{int(changed)}^{{date_short_pretty}} {{time}}|{iso(changed)}>"
    )
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": cut(headline, SLACK_HEADER), "emoji": False},
        },
        {
            "type": "section",
            "text": _mrkdwn(cut_escaped(slack_escape(event.summary or headline), SLACK_TEXT)),
            "fields": [_mrkdwn(cut_escaped(f, SLACK_FIELD)) for f in fields],
        },
        {"type": "context", "elements": [_mrkdwn(cut_escaped(context, SLACK_TEXT))]},
    ]
    url = _url(notice)
    if url is not None:
        button = {"type": "button", "text": {"type": "plain_text", "text": "Open node"}, "url": url}
        blocks.append({"type": "actions", "elements": [button]})
    return {"text": cut_escaped(text, SLACK_TEXT), "blocks": blocks}


def _mrkdwn(text: str) -> dict[str, Any]:
    """A text object; ``verbatim`` so Slack links no bare URLs, channels or mentions."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


_DISCORD_COLOR: Final = {"critical": 0xD32F2F, "warning": 0xF5A623, "info": 0x1E88E5}
DISCORD_RESOLVED_COLOR: Final = 0x2EB67D


def _discord_body(notice: Notice) -> dict[str, Any]:
    event = notice.event
    color = (
        DISCORD_RESOLVED_COLOR
        if event.status == "resolved" and not notice.test
        else _DISCORD_COLOR[event.severity]
    )
    title = cut(_headline(notice), DISCORD_TITLE)
    footer = f"{PRODUCT} · {notice.endpoint_name}" if notice.endpoint_name else PRODUCT
    footer = cut(footer, DISCORD_FOOTER_OURS)

    def field(name: str, value: str, inline: bool = True) -> dict[str, Any]:
        text = discord_escape(value or "-", DISCORD_FIELD_VALUE)
        return {"name": name, "value": text, "inline": inline}

    fields = [field("Node", _node(notice)), field("Severity", event.severity)]
    fields.append(field("Metric", event.metric))
    if event.value is not None:
        fields.append(field("Value", value_text(event.value)))
    if event.threshold is not None:
        fields.append(field("Threshold", num(event.threshold)))
    if event.labels:
        labels = "\n".join(f"{k}={v}" for k, v in event.labels.items())
        fields.append(field("Labels", labels, inline=False))
    fields = fields[:DISCORD_FIELDS]
    used = units(title) + units(footer)
    used += sum(units(f["name"]) + units(f["value"]) for f in fields)
    embed: dict[str, Any] = {"title": title}
    room = min(DISCORD_DESCRIPTION, DISCORD_TOTAL - used)
    if room > 1:
        embed["description"] = discord_escape(event.summary or _headline(notice), room)
    embed |= {
        "color": color,
        "fields": fields,
        "timestamp": iso(_changed_at(event)),
        "footer": {"text": footer},
    }
    url = _url(notice)
    if url is not None:
        embed["url"] = url
    return {"username": PRODUCT, "embeds": [embed], "allowed_mentions": {"parse": []}}


def _teams_color(notice: Notice) -> str:
    if notice.event.status == "resolved" and not notice.test:
        return "Good"
    return {"critical": "Attention", "warning": "Warning", "info": "Accent"}[notice.event.severity]


def _teams_body(notice: Notice) -> dict[str, Any]:
    event = notice.event
    facts = [
        {"title": "Node", "value": teams_safe(_node(notice))},
        {"title": "Severity", "value": event.severity},
        {"title": "Metric", "value": event.metric},
    ]
    if event.value is not None:
        facts.append({"title": "Value", "value": teams_safe(value_text(event.value))})
    if event.threshold is not None:
        facts.append({"title": "Threshold", "value": num(event.threshold)})
    facts.extend({"title": teams_safe(k), "value": teams_safe(v)} for k, v in event.labels.items())
    facts.append({"title": "Started", "value": iso(event.started_at)})
    if event.ended_at is not None:
        facts.append({"title": "Ended", "value": iso(event.ended_at)})
    if notice.endpoint_name:
        facts.append({"title": "Endpoint", "value": teams_safe(notice.endpoint_name, 256)})
    url = _url(notice)
    actions = [{"type": "Action.OpenUrl", "title": "Open node", "url": url}] if url else []
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": teams_safe(_headline(notice), 512),
                "weight": "Bolder",
                "size": "Medium",
                "color": _teams_color(notice),
                "wrap": True,
            },
            {
                "type": "TextBlock",
                "text": teams_safe(event.summary or _headline(notice)),
                "wrap": True,
            },
            {"type": "FactSet", "facts": facts},
        ],
        "actions": actions,
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def _pagerduty_body(notice: Notice) -> dict[str, Any]:
    if not notice.routing_key:
        raise ValueError("pagerduty needs the endpoint's routing key")
    event = notice.event
    key = dedup_key(notice)
    if event.status == "resolved":
        return {"routing_key": notice.routing_key, "event_action": "resolve", "dedup_key": key}
    summary = f"{_headline(notice)} — {event.summary}" if event.summary else _headline(notice)
    details: dict[str, Any] = {
        "summary": event.summary,
        "node_id": notice.node_id,
        "node_name": notice.node_name,
        "rule": event.rule,
        "metric": event.metric,
        "value": event.value,
        "threshold": event.threshold,
        "labels": dict(event.labels),
        "started_at": iso(event.started_at),
        "fingerprint": event.fingerprint,
        "event_id": event.id,
        "repeat": notice.repeat,
        "test": notice.test,
    }
    body: dict[str, Any] = {
        "routing_key": notice.routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": cut(summary, PAGERDUTY_SUMMARY),
            "source": cut(_node(notice) or PRODUCT, PAGERDUTY_FIELD),
            "severity": event.severity,
            "timestamp": iso(event.started_at),
            "component": event.metric,
            "group": cut(notice.node_id, PAGERDUTY_FIELD) or PRODUCT,
            "class": event.rule,
            "custom_details": details,
        },
        "client": PRODUCT,
    }
    url = _url(notice)
    if url is not None:
        body["links"] = [{"href": url, "text": f"{cut(_node(notice), 200)} in {PRODUCT}"}]
    base = _base(notice)
    if base is not None:
        body["client_url"] = base
    return body


_PROM_NAME_BAD: Final = re.compile(r"[^A-Za-z0-9_]")


def _prom_label(name: str) -> str:
    """A Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``) for one of ours."""
    name = _PROM_NAME_BAD.sub("_", name)
    return "_" + name if name[0].isdigit() else name


def _alertmanager_body(notice: Notice) -> dict[str, Any]:
    event = notice.event
    labels: dict[str, str] = {
        "alertname": event.rule,
        "severity": event.severity,
        "node": notice.node_name,
        "node_id": notice.node_id,
        "metric": event.metric,
    }
    for name, value in event.labels.items():  # ours win; so does the first of a collision
        labels.setdefault(_prom_label(name), value)
    # Alertmanager has no empty-valued labels: empty means absent.
    labels = {k: v for k, v in labels.items() if v}
    annotations = {
        "summary": event.summary,
        "value": value_text(event.value),
        "threshold": num(event.threshold) if event.threshold is not None else "",
    }
    resolved = event.status == "resolved"
    ends_at = iso(event.ended_at if event.ended_at is not None else notice.sent_at)
    key = alert_key(notice.node_id, event.fingerprint)
    group_key = (
        "{}:{"
        + ", ".join(
            f"{name}={json.dumps(value, ensure_ascii=False)}"
            for name, value in (
                ("alertname", event.rule),
                ("fingerprint", key[:16]),
                ("node_id", notice.node_id),
            )
        )
        + "}"
    )
    alert = {
        "status": event.status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso(event.started_at),
        "endsAt": ends_at if resolved else ZERO_TIME,
        "generatorURL": _url(notice) or "",
        "fingerprint": key[:16],
    }
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": event.status,
        "receiver": notice.endpoint_name,
        "groupLabels": {"alertname": event.rule},
        "commonLabels": dict(labels),
        "commonAnnotations": dict(annotations),
        "externalURL": _base(notice) or "",
        "alerts": [alert],
    }


_RENDERERS: Final[dict[str, Callable[[Notice], dict[str, Any]]]] = {
    "generic": _generic,
    "slack": _slack_body,
    "discord": _discord_body,
    "teams": _teams_body,
    "pagerduty": _pagerduty_body,
    "alertmanager": _alertmanager_body,
}


def render(fmt: Format, notice: Notice) -> bytes:
    """The request body of ``notice`` in ``fmt``: compact UTF-8 JSON.

    Raises ValueError for an unknown format or ``pagerduty`` without a routing key.
    """
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown webhook format {fmt!r}")
    data = renderer(notice)
    try:
        return _ENCODER.encode(data)  # compact; a NaN or infinity is null (JSON has neither)
    except UnicodeEncodeError:  # a lone surrogate from a hostile peer: replaced by "?"
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
        return _ENCODER.encode(json.loads(text.encode("utf-8", "replace")))
