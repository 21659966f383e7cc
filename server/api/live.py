"""``GET /api/v1/nodes/{id}/live``: one node's live state (memory only).

Node status (connected, last seen, agent version, effective interval, whether it is down), the
latest value of every series, the last window of each series (at most ``MAX_POINTS`` points,
downsampled by averaging when the ring holds more) and the node's current alerts. ``?metric=``
(repeatable, or comma-separated; at most ``MAX_METRICS``) selects series by metric name.
Another account's node is 404, like a missing one.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from aiohttp import web

from server.api.accounts import path_id
from server.api.alerts import ALERT, alert_json
from server.api.auth import require_account
from server.api.schemas import ID_PARAMETER, obj, operation
from server.errors import NotFound, Unprocessable
from server.keys import CLOCK, LIVE, STORE

routes = web.RouteTableDef()

MAX_POINTS: Final = 300
MAX_METRICS: Final = 50
_NAME: Final = re.compile(r"[A-Za-z0-9_.:+/-]{1,64}")
_PARAMS: Final = frozenset({"metric"})
Point = tuple[float, float | None]


def downsample(points: list[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most ``limit`` points: consecutive groups averaged (gaps ignored; an all-gap group
    stays a gap), each at its group's last timestamp."""
    if len(points) <= limit:
        return points
    out: list[Point] = []
    size = len(points) / limit
    for i in range(limit):
        group = points[int(i * size) : int((i + 1) * size)]
        values = [v for _, v in group if v is not None]
        out.append((group[-1][0], math.fsum(values) / len(values) if values else None))
    return out


def _metrics(request: web.Request) -> set[str] | None:
    unknown = sorted(set(request.query) - _PARAMS)
    if unknown:
        name = unknown[0][:40]
        raise Unprocessable(f"unknown query parameter {name!r}", field=name)
    raw = request.query.getall("metric", [])
    if not raw:
        return None
    names = {name.strip() for value in raw[: MAX_METRICS + 1] for name in value.split(",")}
    names.discard("")
    if len(raw) > MAX_METRICS or len(names) > MAX_METRICS:
        raise Unprocessable(f"at most {MAX_METRICS} metric names", field="metric")
    if not names or not all(_NAME.fullmatch(name) for name in names):
        raise Unprocessable("metric must be metric names (letters, digits, _.:+/-)", field="metric")
    return names


def _value(value: float | str) -> float | str | None:
    if isinstance(value, str):
        return value
    return value if math.isfinite(value) else None


@routes.get("/api/v1/nodes/{id}/live", name="node_live")
async def node_live(request: web.Request) -> web.Response:
    principal = await require_account(request)
    node_id = path_id(request)
    metrics = _metrics(request)
    ref = await request.app[STORE].node_ref(principal.account_id, node_id)
    if ref is None:
        raise NotFound("no such node")
    live = request.app[LIVE]
    node = live.get(node_id)
    now = request.app[CLOCK].monotonic()
    status: dict[str, Any] = {
        "id": ref.id,
        "name": ref.name,
        "connected": bool(node and node.connected),
        "connected_since": node.connected_since if node else None,
        "last_seen": node.last_seen_wall if node else None,
        "silent_seconds": (
            round(now - node.last_seen_mono, 3) if node and node.last_seen_wall else None
        ),
        "down": bool(node and node.node_down is not None),
        "agent_version": node.agent_version if node else None,
        "interval": node.interval if node else None,
        "min_interval": ref.min_interval,
        "rules": list(node.rules) if node else [],
        "buffer_seconds": node.buffer_seconds if node else None,
    }
    latest = [
        {"metric": metric, "labels": labels, "value": _value(value)}
        for metric, labels, value in live.latest(node_id, metrics)
    ]
    series = [
        {
            "metric": view.metric,
            "labels": view.labels,
            "step": view.step,
            "points": downsample(view.points),
        }
        for view in live.series(node_id, metrics)
    ]
    alerts = sorted(live.current_alerts(node_id), key=lambda e: e.ts, reverse=True)
    return web.json_response(
        {
            "node": status,
            "window_seconds": live.window,
            "latest": latest,
            "series": series,
            "alerts": [alert_json(e, ref.id, ref.name) for e in alerts],
        }
    )


_LABELS: Final = {"type": "object", "additionalProperties": {"type": "string"}}
_NULLABLE_NUMBER: Final = {"type": ["number", "null"]}
LIVE_BODY: Final[dict[str, Any]] = obj(
    node=obj(
        id={"type": "string"},
        name={"type": "string"},
        connected={"type": "boolean"},
        connected_since=_NULLABLE_NUMBER,
        last_seen=_NULLABLE_NUMBER,
        silent_seconds=_NULLABLE_NUMBER,
        down={"type": "boolean"},
        agent_version={"type": ["string", "null"]},
        interval=_NULLABLE_NUMBER,
        min_interval={"type": "number"},
        rules={"type": "array", "items": {"type": "string"}},
        buffer_seconds={"type": ["integer", "null"]},
    ),
    window_seconds={"type": "number"},
    latest={
        "type": "array",
        "items": obj(
            metric={"type": "string"},
            labels=_LABELS,
            value={"type": ["number", "string", "null"], "description": '"<k" when coarsened'},
        ),
    },
    series={
        "type": "array",
        "items": obj(
            metric={"type": "string"},
            labels=_LABELS,
            step={"type": "number", "description": "seconds between points"},
            points={
                "type": "array",
                "maxItems": MAX_POINTS,
                "items": {
                    "type": "array",
                    "prefixItems": [{"type": "number"}, _NULLABLE_NUMBER],
                    "description": "[unix time, value or null for a gap]",
                },
            },
        ),
    },
    alerts={"type": "array", "items": ALERT},
)

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/nodes/{id}/live": {
        "parameters": [ID_PARAMETER],
        "get": {
            **operation(
                "A node's live state: status, latest values, the last window, current alerts",
                "getNodeLive",
                ok=(200, "the node's live state", LIVE_BODY),
                errors=(401, 404, 422, 429),
                tag="nodes",
            ),
            "parameters": [
                {
                    "name": "metric",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "style": "form",
                    "explode": True,
                    "description": f"only these metrics (repeat or comma-separate; ≤ "
                    f"{MAX_METRICS})",
                }
            ],
        },
    }
}
