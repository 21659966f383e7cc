"""``GET /api/v1/alerts``: the calling account's alerts across its nodes, from live state.

Firing alerts are the current ones (one per fingerprint, its latest event); resolved ones come
from each node's bounded list of recent events (``live.MAX_RECENT_EVENTS``), so after a server
restart only what happened since is shown. Newest first. Filters: ``node`` (one of the
account's node ids; another account's is 404), ``status`` (firing|resolved), ``severity``
(info|warning|critical), ``limit`` (1–5000, default 1000). An unknown parameter is 422.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from aiohttp import web

from agent.protocol import AlertEvent, AlertStatus, Severity
from server.api.auth import require_account
from server.api.schemas import obj, operation
from server.errors import NotFound, Unprocessable
from server.keys import LIVE, STORE
from server.live import LiveState

routes = web.RouteTableDef()

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 5000
STATUSES: Final = frozenset(get_args(AlertStatus))
SEVERITIES: Final = frozenset(get_args(Severity))
_PARAMS: Final = frozenset({"node", "status", "severity", "limit"})


def alert_json(event: AlertEvent, node_id: str, node_name: str) -> dict[str, Any]:
    return {"node_id": node_id, "node_name": node_name, **event.model_dump()}


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Unprocessable(f"give {name} at most once", field=name)
    return values[0] if values else None


def _choice(request: web.Request, name: str, allowed: frozenset[str]) -> str | None:
    value = _one(request, name)
    if value is not None and value not in allowed:
        raise Unprocessable(f"{name} must be one of {', '.join(sorted(allowed))}", field=name)
    return value


def _limit(request: web.Request) -> int:
    value = _one(request, "limit")
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit() and len(value) <= 5) or not (
        1 <= int(value) <= MAX_LIMIT
    ):
        raise Unprocessable(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(value)


def collect(
    live: LiveState,
    node_ids: list[str],
    *,
    status: str | None = None,
    severity: str | None = None,
) -> list[dict[str, Any]]:
    """Every matching alert of these nodes, newest first."""
    found: list[tuple[float, dict[str, Any]]] = []
    for node_id in node_ids:
        node = live.get(node_id)
        if node is None:
            continue
        events: list[AlertEvent] = []
        if status in (None, "firing"):
            events += live.current_alerts(node_id)
        if status in (None, "resolved"):
            events += [e for e in live.recent_events(node_id) if e.status == "resolved"]
        for event in events:
            if severity is None or event.severity == severity:
                found.append((event.ts, alert_json(event, node_id, node.name)))
    found.sort(key=lambda item: item[0], reverse=True)
    return [alert for _, alert in found]


@routes.get("/api/v1/alerts", name="alerts")
async def list_alerts(request: web.Request) -> web.Response:
    principal = await require_account(request)
    unknown = sorted(set(request.query) - _PARAMS)
    if unknown:
        name = unknown[0][:40]
        raise Unprocessable(f"unknown query parameter {name!r}", field=name)
    status = _choice(request, "status", STATUSES)
    severity = _choice(request, "severity", SEVERITIES)
    limit = _limit(request)
    node_ids = await request.app[STORE].account_node_ids(principal.account_id)
    wanted = _one(request, "node")
    if wanted is not None:
        if wanted not in node_ids:
            raise NotFound("no such node")
        node_ids = [wanted]
    alerts = collect(request.app[LIVE], node_ids, status=status, severity=severity)
    return web.json_response(
        {
            "alerts": alerts[:limit],
            "count": min(len(alerts), limit),
            "truncated": len(alerts) > limit,
        }
    )


_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}
ALERT: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "node_id": {"type": "string"},
        "node_name": {"type": "string"},
        "id": {"type": "string", "description": "event id (the same on every resend)"},
        "fingerprint": {"type": "string", "description": "the alert: node + rule + labels"},
        "rule": {"type": "string", "description": "the rule; node_down for a silent node"},
        "status": {"enum": sorted(STATUSES)},
        "severity": {"enum": sorted(SEVERITIES)},
        "metric": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "value": {"type": ["number", "string", "null"], "description": '"<k" when coarsened'},
        "threshold": _NUMBER_OR_NULL,
        "summary": {"type": "string"},
        "started_at": {"type": "number"},
        "ended_at": _NUMBER_OR_NULL,
        "ts": {"type": "number"},
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/alerts": {
        "get": {
            **operation(
                "The account's current alerts and recently resolved ones (live state)",
                "listAlerts",
                ok=(
                    200,
                    "alerts, newest first",
                    obj(
                        alerts={"type": "array", "items": ALERT},
                        count={"type": "integer"},
                        truncated={"type": "boolean"},
                    ),
                ),
                errors=(401, 404, 422, 429),
                tag="alerts",
            ),
            "parameters": [
                _query("node", {"type": "string"}, "only this node (404 if not the account's)"),
                _query("status", {"enum": sorted(STATUSES)}, "firing or resolved"),
                _query("severity", {"enum": sorted(SEVERITIES)}, "info, warning or critical"),
                _query(
                    "limit",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT,
                    },
                    "at most this many",
                ),
            ],
        }
    }
}
