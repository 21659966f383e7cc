"""Saved history (opt-in only): ``GET /api/v1/nodes/{id}/history`` and
``GET /api/v1/alerts/history``.

Both read only what saved monitoring stored, so both answer 409 ``saved_monitoring_off`` while
the node (or account) is not covered by the account's consent — with a message saying how to
turn it on — and 404 for another account's node, exactly as for a missing one.

Metric history: ``metric`` (required), ``from`` / ``to`` (epoch seconds; default the last
hour), ``step`` (seconds; default the range / 500). The store picks the source by step — raw
points below 60 s, minute rollups below 3600 s, hour rollups above — and aggregates into
``step`` buckets: each point is ``[bucket start, avg, min, max]``. At most 44,640 buckets (a
31-day month of minutes).
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from aiohttp import web

from server.api.accounts import path_id
from server.api.alerts import ALERT
from server.api.auth import require_account
from server.api.schemas import ID_PARAMETER, obj, operation
from server.errors import ApiError, NotFound, Unprocessable
from server.keys import CLOCK, SAVED, STORE

routes = web.RouteTableDef()

DEFAULT_RANGE: Final = 3600.0
DEFAULT_POINTS: Final = 500
MAX_RANGE: Final = 400 * 86400.0
_METRIC: Final = re.compile(r"[A-Za-z0-9_.:+/-]{1,64}")
_HISTORY_PARAMS: Final = frozenset({"metric", "from", "to", "step"})
_ALERT_PARAMS: Final = frozenset({"node", "from", "to", "limit"})


class SavedMonitoringOff(ApiError):
    status = 409
    code = "saved_monitoring_off"


def _off() -> SavedMonitoringOff:
    return SavedMonitoringOff(
        "saved monitoring is off for this node: nothing is stored, so there is no history; "
        'turn it on with PATCH /api/v1/account {"saved_monitoring": true}'
    )


def _only(request: web.Request, allowed: frozenset[str]) -> None:
    for name in request.query:
        if name not in allowed:
            raise Unprocessable(f"unknown query parameter {name[:40]!r}", field=name[:40])
        if len(request.query.getall(name)) > 1:
            raise Unprocessable(f"give {name} at most once", field=name)


def _number(request: web.Request, name: str, default: float | None) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw) if len(raw) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise Unprocessable(f"{name} must be a non-negative number (epoch seconds)", field=name)
    return value


def _range(request: web.Request) -> tuple[float, float]:
    now = request.app[CLOCK].time()
    end = _number(request, "to", now)
    assert end is not None
    start = _number(request, "from", end - DEFAULT_RANGE)
    assert start is not None
    if end <= start:
        raise Unprocessable("from must be before to", field="from")
    if end - start > MAX_RANGE:
        raise Unprocessable("the range may span at most 400 days", field="from")
    return start, end


@routes.get("/api/v1/nodes/{id}/history")
async def node_history(request: web.Request) -> web.Response:
    principal = await require_account(request)
    node_id = path_id(request)
    node = await request.app[STORE].node_ref(principal.account_id, node_id)
    if node is None:  # first: another account's node is 404 whatever the query says
        raise NotFound("no such node")
    _only(request, _HISTORY_PARAMS)
    metric = request.query.get("metric")
    if metric is None or not _METRIC.fullmatch(metric):
        raise Unprocessable("metric: give a metric name, e.g. cpu_usage_percent", field="metric")
    start, end = _range(request)
    given = _number(request, "step", None)
    step = given if given is not None else max(1.0, math.ceil((end - start) / DEFAULT_POINTS))
    if step < 1:
        raise Unprocessable("step must be at least 1 second", field="step")
    if not request.app[SAVED].covers(node):
        raise _off()
    try:
        found = await request.app[STORE].history(node_id, metric, start, end, step)
    except ValueError as exc:
        raise Unprocessable(str(exc), field="step") from None
    return web.json_response(
        {
            "node_id": node_id,
            "metric": metric,
            "from": start,
            "to": end,
            "step": found.step,
            "source": found.source,
            "series": [
                {"labels": s.labels, "points": [list(p) for p in s.points]} for s in found.series
            ],
        }
    )


@routes.get("/api/v1/alerts/history")
async def alert_history(request: web.Request) -> web.Response:
    principal = await require_account(request)
    _only(request, _ALERT_PARAMS)
    start, end = _range(request)
    raw_limit = request.query.get("limit", "500")
    if not (raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit[:6]) <= 5000):
        raise Unprocessable("limit must be an integer from 1 to 5000", field="limit")
    saved = request.app[SAVED]
    if not saved.covers_account(principal.account_id):
        raise _off()
    store = request.app[STORE]
    wanted = request.query.get("node")
    refs = [
        ref
        for node_id in await store.account_node_ids(principal.account_id)
        if (wanted is None or node_id == wanted)
        and (ref := await store.node_ref(principal.account_id, node_id)) is not None
    ]
    if wanted is not None and not refs:
        raise NotFound("no such node")
    covered = [ref for ref in refs if saved.covers(ref)]
    if wanted is not None and not covered:
        raise _off()
    names = {ref.id: ref.name for ref in covered}
    rows = await store.alert_history(list(names), start, end, limit=int(raw_limit))
    return web.json_response(
        {"alerts": [{**row, "node_name": names.get(row["node_id"], "")} for row in rows]}
    )


def _param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


_NUMBER: Final = {"type": "number"}
_RANGE_PARAMS: Final = [
    _param("from", _NUMBER, "epoch seconds; default an hour before to"),
    _param("to", _NUMBER, "epoch seconds; default now"),
]
HISTORY: Final = obj(
    node_id={"type": "string"},
    metric={"type": "string"},
    **{"from": _NUMBER, "to": _NUMBER},
    step=_NUMBER,
    source={"enum": ["raw", "minute", "hour"]},
    series={
        "type": "array",
        "items": obj(
            labels={"type": "object", "additionalProperties": {"type": "string"}},
            points={
                "type": "array",
                "items": {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4},
                "description": "[bucket start, avg, min, max]",
            },
        ),
    },
)

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/nodes/{id}/history": {
        "parameters": [ID_PARAMETER],
        "get": {
            **operation(
                "A metric's saved history (saved monitoring only; raw or rollups by step)",
                "nodeHistory",
                ok=(200, "the series of the metric", HISTORY),
                errors=(401, 404, 409, 422, 429),
                tag="history",
            ),
            "parameters": [
                _param("metric", {"type": "string"}, "metric name", required=True),
                *_RANGE_PARAMS,
                _param("step", _NUMBER, "bucket seconds; default range / 500"),
            ],
        },
    },
    "/api/v1/alerts/history": {
        "get": {
            **operation(
                "Saved alert history, newest first (saved monitoring only)",
                "alertHistory",
                ok=(200, "alert events", obj(alerts={"type": "array", "items": ALERT})),
                errors=(401, 404, 409, 422, 429),
                tag="history",
            ),
            "parameters": [
                _param("node", {"type": "string"}, "only this node"),
                *_RANGE_PARAMS,
                _param("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "at most"),
            ],
        }
    },
}
