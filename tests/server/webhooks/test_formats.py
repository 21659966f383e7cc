"""Body formats: the documented shape of each of the six, firing and resolved; every service
limit held with hostile input (and, by hypothesis, with any valid event); escaping that keeps
a node name from making links or mentions; stable PagerDuty/Alertmanager alert identity.

Delivery to a receiver is tested elsewhere; this module checks bodies only."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, get_args
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.protocol import AlertEvent
from server import nodedown
from server.webhooks.formats import (
    FORMATS,
    ZERO_TIME,
    Format,
    Notice,
    render,
    sample_event,
)

NOW = 1_717_000_000.0
PUBLIC = "https://alerts.example.com"
ROUTING_KEY = "R0123456789abcdef0123456789abcd"

HOSTILE_NODE = ("<script>&<@everyone><!channel>[x](https://evil.example)" * 2)[:64]
HOSTILE_SUMMARY = ("<!channel> & <@everyone> <script>alert(1)</script> [a](https://e.x) 😀 " * 20)[
    :1024
]
HOSTILE_LABELS = {
    f"label_{i}_".ljust(64, "x"): (("<&>😀" if i % 2 else "<!here>&") * 40)[:128] for i in range(8)
}

Json = dict[str, Any]


def event(**changes: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "id": "evt-00000001",
        "fingerprint": "0123456789abcdef",
        "rule": "cpu_high",
        "status": "firing",
        "severity": "critical",
        "metric": "cpu_usage_percent",
        "labels": {"cpu": "total"},
        "value": 93.5,
        "threshold": 90.0,
        "summary": "CPU at 93.5% (limit 90%)",
        "started_at": NOW - 60,
        "ts": NOW - 60,
    }
    fields.update(changes)
    return AlertEvent(**fields)


def resolved(firing: AlertEvent) -> AlertEvent:
    return firing.model_copy(
        update={"id": "evt-00000002", "status": "resolved", "ended_at": NOW, "ts": NOW}
    )


def notice(ev: AlertEvent | None = None, **changes: Any) -> Notice:
    fields: dict[str, Any] = {
        "event": ev if ev is not None else event(),
        "node_id": "node_1",
        "node_name": "vpn-fra-1",
        "sent_at": NOW,
        "endpoint_id": "ep_1",
        "endpoint_name": "Ops channel",
        "routing_key": ROUTING_KEY,
    }
    fields.update(changes)
    return Notice(**fields)


def hostile(status: str = "firing", **changes: Any) -> Notice:
    ev = event(summary=HOSTILE_SUMMARY, labels=HOSTILE_LABELS, value="<5")
    if status == "resolved":
        ev = resolved(ev)
    changes.setdefault("endpoint_name", "<!channel> " * 30)
    return notice(ev, node_name=HOSTILE_NODE, **changes)


def _not_json(constant: str) -> Any:
    raise AssertionError(f"{constant} is not JSON")


def body(fmt: Format, n: Notice) -> Json:
    raw = render(fmt, n)
    assert isinstance(raw, bytes)
    data = json.loads(raw.decode("utf-8"), parse_constant=_not_json)  # strict JSON: no NaN
    assert isinstance(data, dict)
    assert msgspec.json.encode(data) == raw  # compact: what a compact encoder writes of it
    return data


def units(text: str) -> int:
    """UTF-16 code units, what the services count."""
    return len(text.encode("utf-16-le")) // 2


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text)
    offset = moment.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0
    return moment


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


# ---------------------------------------------------------------------------- limit checks


ENTITY_SAFE = re.compile(r"&(?!amp;|lt;|gt;)")
OUR_SLACK_MARKUP = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[0-9T:.\-]+Z>")


def check_slack(data: Json, n: Notice) -> None:
    assert set(data) == {"text", "blocks"}
    header, section, context = data["blocks"][:3]
    assert header["type"] == "header"
    assert header["text"]["type"] == "plain_text"
    assert 1 <= units(header["text"]["text"]) <= 150
    assert section["type"] == "section"
    texts = [section["text"], *section["fields"], *context["elements"]]
    assert 1 <= units(section["text"]["text"]) <= 3000
    assert len(section["fields"]) <= 10
    assert all(units(f["text"]) <= 2000 for f in section["fields"])
    assert context["type"] == "context"
    assert len(context["elements"]) <= 10
    assert 1 <= units(data["text"]) <= 3000
    for text in [data["text"]] + [t["text"] for t in texts]:
        assert units(text) <= 3000
        plain = OUR_SLACK_MARKUP.sub("", text)
        assert not {"<", ">"} & set(plain), "user text must not form Slack markup"
        assert not ENTITY_SAFE.search(plain), "every & starts an entity"
    assert all(t["type"] == "mrkdwn" and t["verbatim"] is True for t in texts)
    for block in data["blocks"][3:]:
        assert block["type"] == "actions"
        assert block["elements"][0]["url"] == f"{PUBLIC}/#/nodes/{quote(n.node_id, safe='')}"


def check_discord(data: Json, n: Notice) -> None:
    assert data["username"] == "OneConnect Alert"
    assert data["allowed_mentions"] == {"parse": []}
    (embed,) = data["embeds"]
    assert units(embed["title"]) <= 256
    assert units(embed.get("description", "")) <= 4096
    assert isinstance(embed["color"], int)
    assert 0 <= embed["color"] <= 0xFFFFFF
    assert 1 <= len(embed["fields"]) <= 25
    for field in embed["fields"]:
        assert 1 <= units(field["name"]) <= 256
        assert 1 <= units(field["value"]) <= 1024
        assert "](" not in field["value"]
    assert units(embed["footer"]["text"]) <= 2048
    total = (
        units(embed["title"])
        + units(embed.get("description", ""))
        + units(embed["footer"]["text"])
        + sum(units(f["name"]) + units(f["value"]) for f in embed["fields"])
    )
    assert total <= 6000
    assert "](" not in embed.get("description", "")
    parse_time(embed["timestamp"])


def check_teams(data: Json, n: Notice) -> None:
    assert data["type"] == "message"
    (attachment,) = data["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    title, summary, facts = card["body"]
    assert title["type"] == "TextBlock"
    assert title["color"] in {"Attention", "Warning", "Good", "Accent"}
    assert summary["type"] == "TextBlock"
    assert summary["wrap"] is True
    assert facts["type"] == "FactSet"
    assert all(isinstance(f["title"], str) and isinstance(f["value"], str) for f in facts["facts"])
    for text in strings(card["body"]):
        assert "](" not in text, "user text must not form a markdown link"
    for action in card["actions"]:
        assert action["type"] == "Action.OpenUrl"
    assert len(render("teams", n)) < 28 * 1024 // 2  # well under Teams' 28 KB


def check_pagerduty(data: Json, n: Notice) -> None:
    assert data["routing_key"] == n.routing_key
    assert 1 <= len(data["dedup_key"]) <= 255
    if n.event.status == "resolved":
        assert data == {
            "routing_key": n.routing_key,
            "event_action": "resolve",
            "dedup_key": data["dedup_key"],
        }
        return
    assert data["event_action"] == "trigger"
    payload = data["payload"]
    assert 1 <= units(payload["summary"]) <= 1024
    assert 1 <= units(payload["source"]) <= 255
    assert payload["severity"] in {"critical", "warning", "info"}
    assert payload["severity"] == n.event.severity
    parse_time(payload["timestamp"])
    assert payload["component"] == n.event.metric
    assert payload["class"] == n.event.rule
    assert isinstance(payload["custom_details"], dict)
    for link in data.get("links", []):
        assert link["href"].startswith(PUBLIC)


AM_KEYS = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
AM_ALERT_KEYS = {
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
}
PROM_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def check_alertmanager(data: Json, n: Notice) -> None:
    assert set(data) == AM_KEYS
    assert data["version"] == "4"
    assert data["truncatedAlerts"] == 0
    assert data["status"] == n.event.status
    assert data["receiver"] == n.endpoint_name
    assert data["groupLabels"] == {"alertname": n.event.rule}
    assert isinstance(data["groupKey"], str)
    assert data["groupKey"]
    assert data["externalURL"] == (PUBLIC if n.public_url else "")
    (alert,) = data["alerts"]
    assert set(alert) == AM_ALERT_KEYS
    assert alert["status"] == n.event.status
    labels, annotations = alert["labels"], alert["annotations"]
    assert labels["alertname"] == n.event.rule
    assert labels["severity"] == n.event.severity
    assert labels.get("node", "") == n.node_name
    assert labels["metric"] == n.event.metric
    assert all(PROM_LABEL.fullmatch(k) for k in labels)
    assert all(isinstance(v, str) and v for v in labels.values())
    assert set(annotations) == {"summary", "value", "threshold"}
    assert all(isinstance(v, str) for v in annotations.values())
    assert data["commonLabels"] == labels
    assert data["commonAnnotations"] == annotations
    assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
    parse_time(alert["startsAt"])
    if n.event.status == "firing":
        assert alert["endsAt"] == ZERO_TIME == "0001-01-01T00:00:00Z"
    else:
        assert alert["endsAt"] != ZERO_TIME
        parse_time(alert["endsAt"])


def check_generic(data: Json, n: Notice) -> None:
    assert set(data) == {"type", "timestamp", "data"}
    assert data["type"] == ("alert.test" if n.test else f"alert.{n.event.status}")
    parse_time(data["timestamp"])
    assert set(data["data"]) == {
        "id",
        "fingerprint",
        "status",
        "severity",
        "rule",
        "metric",
        "labels",
        "node",
        "value",
        "threshold",
        "started_at",
        "ended_at",
        "summary",
        "repeat",
        "url",
    }
    d = data["data"]
    assert d["node"] == {"id": n.node_id, "name": n.node_name}
    assert d["labels"] == n.event.labels
    assert d["summary"] == n.event.summary
    assert d["value"] == n.event.value
    assert d["repeat"] == n.repeat


CHECKS: dict[str, Callable[[Json, Notice], None]] = {
    "generic": check_generic,
    "slack": check_slack,
    "discord": check_discord,
    "teams": check_teams,
    "pagerduty": check_pagerduty,
    "alertmanager": check_alertmanager,
}


def test_formats_constant_matches_the_type() -> None:
    assert FORMATS == get_args(Format) == tuple(CHECKS)


# ---------------------------------------------------------------------------- every format


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("status", ["firing", "resolved"])
@pytest.mark.parametrize("public_url", [None, PUBLIC, PUBLIC + "/"])
def test_renders_the_documented_shape(fmt: Format, status: str, public_url: str | None) -> None:
    ev = event() if status == "firing" else resolved(event())
    n = notice(ev, public_url=public_url)
    CHECKS[fmt](body(fmt, n), n)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_limits_hold_with_hostile_input(fmt: Format, status: str) -> None:
    n = hostile(status, public_url=PUBLIC)
    CHECKS[fmt](body(fmt, n), n)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", ["<5", None, 0.0, -3.25, 1e300, 12345678901.5])
def test_values_coarsened_missing_or_odd(fmt: Format, value: float | str | None) -> None:
    n = notice(event(value=value, threshold=None if value is None else 5.0))
    CHECKS[fmt](body(fmt, n), n)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_node_down_event_renders(fmt: Format, status: str) -> None:
    down = event(
        id="nd-0123456789abcdef01234567",
        fingerprint=nodedown.fingerprint("node_1"),
        rule=nodedown.RULE,
        metric=nodedown.METRIC,
        labels={},
        value=31.0,
        threshold=30.0,
        summary="Node vpn-fra-1 has sent nothing for 31 s",
        started_at=NOW - 31,
        ts=NOW,
    )
    if status == "resolved":
        down = resolved(down).model_copy(update={"summary": "Node vpn-fra-1 is sending again"})
    n = notice(down)
    data = body(fmt, n)
    CHECKS[fmt](data, n)
    assert "node_down" in render(fmt, n).decode() or (fmt == "pagerduty" and status == "resolved")


@pytest.mark.parametrize("fmt", FORMATS)
def test_test_notice_renders(fmt: Format) -> None:
    n = notice(sample_event(NOW), test=True, public_url=PUBLIC)
    data = body(fmt, n)
    CHECKS[fmt](data, n)
    assert "oneconnect_test" in render(fmt, n).decode()


@pytest.mark.parametrize("fmt", FORMATS)
def test_times_out_of_range_do_not_fail(fmt: Format) -> None:
    ev = event(started_at=-1e12, ts=1e300)
    late_end = resolved(ev).model_copy(update={"ended_at": 1e300})
    for n in (notice(ev, sent_at=1e300), notice(late_end, sent_at=float("nan"))):
        CHECKS[fmt](body(fmt, n), n)


@pytest.mark.parametrize("fmt", FORMATS)
def test_lone_surrogate_still_gives_utf8(fmt: Format) -> None:
    """AlertEvent refuses lone surrogates; names from elsewhere must not break a body."""
    n = notice(node_name="n\ud83d" * 40, endpoint_name="\udfff ops")
    json.loads(render(fmt, n).decode("utf-8"))


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown webhook format"):
        render("email", notice())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- generic


def test_generic_keeps_values_as_given() -> None:
    n = notice(event(value="<5"), public_url=PUBLIC, repeat=2)
    d = body("generic", n)
    assert d["type"] == "alert.firing"
    assert d["timestamp"] == "2024-05-29T16:26:40.000Z"
    assert d["data"]["value"] == "<5"
    assert d["data"]["threshold"] == 90.0
    assert d["data"]["started_at"] == "2024-05-29T16:25:40.000Z"
    assert d["data"]["ended_at"] is None
    assert d["data"]["repeat"] == 2
    assert d["data"]["url"] == f"{PUBLIC}/#/nodes/node_1"
    assert body("generic", notice(event(value=None)))["data"]["value"] is None
    assert body("generic", notice())["data"]["url"] is None


def test_generic_resolved() -> None:
    d = body("generic", notice(resolved(event())))
    assert d["type"] == "alert.resolved"
    assert d["data"]["status"] == "resolved"
    assert d["data"]["ended_at"] == "2024-05-29T16:26:40.000Z"


def test_url_quotes_the_node_id() -> None:
    d = body("generic", notice(node_id="a/b#c", public_url=PUBLIC))
    assert d["data"]["url"] == f"{PUBLIC}/#/nodes/a%2Fb%23c"


# ---------------------------------------------------------------------------- slack


def test_slack_text_and_escaping() -> None:
    data = body("slack", notice(node_name="<!channel> & co"))
    assert data["text"] == (
        ":red_circle: [FIRING critical] cpu_high on &lt;!channel&gt; &amp; co"
        " — CPU at 93.5% (limit 90%)"
    )
    fields = [f["text"] for f in data["blocks"][1]["fields"]]
    assert "*Node*\n&lt;!channel&gt; &amp; co" in fields
    assert data["blocks"][0]["text"]["text"] == "[FIRING critical] cpu_high on <!channel> & co"


def test_slack_hostile_text_is_escaped_not_dropped() -> None:
    data = body("slack", hostile())
    assert "&lt;!channel&gt;" in data["blocks"][1]["text"]["text"]
    assert "&lt;@everyone&gt;" in data["text"]
    long = body("slack", notice(event(summary="<&" * 512)))["blocks"][1]["text"]["text"]
    assert len(long) <= 3000
    assert long.endswith("&lt;&amp;…")


def test_slack_resolved_and_reminder() -> None:
    assert body("slack", notice(resolved(event())))["text"].startswith(
        ":large_green_circle: [RESOLVED] cpu_high on vpn-fra-1"
    )
    assert "[FIRING critical, reminder 3]" in body("slack", notice(repeat=3))["text"]


# ---------------------------------------------------------------------------- discord


def test_discord_colors() -> None:
    colors = {
        sev: body("discord", notice(event(severity=sev)))["embeds"][0]["color"]
        for sev in ("critical", "warning", "info")
    }
    green = body("discord", notice(resolved(event())))["embeds"][0]["color"]
    assert len({*colors.values(), green}) == 4
    assert green == 0x2EB67D


def test_discord_escapes_markdown_links_and_mentions() -> None:
    data = body("discord", hostile())
    embed = data["embeds"][0]
    node = next(f["value"] for f in embed["fields"] if f["name"] == "Node")
    assert "\\[x\\]\\(https\\://evil.example\\)" in node
    assert "\\<@everyone\\>" in embed["description"]


def test_discord_keeps_within_total_with_a_long_endpoint_name() -> None:
    n = hostile(endpoint_name="e" * 5000)
    check_discord(body("discord", n), n)


# ---------------------------------------------------------------------------- teams


def test_teams_card() -> None:
    data = body("teams", notice(public_url=PUBLIC))
    card = data["attachments"][0]["content"]
    assert card["body"][0]["text"] == "[FIRING critical] cpu_high on vpn-fra-1"
    assert card["body"][0]["color"] == "Attention"
    assert card["body"][1]["text"] == "CPU at 93.5% (limit 90%)"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Node"] == "vpn-fra-1"
    assert facts["Value"] == "93.5"
    assert facts["cpu"] == "total"
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open node", "url": f"{PUBLIC}/#/nodes/node_1"}
    ]
    assert body("teams", notice())["attachments"][0]["content"]["actions"] == []
    resolved_card = body("teams", notice(resolved(event())))["attachments"][0]["content"]
    assert resolved_card["body"][0]["color"] == "Good"
    warning = body("teams", notice(event(severity="warning")))["attachments"][0]["content"]
    assert warning["body"][0]["color"] == "Warning"


def test_teams_breaks_markdown_links_visibly_unchanged() -> None:
    data = body("teams", notice(node_name="[x](https://evil.example)"))
    facts = data["attachments"][0]["content"]["body"][2]["facts"]
    node = next(f["value"] for f in facts if f["title"] == "Node")
    assert node.replace("\u200b", "") == "[x](https://evil.example)"


# ---------------------------------------------------------------------------- pagerduty


def test_pagerduty_trigger_and_resolve_share_a_stable_dedup_key() -> None:
    firing = body("pagerduty", notice(public_url=PUBLIC))
    reminder = body("pagerduty", notice(repeat=4))
    resolve = body("pagerduty", notice(resolved(event())))
    restarted = body("pagerduty", notice(event(id="evt-99999999")))  # agent resent, new id
    assert firing["dedup_key"] == reminder["dedup_key"] == resolve["dedup_key"]
    assert firing["dedup_key"] == restarted["dedup_key"]
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": firing["dedup_key"],
    }
    payload = firing["payload"]
    assert payload["summary"] == (
        "[FIRING critical] cpu_high on vpn-fra-1 — CPU at 93.5% (limit 90%)"
    )
    assert payload["source"] == "vpn-fra-1"
    assert payload["group"] == "node_1"
    assert payload["timestamp"] == "2024-05-29T16:25:40.000Z"
    assert firing["links"] == [
        {"href": f"{PUBLIC}/#/nodes/node_1", "text": "vpn-fra-1 in OneConnect Alert"}
    ]


def test_pagerduty_dedup_key_is_distinct_per_node_and_alert() -> None:
    keys = {
        body("pagerduty", notice(event(fingerprint=fp), node_id=node))["dedup_key"]
        for node in ("node_1", "node_2", "node_3")
        for fp in ("0123456789abcdef", "fedcba9876543210")
    }
    assert len(keys) == 6


def test_pagerduty_test_key_cannot_collide() -> None:
    real = body("pagerduty", notice())["dedup_key"]
    first = body("pagerduty", notice(sample_event(NOW), test=True))["dedup_key"]
    second = body("pagerduty", notice(sample_event(NOW), test=True))["dedup_key"]
    assert first.startswith("oneconnect-test-")
    assert not real.startswith("oneconnect-test-")
    assert first != second  # every test is a new incident, not silently deduplicated


@pytest.mark.parametrize("sev", ["critical", "warning", "info"])
def test_pagerduty_severity(sev: str) -> None:
    assert body("pagerduty", notice(event(severity=sev)))["payload"]["severity"] == sev


@pytest.mark.parametrize("key", [None, ""])
def test_pagerduty_needs_a_routing_key(key: str | None) -> None:
    with pytest.raises(ValueError, match="routing key"):
        render("pagerduty", notice(routing_key=key))


def test_pagerduty_hostile_summary_is_cut() -> None:
    payload = body("pagerduty", hostile())["payload"]
    assert 1000 <= units(payload["summary"]) <= 1024
    assert payload["summary"].endswith("…")


# ---------------------------------------------------------------------------- alertmanager


def test_alertmanager_payload() -> None:
    data = body("alertmanager", notice(public_url=PUBLIC))
    (alert,) = data["alerts"]
    assert alert["labels"] == {
        "alertname": "cpu_high",
        "severity": "critical",
        "node": "vpn-fra-1",
        "node_id": "node_1",
        "metric": "cpu_usage_percent",
        "cpu": "total",
    }
    assert alert["annotations"] == {
        "summary": "CPU at 93.5% (limit 90%)",
        "value": "93.5",
        "threshold": "90",
    }
    assert alert["startsAt"] == "2024-05-29T16:25:40.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == f"{PUBLIC}/#/nodes/node_1"
    assert data["receiver"] == "Ops channel"
    assert body("alertmanager", notice())["alerts"][0]["generatorURL"] == ""


def test_alertmanager_resolved_keeps_group_and_fingerprint() -> None:
    firing = body("alertmanager", notice())
    done = body("alertmanager", notice(resolved(event())))
    assert done["status"] == "resolved"
    assert done["alerts"][0]["status"] == "resolved"
    assert done["alerts"][0]["endsAt"] == "2024-05-29T16:26:40.000Z"
    assert done["groupKey"] == firing["groupKey"]
    assert done["alerts"][0]["fingerprint"] == firing["alerts"][0]["fingerprint"]
    other = body("alertmanager", notice(node_id="node_2"))
    assert other["alerts"][0]["fingerprint"] != firing["alerts"][0]["fingerprint"]
    assert other["groupKey"] != firing["groupKey"]


def test_alertmanager_our_labels_win() -> None:
    labels = {"alertname": "evil", "severity": "none", "node": "other", "fs.mount": "/", "1x": "y"}
    data = body("alertmanager", notice(event(labels=labels)))
    got = data["alerts"][0]["labels"]
    assert got["alertname"] == "cpu_high"
    assert got["severity"] == "critical"
    assert got["node"] == "vpn-fra-1"
    assert got["fs_mount"] == "/"
    assert got["_1x"] == "y"


def test_alertmanager_value_annotations_as_strings() -> None:
    coarse = body("alertmanager", notice(event(value="<5", threshold=None)))
    assert coarse["alerts"][0]["annotations"] == {
        "summary": "CPU at 93.5% (limit 90%)",
        "value": "<5",
        "threshold": "",
    }
    missing = body("alertmanager", notice(event(value=None)))
    assert missing["alerts"][0]["annotations"]["value"] == ""


# ---------------------------------------------------------------------------- sample event


def test_sample_event() -> None:
    ev = sample_event(NOW)
    assert AlertEvent.model_validate(ev.model_dump()) == ev
    assert ev.rule == "oneconnect_test"
    assert ev.severity == "info"
    assert ev.status == "firing"
    assert "test" in ev.summary.lower()
    assert ev.started_at == ev.ts == NOW
    assert sample_event(NOW).id != ev.id


# ---------------------------------------------------------------------------- property


names = st.from_regex(r"[A-Za-z0-9_.:+/-]{1,64}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
events = st.builds(
    AlertEvent,
    id=st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True),
    fingerprint=st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
    rule=names,
    status=st.sampled_from(["firing", "resolved"]),
    severity=st.sampled_from(["info", "warning", "critical"]),
    metric=names,
    labels=st.dictionaries(names, st.text(min_size=1, max_size=128), max_size=8),
    value=st.none() | finite | st.from_regex(r"<[0-9]{1,3}", fullmatch=True),
    threshold=st.none() | finite,
    summary=st.text(max_size=1024),
    started_at=finite,
    ended_at=st.none() | finite,
    ts=finite,
)
notices = st.builds(
    Notice,
    event=events,
    node_id=st.text(min_size=1, max_size=64),
    node_name=st.text(max_size=64),
    sent_at=finite,
    endpoint_id=st.text(min_size=1, max_size=64),
    endpoint_name=st.text(max_size=200),
    repeat=st.integers(min_value=0, max_value=10_000),
    test=st.booleans(),
    routing_key=st.just(ROUTING_KEY),
    public_url=st.none() | st.just(PUBLIC),
)


@given(notices)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_valid_event_renders_within_limits(n: Notice) -> None:
    for fmt in FORMATS:
        CHECKS[fmt](body(fmt, n), n)


# ---------------------------------------------------------------------------- speed


def test_render_is_fast() -> None:
    """Rendering runs per delivery; the budget is 2,000 deliveries a second in one process."""
    cases = [notice(public_url=PUBLIC), hostile(public_url=PUBLIC)]
    started = time.perf_counter()
    for _ in range(500):
        for n in cases:
            for fmt in FORMATS:
                render(fmt, n)
    per_render = (time.perf_counter() - started) / (500 * len(cases) * len(FORMATS))
    assert per_render < 250e-6
