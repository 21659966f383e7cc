"""``GET /api/v1/fleet`` and ``GET /api/v1/fleet/stream``: the fleet, live from server memory.

The snapshot is every node of the caller's account with its status (up / degraded / down),
last seen, key gauges and firing alerts (``server.fleet`` defines them). The stream is
Server-Sent Events, authenticated like every account route (the dashboard's session cookie,
or a Bearer API key): one ``snapshot`` event (every node), then at most one ``update`` event a
second holding only what changed — per changed node its id and changed fields (a new node
whole), and the ids of removed nodes. Nothing changed, nothing sent; a comment line every
``HEARTBEAT_SECONDS`` keeps proxies from closing the connection. The credentials are checked
again every ``RECHECK_SECONDS`` (a logout or a deleted account ends the stream with an ``end``
event); a write blocked for ``WRITE_TIMEOUT`` closes a slow consumer, like a full queue does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from aiohttp import web

from server.api.auth import require_account
from server.api.schemas import obj, operation
from server.errors import ApiError
from server.fleet import counts, hub_of, sse
from server.keys import CLOCK, STATS

log = logging.getLogger("oneconnect.server.fleet")
routes = web.RouteTableDef()

HEARTBEAT_SECONDS: Final = 15.0
RECHECK_SECONDS: Final = 60.0
WRITE_TIMEOUT: Final = 10.0
RETRY_MS: Final = 3000


@routes.get("/api/v1/fleet", name="fleet")
async def fleet(request: web.Request) -> web.Response:
    principal = await require_account(request)
    state = await hub_of(request.app).snapshot(principal.account_id)
    return web.json_response(
        {
            "ts": round(request.app[CLOCK].time(), 3),
            "counts": counts(state.values()),
            "nodes": list(state.values()),
        }
    )


async def _recheck(request: web.Request) -> None:
    """The stream's credentials, checked again (a logout or a deleted account ends it)."""
    await require_account(request)


async def _write(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):
        await response.write(data)


@routes.get("/api/v1/fleet/stream", name="fleet_stream")
async def fleet_stream(request: web.Request) -> web.StreamResponse:
    principal = await require_account(request)
    hub = hub_of(request.app)
    stream, first = await hub.subscribe(principal.account_id, request.transport)
    stats = request.app[STATS]
    stats.inc("fleet_streams", help="Fleet streams opened")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    reason = "client went away"
    try:
        await response.prepare(request)
        await _write(response, f"retry: {RETRY_MS}\n".encode() + first)
        loop = asyncio.get_running_loop()
        heartbeat = loop.time() + HEARTBEAT_SECONDS
        recheck = loop.time() + RECHECK_SECONDS
        while stream.closed is None:
            message = await stream.next(max(0.0, min(heartbeat, recheck) - loop.time()))
            now = loop.time()
            if message is not None:
                await _write(response, message)
                heartbeat = now + HEARTBEAT_SECONDS
            elif now >= heartbeat and stream.closed is None:
                await _write(response, b": keep-alive\n\n")
                heartbeat = now + HEARTBEAT_SECONDS
            if now >= recheck:
                recheck = now + RECHECK_SECONDS
                try:
                    await _recheck(request)
                except ApiError:
                    stream.close("credentials no longer valid")
        reason = stream.closed or reason
        with contextlib.suppress(ConnectionError, TimeoutError):
            await _write(response, sse("end", {"reason": reason}))
    except TimeoutError:
        reason = "write timed out"
        stats.inc(
            "fleet_streams_closed", help="Fleet streams the server closed, by reason", reason="slow"
        )
    except ConnectionError:
        pass
    finally:
        hub.unsubscribe(stream)
    log.debug("fleet stream ended: %s", reason)
    return response


_NULLABLE_NUMBER: Final = {"type": ["number", "null"]}
FLEET_NODE: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "enrolled": {"type": "boolean", "description": "an agent has connected at least once"},
        "status": {"enum": ["up", "degraded", "down"]},
        "connected": {"type": "boolean"},
        "last_seen": {**_NULLABLE_NUMBER, "description": "unix time of the last frame"},
        "cpu": {**_NULLABLE_NUMBER, "description": "cpu_usage_percent"},
        "memory": {**_NULLABLE_NUMBER, "description": "memory in use, %"},
        "conntrack": {**_NULLABLE_NUMBER, "description": "conntrack_used_percent"},
        "rx": {**_NULLABLE_NUMBER, "description": "bytes/s received, busiest interface"},
        "tx": {**_NULLABLE_NUMBER, "description": "bytes/s sent, busiest interface"},
        "alerts": {"type": "integer", "description": "firing alerts"},
        "severity": {"enum": ["info", "warning", "critical", None]},
        "alert_ts": {**_NULLABLE_NUMBER, "description": "newest firing alert event"},
    },
}
COUNTS: Final = obj(
    up={"type": "integer"},
    degraded={"type": "integer"},
    down={"type": "integer"},
    alerts={"type": "integer"},
)


def _with_ok(op: dict[str, Any], ok: dict[str, Any]) -> dict[str, Any]:
    return {**op, "responses": {**op["responses"], "200": ok}}


OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/fleet": {
        "get": operation(
            "Every node of the account: status (up/degraded/down), last seen, key gauges, "
            "firing alerts (live state)",
            "getFleet",
            ok=(
                200,
                "the fleet",
                obj(
                    ts={"type": "number"},
                    counts=COUNTS,
                    nodes={"type": "array", "items": FLEET_NODE},
                ),
            ),
            errors=(401, 429),
            tag="fleet",
        )
    },
    "/api/v1/fleet/stream": {
        "get": _with_ok(
            operation(
                "Live fleet updates (Server-Sent Events): a snapshot, then at most one update "
                "per second with only what changed",
                "streamFleet",
                ok=(200, "an event stream", None),
                errors=(401, 429),
                tag="fleet",
            ),
            {
                "description": "text/event-stream: `event: snapshot` {ts, counts, nodes}, then "
                "`event: update` {ts, counts, changed: [{id, changed fields…}], removed: [id]} "
                "at most once a second; `event: end` {reason} when the server ends it",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        )
    },
}
